"""Universality: do two transformers that differ only in seed learn the same features?

A unit (SAE feature or MLP neuron) is represented by its activations on a fixed token set.
For every unit of model A we find the most correlated unit of model B (Pearson). The
correlation matrix is accumulated in a single streaming pass over token chunks: per-unit sums,
sums of squares and the cross-product matrix, in float64. Sparse activations (SAE features)
go through a sparse x sparse product, dense ones (neurons) through a matmul; there is never a
Python loop over pairs. Units that never fire have no variance: they are excluded (and
counted), never turned into NaN. Notebook 04 loads the comparison of A/1 with B/1 from the
artifact store (``get_comparison``), computed once from the models, the SAEs and the tokens.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..core.model import direction_logit_weights, mlp_post, model_config_of
from ..features.dashboards import show_token

SPARSE_BELOW = 0.1      # a chunk denser than this goes through a dense matmul
SPARSE_MIN_UNITS = 1024  # unit sets narrower than this always go through a dense matmul


def _csr(x, dtype=np.float64) -> sp.csr_matrix:
    """[n, units] torch / numpy / scipy -> scipy CSR."""
    if sp.issparse(x):
        m = sp.csr_matrix(x, dtype=dtype, copy=True)
        m.eliminate_zeros()
        return m
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.float()
    idx = t.nonzero()                                  # row-major order: ready for CSR
    r, c = idx[:, 0], idx[:, 1]
    indptr = np.zeros(t.shape[0] + 1, np.int64)
    np.cumsum(torch.bincount(r, minlength=t.shape[0]).numpy(), out=indptr[1:])
    return sp.csr_matrix((t[r, c].numpy().astype(dtype), c.numpy(), indptr), shape=tuple(t.shape))


def _dense(x) -> np.ndarray:
    if sp.issparse(x):
        return x.toarray().astype(np.float64)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _add_sparse(acc: np.ndarray, m: sp.csr_matrix) -> None:
    """acc += m for a CSR m, without densifying m (index_add_ also sums duplicate entries)."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    flat = torch.from_numpy(rows * m.shape[1] + m.indices.astype(np.int64))
    torch.from_numpy(acc).view(-1).index_add_(0, flat, torch.from_numpy(m.data.astype(np.float64, copy=False)))


