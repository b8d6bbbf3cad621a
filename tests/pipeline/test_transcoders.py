"""The transcoder artifact on smoke's model A: built once, exact with its error term, its table
beside A/1's. A smaller transcoder (128 features, 32k activations) keeps it to seconds."""
from __future__ import annotations

import pytest

from mono_utils.pipeline.saes import get_sae
from mono_utils.pipeline.transcoders import (
    get_transcoder,
    transcoder_artifact_config,
    transcoder_density,
    transcoder_metrics,
    transcoder_table,
    transcoder_tokens,
)


@pytest.fixture(scope="module")
def tiny(smoke_preset):
    return smoke_preset.replace(sae_main=128, sae_tokens=32_768, sae_batch=256, eval_tokens=4_096,
                                density_tokens=8_192)


@pytest.fixture(scope="module")
def transcoder(tiny, smoke_store, smoke_model):
    return get_transcoder(tiny, smoke_store, progress=False)


def test_metrics_with_the_error_term_are_exact(transcoder, tiny):
    m = transcoder_metrics(transcoder)
    assert m["max_logit_diff_with_error"] < 1e-4
    assert m["ce_tc_with_error"] == pytest.approx(m["ce_clean"], abs=1e-5)
    assert m["loss_recovered_with_error"] == pytest.approx(1.0, abs=1e-4)
    assert 0 < m["fvu"] < 1 and 0 < m["l0"] <= transcoder.cfg.d_sae
    assert m["loss_recovered"] < 1.0        # without the error term the replacement is not exact
    assert len(transcoder_density(transcoder)) == transcoder.cfg.d_sae
    assert transcoder.cfg.d_in == transcoder.cfg.d_out == tiny.d_model


def test_built_once_then_loaded(transcoder, tiny, smoke_store):
    again = get_transcoder(tiny, smoke_store, progress=False)
    assert again.folder == transcoder.folder


def test_table_sets_it_beside_a1(transcoder, tiny, smoke_store):
    sae = get_sae(tiny, smoke_store, progress=False)
    t = transcoder_table(transcoder, sae)
    assert len(t) == 2 and "FVU of the MLP output" in t.columns
    assert t.iloc[1]["FVU of the MLP output"] is not None
    with pytest.raises(ValueError, match="metrics.json"):
        from mono_utils.core.transcoder import Transcoder
        transcoder_table(Transcoder(transcoder.cfg), sae)


def test_default_budget_and_recipe(smoke_preset):
    from mono_utils.pipeline.presets import get_preset
    d = get_preset("default")
    cfg, tc, _, name = transcoder_artifact_config(d)
    assert (cfg.d_sae, cfg.k, cfg.d_in) == (d.sae_main, d.topk_k, d.d_model)
    assert tc.total_tokens == transcoder_tokens(d) == d.sae_tokens // 2
    assert (tc.batch_size, tc.lr) == (d.sae_batch, d.sae_lr)
    assert transcoder_tokens(smoke_preset) == smoke_preset.sae_tokens


def test_index_holds_the_transcoders_features(transcoder, tiny, smoke_store, smoke_model):
    """The index of the transcoder's features (built by core.index through the MLP-input encoder) holds,
    for a feature, exactly the activations the transcoder gives on the index's own tokens."""
    import numpy as np
    import torch

    from mono_utils.core.transcoder import mlp_in_out
    from mono_utils.pipeline.transcoders import get_transcoder_index, transcoder_logit_weights
    small = tiny.replace(index_tokens=4096)
    idx = get_transcoder_index(small, smoke_store, progress=False, model=smoke_model)
    assert idx.n_units("feature") == transcoder.cfg.d_sae
    rows = idx.tokens[:8].astype(np.int64)
    x, _ = mlp_in_out(smoke_model, torch.from_numpy(rows))
    with torch.no_grad():
        want = transcoder.encode(x).numpy()                   # [rows, n_ctx, d_sae]
    for f in np.flatnonzero(want.reshape(-1, want.shape[-1]).max(0) > 0)[:5]:
        got = idx.unit_acts("feature", int(f))[:8]
        assert np.allclose(got, want[..., f], atol=2e-2 * max(1.0, float(want[..., f].max()))), f   # fp16 store
    assert get_transcoder_index(small, smoke_store, progress=False, model=smoke_model).folder == idx.folder
    assert transcoder_logit_weights(transcoder, smoke_model).shape == (transcoder.cfg.d_sae, smoke_model.cfg.d_vocab)
