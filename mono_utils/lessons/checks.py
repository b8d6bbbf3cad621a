"""Checks for the notebooks' exercises: run the student's function on small synthetic data.

Every ``check_*`` takes the student's function, calls it on a few seeded, hand-made inputs (no
artifact store, no training: each check takes well under a second, the one for notebook 00
builds a tiny random model once) and compares with the answer. When the answer is wrong it
says *what* is wrong, as far as a check can tell: a wrong shape, a forgotten bias or error
term, the wrong normalisation, an axis swapped... The result shows as a green or red box in a
notebook (``CheckResult``); with ``MONO_LESSONS_STRICT=1`` a failed check raises
:class:`ExerciseFailed` instead (the tests use it).

A wrong answer is compared with the output of every known mistake of that exercise
(``_known_mistake``; the table of them is ``tests/lessons/wrong_answers.py``), so its message names
the mistake; each message is what is off plus, unless graded (:func:`set_graded`), the formula that
fixes it. :func:`verdict` ends each apply cell: the student's function on the real data against
the package's reference.
"""
from __future__ import annotations

import functools
import html
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..autointerp.protocol import weighted_pearson, weighted_rank, weighted_spearman
from ..core.metrics import fvu as reference_fvu
from ..core.metrics import loss_recovered as reference_loss_recovered
from ..core.model import HOOK_MLP_POST, ModelConfig, build_model, mlp_post
from ..core.sae import SAEConfig, SparseAutoencoder
from .guard import TooSlow, call_with_limit, returned_problem

STRICT_ENV = "MONO_LESSONS_STRICT"
NOT_WRITTEN = ("not written yet: the function still raises NotImplementedError. Replace that line "
               "with your code (the hint below helps; the solution is folded under it)")


class ExerciseFailed(AssertionError):
    """A failed check, raised instead of displayed when ``MONO_LESSONS_STRICT=1``."""

    def __init__(self, exercise: str, message: str):
        super().__init__(f"Exercise {exercise}: {message}")
        self.exercise, self.message = exercise, message


class _Wrong(Exception):
    """Raised inside a check: ``what`` is off (always shown) and ``fix``, the reference formula or
    the way to it (left out in graded use, :func:`set_graded`)."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what, self.fix = what, fix

    def __str__(self) -> str:
        return self.what if (graded() or not self.fix) else f"{self.what}: {self.fix}"


@dataclass
class CheckResult:
    exercise: str
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        mark = "✔ correct" if self.ok else "✘ not yet"
        return f"Exercise {self.exercise}: {mark}. {self.message}"

    def _repr_html_(self) -> str:
        colour, bg, cls = (("#1b7f3b", "#e9f7ee", "mono-check-ok") if self.ok else
                           ("#b3261e", "#fdecea", "mono-check-fail"))
        mark = "✔ correct" if self.ok else "✘ not yet"
        return (f"<div class='mono-check {cls}' style='border-left:4px solid {colour};background:{bg};"
                f"padding:6px 10px;margin:4px 0;font-family:sans-serif'><b style='color:{colour}'>"
                f"Exercise {html.escape(self.exercise)}: {mark}.</b> {html.escape(self.message)}</div>")


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in {"1", "true", "yes"}


def _run(exercise: str, fn, test) -> CheckResult:
    """Run ``test(fn)``; a ``_Wrong`` or any error of the student's code becomes the message."""
    if not callable(fn):
        result = CheckResult(exercise, False, f"expected a function, got {type(fn).__name__}: pass the "
                                              f"function itself (its name without parentheses)")
    else:
        try:
            result = CheckResult(exercise, True, test(fn))
        except _Wrong as w:
            result = CheckResult(exercise, False, str(w))
    if not result.ok and _strict():
        raise ExerciseFailed(exercise, result.message)
    return result


def _call(fn, *args, **kwargs):
    """Call the student's function (under a time limit); turn its exceptions, a loop that never ends, and a
    result that is not real numbers (complex, an array of objects) into a message that names them."""
    try:
        out = call_with_limit(fn, args, kwargs)
    except TooSlow as e:
        raise _Wrong(str(e)) from None
    except NotImplementedError:
        raise _Wrong(NOT_WRITTEN) from None
    except Exception as e:  # noqa: BLE001 - any error of the student's code is reported, not raised
        shapes = ", ".join(str(tuple(a.shape)) if hasattr(a, "shape") else type(a).__name__ for a in args)
        raise _Wrong(f"your function raised {type(e).__name__}: {e} (called with {shapes})") from None
    problem = returned_problem(out)
    if problem:
        raise _Wrong(problem)
    return out


def _as_tensor(out, what: str) -> torch.Tensor:
    if isinstance(out, np.ndarray):
        return torch.from_numpy(out)
    if not torch.is_tensor(out):
        raise _Wrong(f"{what} should be a tensor, got {type(out).__name__}")
    return out.detach()


def _as_float(out, what: str) -> float:
    if torch.is_tensor(out) or isinstance(out, np.ndarray):
        if (out.numel() if torch.is_tensor(out) else out.size) != 1:
            raise _Wrong(f"{what} should be one number, got an array of shape {tuple(out.shape)}: "
                         f"reduce it (sum or mean) to a scalar")
        return float(out.item())
    if isinstance(out, (int, float, np.floating, np.integer)) and not isinstance(out, bool):
        return float(out)
    raise _Wrong(f"{what} should be a number, got {type(out).__name__}")


def _shape(t: torch.Tensor, want: tuple, what: str, meaning: str) -> None:
    if tuple(t.shape) != tuple(want):
        raise _Wrong(f"{what} has shape {tuple(t.shape)} but should have {tuple(want)} = {meaning}")


def _close(a, b, tol: float = 1e-4) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=tol, rtol=tol))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- graded use, known mistakes, verdicts
GRADED_ENV = "MONO_LESSONS_GRADED"
_graded_override: bool | None = None


def set_graded(on: bool | None = True) -> None:
    """Graded use: a failed check says what is off, never the reference formula that fixes it.

    The graded student notebooks (``python -m mono_utils lessons --graded``) call this first;
    ``MONO_LESSONS_GRADED=1`` does the same for a whole session.
    """
    global _graded_override
    _graded_override = None if on is None else bool(on)   # None: follow MONO_LESSONS_GRADED again


def graded() -> bool:
    if _graded_override is not None:
        return _graded_override
    return os.environ.get(GRADED_ENV, "").lower() in {"1", "true", "yes"}


def _scalar_same(a: float, b: float, rel: float = 2e-5, tiny: float = 1e-7) -> bool:
    """Equal up to float32 rounding of the student's code (the references are float64)."""
    a, b = float(a), float(b)
    return bool(np.isfinite(a) and np.isfinite(b) and abs(a - b) <= max(tiny, rel * max(abs(a), abs(b))))


def _known_mistake(got, mistakes, same) -> None:
    """Raise the message of the first known mistake whose output ``got`` equals.

    ``mistakes``: (what is off, how to fix it, the output that mistake gives) triples, most
    specific first; ``same(got, output)`` compares. Nothing is raised when none matches.
    """
    for what, fix, value in mistakes:
        try:
            hit = same(got, value)
        except (RuntimeError, ValueError, TypeError):   # a mistake's output of another shape
            hit = False
        if hit:
            raise _Wrong(what, fix)


def _ratio_mistake(got: float, want: float, n: int, d: int) -> str | None:
    """A scalar off by a factor built from the data's sizes: a mean on one side and a sum on the other."""
    if not (np.isfinite(got) and want):
        return None
    factors = {(n - 1) / n: "n-1 variance", n / (n - 1): "n-1 variance",
               n: f"{n} (the number of tokens)", 1 / n: f"1/{n} (the number of tokens)",
               d: f"{d} (the number of dimensions)", 1 / d: f"1/{d} (the number of dimensions)",
               n * d: f"{n * d} (the number of elements)", 1 / (n * d): f"1/{n * d} (the number of elements)"}
    for f, name in factors.items():
        if _scalar_same(got, want * f):
            return name
    return None


@dataclass
class Verdict(CheckResult):
    """The verdict of an apply cell: the student's function on the real data against the reference."""
    on: str = "the real data"

    def __repr__(self) -> str:
        mark = "✔ it matches the reference" if self.ok else "✘ it does not match the reference"
        return f"Exercise {self.exercise} on {self.on}: {mark}. {self.message}"

    def _repr_html_(self) -> str:
        colour, bg, cls = (("#1b7f3b", "#e9f7ee", "mono-check-ok") if self.ok else
                           ("#b3261e", "#fdecea", "mono-check-fail"))
        mark = "✔ it matches the reference" if self.ok else "✘ it does not match the reference"
        return (f"<div class='mono-check mono-verdict {cls}' style='border-left:4px solid {colour};"
                f"background:{bg};padding:6px 10px;margin:4px 0;font-family:sans-serif'><b style='color:{colour}'>"
                f"Exercise {html.escape(self.exercise)} on {html.escape(self.on)}: {mark}.</b> "
                f"{html.escape(self.message)}</div>")


