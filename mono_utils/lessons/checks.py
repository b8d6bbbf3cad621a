"""Checks for the notebooks' exercises: run the student's function on small synthetic data.

Every ``check_*`` takes the student's function, calls it on a few seeded, hand-made inputs (no
artifact store, no training: each check takes well under a second, the one for notebook 00
builds a tiny random model once) and compares with the answer. When the answer is wrong it
says *what* is wrong, as far as a check can tell: a wrong shape, a forgotten bias or error
term, the wrong normalisation, an axis swapped... The result shows as a green or red box in a
notebook (``CheckResult``); with ``MONO_LESSONS_STRICT=1`` a failed check raises
:class:`ExerciseFailed` instead (the tests use it).
"""
from __future__ import annotations

import functools
import html
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..autointerp.protocol import weighted_pearson, weighted_spearman
from ..core.metrics import fvu as reference_fvu
from ..core.metrics import loss_recovered as reference_loss_recovered
from ..core.model import HOOK_MLP_POST, ModelConfig, build_model, mlp_post
from ..core.sae import SAEConfig, SparseAutoencoder

STRICT_ENV = "MONO_LESSONS_STRICT"
NOT_WRITTEN = ("not written yet: the function still raises NotImplementedError. Replace that line "
               "with your code (the hint below helps; the solution is folded under it)")


class ExerciseFailed(AssertionError):
    """A failed check, raised instead of displayed when ``MONO_LESSONS_STRICT=1``."""

    def __init__(self, exercise: str, message: str):
        super().__init__(f"Exercise {exercise}: {message}")
        self.exercise, self.message = exercise, message


