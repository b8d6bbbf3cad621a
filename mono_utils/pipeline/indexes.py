"""The activation indexes as artifacts: ``get_index`` (a model and its SAE, A/1 by default),
``get_paper_index`` (A/1's width with the paper's recipe) and ``get_topk_index``.

The index itself (what it stores, how it is computed and queried) is :mod:`mono_utils.core.index`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..core.index import INDEX_VERSION, ActivationIndex, build_index
from ..core.model import model_folder
from .models import get_model, get_tokens
from .presets import resolve
from .saes import get_paper_sae, get_sae, get_topk_sae, ultralow_cutoff, ultralow_mask


# ---------------------------------------------------------------- the artifact
def index_source(preset, n_tokens: int, store=None) -> tuple:
    """Held-out rows for the index: the validation split, topped up from the tail of train."""
    data = get_tokens(preset, store)
    n_ctx = data.tokens.shape[1]
    want = max(1, -(-int(n_tokens) // n_ctx))
    tv, dv, sv = data.split("val")
    if len(tv) >= want:
        return tv[:want], dv[:want], sv[:want], f"val[:{want}]", data
    extra = min(want - len(tv), len(data.tokens) - len(tv))
    tt, dt, st = data.split("train")
    sel = slice(len(tt) - extra, len(tt))
    source = f"val (all {len(tv)} rows) + last {extra} rows of train"
    return (np.concatenate([tv, tt[sel]]), np.concatenate([dv, dt[sel]]), np.concatenate([sv, st[sel]]),
            source, data)


def sae_identity(sae) -> str:
    """A stable id of an SAE: its artifact folder name if known, else a hash of its weights."""
    f = getattr(sae, "folder", None)
    if f:
        return Path(f).name
    h = hashlib.sha256()
    for _, p in sorted(sae.state_dict().items()):
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def get_index(preset=None, store=None, *, which: str = "A", d_sae: int | None = None, progress: bool = True,
              architecture: str | None = None, sae=None, model=None) -> ActivationIndex:
    """The activation index of model ``which`` and its SAE (built once, then loaded): by default
    the preset's recipe (A/1, B/1, or the family member ``d_sae``); ``sae``: any other SAE."""
    p, s = resolve(preset, store)
    if model is None:
        model = get_model(p, s, which=which, progress=progress)
    if sae is None:
        sae = get_sae(p, which=which, d_sae=d_sae, architecture=architecture, store=s, progress=progress)
    d = int(sae.cfg.d_sae)
    cfg = {"which": which, "d_sae": d, "sae": sae_identity(sae), "model": Path(model_folder(model) or "").name,
           "index_tokens": p.index_tokens, "version": INDEX_VERSION}

    def build(tmp: Path):
        toks, dom, sub, source, data = index_source(p, p.index_tokens, s)
        m = build_index(model, sae, toks, dom, sub, data.domain_names, data.subdomain_names, tmp,
                        progress=progress, meta={"which": which, "sae": cfg["sae"], "source": source})
        m["source"] = source
        return m

    folder = s.get_or_build("index", f"index{which}-{d}-{p.name}", cfg, build)
    idx = ActivationIndex.load(folder)
    idx.sae_folder = getattr(sae, "folder", None)   # None for an SAE from outside the store
    idx.use_sae_ultralow(ultralow_mask(sae), ultralow_cutoff(sae))
    return idx


def get_paper_index(preset=None, store=None, *, which: str = "A", progress: bool = True,
                    model=None) -> ActivationIndex:
    """The activation index of model ``which`` and its SAE of the paper's recipe (``saes.get_paper_sae``);
    the same artifact as ``get_index`` where the preset's recipe is the paper's."""
    sae = get_paper_sae(preset, which=which, store=store, progress=progress)
    return get_index(preset, which=which, store=store, progress=progress, sae=sae, model=model)


def get_topk_index(preset=None, store=None, *, which: str = "A", progress: bool = True, model=None) -> ActivationIndex:
    """The activation index of model ``which`` and its TopK SAE (``sae_pipeline.get_topk_sae``)."""
    sae = get_topk_sae(preset, which=which, store=store, progress=progress)
    return get_index(preset, which=which, store=store, progress=progress, sae=sae, model=model)
