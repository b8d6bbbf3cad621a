"""The panel of real against random: its marking rule on hand-made values, every measure on planted dictionaries
(A/1 reads the labels, the controls read noise), the figure, and the build stage on a tiny smoke preset
(computed once, then loaded)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _evaluation_planted import planted_dictionaries, planted_tokens
from mono_utils.evaluation import panel as EP


# ---------------------------------------------------------------- the marking rule
@pytest.mark.parametrize("main, seeds, controls, mark", [
    (0.80, [0.78, 0.80, 0.82], [0.50, 0.60], EP.SEPARATES),            # beyond both by 0.2 > spread 0.04
    (0.80, [0.78, 0.80, 0.82], [0.79, 0.50], EP.WITHIN),               # one control 0.01 away: within the spread
    (0.80, [0.78, 0.80, 0.82], [0.90, 0.50], EP.NOT_SEPARATED),        # a control on each side
    (0.80, [0.78, 0.80, 0.82], [0.80], EP.NOT_SEPARATED),              # level with a control
    (0.10, [0.09, 0.11, 0.10], [0.30, 0.40], EP.SEPARATES),            # lower is better: below every control
    (0.80, [], [0.50], EP.NO_SPREAD),                                  # no seeds: the spread is unknown
    (0.80, [0.78, float("nan")], [0.50], EP.NO_SPREAD),                # one finite seed is no spread
    (float("nan"), [0.78, 0.80], [0.50], EP.NOT_APPLICABLE),           # no value for A/1
    (0.80, [0.78, 0.80], [None, float("nan")], EP.NOT_APPLICABLE),     # no control has the measure
])
def test_the_marking_rule(main, seeds, controls, mark):
    got = EP.separation_mark(main, seeds, controls)
    assert got["mark"] == mark, got
    if mark in (EP.SEPARATES, EP.WITHIN):
        assert got["gap"] == pytest.approx(min(abs(main - c) for c in controls if c is not None and c == c))
        assert got["spread"] == pytest.approx(max(seeds) - min(seeds))


def test_a_gap_equal_to_the_spread_is_within():
    assert EP.separation_mark(1.0, [0.9, 1.1], [0.8])["mark"] == EP.WITHIN       # 0.2 is not beyond 0.2
    assert EP.separation_mark(1.0, [0.9, 1.1], [0.79])["mark"] == EP.SEPARATES


# ---------------------------------------------------------------- every measure on planted dictionaries
@pytest.fixture(scope="module")
def planted_panel(smoke_tokenizer):
    ts = planted_tokens()
    return EP.compute_panel(planted_dictionaries(ts), ts, smoke_tokenizer, universality={"A/1": 0.7, "neurons": 0.4},
                            n_units=4, progress=False, notes={"seed_note": "planted"})


def test_the_panel_marks_what_separates_on_planted_data(planted_panel):
    t = planted_panel.table.set_index("key")
    names = ["neurons", "A/1", "A/1 seed 0", "A/1 seed 1", "A/1 seed 2", "randomized", "frozen decoder"]
    assert [c for c in planted_panel.table.columns if c in names] == names
    assert len(t) == len(EP.MEASURES) and set(t.index) == {k for k, *_ in EP.MEASURES}
    # A/1 reads the code label with one unit; the controls read noise: beyond them, by more than the spread
    assert t.loc["probe_domain_k1", "A/1"] > 0.6 and t.loc["probe_pair_k1", "A/1"] == 1.0
    for key in ("probe_domain_k1", "probe_pair_k1", "specific_labels"):
        assert t.loc[key, "mark"] == EP.SEPARATES, (key, t.loc[key].to_dict())
        assert t.loc[key, "gap to the controls"] > t.loc[key, "seed spread"]
        assert t.loc[key, "mark, seed runs"] == EP.SEPARATES                # the recipe at the seeds' budget too
    # no SAE folder behind a planted dictionary: reconstruction has no value, hence no mark
    assert t.loc["fvu", "mark"] == EP.NOT_APPLICABLE and math.isnan(t.loc["fvu", "A/1"])
    # universality applies to A/1 and the neurons only: no control has a value
    assert t.loc["universality", "A/1"] == 0.7 and t.loc["universality", "mark"] == EP.NOT_APPLICABLE
    # every mark is one of the rule's
    assert set(t["mark"]) <= set(EP.MARK_SYMBOL) and set(t["mark, seed runs"]) <= set(EP.MARK_SYMBOL)
    marks = planted_panel.marks()
    assert marks["hard pairs, k = 1"] == EP.SEPARATES


def test_the_panels_tables(planted_panel):
    p = planted_panel
    a1 = p.absorption[p.absorption.dictionary == "A/1"].set_index("label")
    assert a1.loc["subdomain:dna", "absorption"] == 0.5
    assert p.table.set_index("key").loc["absorption", "A/1"] == pytest.approx(a1.loc[a1.specific, "absorption"].mean())
    assert p.proxies.empty or set(p.proxies.proxy) <= {"dna", "base64", "hebrew", "arabic"}
    assert set(p.autointerp.dictionary) <= set(p.dictionaries.dictionary) and len(p.autointerp)
    assert (p.autointerp.groupby("dictionary").size() <= 4).all()
    d = p.dictionaries.set_index("dictionary")
    assert d.loc["A/1", "kind"] == "trained" and d.loc["randomized", "kind"] == "control"
    assert p.params["controls"] == ["randomized", "frozen decoder"]
    assert p.params["seeds"] == ["A/1 seed 0", "A/1 seed 1", "A/1 seed 2"]
    assert "planted" in p.budget and f"{p.params['tokens']:,} held-out tokens" in p.budget
    assert list(p.probing_summary().index)[:2] == ["neurons", "A/1"]
    assert p.absorption_summary().loc["A/1", "specific labels"] >= 4


def _scores(spearman, detection, logit):
    import pandas as pd
    n = len(spearman)
    return pd.DataFrame({"status": ["ok"] * n, "single_token": [False] * n, "spearman": spearman,
                         "detection": detection, "logit_accuracy": logit})


def test_notebook_03s_run_is_shown_beside_the_sample(smoke_tokenizer):
    """Notebook 03's own scores (every live unit) get rows of their own, marked with the spread of the same score
    at the panel's budget; a dictionary without them (the frozen decoder) is left out of their rule."""
    ts = planted_tokens(rows=24)
    ref = {"A/1": _scores([0.5, 0.7, 0.9], [0.6, 0.6, 0.8], [0.7, 0.8, 0.9]),
           "randomized": _scores([0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])}
    p = EP.compute_panel(planted_dictionaries(ts), ts, smoke_tokenizer, n_units=3, progress=False,
                         reference_scores=ref)
    t = p.table.set_index("key")
    assert t.loc["nb03_spearman", "A/1"] == 0.7 and t.loc["nb03_spearman", "randomized"] == 0.2
    assert t.loc["nb03_logit", "A/1"] == 0.8 and math.isnan(t.loc["nb03_spearman", "frozen decoder"])
    assert t.loc["nb03_spearman", "seed spread"] == pytest.approx(t.loc["ai_spearman", "seed spread"], nan_ok=True)
    spread = t.loc["ai_spearman", "seed spread"]
    assert t.loc["nb03_spearman", "mark"] == (EP.SEPARATES if 0.5 > spread else EP.WITHIN)
    assert t.loc["nb03_spearman", "mark, seed runs"] == EP.NOT_APPLICABLE


