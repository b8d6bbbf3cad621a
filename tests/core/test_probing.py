"""Sparse probing and absorption on planted data, where the answer is known."""
import numpy as np
import pytest

from mono_utils.core.probing import absorption, domain_direction, fit_logistic, sparse_probing


def planted_units(n=4000, units=64, seed=0):
    """Unit 7 fires exactly on the label; units 3 and 9 each carry half of a second, harder signal."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.2
    acts = np.maximum(rng.normal(0, 1, (n, units)), 0).astype(np.float32)
    acts[:, 7] = labels * (1 + rng.random(n))
    return acts, labels


def test_a_dedicated_unit_is_read_by_a_one_unit_probe():
    acts, labels = planted_units()
    acc = sparse_probing(acts, labels, ks=(1, 5))
    assert acc[1] == pytest.approx(1.0), acc


def test_random_units_probe_at_chance():
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(4000, 32)).astype(np.float32)
    labels = rng.random(4000) < 0.3
    acc = sparse_probing(acts, labels, ks=(1, 20))
    assert 0.4 < acc[1] < 0.6 and 0.4 < acc[20] < 0.6, acc


def test_more_units_read_a_signal_spread_over_them():
    rng = np.random.default_rng(2)
    n = 6000
    labels = rng.random(n) < 0.5
    acts = rng.normal(size=(n, 40)).astype(np.float32)
    acts[:, :5] += labels[:, None] * 0.6          # five weak, independent witnesses
    acc = sparse_probing(acts, labels, ks=(1, 5))
    assert acc[5] > acc[1] + 0.05, acc


def test_probe_needs_both_classes():
    acts = np.ones((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 4 tokens of each class"):
        sparse_probing(acts, np.zeros(10, dtype=bool))


def test_logistic_fit_separates_a_line():
    x = np.linspace(-3, 3, 200)[:, None]
    coef, bias = fit_logistic(x, x[:, 0] > 0.5)
    assert coef[0] > 0 and -bias / coef[0] == pytest.approx(0.5, abs=0.1)


def planted_absorption(n=5000, d=16, absorbed_share=0.3, seed=0):
    """A domain on 20% of tokens; feature 0 carries its direction but is silent on 30% of them, where
    feature 1 (decoder nearly parallel to feature 0's) fires instead (and, weakly, beside feature 0 on
    a quarter of the rest, which is not absorption); feature 2 is unrelated."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.2
    direction = np.zeros(d)
    direction[0] = 1.0
    decoder = np.zeros((3, d))
    decoder[0, 0] = 1.0
    decoder[1, 0], decoder[1, 1] = 0.9, np.sqrt(1 - 0.81)
    decoder[2, 5] = 1.0
    absorbed = labels & (rng.random(n) < absorbed_share)
    acts = np.zeros((n, 3), dtype=np.float32)
    acts[labels & ~absorbed, 0] = 2.0
    acts[absorbed, 1] = 2.0
    acts[labels & ~absorbed & (rng.random(n) < 0.25), 1] = 0.5   # fires beside the main one too: not absorption
    acts[:, 2] = (rng.random(n) < 0.5) * 1.0
    x = acts @ decoder + rng.normal(0, 0.05, (n, d))
    return acts, labels, decoder, x, absorbed


def test_absorption_finds_the_planted_share():
    acts, labels, decoder, x, absorbed = planted_absorption()
    res = absorption(acts, labels, main=0, decoder=decoder, direction=domain_direction(x, labels))
    assert res.absorbers == [1]
    assert res.rate == pytest.approx(absorbed[labels].mean(), abs=1e-9)
    assert res.main_recall == pytest.approx(1 - absorbed[labels].mean(), abs=1e-9)


def test_no_absorption_when_the_stand_in_points_elsewhere():
    acts, labels, decoder, x, _ = planted_absorption()
    decoder[1] = 0.0
    decoder[1, 9] = 1.0                                  # feature 1 fires on the same tokens, another direction
    res = absorption(acts, labels, main=0, decoder=decoder, direction=domain_direction(x, labels))
    assert res.absorbers == [] and res.rate == 0.0
