"""The superposition notebook's checks: every right answer passes, every known wrong answer gets its named message.

The wrong answers are written here as a student would write them (loops, einsum, numpy), not taken
from the checks' own mistake tables, so a table that computes a mistake wrongly fails here.
"""
import numpy as np
import pytest
import torch

from mono_utils.core import toy
from mono_utils.lessons import checks, toy_checks
from mono_utils.lessons.toy_checks import check_dimensionality, check_superposition, check_toy_forward


# ---------------------------------------------------------------- right answers, several ways
def fwd_right(x, W, b):
    return torch.relu(x @ W.T @ W + b)


def fwd_einsum(x, W, b):
    h = torch.einsum("mn,bn->bm", W, x)
    return torch.clamp(torch.einsum("mn,bm->bn", W, h) + b, min=0)


def fwd_numpy(x, W, b):
    return np.maximum(x.numpy() @ W.numpy().T @ W.numpy() + b.numpy(), 0)


def sup_right(W):
    unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
    P = (unit.T @ W) ** 2
    return P.sum(1) - P.diagonal()


def sup_loops(W):
    n = W.shape[1]
    out = torch.zeros(n, dtype=W.dtype)
    for i in range(n):
        norm = W[:, i].norm()
        if norm < 1e-9:
            continue
        for j in range(n):
            if j != i:
                out[i] += (W[:, i] @ W[:, j] / norm) ** 2
    return out


def dim_right(W):
    unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
    return W.norm(dim=0) ** 2 / ((unit.T @ W) ** 2).sum(1).clamp_min(1e-8)


def dim_loops(W):
    out = []
    for i in range(W.shape[1]):
        wi = W[:, i]
        if wi.norm() == 0:
            out.append(0.0)
            continue
        denom = sum(float((wi / wi.norm()) @ W[:, j]) ** 2 for j in range(W.shape[1]))
        out.append(float(wi.norm()) ** 2 / denom)
    return torch.tensor(out)