def test_the_ultralow_cluster_is_left_out():
    import scipy.sparse as sp
    g = np.random.default_rng(0)
    y = g.random(400) < 0.3
    a = np.zeros((400, 5), np.float32)
    a[:, 0] = y * 2.0                                # the perfect detector...
    a[:, 1] = (y & (g.random(400) < 0.7)) * 1.0      # ...and a weaker one
    a[:, 2:] = g.random((400, 3)) < 0.2
    acts = sp.csr_matrix(a)
    assert EP.proxy_scores(acts, y)["unit"] == 0
    ultralow = np.array([True, False, False, False, False])
    best = EP.proxy_scores(acts, y, excluded=ultralow)
    assert best["unit"] == 1 and best["specificity"] == 1.0 and best["sensitivity"] < 1.0
    assert 0 not in EP.sample_live_units(acts, 5, excluded=ultralow)
    assert EP.sample_live_units(acts, 2, seed=3) == EP.sample_live_units(acts, 2, seed=3)
    assert EP.panel_units(type("P", (), {"sae_main": 4096})) == 256
    assert EP.panel_units(type("P", (), {"sae_main": 512})) == 32


def test_the_panel_needs_a1(smoke_tokenizer):
    ts = planted_tokens(rows=8)
    d = planted_dictionaries(ts, seeds=0)
    with pytest.raises(ValueError, match="named 'A/1'"):
        EP.compute_panel({"neurons": d["neurons"]}, ts, smoke_tokenizer, n_units=2, progress=False)


