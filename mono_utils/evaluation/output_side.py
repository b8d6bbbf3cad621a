"""Notebook 03's output side (``autointerp.output_side``) for every dictionary of ``get_dictionaries``: the
controls of issue 30 (the frozen-decoder SAE, PCA) beside A/1, the neurons, the paper's recipe and the
randomized control, all on the same held-out rows.

``autointerp.output_side.get_output_side`` scores the dictionaries that have an activation index (the 1M
index tokens of default); the controls have none, so here every dictionary reads the first
``dictionary_tokens(preset)`` tokens of the held-out split (``probing_table.heldout_rows``, as the panel of
notebook 08 does, on fewer of them), ``dictionary_units(preset)`` live units of each (firing at least
``panel.MIN_FIRINGS`` times there) are explained by the offline backend from those rows, and both halves of
the square are scored: the input side (``run.score_units``: simulation and logit test) and the output side
(``output_side.score_output_side``: its explanation from the unit's logits and the measured effect of
removing it, an ``EffectProbe`` on the dictionary's own transformer). The figures differ from the index's by
sampling (fewer tokens, fewer units): compare dictionaries within this table, not across the two.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from ..autointerp.offline import OfflineBackend
from ..autointerp.output_side import OUTPUT_SIDE_VERSION, EffectProbe, ResidualCache, score_output_side
from ..autointerp.protocol import EvalCorpus, ProtocolConfig
from ..autointerp.run import _frame_from_parts, _frame_to_parts, score_units
from ..core.model import W_out, direction_logit_weights, model_folder
from ..features.proxies import tokenizer_bytes_id
from ..pipeline.models import get_model, get_tokenizer, get_tokens
from ..pipeline.presets import resolve
from ..store.results import cached_result, input_id
from .dictionaries import DICTIONARY_NAMES, get_dictionaries
from .panel import _PanelSource, dictionary_identity, sample_live_units
from .probing_table import heldout_rows, iter_acts

DICTIONARY_TOKENS = {"smoke": 8_192}       # held-out tokens every dictionary reads (default: 256 rows of 128)
DEFAULT_DICTIONARY_TOKENS = 32_768
DICTIONARY_UNITS = {"smoke": 16}           # units per dictionary
DEFAULT_DICTIONARY_UNITS = 40


def dictionary_tokens(preset) -> int:
    return DICTIONARY_TOKENS.get(preset.name, DEFAULT_DICTIONARY_TOKENS)


def dictionary_units(preset) -> int:
    return DICTIONARY_UNITS.get(preset.name, DEFAULT_DICTIONARY_UNITS)


@torch.no_grad()
def effect_probe(dictionary) -> EffectProbe:
    """The probe of a dictionary's units: what each adds to the MLP output (an SAE's raw decoder rows, in
    the units its activations come in; otherwise ``decoder``: the neurons' identity, PCA's +/- directions)."""
    sae = getattr(dictionary, "sae", None)
    dirs = (sae.W_dec_raw.detach().float() if sae is not None else torch.as_tensor(np.asarray(dictionary.decoder),
                                                                                    dtype=torch.float32))
    return EffectProbe(dictionary.transformer, (dirs @ W_out(dictionary.transformer).detach().float()).numpy())


def dictionary_square(dictionaries: dict, ts, tokenizer, n_units: int, seed: int = 0,
                      progress: bool = True) -> dict:
    """``{"input": {name: DataFrame}, "output": {name: DataFrame}}``: both halves of the square for
    ``n_units`` live units of each dictionary on the token set ``ts`` (``heldout_rows``)."""
    corpus = EvalCorpus.from_tokenizer(ts.tokens, tokenizer)
    backend = OfflineBackend()
    inputs, outputs = {}, {}
    cache = None        # the residuals of one model's rows, shared by its dictionaries (iter_acts groups them)
    for name, d, acts, _, _ in iter_acts(dictionaries, ts, progress=progress):
        if cache is None or cache.model is not d.transformer:
            cache = ResidualCache(d.transformer, corpus.tokens)
        units = sample_live_units(acts, n_units, seed)
        if not units:
            continue
        dirs = torch.as_tensor(np.asarray(d.decoder)[units], dtype=torch.float32)
        logits = direction_logit_weights(d.transformer, dirs).cpu().numpy()
        src = _PanelSource(corpus, acts.tocsc(), {u: logits[i] for i, u in enumerate(units)}, name)
        inputs[name] = score_units(src, units, backend, seed=seed, progress=False, verbose=False)
        outputs[name] = score_output_side(src, units, backend, effect_probe(d).with_cache(cache), seed=seed,
                                          progress=False)
        del acts
    order = [n for n in dictionaries if n in outputs]          # the order asked (iter_acts groups by model)
    return {"input": {n: inputs[n] for n in order}, "output": {n: outputs[n] for n in order}}


def get_dictionary_output_side(preset=None, store=None, *, names=DICTIONARY_NAMES, dictionaries: dict | None = None,
                               progress: bool = True, force: bool = False) -> dict:
    """:func:`dictionary_square` for ``names`` (default: every dictionary of ``DICTIONARY_NAMES``) on the
    preset's held-out rows, computed once and then loaded (a cached result)."""
    p, s = resolve(preset, store)
    if dictionaries is None:
        dictionaries = get_dictionaries(p, s, names=names, progress=progress)
    data, tok = get_tokens(p, s), get_tokenizer(p, s)
    model = get_model(p, s, which="A", progress=progress)
    ts = heldout_rows(p, data, dictionary_tokens(p))
    n_units = dictionary_units(p)
    config = {"model": input_id(model_folder(model)), "tokens": ts.desc, "tokenizer": tokenizer_bytes_id(tok),
              "dictionaries": [dictionary_identity(d) for d in dictionaries.values()], "units": int(n_units),
              "seed": 0, "protocol": asdict(ProtocolConfig()), "version": OUTPUT_SIDE_VERSION}

    def compute():
        sq = dictionary_square(dictionaries, ts, tok, n_units, 0, progress)
        arrays, meta = {}, {"names": list(sq["output"])}
        for side, frames in sq.items():
            for i, (name, df) in enumerate(frames.items()):
                a, m = _frame_to_parts(f"{side}{i}", df)
                arrays.update(a)
                meta[f"{side}{i}"] = m
        return arrays, meta

    arrays, meta = cached_result("dictionary-output-side", config, compute, s, force=force)
    index = {name: i for i, name in enumerate(meta["names"])}
    order = [n for n in dictionaries if n in index]             # the order asked
    return {side: {n: _frame_from_parts(f"{side}{index[n]}", arrays, meta[f"{side}{index[n]}"]) for n in order}
            for side in ("input", "output")}