def _to_array(x):
    if torch.is_tensor(x):
        x = x.detach().cpu()
        return x.numpy() if not x.is_complex() else x.resolve_conj().numpy()
    return np.asarray(x)


def _compare(yours, reference, tol: float) -> tuple[bool, str]:
    """(same?, what differs or how close) for numbers, arrays, tensors and tuples of them."""
    if isinstance(reference, (tuple, list)) and not isinstance(yours, (tuple, list)):
        return False, f"expected {len(reference)} things, got one {type(yours).__name__}"
    if isinstance(reference, (tuple, list)):
        if len(yours) != len(reference):
            return False, f"expected {len(reference)} things, got {len(yours)}"
        parts = [_compare(y, r, tol) for y, r in zip(yours, reference)]
        bad = [f"item {i + 1}: {msg}" for i, (ok, msg) in enumerate(parts) if not ok]
        return (not bad), ("; ".join(bad) if bad else f"all {len(parts)} items agree, to within {tol:g}")
    if yours is None:
        return False, "your function returned None"
    try:
        y, r = _to_array(yours), _to_array(reference)
    except (TypeError, ValueError) as e:
        return False, f"could not read your result as numbers ({e})"
    if y.dtype == object or np.iscomplexobj(y):
        return False, f"your result holds {'complex numbers' if np.iscomplexobj(y) else 'Python objects'}, not real numbers"
    if y.size == 1 and r.size == 1:
        y, r = y.reshape(()), r.reshape(())
    if y.shape != r.shape:
        return False, f"shape {y.shape}, the reference's {r.shape}"
    y, r = y.astype(np.float64), r.astype(np.float64)
    if np.isnan(y).any() and not np.isnan(r).any():
        return False, f"{int(np.isnan(y).sum())} NaN value(s) where the reference has numbers"
    if np.issubdtype(_to_array(reference).dtype, np.integer):
        wrong = np.flatnonzero(y.ravel() != r.ravel())
        if len(wrong):
            i = int(wrong[0])
            return False, (f"{len(wrong):,} of {r.size:,} entries differ (first: entry {i}, yours {y.ravel()[i]:g}, "
                           f"the reference's {r.ravel()[i]:g})")
        return True, f"all {r.size:,} entries equal" if r.size > 1 else f"{r.item():g} on both sides"
    both = np.isnan(y) & np.isnan(r)
    diff = float(np.abs(np.where(both, 0, y - r)).max()) if r.size else 0.0
    allowed = tol * max(1.0, float(np.abs(np.where(np.isnan(r), 0, r)).max()) if r.size else 1.0)
    if not diff <= allowed:
        where = "" if r.ndim == 0 else f" (at entry {int(np.nanargmax(np.abs(y - r).ravel()))})"
        shown = f"yours {y.item():.4g}, the reference's {r.item():.4g}, " if r.ndim == 0 else ""
        return False, f"{shown}largest difference {diff:.2g}{where}, allowed {allowed:.1g}"
    return True, f"largest difference {diff:.1g}, allowed {allowed:.1g}"


def verdict(exercise: str, yours, reference, *, what: str = "your result", tol: float = 1e-4,
            mistakes: dict | None = None, on: str = "the real data") -> Verdict:
    """An apply cell's last line: does the student's result on the real data match the reference?

    ``reference`` comes from the package (or the notebook's own tables); ``mistakes`` maps a
    known mistake's description to the output it gives on the same data, so a wrong result is
    told its likely cause, not only its distance. With ``MONO_LESSONS_STRICT=1`` a mismatch raises.
    """
    ok, detail = _compare(yours, reference, tol)
    if ok:
        result = Verdict(exercise, True, f"{what} matches the reference ({detail}).", on)
    else:
        cause = next((why for why, value in (mistakes or {}).items() if _compare(yours, value, tol)[0]), None)
        said = (f"It equals what a known mistake gives: {cause}." if cause else
                "Run the check above: it names the mistake when it knows it; a check can pass while real data "
                "still shows a difference (a dtype, a device, an in-place edit).")
        result = Verdict(exercise, False, f"{what}: {detail}. {said}", on)
    if not result.ok and _strict():
        raise ExerciseFailed(exercise, result.message)
    return result


# ---------------------------------------------------------------- notebook 00
@functools.lru_cache(maxsize=1)
def _tiny_model():
    """A random one-layer model whose widths all differ, so a wrong tensor is told by its shape."""
    return build_model(ModelConfig(d_vocab=48, d_model=16, n_heads=2, d_mlp=40, n_ctx=12, seed=0))


def check_mlp_activations(fn) -> CheckResult:
    """00.1: ``fn(model, tokens)`` -> MLP activations [batch, pos, d_mlp] via ``run_with_cache``."""
    def test(fn):
        model = _tiny_model()
        tokens = torch.randint(0, 48, (3, 9), generator=_gen(0))
        want = mlp_post(model, tokens)
        out = _call(fn, model, tokens)
        if isinstance(out, tuple):
            raise _Wrong(f"you returned a tuple of {len(out)} things (the (logits, cache) pair of "
                         f"run_with_cache?)", f"return only the activations, cache['{HOOK_MLP_POST}']")
        if type(out).__name__ == "ActivationCache" or isinstance(out, dict):
            raise _Wrong("you returned the whole cache", f"index it with the hook name, cache['{HOOK_MLP_POST}']")
        out = _as_tensor(out, "the activations")
        d_vocab, d_model, d_mlp = 48, 16, 40
        if out.ndim == 3 and out.shape[-1] == d_vocab:
            raise _Wrong(f"the last dimension is {d_vocab} = the vocabulary: these are the logits",
                         f"take the MLP's activations from the cache, '{HOOK_MLP_POST}'")
        if out.ndim == 3 and out.shape[-1] == d_model:
            raise _Wrong(f"the last dimension is {d_model} = d_model: that is the residual stream or the MLP's "
                         f"output, not its neurons (width d_mlp = {d_mlp})", f"read '{HOOK_MLP_POST}'")
        if out.ndim == 2 and out.shape == (3 * 9, d_mlp):
            raise _Wrong("you flattened batch and positions", "keep the shape [batch, pos, d_mlp]")
        if out.ndim == 2 and out.shape == (3, d_mlp):
            raise _Wrong("you kept one position per context (shape [batch, d_mlp])",
                         "keep every position, [batch, pos, d_mlp]")
        if out.ndim == 3 and tuple(out.shape) == (3, d_mlp, 9):
            raise _Wrong("the dimensions are in the wrong order ([batch, d_mlp, pos])",
                         "return the cache's tensor as it is, [batch, pos, d_mlp]")
        _shape(out, want.shape, "the activations", "[batch, pos, d_mlp]")
        if not out.is_floating_point() or out.dtype in (torch.float16, torch.bfloat16):
            raise _Wrong(f"the activations have dtype {out.dtype}, which rounds them",
                         "return the cache's float32 tensor as it is")
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_pre")
        if _close(out, cache["blocks.0.mlp.hook_pre"]):
            raise _Wrong("these are the pre-activations (hook_pre: before the ReLU, with negative values)",
                         f"the neurons' activations are after it, '{HOOK_MLP_POST}'")
        if (out < 0).any():
            raise _Wrong("some values are negative, but the MLP's ReLU outputs are >= 0",
                         f"read '{HOOK_MLP_POST}'")
        if not _close(out, want):
            diff = float((out.double() - want.double()).abs().max())
            raise _Wrong(f"right shape, wrong values (off by up to {diff:.3g})",
                         "run the model given as argument on the tokens given, unchanged")
        return f"shape {tuple(out.shape)} = [batch, pos, d_mlp], the same values as the MLP's output."
    return _run("00.1", fn, test)


def _token_data():
    g = _gen(1)
    tokens = torch.randint(0, 10, (4, 16), generator=g)
    tokens[tokens == 3] = 4
    occ = [(0, 2), (0, 9), (1, 5), (2, 1), (2, 14), (3, 7)]   # token 3 occurs exactly here
    for r, p in occ:
        tokens[r, p] = 3
    acts = torch.relu(torch.randn(4, 16, 24, generator=g)) * 0.3
    for r, p in occ:
        acts[r, p, 11] = 2.0                  # fires on every occurrence: the answer
    acts[tokens == 7, 5] = 6.0                # fires most overall, but on another token
    acts[occ[0][0], occ[0][1], 17] = 5.0      # one big spike on one occurrence, low on average
    return acts, tokens


