"""Toy models of superposition: the measures on hand-made weights, the paper's two regimes, seeds, the SAE."""
import math

import numpy as np
import pytest
import torch

from mono_utils.core import toy


def _polygon(k: int, norm: float = 1.0) -> torch.Tensor:
    angles = torch.arange(k, dtype=torch.float32) * 2 * math.pi / k
    return torch.stack([angles.cos(), angles.sin()]) * norm          # [2, k]: features as columns


# ---------------------------------------------------------------- measures
@pytest.mark.parametrize("k, want", [(2, 1 / 2), (3, 2 / 3), (5, 2 / 5)])
def test_dimensionality_of_the_papers_shapes(k, want):
    """An antipodal pair, a triangle and a pentagon in two dimensions: 1/2, 2/3 and 2/5 per feature."""
    D = toy.feature_dimensionality(_polygon(k))
    assert torch.allclose(D, torch.full((k,), want), atol=1e-5), D
    assert torch.allclose(toy.dimensions_per_feature(_polygon(k)), torch.tensor(2 / k))


def test_measures_of_dedicated_and_dropped_features():
    W = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0]])   # two dedicated features, two dropped
    assert torch.allclose(toy.superposition(W), torch.zeros(4))
    assert torch.allclose(toy.feature_dimensionality(W), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert list(toy.feature_status(W)) == ["dedicated", "dedicated", "not represented", "not represented"]
    assert torch.isfinite(toy.superposition(W)).all()


def test_superposition_counts_the_other_features_with_their_norms():
    W = torch.tensor([[1.0, -0.5, 0.0], [0.0, 0.0, 1.0]])            # feature 1 lies on feature 0's axis
    sup = toy.superposition(W)
    assert torch.allclose(sup, torch.tensor([0.25, 1.0, 0.0]))      # (0.5)^2 onto 0; 1^2 onto 1; none onto 2
    # feature 1's norm (0.5) is not above the cut: the model counts as dropping it, though it projects on 0
    assert list(toy.feature_status(W)) == ["superposition", "not represented", "dedicated"]


def test_measures_reject_a_vector():
    with pytest.raises(ValueError, match="features are columns"):
        toy.superposition(torch.ones(5))


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("kwargs, message", [
    ({"n_hidden": 0}, "n_hidden must be a positive integer"),
    ({"sparsity": (1.0,)}, "never active"),
    ({"sparsity": ()}, "non-empty"),
    ({"lr": float("nan")}, "lr"),
    ({"importance": (1.0, 2.0)}, "one row of 20 per instance"),
    ({"importance": -0.5}, ">= 0"),
])
def test_bad_configs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        toy.ToyConfig(**kwargs)


def test_importance_rows_and_probability():
    cfg = toy.ToyConfig(n_features=3, n_hidden=1, sparsity=(0.0, 0.9), importance=0.5)
    assert torch.allclose(cfg.importance_rows(), torch.tensor([[1, 0.5, 0.25]] * 2))
    assert torch.allclose(cfg.feature_probability(), torch.tensor([1.0, 0.1]))


def test_feature_batch_has_the_asked_density_and_range():
    x = toy.feature_batch(torch.tensor([1.0, 0.2]), 10, 20_000, torch.Generator().manual_seed(0))
    assert x.shape == (2, 20_000, 10) and x.min() >= 0 and x.max() <= 1
    assert (x[0] > 0).float().mean() > 0.999
    assert abs(float((x[1] > 0).float().mean()) - 0.2) < 0.01
    assert abs(float(x[1][x[1] > 0].mean()) - 0.5) < 0.01            # uniform on [0, 1] where active


# ---------------------------------------------------------------- training: the paper's two regimes
@pytest.fixture(scope="module")
def trained():
    cfg = toy.ToyConfig(n_features=8, n_hidden=3, sparsity=(0.0, 0.97), importance=0.8, steps=1500, seed=0)
    return toy.train_toy(cfg, progress=False)


def test_dense_features_keep_the_m_most_important_dedicated(trained):
    status = toy.feature_status(trained)[0]
    assert list(status[:3]) == ["dedicated"] * 3, status
    assert list(status[3:]) == ["not represented"] * 5, status
    assert abs(float(toy.dimensions_per_feature(trained)[0]) - 1) < 0.05


def test_sparse_features_are_packed_into_superposition(trained):
    status = toy.feature_status(trained)[1]
    represented = int((status != "not represented").sum())
    assert represented > trained.cfg.n_hidden, status
    assert int((status == "superposition").sum()) > trained.cfg.n_hidden
    rows = toy.sweep_table(trained)
    assert rows[0]["represented"] == 3 and rows[1]["represented"] == represented
    assert rows[1]["dimensions per feature"] < 0.8


def test_seeds_reproduce_and_differ():
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, sparsity=(0.5, 0.9), steps=60, seed=4)
    a, b = toy.train_toy(cfg, progress=False), toy.train_toy(cfg, progress=False)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    c = toy.train_toy(toy.ToyConfig(**{**cfg.__dict__, "seed": 5}), progress=False)
    assert not torch.equal(a.W, c.W)


def test_an_instance_does_not_depend_on_its_neighbours():
    """Each instance starts from its own seeded weights: adding instances after it changes nothing before."""
    one = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, sparsity=(0.5,)))
    two = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, sparsity=(0.5, 0.9)))
    assert torch.equal(one.W[0], two.W[0])