def test_the_figure_shows_every_measure_and_its_mark(planted_panel):
    fig = EP.panel_figure(planted_panel)
    hm = fig.data[0]
    assert list(hm.x) == list(planted_panel.dictionaries.dictionary)
    assert len(hm.y) == len(EP.MEASURES)
    sep = [y for y, m in zip(hm.y, planted_panel.table["mark"]) if m == EP.SEPARATES]
    assert sep and all(EP.MARK_SYMBOL[EP.SEPARATES] in y for y in sep)
    z = np.asarray(hm.z, dtype=float)
    assert np.nanmin(z) >= 0 and np.nanmax(z) <= 1
    pf = EP.probing_figure(planted_panel)
    assert len(pf.data) == 2 * len(planted_panel.dictionaries)        # a line per dictionary, domains and pairs
    # a "lower is better" row is coloured the other way round: its lowest value is its greenest
    row = list(planted_panel.table.key).index("absorption")
    vals = planted_panel.table.loc[row, list(hm.x)].to_numpy(float)
    if np.isfinite(vals).sum() >= 2 and np.nanmax(vals) > np.nanmin(vals):
        assert z[row, int(np.nanargmin(vals))] == 1.0


# ---------------------------------------------------------------- the build stage
def test_the_stage_is_in_the_build():
    from mono_utils import stages
    deps = stages.STAGE_DEPS["evaluation panel"]
    assert {"SAE A/1 frozen decoder", "PCA A", "SAE A/1 seeds", "SAE randomized", "universality comparison",
            "autointerp offline"} <= set(deps)


def test_the_stage_on_smoke_is_computed_once_then_loaded(tiny, smoke_store, monkeypatch):
    from mono_utils.evaluation.dictionaries import ALL_NAMES, get_dictionaries
    dicts = get_dictionaries(tiny, smoke_store, names=ALL_NAMES, progress=False)
    panel = EP.get_evaluation_panel(tiny, smoke_store, progress=False, dictionaries=dicts, n_units=8)
    t = panel.table.set_index("key")
    assert list(panel.dictionaries.dictionary) == list(ALL_NAMES)
    assert panel.params["tokens"] == (EP.panel_tokens(tiny) // tiny.n_ctx) * tiny.n_ctx
    # the SAEs' own evaluation where it applies, none for the bases
    assert np.isfinite(t.loc["fvu", "A/1"]) and np.isfinite(t.loc["fvu", "frozen decoder"])
    assert math.isnan(t.loc["fvu", "neurons"]) and math.isnan(t.loc["fvu", "PCA"])
    assert np.isfinite(t.loc["universality", "A/1"]) and math.isnan(t.loc["universality", "randomized"])
    # notebook 03's own run, for the dictionaries it scores
    assert np.isfinite(t.loc["nb03_spearman", "A/1"]) and np.isfinite(t.loc["nb03_logit", "randomized"])
    assert math.isnan(t.loc["nb03_spearman", "frozen decoder"])
    assert np.isfinite(t["seed spread"].astype(float)).any()
    assert panel.params["seeds"] == ["A/1 seed 0", "A/1 seed 1", "A/1 seed 2"]
    assert set(panel.probing.dictionary) == set(ALL_NAMES)

    def fail(*a, **k):
        raise AssertionError("recomputed instead of loaded")
    monkeypatch.setattr(EP, "compute_panel", fail)
    again = EP.get_evaluation_panel(tiny, smoke_store, progress=False, dictionaries=dicts, n_units=8)
    assert again.table.equals(panel.table) and again.params == panel.params
    assert again.probing.equals(panel.probing)
    monkeypatch.undo()
    # another unit count is another result
    other = EP.get_evaluation_panel(tiny, smoke_store, progress=False, dictionaries=dicts, n_units=4)
    assert other.params["units"] == 4 and len(list((smoke_store.root / "result").glob("evaluation-panel-*"))) >= 2