def check_top_neuron_for_token(fn) -> CheckResult:
    """00.2: ``fn(acts, tokens, token_id)`` -> the neuron with the highest mean activation on that token."""
    def test(fn):
        acts, tokens = _token_data()
        mask = tokens == 3
        means = acts[mask].mean(0)
        want = int(means.argmax())
        out = _call(fn, acts.clone(), tokens.clone(), 3)
        if (out.numel() if torch.is_tensor(out) else np.size(out) if isinstance(out, np.ndarray) else 1) != 1:
            raise _Wrong(f"you returned an array of shape {tuple(out.shape)}",
                         "return one neuron index (an int): the argmax over neurons")
        try:
            got = int(out)
        except (TypeError, ValueError):
            raise _Wrong(f"return a neuron index (an int), got {type(out).__name__}") from None
        if got == want:
            return (f"neuron {want} has the highest mean activation on token 3 ({means[want]:.2f}); "
                    f"a neuron with one big spike there (17) and one that fires most overall (5) did not fool you.")
        if not 0 <= got < acts.shape[-1]:
            raise _Wrong(f"{got} is not a neuron index (0..{acts.shape[-1] - 1}): did you take the argmax "
                         f"over positions instead of over the last (neuron) dimension?")
        if got == 5:
            raise _Wrong("neuron 5 fires most over all tokens, but not on token 3",
                         "keep only the positions where tokens == token_id")
        if got == 17:
            raise _Wrong("neuron 17 has one big spike on one occurrence of the token but is low on the others",
                         "average over the token's occurrences (mean), not the maximum")
        if got == int(means.argmin()):
            raise _Wrong(f"neuron {got} has the LOWEST mean activation on token 3", "take the argmax, not the argmin")
        if got == int(acts[mask].mean(1).argmax()):
            raise _Wrong(f"{got} is the index of one of the token's occurrences (an argmax over positions), not "
                         f"of a neuron", "average over the occurrences (dim 0), then take the argmax over neurons")
        if got == int(acts.mean(-1).flatten().argmax()):
            raise _Wrong(f"{got} is the index of a position (an argmax over positions), not of a neuron",
                         "keep the token's positions, average them (dim 0), then take the argmax over neurons")
        if got in (want - 1, want + 1):
            raise _Wrong(f"neuron {got} is one away from the answer: an off-by-one",
                         "argmax already gives a 0-based index; return it unchanged")
        raise _Wrong(f"neuron {got} has mean activation {means[got]:.2f} on token 3, neuron {want} has "
                     f"{means[want]:.2f}", "average each neuron over the positions where tokens == token_id, "
                     "then take the argmax over neurons")
    return _run("00.2", fn, test)


# ---------------------------------------------------------------- notebook 01
def _sae_data(seed: int = 2, batch: int = 16, d_in: int = 12, d_sae: int = 40):
    g = _gen(seed)
    x = torch.relu(torch.randn(batch, d_in, generator=g)) + 0.5
    W_enc = torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    b_enc = torch.randn(d_sae, generator=g) * 0.3
    b_dec = torch.randn(d_in, generator=g) + 1.0
    return x, W_enc, b_enc, W_dec, b_dec


def check_sae_forward(fn) -> CheckResult:
    """01.1a: ``fn(x, W_enc, b_enc, W_dec, b_dec)`` -> (f, x_hat) of the ReLU SAE."""
    def test(fn):
        x, W_enc, b_enc, W_dec, b_dec = _sae_data()
        pre = (x - b_dec) @ W_enc + b_enc
        f_want = torch.relu(pre)
        xhat_want = f_want @ W_dec + b_dec
        out = _call(fn, x.clone(), W_enc, b_enc, W_dec, b_dec)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise _Wrong("return two things, (f, x_hat): the feature activations and the reconstruction")
        f, x_hat = _as_tensor(out[0], "f"), _as_tensor(out[1], "x_hat")
        if tuple(f.shape) == tuple(x.shape) and tuple(x_hat.shape) == tuple(f_want.shape):
            raise _Wrong("you returned (x_hat, f)", "the order is (f, x_hat)")
        _shape(f, f_want.shape, "f", "[batch, d_sae]: one activation per feature (x @ W_enc has this shape)")
        rule = "f = ReLU((x - b_dec) @ W_enc + b_enc)"
        _known_mistake(f, [
            ("f has negative values: the ReLU is missing", rule, pre),
            ("forgot to subtract b_dec before encoding", rule, torch.relu(x @ W_enc + b_enc)),
            ("added b_dec before encoding where it is subtracted", rule, torch.relu((x + b_dec) @ W_enc + b_enc)),
            ("forgot the encoder bias b_enc", rule, torch.relu((x - b_dec) @ W_enc)),
            ("you added b_enc after the ReLU (f can then be negative)", rule, torch.relu((x - b_dec) @ W_enc) + b_enc),
            ("you subtracted b_enc", rule, torch.relu((x - b_dec) @ W_enc - b_enc)),
        ], _close)
        if (f < 0).any():
            raise _Wrong("f has negative values", "apply the ReLU last: " + rule)
        if not _close(f, f_want):
            raise _Wrong("f has the right shape but wrong values, and none of the mistakes this check knows", rule)
        _shape(x_hat, x.shape, "x_hat", "[batch, d_in], the shape of x")
        rule = "x_hat = f @ W_dec + b_dec"
        _known_mistake(x_hat, [
            ("forgot to add b_dec back to the reconstruction", rule, f_want @ W_dec),
            ("subtracted b_dec from the reconstruction where it is added", rule, f_want @ W_dec - b_dec),
            ("decoded with the encoder's transpose (W_enc.T, tied weights)", rule, f_want @ W_enc.T + b_dec),
            ("decoded the pre-activations, before the ReLU", rule, pre @ W_dec + b_dec),
        ], _close)
        if not _close(x_hat, xhat_want):
            raise _Wrong("x_hat has the right shape but wrong values, and none of the mistakes this check knows", rule)
        return f"f {tuple(f.shape)} >= 0 and x_hat {tuple(x_hat.shape)} match the paper's equations."
    return _run("01.1a", fn, test)


def check_sae_loss(fn) -> CheckResult:
    """01.1b: ``fn(x, x_hat, f, l1_coeff)`` -> MSE (mean over elements) + l1_coeff * mean over rows of sum_i f_i."""
    def test(fn):
        g = _gen(3)
        x = torch.randn(16, 12, generator=g)
        x_hat = x + 0.5 * torch.randn(16, 12, generator=g)
        f = torch.relu(torch.randn(16, 40, generator=g))
        lam = 0.25
        err = (x - x_hat).pow(2)
        want = err.mean() + lam * f.sum(-1).mean()
        got = _as_float(_call(fn, x, x_hat, f, lam), "the loss")
        if _scalar_same(got, want, rel=1e-5):
            return f"loss {got:.4f}: MSE {float(err.mean()):.4f} + lambda x L1 {lam * float(f.sum(-1).mean()):.4f}."
        l1 = f.sum(-1).mean()
        rule = "loss = (x - x_hat).pow(2).mean() + l1_coeff * f.sum(-1).mean()"
        _known_mistake(got, [
            ("the MSE is summed over the whole batch", rule, err.sum() + lam * l1),
            ("the MSE is summed over the d_in dimensions (the paper's recipe, and ours, takes the mean over "
             "all elements)", rule, err.sum(-1).mean() + lam * l1),
            ("the L1 term is a mean over features", rule, err.mean() + lam * f.mean()),
            ("the L1 term is summed over the batch too", rule, err.mean() + lam * f.sum()),
            ("the L1 penalty is missing", rule, err.mean()),
            ("the L1 penalty is not multiplied by l1_coeff", rule, err.mean() + l1),
            ("l1_coeff multiplies the MSE instead of the L1 term", rule, lam * err.mean() + l1),
            ("the L1 penalty is subtracted: a penalty is added", rule, err.mean() - lam * l1),
            ("the error is not squared", rule, (x - x_hat).abs().mean() + lam * l1),
            ("you took the square root of the MSE (an RMSE)", rule, err.mean().sqrt() + lam * l1),
            ("the penalty squares f (an L2 penalty): the paper's is L1, the sum of |f|", rule,
             err.mean() + lam * f.pow(2).sum(-1).mean()),
        ], _scalar_same)
        raise _Wrong(f"got {got:.4f}, expected {float(want):.4f}, and none of the mistakes this check knows", rule)
    return _run("01.1b", fn, test)


