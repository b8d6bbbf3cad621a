"""Build-or-load everything a notebook needs, through the artifact store.

Each ``get_*`` returns a ready object; the first call builds it (with progress) and later
calls, in any notebook or process, load it. The artifact's folder is named by a hash of the
config that made it, so changing a preset rebuilds exactly what depends on the change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.corpus import DOMAIN_SHARES, build_documents, manifest, read_documents, relabel_by_script, save_documents
from ..core.device import device_name, on_device, pick_device
from ..core.model import (
    ModelConfig,
    TrainConfig,
    build_model,
    evaluate,
    load_weights,
    model_folder,
    sample,
    save_weights,
    set_model_folder,
    train_model,
)
from ..core.tokenizer import load_tokenizer, pack_documents, train_tokenizer
from ..store.artifacts import config_hash, read_json
from .presets import Preset, resolve

CORPUS_SEED = 0


# ---------------------------------------------------------------- corpus
def corpus_config(p: Preset) -> dict:
    return {"bytes": p.corpus_bytes, "seed": CORPUS_SEED, "shares": DOMAIN_SHARES, "version": 4}


def get_corpus_dir(preset=None, store=None) -> Path:
    p, s = resolve(preset, store)
    cfg = corpus_config(p)

    def build(tmp: Path):
        docs = build_documents(p.corpus_bytes, seed=CORPUS_SEED)
        save_documents(docs, tmp / "corpus.jsonl")
        return {"documents": len(docs), "bytes": sum(len(d.text.encode()) for d in docs)}

    return s.get_or_build("corpus", f"corpus-{p.name}", cfg, build)


def get_documents(preset=None, store=None):
    return read_documents(get_corpus_dir(preset, store) / "corpus.jsonl")


# ---------------------------------------------------------------- tokenizer + tokens
def tokenizer_config(p: Preset) -> dict:
    return {"corpus": corpus_config(p), "vocab_size": p.vocab_size, "version": 1}


def get_tokenizer(preset=None, store=None):
    p, s = resolve(preset, store)

    def build(tmp: Path):
        docs = get_documents(p, s)
        train_tokenizer((d.text for d in docs), p.vocab_size, tmp)
        return {"vocab_size": p.vocab_size}

    folder = s.get_or_build("tokenizer", f"bpe{p.vocab_size}-{p.name}", tokenizer_config(p), build)
    return load_tokenizer(folder)


@dataclass
class TokenData:
    """Tokenised corpus: rows of n_ctx tokens, per-token labels, train/val split."""
    tokens: np.ndarray        # [rows, n_ctx] uint16
    domain: np.ndarray        # [rows, n_ctx] uint8 ids into domain_names
    subdomain: np.ndarray     # [rows, n_ctx] uint8 ids into subdomain_names
    domain_names: list[str]
    subdomain_names: list[str]
    n_val: int
    manifest: dict

    @property
    def train(self) -> np.ndarray:
        return self.tokens[self.n_val:]

    @property
    def val(self) -> np.ndarray:
        return self.tokens[: self.n_val]

    def split(self, part: str):
        """(tokens, domain, subdomain) of "train" or "val"."""
        sl = slice(self.n_val, None) if part == "train" else slice(0, self.n_val)
        return self.tokens[sl], self.domain[sl], self.subdomain[sl]


# Held-out share of the token rows. 15% (~1.1M tokens on default) lets every evaluation (feature
# density and dead features, the 1M-token activation index) run on tokens no model or SAE saw.
VAL_FRAC = 0.15


def get_tokens(preset=None, store=None) -> TokenData:
    p, s = resolve(preset, store)
    # version 2: multilingual labels by each document's own script
    cfg = {"tokenizer": tokenizer_config(p), "n_ctx": p.n_ctx, "val_frac": VAL_FRAC, "version": 2}

    def build(tmp: Path):
        docs = relabel_by_script(get_documents(p, s))
        tok = get_tokenizer(p, s)
        tokens, dom, sub, dnames, snames, counts = pack_documents(docs, tok, p.n_ctx)
        perm = np.random.default_rng(CORPUS_SEED).permutation(len(tokens))
        for name, arr in (("tokens", tokens), ("domain", dom), ("subdomain", sub)):
            np.save(tmp / f"{name}.npy", arr[perm])
        man = manifest(docs, counts)
        (tmp / "labels.json").write_text(json.dumps({"domain": dnames, "subdomain": snames}))
        (tmp / "manifest.json").write_text(json.dumps(man, indent=1))
        return {"rows": len(tokens), "tokens": int(tokens.size), "corpus_sha256": man["sha256"]}

    folder = s.get_or_build("tokens", f"tokens-{p.name}", cfg, build)
    labels = read_json(folder / "labels.json")
    tokens = np.load(folder / "tokens.npy")
    n_val = max(1, int(len(tokens) * VAL_FRAC))
    return TokenData(tokens, np.load(folder / "domain.npy"), np.load(folder / "subdomain.npy"),
                     labels["domain"], labels["subdomain"], n_val, read_json(folder / "manifest.json"))


# ---------------------------------------------------------------- models
def model_configs(p: Preset, which: str):
    if which not in p.seeds:
        raise ValueError(f"unknown model {which!r}: choose one of {sorted(p.seeds)}")
    seed = p.seeds[which]
    mcfg = ModelConfig(d_vocab=p.vocab_size, d_model=p.d_model, n_heads=p.n_heads, d_mlp=p.d_mlp,
                       n_ctx=p.n_ctx, seed=seed)
    tcfg = TrainConfig(tokens=p.model_tokens, batch_size=p.model_batch, lr=p.model_lr, seed=seed)
    return mcfg, tcfg


def model_artifact_config(p: Preset, which: str = "A") -> dict:
    """The config that names model ``which``'s artifact folder (and, inside theirs, each SAE's)."""
    mcfg, tcfg = model_configs(p, which)
    return {"model": mcfg.to_dict(), "train": tcfg.__dict__, "tokens": tokenizer_config(p),
            "val_frac": VAL_FRAC, "version": 1}


def get_model(preset=None, store=None, *, which: str = "A", on_step=None, progress: bool = True):
    """Model A or B (identical but for the seed), trained on the preset's corpus if needed."""
    p, s = resolve(preset, store)
    mcfg, tcfg = model_configs(p, which)
    tok = get_tokenizer(p, s)
    cfg = model_artifact_config(p, which)

    def build(tmp: Path):
        data = get_tokens(p, s)
        model = build_model(mcfg, tokenizer=tok)   # initialised on the CPU: the same start on any device
        # the checkpoint lives outside tmp so that a killed build resumes where it stopped
        ckpt = s.root / "model" / f".ckpt-model{which}-{p.name}-{config_hash(cfg)}.pt"
        with on_device(model, pick_device()) as dev:
            hist = train_model(model, data.train, tcfg, checkpoint=ckpt, on_step=on_step, progress=progress)
        save_weights(model, tmp / "model.safetensors")
        tv, dv, _ = data.split("val")
        rows = max(1, min(len(tv), 3 * p.eval_tokens // 2 // p.n_ctx))  # ~400k tokens on default
        ev = evaluate(model, tv[:rows], dv[:rows], data.domain_names)
        (tmp / "history.json").write_text(json.dumps(hist))
        samples = {pr: sample(model, tok, pr, 30, seed=0) for pr in SAMPLE_PROMPTS}
        ckpt.unlink(missing_ok=True)
        return {**ev, "samples": samples, "train_tokens": hist[-1]["tokens"] if hist else 0,
                "train_device": device_name(dev)}

    folder = s.get_or_build("model", f"model{which}-{p.name}", cfg, build)
    model = build_model(mcfg, tokenizer=tok)
    load_weights(model, folder / "model.safetensors")
    model.eval()
    set_model_folder(model, folder)
    return model


SAMPLE_PROMPTS = ["def ", "The ", "GET /", "1,2,3,4,5,6,7,8,9,10"]


def model_metrics(model) -> dict:
    return read_json(model_folder(model) / "metrics.json")


def model_history(model) -> list[dict]:
    return json.loads((model_folder(model) / "history.json").read_text())