class _Wrong(Exception):
    """Raised inside a check with the message the student sees."""


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
    """Call the student's function; turn its exceptions into a message that names them."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _Wrong(NOT_WRITTEN) from None
    except Exception as e:  # noqa: BLE001 - any error of the student's code is reported, not raised
        shapes = ", ".join(str(tuple(a.shape)) if hasattr(a, "shape") else type(a).__name__ for a in args)
        raise _Wrong(f"your function raised {type(e).__name__}: {e} (called with {shapes})") from None


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
                         f"run_with_cache?): return only the activations, cache['{HOOK_MLP_POST}']")
        if type(out).__name__ == "ActivationCache" or isinstance(out, dict):
            raise _Wrong(f"you returned the whole cache: index it with the hook name, "
                         f"cache['{HOOK_MLP_POST}']")
        out = _as_tensor(out, "the activations")
        d_vocab, d_model, d_mlp = 48, 16, 40
        if out.ndim == 3 and out.shape[-1] == d_vocab:
            raise _Wrong(f"the last dimension is {d_vocab} = the vocabulary: these are the logits. "
                         f"Take the MLP's activations from the cache, '{HOOK_MLP_POST}'")
        if out.ndim == 3 and out.shape[-1] == d_model:
            raise _Wrong(f"the last dimension is {d_model} = d_model: that is the residual stream or the MLP's "
                         f"output. The neurons live at '{HOOK_MLP_POST}' (width d_mlp = {d_mlp})")
        if out.ndim == 2 and out.shape == (3 * 9, d_mlp):
            raise _Wrong("you flattened batch and positions: keep the shape [batch, pos, d_mlp]")
        _shape(out, want.shape, "the activations", "[batch, pos, d_mlp]")
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_pre")
        if _close(out, cache["blocks.0.mlp.hook_pre"]):
            raise _Wrong("these are the pre-activations (hook_pre: before the ReLU, with negative values); "
                         f"the neurons' activations are after it, '{HOOK_MLP_POST}'")
        if (out < 0).any():
            raise _Wrong("some values are negative, but the MLP's ReLU outputs are >= 0: "
                         f"read '{HOOK_MLP_POST}'")
        if not _close(out, want):
            diff = float((out.double() - want.double()).abs().max())
            raise _Wrong(f"right shape, wrong values (off by up to {diff:.3g}): run the model given as "
                         f"argument on the tokens given, unchanged")
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
        if (torch.is_tensor(out) or isinstance(out, np.ndarray)) and np.size(out) != 1:
            raise _Wrong(f"return one neuron index (an int), not an array of shape {tuple(np.shape(out))}")
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
            raise _Wrong("neuron 5 fires most over all tokens, but not on token 3: keep only the positions "
                         "where tokens == token_id")
        if got == 17:
            raise _Wrong("neuron 17 has one big spike on one occurrence of the token but is low on the others: "
                         "average over the token's occurrences (mean), not the maximum")
        raise _Wrong(f"neuron {got} has mean activation {means[got]:.2f} on token 3, neuron {want} has "
                     f"{means[want]:.2f}: average each neuron over the positions where tokens == token_id, "
                     f"then take the argmax over neurons")
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
            raise _Wrong("you returned (x_hat, f): the order is (f, x_hat)")
        _shape(f, f_want.shape, "f", "[batch, d_sae]: one activation per feature (x @ W_enc has this shape)")
        if (f < 0).any():
            raise _Wrong("f has negative values: apply the ReLU to the encoder's pre-activations")
        if _close(f, torch.relu(x @ W_enc + b_enc)):
            raise _Wrong("forgot to subtract b_dec before encoding: f = ReLU((x - b_dec) @ W_enc + b_enc)")
        if _close(f, torch.relu((x - b_dec) @ W_enc)):
            raise _Wrong("forgot the encoder bias b_enc: f = ReLU((x - b_dec) @ W_enc + b_enc)")
        if not _close(f, f_want):
            raise _Wrong("f has the right shape but wrong values: f = ReLU((x - b_dec) @ W_enc + b_enc)")
        _shape(x_hat, x.shape, "x_hat", "[batch, d_in], the shape of x")
        if _close(x_hat, f_want @ W_dec):
            raise _Wrong("forgot to add b_dec back: x_hat = f @ W_dec + b_dec")
        if not _close(x_hat, xhat_want):
            raise _Wrong("x_hat has the right shape but wrong values: x_hat = f @ W_dec + b_dec")
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
        if abs(got - float(want)) <= 1e-4 * max(1.0, abs(float(want))):
            return f"loss {got:.4f}: MSE {float(err.mean()):.4f} + lambda x L1 {lam * float(f.sum(-1).mean()):.4f}."
        l1 = f.sum(-1).mean()
        variants = {
            "the MSE is summed over the whole batch: take the mean over elements, (x - x_hat).pow(2).mean()":
                err.sum() + lam * l1,
            "the MSE is summed over the d_in dimensions: the paper's recipe (and ours) takes the mean over "
            "all elements, (x - x_hat).pow(2).mean()": err.sum(-1).mean() + lam * l1,
            "the L1 term is a mean over features: sum over features, then mean over the batch, "
            "f.sum(-1).mean()": err.mean() + lam * f.mean(),
            "the L1 term is summed over the batch too: sum over features, then mean over the batch, "
            "f.sum(-1).mean()": err.mean() + lam * f.sum(),
            "the L1 penalty is missing: add l1_coeff * f.sum(-1).mean()": err.mean(),
            "the L1 penalty is not multiplied by l1_coeff": err.mean() + l1,
            "the error is not squared: (x - x_hat).pow(2)": (x - x_hat).abs().mean() + lam * l1,
        }
        for why, v in variants.items():
            if abs(got - float(v)) <= 1e-4 * max(1.0, abs(float(v))):
                raise _Wrong(why)
        raise _Wrong(f"got {got:.4f}, expected {float(want):.4f}: loss = (x - x_hat).pow(2).mean() "
                     f"+ l1_coeff * f.sum(-1).mean()")
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
        if _close(out, grad):
            raise _Wrong("the gradient came back unchanged: remove from each row its component along "
                         "that row of W_dec")
        if _close(out, par):
            raise _Wrong("you returned the parallel component itself: subtract it from the gradient")
        along = (out * W_dec).sum(1).abs().max()
        if along > 1e-4:
            raise _Wrong(f"the result still points along the dictionary rows (largest dot product with its "
                         f"row {float(along):.3f}, should be 0): project each ROW, (g * W).sum(1, keepdim=True) * W")
        if not _close(out, want):
            raise _Wrong("orthogonal to the rows, but not the projection of this gradient: "
                         "grad - (grad * W_dec).sum(1, keepdim=True) * W_dec")
        return ("every row of the gradient is now orthogonal to its dictionary row, so a small step "
                "keeps the decoder norms at 1 (to first order; the trainer renormalises after each step).")
    return _run("01.2", fn, test)


def check_fvu(fn) -> CheckResult:
    """01.3a: ``fn(x, x_hat)`` -> fraction of variance unexplained, about the mean."""
    def test(fn):
        g = _gen(6)
        x = 5.0 + torch.randn(200, 8, generator=g) * torch.linspace(0.2, 3.0, 8)
        x_hat = x + 0.4 * torch.randn(200, 8, generator=g)
        want = reference_fvu(x, x_hat)
        got = _as_float(_call(fn, x.clone(), x_hat.clone()), "FVU")
        if abs(got - want) <= 1e-4:
            about_zero = float((x - x_hat).pow(2).sum() / x.pow(2).sum())
            return f"FVU {got:.4f} (about zero it would read {about_zero:.4f}: flattering, and wrong)."
        e = (x - x_hat).pow(2)
        variants = {
            "you divided by the energy about zero, x.pow(2).sum(): divide by the variance about the mean, "
            "(x - x.mean(0)).pow(2).sum(). Activations have a large mean, so this flatters the SAE":
                e.sum() / x.pow(2).sum(),
            "you returned the fraction of variance EXPLAINED (1 - FVU)": 1 - want,
            "you averaged one FVU per dimension: divide the total squared error by the total variance":
                float((e.sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean()),
            "you subtracted the mean over dimensions (per token): subtract the mean over tokens, x.mean(0)":
                e.sum() / (x - x.mean(1, keepdim=True)).pow(2).sum(),
            "you subtracted one global mean: use one mean per dimension, x.mean(0)":
                e.sum() / (x - x.mean()).pow(2).sum(),
        }
        for why, v in variants.items():
            if abs(got - float(v)) <= 1e-4:
                raise _Wrong(why)
        raise _Wrong(f"got {got:.4f}, expected {want:.4f}: (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()")
    return _run("01.3a", fn, test)


def check_loss_recovered(fn) -> CheckResult:
    """01.3b: ``fn(ce_clean, ce_sae, ce_ablated)`` -> the share of the ablation's loss the SAE recovers."""
    def test(fn):
        cases = [(3.0, 3.2, 5.0), (2.5, 2.5, 4.0), (3.8, 4.6, 4.6), (3.0, 3.5, 7.0)]
        for c in cases:
            want = reference_loss_recovered(*c)
            got = _as_float(_call(fn, *c), "loss recovered")
            if abs(got - want) > 1e-6:
                if abs(got - (1 - want)) < 1e-6:
                    raise _Wrong(f"for {c} you returned {got:.3f}, the share LOST; loss recovered is "
                                 f"(ce_ablated - ce_sae) / (ce_ablated - ce_clean) = {want:.3f}")
                if abs(got - 100 * want) < 1e-4:
                    raise _Wrong("return a fraction (0.9), not a percentage (90)")
                raise _Wrong(f"for ce_clean, ce_sae, ce_ablated = {c} you returned {got:.3f}, expected "
                             f"{want:.3f}: 1 when the SAE is as good as the real MLP, 0 when as bad as the ablation")
        return "1 = as good as the real MLP, 0 = as bad as deleting it."
    return _run("01.3b", fn, test)


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
        for t in (0.0, 0.5, 10.0):
            on = acts > t
            both = int((on & context).sum())
            want = (both / max(1, int(on.sum())), both / max(1, int(context.sum())))
            out = _call(fn, acts.clone(), context.clone(), t)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise _Wrong("return two numbers, (specificity, sensitivity)")
            got = (_as_float(out[0], "specificity"), _as_float(out[1], "sensitivity"))
            if t == 10.0 and any(np.isnan(got)):
                raise _Wrong("when the unit is never on (threshold above every activation) return 0.0 for "
                             "specificity (no evidence), not nan: divide by max(1, number of tokens on)")
            if np.allclose(got, want, atol=1e-6):
                continue
            if np.allclose(got, want[::-1], atol=1e-6):
                raise _Wrong("specificity and sensitivity are swapped: specificity = P(context | unit on), "
                             "sensitivity = P(unit on | context)")
            if any(v > 1 for v in got):
                raise _Wrong(f"at threshold {t} you returned {got}: these are counts, divide them to get fractions")
            ge = acts >= t
            b2 = int((ge & context).sum())
            if t == 0.0 and np.allclose(got, (b2 / max(1, int(ge.sum())), b2 / max(1, int(context.sum()))), atol=1e-6):
                raise _Wrong("you counted the unit as on when acts >= threshold: at threshold 0 every token is "
                             "then 'on'. The paper's 'on' is strictly above: acts > threshold")
            if np.isclose(got[0], both / n) or np.isclose(got[1], both / n):
                raise _Wrong("you divided by the number of all tokens: specificity divides by the tokens where "
                             "the unit is on, sensitivity by the tokens where the context is present")
            raise _Wrong(f"at threshold {t}: got (specificity, sensitivity) = ({got[0]:.3f}, {got[1]:.3f}), "
                         f"expected ({want[0]:.3f}, {want[1]:.3f})")
        return "specificity P(context | on) and sensitivity P(on | context) at three thresholds, including one above every activation."
    return _run("02.1", fn, test)


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
        for what, (t, p, w) in cases.items():
            want = weighted_spearman(t, p, w)
            got = _as_float(_call(fn, t.copy(), p.copy(), w.copy()), "the score")
            if np.isnan(got):
                raise _Wrong(f"{what}: you returned nan; a constant prediction carries no information "
                             f"and must score 0.0 (check for zero variance before dividing)")
            if abs(got - want) <= 1e-6:
                continue
            if np.ptp(p) == 0:
                raise _Wrong(f"{what}: you returned {got:.4f}; a constant prediction carries no information and "
                             f"must score 0.0: when a side's weighted variance is ~0 (up to rounding), return 0.0")
            if abs(got - weighted_spearman(t, p)) <= 1e-6:
                raise _Wrong(f"{what}: you ignored the weights. Rank in cumulative-weight space "
                             f"(weighted_rank(x, w)) and take a weighted Pearson of the ranks")
            if abs(got - weighted_pearson(t, p, w)) <= 1e-6 or abs(got - weighted_pearson(t, p)) <= 1e-6:
                raise _Wrong(f"{what}: you correlated the values, not their ranks: Spearman is Pearson of ranks")
            raise _Wrong(f"{what}: got {got:.4f}, expected {want:.4f}")
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
        corr = _corr_matrix(a, b)
        want_v, want_i = corr.max(1), corr.argmax(1)
        out = _call(fn, a.copy(), b.copy())
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise _Wrong("return two arrays, (best_corr, best_index), one entry per unit of A")
        v = np.asarray(out[0].detach() if torch.is_tensor(out[0]) else out[0], np.float64).ravel()
        i = np.asarray(out[1].detach() if torch.is_tensor(out[1]) else out[1]).ravel()
        if len(v) == b.shape[1] or len(i) == b.shape[1]:
            raise _Wrong(f"you returned {b.shape[1]} values, one per unit of B: match each unit of A "
                         f"({a.shape[1]} of them), i.e. take the max over B's axis")
        if len(v) != a.shape[1] or len(i) != a.shape[1]:
            raise _Wrong(f"return {a.shape[1]} values and {a.shape[1]} indices (one per unit of A), got "
                         f"{len(v)} and {len(i)}")
        cos = _corr_matrix(a, b, centre=False)
        if np.allclose(v, cos.max(1), atol=1e-5) and not np.allclose(v, want_v, atol=1e-5):
            raise _Wrong("these are cosine similarities: subtract each unit's mean activation first "
                         "(Pearson correlation); an always-on unit of B otherwise looks similar to everything")
        if np.allclose(v, want_v, atol=1e-5) and not np.array_equal(i, want_i):
            raise _Wrong("the correlations are right but the indices do not point at B's best unit: argmax over B")
        if not np.allclose(v, want_v, atol=1e-5):
            if np.allclose(v, np.abs(corr).max(1), atol=1e-5):
                raise _Wrong("you took the largest |correlation|: the paper matches by the largest correlation")
            raise _Wrong(f"the best correlations differ from Pearson's (first unit: got {v[0]:.3f}, expected "
                         f"{want_v[0]:.3f}): centre each column, divide by its norm, take A^T B, max over B")
        return (f"median best correlation {np.median(v):.2f}; the 8 planted twins found "
                f"({int((v > 0.8).sum())} units above 0.8).")
    return _run("04.1", fn, test)


