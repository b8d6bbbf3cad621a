"""``--sae transcoder``: the atlas shows model A's transcoder features (notebook 07) as a unit set of its own."""
from __future__ import annotations

import numpy as np
import pytest

from mono_utils.atlas import site


def test_parse_transcoder_option(smoke_preset):
    for spec in ("transcoder", "Transcoder", "tc"):
        assert site.parse_sae_option(spec, smoke_preset) == "transcoder"
    with pytest.raises(ValueError, match="transcoder"):
        site.parse_sae_option("transcoders", smoke_preset)


@pytest.mark.slow
def test_transcoder_unit_set(smoke_preset, smoke_store):
    from mono_utils.pipeline.transcoders import get_transcoder
    sets, _ = site.load_sets(smoke_preset, smoke_store, saes=("transcoder",), progress=False)
    by_key = {u.key: u for u in sets}
    assert set(by_key) == {"A1", "AN", "Atc"}
    tc = by_key["Atc"]
    trc = get_transcoder(smoke_preset, smoke_store, progress=False)
    assert tc.n_units == trc.cfg.d_sae and tc.logits.shape == (trc.cfg.d_sae, smoke_preset.vocab_size)
    assert tc.index.folder != by_key["A1"].index.folder
    assert np.isfinite(tc.logits).all()
