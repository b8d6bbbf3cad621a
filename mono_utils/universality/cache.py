"""Notebook 04's comparison, cached: computed once from built artifacts, loaded in a second.

``get_comparison`` runs ``universality.compare_models`` on the held-out ``token_rows`` and keeps
the result with ``results.cached_result``. The activation matrices are trimmed to what the
example views read (``example_entries``): a few MB instead of hundreds.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..pipeline.models import get_model, get_tokens
from ..pipeline.presets import resolve
from ..pipeline.saes import get_sae, ultralow_cutoff
from ..core.model import model_folder
from ..store.results import array_digest, cached_result, csr_from_arrays, csr_to_arrays, input_id
from .compare import MatchResult, UniversalityResult, compare_models


def example_entries(acts, n_ctx: int, k: int = 5, before: int = 10, after: int = 3) -> sp.csc_matrix:
    """``acts`` [tokens, units] cut down to what ``top_tokens`` and ``examples_html`` (k <= ``k``,
    same windows) read: each unit's top-k activations and the unit's other activations inside
    their context windows. Those functions give identical output on it, and it weighs a few MB
    where the full matrices of the default preset weigh hundreds."""
    m = sp.csc_matrix(acts)
    m.sort_indices()
    n_tok, n_units = m.shape
    unit = np.repeat(np.arange(n_units, dtype=np.int64), np.diff(m.indptr))
    # per unit: largest first, ties by position, exactly as top_positions' stable argsort
    order = np.lexsort((m.indices, -m.data, unit))
    top = order[np.arange(len(order)) - m.indptr[unit[order]] < k]
    pos, u = m.indices[top].astype(np.int64), unit[top]
    row0, c = pos - pos % n_ctx, pos % n_ctx
    key = unit * n_tok + m.indices            # sorted: CSC order is (unit, position)
    start = np.searchsorted(key, u * n_tok + row0 + np.maximum(0, c - before))
    stop = np.searchsorted(key, u * n_tok + row0 + np.minimum(n_ctx, c + after + 1))
    cover = np.zeros(len(key) + 1, np.int64)
    np.add.at(cover, start, 1)
    np.add.at(cover, stop, -1)
    keep = np.cumsum(cover[:-1]) > 0
    indptr = np.zeros(n_units + 1, np.int64)
    np.cumsum(np.bincount(unit[keep], minlength=n_units), out=indptr[1:])
    return sp.csc_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


# ---------------------------------------------------------------- notebook 04's comparison, cached
EXAMPLES = {"k": 5, "before": 10, "after": 3}
_MATCH = ("max_corr", "match", "live_a", "live_b")
_ARRAYS = ("logit_sim", "attribution_sim", "neuron_logit_sim", "label_corr_a", "label_corr_b", "density_a",
           "density_b", "tokens")


def digest(*arrays) -> str:
    """A short content hash of arrays, to name data inputs in a cache config."""
    return array_digest(*arrays)


def token_rows(preset, data) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The held-out rows notebooks 04 and 05 analyse: (tokens, domain, subdomain, description).

    The description (preset, rows, a hash of the rows and labels) names them in a cache config.
    """
    tv, dv, sv = data.split("val")
    rows = min(len(tv), max(1, preset.universality_tokens // preset.n_ctx))
    desc = {"preset": preset.name, "split": "val", "rows": int(rows), "n_ctx": int(tv.shape[1]),
            "sha256": digest(tv[:rows], dv[:rows], sv[:rows]),
            "labels": [list(data.domain_names), list(data.subdomain_names)]}
    return tv[:rows], dv[:rows], sv[:rows], desc


def comparison_to_arrays(res: "UniversalityResult") -> tuple[dict, dict]:
    """A comparison as ``(arrays, meta)`` for ``results.cached_result`` (activations trimmed)."""
    arrays = {f"{w}.{f}": getattr(getattr(res, w), f) for w in ("features", "neurons") for f in _MATCH}
    arrays.update({f: getattr(res, f) for f in _ARRAYS})
    n_ctx = res.tokens.shape[1]
    for name in ("acts_a", "acts_b"):
        # a CSC matrix's arrays are the CSR arrays of its transpose: stored and loaded without conversion
        arrays.update(csr_to_arrays(name, example_entries(getattr(res, name), n_ctx, **EXAMPLES).T))
    meta = {"label_names": res.label_names, "n_tokens": {"features": res.features.n_tokens,
                                                         "neurons": res.neurons.n_tokens},
            "seconds": res.seconds, "params": res.params}
    return arrays, meta


def comparison_from_arrays(arrays: dict, meta: dict) -> "UniversalityResult":
    match = {w: MatchResult(*(arrays[f"{w}.{f}"] for f in _MATCH), meta["n_tokens"][w])
             for w in ("features", "neurons")}
    acts = [csr_from_arrays(name, arrays).T.tocsc() for name in ("acts_a", "acts_b")]
    a = {f: arrays[f] for f in _ARRAYS}
    return UniversalityResult(match["features"], match["neurons"], a["logit_sim"], a["attribution_sim"],
                              a["neuron_logit_sim"], a["label_corr_a"], a["label_corr_b"], list(meta["label_names"]),
                              a["density_a"], a["density_b"], acts[0], acts[1], a["tokens"], dict(meta["seconds"]),
                              dict(meta["params"]))


def get_comparison(preset=None, store=None, *, progress: bool = True, models=None, saes=None,
                   data=None) -> "UniversalityResult":
    """Notebook 04's comparison of A/1 with B/1 (and of A's neurons with B's), from the artifact store.

    Computed once (``compare_models`` on ``token_rows``, ultralow-density features excluded:
    fewer firings than A/1's ultralow cutoff implies, see ``metrics.ultralow_threshold``) and
    then loaded in a second. Builds models A and B and SAEs A/1 and B/1 if missing; pass
    ``models=(A, B)`` / ``saes=(A/1, B/1)`` (and the preset's ``data``) already loaded from the
    store to skip loading them.
    """
    p, s = resolve(preset, store)
    for name, pair in (("models", models), ("saes", saes)):
        if pair is not None and len(pair) != 2:
            raise ValueError(f"{name} must be a pair (A, B), got {len(pair)} objects: pass both or neither")
    model_a, model_b = models or (get_model(p, s, which=w, progress=progress) for w in "AB")
    sae_a, sae_b = saes or (get_sae(p, which=w, store=s, progress=progress) for w in "AB")
    data = data if data is not None else get_tokens(p, s)
    tokens, dom, sub, desc = token_rows(p, data)
    # the paper leaves ultralow-density features out: A/1's cutoff (located in its density histogram
    # on the density tokens) as a minimum number of firings on these tokens
    cutoff = ultralow_cutoff(sae_a)
    min_count = max(1, int(np.ceil(cutoff * tokens.size)))
    config = {"model_a": input_id(model_folder(model_a)), "model_b": input_id(model_folder(model_b)), "sae_a": input_id(sae_a),
              "sae_b": input_id(sae_b), "tokens": desc, "min_count": min_count, "batch_rows": 64,
              "examples": EXAMPLES, "version": 2}
    labels = {"subdomain": (sub, data.subdomain_names), "domain": (dom, data.domain_names)}

    def compute():
        res = compare_models(model_a, model_b, sae_a, sae_b, tokens, labels=labels, min_count=min_count,
                             batch_rows=64, progress=progress)
        res.params = {"min_count": min_count, "ultralow_density": cutoff, "tokens": desc}
        return comparison_to_arrays(res)

    return comparison_from_arrays(*cached_result(f"universality-{p.name}", config, compute, s))
