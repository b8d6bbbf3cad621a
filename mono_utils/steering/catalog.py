"""What the steering widget needs besides the mechanics: a searchable catalog of features
(max activation, subdomain, top tokens), the domain proxies of the paper (DNA, base64, Hebrew,
Arabic) and the measured effect of pinning a domain feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..pipeline.models import get_model, get_tokenizer, get_tokens
from ..pipeline.presets import resolve
from ..pipeline.saes import get_sae
from ..core.model import mlp_post, model_folder
from ..core.tokenizer import str_tokens
from ..features.dashboards import readable_vocab
from ..store.results import array_digest, cached_result, input_id
from .interventions import FastLM, Intervention, generate


# ---------------------------------------------------------------- feature catalog (for the picker)
@dataclass
class FeatureCatalog:
    """Per-feature summary over some held-out tokens: max activation, density, subdomains, top tokens."""
    max_act: np.ndarray        # [d_sae]
    density: np.ndarray        # [d_sae] fraction of tokens where the feature fires
    sub_mass: np.ndarray       # [d_sae, n_sub] summed activation per subdomain label
    sub_fires: np.ndarray      # [d_sae, n_sub] firing count per subdomain
    sub_tokens: np.ndarray     # [n_sub] tokens per subdomain
    subdomain_names: list[str]
    top_tokens: list[list[str]]  # per feature: distinct tokens of its top activations
    n_tokens: int

    def top_subdomain(self, i: int) -> tuple[str, float]:
        tot = self.sub_mass[i].sum()
        if tot <= 0:
            return "dead", 0.0
        j = int(self.sub_mass[i].argmax())
        return self.subdomain_names[j], float(self.sub_mass[i, j] / tot)

    def label(self, i: int) -> str:
        sub, share = self.top_subdomain(i)
        toks = " ".join(repr(t)[1:-1] for t in self.top_tokens[i][:4])
        return f"#{i} · {sub} {share:.0%} · {toks}"

    def search(self, query: str = "", limit: int = 200) -> list[int]:
        """Live features whose index, subdomain or top tokens match ``query`` (case-insensitive)."""
        q = (query or "").strip().lower()
        live = np.flatnonzero(self.density > 0)
        out = []
        for i in live[np.argsort(-self.density[live], kind="stable")]:
            i = int(i)
            if not q or q == str(i) or q.lstrip("#") == str(i) or q in self.label(i).lower():
                out.append(i)
                if len(out) >= limit:
                    break
        return out

    def domain_feature(self, subdomain: str, min_fires: int = 3) -> int:
        """The feature most specific to a subdomain label (F1 of activation-mass specificity
        and firing sensitivity)."""
        if subdomain not in self.subdomain_names:
            raise ValueError(f"unknown subdomain {subdomain!r}: choose one of {self.subdomain_names}")
        return int(np.argmax(self.domain_scores(subdomain, min_fires)))

    def domain_scores(self, subdomain: str, min_fires: int = 3) -> np.ndarray:
        j = self.subdomain_names.index(subdomain)
        spec = self.sub_mass[:, j] / np.maximum(self.sub_mass.sum(1), 1e-12)
        sens = self.sub_fires[:, j] / max(1, self.sub_tokens[j])
        score = 2 * spec * sens / np.maximum(spec + sens, 1e-12)
        score[self.sub_fires[:, j] < min_fires] = 0
        return score


@torch.no_grad()
def feature_catalog(model, sae, tokens: np.ndarray, subdomain: np.ndarray, subdomain_names: list[str],
                    tokenizer, batch_rows: int = 32, top: int = 16, max_acts: np.ndarray | None = None,
                    progress: bool = True) -> FeatureCatalog:
    """Scan rows of ``tokens`` [rows, n_ctx] (BOS positions skipped) and summarise each feature.

    ``max_acts`` (e.g. from ``mono_utils.index``'s larger scan) overrides the scanned maxima.
    """

    d, n_sub = int(sae.cfg.d_sae), len(subdomain_names)
    mx = torch.zeros(d)
    fires = torch.zeros(d, n_sub)
    mass = torch.zeros(d, n_sub)
    sub_tokens = np.zeros(n_sub, dtype=np.int64)
    top_v = torch.full((d, top), -1.0)
    top_id = torch.zeros(d, top, dtype=torch.long)
    n = 0
    for s in tqdm(range(0, len(tokens), batch_rows), desc="feature catalog", disable=not progress):
        tk = torch.from_numpy(tokens[s:s + batch_rows].astype(np.int64))
        f = sae.encode(mlp_post(model, tk))[:, 1:].reshape(-1, d).float()
        ids = tk[:, 1:].reshape(-1)
        lab = torch.from_numpy(subdomain[s:s + batch_rows, 1:].astype(np.int64)).reshape(-1)
        onehot = F.one_hot(lab, n_sub).float()
        mass += f.T @ onehot
        fires += (f > 0).float().T @ onehot
        sub_tokens += np.bincount(lab.numpy(), minlength=n_sub)
        mx = torch.maximum(mx, f.max(0).values)
        v, i = f.T.topk(min(top, f.shape[0]), dim=1)
        cv = torch.cat([top_v, v], 1)
        ci = torch.cat([top_id, ids[i]], 1)
        keep = cv.topk(top, dim=1).indices
        top_v, top_id = cv.gather(1, keep), ci.gather(1, keep)
        n += f.shape[0]
    vocab = readable_vocab(tokenizer) if n else []   # a split byte as ‹d7› (as the atlas shows it), not �
    tops = []
    for i in range(d):
        seen = [vocab[t] for t, v in zip(top_id[i].tolist(), top_v[i].tolist()) if v > 0]
        tops.append(list(dict.fromkeys(seen)))
    max_np = mx.numpy() if max_acts is None else np.asarray(max_acts, dtype=np.float32)
    return FeatureCatalog(max_np, (fires.sum(1) / max(1, n)).numpy(), mass.numpy(), fires.numpy(),
                          sub_tokens, list(subdomain_names), tops, n)


CATALOG_VERSION = 2   # 2: top tokens as readable_vocab shows them (1 had � for split bytes)


def _array_id(*arrays) -> str:
    """A content hash of the token rows scanned: the catalog is a function of exactly these."""
    return array_digest(*arrays)


def cached_feature_catalog(model, sae, tokens: np.ndarray, subdomain: np.ndarray, subdomain_names: list[str],
                           tokenizer, store=None, *, top: int = 16, max_acts: np.ndarray | None = None,
                           progress: bool = True, force: bool = False) -> FeatureCatalog:
    """``feature_catalog(...)``, computed once and then loaded from the artifact store.

    Keyed by the model's and SAE's folders, a hash of the scanned rows and their labels, the
    tokenizer's vocabulary and ``top`` / ``max_acts``: any change is a different catalog.
    """
    vocab = str_tokens(tokenizer, range(len(tokenizer)))
    config = {"model": input_id(model_folder(model)), "sae": input_id(sae), "rows": int(len(tokens)),
              "tokens": _array_id(tokens, subdomain), "subdomain_names": list(subdomain_names),
              "vocab": _array_id(np.frombuffer("\0".join(vocab).encode("utf-8"), np.uint8)), "top": int(top),
              "max_acts": None if max_acts is None else _array_id(np.asarray(max_acts, np.float32)),
              "version": CATALOG_VERSION}

    def compute():
        c = feature_catalog(model, sae, tokens, subdomain, subdomain_names, tokenizer, top=top,
                            max_acts=max_acts, progress=progress)
        arrays = {k: getattr(c, k) for k in ("max_act", "density", "sub_mass", "sub_fires", "sub_tokens")}
        return arrays, {"subdomain_names": c.subdomain_names, "top_tokens": c.top_tokens, "n_tokens": c.n_tokens}

    arrays, meta = cached_result("feature-catalog", config, compute, store, force=force)
    return FeatureCatalog(arrays["max_act"], arrays["density"], arrays["sub_mass"], arrays["sub_fires"],
                          arrays["sub_tokens"], list(meta["subdomain_names"]),
                          [list(t) for t in meta["top_tokens"]], int(meta["n_tokens"]))


def catalog_rows(preset, n_val_rows: int) -> int:
    """How many validation rows the catalog scans: the preset's eval tokens, at least 16 rows."""
    return min(n_val_rows, max(16, preset.eval_tokens // preset.n_ctx))


def get_feature_catalog(preset=None, store=None, *, model=None, sae=None, tokenizer=None, data=None,
                        progress: bool = True) -> FeatureCatalog:
    """The catalog of SAE A/1 over the preset's first validation rows (notebook 06, the build).

    Pass what is already loaded to skip loading it again. Needs: tokens, model A, SAE A/1.
    """
    p, s = resolve(preset, store)
    model = model if model is not None else get_model(p, s, which="A", progress=progress)
    sae = sae if sae is not None else get_sae(p, which="A", store=s, progress=progress)
    tokenizer = tokenizer if tokenizer is not None else get_tokenizer(p, s)
    data = data if data is not None else get_tokens(p, s)
    tv, _, sv = data.split("val")
    rows = catalog_rows(p, len(tv))
    return cached_feature_catalog(model, sae, tv[:rows], sv[:rows], data.subdomain_names, tokenizer, s,
                                  progress=progress)


# ---------------------------------------------------------------- domain proxies
def _in_blocks(blocks):
    return lambda c: any(a <= ord(c) <= b for a, b in blocks)


_B64 = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _runs(chars: list[str], ok, min_len: int, good_run=None) -> list[bool]:
    out = [False] * len(chars)
    i = 0
    while i < len(chars):
        if not ok(chars[i]):
            i += 1
            continue
        j = i
        while j < len(chars) and ok(chars[j]):
            j += 1
        run = "".join(chars[i:j])
        if j - i >= min_len and (good_run is None or good_run(run)):
            out[i:j] = [True] * (j - i)
        i = j
    return out


def _b64_run(run: str) -> bool:
    return any(c.isdigit() or c in "+/" for c in run) and any(c.isupper() for c in run) \
        and any(c.islower() for c in run)


PROXIES = {
    # runs of >= 6 ACGT characters (about two tokens or more, as the paper looks at groups)
    "dna": lambda ch: _runs(ch, lambda c: c in "ACGT", 6),
    # runs of >= 10 base64 characters mixing upper, lower and digits (English words do not)
    "base64": lambda ch: _runs(ch, lambda c: c in _B64, 10, _b64_run),
    "hebrew": lambda ch: [_in_blocks([(0x0590, 0x05FF), (0xFB1D, 0xFB4F)])(c) for c in ch],
    "arabic": lambda ch: [_in_blocks([(0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF),
                                      (0xFE70, 0xFEFF)])(c) for c in ch],
}


def token_bytes(tokenizer, ids) -> list[bytes]:
    """The raw bytes of each byte-level BPE token (partial UTF-8 characters included)."""
    from tokenizers.pre_tokenizers import ByteLevel  # noqa: F401 - same alphabet as training
    global _U2B
    if _U2B is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
            list(range(ord("®"), ord("ÿ") + 1))
        cs, k = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + k)
                k += 1
        _U2B = {chr(c): b for b, c in zip(bs, cs)}
    out = []
    for t in tokenizer.convert_ids_to_tokens([int(i) for i in ids]):
        out.append(bytes(_U2B[c] for c in t) if all(c in _U2B for c in t) else t.encode())
    return out


_U2B = None


def proxy_token_share(tokenizer, ids, proxy: str) -> float:
    """Share of tokens ``ids`` that the domain's proxy accepts (most of the token's bytes lie in
    accepted characters; spaces and newlines between accepted characters count as accepted)."""
    if proxy not in PROXIES:
        raise ValueError(f"unknown proxy {proxy!r}: choose one of {sorted(PROXIES)}")
    ids = list(ids)
    if not ids:
        return 0.0
    tb = token_bytes(tokenizer, ids)
    data = b"".join(tb)
    chars, char_of_byte = [], []
    i = 0
    while i < len(data):
        b = data[i]
        n = 1 if b < 0x80 else 2 if b >> 5 == 6 else 3 if b >> 4 == 14 else 4 if b >> 3 == 30 else 1
        try:
            c = data[i:i + n].decode("utf-8")
        except UnicodeDecodeError:
            c, n = "\ufffd", 1
        char_of_byte += [len(chars)] * n
        chars.append(c)
        i += n
    ok = PROXIES[proxy](chars)
    for k, c in enumerate(chars):      # whitespace inside an accepted stretch is accepted
        if c.isspace() and not ok[k]:
            left = next((ok[j] for j in range(k - 1, -1, -1) if not chars[j].isspace()), False)
            right = next((ok[j] for j in range(k + 1, len(chars)) if not chars[j].isspace()), False)
            ok[k] = left and right
    acc, pos = 0, 0
    for t in tb:
        good = sum(ok[char_of_byte[pos + j]] for j in range(len(t)))
        acc += good * 2 > len(t)
        pos += len(t)
    return acc / len(ids)


# ---------------------------------------------------------------- the paper's demo, measured
DEMO_PROMPT = "1,2,3,4,5,6,7,8,9,10"
DEMO_DOMAINS = ("dna", "base64", "hebrew", "arabic")


def measure_effect(model, tokenizer, sae, feature: int, value: float, proxy: str, *,
                   prompt: str = DEMO_PROMPT, seeds=range(8), n_tokens: int = 40, mode: str = "clamp",
                   temperature: float = 0.8, top_k: int | None = 40, fast=None,
                   baseline_cache: dict | None = None) -> dict:
    """Share of generated tokens the domain's proxy accepts, with and without the feature
    pinned (``mode`` at ``value`` on every position), pooled over ``seeds``.

    ``ratio`` = (steered + e) / (baseline + e) with e = 1 / (tokens generated), so a baseline
    of zero does not divide by zero.
    """
    fast = fast or FastLM(model)
    kw = dict(max_new_tokens=n_tokens, temperature=temperature, top_k=top_k, fast=fast)
    base_ids, steer_ids, texts = [], [], []
    cache = baseline_cache if baseline_cache is not None else {}
    for seed in seeds:
        key = (prompt, seed, n_tokens, temperature, top_k)
        if key not in cache:
            cache[key] = generate(model, tokenizer, sae, prompt, (), seed=seed, **kw)
        b = cache[key]
        s = generate(model, tokenizer, sae, prompt, [Intervention(feature, mode, value)], seed=seed, **kw)
        base_ids.append(b.new_ids)
        steer_ids.append(s.new_ids)
        texts.append(s.text)
    n = sum(len(x) for x in base_ids)
    base = float(np.mean([proxy_token_share(tokenizer, x, proxy) for x in base_ids]))
    steer = float(np.mean([proxy_token_share(tokenizer, x, proxy) for x in steer_ids]))
    e = 1.0 / max(1, n)
    return {"feature": int(feature), "proxy": proxy, "mode": mode, "value": float(value),
            "baseline_share": base, "steered_share": steer, "ratio": (steer + e) / (base + e),
            "seeds": len(base_ids), "tokens_per_seed": n_tokens, "example": texts[0] if texts else ""}


def demo_effects(model, tokenizer, sae, catalog: FeatureCatalog, domains=DEMO_DOMAINS,
                 multiples=(1.0, 4.0, 10.0, 30.0), headline: float = 10.0, **kw) -> dict:
    """``measure_effect`` for each domain's most specific feature, clamped at each multiple of
    its max observed activation. Returns {domain: {...headline..., "by_multiple": [...]}}."""
    fast = kw.pop("fast", None) or FastLM(model)
    cache: dict = {}
    out = {}
    for dom in domains:
        if dom not in catalog.subdomain_names:
            continue
        feat = catalog.domain_feature(dom)
        mx = float(catalog.max_act[feat])
        rows = [measure_effect(model, tokenizer, sae, feat, m * mx, dom, fast=fast,
                               baseline_cache=cache, **kw) | {"multiple": m} for m in multiples]
        head = next((r for r in rows if r["multiple"] == headline), rows[-1])
        out[dom] = {**head, "max_act": mx, "label": catalog.label(feat), "by_multiple": rows}
    return out