def check_project_decoder_grad(fn) -> CheckResult:
    """01.2: ``fn(W_dec, grad)`` -> grad without its component along each unit-norm row of W_dec."""
    def test(fn):
        _, _, _, W_dec, _ = _sae_data(4)
        grad = torch.randn(W_dec.shape, generator=_gen(5))
        W_before = W_dec.clone()
        par = (grad * W_dec).sum(1, keepdim=True) * W_dec
        want = grad - par
        out = _as_tensor(_call(fn, W_dec, grad.clone()), "the projected gradient")
        if not torch.equal(W_dec, W_before):
            raise _Wrong("your function changed W_dec: only the gradient may change")
        _shape(out, grad.shape, "the projected gradient", "[d_sae, d_in], the shape of W_dec")
        rule = "grad - (grad * W_dec).sum(1, keepdim=True) * W_dec"
        _known_mistake(out, [
            ("the gradient came back unchanged: nothing was removed", rule, grad),
            ("you returned the parallel component itself: it is to be subtracted from the gradient", rule, par),
            ("a sign error: you ADDED the component along each row, which doubles it instead of removing it",
             rule, grad + par),
            ("the result still points along the dictionary rows: you took the dot products down the COLUMNS "
             "(dim 0) where each row of the gradient goes with its own row of W_dec (dim 1)",
             rule, grad - (grad * W_dec).sum(0, keepdim=True) * W_dec),
            ("you removed from each row its components along ALL the dictionary's rows: each row loses only "
             "its component along its OWN row", rule, grad - (grad @ W_dec.T) @ W_dec),
            ("you rescaled the projected rows to unit norm: the projection keeps their length", rule,
             want / want.norm(dim=1, keepdim=True)),
            ("you projected W_dec on the gradient, not the gradient on W_dec", rule,
             W_dec - (grad * W_dec).sum(1, keepdim=True) * grad),
        ], _close)
        along = (out * W_dec).sum(1).abs().max()
        if along > 1e-4:
            raise _Wrong(f"the result still points along the dictionary rows (largest dot product with its "
                         f"row {float(along):.3f}, should be 0)", f"project each ROW: {rule}")
        if not _close(out, want):
            raise _Wrong("orthogonal to the rows, but not the projection of this gradient", rule)
        return ("every row of the gradient is now orthogonal to its dictionary row, so a small step "
                "keeps the decoder norms at 1 (to first order; the trainer renormalises after each step).")
    return _run("01.2", fn, test)


def check_fvu(fn) -> CheckResult:
    """01.3a: ``fn(x, x_hat)`` -> fraction of variance unexplained, about the mean."""
    def test(fn):
        g = _gen(6)
        n, d = 60, 8
        x = 5.0 + torch.randn(n, d, generator=g) * torch.linspace(0.2, 3.0, d)
        # a shrunk, biased reconstruction (as an L1 SAE's): x_hat's mean is not x's, so every centring differs
        x_hat = x.mean(0) + 0.8 * (x - x.mean(0)) + 0.3 * torch.randn(n, d, generator=g) + 0.25
        x64, xh64 = x.double(), x_hat.double()
        want = reference_fvu(x, x_hat)
        got = _as_float(_call(fn, x.clone(), x_hat.clone()), "FVU")
        if np.isnan(got):
            raise _Wrong("you returned nan", "divide the summed squared error by the summed squared deviation "
                         "of x from its mean, (x - x.mean(0)).pow(2).sum()")
        if _scalar_same(got, want):
            about_zero = float((x - x_hat).pow(2).sum() / x.pow(2).sum())
            return f"FVU {got:.4f} (about zero it would read {about_zero:.4f}: flattering, and wrong)."
        e = (x64 - xh64).pow(2)
        var = (x64 - x64.mean(0)).pow(2).sum()
        rule = "(x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()"
        _known_mistake(got, [
            ("you divided by the energy about zero (the sum of x squared), not the variance about the mean: "
             "activations have a large mean, so this flatters the SAE", rule, e.sum() / x64.pow(2).sum()),
            ("you returned the fraction of variance EXPLAINED (1 - FVU)", rule, 1 - want),
            ("you centred x on the reconstruction's mean (x_hat's) where the variance is x's about its "
             "OWN mean",
             rule, e.sum() / (x64 - xh64.mean(0)).pow(2).sum()),
            ("you divided by the variance of the reconstruction x_hat: divide by the variance of x", rule,
             e.sum() / (xh64 - xh64.mean(0)).pow(2).sum()),
            ("you averaged one FVU per dimension: the total squared error goes over the total variance", rule,
             (e.sum(0) / (x64 - x64.mean(0)).pow(2).sum(0)).mean()),
            ("you subtracted the mean over dimensions (per token) where the mean is over tokens, one per "
             "dimension", rule,
             e.sum() / (x64 - x64.mean(1, keepdim=True)).pow(2).sum()),
            ("you subtracted one global mean where there is one mean per dimension", rule,
             e.sum() / (x64 - x64.mean()).pow(2).sum()),
            ("you divided by torch's x.var() (one global mean, and an n-1 denominator): one mean per dimension, "
             "and the same normalisation above and below the line", rule, e.mean() / x64.var()),
            ("the variance is the n-1 (unbiased) one, e.g. torch's x.var(0), against a mean squared error over "
             "n: use the same normalisation above and below the line", rule, want * (n - 1) / n),
            ("you took a square root (a ratio of norms): FVU is a ratio of squared errors", rule, want ** 0.5),
        ], _scalar_same)
        factor = _ratio_mistake(got, want, n, d)
        if factor:
            raise _Wrong(f"your FVU is off by a factor {factor}: a mean on one side of the division and a sum "
                         f"on the other", rule)
        raise _Wrong(f"got {got:.4f}, expected {want:.4f}, and none of the mistakes this check knows", rule)
    return _run("01.3a", fn, test)


def check_loss_recovered(fn) -> CheckResult:
    """01.3b: ``fn(ce_clean, ce_sae, ce_ablated)`` -> the share of the ablation's loss the SAE recovers."""
    def test(fn):
        cases = [(3.0, 3.2, 5.0), (2.5, 2.5, 4.0), (3.8, 4.6, 4.6), (3.0, 3.5, 7.0)]
        rule = "(ce_ablated - ce_sae) / (ce_ablated - ce_clean)"
        for c in cases:
            clean, sae_ce, ablated = c
            want = reference_loss_recovered(*c)
            got = _as_float(_call(fn, *c), "loss recovered")
            if _scalar_same(got, want, rel=1e-6, tiny=1e-9):
                continue
            _known_mistake(got, [
                (f"for {c} you returned {got:.3f}, the share LOST", rule, 1 - want),
                ("you returned a percentage (90), the exercise asks a fraction (0.9)", rule, 100 * want),
                (f"for {c} you returned {got:.3f}: a sign error (the share lost, negated)", rule, want - 1),
                (f"for {c} you returned {got:.3f}: the ratio is upside down", rule,
                 (ablated - clean) / (ablated - sae_ce) if ablated != sae_ce else float("inf")),
                (f"for {c} you returned {got:.3f}: the denominator is the whole ablated loss, not the gap that "
                 f"ablation opens", rule, (ablated - sae_ce) / ablated),
                (f"for {c} you returned {got:.3f}: a ratio of the losses themselves, not of their gaps", rule,
                 clean / sae_ce),
            ], functools.partial(_scalar_same, rel=1e-6, tiny=1e-9))
            raise _Wrong(f"for ce_clean, ce_sae, ce_ablated = {c} you returned {got:.3f}, expected {want:.3f} "
                         f"(1 when the SAE is as good as the real MLP, 0 when as bad as the ablation)", rule)
        return "1 = as good as the real MLP, 0 = as bad as deleting it."
    return _run("01.3b", fn, test)


# ---------------------------------------------------------------- notebook 01: a training step with resampling
def _train_step_reference(p, opt, x, l1_coeff, dead=None, *, project=True, renorm=True, zero_grad=True,
                          pick="worst", centre=True, scale_enc=True, zero_b_enc=True, only_dead=True):
    """01.4's answer; the keyword switches give the known mistakes' versions of it."""
    if dead is not None and bool(dead.any()):
        with torch.no_grad():
            f = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
            err = (x - (f @ p["W_dec"] + p["b_dec"])).pow(2).sum(1)
            target = dead if only_dead else torch.ones_like(dead)
            k = int(target.sum())
            idx = torch.topk(err, k, largest=(pick == "worst")).indices
            d = x[idx] - p["b_dec"] if centre else x[idx]
            d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
            alive = ~target
            scale = 0.2 * p["W_enc"][:, alive].norm(dim=0).mean() if (scale_enc and alive.any()) else 1.0
            p["W_dec"][target] = d
            p["W_enc"][:, target] = d.T * scale
            if zero_b_enc:
                p["b_enc"][target] = 0.0
    if zero_grad:
        opt.zero_grad()
    f = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
    x_hat = f @ p["W_dec"] + p["b_dec"]
    loss = (x - x_hat).pow(2).mean() + l1_coeff * f.sum(-1).mean()
    loss.backward()
    with torch.no_grad():
        if project:
            W = p["W_dec"]
            W.grad -= (W.grad * W).sum(1, keepdim=True) * W
    opt.step()
    with torch.no_grad():
        if renorm:
            p["W_dec"] /= p["W_dec"].norm(dim=1, keepdim=True)
    return float(loss.detach())


def planted_features(seed: int = 0, n_features: int = 8, d_in: int = 12, n: int = 4096):
    """Inputs [n, d_in] made of ``n_features`` planted unit directions (each on 8% of the rows), and those directions."""
    g = _gen(seed)
    planted = torch.randn(n_features, d_in, generator=g)
    planted /= planted.norm(dim=1, keepdim=True)
    on = torch.rand(n, n_features, generator=g) < 0.08
    x = (on * (0.5 + torch.rand(n, n_features, generator=g))) @ planted
    return x, planted


