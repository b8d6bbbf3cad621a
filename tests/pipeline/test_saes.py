"""The four SAE recipes side by side (notebook 01): matched tokens, the TopK artifact reused, and the
table and figures carrying each SAE's stored metrics and history. A tiny preset: smoke's model A
(the shared fixture) with SAEs of 128 features on 8,192 activations, so the four train in seconds."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from mono_utils.pipeline.saes import (
    ANTHROPIC2024_L1_SCALE,
    RECIPE_CURVES,
    feature_density,
    get_recipe_runs,
    get_topk_sae,
    recipe_curves_figure,
    recipe_density_figure,
    recipe_table,
    recipe_tokens,
    sae_history,
    sae_metrics,
)
from mono_utils.core.sae import RECIPES, SAEConfig, SparseAutoencoder


@pytest.fixture(scope="module")
def recipe_runs(tiny, smoke_store, smoke_model):
    topk = get_topk_sae(tiny, smoke_store, progress=False)          # the TopK side run, built first
    manifest = Path(topk.folder) / "MANIFEST.json"
    before = manifest.stat().st_mtime_ns
    runs = get_recipe_runs(tiny, smoke_store, progress=False)
    return runs, topk, before, manifest


def test_every_recipe_on_matched_tokens_at_a1_width(recipe_runs, tiny):
    runs, *_ = recipe_runs
    assert list(runs) == list(RECIPES)
    tokens = {name: sae_metrics(s)["train_tokens"] for name, s in runs.items()}
    assert len(set(tokens.values())) == 1, tokens
    assert abs(next(iter(tokens.values())) - recipe_tokens(tiny)) < tiny.sae_batch
    assert recipe_tokens(tiny) < tiny.sae_tokens          # a side run's budget, not A/1's
    assert len({s.folder for s in runs.values()}) == len(RECIPES)   # four artifacts, none shared
    for name, s in runs.items():
        assert s.cfg.d_sae == tiny.sae_main, name
        assert s.cfg.recipe_name == name
        assert sae_metrics(s)["recipe"] == name
    assert runs["paper2023"].cfg.l1_coeff == pytest.approx(tiny.l1_coeff)
    assert runs["anthropic2024"].cfg.l1_coeff == pytest.approx(tiny.l1_coeff * ANTHROPIC2024_L1_SCALE)
    assert runs["anthropic2024"].cfg.penalty == "l1_decoder_norm" and not runs["anthropic2024"].cfg.pre_encoder_bias
    assert runs["batchtopk"].cfg.k == runs["topk"].cfg.k == tiny.topk_k


def test_topk_is_the_side_runs_artifact_not_retrained(recipe_runs, tiny, smoke_store):
    runs, topk, before, manifest = recipe_runs
    assert Path(runs["topk"].folder) == Path(topk.folder)
    assert manifest.stat().st_mtime_ns == before                    # not written again
    again = get_recipe_runs(tiny, smoke_store, recipes=["topk", "paper2023"], progress=False)
    assert list(again) == ["paper2023", "topk"]                     # RECIPES' order, whatever was asked
    assert all(Path(again[n].folder) == Path(runs[n].folder) for n in again)


def test_side_runs_share_one_budget_and_their_artifacts(recipe_runs, tiny, smoke_store):
    """Every side run trains on side_run_tokens, so one recipe at one seed is one artifact: the recipes'
    batchtopk entry is seed 0 of the seed runs (A/1's recipe on smoke), loaded, not trained twice."""
    from mono_utils.evaluation.seeds import get_seed_runs, side_tokens
    from mono_utils.pipeline.saes import family_tokens, side_run_tokens, topk_tokens
    runs, *_ = recipe_runs
    assert recipe_tokens(tiny) == topk_tokens(tiny) == side_tokens(tiny) == side_run_tokens(tiny) < tiny.sae_tokens
    assert all(family_tokens(tiny, n) <= side_run_tokens(tiny) for n in tiny.sae_sizes)
    assert tiny.sae_recipe == "batchtopk"
    seed0 = get_seed_runs(tiny, smoke_store, seeds=(0,), progress=False)[0]
    assert Path(seed0.folder) == Path(runs["batchtopk"].folder)


def test_unknown_recipe_names_the_choices(tiny, smoke_store):
    with pytest.raises(ValueError, match=r"unknown SAE recipe.*'gated'.*choose among.*paper2023"):
        get_recipe_runs(tiny, smoke_store, recipes=["paper2023", "gated"], progress=False)
    with pytest.raises(ValueError, match="choose among"):
        get_recipe_runs(tiny, smoke_store, recipes=[], progress=False)


def test_table_reads_each_recipes_stored_metrics(recipe_runs):
    runs, *_ = recipe_runs
    t = recipe_table(runs)
    assert list(t.index) == list(runs)
    for name, s in runs.items():
        m, row = sae_metrics(s), t.loc[name]
        assert row["tokens"] == m["train_tokens"] and row["features"] == s.cfg.d_sae
        assert row["L0"] == m["l0"] and row["FVU"] == m["fvu"]
        assert row["loss recovered (zero abl.)"] == m["loss_recovered"]
        assert row["loss recovered (mean abl.)"] == m["loss_recovered_mean"]
        assert row["dead"] == m["dead"] and row["ultralow"] == m["ultralow"]
        assert row["dead + ultralow share"] == pytest.approx((m["dead"] + m["ultralow"]) / s.cfg.d_sae)
        assert row["setting"] == (f"k {s.cfg.k}" if "topk" in name else f"lambda {s.cfg.l1_coeff:.3g}")
    # the recipes differ, and the table shows it (not one SAE's figures four times)
    assert t["FVU"].nunique() == len(runs)
    # the second reading of "wasted": dead or below one shared density, from each stored density
    cut = 3e-3
    t2 = recipe_table(runs, reference_cutoff=cut)
    for name, s in runs.items():
        dens = feature_density(s)
        assert t2.loc[name, f"dead + below {cut:.2g} share"] == pytest.approx(float((dens < cut).float().mean()))
        assert t2.loc[name, "dead + ultralow share"] == t.loc[name, "dead + ultralow share"]


def test_density_figure_overlays_each_stored_histogram(recipe_runs):
    runs, *_ = recipe_runs
    fig = recipe_density_figure(runs)
    assert len(fig.data) == len(runs)
    for trace, (name, s) in zip(fig.data, runs.items()):
        m = sae_metrics(s)
        h = m["density_hist"]
        assert trace.name.startswith(name) and f"dead {h['dead']}" in trace.name
        assert list(trace.x) == h["edges"] and list(trace.y)[:-1] == h["counts"]
        assert sum(h["counts"]) + h["dead"] == s.cfg.d_sae
    cutoffs = sorted(round(s.x0, 6) for s in fig.layout.shapes)
    assert cutoffs == sorted(round(math.log10(sae_metrics(s)["ultralow_density"]), 6) for s in runs.values())


def test_curves_figure_plots_each_stored_history(recipe_runs):
    runs, *_ = recipe_runs
    fig = recipe_curves_figure(runs)
    assert len(fig.data) == len(runs) * len(RECIPE_CURVES)
    by_name = {}
    for trace in fig.data:
        by_name.setdefault(trace.name, []).append(trace)
    assert list(by_name) == list(runs)
    for name, s in runs.items():
        hist = sae_history(s)
        for trace, (key, _) in zip(by_name[name], RECIPE_CURVES):
            assert list(trace.x) == [h["step"] for h in hist]
            assert list(trace.y) == [h[key] for h in hist]


def test_views_refuse_an_sae_outside_the_store():
    loose = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16))
    for view in (recipe_table, recipe_density_figure, recipe_curves_figure):
        with pytest.raises(ValueError, match="get_recipe_runs"):
            view({"paper2023": loose})