@pytest.mark.parametrize("check, fn", [
    (check_toy_forward, fwd_right), (check_toy_forward, fwd_einsum), (check_toy_forward, fwd_numpy),
    (check_superposition, sup_right), (check_superposition, sup_loops),
    (check_superposition, lambda W: toy.superposition(W)),
    (check_dimensionality, dim_right), (check_dimensionality, dim_loops),
    (check_dimensionality, lambda W: toy.feature_dimensionality(W)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_right_answers_pass(check, fn):
    r = check(fn)
    assert r.ok, r.message


# ---------------------------------------------------------------- wrong answers, each with its message
def _unit(W):
    return W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)


def _not_written(*_):
    raise NotImplementedError


WRONG = [
    # 00.0a the forward pass
    ("00.0a", check_toy_forward, lambda x, W, b: x @ W.T @ W + b, "no ReLU"),
    ("00.0a", check_toy_forward, lambda x, W, b: torch.relu(x @ W.T @ W), "forgot the bias"),
    ("00.0a", check_toy_forward, lambda x, W, b: torch.relu(x @ W.T @ W) + b, "bias after the ReLU"),
    ("00.0a", check_toy_forward, lambda x, W, b: torch.relu(x @ W.T @ W - b), "subtracted the bias"),
    ("00.0a", check_toy_forward, lambda x, W, b: torch.relu(torch.relu(x @ W.T) @ W + b), "ReLU on the hidden"),
    ("00.0a", check_toy_forward, lambda x, W, b: x @ W.T, "hidden activations h"),
    ("00.0a", check_toy_forward, lambda x, W, b: torch.relu(W.T @ W @ x.T + b[:, None]), "transposed"),
    ("00.0a", check_toy_forward, lambda x, W, b: torch.relu(x @ W.T @ W + b)[:, :3], "shape"),
    ("00.0a", check_toy_forward, lambda x, W, b: torch.relu(x @ _unit(W).T @ _unit(W) + b), "wrong values"),
    ("00.0a", check_toy_forward, lambda x, W, b: x @ (W @ W.T), "raised"),
    ("00.0a", check_toy_forward, _not_written, "not written yet"),
    # 00.0b the superposition measure
    ("00.0b", check_superposition, lambda W: ((_unit(W).T @ W) ** 2).sum(1), "included the feature itself"),
    ("00.0b", check_superposition, lambda W: ((W.T @ W) ** 2).sum(1) - (W.T @ W).diagonal() ** 2,
     "did not normalise W_i"),
    ("00.0b", check_superposition, lambda W: ((_unit(W).T @ _unit(W)) ** 2).sum(1)
     - ((_unit(W).T @ _unit(W)) ** 2).diagonal(), "normalised W_j too"),
    ("00.0b", check_superposition, lambda W: (_unit(W).T @ W).sum(1) - (_unit(W).T @ W).diagonal(),
     "without squaring"),
    ("00.0b", check_superposition, lambda W: (_unit(W).T @ W).abs().sum(1) - (_unit(W).T @ W).diagonal().abs(),
     "absolute values"),
    ("00.0b", check_superposition, lambda W: sup_right(W).sqrt(), "square root"),
    ("00.0b", check_superposition, lambda W: sup_right(W.T), "one per hidden dimension"),
    ("00.0b", check_superposition, lambda W: (_unit(W).T @ W) ** 2, "matrix"),
    ("00.0b", check_superposition,
     lambda W: ((W / W.norm(dim=0)).T @ W).pow(2).sum(1) - ((W / W.norm(dim=0)).T @ W).pow(2).diagonal(),
     "norm of 0"),
    ("00.0b", check_superposition, lambda W: sup_right(W) * 2, "wrong values"),
    # 00.0c feature dimensionality
    ("00.0c", check_dimensionality, lambda W: ((_unit(W).T @ W) ** 2).sum(1) / (W.norm(dim=0) ** 2).clamp_min(1e-8),
     "upside down"),
    ("00.0c", check_dimensionality, lambda W: W.norm(dim=0) ** 2 / (sup_right(W)),
     "left feature i out"),
    ("00.0c", check_dimensionality, lambda W: W.norm(dim=0) / ((_unit(W).T @ W) ** 2).sum(1).clamp_min(1e-8),
     "not squared"),
    ("00.0c", check_dimensionality, lambda W: W.norm(dim=0) ** 2 / ((W.T @ W) ** 2).sum(1).clamp_min(1e-8),
     "did not normalise W_i"),
    ("00.0c", check_dimensionality,
     lambda W: W.norm(dim=0) ** 2 / ((_unit(W).T @ _unit(W)) ** 2).sum(1).clamp_min(1e-8), "normalised W_j"),
    ("00.0c", check_dimensionality, lambda W: W.shape[0] / (W ** 2).sum(), "one number"),
    ("00.0c", check_dimensionality, lambda W: dim_right(W.T), "one per hidden dimension"),
    ("00.0c", check_dimensionality,
     lambda W: W.norm(dim=0) ** 2 / (((W / W.norm(dim=0)).T @ W) ** 2).sum(1), "norm of 0"),
    ("00.0c", check_dimensionality, lambda W: dim_right(W) + 0.1, "wrong values"),
    ("00.0c", check_dimensionality, lambda W: [1.0] * W.shape[1], "should be a tensor"),
    ("00.0c", check_dimensionality, 3.0, "expected a function"),
]


@pytest.mark.parametrize("exercise, check, fn, message", WRONG, ids=[f"{e}-{m}" for e, _, _, m in WRONG])
def test_wrong_answers_get_their_named_message(exercise, check, fn, message):
    r = check(fn)
    assert not r.ok, f"Exercise {exercise}: a wrong answer ({message}) passed"
    assert message in r.message, f"Exercise {exercise}: expected {message!r} in: {r.message}"
    assert r.exercise == exercise


def test_no_known_mistake_equals_the_right_answer():
    """A mistake table entry that coincides with the reference would make a right answer fail (or be misnamed)."""
    x, W, b = toy_checks._forward_data()
    right = torch.relu(x @ W.T @ W + b)
    for what, _, value in toy_checks.forward_mistakes(x, W, b):
        assert value.shape != right.shape or not torch.allclose(value, right, atol=1e-3), what
    Wt = toy_checks._weights()
    keep = torch.arange(Wt.shape[1]) != toy_checks.ZERO_FEATURE
    for table, ref in ((toy_checks.superposition_mistakes, toy.superposition),
                       (toy_checks.dimensionality_mistakes, toy.feature_dimensionality)):
        want = ref(Wt.float()).double()
        for what, _, value in table(Wt):
            assert not torch.allclose(value[keep], want[keep], atol=1e-3), what


def test_graded_use_hides_the_formula_and_strict_raises(monkeypatch):
    wrong = lambda W: ((_unit(W).T @ W) ** 2).sum(1)  # noqa: E731 - includes j = i
    shown = check_superposition(wrong).message
    assert "sum over j" in shown
    checks.set_graded(True)
    try:
        hidden = check_superposition(wrong).message
    finally:
        checks.set_graded(None)
    assert "included the feature itself" in hidden and "sum over j" not in hidden and "Ŵ" not in hidden
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    with pytest.raises(checks.ExerciseFailed, match="00.0b"):
        check_superposition(wrong)


def test_apply_verdict_says_whether_it_matches():
    W = toy_checks._weights().float()
    ok = toy_checks.apply_verdict("00.0b", toy.superposition(W), toy.superposition(W), "the measure")
    assert ok.ok and "matches" in ok.message and isinstance(ok, checks.Verdict)
    assert "on the real data" in repr(ok)
    bad = toy_checks.apply_verdict("00.0b", toy.superposition(W) + 0.5, toy.superposition(W), "the measure")
    assert not bad.ok and "differs" in bad.message
    shape = toy_checks.apply_verdict("00.0b", toy.superposition(W)[:3], toy.superposition(W), "the measure")
    assert not shape.ok and "shape" in shape.message
