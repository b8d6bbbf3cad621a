"""How good is an SAE? Reconstruction, sparsity, dead features, and the model's loss with it.

All metrics are computed on held-out tokens (``pipeline.get_tokens(...).val``):

- ``mse``: mean over elements of (x - x_hat)^2, raw activation space.
- ``fvu``: fraction of variance unexplained, **about the mean**:
  sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (``fvu_about_zero`` divides by sum ||x||^2
  instead, a known bug that flatters SAEs; reported only to show the difference).
- ``l0``: mean number of active features per token.
- ``dead``: features that never fired on the evaluation tokens; ``ultralow``: density below
  ``ultralow_density`` (but not dead); ``density_hist``: log10 feature-density histogram.
- ``ce_clean`` / ``ce_sae`` / ``ce_zero`` / ``ce_mean``: next-token cross entropy of the clean
  model, with the SAE's reconstruction spliced in for the MLP activations, with them zeroed,
  and with them replaced by their mean.
- ``loss_recovered`` = (ce_zero - ce_sae) / (ce_zero - ce_clean) (the paper's formula);
  ``loss_recovered_mean`` uses mean ablation, a stricter baseline.
- ``kl_sae``: mean KL(clean || spliced) of the next-token distributions.

Position 0 of every row is the BOS token (a constant activation the SAE is not trained on):
splicing and ablations apply to positions 1.., and its identical loss cancels in every ratio.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .model import HOOK_MLP_POST, lm_loss, mlp_post


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained about the mean, over all rows of ``x`` [n, d]."""
    x, x_hat = x.double(), x_hat.double()
    var = (x - x.mean(0)).pow(2).sum()
    return float((x - x_hat).pow(2).sum() / var) if var > 0 else float("nan")


