"""Feature splitting: how features of a small dictionary break into finer ones in larger ones.

Every SAE of a family (same model, same lambda, growing size) is run on the same tokens. Two
features of consecutive sizes are linked when the cosine similarity of their activation
vectors over those tokens exceeds a threshold (the paper: ~0.4). Activations are non-negative
and mostly zero, so the uncentred cosine only "sees" tokens where at least one of the two fires
(the paper's masked similarity). Each feature of the larger SAE gets as parent its most similar
feature of the next smaller SAE (if above the threshold), which makes a forest: family trees.
A UMAP of all decoder directions (cosine metric) shows the families as neighbourhoods.

Notebook 05 loads both from the artifact store (``get_family_analysis``, ``get_umap_layout``):
they are pure functions of model A, the family's SAEs and the held-out tokens.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..pipeline.models import get_model, get_tokenizer, get_tokens
from ..pipeline.presets import resolve
from ..pipeline.saes import get_sae_family, ultralow_mask
from ..core.model import mlp_post, model_folder
from ..features.dashboards import readable_vocab
from ..store.results import cached_result, csr_from_arrays, csr_to_arrays, input_id
from ..universality.cache import EXAMPLES, digest, example_entries, token_rows
from ..universality.compare import CorrelationStats, _csr, label_correlation, top_tokens

PAPER_THRESHOLD = 0.4
DENSE_MAX_CELLS = 64 * 2**20   # larger pairs of sizes (paper preset) go through _blocked_links


# Links kept per feature of the larger size on the blocked path: the strongest ones above the
# threshold. A trained SAE's feature links to a handful; the cap bounds the stored links (and
# memory) at MAX_LINKS_PER_FEATURE x features when activations are dense (an untrained SAE).
MAX_LINKS_PER_FEATURE = 32
ENCODE_MAX_CELLS = 2**27      # [tokens, features] encoded at once by family_activations (512 MB fp32)
LINK_BLOCK_CELLS = 16 * 2**20   # pairs of one block: at most ~400 MB while it is built, however dense


def _norms(m: sp.csr_matrix) -> np.ndarray:
    """1 / the L2 norm of each column (0 for a column that never fires)."""
    n = np.sqrt(np.asarray(m.multiply(m).sum(0), np.float64).ravel())
    return np.where(n > 0, 1 / np.where(n > 0, n, 1), 0)


def _blocked_links(xs: sp.csr_matrix, ys: sp.csr_matrix, threshold: float, block_cells: int | None = None,
                   max_links: int | None = None):
    """Best parent, its cosine and the links above ``threshold`` of every ``ys`` feature among ``xs``'s.

    The uncentred cosine of co-firing pairs, computed for a block of ``ys``'s features at a time
    (at most ``block_cells`` pairs of a block held, however dense the activations), so memory
    stays bounded at any width; each block keeps only its best parents and strongest links.
    """
    block_cells = LINK_BLOCK_CELLS if block_cells is None else block_cells
    max_links = MAX_LINKS_PER_FEATURE if max_links is None else max_links
    n_x, n_y = xs.shape[1], ys.shape[1]
    inv_x, inv_y = _norms(xs), _norms(ys)
    xt = (sp.diags(inv_x) @ xs.T.astype(np.float64)).tocsr()          # [n_x, tokens], unit columns
    yc = (ys.astype(np.float64) @ sp.diags(inv_y)).tocsc()             # [tokens, n_y]
    width = max(1, block_cells // max(1, n_x))
    parent = np.zeros(n_y, np.int64)
    best = np.zeros(n_y)
    rows, cols, vals = [], [], []
    for c0 in range(0, n_y, width):
        cos = (xt @ yc[:, c0:c0 + width].tocsr()).tocsc()                # [n_x, block] co-firing pairs only
        cos.sum_duplicates()
        parent[c0:c0 + cos.shape[1]] = np.asarray(cos.argmax(axis=0)).ravel()
        best[c0:c0 + cos.shape[1]] = np.asarray(cos.max(axis=0).toarray()).ravel()
        col = np.repeat(np.arange(cos.shape[1]), np.diff(cos.indptr))
        keep = cos.data > threshold
        r, c, v = cos.indices[keep], col[keep], cos.data[keep]
        if len(v):
            # the strongest max_links of each column: order by (column, -cosine), keep the first ones
            order = np.lexsort((-v, c))
            r, c, v = r[order], c[order], v[order]
            first = np.searchsorted(c, c, side="left")
            top = np.arange(len(c)) - first < max_links
            rows.append(r[top]); cols.append(c[top] + c0); vals.append(v[top])
        del cos
    cat = (lambda xs_, dt: np.concatenate(xs_).astype(dt) if xs_ else np.zeros(0, dt))
    links = sp.coo_matrix((cat(vals, np.float64), (cat(rows, np.int64), cat(cols, np.int64))), shape=(n_x, n_y))
    return parent, best, links


def _check_family(sizes) -> list[int]:
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"a family needs at least two dictionary sizes to split across, got {sizes}: "
                         f"train more sizes (preset.sae_sizes / get_sae_family(sizes=[...]))")
    if sorted(sizes) != sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"dictionary sizes must be distinct and increasing, got {sizes}")
    return sizes


@dataclass
class SplitGraph:
    """Links between consecutive sizes. Level k is ``sizes[k]``; ``parent[k][j]`` is the feature of
    level k-1 most similar to feature j of level k (-1 at level 0 or below the threshold)."""
    sizes: list[int]
    parent: list[np.ndarray]
    parent_sim: list[np.ndarray]
    threshold: float
    live: list[np.ndarray]
    links: list[sp.coo_matrix] = field(repr=False, default_factory=list)   # all links above threshold

    def _check(self, level: int, feature: int) -> None:
        if not 0 <= level < len(self.sizes):
            raise ValueError(f"level {level} does not exist: levels are 0..{len(self.sizes) - 1} (sizes {self.sizes})")
        if not 0 <= feature < self.sizes[level]:
            raise ValueError(f"feature {feature} does not exist at level {level}: it has {self.sizes[level]} features")

    def children(self, level: int, feature: int) -> np.ndarray:
        self._check(level, feature)
        if level + 1 >= len(self.sizes):
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.parent[level + 1] == feature)

    def ancestors(self, level: int, feature: int) -> list[tuple[int, int, float]]:
        """[(level, feature, similarity to its child on the path)], nearest first."""
        self._check(level, feature)
        out, f = [], feature
        for lv in range(level, 0, -1):
            p = int(self.parent[lv][f])
            if p < 0:
                break
            out.append((lv - 1, p, float(self.parent_sim[lv][f])))
            f = p
        return out

    def descendants(self, level: int, feature: int) -> list[tuple[int, int, int, float]]:
        """[(level, feature, parent feature, similarity to parent)], breadth first."""
        self._check(level, feature)
        out, frontier = [], [feature]
        for lv in range(level + 1, len(self.sizes)):
            kids = np.flatnonzero(np.isin(self.parent[lv], frontier))
            out += [(lv, int(k), int(self.parent[lv][k]), float(self.parent_sim[lv][k])) for k in kids]
            frontier = kids
            if not len(kids):
                break
        return out

    def root(self, level: int, feature: int) -> tuple[int, int]:
        anc = self.ancestors(level, feature)
        return (anc[-1][0], anc[-1][1]) if anc else (level, feature)

    def splits(self, min_children: int = 2):
        """Every feature with >= ``min_children`` children, most children first (a DataFrame)."""
        # descendants of every feature at once, from the largest size up (a feature's subtree is
        # its children and theirs): linear in the number of features, where one descendants()
        # call per splitting feature would be quadratic at the paper's 131,072
        n_desc = [np.zeros(n, np.int64) for n in self.sizes]
        for lv in range(len(self.sizes) - 2, -1, -1):
            p = self.parent[lv + 1]
            m = p >= 0
            n_desc[lv] = np.bincount(p[m], weights=1 + n_desc[lv + 1][m], minlength=self.sizes[lv]).astype(np.int64)
        rows = []
        for lv in range(len(self.sizes) - 1):
            p = self.parent[lv + 1]
            counts = np.bincount(p[p >= 0], minlength=self.sizes[lv])
            order = np.argsort(p, kind="stable")          # children grouped by parent, ascending within
            first = np.searchsorted(p[order], np.arange(self.sizes[lv]))
            for f in np.flatnonzero(counts >= min_children):
                kids = order[first[f]:first[f] + counts[f]]
                sims = self.parent_sim[lv + 1][kids]
                rows.append({"level": lv, "size": self.sizes[lv], "feature": int(f), "n_children": int(len(kids)),
                             "n_descendants": int(n_desc[lv][f]), "children": kids.tolist(),
                             "mean_sim": float(sims.mean()), "min_sim": float(sims.min())})
        df = pd.DataFrame(rows, columns=["level", "size", "feature", "n_children", "n_descendants", "children",
                                         "mean_sim", "min_sim"])
        return df.sort_values(["n_children", "n_descendants", "mean_sim"], ascending=False, ignore_index=True)

    def summary(self) -> dict:
        out = {"sizes": self.sizes, "threshold": self.threshold}
        for lv in range(1, len(self.sizes)):
            live = self.live[lv]
            linked = (self.parent[lv] >= 0) & live
            kids = np.bincount(self.parent[lv][linked], minlength=self.sizes[lv - 1])
            out[f"{self.sizes[lv - 1]}->{self.sizes[lv]}"] = {
                "linked_frac": float(linked.sum() / max(1, live.sum())),
                "parents_that_split": int((kids >= 2).sum()), "max_children": int(kids.max(initial=0))}
        return out


def link_activations(acts: dict, threshold: float = PAPER_THRESHOLD, chunk: int = 16384,
                     exclude: dict | None = None) -> SplitGraph:
    """Link features of consecutive sizes. ``acts``: {size: [tokens, size] activations} on the same tokens.

    ``exclude``: {size: bool mask} of features left out of the analysis (each SAE's ultralow
    cluster, as the paper leaves it out): they get no links and count as not live. Their
    nearly parallel encoders make them fire together, so they would otherwise form one
    "family" of hundreds.
    """
    sizes = _check_family(sorted(acts))
    n = {s: acts[s].shape[0] for s in sizes}
    if len(set(n.values())) != 1:
        raise ValueError(f"activations cover different token sets ({n}): encode the same tokens with every SAE")
    for s in sizes:
        if acts[s].shape[1] != s:
            raise ValueError(f"activations for size {s} have {acts[s].shape[1]} features: key them by dictionary size")
    mats = {s: _csr(acts[s], np.float32) for s in sizes}
    for s, mask in (exclude or {}).items():
        if s not in mats:
            raise ValueError(f"exclude names size {s}, which is not in the family {sizes}")
        mask = np.asarray(mask, bool)
        if mask.shape != (s,):
            raise ValueError(f"the exclude mask for size {s} has shape {mask.shape}: pass one bool per feature")
        mats[s] = (mats[s] @ sp.diags((~mask).astype(np.float32))).tocsr()
        mats[s].eliminate_zeros()
    parent, psim, links = [np.full(sizes[0], -1)], [np.zeros(sizes[0], np.float32)], []
    live = [np.asarray(mats[sizes[0]].getnnz(0) > 0)]
    for small, large in zip(sizes, sizes[1:]):
        if small * large <= DENSE_MAX_CELLS:
            st = CorrelationStats(small, large)
            for s0 in range(0, n[small], chunk):
                st.update(mats[small][s0:s0 + chunk], mats[large][s0:s0 + chunk])
            cos = st.cosine()
            p = cos.argmax(0)
            ps = cos[p, np.arange(large)]
            r, c = np.nonzero(cos > threshold)
            links.append(sp.coo_matrix((cos[r, c], (r, c)), shape=cos.shape))
            del cos
        else:   # wider pairs (the paper preset): a block of the larger size's features at a time
            p, ps, lk = _blocked_links(mats[small], mats[large], threshold)
            links.append(lk)
        ok = ps > threshold
        parent.append(np.where(ok, p, -1))
        psim.append(ps.astype(np.float32))
        live.append(np.asarray(mats[large].getnnz(0) > 0))
    return SplitGraph(sizes, parent, psim, float(threshold), live, links)


@torch.no_grad()
def family_activations(model, saes: dict, tokens: np.ndarray, batch_rows: int = 64,
                       progress: bool = True) -> dict[int, sp.csr_matrix]:
    """Every SAE of the family on the same tokens: {size: CSR [tokens, size]} (one model forward)."""
    sizes = _check_family(sorted(saes))
    d_in = {s: int(saes[s].cfg.d_in) for s in sizes}
    if len(set(d_in.values())) != 1:
        raise ValueError(f"the SAEs read activations of different widths ({d_in}): a family shares one model layer")
    for s in sizes:
        if int(saes[s].cfg.d_sae) != s:
            raise ValueError(f"the SAE under key {s} has {saes[s].cfg.d_sae} features: key the family by d_sae")
    tokens = np.asarray(tokens)
    out = {s: [] for s in sizes}
    for r in tqdm(range(0, len(tokens), batch_rows), desc="family activations", disable=not progress):
        x = mlp_post(model, torch.from_numpy(tokens[r:r + batch_rows].astype(np.int64)))
        x = x.reshape(-1, x.shape[-1])
        for s in sizes:
            # a batch is 8,192 tokens: [8192, 131072] fp32 would be 4.3 GB, so wide SAEs encode it in
            # slices of rows (every size of the default preset in one piece, as before)
            step = max(1, min(len(x), ENCODE_MAX_CELLS // s))
            out[s] += [_csr(saes[s].encode(x[r:r + step]), np.float32) for r in range(0, len(x), step)]
    return {s: sp.vstack(v).tocsr() for s, v in out.items()}


# ---------------------------------------------------------------- UMAP of decoder directions
def umap_layout(decoders: dict, seed: int = 0, n_neighbors: int = 15, live: dict | None = None,
                min_dist: float = 0.1):
    """2-D UMAP (cosine metric) of every decoder direction of every size -> DataFrame(size, feature, x, y).

    Deterministic for a given seed (UMAP then runs single-threaded). ``live``: {size: bool mask}
    of features to include (e.g. exclude dead ones).
    """

    sizes = _check_family(sorted(decoders))
    rows, X = [], []
    for s in sizes:
        d = decoders[s]
        d = d.detach().cpu().float().numpy() if isinstance(d, torch.Tensor) else np.asarray(d, np.float32)
        keep = np.ones(len(d), bool) if live is None else np.asarray(live[s], bool)
        idx = np.flatnonzero(keep)
        rows.append(pd.DataFrame({"size": s, "feature": idx}))
        X.append(d[idx])
    dims = {x.shape[1] for x in X}
    if len(dims) != 1:
        raise ValueError(f"decoder directions of different widths {sorted(dims)}: the family must share d_in")
    X = np.concatenate(X)
    if len(X) <= n_neighbors + 1:
        raise ValueError(f"only {len(X)} directions: UMAP with {n_neighbors} neighbours needs more")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap  # lazy: umap is heavy (numba)
        emb = umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=seed, min_dist=min_dist,
                        n_jobs=1).fit_transform(X)
    df = pd.concat(rows, ignore_index=True)
    df["x"], df["y"] = emb[:, 0], emb[:, 1]
    return df


# ---------------------------------------------------------------- notebook 05's analysis, cached
@dataclass
class FamilyAnalysis:
    """A family on notebook 05's tokens: the links across sizes and what the widgets show."""
    graph: SplitGraph
    acts: dict[int, sp.csc_matrix] = field(repr=False)   # {size: activations cut to the examples (example_entries)}
    live: dict[int, np.ndarray] = field(repr=False)       # {size: fires at least once on the tokens}
    # (graph.live: also outside the SAE's ultralow cluster, i.e. taking part in the links)
    hover: dict[int, list[str]] = field(repr=False)       # {level: top tokens of each feature}
    label_corr: np.ndarray = field(repr=False)            # [sizes[0], subdomains]: smallest size vs labels
    tokens: np.ndarray = field(repr=False)                # [rows, n_ctx]
    params: dict = field(default_factory=dict)            # the cache's config


