"""The domain table of the transcoder beside A/1: each row's F1, precision and recall recomputed directly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_utils.circuits.compare import domain_feature_table
from mono_utils.core.transcoder import mlp_in_out
from mono_utils.pipeline.saes import get_sae
from mono_utils.pipeline.transcoders import get_transcoder


@pytest.fixture(scope="module")
def tiny(smoke_preset):
    # the same small transcoder and SAE as tests/pipeline/test_transcoders.py (one artifact each per session)
    return smoke_preset.replace(sae_main=128, sae_tokens=32_768, sae_batch=256, eval_tokens=4_096,
                                density_tokens=8_192)


def test_rows_match_a_direct_count(tiny, smoke_store, smoke_model, smoke_tokens):
    trc = get_transcoder(tiny, smoke_store, progress=False)
    sae = get_sae(tiny, smoke_store, progress=False)
    tv, _, sv = smoke_tokens.split("val")
    rows, labels = tv[:48], sv[:48]
    table = domain_feature_table(smoke_model, trc, sae, rows, labels, smoke_tokens.subdomain_names, batch_rows=16)
    present = [w for w in ("dna", "base64", "hebrew", "python") if w in smoke_tokens.subdomain_names]
    assert list(table.label.unique()) == present and len(table) == 2 * len(present)
    with torch.no_grad():
        x, _ = mlp_in_out(smoke_model, torch.from_numpy(rows.astype(np.int64)))
        fires = (trc.encode(x[:, 1:]) > 0).reshape(-1, trc.cfg.d_sae).numpy()
    lab = labels[:, 1:].reshape(-1)
    for r in table[table.dictionary == "transcoder"].itertuples():
        j = smoke_tokens.subdomain_names.index(r.label)
        on = fires[:, r.unit]
        assert r.precision == pytest.approx((on & (lab == j)).sum() / max(1, on.sum()))
        assert r.recall == pytest.approx((on & (lab == j)).sum() / max(1, (lab == j).sum()))
    with pytest.raises(ValueError, match="choose among"):
        domain_feature_table(smoke_model, trc, sae, rows, labels, smoke_tokens.subdomain_names, wanted=("klingon",))
