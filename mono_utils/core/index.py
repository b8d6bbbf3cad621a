"""The activation index: every unit's activations over a held-out set, stored sparsely.

Built once per SAE (an artifact), it answers "where does unit i fire, how strongly, in which
domain" instantly, for features and MLP neurons alike. Storage is CSR-like per unit: for each
unit the flat token positions where it is non-zero (int32) and the values (fp16), plus exact
per-unit max, count and per-domain counts. A dense tokens x units matrix is never built:
activations stream through in chunks, each chunk's non-zeros are extracted unit-major, and the
chunks are scattered into place once the per-unit counts are known (no global sort).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .malloc_tuning import tune_malloc
from .metrics import ultralow_threshold
from .model import mlp_post

KINDS = ("feature", "neuron")
ULTRALOW_DENSITY = 1e-5   # fallback only: each index locates its own ultralow cluster (metrics.ultralow_threshold)
INDEX_VERSION = 3   # 3: the ultralow cutoff is located in the feature-density histogram


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown unit kind {kind!r}: use 'feature' (an SAE feature) or 'neuron' (an MLP neuron)")
    return kind


# ---------------------------------------------------------------- building
class SparseAccumulator:
    """Collects one kind of unit's non-zero activations chunk by chunk.

    ``add(start, acts)`` takes ``acts`` [m, n_units] for the flat token positions
    ``start .. start+m``; ``finish()`` returns the CSR arrays.
    """

    def __init__(self, n_units: int, n_tokens: int, domain: np.ndarray | None = None,
                 n_domains: int = 0, subdomain: np.ndarray | None = None, n_subdomains: int = 0,
                 spill_dir: str | Path | None = None):
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
        if n_tokens >= 2**31:
            raise ValueError(f"{n_tokens} tokens do not fit int32 positions: index fewer tokens")
        self.n_units, self.n_tokens = int(n_units), int(n_tokens)
        self.domain = None if domain is None else np.asarray(domain).reshape(-1).astype(np.int64)
        self.subdomain = None if subdomain is None else np.asarray(subdomain).reshape(-1).astype(np.int64)
        self.n_domains, self.n_subdomains = int(n_domains), int(n_subdomains)
        self.pos: list[np.ndarray] = []
        self.val: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.max = torch.zeros(self.n_units)
        self.dom_counts = np.zeros(self.n_units * max(1, self.n_domains), dtype=np.int64)
        self.sub_counts = np.zeros(self.n_units * max(1, self.n_subdomains), dtype=np.int64)
        self.dom_sums = np.zeros(self.n_units * max(1, self.n_domains))
        self.sub_sums = np.zeros(self.n_units * max(1, self.n_subdomains))
        self.sum = np.zeros(self.n_units)
        self.sumsq = np.zeros(self.n_units)
        self.seen = 0

    @torch.no_grad()
    def add(self, start: int, acts: torch.Tensor) -> None:
        acts = torch.as_tensor(acts).float()
        if acts.ndim != 2 or acts.shape[1] != self.n_units:
            raise ValueError(f"expected activations [tokens, {self.n_units}], got {tuple(acts.shape)}")
        m = acts.shape[0]
        if start + m > self.n_tokens:
            raise ValueError(f"chunk {start}..{start + m} runs past the {self.n_tokens} tokens declared")
        acts = acts.contiguous()
        flat = (acts > 0).view(-1).nonzero().squeeze(1)     # token-major flat indices
        vals = acts.view(-1)[flat]
        self.max = torch.maximum(self.max, torch.zeros(self.n_units).scatter_reduce(
            0, flat % self.n_units, vals, "amax"))
        tok, unit = np.divmod(flat.numpy(), self.n_units)
        unit = unit.astype(np.int16 if self.n_units < 2**15 else np.int32)
        order = np.argsort(unit, kind="stable")    # radix sort: unit-major, tokens ascending within a unit
        tok, unit = tok[order], unit[order]
        self.counts.append(np.bincount(unit, minlength=self.n_units))
        v16 = vals.numpy()[order].astype(np.float16)
        self._keep((tok + start).astype(np.int32), v16)
        v = v16.astype(np.float64)                  # sums of the stored (fp16) values, for exact proxies
        self.sum += np.bincount(unit, weights=v, minlength=self.n_units)
        self.sumsq += np.bincount(unit, weights=v * v, minlength=self.n_units)
        for lab, n, store, sums in ((self.domain, self.n_domains, self.dom_counts, self.dom_sums),
                                    (self.subdomain, self.n_subdomains, self.sub_counts, self.sub_sums)):
            if lab is not None and n:
                key = unit.astype(np.int64) * n + lab[start:start + m][tok]
                store += np.bincount(key, minlength=store.size)
                sums += np.bincount(key, weights=v, minlength=sums.size)
        self.seen += m

    def _keep(self, pos: np.ndarray, val: np.ndarray) -> None:
        """Hold a chunk's entries in memory, or on disk (memory-mapped later) with ``spill_dir``."""
        if self.spill_dir is None:
            self.pos.append(pos)
            self.val.append(val)
            return
        c = len(self.pos)
        for name, arr, lst in (("pos", pos, self.pos), ("val", val, self.val)):
            path = self.spill_dir / f"chunk{c:06d}_{name}.npy"
            np.save(path, arr)
            lst.append(path)

    def _chunk(self, lst: list, c: int) -> np.ndarray:
        x = lst[c]
        return np.load(x, mmap_mode="r") if isinstance(x, Path) else x

    def finish(self, out_pos: np.ndarray | None = None, out_val: np.ndarray | None = None) -> dict:
        """CSR arrays. ``out_pos``/``out_val`` may be pre-made (e.g. memory-mapped) outputs."""
        counts = np.stack(self.counts) if self.counts else np.zeros((0, self.n_units), np.int64)
        total = counts.sum(0).astype(np.int64)
        indptr = np.zeros(self.n_units + 1, np.int64)
        np.cumsum(total, out=indptr[1:])
        nnz = int(indptr[-1])
        pos_out = out_pos if out_pos is not None else np.empty(nnz, np.int32)
        val_out = out_val if out_val is not None else np.empty(nnz, np.float16)
        before = np.zeros(self.n_units, np.int64)      # entries of earlier chunks, per unit
        units = np.arange(self.n_units)
        for c in range(len(self.counts)):
            cnt = counts[c].astype(np.int64)
            n = int(cnt.sum())
            if n:
                starts = np.zeros(self.n_units, np.int64)
                np.cumsum(cnt[:-1], out=starts[1:])
                unit = np.repeat(units, cnt)
                dest = indptr[unit] + before[unit] + (np.arange(n) - starts[unit])
                pos_out[dest] = self._chunk(self.pos, c)
                val_out[dest] = self._chunk(self.val, c)
            before += cnt
            for lst in (self.pos, self.val):        # free as we go
                if isinstance(lst[c], Path):
                    lst[c].unlink(missing_ok=True)
                lst[c] = None
        nd, ns = max(1, self.n_domains), max(1, self.n_subdomains)
        return {"indptr": indptr, "pos": pos_out, "val": val_out, "count": total,
                "max": self.max.numpy().astype(np.float32),
                "domain_counts": self.dom_counts.reshape(self.n_units, nd),
                "subdomain_counts": self.sub_counts.reshape(self.n_units, ns),
                "domain_sums": self.dom_sums.reshape(self.n_units, nd),
                "subdomain_sums": self.sub_sums.reshape(self.n_units, ns),
                "sum": self.sum, "sumsq": self.sumsq,
                "n_tokens": self.n_tokens}