def _family_inputs(p, s, family, progress):
    family = family if family is not None else get_sae_family(p, which="A", store=s, progress=progress)
    sizes = _check_family(sorted(family))
    return family, {str(n): input_id(family[n]) for n in sizes}


def get_family_analysis(preset=None, store=None, *, progress: bool = True, model=None, family=None, data=None,
                        tokenizer=None, threshold: float = PAPER_THRESHOLD) -> FamilyAnalysis:
    """Family A (``preset.sae_sizes``) on the held-out rows of ``universality.token_rows``: links, examples.

    Computed once, then loaded from the artifact store in a second. Builds model A and the family
    if missing; pass them (and ``data``, ``tokenizer``) already loaded to skip loading them.
    """
    p, s = resolve(preset, store)
    model = model if model is not None else get_model(p, s, which="A", progress=progress)
    family, sae_ids = _family_inputs(p, s, family, progress)
    data = data if data is not None else get_tokens(p, s)
    # shown (hover, examples) as the atlas shows tokens; the digest below keys the cache on it
    vocab = readable_vocab(tokenizer if tokenizer is not None else get_tokenizer(p, s))
    tokens, _, sub, desc = token_rows(p, data)
    sizes = sorted(family)
    ultralow = {n: ultralow_mask(family[n]) for n in sizes}   # each SAE's own cluster, left out
    ultralow = {n: m for n, m in ultralow.items() if m is not None}
    config = {"model": input_id(model_folder(model)), "saes": sae_ids, "tokens": desc, "threshold": float(threshold),
              "batch_rows": 64, "chunk": 16384, "examples": EXAMPLES,
              "vocab": digest(np.frombuffer("\0".join(vocab).encode("utf-8"), np.uint8)),
              "ultralow": {str(n): digest(m) for n, m in ultralow.items()}, "version": 3}

    def compute():
        acts = family_activations(model, family, tokens, batch_rows=64, progress=progress)
        fires = {n: np.asarray(acts[n].getnnz(0) > 0) for n in sizes}   # the map shows all of these
        g = link_activations(acts, threshold=threshold, chunk=16384, exclude=ultralow)
        arrays = {"tokens": tokens, "label_corr": label_correlation(acts[sizes[0]], sub, len(data.subdomain_names))}
        hover = []
        for lv, n in enumerate(sizes):
            cut = example_entries(acts[n], tokens.shape[1], **EXAMPLES)
            del acts[n]
            hover.append(top_tokens(cut, tokens, vocab))
            arrays.update(csr_to_arrays(f"acts.{n}", cut.T))   # CSC arrays = CSR arrays of the transpose
            arrays.update({f"parent.{lv}": g.parent[lv], f"parent_sim.{lv}": g.parent_sim[lv],
                           f"live.{lv}": fires[n], f"linked_live.{lv}": g.live[lv]})
            if lv:
                lk = g.links[lv - 1]
                arrays.update({f"links.{lv}.row": lk.row, f"links.{lv}.col": lk.col, f"links.{lv}.data": lk.data})
        return arrays, {"sizes": sizes, "hover": hover, "params": config}

    a, meta = cached_result(f"splitting-{p.name}", config, compute, s)
    sizes = [int(n) for n in meta["sizes"]]
    k = range(len(sizes))
    links = [sp.coo_matrix((a[f"links.{lv}.data"], (a[f"links.{lv}.row"], a[f"links.{lv}.col"])),
                           shape=(sizes[lv - 1], sizes[lv])) for lv in k if lv]
    graph = SplitGraph(sizes, [a[f"parent.{lv}"] for lv in k], [a[f"parent_sim.{lv}"] for lv in k], float(threshold),
                       [a[f"linked_live.{lv}"] for lv in k], links)
    acts = {n: csr_from_arrays(f"acts.{n}", a).T.tocsc() for n in sizes}
    return FamilyAnalysis(graph, acts, {n: a[f"live.{lv}"] for lv, n in enumerate(sizes)},
                          {lv: list(h) for lv, h in enumerate(meta["hover"])}, a["label_corr"], a["tokens"],
                          meta["params"])


