"""The transcoder's features on the suite's instruments (offline autointerp, proxies, dashboards), and the
graph widget whose click opens a feature's dashboard, on smoke's model A and a small transcoder."""
from __future__ import annotations

import numpy as np
import pytest

from mono_utils.circuits.graph import attribution_graph
from mono_utils.circuits.interp import KINDS, get_transcoder_interp, interp_tables, transcoder_dashboard
from mono_utils.circuits.view import graph_explorer, strongest_feature
from mono_utils.features.dashboards import dashboard_data
from mono_utils.pipeline.transcoders import get_transcoder, get_transcoder_index


@pytest.fixture(scope="module")
def parts(tiny, smoke_store, smoke_model, smoke_tokenizer):
    trc = get_transcoder(tiny, smoke_store, progress=False)
    index = get_transcoder_index(tiny, smoke_store, progress=False, model=smoke_model)
    return smoke_model, trc, smoke_tokenizer, index


def test_transcoder_dashboard_reads_its_own_logit_weights(parts):
    model, trc, tok, index = parts
    f = int(index.live_units("feature")[0])
    d = transcoder_dashboard(index, trc, model, tok, f)
    lw = (trc.W_dec.detach()[f].float() @ model.W_U.detach().float()).numpy()
    best = int(np.argmax(lw))
    assert d.data["logits_top"][0][1] == pytest.approx(float(lw[best]), abs=1e-5)
    assert d.data["kind"] == "transcoder feature" and "transcoder feature" in d.html
    assert d.data["top"] and all(c["effects"] is None for c in d.data["top"])   # no ablation underlines
    with pytest.raises(ValueError, match="ablation=False"):
        dashboard_data(index, "feature", f, model, tok, logit_w=lw)              # asked to ablate with no SAE
    with pytest.raises(ValueError, match="logit_w"):
        dashboard_data(index, "feature", f, model, tok)                          # neither an SAE nor weights


def test_a_click_on_a_feature_opens_its_dashboard(parts):
    model, trc, tok, index = parts
    g = attribution_graph(model, trc, tok, "ACGTTGCAACGTAGCTTGCA").prune(0.8)
    opened = []

    def dash(f):
        opened.append(f)
        return f"<p>dashboard of {f}</p>"

    box = graph_explorer(g, None, dash)
    first = strongest_feature(g)
    assert first is not None and opened == [first] and f"dashboard of {first}" in box.children[1].value
    fig = box.children[0]
    trace = next(t for t in fig.data if t.name == "feature")
    shown = [n["feature"] for n in g.nodes if n["kind"] == "feature"]
    assert list(trace.customdata) == shown                      # each point knows its feature
    other = shown[-1]

    class Points:                                               # what plotly hands a click callback
        point_inds = [len(shown) - 1]
    for cb in trace._click_callbacks:
        cb(trace, Points(), None)
    assert opened[-1] == other and f"dashboard of {other}" in box.children[1].value


def test_the_transcoder_on_autointerp_and_proxies(smoke_preset, smoke_store):
    # smoke's own A/1 and offline scores (other tests build them in this store), and smoke's transcoder
    rec = get_transcoder_interp(smoke_preset, smoke_store, progress=False)
    assert set(rec["scores"]) == set(KINDS)
    tc = rec["scores"]["transcoder"]
    assert len(tc) > 0 and (tc.status == "ok").any()
    # the neurons are scored on both indexes: the same units, other tokens
    assert set(rec["scores"]["neuron_tc"].unit) <= set(range(smoke_preset.d_mlp))
    scores, wins = interp_tables(rec, n_boot=200)
    assert set(scores.index) == set(KINDS.values())
    assert list(wins.index) == ["A/1", "transcoder"] and wins.notna().all().all()
    again = get_transcoder_interp(smoke_preset, smoke_store, progress=False)            # stored, then loaded
    assert again["scores"]["transcoder"].equals(tc)
