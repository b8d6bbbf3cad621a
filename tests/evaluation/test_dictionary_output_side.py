"""Notebook 03's output side for every dictionary of get_dictionaries (the controls of issue 30 among them)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mono_utils.autointerp.output_side import EffectProbe, output_side_table
from mono_utils.autointerp.scores import KIND_LABELS
from mono_utils.evaluation import output_side as EO


def test_every_dictionary_gets_both_halves_once_then_loads(tiny, smoke_store, monkeypatch):
    from mono_utils.evaluation.dictionaries import DICTIONARY_NAMES, get_dictionaries
    dicts = get_dictionaries(tiny, smoke_store, names=DICTIONARY_NAMES, progress=False)
    # an SAE's probe is the one autointerp builds from the SAE itself; PCA's uses its signed directions
    sae_probe, ref = EO.effect_probe(dicts["A/1"]), EffectProbe.of(dicts["A/1"].transformer, dicts["A/1"].sae)
    assert np.allclose(sae_probe.directions.numpy(), ref.directions.numpy(), atol=1e-6)
    pca = dicts["PCA"]
    assert EO.effect_probe(pca).directions.shape == (pca.n_units, tiny.d_model)
    sq = EO.get_dictionary_output_side(tiny, smoke_store, dictionaries=dicts, progress=False)
    assert list(sq["output"]) == list(sq["input"]) == list(DICTIONARY_NAMES)
    n = EO.dictionary_units(tiny)
    for name, out in sq["output"].items():
        inp = sq["input"][name]
        assert 0 < len(out) <= n and list(out.unit) == list(inp.unit), name
        ok = out[out.status == "ok"]
        assert len(ok) and ok.out_logit_accuracy.between(0, 1).all(), name
        assert (ok.effect_positions > 0).mean() > 0.8, name
    table = output_side_table(sq["input"], sq["output"])
    assert list(table.index) == [*(KIND_LABELS.get(n, n) for n in DICTIONARY_NAMES), "chance"]
    monkeypatch.setattr(EO, "dictionary_square", lambda *a, **k: pytest.fail("recomputed instead of loaded"))
    again = EO.get_dictionary_output_side(tiny, smoke_store, dictionaries=dicts, progress=False)
    for side in ("input", "output"):
        for name in sq[side]:
            pd.testing.assert_frame_equal(again[side][name], sq[side][name])
