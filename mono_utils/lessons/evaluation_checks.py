"""Checks for notebook 08's exercise (real against random): run the student's function on small hand-made data.

- 08.1 ``absorption_rate(feature_acts, labels, main, decoder, direction, min_cos=0.5)``: the share of a domain's
  tokens on which its main feature is silent while another feature whose decoder carries the domain's
  direction fires (SAEBench's absorption, adapted to domain labels: ``core.probing.absorption``).

Each check names the mistake it recognises (the table of them: ``tests/lessons/wrong_answers.py``) and shows as
a green or red box; with ``MONO_LESSONS_STRICT=1`` a failed check raises ``ExerciseFailed``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.probing import absorption
# the machinery of every check (the time limit, the named return problems, strict mode) is checks.py's
from .checks import CheckResult, _call, _run, _Wrong

RULE = ("the share of the domain's tokens (labels True) on which feature `main` is silent (activation 0) while "
        "some other feature whose unit-normalised decoder row has cosine >= min_cos with `direction` fires (> 0)")


def reference_absorption_rate(feature_acts, labels, main, decoder, direction, min_cos: float = 0.5) -> float:
    """``core.probing.absorption(...).rate``: the package's definition."""
    return absorption(np.asarray(feature_acts, np.float64), np.asarray(labels, bool), int(main),
                      np.asarray(decoder, np.float64), np.asarray(direction, np.float64), min_cos).rate


def _planted():
    """20 tokens of the domain (labels True) and 20 others, 5 features in 4 dimensions, direction e0.

    Feature 0 (main, decoder e0) fires on domain tokens 0-7 and on two others; feature 1 (cosine 0.8) on domain
    tokens 8-14, beside the main one on 0-1, and on six others; feature 2 (cosine -1) on 15-17; feature 3 (cosine
    0.4, a decoder row of norm 2: its raw dot product is 0.8) on 18; feature 4 (cosine 0) on 18; token 19 has
    nothing. Every mistake of the table below gives another number than the right 7/20."""
    n, f = 40, 5
    acts = np.zeros((n, f))
    acts[0:8, 0] = 1.0 + np.arange(8) / 10
    acts[[26, 27], 0] = 0.7
    acts[list(range(8, 15)) + [0, 1] + list(range(20, 26)), 1] = 0.9
    acts[15:18, 2] = 0.6
    acts[18, 3] = 0.5
    acts[18, 4] = 0.4
    labels = np.zeros(n, bool)
    labels[:20] = True
    decoder = np.array([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [-1.0, 0, 0, 0],
                        [2 * 0.4, 2 * np.sqrt(1 - 0.16), 0, 0], [0, 0, 0, 1.0]])
    direction = np.array([1.0, 0, 0, 0])
    return acts, labels, 0, decoder, direction