def _planted_sae(d_in: int, d_sae: int = 12, n_dead: int = 8, seed: int = 1) -> dict:
    """A small SAE whose first ``n_dead`` features never fire (b_enc = -10): only resampling revives them."""
    g = _gen(seed)
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    b_enc = torch.zeros(d_sae)
    b_enc[:n_dead] = -10.0
    tensors = {"W_enc": W_dec.T * 0.5, "b_enc": b_enc, "W_dec": W_dec, "b_dec": torch.zeros(d_in)}
    return {k: v.clone().contiguous().requires_grad_(True) for k, v in tensors.items()}


def planted_run(step=None, resample: bool = True, steps: int = 300, every: int = 50, seed: int = 0) -> dict:
    """Train the planted-feature SAE with ``step(params, opt, x, l1_coeff, dead)`` (Adam, lr 1e-2, batch 256;
    ``step=None``: the reference step).

    Every ``every`` steps up to 3/4 of the run the features that did not fire since the last
    resampling are passed as ``dead`` (with ``resample``). Returns each planted feature's best
    cosine with a decoder row after every ``every`` steps (``history`` [checkpoints, n_planted]),
    the final ones (``best_cosine``) and ``recovered`` (how many above 0.9).
    """
    step = step or _train_step_reference
    x_all, planted = planted_features()
    p = _planted_sae(x_all.shape[1])
    opt = torch.optim.Adam(list(p.values()), lr=1e-2)
    g = _gen(seed)
    fired = torch.zeros(p["b_enc"].shape[0], dtype=torch.bool)
    history = []
    for s in range(steps):
        x = x_all[torch.randint(0, len(x_all), (256,), generator=g)]
        dead = None
        if resample and s % every == every - 1 and s < 3 * steps // 4:
            dead, fired = ~fired, torch.zeros_like(fired)
        _call(step, p, opt, x, 3e-3, dead)
        with torch.no_grad():
            fired |= (torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]) > 0).any(0)
            if s % every == every - 1:
                W = p["W_dec"] / p["W_dec"].norm(dim=1, keepdim=True)
                history.append((planted @ W.T).max(1).values)
    best = history[-1]
    return {"history": torch.stack(history).numpy(), "best_cosine": best.numpy(),
            "recovered": int((best > 0.9).sum()), "steps": steps, "every": every}


def check_sae_train_step(fn) -> CheckResult:
    """01.4: ``fn(params, opt, x, l1_coeff, dead=None)`` -> the loss; one training step, resampling ``dead`` first."""
    def test(fn):
        x, _ = planted_features(seed=3, n=256)
        x = x + 0.3                                     # a mean away from 0, so b_dec matters
        rule = ("resample the dead features from the inputs the SAE reconstructs worst (W_dec row = the unit vector "
                "of x - b_dec, W_enc column = it times 0.2 x the alive encoder columns' mean norm, b_enc = 0), then "
                "zero_grad, forward, loss, backward, remove from W_dec.grad each row's component along its row, "
                "opt.step(), and renormalise W_dec's rows to norm 1")

        def after(steps, dead=None, reference=True, **mistake):
            p = _planted_sae(12, seed=4)
            with torch.no_grad():
                p["b_enc"][:8] = 0.05                   # everything fires: a plain step changes every parameter
                p["b_dec"] += 0.5 * x.mean(0)           # b_dec away from 0, so resampling from x or x - b_dec differ
            # a large plain-SGD step: renormalising then projecting differ at second order, visible at this lr
            opt = torch.optim.SGD(list(p.values()), lr=3.0)
            losses = []
            for i in range(steps):
                d = dead if i == 0 else None
                if reference:
                    losses.append(_train_step_reference(p, opt, x, 3e-3, d, **mistake))
                else:
                    before = {k: v for k, v in p.items()}
                    out = _call(fn, p, opt, x, 3e-3, d)
                    for k, v in before.items():
                        if p[k] is not v:
                            raise _Wrong(f"you replaced params['{k}'] by a new tensor, so the optimiser still "
                                         f"holds the old one", "change the parameters in place, under "
                                         "torch.no_grad() (e.g. W_dec /= ...)")
                    losses.append(out)
            return {k: v.detach().clone() for k, v in p.items()}, losses

        def same(a, b):
            return all(_close(a[0][k], b[0][k], 1e-5) for k in a[0])

        def judge(got, dead, what):
            want = after(len(got[1]), dead)
            if same(got, want):
                return
            norms = got[0]["W_dec"].norm(dim=1)
            variants = [
                ("the decoder rows are not renormalised after the step (their norms drift from 1)",
                 dict(renorm=False)),
                ("the decoder gradient is not projected (each row's component along its own row must go before "
                 "the step)", dict(project=False)),
                ("the gradients are never zeroed: each step adds to the last one's", dict(zero_grad=False)),
                ("the dead features got the inputs the SAE reconstructs BEST: resample from the worst",
                 dict(pick="best")),
                ("the resampled directions are the raw inputs: subtract b_dec first (the encoder reads x - b_dec)",
                 dict(centre=False)),
                ("the resampled encoder columns keep unit norm: scale them to 0.2 x the alive columns' mean norm",
                 dict(scale_enc=False)),
                ("the dead features' encoder biases are not reset to 0 (a dead feature's negative bias keeps it dead)",
                 dict(zero_b_enc=False)),
                ("every feature was resampled, not only the dead ones", dict(only_dead=False)),
            ]
            for why, switches in variants:
                if same(got, after(len(got[1]), dead, **switches)):
                    raise _Wrong(f"{what}: {why}", rule)
            if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
                raise _Wrong(f"{what}: the decoder rows' norms are {float(norms.min()):.3f}..{float(norms.max()):.3f}, "
                             f"not 1", rule)
            off = [k for k in got[0] if not _close(got[0][k], want[0][k], 1e-5)]
            raise _Wrong(f"{what}: {', '.join(off)} differ from the reference step, and by none of the mistakes this "
                         f"check knows", rule)

        got = after(1, reference=False)
        loss = _as_float(got[1][0], "the loss the step returns")
        want_loss = after(1)[1][0]
        if not _scalar_same(loss, want_loss, rel=1e-4):
            raise _Wrong(f"the step returned {loss:.5f}, but the loss of this batch before the step is {want_loss:.5f}",
                         "return loss.item(): the MSE (mean over elements) + l1_coeff * f.sum(-1).mean()")
        judge(got, None, "one step without resampling")
        judge(after(2, reference=False), None, "two steps")
        dead = torch.zeros(12, dtype=torch.bool)
        dead[[0, 3, 4, 9]] = True
        judge(after(1, dead, reference=False), dead, "a step with 4 dead features")
        return ("one step, two steps and a step that resamples 4 dead features match the reference; the next "
                "cell trains on planted features with it.")
    return _run("01.4", fn, test)


# ---------------------------------------------------------------- notebook 02
def check_specificity_sensitivity(fn) -> CheckResult:
    """02.1: ``fn(acts, context, threshold)`` -> (specificity, sensitivity) of "on" = acts > threshold."""
    def test(fn):
        g = _gen(7)
        n = 300
        context = torch.rand(n, generator=g) < 0.3
        acts = torch.where(context, torch.rand(n, generator=g) * 2, torch.zeros(n))
        acts[~context] += (torch.rand(n, generator=g)[~context] < 0.1) * 0.4     # some false alarms
        acts[context & (torch.rand(n, generator=g) < 0.3)] = 0.0                  # some misses
        rule = ("specificity = P(context | on) = (on & context).sum() / on.sum(), sensitivity = P(on | context) "
                "= (on & context).sum() / context.sum(), with on = acts > threshold")

        def rates(on):
            both = int((on & context).sum())
            return both / max(1, int(on.sum())), both / max(1, int(context.sum()))

        for t in (0.0, 0.5, 10.0):
            on = acts > t
            both = int((on & context).sum())
            want = rates(on)
            try:
                out = _call(fn, acts.clone(), context.clone(), t)
            except _Wrong as w:
                if "ZeroDivisionError" in str(w) or "division by zero" in str(w):
                    raise _Wrong(f"at threshold {t} (above every activation, so the unit is never on) your "
                                 f"function divided by zero", "return 0.0 for the specificity: divide by "
                                 "max(1, number of tokens on)") from None
                raise
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise _Wrong("return two numbers, (specificity, sensitivity)")
            got = (_as_float(out[0], "specificity"), _as_float(out[1], "sensitivity"))
            if any(np.isnan(got)):
                raise _Wrong(f"at threshold {t} you returned nan" + (" (the unit is never on there)" if t == 10.0 else ""),
                             "when the unit is never on return 0.0 for specificity (no evidence), not nan: "
                             "divide by max(1, number of tokens on)")
            if np.allclose(got, want, atol=1e-6):
                continue
            same = lambda a, b: np.allclose(a, b, atol=1e-6)
            _known_mistake(got, [
                ("specificity and sensitivity are swapped", rule, want[::-1]),
                (f"at threshold {t} you returned counts, not fractions", rule,
                 (both, both) if both > 1 else (np.nan, np.nan)),
                ("you counted the unit as on when acts >= threshold: at threshold 0 every token is then 'on'; "
                 "the paper's 'on' is strictly above", rule, rates(acts >= t) if t == 0.0 else (np.nan, np.nan)),
                (f"at threshold {t} you got the values of threshold 0: the threshold is ignored", rule,
                 rates(acts > 0) if t else (np.nan, np.nan)),
                ("you divided by the number of all tokens where specificity divides by the tokens where the unit "
                 "is on and sensitivity by the tokens where the context is present", rule, (both / n, both / n)),
                ("that 'specificity' is the medical one, P(off | no context) (the true negative rate); the paper's "
                 "is P(context | on), how often the context is there when the unit fires", rule,
                 (int((~on & ~context).sum()) / max(1, int((~context).sum())), want[1])),
            ], same)
            if any(v > 1 for v in got):
                raise _Wrong(f"at threshold {t} you returned {got}: a value above 1 is no fraction", rule)
            raise _Wrong(f"at threshold {t}: got (specificity, sensitivity) = ({got[0]:.3f}, {got[1]:.3f}), "
                         f"expected ({want[0]:.3f}, {want[1]:.3f}), and none of the mistakes this check knows", rule)
        return "specificity P(context | on) and sensitivity P(on | context) at three thresholds, including one above every activation."
    return _run("02.1", fn, test)


