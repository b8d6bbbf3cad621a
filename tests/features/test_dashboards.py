import time

import numpy as np
import pytest
import torch
from _mono_standins import CharTokenizer, StandInSAE, planted_index

from mono_utils.features import dashboards as db


def _params(model):
    p = dict(model.named_parameters())
    get = lambda s: next(v for k, v in p.items() if k.endswith(s))  # noqa: E731
    return get("fc_in._original_component.bias"), get("fc_out._original_component.weight"), get("head._original_component.weight")


def test_logit_weights_match_direct_computation(tiny_model):
    _, fc_out, head = _params(tiny_model)
    sae = StandInSAE(64, 32, seed=4)
    for i in (0, 13, 63):
        direct = fc_out.detach()[:, i] @ head.detach().T
        torch.testing.assert_close(db.logit_weights(tiny_model, "neuron", i), direct, rtol=1e-5, atol=1e-5)
    for i in (0, 31):
        direct = sum(sae.W_dec[i, n].item() * (fc_out.detach()[:, n] @ head.detach().T) for n in range(64))
        torch.testing.assert_close(db.logit_weights(tiny_model, "feature", i, sae), direct, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="numbered 0..63"):
        db.logit_weights(tiny_model, "neuron", 64)
    with pytest.raises(ValueError, match="needs its SAE"):
        db.logit_weights(tiny_model, "feature", 0)


def test_ablation_sign_on_constructed_case(tiny_model):
    b_in, fc_out, head = _params(tiny_model)
    n, t = 3, 17
    with torch.no_grad():  # neuron 3 always on, writing the unembedding direction of token 17
        b_in[n] = 30.0
        fc_out[:, n] = 0.5 * head[t] / head[t].norm()
    g = np.random.default_rng(0)
    toks = g.integers(1, 64, size=(6, 16))
    toks[:, 1::2] = t
    eff = db.ablation_effects(tiny_model, toks, "neuron", n)
    assert np.all(eff[:, 0] == 0)
    assert (eff[:, 1:][toks[:, 1:] == t] > 0).all(), "the neuron pushes token 17, so it helped wherever 17 came next"
    other = eff[:, 1:][toks[:, 1:] != t]
    assert other.mean() < eff[:, 1:][toks[:, 1:] == t].min(), "other next tokens were helped far less"
    # a feature whose dictionary vector is e_3 and copies neuron 3 has the same effect
    sae = StandInSAE(64, 8, seed=0)
    sae.plant_copy_of_neuron(2, n)
    np.testing.assert_allclose(db.ablation_effects(tiny_model, toks, "feature", 2, sae), eff, atol=1e-4)


@pytest.fixture()
def planted(tiny_model, tmp_path):
    idx, sae = planted_index(tiny_model, tmp_path)
    return idx, sae


def test_dashboard_data_for_planted_unit(tiny_model, planted):
    idx, sae = planted
    tok = CharTokenizer(64)
    t0 = time.time()
    f = db.dashboard_data(idx, "feature", 5, tiny_model, tok, sae, seed=1)
    assert time.time() - t0 < 1.0
    nrn = db.dashboard_data(idx, "neuron", 7, tiny_model, tok, sae, seed=1)
    assert f["count"] == nrn["count"] > 0 and f["density"] == nrn["density"]
    assert [c["act"] for c in f["top"]] == [c["act"] for c in nrn["top"]]
    assert [c["tokens"] for c in f["top"]] == [c["tokens"] for c in nrn["top"]]
    assert [s for s, _ in f["logits_top"]] == [s for s, _ in nrn["logits_top"]]
    assert [v for _, v in f["logits_top"]] == pytest.approx([v for _, v in nrn["logits_top"]], abs=1e-5)
    for a, b in zip(f["top"], nrn["top"]):
        np.testing.assert_allclose(a["effects"], b["effects"], atol=1e-4)
    # the top context really has its peak at the marked position, with the indexed value
    c = f["top"][0]
    assert c["acts"][c["pos"] - c["start"]] == pytest.approx(c["act"])
    assert c["act"] == pytest.approx(float(idx.max_act("feature")[5]), rel=1e-3)
    assert sum(d["count"] for d in f["domains"]) == f["count"]
    assert len(f["intervals"]) == 11
    html = db.render_dashboard(f)
    assert "feature 5" in html and "<script" not in html and "http" not in html
    blind = db.render_dashboard(f, blind=True)
    assert "feature" not in blind.split("Top activations")[0] and "neuron" not in blind.split("Top activations")[0]


def test_dead_and_unknown_units(tiny_model, planted):
    idx, sae = planted
    tok = CharTokenizer(64)
    d = db.dashboard_data(idx, "feature", 9, tiny_model, tok, sae)
    assert d["dead"] and d["top"] == [] and d["count"] == 0
    assert "DEAD" in db.render_dashboard(d)
    with pytest.raises(ValueError, match="numbered 0..95"):
        db.dashboard_data(idx, "feature", 1000, tiny_model, tok, sae)
    with pytest.raises(ValueError, match="numbered 0..63"):
        db.dashboard_data(idx, "neuron", -1, tiny_model, tok, sae)
    picks = db.pick_examples(idx, min_count=5)
    assert not idx.is_dead("neuron", picks["neuron"]) and not idx.is_dead("feature", picks["feature"])
