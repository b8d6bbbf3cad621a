import numpy as np
import pytest
from _mono_standins import CharTokenizer, StandInSAE, planted_index, random_index

from mono_utils.features import widgets as wd


@pytest.fixture()
def setup(tiny_model, tmp_path):
    idx, sae = planted_index(tiny_model, tmp_path)
    return idx, sae, CharTokenizer(64), tiny_model


def test_units_for_token_matches_index(setup):
    idx, sae, tok, model = setup
    hits = wd.units_for_token(idx, model, sae, tok, "c", "feature", k=5)
    t = tok.chars.index("c")
    mask = idx.tokens == t
    assert hits and hits[0]["occurrences"] == int(mask.sum())
    for h in hits:
        brute = idx.unit_acts("feature", h["unit"])[mask].mean()
        assert h["mean_act"] == pytest.approx(brute, rel=2e-3, abs=1e-3)
    assert [h["mean_act"] for h in hits] == sorted([h["mean_act"] for h in hits], reverse=True)
    with pytest.raises(ValueError, match="2 tokens"):
        wd.units_for_token(idx, model, sae, tok, "ab")
    with pytest.raises(ValueError, match="empty"):
        wd.units_for_token(idx, model, sae, tok, "")


def test_units_for_domain(setup):
    idx, *_ = setup
    hits = wd.units_for_domain(idx, "neuron", "subdomain:s1", k=3, min_count=1)
    for h in hits:
        assert h["count"] == idx.domain_counts("neuron", h["unit"], "subdomain")["s1"]
    with pytest.raises(ValueError, match="choose one of a, b, c"):
        wd.units_for_domain(idx, "neuron", "klingon")


def test_active_units_in_text_bad_input(setup):
    idx, sae, tok, model = setup
    res = wd.active_units_in_text(model, sae, tok, "abc", index=idx)
    assert res["tokens"] == ["a", "b", "c"] and len(res["units"]) == 3
    for units in res["units"]:
        assert all(a > 0 for _, a in units) and units == sorted(units, key=lambda x: -x[1])
    with pytest.raises(ValueError, match="empty"):
        wd.active_units_in_text(model, sae, tok, "   ")
    with pytest.raises(ValueError, match="no tokens"):
        wd.active_units_in_text(model, sae, tok, "ש©")          # characters the toy tokenizer never saw
    long = wd.active_units_in_text(model, sae, tok, "a" * 40)
    assert len(long["tokens"]) == 15 and "only the first" in long["notes"][0]


def test_unseen_characters_with_real_tokenizer(smoke_model, smoke_tokenizer, smoke_preset):
    sae = StandInSAE(smoke_preset.d_mlp, 32)
    res = wd.active_units_in_text(smoke_model, sae, smoke_tokenizer, "\U0001F984\U0001F984 hi")
    assert len(res["tokens"]) >= 3 and any("raw bytes" in n for n in res["notes"])


def test_browser_driven_from_code(setup):
    idx, sae, tok, model = setup
    b = wd.FeatureBrowser(idx, model, tok, sae)
    assert b.current == ("feature", 0) and "feature 0" in b.dashboard.value
    b.next_btn.click()
    assert b.current == ("feature", 1) and b.unit.value == 1
    b.prev_btn.click(); b.prev_btn.click()
    assert b.current == ("feature", 95)                       # wraps around
    b.unit.value = 9                                           # the dead feature
    assert b.current == ("feature", 9) and "dead" in b.status.value and "DEAD" in b.dashboard.value
    b.random_btn.click()
    assert not idx.is_dead("feature", b.current[1])
    b.kind.value = "neuron"
    assert b.current[0] == "neuron" and b.unit.max == 63
    b.show("neuron", 500)
    assert "numbered 0..63" in b.status.value and b.current[0] == "neuron"
    b.kind.value = "feature"
    b.token_box.value = "c"
    b.token_btn.click()
    btns = b.results.children[1].children
    assert btns, "search results are buttons"
    btns[0].click()
    assert b.current == ("feature", int(btns[0].description.split(":")[0][1:]))
    b.domain_box.value = "subdomain:s2"
    b.domain_btn.click()
    assert "s2" in b.results.children[0].value
    b.text_box.value = ""
    b.text_btn.click()
    assert "empty" in b.status.value
    b.text_box.value = "abc"
    b.text_btn.click()
    rows = b.results.children[1:]
    assert len(rows) == 3
    first = next(r for r in rows if len(r.children) > 1).children[1]
    first.click()
    assert b.current == ("feature", int(first.description.split()[0][1:]))


def test_rating_widget_saves_and_resumes(tmp_path):
    from mono_utils.features.rating import RatingSession, read_ratings
    idx = random_index()
    seen = []

    def render(kind, unit, blind=False):
        seen.append((kind, unit, blind))
        return f"<div>unit</div>"
    s = RatingSession(idx, "cy", seed=0, n_features=2, n_neurons=2, folder=tmp_path)
    w = wd.RatingWidget(s, render)
    assert "unit 1 of 4" in w.progress.value and seen[-1][2] is True
    w.interpretation.value = "looks like digits"
    for k, v in {"confidence": 3, "activation_consistency": 4, "logit_consistency": 3, "specificity": 2}.items():
        w.scores[k].value = v
    assert "total 12" in w.total.value and w.scores["effect_separation"].disabled
    w.save_btn.click()
    assert "saved unit 1" in w.status.value and "unit 2 of 4" in w.progress.value
    rows, _ = read_ratings(tmp_path / "cy.csv")
    assert rows[0]["total"] == 12 and rows[0]["interpretation"] == "looks like digits"
    w2 = wd.RatingWidget(RatingSession(idx, "cy", seed=0, n_features=2, n_neurons=2, folder=tmp_path), render)
    assert "unit 2 of 4" in w2.progress.value
    for _ in range(3):
        w2.save_btn.click()
    assert "complete" in w2.progress.value and w2.save_btn.disabled