def _mistakes(acts, labels, main, decoder, direction, min_cos=0.5) -> list[tuple[str, str, float]]:
    """(what is off, how to fix it, the number that mistake gives) for the planted data."""
    dom = acts[labels]
    silent = dom[:, main] <= 0
    unit = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
    cos = unit @ (direction / np.linalg.norm(direction))
    carriers = [j for j in np.flatnonzero(cos >= min_cos) if j != main]
    fires = (dom[:, carriers] > 0).any(1)
    right = (silent & fires)
    raw = [j for j in np.flatnonzero(decoder @ direction >= min_cos) if j != main]
    both_signs = [j for j in np.flatnonzero(np.abs(cos) >= min_cos) if j != main]
    others = [j for j in range(acts.shape[1]) if j != main]
    off = acts[~labels]
    fix = "count the domain's tokens with main == 0 and some carrier > 0, divided by the domain's tokens (labels.sum())"
    return [
        ("you divided by every token, not by the domain's tokens: the rate is a share of the domain", fix,
         right.sum() / len(acts)),
        ("you counted the tokens where the main feature is silent, whatever else fires: that is 1 - its recall, "
         "not absorption", "also require a feature that carries the direction to fire there", silent.mean()),
        ("you counted tokens where a carrier fires even where the main feature fires too: firing beside the main "
         "feature is not absorption", "require the main feature to be silent (activation 0) on the token",
         fires.mean()),
        ("you also counted features pointing AWAY from the domain (negative cosine): a feature carries the "
         "direction when its cosine is at least min_cos, not its absolute value", "cos >= min_cos, with its sign",
         (silent & (dom[:, both_signs] > 0).any(1)).mean()),
        ("you compared raw dot products with min_cos: normalise each decoder row (and the direction) to unit "
         "length first, or a long row passes with a small angle", "decoder / norm(decoder, axis=1, keepdims=True)",
         (silent & (dom[:, raw] > 0).any(1)).mean()),
        ("you let any other feature absorb: only features whose decoder carries the domain's direction count",
         "keep the features with cosine >= min_cos (the main one left out)",
         (silent & (dom[:, others] > 0).any(1)).mean()),
        ("you divided by the tokens where the main feature is silent: the rate is a share of all the domain's "
         "tokens", fix, right.sum() / max(1, silent.sum())),
        ("you returned a count of tokens, not a share", fix, float(right.sum())),
        ("you counted an activation of 0 as firing: a feature fires where its activation is > 0",
         "silent means == 0, firing means > 0", 0.0),
        ("you used the tokens outside the domain (labels False): absorption is measured on the domain's tokens",
         fix, ((off[:, main] <= 0) & (off[:, carriers] > 0).any(1)).mean()),
    ]


def _number(out) -> float:
    if torch.is_tensor(out) or isinstance(out, np.ndarray):
        if (out.numel() if torch.is_tensor(out) else out.size) != 1:
            raise _Wrong(f"return one number, got an array of shape {tuple(out.shape)}: the rate is one share")
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, (int, float, np.floating, np.integer)):
        raise _Wrong(f"return a number (a share between 0 and 1), got {type(out).__name__}")
    return float(out)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 + 1e-6 * abs(b)


def check_absorption_rate(fn) -> CheckResult:
    """08.1: ``fn(feature_acts, labels, main, decoder, direction, min_cos=0.5)`` -> the absorption rate."""
    def test(fn):
        acts, labels, main, decoder, direction = _planted()
        want = reference_absorption_rate(acts, labels, main, decoder, direction)
        got = _number(_call(fn, acts.copy(), labels.copy(), main, decoder.copy(), direction.copy(), 0.5))
        if not _same(got, want):
            for what, fix, value in _mistakes(acts, labels, main, decoder, direction):
                if _same(got, float(value)):
                    raise _Wrong(what, fix)
            raise _Wrong(f"you returned {got:.4g}, the rate on the planted data is {want:.4g}", f"the rule: {RULE}")
        # a second, random case: tokens shuffled, another main feature, the threshold moved
        g = np.random.default_rng(8)
        n, f, d = 300, 12, 6
        acts2 = np.where(g.random((n, f)) < 0.3, g.random((n, f)) + 0.1, 0.0)
        labels2 = g.random(n) < 0.4
        decoder2 = g.normal(size=(f, d)) * g.uniform(0.5, 3, size=(f, 1))
        direction2 = decoder2[3] + 0.5 * g.normal(size=d)
        want2 = reference_absorption_rate(acts2, labels2, 3, decoder2, direction2, 0.3)
        got2 = _number(_call(fn, acts2.copy(), labels2.copy(), 3, decoder2.copy(), direction2.copy(), 0.3))
        if not _same(got2, want2):
            raise _Wrong(f"right on the planted data, but on random data (main feature 3, min_cos 0.3) you returned "
                         f"{got2:.4g} against {want2:.4g}: use the arguments `main` and `min_cos`, not fixed numbers",
                         f"the rule: {RULE}")
        return (f"absorption is {want:.2f} on the planted data: the domain's tokens where the main feature is silent "
                f"and a feature carrying the domain's direction fires instead.")
    return _run("08.1", fn, test)
