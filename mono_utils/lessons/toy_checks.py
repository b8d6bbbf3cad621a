"""Checks for the exercises of the superposition notebook (``notebooks/00_intro_superposition.ipynb``).

Each ``check_*`` runs the student's function on small hand-made weights (no training, milliseconds)
and compares it with the reference in :mod:`mono_utils.core.toy`. A wrong answer is compared with
the output of every known mistake of that exercise (``MISTAKES_*``, most specific first), so its
message names the mistake; in graded use (:func:`mono_utils.lessons.checks.set_graded`) the message
keeps what is off and leaves out the formula that fixes it. The results are the same green or red
boxes as notebook 01's (:class:`mono_utils.lessons.checks.CheckResult`), and ``MONO_LESSONS_STRICT=1``
makes a failed check raise.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core import toy
# the machinery of every check (the time limit, the named return problems, strict mode) is checks.py's
from .checks import CheckResult, ExerciseFailed, Verdict, _call, _run, _strict, _Wrong


def _tensor(out, what: str) -> torch.Tensor:
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(out)
    if not torch.is_tensor(out):
        raise _Wrong(f"{what} should be a tensor, got {type(out).__name__}")
    return out.detach().double()


def _same(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    b = torch.as_tensor(b, dtype=torch.float64)
    if tuple(a.shape) != tuple(b.shape):
        return False
    both_nan = torch.isnan(a) & torch.isnan(b)
    return bool(torch.where(both_nan, True, torch.isclose(a, b, atol=tol, rtol=tol)).all())


def _known_mistake(got: torch.Tensor, mistakes, skip: int | None = None) -> None:
    """Raise the message of the first mistake whose output ``got`` equals (leaving out feature ``skip``,
    the dropped one, where a guarded and an unguarded version of one mistake differ: 0 against NaN)."""
    keep = torch.ones(got.shape[-1] if got.ndim else 1, dtype=torch.bool)
    if skip is not None and got.ndim == 1 and len(got) > skip:
        keep[skip] = False
    for what, fix, value in mistakes:
        value = torch.as_tensor(value, dtype=torch.float64)
        if got.ndim == 1 and value.ndim == 1 and len(value) == len(got):
            hit = _same(got[keep], value[keep])
        else:
            hit = _same(got, value)
        if hit:
            raise _Wrong(what, fix)


def _nonfinite(got: torch.Tensor, zero_feature: int) -> None:
    bad = (~torch.isfinite(got)).nonzero().flatten().tolist()
    if not bad:
        return
    if bad == [zero_feature]:
        raise _Wrong(f"feature {zero_feature} has a norm of 0 (the model dropped it) and your answer is "
                     f"{float(got[zero_feature])} there: 0 / 0",
                     "divide by the norm clamped away from zero, e.g. norm.clamp_min(1e-8), so a dropped "
                     "feature gets 0")
    raise _Wrong(f"your answer is not finite (inf or NaN) for features {bad}",
                 "a division by a sum that can be 0? Only the feature of norm 0 may need a guard")


# ---------------------------------------------------------------- shared test weights
def _weights() -> torch.Tensor:
    """W [m=3, n=7], features as columns: an antipodal pair (norms 1 and 0.8) on axis 0, a triangle in the
    plane of axes 1-2, a dropped feature (norm 0), and a weak feature (norm 0.3) on the pair's axis. Norms
    differ, so a normalisation in the wrong place changes the answer; every width differs (3 rows, 7
    columns), so a transposed answer shows in its shape."""
    c, s = math.cos(2 * math.pi / 3), math.sin(2 * math.pi / 3)
    cols = [[1.0, 0, 0], [-0.8, 0, 0],                        # digon
            [0, 1.0, 0], [0, c, s], [0, c, -s],               # triangle
            [0, 0, 0],                                        # not represented
            [0.3, 0, 0]]                                      # a weak feature beside the pair
    return torch.tensor(cols, dtype=torch.float64).T


ZERO_FEATURE = 5


def _unit_cols(W):
    return W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)


# ---------------------------------------------------------------- 00.0a the forward pass
def _forward_data():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(3, 7, generator=g, dtype=torch.float64) * 0.6
    b = torch.tensor([-0.3, 0.2, -0.1, 0.4, -0.6, 0.1, -0.2], dtype=torch.float64)
    x = torch.rand(6, 7, generator=g, dtype=torch.float64) * (torch.rand(6, 7, generator=g) < 0.5)
    return x, W, b


def forward_mistakes(x, W, b) -> list[tuple[str, str, torch.Tensor]]:
    """(what is off, the fix, the output that mistake gives) for the known wrong forward passes."""
    h = x @ W.T
    pre = h @ W
    fix = "x' = ReLU(x Wᵀ W + b): h = x @ W.T, then ReLU(h @ W + b)"
    return [
        ("you applied no ReLU (some outputs are negative)", fix, pre + b),
        ("you forgot the bias b", fix, torch.relu(pre)),
        ("you added the bias after the ReLU; it belongs inside", fix, torch.relu(pre) + b),
        ("you subtracted the bias; the model adds it", fix, torch.relu(pre - b)),
        ("you put a ReLU on the hidden layer too; h = W x is linear (only the output has a ReLU)", fix,
         torch.relu(torch.relu(h) @ W + b)),
        ("you returned the hidden activations h = x Wᵀ ([batch, m]), not the reconstruction", "map h back with W: "
         "ReLU(h @ W + b)", h),
        ("your output is transposed ([n, batch])", "keep one row per input, [batch, n]", torch.relu(pre + b).T),
    ]


def check_toy_forward(fn) -> CheckResult:
    """00.0a: ``fn(x, W, b)`` -> ReLU(x Wᵀ W + b), for x [batch, n], W [m, n], b [n]."""
    def test(fn):
        x, W, b = _forward_data()
        want = torch.relu(x @ W.T @ W + b)
        got = _tensor(_call(fn, x.clone(), W.clone(), b.clone()), "the output")
        _known_mistake(got, forward_mistakes(x, W, b))
        if tuple(got.shape) != tuple(want.shape):
            raise _Wrong(f"the output has shape {tuple(got.shape)} but should have {tuple(want.shape)} = [batch, n]",
                         "x is [batch, n] and W is [m, n]: x @ W.T is [batch, m], and @ W brings it back to n")
        if (got < 0).any():
            raise _Wrong("some outputs are negative, but a ReLU's never are", "x' = ReLU(x Wᵀ W + b)")
        if not _same(got, want):
            raise _Wrong(f"right shape, wrong values (off by up to {float((got - want).abs().max()):.3g})",
                         "x' = ReLU(x @ W.T @ W + b), with W and b as given (not normalised, not transposed)")
        return (f"shape {tuple(got.shape)} = [batch, n]: {int((want == 0).sum())} of {want.numel()} outputs are "
                f"exactly 0, where the ReLU cut the interference of other features below the negative bias.")
    return _run("00.0a", fn, test)


# ---------------------------------------------------------------- 00.0b the superposition measure
def superposition_mistakes(W) -> list[tuple[str, str, torch.Tensor]]:
    unit = _unit_cols(W)
    P = unit.T @ W                              # P[i, j] = Ŵ_i · W_j
    off = ~torch.eye(W.shape[1], dtype=torch.bool)
    fix = "sum over j ≠ i of (Ŵ_i · W_j)², with Ŵ_i = W_i / ||W_i|| (columns of W)"
    raw = W.T @ W
    both = unit.T @ unit
    return [
        ("you included the feature itself (j = i), which adds ||W_i||² to every feature", fix,
         P.pow(2).sum(1)),
        ("you did not normalise W_i: (W_i · W_j)² grows with feature i's own norm", fix,
         (raw.pow(2) * off).sum(1)),
        ("you normalised W_j too: the other features count with their norms (a weak one interferes little)", fix,
         (both.pow(2) * off).sum(1)),
        ("you summed the dot products without squaring them, so opposite directions cancel", fix,
         (P * off).sum(1)),
        ("you summed absolute values instead of squares", fix, (P.abs() * off).sum(1)),
        ("you took the square root of the sum (a norm); the measure is the sum of squares itself", fix,
         (P.pow(2) * off).sum(1).sqrt()),
    ]


def check_superposition(fn) -> CheckResult:
    """00.0b: ``fn(W)`` -> [n]: sum_{j != i} (W_i/||W_i|| . W_j)^2 for W [m, n] (features as columns)."""
    def test(fn):
        W = _weights()
        want = toy.superposition(W.float()).double()
        got = _tensor(_call(fn, W.clone()), "the measure")
        m, n = W.shape
        if got.ndim == 1 and len(got) == m:
            raise _Wrong(f"you returned {m} values, one per hidden dimension (the rows of W); features are the "
                         f"columns", f"one value per feature, [n] = [{n}]: work with W[:, i] or W.T")
        if got.ndim == 2:
            raise _Wrong(f"you returned a matrix {tuple(got.shape)}, the pairwise terms", "sum over j ≠ i for each i")
        if tuple(got.shape) != (n,):
            raise _Wrong(f"the measure has shape {tuple(got.shape)} but should have ({n},), one value per feature")
        _known_mistake(got, superposition_mistakes(W), skip=ZERO_FEATURE)
        _nonfinite(got, ZERO_FEATURE)
        if not _same(got, want):
            raise _Wrong(f"wrong values (off by up to {float((got - want).abs().max()):.3g}, e.g. feature "
                         f"{int((got - want).abs().argmax())}: yours {float(got[(got - want).abs().argmax()]):.3g})",
                         "sum over j ≠ i of (Ŵ_i · W_j)², Ŵ_i = W_i / ||W_i||; a feature of norm 0 gets 0")
        return (f"the triangle's features get {want[2]:.2f} each (two others at 120°: 2 cos² 120° = 0.5), the pair "
                f"{want[0]:.2f} and {want[1]:.2f} (the other's norm squared plus the weak feature's 0.09), the "
                f"dropped feature 0.")
    return _run("00.0b", fn, test)


# ---------------------------------------------------------------- 00.0c feature dimensionality
def dimensionality_mistakes(W) -> list[tuple[str, str, torch.Tensor]]:
    unit = _unit_cols(W)
    P2 = (unit.T @ W).pow(2)
    norm2 = W.norm(dim=0).pow(2)
    off = ~torch.eye(W.shape[1], dtype=torch.bool)
    fix = "D_i = ||W_i||² / sum over all j (feature i included) of (Ŵ_i · W_j)²"
    return [
        ("your fraction is upside down (the sum over j on top)", fix, P2.sum(1) / norm2.clamp_min(1e-8)),
        ("you left feature i out of the sum in the denominator; it runs over all j, i included", fix,
         norm2 / (P2 * off).sum(1).clamp_min(1e-8)),
        ("the numerator is ||W_i||, not squared", fix, W.norm(dim=0) / P2.sum(1).clamp_min(1e-8)),
        ("you did not normalise W_i in the denominator: (W_i · W_j)² instead of (Ŵ_i · W_j)²", fix,
         norm2 / (W.T @ W).pow(2).sum(1).clamp_min(1e-8)),
        ("you normalised W_j in the denominator too: the other features count with their norms", fix,
         norm2 / (unit.T @ unit).pow(2).sum(1).clamp_min(1e-8)),
    ]


def check_dimensionality(fn) -> CheckResult:
    """00.0c: ``fn(W)`` -> [n]: D_i = ||W_i||^2 / sum_j (W_i/||W_i|| . W_j)^2 for W [m, n]."""
    def test(fn):
        W = _weights()
        want = toy.feature_dimensionality(W.float()).double()
        got = _tensor(_call(fn, W.clone()), "the dimensionality")
        m, n = W.shape
        if got.numel() == 1:
            raise _Wrong(f"you returned one number ({float(got.reshape(-1)[0]):.3g}): m / ||W||_F² is the model's "
                         f"average, dimensions per feature", f"return one D_i per feature, [n] = [{n}]")
        if got.ndim == 1 and len(got) == m:
            raise _Wrong(f"you returned {m} values, one per hidden dimension; features are the columns of W",
                         f"one value per feature, [n] = [{n}]")
        if tuple(got.shape) != (n,):
            raise _Wrong(f"the dimensionality has shape {tuple(got.shape)} but should have ({n},), one per feature")
        _known_mistake(got, dimensionality_mistakes(W), skip=ZERO_FEATURE)
        _nonfinite(got, ZERO_FEATURE)
        if not _same(got, want):
            raise _Wrong(f"wrong values (off by up to {float((got - want).abs().max()):.3g})",
                         "D_i = ||W_i||² / sum over all j of (Ŵ_i · W_j)², Ŵ_i = W_i / ||W_i||; norm 0 gives 0")
        return (f"the triangle's features get {want[2]:.3f} = 2/3 each, the pair {want[0]:.2f} and {want[1]:.2f} "
                f"(an exact digon of equal norms would give 1/2 each; unequal norms and the weak feature shift "
                f"them), the dropped feature 0.")
    return _run("00.0c", fn, test)


def apply_verdict(exercise: str, yours, reference, what: str, tol: float = 1e-4) -> Verdict:
    """An apply cell's last line: the student's function on the trained toy model against the package's
    (:class:`mono_utils.lessons.checks.Verdict`, as every notebook's apply cells)."""
    try:
        got = _tensor(yours, what)
    except _Wrong as w:
        return Verdict(exercise, False, str(w))
    ref = torch.as_tensor(reference).detach().double()
    if tuple(got.shape) != tuple(ref.shape):
        ok, msg = False, f"{what} has shape {tuple(got.shape)}, the package's {tuple(ref.shape)}"
    else:
        diff = float(torch.nan_to_num((got - ref).abs(), nan=float("inf")).max()) if ref.numel() else 0.0
        ok = diff <= tol * max(1.0, float(ref.abs().max()))
        msg = (f"{what} matches mono_utils.core.toy (largest difference {diff:.1g})" if ok else
               f"{what} differs from mono_utils.core.toy by up to {diff:.3g}: run the check above, it names the "
               f"mistake when it knows it")
    result = Verdict(exercise, ok, msg)
    if not ok and _strict():
        raise ExerciseFailed(exercise, msg)
    return result