def _domain_data():
    """Tokens with one context and features that tempt each known mistake (see check_best_feature_for_context)."""
    g = np.random.default_rng(12)
    n = 1000
    context = np.zeros(n, bool)
    context[g.choice(n, 200, replace=False)] = True
    ctx, off = np.flatnonzero(context), np.flatnonzero(~context)
    acts = np.zeros((n, 7), np.float32)

    def fire(col, on_ctx, on_off, scale=1.0):
        pos = np.r_[g.choice(ctx, on_ctx, replace=False), g.choice(off, on_off, replace=False)]
        acts[pos, col] = scale * g.uniform(0.2, 1.0, len(pos))
    fire(0, 20, 0)              # perfectly specific, covers 10%: below the bar
    fire(1, 200, 500, 6.0)      # catches every context token, but fires on most others too; the largest values
    fire(2, 150, 12)            # THE answer: covers 75% (>= 0.6) at specificity 0.926
    fire(3, 190, 40)            # best F1 and higher coverage, specificity 0.826
    fire(4, 110, 4)             # specificity 0.965, covers 55%: just below the bar
    fire(5, 0, 300)             # fires only off the context
    acts[:, 6] = g.uniform(0.0, 0.05, n) * (g.random(n) < 0.5)   # faint and everywhere
    return acts, context


def check_best_feature_for_context(fn) -> CheckResult:
    """02.3: ``fn(acts [tokens, F], context [tokens], min_sensitivity)`` -> (feature, specificity, sensitivity)."""
    def test(fn):
        acts, context = _domain_data()
        bar = 0.6
        on = acts > 0
        both = (on & context[:, None]).sum(0)
        spec, sens = both / np.maximum(1, on.sum(0)), both / max(1, context.sum())
        ok = sens >= bar
        want = int(np.flatnonzero(ok)[np.argmax(spec[ok])])
        rule = ("for every feature, on = acts > 0; keep the features whose sensitivity P(on | context) is at least "
                "min_sensitivity; of those return the one with the highest specificity P(context | on)")
        out = _call(fn, acts.copy(), context.copy(), bar)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise _Wrong("return three things, (feature, specificity, sensitivity)")
        try:
            got = int(out[0])
        except (TypeError, ValueError):
            raise _Wrong(f"the feature should be an index (an int), got {type(out[0]).__name__}") from None
        got_spec, got_sens = _as_float(out[1], "specificity"), _as_float(out[2], "sensitivity")
        why = {
            0: "feature 0 is perfectly specific but catches only 10% of the context: keep only the features "
               "whose sensitivity reaches the bar before you compare specificities",
            4: "feature 4 is very specific but catches 55% of the context, below the bar of 60%: keep only the "
               "features whose sensitivity reaches the bar",
            1: "feature 1 catches all of the context (and has the largest activations), but fires on most other "
               "tokens too: among the features above the bar, take the most SPECIFIC, not the most sensitive "
               "or the most active",
            3: "feature 3 covers more (and has the best F1), but it is less specific than another feature above "
               "the bar: the bar applies to the sensitivity, and among the features that reach it take the most "
               "specific",
            5: "feature 5 fires only where the context is absent: specificity is P(context | on), not P(on | "
               "no context)",
            6: "feature 6 fires faintly everywhere: 'on' is acts > 0, and the features are the columns",
        }
        if got != want and _scalar_same(got_spec, context.mean()) and _scalar_same(got_sens, 1.0):
            raise _Wrong("every feature looks on at every token (specificity = the context's share, sensitivity 1): "
                         "'on' is strictly above zero, acts > 0", rule)
        if got != want:
            if got in why:
                raise _Wrong(why[got].split(":")[0], why[got].split(":", 1)[1].strip())
            if not 0 <= got < acts.shape[1]:
                raise _Wrong(f"{got} is not a feature index (0..{acts.shape[1] - 1}): the features are the columns "
                             f"(axis 1), the tokens the rows", rule)
            raise _Wrong(f"feature {got} is not the answer, and none of the mistakes this check knows", rule)
        if not (_scalar_same(got_spec, spec[want]) and _scalar_same(got_sens, sens[want])):
            if _scalar_same(got_spec, sens[want]) and _scalar_same(got_sens, spec[want]):
                raise _Wrong("the right feature, but its specificity and sensitivity are swapped",
                             "return (feature, specificity, sensitivity)")
            raise _Wrong(f"the right feature, but its scores are ({got_spec:.3f}, {got_sens:.3f}) where they are "
                         f"({spec[want]:.3f}, {sens[want]:.3f})", rule)
        none = _call(fn, acts.copy(), context.copy(), 1.01)
        try:
            none_i = int(none[0])
        except (TypeError, ValueError, IndexError):
            none_i = None
        if none_i != -1:
            raise _Wrong(f"with a bar no feature reaches (1.01) you returned {none!r}",
                         "return (-1, 0.0, 0.0) when no feature covers enough of the context")
        return (f"feature {want}: specificity {spec[want]:.3f} at coverage {sens[want]:.2f} >= {bar}; neither the "
                f"perfectly specific rare feature (0) nor the ones that fire everywhere (1) or have the best F1 (3) "
                f"fooled you.")
    return _run("02.3", fn, test)


def reference_best_feature(acts, context, min_sensitivity: float) -> tuple[int, float, float]:
    """02.3's answer, for the apply cell's verdict: the most specific feature among those that cover the bar."""
    acts, context = _to_array(acts), _to_array(context).astype(bool)
    on = acts > 0
    both = (on & context[:, None]).sum(0)
    spec, sens = both / np.maximum(1, on.sum(0)), both / max(1, int(context.sum()))
    ok = np.flatnonzero(sens >= min_sensitivity)
    if not len(ok):
        return -1, 0.0, 0.0
    best = int(ok[np.argmax(spec[ok])])
    return best, float(spec[best]), float(sens[best])