def loss_recovered(ce_clean: float, ce_sae: float, ce_ablated: float) -> float:
    """(L_ablated - L_sae) / (L_ablated - L_clean): 1 = perfect, 0 = no better than ablation."""
    gap = ce_ablated - ce_clean
    return float("nan") if gap == 0 else (ce_ablated - ce_sae) / gap


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position, from logits [..., vocab]."""
    lp, lq = F.log_softmax(logits_p.float(), -1), F.log_softmax(logits_q.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def density_histogram(density, lo: float = -8.0, hi: float = 0.0, width: float = 0.25) -> dict:
    """Histogram of log10 feature density (dead features counted apart)."""
    d = np.asarray(density, dtype=np.float64)
    live = d[d > 0]
    edges = np.arange(lo, hi + width / 2, width)
    counts, _ = np.histogram(np.clip(np.log10(live), lo, hi - 1e-9), bins=edges)
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist(), "dead": int((d == 0).sum())}


class _Acc:
    def __init__(self, d_in: int, d_sae: int):
        self.n = 0
        self.sq = 0.0
        self.sx = torch.zeros(d_in, dtype=torch.float64)
        self.sxx = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)
        self.l0 = 0.0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        x64 = x.double()
        self.n += len(x)
        self.sq += float((x64 - x_hat.double()).pow(2).sum())
        self.sx += x64.sum(0)
        self.sxx += float(x64.pow(2).sum())
        active = f > 0
        self.fires += active.sum(0).double()
        self.l0 += float(active.sum())


def _splice(value):
    """A hook that replaces the MLP activations at positions 1.. by ``value``."""
    def fn(act, hook):
        out = act.clone()
        out[:, 1:] = value.to(act.dtype)
        return out
    return fn


# The ablation baselines depend on the model and the tokens only, not on the SAE: a build
# evaluates several SAEs of one model on one evaluation set, so they are computed once.
_BASELINES: dict = {}


def _fingerprint(model, tokens: np.ndarray) -> tuple:
    import hashlib
    h = hashlib.sha1()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest(), hashlib.sha1(np.ascontiguousarray(tokens).tobytes()).hexdigest(), tokens.shape


@torch.no_grad()
def _ablation_baselines(model, tokens: np.ndarray, batches, d_mlp: int, progress: bool):
    """Summed next-token CE on ``tokens`` with the MLP zero-ablated and mean-ablated."""
    from tqdm.auto import tqdm
    key = _fingerprint(model, tokens)
    if key in _BASELINES:
        return _BASELINES[key]
    n_ctx = tokens.shape[1]
    total = torch.zeros(d_mlp, dtype=torch.float64)
    for tok in batches:
        total += mlp_post(model, tok)[:, 1:].double().sum((0, 1))
    mean_act = (total / (len(tokens) * (n_ctx - 1))).float()
    ce = {"zero": 0.0, "mean": 0.0}
    for tok in tqdm(batches, desc="ablation baselines", disable=not progress):
        for key_, value in (("zero", torch.zeros(d_mlp)), ("mean", mean_act)):
            logits = model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_POST, _splice(value))])
            ce[key_] += float(lm_loss(logits, tok, reduce=False).sum())
    if len(_BASELINES) > 8:
        _BASELINES.clear()
    _BASELINES[key] = ce
    return ce


@torch.no_grad()
def evaluate_sae(sae, model, tokens: np.ndarray, max_tokens: int | None = None, batch_rows: int = 32,
                 ultralow_density: float = 1e-5, progress: bool = False, return_density: bool = False):
    """All metrics above on token rows ``tokens`` [rows, n_ctx] (up to ``max_tokens`` tokens)."""
    from tqdm.auto import tqdm
    d_mlp = model.mono_config.d_mlp if hasattr(model, "mono_config") else model.cfg.d_mlp
    if sae.cfg.d_in != d_mlp:
        raise ValueError(f"the SAE has d_in = {sae.cfg.d_in} but the model's MLP has {d_mlp} neurons: "
                         f"use an SAE trained on this model (same preset)")
    n_ctx = tokens.shape[1]
    rows = len(tokens) if max_tokens is None else max(1, min(len(tokens), max_tokens // n_ctx))
    tokens = tokens[:rows]
    sae = sae.to("cpu").eval()
    batches = [torch.from_numpy(tokens[s:s + batch_rows].astype(np.int64)) for s in range(0, rows, batch_rows)]
    ce_ablated = _ablation_baselines(model, tokens, batches, d_mlp, progress)
    acc = _Acc(sae.cfg.d_in, sae.cfg.d_sae)
    ce = {"clean": 0.0, "sae": 0.0, **ce_ablated}
    kl_sum, n_pred = 0.0, 0
    for tok in tqdm(batches, desc="evaluating SAE", disable=not progress):
        box = {}

        def grab(act, hook):
            box["act"] = act.detach().clone()
            return act

        clean = model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_POST, grab)])
        x = box["act"][:, 1:].reshape(-1, d_mlp).float()
        f = sae.encode(x)
        x_hat = sae.decode(f)
        acc.add(x, x_hat, f)
        rec = x_hat.reshape(len(tok), n_ctx - 1, d_mlp)
        spliced = model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_POST, _splice(rec))])
        for key, logits in (("clean", clean), ("sae", spliced)):
            ce[key] += float(lm_loss(logits, tok, reduce=False).sum())
        kl_sum += float(kl_divergence(clean[:, :-1], spliced[:, :-1]).sum())
        n_pred += tok.shape[0] * (n_ctx - 1)
    ce = {k: v / n_pred for k, v in ce.items()}
    var = acc.sxx - float((acc.sx.pow(2)).sum()) / acc.n
    density = (acc.fires / acc.n).float()
    dead = int((density == 0).sum())
    ultralow = int(((density > 0) & (density < ultralow_density)).sum())
    m = {"mse": acc.sq / (acc.n * d_mlp), "fvu": acc.sq / var if var > 0 else float("nan"),
         "fvu_about_zero": acc.sq / acc.sxx if acc.sxx > 0 else float("nan"),
         "l0": acc.l0 / acc.n, "dead": dead, "dead_frac": dead / sae.cfg.d_sae,
         "ultralow": ultralow, "ultralow_frac": ultralow / sae.cfg.d_sae, "ultralow_density": ultralow_density,
         "density_hist": density_histogram(density.numpy()),
         "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"], "ce_mean": ce["mean"],
         "loss_recovered": loss_recovered(ce["clean"], ce["sae"], ce["zero"]),
         "loss_recovered_mean": loss_recovered(ce["clean"], ce["sae"], ce["mean"]),
         "kl_sae": kl_sum / n_pred, "eval_tokens": acc.n, "min_resolvable_density": 1.0 / acc.n}
    for k, v in m.items():
        if isinstance(v, float) and not math.isfinite(v):
            m[k] = None
    return (m, density) if return_density else m


def summary(m: dict) -> str:
    """One line for a table or a progress message."""
    return (f"L0 {m['l0']:.1f} | FVU {m['fvu']:.3f} | loss recovered {100 * m['loss_recovered']:.1f}% "
            f"(vs mean-ablation {100 * m['loss_recovered_mean']:.1f}%) | KL {m['kl_sae']:.4f} | "
            f"dead {m['dead']} ({100 * m['dead_frac']:.1f}%) | ultralow {m['ultralow']}")
