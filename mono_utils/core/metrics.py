"""How good is an SAE? Reconstruction, sparsity, dead features, and the model's loss with it.

All metrics are computed on held-out tokens (``pipeline.get_tokens(...).val``):

- ``mse``: mean over elements of (x - x_hat)^2, raw activation space.
- ``fvu``: fraction of variance unexplained, **about the mean**:
  sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (``fvu_about_zero`` divides by sum ||x||^2
  instead, a known bug that flatters SAEs; reported only to show the difference).
- ``l0``: mean number of active features per token.
- ``dead``: features that never fired on the density tokens (the evaluation tokens and, with
  ``density_tokens``, more held-out tokens through the encoder only: 512k on default, enough to
  resolve the paper's ultralow-density cluster); ``ultralow``: live features of the low mode of
  the bimodal density histogram (``ultralow_threshold`` locates it; the paper excludes them
  from analyses); ``density_hist``: log10 feature-density histogram.
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

import hashlib
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..store.results import cached_result, input_id
from .malloc_tuning import tune_malloc
from .device import on_device
from .model import HOOK_MLP_POST, lm_loss, mlp_post, model_folder
from .sae import check_activations


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


ULTRALOW_DEFAULT = 1e-5   # used when the density histogram shows no separate low mode


def ultralow_threshold(density, default: float = ULTRALOW_DEFAULT, width: float = 0.25,
                       min_gap: float = 1.0, max_low_peak: float = 1e-3, encoder=None) -> float:
    """The density below which a live feature belongs to the *ultralow-density cluster*.

    The paper finds the log10 feature-density histogram bimodal and leaves the low mode out of
    every analysis (mostly uninterpretable features whose encoder vectors are nearly parallel).
    Where that mode sits depends on the model, the SAE and the data, so it is located, not
    assumed: the emptiest bin between the two highest modes (at least ``min_gap`` decades
    apart) of the smoothed histogram. ``default`` when there is no such low mode: one mode
    only, a shallow dip (the trough above half the lower peak), or a low mode of features that
    fire on more than one token in ``max_low_peak`` (rare, but not ultralow by any reading).
    How many features the cluster holds is reported, never used to decide: short CPU runs
    leave many more features there than the paper's 7%.

    ``encoder`` (the SAE's ``W_enc`` [d_in, d_sae]) adds the paper's second test: the low mode
    is the ultralow cluster only if its encoder vectors are nearly parallel (mean pairwise cosine
    >= 0.5 and twice the main mode's); a low mode of ordinary rare features is kept.
    """
    d = np.asarray(density, dtype=np.float64)
    ld = np.log10(d[d > 0])
    if len(ld) < 20:
        return default
    edges = np.arange(np.floor(ld.min()), np.ceil(ld.max()) + width + 1e-9, width)
    counts, edges = np.histogram(ld, bins=edges)
    smooth = np.convolve(np.pad(counts.astype(float), 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    gap = int(round(min_gap / width))
    p1 = int(np.argmax(smooth))
    far = [i for i in range(len(smooth)) if abs(i - p1) >= gap]
    if not far:
        return default
    p2 = max(far, key=lambda i: smooth[i])
    lo, hi = sorted((p1, p2))
    trough = lo + int(np.argmin(smooth[lo:hi + 1]))
    threshold = 10 ** edges[trough]
    if smooth[trough] > 0.5 * min(smooth[lo], smooth[hi]) or edges[lo] + width / 2 > np.log10(max_low_peak):
        return default
    if encoder is not None:
        low, main = (d > 0) & (d < threshold), d >= threshold
        c_low, c_main = mean_pairwise_cosine(encoder, low), mean_pairwise_cosine(encoder, main)
        if not (c_low >= 0.5 and c_low >= 2 * c_main):
            return default
    return float(threshold)


def mean_pairwise_cosine(encoder, mask, n: int = 512) -> float:
    """Mean cosine between the encoder vectors of (up to ``n`` of) the features in ``mask``."""
    idx = np.flatnonzero(np.asarray(mask))
    if len(idx) < 2:
        return float("nan")
    idx = idx[np.linspace(0, len(idx) - 1, min(n, len(idx))).astype(int)]
    e = torch.as_tensor(np.asarray(encoder.detach().cpu() if hasattr(encoder, "detach") else encoder))[:, idx]
    e = F.normalize(e.double().t(), dim=1)
    s = e @ e.t()
    k = len(idx)
    return float((s.sum() - s.diagonal().sum()) / (k * k - k))


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
        self.sx += x64.sum(0).cpu()
        self.sxx += float(x64.pow(2).sum())
        active = f > 0
        self.fires += active.sum(0).double().cpu()
        self.l0 += float(active.sum())


def _splice(value):
    """A hook that replaces the MLP activations at positions 1.. by ``value``."""
    def fn(act, hook):
        out = act.clone()
        out[:, 1:] = value.to(act.device, act.dtype)
        return out
    return fn


# The ablation baselines depend on the model and the tokens only, not on the SAE: a build
# evaluates several SAEs of one model on one evaluation set, in several processes, so they are
# computed once and kept in memory and, for a model from the artifact store, on disk.
_BASELINES: dict = {}


def _fingerprint(model, tokens: np.ndarray) -> tuple:
    h = hashlib.sha1()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest(), hashlib.sha1(np.ascontiguousarray(tokens).tobytes()).hexdigest(), tokens.shape


@torch.no_grad()
def _compute_baselines(model, tokens: np.ndarray, batches, d_mlp: int, progress: bool) -> dict:
    n_ctx = tokens.shape[1]
    total = torch.zeros(d_mlp, dtype=torch.float64)
    for tok in batches:
        total += mlp_post(model, tok)[:, 1:].double().sum((0, 1)).cpu()
    mean_act = (total / (len(tokens) * (n_ctx - 1))).float()
    ce = {"zero": 0.0, "mean": 0.0}
    for tok in tqdm(batches, desc="ablation baselines", disable=not progress):
        for key_, value in (("zero", torch.zeros(d_mlp)), ("mean", mean_act)):
            logits = model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_POST, _splice(value))])
            ce[key_] += float(lm_loss(logits, tok, reduce=False).sum())
    return ce


def _ablation_baselines(model, tokens: np.ndarray, batches, d_mlp: int, progress: bool, store=None):
    """Summed next-token CE on ``tokens`` with the MLP zero-ablated and mean-ablated."""
    key = _fingerprint(model, tokens)
    if key in _BASELINES:
        return _BASELINES[key]
    if model_folder(model) is not None:
        config = {"model": input_id(model_folder(model)), "weights_sha1": key[0], "tokens_sha1": key[1],
                  "shape": list(key[2]), "version": 1}
        _, ce = cached_result("ablation-baselines", config,
                              lambda: ({}, _compute_baselines(model, tokens, batches, d_mlp, progress)), store)
    else:
        ce = _compute_baselines(model, tokens, batches, d_mlp, progress)
    if len(_BASELINES) > 8:
        _BASELINES.clear()
    _BASELINES[key] = ce
    return ce


def _decode(sae, f: torch.Tensor) -> torch.Tensor:
    """``sae.decode(f)``, through a sparse product when few features are active (the usual case)."""
    if f.ndim == 2 and float((f != 0).float().mean()) < 0.05:
        with warnings.catch_warnings():   # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            x_hat = torch.sparse.mm(f.to_sparse_csr(), sae.W_dec) + sae.b_dec
        return x_hat / sae.input_scale
    return sae.decode(f)


# The largest dense [rows, d_sae] block the evaluation encodes at once (fp32: 256 MB). A batch of
# 32 rows of 127 positions at 131,072 features would be 2.1 GB a tensor, several of them alive at
# once; it is encoded in slices of rows instead. Every SAE of the default preset (<= 8,192
# features: 33M cells) still goes through in one piece, so its metrics are unchanged to the bit.
EVAL_MAX_CELLS = 64 * 2**20


def _sae_rows(d_sae: int, n_rows: int, max_cells: int = EVAL_MAX_CELLS) -> int:
    """How many activation rows to encode at once: all ``n_rows`` unless that exceeds ``max_cells``."""
    return max(1, min(n_rows, max_cells // max(1, int(d_sae))))


def _fire_counts(sae, x: torch.Tensor) -> torch.Tensor:
    """How many rows of raw activations ``x`` each feature fires on (encoder only)."""
    check_activations(x, sae.cfg.d_in)
    if sae.cfg.architecture == "relu":
        return (sae.pre_acts(x * sae.input_scale) > 0).sum(0)
    return (sae.encode(x) > 0).sum(0)


@torch.no_grad()
def evaluate_sae(sae, model, tokens: np.ndarray, max_tokens: int | None = None, batch_rows: int = 32,
                 ultralow_density: float | None = None, progress: bool = False, return_density: bool = False,
                 density_tokens: int | None = None, store=None, device=None):
    """All metrics above on token rows ``tokens`` [rows, n_ctx].

    ``device``: where the model and the SAE run (default the CPU; the build passes the device
    it trained on, so that a GPU also evaluates: at the paper's 131,072 features and 4M density
    tokens the encoder alone is ~0.5 PFLOP, ~half an hour of a 16-core CPU). Sums are kept on
    the CPU in float64 either way; the model and the SAE come back on the CPU.

    Loss, reconstruction and L0 use up to ``max_tokens`` tokens; feature density, dead and
    ultralow counts use up to ``density_tokens`` (default: the same rows), the rows after
    those going through the model only up to the MLP and through the encoder only.
    """
    tune_malloc()   # no page faults per step (see malloc_tuning)
    d_mlp = int(model.cfg.d_mlp)
    if sae.cfg.d_in != d_mlp:
        raise ValueError(f"the SAE has d_in = {sae.cfg.d_in} but the model's MLP has {d_mlp} neurons: "
                         f"use an SAE trained on this model (same preset)")
    n_ctx = tokens.shape[1]
    rows = len(tokens) if max_tokens is None else max(1, min(len(tokens), max_tokens // n_ctx))
    drows = rows if density_tokens is None else max(rows, min(len(tokens), density_tokens // n_ctx))
    all_tokens, tokens = tokens, tokens[:rows]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    sae = sae.to(dev).eval()
    with on_device(model, dev):
        out = _evaluate(sae, model, tokens, all_tokens, rows, drows, batch_rows, ultralow_density, progress,
                        store, dev, d_mlp, n_ctx)
    sae.to("cpu")
    m, density = out
    return (m, density) if return_density else m


def _evaluate(sae, model, tokens, all_tokens, rows, drows, batch_rows, ultralow_density, progress, store, dev,
              d_mlp, n_ctx):
    from tqdm.auto import tqdm
    batches = [torch.from_numpy(tokens[s:s + batch_rows].astype(np.int64)).to(dev) for s in range(0, rows, batch_rows)]
    ce_ablated = _ablation_baselines(model, tokens, batches, d_mlp, progress, store)
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
        x_hat = torch.empty_like(x)
        step = _sae_rows(sae.cfg.d_sae, len(x))   # all rows at once below ~64M cells (every SAE of default)
        for r in range(0, len(x), step):
            f = sae.encode(x[r:r + step])
            x_hat[r:r + step] = _decode(sae, f)
            acc.add(x[r:r + step], x_hat[r:r + step], f)
            del f
        rec = x_hat.reshape(len(tok), n_ctx - 1, d_mlp)
        spliced = model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_POST, _splice(rec))])
        # one log-softmax per run serves both the cross entropy and the KL divergence
        lp_clean = F.log_softmax(clean[:, :-1].float(), -1)
        lp_sae = F.log_softmax(spliced[:, :-1].float(), -1)
        target = tok[:, 1:, None]
        ce["clean"] -= float(lp_clean.gather(-1, target).sum())
        ce["sae"] -= float(lp_sae.gather(-1, target).sum())
        kl_sum += float((lp_clean.exp() * (lp_clean - lp_sae)).sum())
        n_pred += tok.shape[0] * (n_ctx - 1)
    ce = {k: v / n_pred for k, v in ce.items()}
    var = acc.sxx - float((acc.sx.pow(2)).sum()) / acc.n
    fires, n_density = acc.fires.clone(), acc.n
    extra = range(rows, drows, batch_rows)
    for s in tqdm(extra, desc="feature density", disable=not progress or not len(extra)):
        tok = torch.from_numpy(all_tokens[s:min(s + batch_rows, drows)].astype(np.int64)).to(dev)
        x = mlp_post(model, tok)[:, 1:].reshape(-1, d_mlp).float()
        step = _sae_rows(sae.cfg.d_sae, len(x))
        for r in range(0, len(x), step):
            fires += _fire_counts(sae, x[r:r + step]).double().cpu()
        n_density += len(x)
    density = (fires / n_density).float()
    dead = int((density == 0).sum())
    if ultralow_density is None:
        ultralow_density = ultralow_threshold(density.numpy(), encoder=sae.W_enc)
    ultralow = int(((density > 0) & (density < ultralow_density)).sum())
    m = {"mse": acc.sq / (acc.n * d_mlp), "fvu": acc.sq / var if var > 0 else float("nan"),
         "fvu_about_zero": acc.sq / acc.sxx if acc.sxx > 0 else float("nan"),
         "l0": acc.l0 / acc.n, "dead": dead, "dead_frac": dead / sae.cfg.d_sae,
         "ultralow": ultralow, "ultralow_frac": ultralow / sae.cfg.d_sae, "ultralow_density": ultralow_density,
         "ultralow_below_1e-5": int(((density > 0) & (density < 1e-5)).sum()),
         "density_hist": density_histogram(density.numpy()),
         "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"], "ce_mean": ce["mean"],
         "loss_recovered": loss_recovered(ce["clean"], ce["sae"], ce["zero"]),
         "loss_recovered_mean": loss_recovered(ce["clean"], ce["sae"], ce["mean"]),
         "kl_sae": kl_sum / n_pred, "eval_tokens": acc.n, "density_tokens": n_density,
         # dead on the loss-evaluation tokens alone, for comparison with runs that report that
         "dead_on_eval_tokens": int((acc.fires == 0).sum()),
         "min_resolvable_density": 1.0 / n_density}
    for k, v in m.items():
        if isinstance(v, float) and not math.isfinite(v):
            m[k] = None
    return m, density


def summary(m: dict) -> str:
    """One line for a table or a progress message."""
    return (f"L0 {m['l0']:.1f} | FVU {m['fvu']:.3f} | loss recovered {100 * m['loss_recovered']:.1f}% "
            f"(vs mean-ablation {100 * m['loss_recovered_mean']:.1f}%) | KL {m['kl_sae']:.4f} | "
            f"dead {m['dead']} ({100 * m['dead_frac']:.1f}%) | ultralow {m['ultralow']}")