# At most this many directions on the map (one-thread UMAP, a browser scatter): the default preset's
# family has ~15k, the paper preset's ~250k, which would take UMAP the better part of an hour and
# every reader's browser much longer. Above it each size keeps a seeded random share (umap_subset).
UMAP_MAX_POINTS = 40_000


def umap_subset(live: dict, max_points: int, seed: int = 0) -> dict:
    """``live`` ({size: bool mask}) cut to at most ``max_points`` features: sizes from the smallest
    take an equal share of what is left (a small size that needs less leaves the rest to the
    larger ones), each a seeded random choice of its live features."""
    rng = np.random.default_rng(seed)
    out, left, sizes = {}, int(max_points), sorted(live)
    for i, n in enumerate(sizes):
        idx = np.flatnonzero(np.asarray(live[n], bool))
        quota = left // (len(sizes) - i)
        if len(idx) > quota:
            idx = np.sort(rng.choice(idx, size=quota, replace=False))
        mask = np.zeros(len(live[n]), bool)
        mask[idx] = True
        out[n] = mask
        left -= len(idx)
    return out


def get_umap_layout(preset=None, store=None, *, progress: bool = True, family=None, analysis=None, seed: int = 0,
                    n_neighbors: int = 15, min_dist: float = 0.1, max_points: int = UMAP_MAX_POINTS, **inputs):
    """``umap_layout`` of family A's live decoder directions, computed once and then loaded.

    At most ``max_points`` of them (``umap_subset``: every one on the default preset).

    Live: fires on notebook 05's tokens (``get_family_analysis``, built if missing; pass it, and
    the family, already loaded to skip loading them; other ``inputs`` go to it). Same seed, same layout.
    """
    p, s = resolve(preset, store)
    family, sae_ids = _family_inputs(p, s, family, progress)
    if analysis is None:
        analysis = get_family_analysis(p, s, progress=progress, family=family, **inputs)
    if sorted(analysis.live) != sorted(family):
        raise ValueError(f"the analysis covers sizes {sorted(analysis.live)} but the family {sorted(family)}: "
                         f"pass the analysis of this family (get_family_analysis(family=...))")
    live = {n: analysis.live[n] for n in sorted(family)}
    config = {"saes": sae_ids, "live": digest(*live.values()), "seed": int(seed), "n_neighbors": int(n_neighbors),
              "min_dist": float(min_dist), "version": 1}
    if sum(int(np.sum(m)) for m in live.values()) > max_points:   # the paper preset: ~250k directions
        live = umap_subset(live, max_points, seed)
        config["max_points"] = int(max_points)   # only then: the default preset's cache keeps its name

    def compute():
        df = umap_layout({n: sae.W_dec_raw.detach() for n, sae in family.items()}, seed=seed,
                         n_neighbors=n_neighbors, live=live, min_dist=min_dist)
        return {c: df[c].to_numpy() for c in ("size", "feature", "x", "y")}, {}

    a, _ = cached_result(f"umap-{p.name}", config, compute, s)
    return pd.DataFrame({c: a[c] for c in ("size", "feature", "x", "y")})


def summary_frame(summary: dict):
    """The splitting summary as a table a reader scans (a row per size or link, numbers rounded), not a dict."""
    import pandas as pd   # lazy, as the widgets: the analysis itself needs no pandas
    rows = {str(k): (v if isinstance(v, dict) else {"value": v}) for k, v in summary.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(3)