# ---------------------------------------------------------------- notebook 03
def check_simulation_score(fn) -> CheckResult:
    """03.1: ``fn(true, pred, weights)`` -> importance-weighted Spearman correlation (constant -> 0)."""
    def test(fn):
        g = np.random.default_rng(8)
        true = g.gamma(1.0, 1.0, 60) * (g.random(60) < 0.5)
        cases = {
            "a prediction that orders the tokens right but is not linear (true**3)": (true, true ** 3, np.ones(60)),
            "noisy prediction, weights that favour the high activations": (
                true, true + g.normal(0, 0.8, 60), 1 + 4 * (true > np.median(true))),
            "a constant prediction": (true, np.full(60, 3.0), np.ones(60)),
            "predictions with ties (0-9 integers)": (true, np.round(np.clip(true * 3, 0, 9)), g.uniform(0.5, 2, 60)),
        }
        rule = ("rank both sides with weighted_rank(x, weights), then the weighted Pearson correlation of the ranks "
                "(weighted means, covariance and variances, weights normalised to sum 1); 0.0 when a side's "
                "weighted variance is ~0")

        def pearson(x, y, w):           # weighted Pearson without the constant-side guard
            w = np.asarray(w, float) / np.sum(w)
            dx, dy = x - w @ x, y - w @ y
            return float(w @ (dx * dy) / np.sqrt((w @ (dx * dx)) * (w @ (dy * dy))))

        def ordinal(x):                  # ranks 0..n-1, ties broken by position
            return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)

        for what, (t, p, w) in cases.items():
            want = weighted_spearman(t, p, w)
            got = _as_float(_call(fn, t.copy(), p.copy(), w.copy()), "the score")
            if np.isnan(got):
                raise _Wrong(f"{what}: you returned nan; a constant prediction carries no information and must "
                             f"score 0.0", "check for zero variance before dividing")
            if abs(got - want) <= 1e-6:
                continue
            if np.ptp(p) == 0:
                raise _Wrong(f"{what}: you returned {got:.4f}; a constant prediction carries no information and "
                             f"must score 0.0", "when a side's weighted variance is ~0 (up to rounding), return 0.0")
            rt, rp = weighted_rank(t, w), weighted_rank(p, w)
            ut, up = weighted_rank(t, np.ones_like(w)), weighted_rank(p, np.ones_like(w))
            same = lambda a, b: abs(a - b) <= 1e-6
            _known_mistake(got, [
                (f"{what}: you ignored the weights", rule, weighted_spearman(t, p)),
                (f"{what}: you ranked with the weights but took an UNWEIGHTED Pearson of the ranks: the means, "
                 f"covariance and variances must be weighted too", rule, pearson(rt, rp, np.ones_like(w))),
                (f"{what}: you took unweighted ranks (rankdata / argsort) with weighted moments: rank in "
                 f"cumulative-weight space", rule, pearson(ut, up, w)),
                (f"{what}: your ranks break ties by position (argsort of argsort): tied values must share the "
                 f"middle rank of their block", rule, pearson(ordinal(t), ordinal(p), w)),
                (f"{what}: your ranks break ties by position (argsort of argsort), and ignore the weights", rule,
                 pearson(ordinal(t), ordinal(p), np.ones_like(w))),
                (f"{what}: you correlated the values, not their ranks (Spearman is the Pearson of ranks)", rule,
                 weighted_pearson(t, p, w)),
                (f"{what}: you correlated the values, not their ranks, and ignored the weights", rule,
                 weighted_pearson(t, p)),
                (f"{what}: you returned the weighted covariance of the ranks, not their correlation (divide by "
                 f"both standard deviations)", rule,
                 float((w / w.sum()) @ ((rt - (w / w.sum()) @ rt) * (rp - (w / w.sum()) @ rp)))),
            ], same)
            if abs(got) > 1 + 1e-9:
                raise _Wrong(f"{what}: got {got:.4f}, a correlation beyond [-1, 1]: the normalisation is off", rule)
            raise _Wrong(f"{what}: got {got:.4f}, expected {want:.4f}, and none of the mistakes this check knows", rule)
        return "weighted ranks, weighted Pearson, a constant prediction scores 0."
    return _run("03.1", fn, test)


# ---------------------------------------------------------------- notebook 04
def _universality_data():
    g = np.random.default_rng(9)
    n, A, B = 400, 10, 14
    a = np.maximum(g.normal(0, 1, (n, A)), 0) * (g.random((n, A)) < 0.3)
    b = np.maximum(g.normal(0, 1, (n, B)), 0) * (g.random((n, B)) < 0.3)
    perm = g.permutation(B)[:A]
    for i in range(A - 2):                          # 8 of A's units have a noisy twin in B
        b[:, perm[i]] = a[:, i] * g.uniform(0.5, 2) + 0.3 * np.abs(g.normal(0, 1, n)) * (a[:, i] > 0)
    b[:, perm[A - 1]] += 4.0                          # an always-on unit: high cosine with everything
    return a, b


def _corr_matrix(a, b, centre: bool = True):
    if centre:
        a, b = a - a.mean(0), b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    return (a.T @ b) / np.outer(np.where(na > 0, na, 1), np.where(nb > 0, nb, 1))


def check_max_activation_correlation(fn) -> CheckResult:
    """04.1: ``fn(acts_a [n, A], acts_b [n, B])`` -> (best correlation [A], index of the best B unit [A])."""
    def test(fn):
        a, b = _universality_data()
        n = a.shape[0]
        corr = _corr_matrix(a, b)
        want_v, want_i = corr.max(1), corr.argmax(1)
        out = _call(fn, a.copy(), b.copy())
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise _Wrong("return two arrays, (best_corr, best_index), one entry per unit of A")
        try:
            v = np.asarray(out[0].detach() if torch.is_tensor(out[0]) else out[0], np.float64).ravel()
            i = np.asarray(out[1].detach() if torch.is_tensor(out[1]) else out[1]).ravel()
        except (TypeError, ValueError) as e:
            raise _Wrong(f"could not read your (best_corr, best_index) as arrays of numbers ({e})") from None
        rule = ("centre each column (subtract its mean over tokens), divide it by its norm, take A^T B, then the "
                "max and argmax over B (axis 1)")
        if len(v) == b.shape[1] or len(i) == b.shape[1]:
            raise _Wrong(f"you returned {b.shape[1]} values, one per unit of B: match each unit of A "
                         f"({a.shape[1]} of them)", "take the max over B's axis")
        if len(v) != a.shape[1] or len(i) != a.shape[1]:
            raise _Wrong(f"return {a.shape[1]} values and {a.shape[1]} indices (one per unit of A), got "
                         f"{len(v)} and {len(i)}")
        if np.isnan(v).any():
            raise _Wrong(f"{int(np.isnan(v).sum())} of your best correlations are nan (a division by a zero norm?)",
                         "clip each norm away from zero, e.g. .clip(1e-12)")
        if np.allclose(i, want_v, atol=1e-5) and np.array_equal(v.astype(np.int64), want_i):
            raise _Wrong("you returned (best_index, best_corr)", "the order is (best_corr, best_index)")
        ac, bc = a - a.mean(0), b - b.mean(0)
        na, nb = np.linalg.norm(ac, axis=0), np.linalg.norm(bc, axis=0)
        cos = _corr_matrix(a, b, centre=False)
        same = lambda x, y: np.allclose(x, y, atol=1e-5)
        _known_mistake(v, [
            ("these are cosine similarities (no centring): an always-on unit of B then looks similar to "
             "everything; subtract each unit's mean activation first (Pearson correlation)", rule, cos.max(1)),
            ("you took the largest |correlation|: the paper matches by the largest correlation", rule,
             np.abs(corr).max(1)),
            ("these are covariances, not correlations: divide by both units' norms (standard deviations)", rule,
             (ac.T @ bc / n).max(1)),
            ("these are dot products of the centred activations: divide by both units' norms", rule,
             (ac.T @ bc).max(1)),
            ("only A's units are normalised: divide B's centred columns by their norms too", rule,
             ((ac / na).T @ bc).max(1)),
            ("only B's units are normalised: divide A's centred columns by their norms too", rule,
             (ac.T @ (bc / nb)).max(1)),
            ("a covariance with n-1 over standard deviations with n (cov against std): correlations above 1; "
             "use the same normalisation on both", rule, (corr * n / (n - 1)).max(1)),
            ("you normalised the rows (axis=1, tokens) instead of the columns (units)", rule,
             ((ac / np.linalg.norm(ac, axis=1, keepdims=True).clip(1e-12)).T
              @ (bc / np.linalg.norm(bc, axis=1, keepdims=True).clip(1e-12))).max(1)),
            ("you centred each token (the mean over units, axis=1) instead of each unit (over tokens, axis=0)", rule,
             _corr_matrix(a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True), centre=False).max(1)),
        ], same)
        if (v > 1 + 1e-6).any():
            raise _Wrong(f"{int((v > 1 + 1e-6).sum())} of your correlations are above 1 (largest {v.max():.3f}), "
                         f"which a correlation cannot be: the normalisation is off", rule)
        if not np.allclose(v, want_v, atol=1e-5):
            raise _Wrong(f"the best correlations differ from Pearson's (first unit: got {v[0]:.3f}, expected "
                         f"{want_v[0]:.3f}), and none of the mistakes this check knows", rule)
        if not np.array_equal(i, want_i):
            if np.array_equal(i, want_i + 1):
                raise _Wrong("the correlations are right but every index is one too high (1-based?)",
                             "argmax gives 0-based indices: return them unchanged")
            raise _Wrong("the correlations are right but the indices do not point at B's best unit",
                         "argmax over B (axis 1) of the same correlation matrix")
        return (f"median best correlation {np.median(v):.2f}; the 8 planted twins found "
                f"({int((v > 0.8).sum())} units above 0.8).")
    return _run("04.1", fn, test)