def test_restarts_keep_the_lowest_loss():
    cfg = toy.ToyConfig(n_features=4, n_hidden=1, sparsity=(0.0, 0.9), steps=200, seed=1)
    single = toy.train_toy(cfg, progress=False)
    best = toy.train_toy(toy.ToyConfig(**{**cfg.__dict__, "restarts": 3}), progress=False)
    assert best.W.shape == single.W.shape
    # restart 0 of each instance is not the single run (other initial draws), so compare with the wide run itself
    wide = toy.ToyConfig(**{**cfg.__dict__, "sparsity": (0.0,) * 3 + (0.9,) * 3})
    losses = toy.instance_losses(toy.train_toy(wide, progress=False)).view(2, 3)
    assert torch.allclose(toy.instance_losses(best), losses.min(1).values, rtol=1e-5)


@pytest.mark.slow
def test_phase_change_of_two_features_in_one_dimension():
    """Dense and unimportant: dropped; dense and important: dedicated; sparse: both share the dimension."""
    model = toy.train_toy(toy.phase_config(toy.ToySizes(phase_steps=1200), points=4), progress=False)
    S, ratios, codes = toy.phase_grid(model, 4)
    assert S[0] == 0 and ratios[0] < ratios[-1]
    names = list(toy.STATUS_COLOURS)
    assert names[codes[0, 0]] == "not represented"                   # importance 0.1, dense
    assert names[codes[-1, 0]] == "dedicated"                        # importance 10, dense
    assert names[codes[1, -1]] == "superposition"                    # importance ~0.5, S = 0.99


# ---------------------------------------------------------------- the SAE on the hidden activations
def _planted(n=8, m=4, sparsity=0.9, seed=0) -> toy.ToyModel:
    model = toy.ToyModel(toy.ToyConfig(n_features=n, n_hidden=m, sparsity=(sparsity,)))
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g)
    with torch.no_grad():
        model.W[0] = W / W.norm(dim=0, keepdim=True)
    return model


def test_activations_source_is_a_pure_function_of_the_step():
    src = toy.ToyActivations(_planted(), 0, batch_size=256, seed=3)
    assert torch.equal(src.batch(5), src.batch(5)) and not torch.equal(src.batch(5), src.batch(6))
    assert src.batch(0).shape == (256, 4) and src.d_in == 4
    assert torch.equal(src.features(), src.W.T)
    with pytest.raises(ValueError, match="instance 3"):
        toy.ToyActivations(_planted(), 3)


def test_skip_empty_keeps_the_conditional_distribution():
    """Rows with no feature on are left out, and the rest is exactly the conditional distribution: each
    feature is on with probability p / (1 - (1 - p)^n)."""
    model = _planted(n=6, m=6, sparsity=0.8)
    with torch.no_grad():
        model.W[0] = torch.eye(6)                                    # h = x: the features themselves
    x = toy.ToyActivations(model, 0, batch_size=40_000).batch(0)
    assert (x > 0).any(1).all()
    p = 0.2
    want = p / (1 - (1 - p) ** 6)
    assert np.allclose((x > 0).float().mean(0).numpy(), want, atol=0.012)
    assert abs(float(x[x > 0].mean()) - 0.5) < 0.01


def test_recovery_scores_on_known_dictionaries():
    F = torch.eye(3)
    exact = toy.recovery_scores(torch.cat([F, -F]), F)
    assert exact["mean_max_cosine"] == pytest.approx(1.0) and exact["recovered"] == 3
    rotated = toy.recovery_scores(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), F)
    assert rotated["best_cosine"].tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5, 1.0])
    assert rotated["recovered"] == 1
    dropped = toy.recovery_scores(F, torch.tensor([[1.0, 0, 0], [0, 1e-3, 0]]))
    assert dropped["n_represented"] == 1 and dropped["recovered_all"] == 2 and dropped["recovered"] == 1
    with pytest.raises(ValueError, match="share m"):
        toy.recovery_scores(torch.ones(4, 2), F)


def test_an_sae_recovers_planted_features():
    src = toy.ToyActivations(_planted(), 0, batch_size=1024, seed=0)
    sae, history = toy.train_toy_sae(src, d_sae=16, total_tokens=1_000_000, l1_coeff=0.1, progress=False)
    scores = toy.recovery_scores(sae.W_dec_raw, src.features())
    assert scores["mean_max_cosine"] > 0.92 and scores["recovered"] >= 7, scores
    # the bar is not met by chance: a random dictionary of the same size, and the hidden basis, stay below it
    chance = toy.recovery_scores(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), src.features())
    assert chance["mean_max_cosine"] < 0.85 and chance["recovered"] <= 2, chance
    assert toy.recovery_scores(torch.eye(4), src.features())["recovered"] <= 2
    assert history[-1]["l0"] < 4


# ---------------------------------------------------------------- figures and sizes
def test_figures_build(trained):
    assert len(toy.wtw_figure(trained, [0, 1]).data) == 4
    assert len(toy.norms_figure(trained).data) == 2
    assert len(toy.sweep_figure(trained).data) == 2
    assert len(toy.dimensionality_figure(trained).data) == 2
    geo = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, sparsity=(0.9,)))
    assert len(toy.geometry_figure(geo, [0]).data) == 5
    scores = toy.recovery_scores(torch.eye(3), trained.W[1].T)
    assert len(toy.recovery_figure(scores, scores).data) == 2


def test_sizes_follow_the_preset(monkeypatch):
    monkeypatch.setenv("MONO_PRESET", "smoke")
    small = toy.toy_sizes()
    assert small.steps < toy.toy_sizes("default").steps
    assert toy.toy_sizes("paper") == toy.toy_sizes("default")