def build_index_arrays(acts_iter: Iterable, n_units: int, n_tokens: int, domain=None, n_domains: int = 0,
                       subdomain=None, n_subdomains: int = 0) -> dict:
    """CSR arrays of one kind of unit from ``acts_iter`` yielding ``(start, acts[m, n_units])``.

    Pure (no model): ``indptr`` [n_units+1], ``pos`` int32 flat token positions, ``val`` fp16,
    ``count``, ``max`` (exact, fp32), ``domain_counts`` [n_units, n_domains], ``subdomain_counts``.
    """
    acc = SparseAccumulator(n_units, n_tokens, domain, n_domains, subdomain, n_subdomains)
    for start, acts in acts_iter:
        acc.add(start, acts)
    return acc.finish()


def iter_unit_acts(model, sae, tokens: np.ndarray, chunk_tokens: int = 8192) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, neuron_acts [m, d_mlp], feature_acts [m, d_sae])`` over rows of ``tokens``."""
    n_ctx = tokens.shape[1]
    rows = max(1, chunk_tokens // n_ctx)
    for r in range(0, len(tokens), rows):
        batch = torch.from_numpy(tokens[r:r + rows].astype(np.int64))
        x = mlp_post(model, batch)
        x = x.reshape(batch.shape[0] * n_ctx, -1).float()
        with torch.no_grad():
            f = sae.encode(x) if sae is not None else None
        yield r * n_ctx, x, f


def build_index(model, sae, tokens: np.ndarray, domain: np.ndarray, subdomain: np.ndarray,
                domain_names: list[str], subdomain_names: list[str], out_dir: str | Path,
                chunk_tokens: int = 8192, progress: bool = True, meta: dict | None = None) -> dict:
    """Index ``model``'s neurons and ``sae``'s features over ``tokens`` into ``out_dir``; returns metrics."""
    tune_malloc()   # no page faults per step (see malloc_tuning)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = np.ascontiguousarray(tokens)
    n_tok = int(tokens.size)
    d_mlp = int(model.cfg.d_mlp)
    d_sae = int(sae.cfg.d_sae) if sae is not None else 0
    nd, ns = len(domain_names), len(subdomain_names)
    spill = out / ".chunks"                     # chunk entries wait on disk, not in memory
    accs = {"neuron": SparseAccumulator(d_mlp, n_tok, domain, nd, subdomain, ns, spill / "neuron")}
    if sae is not None:
        accs["feature"] = SparseAccumulator(d_sae, n_tok, domain, nd, subdomain, ns, spill / "feature")
    t0 = time.time()
    n_ctx = tokens.shape[1]
    with tqdm(total=n_tok, desc="indexing activations", unit="tok", disable=not progress) as bar:
        for start, x, f in iter_unit_acts(model, sae, tokens, chunk_tokens):
            accs["neuron"].add(start, x)
            if f is not None:
                accs["feature"].add(start, f)
            bar.update(x.shape[0])
    t_acts = time.time() - t0
    np.save(out / "tokens.npy", tokens.astype(np.uint16))
    np.save(out / "domain.npy", np.asarray(domain, np.uint8))
    np.save(out / "subdomain.npy", np.asarray(subdomain, np.uint8))
    metrics = {"tokens": n_tok, "rows": int(tokens.shape[0]), "n_ctx": int(n_ctx), "seconds_acts": round(t_acts, 2)}
    finished = {}
    for kind, acc in accs.items():
        nnz = int(sum(int(c.sum()) for c in acc.counts))
        pos = np.lib.format.open_memmap(out / f"{kind}_pos.npy", mode="w+", dtype=np.int32, shape=(nnz,))
        val = np.lib.format.open_memmap(out / f"{kind}_val.npy", mode="w+", dtype=np.float16, shape=(nnz,))
        arrays = acc.finish(pos, val)
        pos.flush(); val.flush()
        del pos, val
        for name in ("indptr", "count", "max", *_OPTIONAL, "domain_counts", "subdomain_counts"):
            np.save(out / f"{kind}_{name}.npy", arrays[name])
        finished[kind] = (arrays["count"] / max(1, n_tok), nnz, acc.n_units)
    # one cutoff for features and neurons (so a comparison leaves out the same kind of unit),
    # located in the features' density histogram; neurons alone show no ultralow cluster
    cutoff = (ultralow_threshold(finished["feature"][0], encoder=sae.W_enc) if "feature" in finished
              else ULTRALOW_DENSITY)
    metrics["ultralow_density"] = cutoff
    for kind, (dens, nnz, n_units) in finished.items():
        metrics[kind] = {"units": int(n_units), "nonzeros": nnz, "dead": int((dens == 0).sum()),
                         "ultralow": int(((dens > 0) & (dens < cutoff)).sum()),
                         "mean_l0": nnz / max(1, n_tok), "bytes": nnz * 6}
    shutil.rmtree(spill, ignore_errors=True)
    info = {"domain_names": list(domain_names), "subdomain_names": list(subdomain_names),
            "kinds": list(accs), "version": INDEX_VERSION, "ultralow_density": cutoff, **(meta or {})}
    (out / "index.json").write_text(json.dumps(info, indent=1))
    metrics["seconds_total"] = round(time.time() - t0, 2)
    return metrics


# ---------------------------------------------------------------- reading
@dataclass
class _Unitset:
    indptr: np.ndarray
    pos: np.ndarray
    val: np.ndarray
    count: np.ndarray
    max: np.ndarray
    domain_counts: np.ndarray
    subdomain_counts: np.ndarray
    sum: np.ndarray | None = None            # per unit, of the stored values (float64)
    sumsq: np.ndarray | None = None
    domain_sums: np.ndarray | None = None    # [n_units, n_labels] activation mass per label
    subdomain_sums: np.ndarray | None = None


_REQUIRED = ("indptr", "pos", "val", "count", "max", "domain_counts", "subdomain_counts")
_OPTIONAL = ("sum", "sumsq", "domain_sums", "subdomain_sums")


@dataclass
class ActivationIndex:
    """Sparse activations of features and neurons over a fixed token set (see module doc)."""
    tokens: np.ndarray               # [rows, n_ctx]
    domain: np.ndarray               # [rows, n_ctx] label ids
    subdomain: np.ndarray
    domain_names: list[str]
    subdomain_names: list[str]
    units: dict = field(default_factory=dict)
    folder: Path | None = None
    info: dict = field(default_factory=dict)
    ultralow_density: float = ULTRALOW_DENSITY
    feature_ultralow: np.ndarray | None = None   # the SAE's own ultralow set, once use_sae_ultralow ran
    sae_folder: Path | None = None   # the artifact folder of the SAE it indexes (build.indexes.get_index sets it)
    identity_suffix: str = ""                    # names that set in cached results' configs (input_id)

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> "ActivationIndex":
        folder = Path(folder)
        if not (folder / "index.json").exists():
            raise FileNotFoundError(f"{folder} is not an activation index (no index.json): build it "
                                    f"with mono_utils.pipeline.indexes.get_index(preset)")
        info = json.loads((folder / "index.json").read_text())
        mode = "r" if mmap else None
        units = {}
        for kind in info["kinds"]:
            arr = {n: np.load(folder / f"{kind}_{n}.npy", mmap_mode=mode if n in ("pos", "val") else None)
                   for n in _REQUIRED + _OPTIONAL if n in _REQUIRED or (folder / f"{kind}_{n}.npy").exists()}
            units[kind] = _Unitset(**arr)
        return cls(np.load(folder / "tokens.npy"), np.load(folder / "domain.npy"), np.load(folder / "subdomain.npy"),
                   info["domain_names"], info["subdomain_names"], units, folder, info,
                   float(info.get("ultralow_density", ULTRALOW_DENSITY)))

    @classmethod
    def from_arrays(cls, tokens, domain, subdomain, domain_names, subdomain_names, arrays: dict) -> "ActivationIndex":
        """An in-memory index from ``{kind: build_index_arrays(...)}`` (tests, small data)."""
        units = {k: _Unitset(**{n: a[n] for n in _REQUIRED + _OPTIONAL if n in a}) for k, a in arrays.items()}
        index = cls(np.asarray(tokens), np.asarray(domain), np.asarray(subdomain), list(domain_names),
                    list(subdomain_names), units)
        if "feature" in units:
            index.ultralow_density = ultralow_threshold(index.density("feature"))
        return index

    # -- basic facts
    @property
    def n_ctx(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    def _u(self, kind: str) -> _Unitset:
        _check_kind(kind)
        if kind not in self.units:
            raise ValueError(f"this index holds no {kind}s (it has {', '.join(self.units)}); rebuild it with an SAE")
        return self.units[kind]

    def release_pages(self) -> None:
        """Hand the memory-mapped entries' pages back to the OS (they are re-read from the file,
        usually the page cache, when next touched): a reader that walks several indexes in turn
        (the atlas) then holds one index's pages at a time, not all of them."""
        for us in self.units.values():
            for arr in (us.pos, us.val):
                mm = getattr(arr, "_mmap", None)
                if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
                    mm.madvise(mmap.MADV_DONTNEED)

    def n_units(self, kind: str) -> int:
        return int(len(self._u(kind).count))

    def check_unit(self, kind: str, unit) -> int:
        n = self.n_units(kind)
        try:
            u = int(unit)
        except (TypeError, ValueError):
            raise ValueError(f"unit must be an integer index, got {unit!r}") from None
        if u != unit or not 0 <= u < n:
            raise ValueError(f"unknown {kind} {unit!r}: this index has {n} {kind}s, numbered 0..{n - 1}")
        return u

    def density(self, kind: str) -> np.ndarray:
        return self._u(kind).count / max(1, self.n_tokens)

    def firings(self, kind: str) -> np.ndarray:
        """[n_units] how many of the index's tokens each unit fires on (is non-zero at)."""
        return np.asarray(self._u(kind).count)

    def max_act(self, kind: str) -> np.ndarray:
        return np.asarray(self._u(kind).max)

    def is_dead(self, kind: str, unit: int) -> bool:
        return bool(self._u(kind).count[self.check_unit(kind, unit)] == 0)

    def is_ultralow(self, kind: str, unit: int) -> bool:
        return bool(self.ultralow_mask(kind)[self.check_unit(kind, unit)])

    def dead_mask(self, kind: str) -> np.ndarray:
        return self._u(kind).count == 0

    def ultralow_mask(self, kind: str) -> np.ndarray:
        if kind == "feature" and self.feature_ultralow is not None:
            return self.feature_ultralow & ~self.dead_mask(kind)
        d = self.density(kind)
        return (d > 0) & (d < self.ultralow_density)

    def use_sae_ultralow(self, mask: np.ndarray | None, cutoff: float | None) -> bool:
        """Take the ultralow cluster that the SAE's own metrics located (``build.saes.ultralow_mask``
        and ``ultralow_cutoff``), so that the SAE's figures, dashboards, autointerp, rating,
        proxies and feature splitting all leave out the same features.

        The SAE records its cutoff and densities on the preset's held-out density tokens
        (``metrics.json``, ``feature_density.safetensors``); without them (``mask`` None: an SAE
        from outside the store) the index keeps the cutoff it located on its own tokens. Returns
        whether the SAE's set was taken.
        """
        if mask is None or cutoff is None or "feature" not in self.units or len(mask) != self.n_units("feature"):
            return False
        self.ultralow_density = float(cutoff)
        self.feature_ultralow = mask
        self.identity_suffix = "+sae-ultralow-" + hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:12]
        return True

    def live_units(self, kind: str) -> np.ndarray:
        """Units that are neither dead nor ultralow (the paper excludes those from analyses)."""
        return np.flatnonzero(~self.dead_mask(kind) & ~self.ultralow_mask(kind))

    # -- one unit's activations
    def unit_entries(self, kind: str, unit: int) -> tuple[np.ndarray, np.ndarray]:
        """(flat positions int64, values float32) where the unit is non-zero."""
        u = self._u(kind)
        i = self.check_unit(kind, unit)
        a, b = int(u.indptr[i]), int(u.indptr[i + 1])
        return np.asarray(u.pos[a:b], np.int64), np.asarray(u.val[a:b], np.float32)

    def unit_acts(self, kind: str, unit: int) -> np.ndarray:
        """Dense [rows, n_ctx] float32 activations of one unit (rebuilt from the sparse store)."""
        pos, val = self.unit_entries(kind, unit)
        out = np.zeros(self.n_tokens, np.float32)
        out[pos] = val
        return out.reshape(self.tokens.shape)

    def nonzero_acts(self, kind: str, unit: int) -> np.ndarray:
        return self.unit_entries(kind, unit)[1]

    def top_examples(self, kind: str, unit: int, k: int = 10, distinct_rows: bool = True,
                     entries: tuple | None = None) -> list[tuple[int, int, float]]:
        """The ``k`` strongest activations as (row, pos, act), best first (one per row by default).

        ``entries``: the unit's ``unit_entries`` if already read (a caller reading many views of
        one unit reads its entries once)."""
        pos, val = entries if entries is not None else self.unit_entries(kind, unit)
        if len(val) == 0 or k <= 0:
            return []
        m = max(2048, 64 * k)
        if len(val) > 2 * m:
            # a dense unit (a neuron): sort only the entries at or above the m-th largest value. A
            # stable sort of those, ties by position, is the full stable sort's prefix, so the
            # result is the same unless they hold fewer than k distinct rows (then sort all)
            thr = np.partition(val, len(val) - m)[len(val) - m]
            cand = np.flatnonzero(val >= thr)
            out = self._walk_top(pos, val, cand[np.argsort(-val[cand], kind="stable")], k, distinct_rows)
            if len(out) >= k:
                return out
        return self._walk_top(pos, val, np.argsort(-val, kind="stable"), k, distinct_rows)

    def _walk_top(self, pos, val, order, k: int, distinct_rows: bool) -> list[tuple[int, int, float]]:
        out, rows = [], set()
        for j in order:
            r, p = divmod(int(pos[j]), self.n_ctx)
            if distinct_rows and r in rows:
                continue
            rows.add(r)
            out.append((r, p, float(val[j])))
            if len(out) >= k:
                break
        return out

    def interval_edges(self, kind: str, unit: int, n_intervals: int = 11, mode: str = "quantile",
                       entries: tuple | None = None) -> np.ndarray:
        """``n_intervals + 1`` edges over the unit's non-zero activations (quantiles or equal widths)."""
        val = entries[1] if entries is not None else self.nonzero_acts(kind, unit)
        if len(val) == 0:
            return np.zeros(0)
        if mode == "quantile":
            return np.quantile(val, np.linspace(0, 1, n_intervals + 1))
        if mode == "width":
            return np.linspace(0, float(val.max()), n_intervals + 1)
        raise ValueError(f"unknown interval mode {mode!r}: use 'quantile' or 'width'")

    def interval_samples(self, kind: str, unit: int, n_intervals: int = 11, per: int = 3, seed: int = 0,
                         mode: str = "quantile", entries: tuple | None = None) -> list[dict]:
        """Random examples from each of ``n_intervals`` activation intervals, strongest interval first.

        Each item: ``{"lo", "hi", "n", "examples": [(row, pos, act), ...]}``. A dead unit gives [].
        ``entries``: as for ``top_examples``.
        """
        pos, val = entries if entries is not None else self.unit_entries(kind, unit)
        if len(val) == 0:
            return []
        edges = self.interval_edges(kind, unit, n_intervals, mode, entries=(pos, val))
        rng = np.random.default_rng(seed)
        # searchsorted(edges, val, side="right") counted edge by edge (edges are sorted; faster on dense units)
        above, v64 = np.zeros(len(val), np.int16), val.astype(np.float64)
        for e in edges:
            above += v64 >= e
        bins = np.clip(above - 1, 0, n_intervals - 1)
        # each bin's members in position order (a stable radix sort == flatnonzero(bins == b))
        order = np.argsort(bins, kind="stable")
        bounds = np.searchsorted(bins[order], np.arange(n_intervals + 1))
        out = []
        for b in range(n_intervals - 1, -1, -1):
            members = order[bounds[b]:bounds[b + 1]]
            pick = rng.choice(members, size=min(per, len(members)), replace=False) if len(members) else []
            ex = [(int(pos[j]) // self.n_ctx, int(pos[j]) % self.n_ctx, float(val[j])) for j in pick]
            ex.sort(key=lambda e: -e[2])
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(len(members)), "examples": ex})
        return out

    def domain_counts(self, kind: str, unit: int, level: str = "domain") -> dict[str, int]:
        u = self._u(kind)
        i = self.check_unit(kind, unit)
        arr, names = (u.domain_counts, self.domain_names) if level == "domain" else (u.subdomain_counts, self.subdomain_names)
        return {n: int(arr[i, j]) for j, n in enumerate(names)}

    def label_base_rate(self, level: str = "domain") -> dict[str, float]:
        lab, names = (self.domain, self.domain_names) if level == "domain" else (self.subdomain, self.subdomain_names)
        c = np.bincount(lab.reshape(-1), minlength=len(names))
        return {n: float(c[j] / max(1, lab.size)) for j, n in enumerate(names)}

    def token_counts(self, d_vocab: int | None = None) -> np.ndarray:
        n = d_vocab or int(self.tokens.max()) + 1
        return np.bincount(self.tokens.reshape(-1).astype(np.int64), minlength=n)