class CorrelationStats:
    """Streaming second moments of two unit sets over the same tokens.

    ``update(x, y)`` with ``x`` [n, n_x] and ``y`` [n, n_y] (torch, numpy or scipy sparse; the
    same n tokens in the same order). ``correlation()`` / ``cosine()`` give [n_x, n_y]
    matrices; rows/columns of units without variance are 0 and flagged in ``live_x/live_y``.
    """

    def __init__(self, n_x: int, n_y: int, min_count: int = 1):
        self.n_x, self.n_y, self.min_count = int(n_x), int(n_y), int(min_count)
        self.n = 0
        self.sx, self.sxx, self.cx = np.zeros(n_x), np.zeros(n_x), np.zeros(n_x, np.int64)
        self.sy, self.syy, self.cy = np.zeros(n_y), np.zeros(n_y), np.zeros(n_y, np.int64)
        self.sxy = np.zeros((n_x, n_y))

    def update(self, x, y) -> "CorrelationStats":
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"the two activation sets cover different numbers of tokens ({x.shape[0]} vs "
                             f"{y.shape[0]}): run both on the same token set")
        if x.shape[1] != self.n_x or y.shape[1] != self.n_y:
            raise ValueError(f"expected [tokens, {self.n_x}] and [tokens, {self.n_y}] activations, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        # small unit sets (neurons) go dense: cheap, and they are dense anyway
        wide = sp.issparse(x) or sp.issparse(y) or max(x.shape[1], y.shape[1]) >= SPARSE_MIN_UNITS
        xs, ys = (_csr(x), _csr(y)) if wide else (None, None)
        n = max(1, x.shape[0])
        if wide and min(xs.nnz / (n * max(1, self.n_x)), ys.nnz / (n * max(1, self.n_y))) < SPARSE_BELOW:
            _add_sparse(self.sxy, xs.T.tocsr() @ ys)
            for s, sums, sq, cnt in ((xs, self.sx, self.sxx, self.cx), (ys, self.sy, self.syy, self.cy)):
                sums += np.asarray(s.sum(0)).ravel()
                sq += np.asarray(s.multiply(s).sum(0)).ravel()
                cnt += np.bincount(s.indices, minlength=s.shape[1])
        else:
            xd, yd = _dense(x), _dense(y)
            # fp32 matmul within a chunk (fast), float64 across chunks
            self.sxy += (torch.from_numpy(xd).float().T @ torch.from_numpy(yd).float()).numpy()
            for d, sums, sq, cnt in ((xd, self.sx, self.sxx, self.cx), (yd, self.sy, self.syy, self.cy)):
                sums += d.sum(0)
                sq += (d * d).sum(0)
                cnt += np.count_nonzero(d, axis=0)
        self.n += x.shape[0]
        return self

    def _var(self):
        vx = self.sxx / max(self.n, 1) - (self.sx / max(self.n, 1)) ** 2
        vy = self.syy / max(self.n, 1) - (self.sy / max(self.n, 1)) ** 2
        return vx, vy

    @property
    def live_x(self) -> np.ndarray:
        vx, _ = self._var()
        return (self.cx >= self.min_count) & (vx > 1e-12 * np.maximum(self.sxx / max(self.n, 1), 1e-30))

    @property
    def live_y(self) -> np.ndarray:
        _, vy = self._var()
        return (self.cy >= self.min_count) & (vy > 1e-12 * np.maximum(self.syy / max(self.n, 1), 1e-30))

    def _check(self):
        if self.n < 2:
            raise ValueError(f"only {self.n} tokens seen: feed at least 2 tokens (update) before asking for correlations")

    def correlation(self) -> np.ndarray:
        """Pearson correlation [n_x, n_y] (float32); 0 for units without variance."""
        self._check()
        n = self.n
        vx, vy = self._var()
        lx, ly = self.live_x, self.live_y
        inv_x = np.where(lx, 1.0 / np.sqrt(np.where(lx, vx * n, 1.0)), 0.0)
        inv_y = np.where(ly, 1.0 / np.sqrt(np.where(ly, vy * n, 1.0)), 0.0)
        out = np.outer(self.sx / n, self.sy)          # in place from here: one [n_x, n_y] buffer
        np.subtract(self.sxy, out, out=out)
        out *= inv_x[:, None]
        out *= inv_y[None, :]
        np.clip(out, -1, 1, out=out)
        return out.astype(np.float32)

    def cosine(self) -> np.ndarray:
        """Uncentred cosine similarity [n_x, n_y] (float32); 0 for units that never fire."""
        self._check()
        nx, ny = np.sqrt(self.sxx), np.sqrt(self.syy)
        lx, ly = (self.cx >= self.min_count) & (nx > 0), (self.cy >= self.min_count) & (ny > 0)
        inv_x = np.where(lx, 1.0 / np.where(lx, nx, 1.0), 0.0)
        inv_y = np.where(ly, 1.0 / np.where(ly, ny, 1.0), 0.0)
        return np.clip(self.sxy * inv_x[:, None] * inv_y[None, :], -1, 1).astype(np.float32)


@dataclass
class MatchResult:
    """For each unit of A: its most correlated unit of B. Excluded units: ``match`` -1, corr 0."""
    max_corr: np.ndarray        # [n_a] float32
    match: np.ndarray           # [n_a] int64
    live_a: np.ndarray          # [n_a] bool
    live_b: np.ndarray          # [n_b] bool
    n_tokens: int
    corr: np.ndarray | None = field(default=None, repr=False)   # [n_a, n_b] when kept

    @property
    def n_excluded_a(self) -> int:
        return int((~self.live_a).sum())

    @property
    def n_excluded_b(self) -> int:
        return int((~self.live_b).sum())

    @property
    def live_max_corr(self) -> np.ndarray:
        return self.max_corr[self.live_a]

    @property
    def median(self) -> float:
        v = self.live_max_corr
        return float(np.median(v)) if v.size else float("nan")

    def summary(self) -> dict:
        v = self.live_max_corr
        return {"median_max_corr": self.median, "mean_max_corr": float(v.mean()) if v.size else float("nan"),
                "n_live_a": int(self.live_a.sum()), "n_excluded_a": self.n_excluded_a,
                "n_live_b": int(self.live_b.sum()), "n_excluded_b": self.n_excluded_b,
                "n_tokens": int(self.n_tokens)}


def match_units(stats: CorrelationStats, live_a: np.ndarray | None = None, live_b: np.ndarray | None = None,
                keep_matrix: bool = False) -> MatchResult:
    """Max-correlation matching A -> B from accumulated statistics (extra masks may exclude more)."""
    corr = stats.correlation()
    la = stats.live_x if live_a is None else stats.live_x & np.asarray(live_a, bool)
    lb = stats.live_y if live_b is None else stats.live_y & np.asarray(live_b, bool)
    if not lb.any():
        raise ValueError("no unit of B has any variance on these tokens: nothing to match against "
                         "(check that model B's SAE is trained and the token set is not empty)")
    masked = np.where(lb[None, :], corr, -np.inf)
    match = masked.argmax(1).astype(np.int64)
    best = np.take_along_axis(corr, match[:, None], 1)[:, 0]
    max_corr = np.where(la, best, 0.0).astype(np.float32)
    match = np.where(la, match, -1)
    return MatchResult(max_corr, match, la, lb, stats.n, corr if keep_matrix else None)


def _chunks(acts, chunk: int):
    if isinstance(acts, (list, tuple)):
        yield from acts
        return
    for s in range(0, acts.shape[0], chunk):
        yield acts[s:s + chunk]


def max_correlation(acts_a, acts_b, chunk: int = 8192, min_count: int = 1,
                    keep_matrix: bool = False) -> MatchResult:
    """Match every unit of ``acts_a`` [n, A] to its most correlated unit of ``acts_b`` [n, B].

    Either arrays (numpy / torch / scipy sparse) over the same n tokens, or equal-length lists
    of chunks. Units active on fewer than ``min_count`` tokens (or constant) are excluded.
    """
    if not isinstance(acts_a, (list, tuple)) and acts_a.shape[0] != acts_b.shape[0]:
        raise ValueError(f"token sets of different lengths: A has {acts_a.shape[0]} tokens, B has "
                         f"{acts_b.shape[0]}; both must be activations on the same tokens")
    ca, cb = list(_chunks(acts_a, chunk)), list(_chunks(acts_b, chunk))
    if len(ca) != len(cb):
        raise ValueError(f"{len(ca)} chunks for A but {len(cb)} for B: pass chunks of the same tokens")
    if not ca:
        raise ValueError("no activations given: pass at least 2 tokens")
    stats = CorrelationStats(ca[0].shape[1], cb[0].shape[1], min_count)
    for a, b in zip(ca, cb):
        stats.update(a, b)
    return match_units(stats, keep_matrix=keep_matrix)


def rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of row i of x with row i of y ([k, m] each); 0 for constant rows."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"rowwise_pearson needs equal shapes, got {x.shape} and {y.shape}")
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    return np.where(den > 0, (x * y).sum(1) / np.where(den > 0, den, 1.0), 0.0).astype(np.float32)


class DiagonalStats:
    """Streaming Pearson correlation of column i of x with column i of y (matched pairs)."""

    def __init__(self, k: int):
        self.k, self.n = k, 0
        self.s = np.zeros((5, k))   # sx, sy, sxx, syy, sxy

    def update(self, x, y) -> None:
        if x.shape != y.shape or x.shape[1] != self.k:
            raise ValueError(f"expected two [tokens, {self.k}] arrays, got {x.shape} and {y.shape}")
        xs, ys = _csr(x), _csr(y)
        for i, m in enumerate((xs, ys, xs.multiply(xs), ys.multiply(ys), xs.multiply(ys))):
            self.s[i] += np.asarray(m.sum(0)).ravel()
        self.n += x.shape[0]

    def correlation(self) -> np.ndarray:
        n = max(self.n, 1)
        sx, sy, sxx, syy, sxy = self.s
        cov = sxy - sx * sy / n
        vx, vy = sxx - sx * sx / n, syy - sy * sy / n
        den = np.sqrt(np.clip(vx, 0, None) * np.clip(vy, 0, None))
        ok = den > 1e-12 * np.maximum(np.sqrt(sxx * syy), 1e-30)
        return np.where(ok, cov / np.where(ok, den, 1.0), 0.0).astype(np.float32)


# ---------------------------------------------------------------- two models, same tokens
def logit_weights(model, directions: torch.Tensor) -> torch.Tensor:
    """Each direction in MLP-activation space [k, d_mlp] -> its logit weights [k, d_vocab]."""
    return direction_logit_weights(model, directions)


def _encode(sae, acts: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sae.encode(acts)


@dataclass
class UniversalityResult:
    features: MatchResult
    neurons: MatchResult
    logit_sim: np.ndarray           # [d_sae_a] logit-weight correlation with the matched B feature
    attribution_sim: np.ndarray     # [d_sae_a] attribution correlation with the matched B feature
    neuron_logit_sim: np.ndarray    # [d_mlp]
    label_corr_a: np.ndarray        # [d_sae_a, n_labels] feature vs binary label indicator
    label_corr_b: np.ndarray        # [d_sae_b, n_labels]
    label_names: list[str]
    density_a: np.ndarray
    density_b: np.ndarray
    acts_a: sp.csc_matrix = field(repr=False, default=None)   # [tokens, d_sae_a]
    acts_b: sp.csc_matrix = field(repr=False, default=None)
    tokens: np.ndarray = field(repr=False, default=None)      # [rows, n_ctx]
    seconds: dict = field(default_factory=dict)   # where the time went
    # set by get_comparison: the cache's config (inputs, min_count); acts_a/acts_b then hold
    # only what the examples read (see example_entries)
    params: dict = field(default_factory=dict)

    def best_feature_for(self, label: str, which: str = "A") -> tuple[int, float]:
        if label not in self.label_names:
            raise ValueError(f"unknown label {label!r}: choose one of {self.label_names}")
        j = self.label_names.index(label)
        lc = self.label_corr_a if which == "A" else self.label_corr_b
        live = self.features.live_a if which == "A" else self.features.live_b
        col = np.where(live, lc[:, j], -np.inf)
        i = int(col.argmax())
        return i, float(lc[i, j])

    def named_matches(self, labels: Iterable[str] | None = None):
        """One row per label: the A feature that tracks it best, its match in B, the similarities."""
        rows = []
        for lab in (labels or self.label_names):
            if lab not in self.label_names:
                continue
            i, lc = self.best_feature_for(lab, "A")
            j = int(self.features.match[i])
            bi, blc = self.best_feature_for(lab, "B")
            rows.append({"label": lab, "feature_A": i, "label_corr_A": round(lc, 3), "feature_B": j,
                         "activation_corr": round(float(self.features.max_corr[i]), 3),
                         "logit_sim": round(float(self.logit_sim[i]), 3),
                         "attribution_sim": round(float(self.attribution_sim[i]), 3),
                         "best_B_for_label": bi, "label_corr_B": round(blc, 3), "same_as_match": bi == j})
        return pd.DataFrame(rows)

    def metrics(self) -> dict:
        f, n = self.features.summary(), self.neurons.summary()
        live = self.features.live_a
        return {"universality": {
            "median_max_corr_features": f["median_max_corr"], "median_max_corr_neurons": n["median_max_corr"],
            "gap": f["median_max_corr"] - n["median_max_corr"],
            "median_logit_sim_features": float(np.median(self.logit_sim[live])) if live.any() else None,
            "median_attribution_sim_features": float(np.median(self.attribution_sim[live])) if live.any() else None,
            "features": f, "neurons": n}}


def _onehot(ids: np.ndarray, n_labels: int) -> sp.csr_matrix:
    ids = np.asarray(ids).reshape(-1).astype(np.int64)
    return sp.csr_matrix((np.ones(len(ids)), (np.arange(len(ids)), ids)), shape=(len(ids), n_labels))


def label_correlation(acts, label_ids: np.ndarray, n_labels: int, chunk: int = 65536) -> np.ndarray:
    """Pearson correlation [units, n_labels] of each unit with each per-token label indicator."""
    acts = _csr(acts, np.float32)
    ids = np.asarray(label_ids).reshape(-1)
    if len(ids) != acts.shape[0]:
        raise ValueError(f"{len(ids)} labels for {acts.shape[0]} tokens: pass one label per token")
    st = CorrelationStats(acts.shape[1], n_labels)
    for s in range(0, len(ids), chunk):
        st.update(acts[s:s + chunk], _onehot(ids[s:s + chunk], n_labels))
    return st.correlation()


def compare_models(model_a, model_b, sae_a, sae_b, tokens: np.ndarray, labels: dict | None = None,
                   batch_rows: int = 64, min_count: int = 1, progress: bool = True) -> UniversalityResult:
    """Run A and B (with their SAEs) on the same ``tokens`` [rows, n_ctx]; match features and neurons.

    ``labels``: {"prefix": (ids [rows, n_ctx], names)} per-token labels (e.g. subdomain), used
    to find the feature that tracks each label best.
    """
    da, db = sae_a.cfg.d_in, sae_b.cfg.d_in
    if da != db:
        raise ValueError(f"the SAEs read activations of different widths (d_in {da} vs {db}): "
                         f"compare SAEs trained on the same layer of models of the same shape")
    for name, m, s in (("A", model_a, sae_a), ("B", model_b, sae_b)):
        if model_config_of(m).d_mlp != s.cfg.d_in:
            raise ValueError(f"SAE {name} has d_in {s.cfg.d_in} but model {name} has d_mlp "
                             f"{model_config_of(m).d_mlp}: pair each SAE with the model it was trained on")
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [rows, n_ctx >= 2], got shape {tokens.shape}")
    labels = labels or {}
    names, offsets, lab_ids = [], [], []
    for prefix, (ids, lnames) in labels.items():
        if np.asarray(ids).shape != tokens.shape:
            raise ValueError(f"labels {prefix!r} have shape {np.asarray(ids).shape} but tokens {tokens.shape}: "
                             f"pass one label per token")
        offsets.append(len(names))
        names += [f"{prefix}:{n}" for n in lnames]
        lab_ids.append(np.asarray(ids))
    n_lab = max(len(names), 1)
    ka, kb, dm = sae_a.cfg.d_sae, sae_b.cfg.d_sae, da
    neu = CorrelationStats(dm, dm, min_count)
    feat = CorrelationStats(ka, kb, min_count)
    lab_a, lab_b = CorrelationStats(ka, n_lab), CorrelationStats(kb, n_lab)
    chunks_a, chunks_b = [], []
    secs = {"activations": 0.0, "correlation": 0.0}
    for s in tqdm(range(0, len(tokens), batch_rows), desc="A and B activations", disable=not progress):
        t0 = time.perf_counter()
        tok = torch.from_numpy(tokens[s:s + batch_rows].astype(np.int64))
        xa = mlp_post(model_a, tok).reshape(-1, dm)
        xb = mlp_post(model_b, tok).reshape(-1, dm)
        fa, fb = _csr(_encode(sae_a, xa), np.float32), _csr(_encode(sae_b, xb), np.float32)
        t1 = time.perf_counter()
        neu.update(xa, xb)
        feat.update(fa, fb)
        if names:
            oh = sum(_onehot(ids[s:s + batch_rows] + off, n_lab) for ids, off in zip(lab_ids, offsets))
            lab_a.update(fa, oh)
            lab_b.update(fb, oh)
        chunks_a.append(fa)
        chunks_b.append(fb)
        t2 = time.perf_counter()
        secs["activations"] += t1 - t0
        secs["correlation"] += t2 - t1
    t0 = time.perf_counter()
    features, neurons = match_units(feat), match_units(neu)
    secs["correlation"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    acts_a, acts_b = sp.vstack(chunks_a).tocsr(), sp.vstack(chunks_b).tocsr()
    del chunks_a, chunks_b
    # logit weights and attribution for matched pairs
    lw_a = logit_weights(model_a, sae_a.W_dec_raw.detach()).numpy()
    lw_b = logit_weights(model_b, sae_b.W_dec_raw.detach()).numpy()
    m = np.where(features.match >= 0, features.match, 0)
    logit_sim = np.where(features.live_a, rowwise_pearson(lw_a, lw_b[m]), 0.0).astype(np.float32)
    eye = torch.eye(dm)
    neuron_logit_sim = rowwise_pearson(logit_weights(model_a, eye).numpy(),
                                       logit_weights(model_b, eye).numpy()[np.where(neurons.match >= 0, neurons.match, 0)])
    attribution_sim = _attribution_sim(acts_a, acts_b, lw_a, lw_b, m, tokens, features.live_a)
    secs["logit_and_attribution"] = time.perf_counter() - t0
    n_tok = acts_a.shape[0]
    return UniversalityResult(
        features, neurons, logit_sim, attribution_sim, neuron_logit_sim.astype(np.float32),
        lab_a.correlation() if names else np.zeros((ka, 0), np.float32),
        lab_b.correlation() if names else np.zeros((kb, 0), np.float32), names,
        (feat.cx / n_tok).astype(np.float32), (feat.cy / n_tok).astype(np.float32),
        acts_a.tocsc(), acts_b.tocsc(), tokens, secs)


def _attribution_sim(acts_a, acts_b, lw_a, lw_b, match, tokens, live, chunk: int = 65536) -> np.ndarray:
    """Correlation over tokens of f_i * logit_weight_i[next token] between A features and their matches."""
    nxt = np.concatenate([tokens[:, 1:], np.zeros((len(tokens), 1), tokens.dtype)], 1).reshape(-1).astype(np.int64)
    keep = np.ones(tokens.shape, bool)
    keep[:, -1] = False
    keep = np.flatnonzero(keep.reshape(-1))
    diag = DiagonalStats(len(match))
    bm = acts_b.tocsc()[:, match].tocsr()
    for s in range(0, len(keep), chunk):
        rows = keep[s:s + chunk]
        pa, pb = acts_a[rows], bm[rows]
        nx = nxt[rows]
        for mat, lw, cols in ((pa, lw_a, None), (pb, lw_b, match)):
            r = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
            c = mat.indices if cols is None else cols[mat.indices]
            mat.data = mat.data * lw[c, nx[r]]
        diag.update(pa, pb)
    return np.where(live, diag.correlation(), 0.0).astype(np.float32)


# ---------------------------------------------------------------- examples (self-contained HTML)
def top_positions(acts: sp.csc_matrix, unit: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Flat token positions and values of a unit's k largest activations (CSC column)."""
    lo, hi = acts.indptr[unit], acts.indptr[unit + 1]
    vals, pos = acts.data[lo:hi], acts.indices[lo:hi]
    order = np.argsort(-vals, kind="stable")[:k]
    return pos[order], vals[order]


def top_tokens(acts: sp.csc_matrix, tokens: np.ndarray, vocab: list[str], k: int = 5) -> list[str]:
    """Per unit, its most frequent tokens among its top-k activations, as one short string."""
    flat = np.asarray(tokens).reshape(-1)
    out = []
    for u in range(acts.shape[1]):
        pos, _ = top_positions(acts, u, k)
        ids, counts = np.unique(flat[pos], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        out.append(" ".join(show_token(vocab[i]) for i in ids[order][:4]) if len(pos) else "(never fires)")
    return out


def examples_html(acts: sp.csc_matrix, unit: int, tokens: np.ndarray, vocab: list[str], k: int = 5,
                  before: int = 10, after: int = 3, title: str = "") -> str:
    """The unit's top-k examples, tokens shaded by its activation (no JS, no network)."""
    tokens = np.asarray(tokens)
    n_ctx = tokens.shape[1]
    pos, vals = top_positions(acts, unit, k)
    mx = float(vals.max()) if len(vals) else 1.0
    col = acts[:, unit]
    lines = []
    for p, v in zip(pos, vals):
        r, c = divmod(int(p), n_ctx)
        lo, hi = max(0, c - before), min(n_ctx, c + after + 1)
        a = np.asarray(col[r * n_ctx + lo: r * n_ctx + hi].todense()).ravel()
        spans = []
        for j, (t, x) in enumerate(zip(tokens[r, lo:hi], a)):
            style = f"background:rgba(255,100,0,{min(1.0, max(0.0, x / mx)):.2f})"
            if lo + j == c:
                style += ";outline:1px solid #333"
            spans.append(f"<span style='{style}' title='{x:.3f}'>{html.escape(show_token(vocab[int(t)]))}</span>")
        lines.append(f"<div>{v:.2f}&nbsp;{''.join(spans)}</div>")
    body = "".join(lines) or "<div>(never fires on these tokens)</div>"
    return (f"<div style='font-family:ui-monospace,monospace;font-size:12px;line-height:1.8'>"
            f"<b>{html.escape(title)}</b>{body}</div>")