# ---------------------------------------------------------------- notebook 05
def _family_data():
    """Activations of a small [n, 6] and a large [n, 17] dictionary, built so that every known mistake
    gives other links than the cosine: children of different scales (some with small norms), small
    features of different norms, orphans, and a column that fires almost everywhere."""
    g = np.random.default_rng(10)
    n, S = 500, 6
    density = np.array([0.25, 0.25, 0.25, 0.25, 0.25, 0.7])        # feature 5 fires on most tokens
    scale = np.array([1.0, 3.0, 0.3, 1.0, 2.0, 0.5])               # and the features' norms differ
    small = np.maximum(g.normal(0.5, 1, (n, S)), 0) * (g.random((n, S)) < density) * scale
    cols = []
    child_scale = [1.0, 0.02, 1.0, 5.0, 0.02, 1.0, 1.0, 0.5, 1.0, 0.02]
    for s in range(S - 1):                               # each parent splits into two children
        split = g.random(n) < 0.5
        for k, part in enumerate((split, ~split)):
            c = small[:, s] * part * g.uniform(0.8, 1.2) + 0.05 * scale[s] * g.random(n) * (small[:, s] > 0)
            cols.append(c * child_scale[2 * s + k])
    for _ in range(3):                                   # orphans: new features of the larger SAE
        cols.append(np.maximum(g.normal(0, 1, n), 0) * (g.random(n) < 0.2))
    cols.append(0.04 * (1.0 + 0.05 * g.random(n)))       # on everywhere, faintly: cosine with 5 high, Pearson ~0
    cols.append(small[:, 1] * 0.2 + small[:, 2] * 1.5)   # two parents: raw dot products prefer the larger norm
    cols.append(small[:, 5] * (g.random(n) < 0.5))       # a child of the dense feature
    large = np.stack(cols, 1)
    return small, large


def check_link_parents(fn) -> CheckResult:
    """05.1: ``fn(acts_small [n, S], acts_large [n, L], threshold)`` -> parent index per large feature, -1 if none."""
    def test(fn):
        small, large = _family_data()
        S, L = small.shape[1], large.shape[1]
        cos = _corr_matrix(small, large, centre=False)          # [S, L]
        best, arg = cos.max(0), cos.argmax(0)
        want = np.where(best > 0.4, arg, -1)
        out = _call(fn, small.copy(), large.copy(), 0.4)
        try:
            raw = np.asarray(out.detach() if torch.is_tensor(out) else out)
        except (TypeError, ValueError) as e:
            raise _Wrong(f"could not read your parents as an array ({e})") from None
        got = raw.ravel()
        if got.dtype == object or any(x is None for x in got.tolist()):
            raise _Wrong("your parents hold None (or other objects)", "mark a feature without a parent with -1")
        if got.dtype.kind == "f" and np.isnan(got).any():
            raise _Wrong("your parents hold nan", "mark a feature without a parent with -1 (an integer array)")
        if len(got) == S:
            raise _Wrong(f"you returned {S} entries, one per feature of the smaller SAE: give each feature of the "
                         f"LARGER SAE ({L}) its parent", "the argmax over the smaller SAE's axis (axis 0 of small.T @ large)")
        if len(got) != L:
            raise _Wrong(f"return {L} parent indices, one per feature of the larger SAE; got {len(got)}")
        got = got.astype(np.int64)
        if np.array_equal(got, want):
            return (f"{int((got >= 0).sum())} of {len(got)} features linked; the {int((got < 0).sum())} "
                    f"orphans (best cosine <= 0.4) get -1, and the feature that fires everywhere got its parent "
                    f"by cosine (Pearson would have left it an orphan).")
        rule = ("divide every column of both matrices by its norm, cos = small_n.T @ large_n [S, L]; the parent "
                "is the argmax over S where the max is above threshold, else -1")
        sn, ln = small / np.linalg.norm(small, axis=0), large / np.linalg.norm(large, axis=0)
        corr = _corr_matrix(small, large)
        linked = lambda m: np.where(m.max(0) > 0.4, m.argmax(0), -1)
        _known_mistake(got, [
            ("every feature got a parent: the ones whose best cosine is not above the threshold (0.4) have none",
             "return -1 for them", arg),
            ("you used Pearson correlation (centred activations); the paper links by the cosine of the raw, "
             "non-negative activation vectors: a feature that fires almost everywhere has a Pearson near 0 with "
             "its parent but a high cosine", rule, linked(corr)),
            ("you used Pearson correlation (centred activations), and gave every feature a parent", rule,
             corr.argmax(0)),
            ("you normalised only the smaller SAE's activations: the larger one's norms then scale its "
             "similarities, so a faint feature falls below the threshold", rule, linked(sn.T @ large)),
            ("you compared raw dot products: divide by both activation vectors' norms (cosine)", rule,
             linked(small.T @ large)),
            ("your similarities are not divided by the smaller SAE's norms (raw dot products, or only the larger "
             "SAE normalised): the smaller features' norms then pick the parent and everything passes the "
             "threshold", rule, linked(small.T @ ln)),
            ("you marked the features without a parent with 0, a valid index", "use -1", np.where(best > 0.4, arg, 0)),
            ("your parent indices are one too high (1-based?)", "argmax gives 0-based indices",
             np.where(best > 0.4, arg + 1, -1)),
            ("you kept the features whose best cosine is BELOW the threshold", rule, np.where(best <= 0.4, arg, -1)),
        ], np.array_equal)
        bad = int(np.flatnonzero(got != want)[0])
        raise _Wrong(f"large feature {bad}: you gave parent {got[bad]}, expected {want[bad]} (its cosines with "
                     f"the small features: {np.round(cos[:, bad], 2).tolist()}), and none of the mistakes this "
                     f"check knows", rule)
    return _run("05.1", fn, test)


# ---------------------------------------------------------------- notebook 06
@functools.lru_cache(maxsize=1)
def _small_sae() -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=48, seed=0))
    g = _gen(11)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(48, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(16, generator=g) * 0.5)
    sae.set_input_scale(2.5)
    sae.requires_grad_(False)
    return sae


def check_clamp_hook(fn) -> CheckResult:
    """06.1: ``fn(sae, feature, value, keep_error=True)`` -> a hook ``(acts, hook) -> edited acts``."""
    def test(fn):
        sae = _small_sae()
        x = torch.relu(torch.randn(2, 5, 16, generator=_gen(12))) * 3
        feat, value = 7, 4.0
        f = sae.encode(x)
        f2 = f.clone()
        f2[..., feat] = value
        want = x + sae.decode(f2) - sae.decode(f)
        rule = ("f = sae.encode(acts); f_clamped = f with [..., feature] = value; return acts + "
                "sae.decode(f_clamped) - sae.decode(f)")
        hook = _call(fn, sae, feat, value)
        if not callable(hook):
            raise _Wrong(f"return a hook function (def hook(acts, hook): ...), got {type(hook).__name__}")
        out = _call(hook, x.clone(), None)
        if out is None:
            raise _Wrong("the hook returns None", "return the edited activations (TransformerLens uses the "
                         "returned tensor)")
        out = _as_tensor(out, "the hook's output")
        _shape(out, x.shape, "the hook's output", "[batch, pos, d_mlp], the shape of its input")
        f_mul = f.clone()
        f_mul[..., feat] *= value
        x_set = x.clone()
        x_set[..., feat] = value
        last = x.clone()
        last[:, -1] = want[:, -1]
        mistakes = [
            ("the activations came back unchanged (if you set the feature in f itself, f_clamped and f are the "
             "same tensor: clone it first)", rule, x),
            ("a sign error: you subtracted the clamped reconstruction and added the original one", rule,
             x - sae.decode(f2) + sae.decode(f)),
            ("forgot the error term: you replaced the activations by the SAE's reconstruction, which also throws "
             "away everything the SAE does not reconstruct", rule, sae.decode(f2)),
            ("you added value x the decoder direction (that is 'add' steering): clamp sets the feature's "
             "activation TO value, so add (value - f[..., feature]) x the direction", rule,
             x + value * sae.W_dec_raw[feat]),
            ("you used sae.W_dec, which lives in the SAE's scaled space (the input scale is undone in "
             "sae.W_dec_raw and in the SAE's decoder)", rule, x + (value - f[..., feat:feat + 1]) * sae.W_dec[feat]),
            ("you multiplied the feature by value: clamp SETS it to value", rule,
             x + sae.decode(f_mul) - sae.decode(f)),
            ("you set MLP neuron `feature` of the activations to value: the feature lives in the SAE's "
             "dictionary, so encode first", rule, x_set),
            ("only the last position is edited: clamp every position", rule, last),
        ]
        for other in (feat - 1, feat + 1):
            g2 = f.clone()
            g2[..., other] = value
            mistakes.append((f"you clamped feature {other}, not feature {feat} (an off-by-one)", rule,
                             x + sae.decode(g2) - sae.decode(f)))
        _known_mistake(out, mistakes, _close)
        if not _close(out, want):
            diff = float((out.double() - want.double()).abs().max())
            raise _Wrong(f"right shape, wrong values (off by up to {diff:.3g}), and none of the mistakes this "
                         f"check knows", rule)
        hook2 = _call(fn, sae, feat, value, keep_error=False)
        out2 = _as_tensor(_call(hook2, x.clone(), None), "the hook's output")
        if _close(out2, want):
            raise _Wrong("with keep_error=False you still kept the error term", "return the plain replacement "
                         "sae.decode(f_clamped)")
        if not _close(out2, sae.decode(f2)):
            raise _Wrong("with keep_error=False the hook does not return the plain replacement",
                         "return sae.decode(f_clamped)")
        return ("the edit keeps the SAE's error term (what the SAE does not reconstruct, which the plain "
                "replacement throws away), and keep_error=False gives the replacement.")
    return _run("06.1", fn, test)
