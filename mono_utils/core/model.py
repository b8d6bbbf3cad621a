"""The one-layer transformer: built, trained, saved, evaluated.

``build_model`` is the only place that knows how TransformerLens 4.x boots a model
(``TransformerBridge.boot_native``); everything else just uses hook names such as
``blocks.0.mlp.hook_post``.
"""
from __future__ import annotations

import io
import math
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..store.artifacts import atomic_write_bytes, save_safetensors_atomic
from .corpus import hub_reachable
from .device import deterministic
from .malloc_tuning import tune_malloc
from .tokenizer import EOT, encode, readable_text

HOOK_MLP_POST = "blocks.0.mlp.hook_post"


@dataclass(frozen=True)
class ModelConfig:
    d_vocab: int
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 128
    n_layers: int = 1
    act_fn: str = "relu"
    seed: int = 0

    def __post_init__(self):
        for name in ("d_vocab", "d_model", "n_heads", "d_mlp", "n_ctx", "n_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    tokens: int                 # budget in tokens
    batch_size: int = 32        # sequences per step
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200  # steps

    def __post_init__(self):
        if self.tokens <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ValueError(f"TrainConfig needs positive tokens, batch_size and lr, got {self}")


def build_model(cfg: ModelConfig, tokenizer=None, device: str | None = None):
    """A freshly initialised model (seeded by ``cfg.seed``), as a TransformerBridge."""
    from transformer_lens.config import TransformerBridgeConfig  # lazy: heavy: loaded only to build a model
    from transformer_lens.model_bridge import TransformerBridge  # lazy: heavy: loaded only to build a model
    tl_cfg = TransformerBridgeConfig(
        d_model=cfg.d_model, d_head=cfg.d_head, n_layers=cfg.n_layers, n_ctx=cfg.n_ctx,
        n_heads=cfg.n_heads, d_vocab=cfg.d_vocab, d_mlp=cfg.d_mlp, act_fn=cfg.act_fn,
        normalization_type="LN", seed=cfg.seed)
    model = TransformerBridge.boot_native(tl_cfg, tokenizer=tokenizer, device=device)
    _RECORDS[model] = ModelRecord(cfg)
    return model


def unique_parameters(model) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def save_weights(model, path: str | Path) -> None:
    save_safetensors_atomic(unique_parameters(model), path)


def load_weights(model, path: str | Path) -> None:
    """Load safetensors weights, checking every name and shape against the model."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"cannot read model weights {path}: {e}. The file is damaged: delete its "
                         f"artifact folder and rebuild.") from e
    params = unique_parameters(model)
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"{path} lacks weights {missing[:3]}...: it was saved from a different architecture")
    for name, p in params.items():
        t = state[name]
        if t.shape != p.shape:
            raise ValueError(f"{path}: weight {name} has shape {tuple(t.shape)} but the model expects "
                             f"{tuple(p.shape)} (does d_mlp/d_model/vocab match the checkpoint?)")
        if not torch.isfinite(t).all():
            raise ValueError(f"{path}: weight {name} holds NaN or Inf")
        with torch.no_grad():
            p.copy_(t)


# The bridge is TransformerLens's class, not ours. What we know of a model that we built (its
# config, and once it is in the store its artifact folder) is kept here beside it, keyed weakly,
# rather than set on it as attributes after the fact.
@dataclass
class ModelRecord:
    config: ModelConfig
    folder: Path | None = None   # its artifact folder, once build.models.get_model loaded it


_RECORDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def model_record(model) -> ModelRecord:
    try:
        return _RECORDS[model]
    except (KeyError, TypeError):
        raise ValueError("this model was not built by mono_utils (core.model.build_model): it has no "
                         "ModelConfig; build it with build_model or load it with build.models.get_model") from None


def model_config_of(model) -> ModelConfig:
    """The :class:`ModelConfig` that ``build_model`` made ``model`` from."""
    return model_record(model).config


def model_folder(model) -> Path | None:
    """The artifact folder ``model`` was loaded from (None for a model built in memory)."""
    rec = _RECORDS.get(model)
    return rec.folder if rec is not None else None


def set_model_folder(model, folder: str | Path | None) -> None:
    """Record the artifact folder of a model built by ``build_model`` (``build.models.get_model`` does)."""
    model_record(model).folder = Path(folder) if folder is not None else None


def W_out(model) -> torch.Tensor:
    """MLP output weights [d_mlp, d_model]."""
    return model.W_out[0]


def W_U(model) -> torch.Tensor:
    """Unembedding [d_model, d_vocab]."""
    return model.W_U


@torch.no_grad()
def direction_logit_weights(model, directions: torch.Tensor) -> torch.Tensor:
    """Logit weights of directions in MLP-activation space: [k, d_mlp] -> [k, d_vocab].

    The paper's definition: the direction through the MLP output weights and the unembedding
    (the final LayerNorm is left out, as the paper does). One definition for the whole suite:
    dashboards, autointerp, universality and steering all call this.
    """
    return directions.float() @ W_out(model).detach().float() @ W_U(model).detach().float()


# ---------------------------------------------------------------- forward helpers
class _StopForward(Exception):
    pass


@torch.no_grad()
def mlp_post(model, tokens: torch.Tensor) -> torch.Tensor:
    """MLP activations [batch, pos, d_mlp]; the forward pass stops right after the MLP."""
    box = {}

    def grab(act, hook):
        box["act"] = act.detach()
        raise _StopForward

    try:
        model.run_with_hooks(tokens, fwd_hooks=[(HOOK_MLP_POST, grab)])
    except _StopForward:
        pass
    return box["act"]


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """Next-token cross entropy (mean, or per position [batch, pos-1])."""
    lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -lp.gather(-1, tokens[:, 1:, None].long())[..., 0]
    return nll.mean() if reduce else nll


# ---------------------------------------------------------------- training
def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    warm = max(1, int(total * cfg.warmup_frac))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_model(model, tokens: np.ndarray, cfg: TrainConfig, checkpoint: str | Path | None = None,
                progress: bool = True, on_step=None, stop_after: int | None = None) -> list[dict]:
    """Train on rows of ``tokens`` [rows, n_ctx] for ``cfg.tokens`` tokens.

    With ``checkpoint`` (a file path), state is saved every ``checkpoint_every`` steps and a
    restarted run resumes from it, giving the same result as an uninterrupted run (the data
    order is a pure function of seed and step). ``on_step(record)`` receives each logged
    record (for live plots). ``stop_after`` simulates an interruption (tests).
    """
    with deterministic(next(model.parameters()).device):
        return _train_model(model, tokens, cfg, checkpoint, progress, on_step, stop_after)


def _train_model(model, tokens, cfg, checkpoint, progress, on_step, stop_after):
    tune_malloc()   # no page faults per step (see malloc_tuning)
    n_ctx = tokens.shape[1]
    steps = max(1, cfg.tokens // (cfg.batch_size * n_ctx))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    history: list[dict] = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    dev = next(model.parameters()).device   # train where the model is (a GPU when on_device put it there)
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location=dev)
        _load_params(model, state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
        history = [dict(zip(state["hist_keys"], row)) for row in state["hist"].tolist()]
    rows = tokens.shape[0]
    model.train()
    bar = tqdm(range(start, steps), total=steps, initial=start, desc="training model", disable=not progress)
    t0 = time.time()
    for step in bar:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, rows, (cfg.batch_size,), generator=g)
        batch = torch.from_numpy(tokens[idx.numpy()].astype(np.int64)).to(dev, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg)
        loss = model(batch, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        rec = {"step": step + 1, "tokens": (step + 1) * cfg.batch_size * n_ctx, "loss": loss.item(),
               "lr": opt.param_groups[0]["lr"]}
        history.append(rec)
        if on_step is not None:
            on_step(rec)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{(step + 1 - start) * cfg.batch_size * n_ctx / (time.time() - t0):.0f}")
        done = step + 1
        if ckpt is not None and (done % cfg.checkpoint_every == 0 or done == steps or done == stop_after):
            _save_checkpoint(ckpt, model, opt, done, history)
        if stop_after is not None and done >= stop_after:
            break
    model.eval()
    return history


def _load_params(model, state: dict) -> None:
    params = unique_parameters(model)
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def _save_checkpoint(path: Path, model, opt, step: int, history: list[dict]) -> None:
    keys = ["step", "tokens", "loss", "lr"]
    buf = io.BytesIO()
    torch.save({"model": {k: v.detach().clone() for k, v in unique_parameters(model).items()},
                "opt": opt.state_dict(), "step": step, "hist_keys": keys,
                "hist": torch.tensor([[h[k] for k in keys] for h in history], dtype=torch.float64)}, buf)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, tokens: np.ndarray, domain_ids: np.ndarray | None = None,
             domain_names: list[str] | None = None, batch_size: int = 64) -> dict:
    """Validation loss overall and per domain (by the label of each predicted token)."""
    model.eval()
    total, count = 0.0, 0
    per_sum: dict[int, float] = {}
    per_n: dict[int, int] = {}
    for s in range(0, len(tokens), batch_size):
        batch = torch.from_numpy(tokens[s:s + batch_size].astype(np.int64))
        nll = lm_loss(model(batch), batch, reduce=False)
        total += float(nll.sum())
        count += nll.numel()
        if domain_ids is not None:
            lab = torch.from_numpy(domain_ids[s:s + batch_size, 1:].astype(np.int64))
            for d in lab.unique().tolist():
                m = lab == d
                per_sum[d] = per_sum.get(d, 0.0) + float(nll[m].sum())
                per_n[d] = per_n.get(d, 0) + int(m.sum())
    out = {"val_loss": total / max(1, count), "val_tokens": count}
    if domain_ids is not None:
        names = domain_names or [str(i) for i in range(max(per_n) + 1)]
        out["val_loss_by_domain"] = {names[d]: per_sum[d] / per_n[d] for d in sorted(per_n)}
    return out


@torch.no_grad()
def sample(model, tokenizer, prompt: str, max_new_tokens: int = 40, temperature: float = 0.8,
           seed: int = 0, top_k: int | None = 40) -> str:
    """A sampled continuation of ``prompt`` (seeded, so reproducible)."""
    bos = tokenizer.convert_tokens_to_ids(EOT)
    ids = [bos] + encode(tokenizer, prompt)
    n_ctx = model_config_of(model).n_ctx
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(max_new_tokens):
        x = torch.tensor([ids[-n_ctx:]])
        logits = model(x)[0, -1].float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                v, _ = logits.topk(min(top_k, logits.numel()))
                logits[logits < v[-1]] = -float("inf")
            nxt = int(torch.multinomial(F.softmax(logits, -1), 1, generator=g))
        ids.append(nxt)
        out.append(nxt)
    return readable_text(tokenizer, out)   # a stray byte as ‹xx› (as the atlas shows it), not �


# ---------------------------------------------------------------- pretrained (hub)
def load_pretrained(name: str, d_mlp: int | None = None):
    """A pretrained TransformerLens model by name (e.g. ``gelu-1l``); needs the hub."""
    if not hub_reachable():
        raise ConnectionError(
            f"cannot load pretrained model {name!r}: the Hugging Face hub is not reachable from this "
            f"machine. Train the suite's own model instead (mono_utils.pipeline.models.get_model), or copy a "
            f"checkpoint saved with save_pretrained and load it from a local folder.")
    from transformer_lens.model_bridge import TransformerBridge  # lazy: heavy: loaded only to build a model
    model = TransformerBridge.boot_transformers(name)
    actual = model.cfg.d_mlp
    if d_mlp is not None and actual != d_mlp:
        raise ValueError(f"model {name!r} has d_mlp {actual}, not the {d_mlp} asked for: "
                         f"set d_mlp={actual} (SAE d_in follows the model)")
    return model