# ---------------------------------------------------------------- notebook 05
def _family_data():
    g = np.random.default_rng(10)
    n, S = 500, 6
    small = np.maximum(g.normal(0.5, 1, (n, S)), 0) * (g.random((n, S)) < 0.25)
    cols = []
    for s in range(S):                                   # each parent splits into two children
        split = g.random(n) < 0.5
        for part in (split, ~split):
            cols.append(small[:, s] * part * g.uniform(0.8, 1.2) + 0.05 * g.random(n) * (small[:, s] > 0))
    for _ in range(3):                                   # orphans: a new feature of the larger SAE
        cols.append(np.maximum(g.normal(0, 1, n), 0) * (g.random(n) < 0.2))
    cols.append(small[:, 0] + 3.0 * (g.random(n) < 0.9))  # fires almost everywhere: only its cosine is high
    large = np.stack(cols, 1)
    return small, large


def check_link_parents(fn) -> CheckResult:
    """05.1: ``fn(acts_small [n, S], acts_large [n, L], threshold)`` -> parent index per large feature, -1 if none."""
    def test(fn):
        small, large = _family_data()
        cos = _corr_matrix(small, large, centre=False)          # [S, L]
        best, arg = cos.max(0), cos.argmax(0)
        want = np.where(best > 0.4, arg, -1)
        out = _call(fn, small.copy(), large.copy(), 0.4)
        got = np.asarray(out.detach() if torch.is_tensor(out) else out).ravel()
        if len(got) == small.shape[1]:
            raise _Wrong(f"you returned {small.shape[1]} entries, one per feature of the smaller SAE: "
                         f"give each feature of the LARGER SAE ({large.shape[1]}) its parent")
        if len(got) != large.shape[1]:
            raise _Wrong(f"return {large.shape[1]} parent indices, one per feature of the larger SAE; got {len(got)}")
        got = got.astype(np.int64)
        if np.array_equal(got, want):
            return (f"{int((got >= 0).sum())} of {len(got)} features linked; the {int((got < 0).sum())} "
                    f"orphans (best cosine <= 0.4) get -1.")
        if np.array_equal(got, arg):
            raise _Wrong("every feature got a parent: the ones whose best cosine is <= threshold (0.4) "
                         "have none, return -1 for them")
        dot = small.T @ large
        if np.array_equal(got, dot.argmax(0)) or np.array_equal(got, np.where(dot.max(0) > 0.4, dot.argmax(0), -1)):
            raise _Wrong("you compared raw dot products: divide by both activation vectors' norms (cosine)")
        corr = _corr_matrix(small, large)
        if np.array_equal(got, np.where(corr.max(0) > 0.4, corr.argmax(0), -1)):
            raise _Wrong("you used Pearson correlation (centred); the paper links by the cosine of the raw, "
                         "non-negative activation vectors")
        bad = int(np.flatnonzero(got != want)[0])
        raise _Wrong(f"large feature {bad}: you gave parent {got[bad]}, expected {want[bad]} (its cosines with "
                     f"the small features: {np.round(cos[:, bad], 2).tolist()})")
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
        hook = _call(fn, sae, feat, value)
        if not callable(hook):
            raise _Wrong(f"return a hook function (def hook(acts, hook): ...), got {type(hook).__name__}")
        out = _call(hook, x.clone(), None)
        if out is None:
            raise _Wrong("the hook returns None: return the edited activations (TransformerLens uses the "
                         "returned tensor)")
        out = _as_tensor(out, "the hook's output")
        _shape(out, x.shape, "the hook's output", "[batch, pos, d_mlp], the shape of its input")
        if _close(out, x):
            raise _Wrong("the activations came back unchanged: set the feature to `value` and apply the change")
        if _close(out, sae.decode(f2)):
            raise _Wrong("forgot the error term: you replaced the activations by the SAE's reconstruction, "
                         "which also throws away everything the SAE does not reconstruct. Keep it: "
                         "x + decode(f_clamped) - decode(f)")
        if _close(out, x + value * sae.W_dec_raw[feat]):
            raise _Wrong("you added value x the decoder direction (that is 'add' steering): clamp sets the "
                         "feature's activation TO value, so add (value - f[..., feature]) x the direction")
        if _close(out, x + (value - f[..., feat:feat + 1]) * sae.W_dec[feat]):
            raise _Wrong("you used sae.W_dec, which lives in the SAE's scaled space: use sae.decode(...) or "
                         "sae.W_dec_raw (the input scale is undone there)")
        for other in (feat - 1, feat + 1):
            g2 = f.clone()
            g2[..., other] = value
            if _close(out, x + sae.decode(g2) - sae.decode(f)):
                raise _Wrong(f"you clamped feature {other}, not feature {feat}")
        if not _close(out, want):
            raise _Wrong("right shape, wrong values: f = sae.encode(acts); f_clamped = f with "
                         "[..., feature] = value; return acts + sae.decode(f_clamped) - sae.decode(f)")
        hook2 = _call(fn, sae, feat, value, keep_error=False)
        out2 = _as_tensor(_call(hook2, x.clone(), None), "the hook's output")
        if not _close(out2, sae.decode(f2)):
            raise _Wrong("with keep_error=False return the plain replacement sae.decode(f_clamped)")
        return ("the edit keeps the SAE's error term (what the SAE does not reconstruct, which the plain "
                "replacement throws away), and keep_error=False gives the replacement.")
    return _run("06.1", fn, test)
