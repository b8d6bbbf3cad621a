"""Known wrong answers to the notebooks' exercises, each with the message its check must give.

Every entry is a small function a student could write, named after its mistake, and an excerpt of
the message that names that mistake (``test_wrong_answers.py`` runs them all). The first 43 cover
the mistakes of the issue's tester (issue 27: sign errors, transposes, wrong axes, n-1 variance,
centring on the wrong mean, Pearson against cosine, a missing normalisation, a forgotten
threshold, weights, off-by-one, wrong types, NaN, wrong shapes); the rest are the ones found since.
``RIGHT`` holds correct answers written in other ways than the notebooks' solutions: they pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mono_utils.autointerp.protocol import weighted_pearson, weighted_rank, weighted_spearman

HP, HPRE = "blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre"


@dataclass(frozen=True)
class Answer:
    exercise: str       # "01.3a"
    check: str          # the name of the check in mono_utils.lessons
    name: str           # the mistake, for the test id
    fn: Callable
    says: str = ""      # an excerpt the failure message must hold (empty for right answers)


WRONG: list[Answer] = []
RIGHT: list[Answer] = []


def wrong(exercise, check, says):
    def add(fn):
        WRONG.append(Answer(exercise, check, fn.__name__, fn, says))
        return fn
    return add


def right(exercise, check):
    def add(fn):
        RIGHT.append(Answer(exercise, check, fn.__name__, fn))
        return fn
    return add


# ---------------------------------------------------------------- 00.1 mlp_activations(model, tokens)
@wrong("00.1", "check_mlp_activations", "pre-activations")
def pre_activations(m, t):
    return m.run_with_cache(t, names_filter=HPRE)[1][HPRE]


@wrong("00.1", "check_mlp_activations", "tuple")
def logits_and_cache(m, t):
    return m.run_with_cache(t)


@wrong("00.1", "check_mlp_activations", "logits")
def logits(m, t):
    return m(t)


@wrong("00.1", "check_mlp_activations", "whole cache")
def whole_cache(m, t):
    return m.run_with_cache(t)[1]


@wrong("00.1", "check_mlp_activations", "d_model")
def mlp_out(m, t):
    return m.run_with_cache(t)[1]["blocks.0.hook_mlp_out"]


@wrong("00.1", "check_mlp_activations", "flattened")
def flattened(m, t):
    return m.run_with_cache(t)[1][HP].flatten(0, 1)


@wrong("00.1", "check_mlp_activations", "one position per context")
def last_position_only(m, t):
    return m.run_with_cache(t)[1][HP][:, -1]


@wrong("00.1", "check_mlp_activations", "wrong order")
def transposed(m, t):
    return m.run_with_cache(t)[1][HP].transpose(1, 2)


@wrong("00.1", "check_mlp_activations", "should be a tensor")
def nested_list(m, t):
    return m.run_with_cache(t)[1][HP].tolist()


# ---------------------------------------------------------------- 00.2 top_neuron_for_token(acts, tokens, token_id)
@wrong("00.2", "check_top_neuron_for_token", "only the positions")
def no_mask(a, t, i):
    return int(a.mean((0, 1)).argmax())


@wrong("00.2", "check_top_neuron_for_token", "mean")
def max_not_mean(a, t, i):
    return int(a[t == i].max(0).values.argmax())


@wrong("00.2", "check_top_neuron_for_token", "not of a neuron")
def argmax_over_positions(a, t, i):
    return int(a.mean(-1).argmax())          # over the flattened positions


@wrong("00.2", "check_top_neuron_for_token", "off-by-one")
def one_based(a, t, i):
    return int(a[t == i].mean(0).argmax()) + 1


@wrong("00.2", "check_top_neuron_for_token", "the token's occurrences")
def argmax_over_occurrences(a, t, i):
    return int(a[t == i].mean(1).argmax())


@wrong("00.2", "check_top_neuron_for_token", "LOWEST")
def argmin(a, t, i):
    return int(a[t == i].mean(0).argmin())


@wrong("00.2", "check_top_neuron_for_token", "array of shape")
def returns_the_means(a, t, i):
    return a[t == i].mean(0)


# ---------------------------------------------------------------- 01.1a sae_forward(x, W_enc, b_enc, W_dec, b_dec)
def _fwd(f, x_hat_of):
    return lambda x, We, be, Wd, bd: (f(x, We, be, Wd, bd), x_hat_of(f(x, We, be, Wd, bd), x, We, be, Wd, bd))


_F = lambda x, We, be, Wd, bd: torch.relu((x - bd) @ We + be)
_XH = lambda f, x, We, be, Wd, bd: f @ Wd + bd


@wrong("01.1a", "check_sae_forward", "subtract b_dec")
def no_pre_bias(x, We, be, Wd, bd):
    return _fwd(lambda x, We, be, Wd, bd: torch.relu(x @ We + be), _XH)(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "add b_dec back")
def no_b_dec_in_x_hat(x, We, be, Wd, bd):
    return _fwd(_F, lambda f, *a: f @ a[3])(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "ReLU")
def no_relu(x, We, be, Wd, bd):
    return _fwd(lambda x, We, be, Wd, bd: (x - bd) @ We + be, _XH)(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "encoder bias")
def no_b_enc(x, We, be, Wd, bd):
    return _fwd(lambda x, We, be, Wd, bd: torch.relu((x - bd) @ We), _XH)(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "(x_hat, f)")
def swapped_outputs(x, We, be, Wd, bd):
    f, x_hat = _fwd(_F, _XH)(x, We, be, Wd, bd)
    return x_hat, f


@wrong("01.1a", "check_sae_forward", "added b_dec before encoding")
def plus_b_dec(x, We, be, Wd, bd):
    return _fwd(lambda x, We, be, Wd, bd: torch.relu((x + bd) @ We + be), _XH)(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "after the ReLU")
def bias_after_relu(x, We, be, Wd, bd):
    return _fwd(lambda x, We, be, Wd, bd: torch.relu((x - bd) @ We) + be, _XH)(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "W_enc.T")
def tied_decoder(x, We, be, Wd, bd):
    return _fwd(_F, lambda f, x, We, be, Wd, bd: f @ We.T + bd)(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "raised RuntimeError")
def transposed_encoder(x, We, be, Wd, bd):
    return _fwd(lambda x, We, be, Wd, bd: torch.relu((x - bd) @ We.T + be), _XH)(x, We, be, Wd, bd)


@wrong("01.1a", "check_sae_forward", "pre-activations, before the ReLU")
def decodes_pre_activations(x, We, be, Wd, bd):
    pre = (x - bd) @ We + be
    return torch.relu(pre), pre @ Wd + bd


# ---------------------------------------------------------------- 01.1b sae_loss(x, x_hat, f, l1_coeff)
@wrong("01.1b", "check_sae_loss", "summed over the d_in")
def mse_summed_over_dims(x, xh, f, lam):
    return (x - xh).pow(2).sum(-1).mean() + lam * f.sum(-1).mean()


@wrong("01.1b", "check_sae_loss", "L1 penalty is missing")
def no_l1(x, xh, f, lam):
    return (x - xh).pow(2).mean()


@wrong("01.1b", "check_sae_loss", "mean over features")
def l1_mean_over_features(x, xh, f, lam):
    return (x - xh).pow(2).mean() + lam * f.mean()


@wrong("01.1b", "check_sae_loss", "not squared")
def abs_error(x, xh, f, lam):
    return (x - xh).abs().mean() + lam * f.sum(-1).mean()


@wrong("01.1b", "check_sae_loss", "subtracted")
def minus_penalty(x, xh, f, lam):
    return (x - xh).pow(2).mean() - lam * f.sum(-1).mean()


@wrong("01.1b", "check_sae_loss", "L2 penalty")
def l2_penalty(x, xh, f, lam):
    return (x - xh).pow(2).mean() + lam * f.pow(2).sum(-1).mean()


@wrong("01.1b", "check_sae_loss", "multiplies the MSE")
def lambda_on_mse(x, xh, f, lam):
    return lam * (x - xh).pow(2).mean() + f.sum(-1).mean()


@wrong("01.1b", "check_sae_loss", "should be a number, got tuple")
def returns_both_terms(x, xh, f, lam):
    return (x - xh).pow(2).mean(), lam * f.sum(-1).mean()


# ---------------------------------------------------------------- 01.2 project_decoder_grad(W_dec, grad)
@wrong("01.2", "check_project_decoder_grad", "parallel component itself")
def parallel_part(W, g):
    return (g * W).sum(1, keepdim=True) * W


@wrong("01.2", "check_project_decoder_grad", "still points along")
def columns(W, g):
    return g - (g * W).sum(0, keepdim=True) * W


@wrong("01.2", "check_project_decoder_grad", "sign error")
def sign_error(W, g):                      # the issue's: grad + along * W_dec
    along = (g * W).sum(1, keepdim=True)
    return g + along * W


@wrong("01.2", "check_project_decoder_grad", "came back unchanged")
def unchanged(W, g):
    return g


@wrong("01.2", "check_project_decoder_grad", "changed W_dec")
def edits_w_dec(W, g):
    W -= 0.01 * g
    return g - (g * W).sum(1, keepdim=True) * W


@wrong("01.2", "check_project_decoder_grad", "ALL the dictionary's rows")
def whole_dictionary(W, g):
    return g - (g @ W.T) @ W


@wrong("01.2", "check_project_decoder_grad", "rescaled")
def normalised_rows(W, g):
    p = g - (g * W).sum(1, keepdim=True) * W
    return p / p.norm(dim=1, keepdim=True)


@wrong("01.2", "check_project_decoder_grad", "raised RuntimeError")
def no_keepdim(W, g):
    return g - (g * W).sum(1) * W


# ---------------------------------------------------------------- 01.3a fvu(x, x_hat)
@wrong("01.3a", "check_fvu", "about the mean")
def about_zero(x, xh):
    return float((x - xh).pow(2).sum() / x.pow(2).sum())


@wrong("01.3a", "check_fvu", "EXPLAINED")
def explained(x, xh):
    return 1 - float((x - xh).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@wrong("01.3a", "check_fvu", "reconstruction's mean")
def centred_on_x_hat(x, xh):               # the false pass
    return float((x - xh).pow(2).sum() / (x - xh.mean(0)).pow(2).sum())


@wrong("01.3a", "check_fvu", "n-1")
def unbiased_variance(x, xh):              # the issue's: n-1 variance
    return float((x - xh).pow(2).mean(0).sum() / x.var(0).sum())


@wrong("01.3a", "check_fvu", "one FVU per dimension")
def per_dimension(x, xh):
    return float(((x - xh).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean())


@wrong("01.3a", "check_fvu", "per token")
def mean_over_dims(x, xh):
    return float((x - xh).pow(2).sum() / (x - x.mean(1, keepdim=True)).pow(2).sum())


@wrong("01.3a", "check_fvu", "global mean")
def global_mean(x, xh):
    return float((x - xh).pow(2).sum() / (x - x.mean()).pow(2).sum())


@wrong("01.3a", "check_fvu", "variance of the reconstruction")
def variance_of_x_hat(x, xh):
    return float((x - xh).pow(2).sum() / (xh - xh.mean(0)).pow(2).sum())


@wrong("01.3a", "check_fvu", "square root")
def ratio_of_norms(x, xh):
    return float((x - xh).norm() / (x - x.mean(0)).norm())


@wrong("01.3a", "check_fvu", "a mean on one side")
def mean_over_sum(x, xh):
    return float((x - xh).pow(2).mean() / (x - x.mean(0)).pow(2).sum())


@wrong("01.3a", "check_fvu", "x.var()")
def torch_global_var(x, xh):
    return float((x - xh).pow(2).mean() / x.var())


@wrong("01.3a", "check_fvu", "one number")
def per_dimension_vector(x, xh):
    return (x - xh).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)


# ---------------------------------------------------------------- 01.3b loss_recovered(ce_clean, ce_sae, ce_ablated)
@wrong("01.3b", "check_loss_recovered", "share LOST")
def share_lost(c, s, a):
    return (s - c) / (a - c)


@wrong("01.3b", "check_loss_recovered", "percentage")
def percentage(c, s, a):
    return 100 * (a - s) / (a - c)


@wrong("01.3b", "check_loss_recovered", "sign error")
def negated(c, s, a):
    return (c - s) / (a - c)


@wrong("01.3b", "check_loss_recovered", "upside down")
def upside_down(c, s, a):
    return (a - c) / (a - s) if a != s else float("inf")


@wrong("01.3b", "check_loss_recovered", "whole ablated loss")
def no_clean_in_denominator(c, s, a):
    return (a - s) / a


# ---------------------------------------------------------------- 02.1 specificity_sensitivity(acts, context, threshold)
def _rates(on, c):
    both = int((on & c).sum())
    return both, max(1, int(on.sum())), max(1, int(c.sum()))


@wrong("02.1", "check_specificity_sensitivity", "swapped")
def spec_sens_swapped(a, c, t):
    both, n_on, n_c = _rates(a > t, c)
    return both / n_c, both / n_on


@wrong("02.1", "check_specificity_sensitivity", "strictly above")
def greater_or_equal(a, c, t):
    both, n_on, n_c = _rates(a >= t, c)
    return both / n_on, both / n_c


@wrong("02.1", "check_specificity_sensitivity", "counts")
def counts(a, c, t):
    on = a > t
    return int((on & c).sum()), int((on & c).sum())


@wrong("02.1", "check_specificity_sensitivity", "all tokens")
def over_all_tokens(a, c, t):
    on = a > t
    return int((on & c).sum()) / len(a), int((on & c).sum()) / len(a)


@wrong("02.1", "check_specificity_sensitivity", "threshold is ignored")
def ignores_threshold(a, c, t):
    both, n_on, n_c = _rates(a > 0, c)
    return both / n_on, both / n_c


@wrong("02.1", "check_specificity_sensitivity", "divided by zero")
def zero_division(a, c, t):
    on = a > t
    return int((on & c).sum()) / int(on.sum()), int((on & c).sum()) / int(c.sum())


@wrong("02.1", "check_specificity_sensitivity", "nan")
def nan_when_never_on(a, c, t):
    on = (a > t).float()
    return float((on * c).sum() / on.sum()), float((on * c).sum() / c.sum())


@wrong("02.1", "check_specificity_sensitivity", "medical")
def true_negative_rate(a, c, t):
    on = a > t
    return int((~on & ~c).sum()) / max(1, int((~c).sum())), int((on & c).sum()) / max(1, int(c.sum()))


# ---------------------------------------------------------------- 02.3 best_feature_for_context(acts, context, bar)
def _spec_sens(acts, context, on=None):
    on = acts > 0 if on is None else on
    both = (on & context[:, None]).sum(0)
    return both / np.maximum(1, on.sum(0)), both / max(1, context.sum())


@wrong("02.3", "check_best_feature_for_context", "catches only 10%")
def bar_ignored(acts, context, bar):
    spec, sens = _spec_sens(acts, context)
    f = int(spec.argmax())
    return f, float(spec[f]), float(sens[f])


@wrong("02.3", "check_best_feature_for_context", "most SPECIFIC")
def most_sensitive(acts, context, bar):
    spec, sens = _spec_sens(acts, context)
    f = int(sens.argmax())
    return f, float(spec[f]), float(sens[f])


@wrong("02.3", "check_best_feature_for_context", "has the best F1")
def best_f1(acts, context, bar):
    spec, sens = _spec_sens(acts, context)
    f1 = 2 * spec * sens / np.maximum(spec + sens, 1e-12)
    f = int(f1.argmax())
    return f, float(spec[f]), float(sens[f])


@wrong("02.3", "check_best_feature_for_context", "strictly above zero")
def on_at_zero(acts, context, bar):
    spec, sens = _spec_sens(acts, context, on=acts >= 0)
    ok = np.flatnonzero(sens >= bar)
    f = int(ok[spec[ok].argmax()])
    return f, float(spec[f]), float(sens[f])


@wrong("02.3", "check_best_feature_for_context", "swapped")
def scores_swapped(acts, context, bar):
    spec, sens = _spec_sens(acts, context)
    ok = np.flatnonzero(sens >= bar)
    f = int(ok[spec[ok].argmax()])
    return f, float(sens[f]), float(spec[f])


@wrong("02.3", "check_best_feature_for_context", "no feature reaches")
def no_minus_one(acts, context, bar):
    spec, sens = _spec_sens(acts, context)
    ok = np.flatnonzero(sens >= bar)
    f = int(ok[spec[ok].argmax()]) if len(ok) else int(spec.argmax())
    return f, float(spec[f]), float(sens[f])


# ---------------------------------------------------------------- 03.1 simulation_score(true, pred, weights)
def _guarded(x, y, w):
    w = np.asarray(w, float) / np.sum(w)
    dx, dy = x - w @ x, y - w @ y
    vx, vy = w @ (dx * dx), w @ (dy * dy)
    return 0.0 if vx <= 1e-12 * max(1.0, x.max() ** 2) or vy <= 1e-12 * max(1.0, y.max() ** 2) \
        else float(w @ (dx * dy) / np.sqrt(vx * vy))


@wrong("03.1", "check_simulation_score", "ignored the weights")
def unweighted(t, p, w):
    return weighted_spearman(t, p)


@wrong("03.1", "check_simulation_score", "not their ranks")
def values_not_ranks(t, p, w):
    return weighted_pearson(t, p, w)


@wrong("03.1", "check_simulation_score", "constant")
def unguarded(t, p, w):
    w = np.asarray(w, float) / np.sum(w)
    rt, rp = weighted_rank(t, w), weighted_rank(p, w)
    dt, dp = rt - w @ rt, rp - w @ rp
    if np.ptp(p) == 0:
        return float("nan")          # 0 / 0, as an unguarded division gives
    return float(w @ (dt * dp) / np.sqrt((w @ (dt * dt)) * (w @ (dp * dp))))


@wrong("03.1", "check_simulation_score", "UNWEIGHTED Pearson of the ranks")
def weighted_ranks_unweighted_moments(t, p, w):     # the issue's
    return _guarded(weighted_rank(t, w), weighted_rank(p, w), np.ones_like(w))


@wrong("03.1", "check_simulation_score", "unweighted ranks")
def rankdata_with_weights(t, p, w):
    one = np.ones_like(w)
    return _guarded(weighted_rank(t, one), weighted_rank(p, one), w)


@wrong("03.1", "check_simulation_score", "break ties by position")
def argsort_ranks(t, p, w):
    r = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)
    return _guarded(r(t), r(p), w)


@wrong("03.1", "check_simulation_score", "covariance")
def covariance_only(t, p, w):
    w = np.asarray(w, float) / np.sum(w)
    rt, rp = weighted_rank(t, w), weighted_rank(p, w)
    return float(w @ ((rt - w @ rt) * (rp - w @ rp)))


@wrong("03.1", "check_simulation_score", "constant prediction")
def constant_scores_one(t, p, w):
    return 1.0 if np.ptp(p) == 0 else weighted_spearman(t, p, w)


# ---------------------------------------------------------------- 04.1 max_activation_correlation(acts_a, acts_b)
def _best(c):
    return c.max(1), c.argmax(1)


@wrong("04.1", "check_max_activation_correlation", "cosine similarities")
def cosine(a, b):
    return _best((a / np.linalg.norm(a, axis=0)).T @ (b / np.linalg.norm(b, axis=0)))


@wrong("04.1", "check_max_activation_correlation", "one per unit of B")
def max_over_a(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    c = (a / np.linalg.norm(a, axis=0)).T @ (b / np.linalg.norm(b, axis=0))
    return c.max(0), c.argmax(0)


@wrong("04.1", "check_max_activation_correlation", "above 1")
def cov_over_std(a, b):                    # the issue's: a correlation above 1 (np.cov's n-1 over np.std's n)
    n = a.shape[0]
    c = (a - a.mean(0)).T @ (b - b.mean(0)) / (n - 1) / np.outer(a.std(0), b.std(0))
    return _best(c)


@wrong("04.1", "check_max_activation_correlation", "covariances")
def covariance(a, b):
    return _best((a - a.mean(0)).T @ (b - b.mean(0)) / a.shape[0])


@wrong("04.1", "check_max_activation_correlation", "only A's units are normalised")
def only_a_normalised(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    return _best((a / np.linalg.norm(a, axis=0)).T @ b)


@wrong("04.1", "check_max_activation_correlation", "|correlation|")
def absolute(a, b):
    return _best(np.abs(np.corrcoef(a.T, b.T)[:a.shape[1], a.shape[1]:]))


@wrong("04.1", "check_max_activation_correlation", "rows")
def rows_normalised(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    return _best((a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)).T
                 @ (b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)))


@wrong("04.1", "check_max_activation_correlation", "one too high")
def one_based_index(a, b):
    v, i = _best(np.corrcoef(a.T, b.T)[:a.shape[1], a.shape[1]:])
    return v, i + 1


@wrong("04.1", "check_max_activation_correlation", "(best_index, best_corr)")
def order_swapped(a, b):
    v, i = _best(np.corrcoef(a.T, b.T)[:a.shape[1], a.shape[1]:])
    return i, v


# ---------------------------------------------------------------- 05.1 link_parents(acts_small, acts_large, threshold)
def _cos(s, l):
    return (s / np.linalg.norm(s, axis=0)).T @ (l / np.linalg.norm(l, axis=0))


def _link(m, t):
    return np.where(m.max(0) > t, m.argmax(0), -1)


@wrong("05.1", "check_link_parents", "threshold")
def no_threshold(s, l, t=0.4):
    return _cos(s, l).argmax(0)


@wrong("05.1", "check_link_parents", "Pearson")
def pearson_centred(s, l, t=0.4):          # the false pass, first implementation
    s, l = s - s.mean(0), l - l.mean(0)
    return _link(_cos(s, l), t)


@wrong("05.1", "check_link_parents", "Pearson")
def pearson_corrcoef(s, l, t=0.4):         # the false pass, second implementation
    return _link(np.corrcoef(s.T, l.T)[:s.shape[1], s.shape[1]:], t)


@wrong("05.1", "check_link_parents", "only the smaller SAE")
def only_small_normalised(s, l, t=0.4):    # the misleading message ("apply the threshold")
    return _link((s / np.linalg.norm(s, axis=0)).T @ l, t)


@wrong("05.1", "check_link_parents", "raw dot products")
def raw_dot(s, l, t=0.4):
    return _link(s.T @ l, t)


@wrong("05.1", "check_link_parents", "not divided by the smaller SAE's norms")
def only_large_normalised(s, l, t=0.4):
    return _link(s.T @ (l / np.linalg.norm(l, axis=0)), t)


@wrong("05.1", "check_link_parents", "one per feature of the smaller")
def per_small_feature(s, l, t=0.4):
    c = _cos(s, l)
    return np.where(c.max(1) > t, c.argmax(1), -1)


@wrong("05.1", "check_link_parents", "None")
def none_for_orphans(s, l, t=0.4):
    c = _cos(s, l)
    return [int(i) if m > t else None for i, m in zip(c.argmax(0), c.max(0))]


@wrong("05.1", "check_link_parents", "nan")
def nan_for_orphans(s, l, t=0.4):
    c = _cos(s, l)
    return np.where(c.max(0) > t, c.argmax(0).astype(float), np.nan)


@wrong("05.1", "check_link_parents", "with 0")
def zero_for_orphans(s, l, t=0.4):
    c = _cos(s, l)
    return np.where(c.max(0) > t, c.argmax(0), 0)


# ---------------------------------------------------------------- 06.1 clamp_hook(sae, feature, value, keep_error)
def _hook(edit):
    def make(sae, feat, value, keep_error=True):
        def hook(acts, hook):
            return edit(sae, feat, value, keep_error, acts)
        return hook
    return make


def _clamped(sae, feat, value, acts):
    f = sae.encode(acts)
    f2 = f.clone()
    f2[..., feat] = value
    return f, f2


@wrong("06.1", "check_clamp_hook", "forgot the error term")
def replace(sae, feat, value, keep_error=True):
    return _hook(lambda sae, feat, value, k, acts: sae.decode(_clamped(sae, feat, value, acts)[1]))(
        sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "'add' steering")
def add(sae, feat, value, keep_error=True):
    return lambda acts, hook: acts + value * sae.W_dec_raw[feat]


@wrong("06.1", "check_clamp_hook", "returns None")
def returns_none(sae, feat, value, keep_error=True):
    def hook(acts, hook):
        acts += 0
    return hook


@wrong("06.1", "check_clamp_hook", "sign error")
def sign_flipped(sae, feat, value, keep_error=True):      # the issue's
    def edit(sae, feat, value, k, acts):
        f, f2 = _clamped(sae, feat, value, acts)
        return acts - sae.decode(f2) + sae.decode(f)
    return _hook(edit)(sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "clone it first")
def no_clone(sae, feat, value, keep_error=True):
    def edit(sae, feat, value, k, acts):
        f = sae.encode(acts)
        f_clamped = f
        f_clamped[..., feat] = value
        return acts + sae.decode(f_clamped) - sae.decode(f)
    return _hook(edit)(sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "scaled space")
def scaled_w_dec(sae, feat, value, keep_error=True):
    def edit(sae, feat, value, k, acts):
        f = sae.encode(acts)
        return acts + (value - f[..., feat:feat + 1]) * sae.W_dec[feat]
    return _hook(edit)(sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "multiplied")
def multiplies(sae, feat, value, keep_error=True):
    def edit(sae, feat, value, k, acts):
        f = sae.encode(acts)
        f2 = f.clone()
        f2[..., feat] *= value
        return acts + sae.decode(f2) - sae.decode(f)
    return _hook(edit)(sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "MLP neuron")
def sets_the_neuron(sae, feat, value, keep_error=True):
    def edit(sae, feat, value, k, acts):
        acts = acts.clone()
        acts[..., feat] = value
        return acts
    return _hook(edit)(sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "off-by-one")
def next_feature(sae, feat, value, keep_error=True):
    def edit(sae, feat, value, k, acts):
        f, f2 = _clamped(sae, feat + 1, value, acts)
        return acts + sae.decode(f2) - sae.decode(f)
    return _hook(edit)(sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "keep_error=False you still kept")
def keep_error_ignored(sae, feat, value, keep_error=True):
    def edit(sae, feat, value, k, acts):
        f, f2 = _clamped(sae, feat, value, acts)
        return acts + sae.decode(f2) - sae.decode(f)
    return _hook(edit)(sae, feat, value, keep_error)


@wrong("06.1", "check_clamp_hook", "only the last position")
def last_position(sae, feat, value, keep_error=True):
    def edit(sae, feat, value, k, acts):
        f, f2 = _clamped(sae, feat, value, acts)
        out = acts.clone()
        out[:, -1] = (acts + sae.decode(f2) - sae.decode(f))[:, -1]
        return out
    return _hook(edit)(sae, feat, value, keep_error)


# ---------------------------------------------------------------- right answers, written otherwise
@right("00.1", "check_mlp_activations")
def with_a_hook(m, t):
    got = {}
    m.run_with_hooks(t, fwd_hooks=[(HP, lambda a, hook: got.setdefault("a", a.clone()))])
    return got["a"].detach().numpy()       # a numpy array is accepted


@right("00.2", "check_top_neuron_for_token")
def sum_of_masked(a, t, i):
    return (a * (t == i)[..., None]).sum((0, 1)).argmax()       # a 0-d tensor; sum has the mean's argmax


@right("01.1a", "check_sae_forward")
def forward_as_list(x, We, be, Wd, bd):
    f = torch.clamp(torch.einsum("bi,if->bf", x - bd, We) + be, min=0)
    return [f, torch.addmm(bd, f, Wd)]


@right("01.1b", "check_sae_loss")
def loss_with_functional(x, xh, f, lam):
    return torch.nn.functional.mse_loss(xh, x) + lam * f.abs().sum(-1).mean()


@right("01.2", "check_project_decoder_grad")
def divides_by_the_norm(W, g):
    return g - (g * W).sum(1, keepdim=True) / W.pow(2).sum(1, keepdim=True) * W


@right("01.3a", "check_fvu")
def fvu_with_var(x, xh):
    return (x - xh).pow(2).mean(0).sum() / x.var(0, unbiased=False).sum()      # a 0-d tensor


@right("01.3b", "check_loss_recovered")
def one_minus(c, s, a):
    return 1 - (s - c) / (a - c)


@right("02.1", "check_specificity_sensitivity")
def with_tensors(a, c, t):
    on = a > t
    both = (on & c).sum()
    return both / on.sum().clamp(min=1), both / c.sum().clamp(min=1)


@right("02.3", "check_best_feature_for_context")
def with_a_loop(acts, context, bar):
    best = (-1, 0.0, 0.0)
    for j in range(acts.shape[1]):
        on = acts[:, j] > 0
        spec = (on & context).sum() / max(1, on.sum())
        sens = (on & context).sum() / max(1, context.sum())
        if sens >= bar and (best[0] < 0 or spec > best[1]):
            best = (j, float(spec), float(sens))
    return best


@right("03.1", "check_simulation_score")
def with_np_cov(t, p, w):
    rt, rp = weighted_rank(t, w), weighted_rank(p, w)
    c = np.cov(np.vstack([rt, rp]), aweights=w)
    return 0.0 if min(c[0, 0], c[1, 1]) <= 1e-12 * max(rt.max(), rp.max()) ** 2 else \
        float(c[0, 1] / np.sqrt(c[0, 0] * c[1, 1]))


@right("04.1", "check_max_activation_correlation")
def with_corrcoef(a, b):
    c = np.corrcoef(a.T, b.T)[:a.shape[1], a.shape[1]:]
    return torch.from_numpy(c.max(1)), torch.from_numpy(c.argmax(1))


@right("05.1", "check_link_parents")
def with_torch(s, l, t=0.4):
    s, l = torch.from_numpy(s).float(), torch.from_numpy(l).float()
    c = torch.nn.functional.normalize(s, dim=0).T @ torch.nn.functional.normalize(l, dim=0)
    best, arg = c.max(0)
    return torch.where(best > t, arg, -1).tolist()


@right("06.1", "check_clamp_hook")
def with_the_decoder_rows(sae, feat, value, keep_error=True):
    def hook(acts, hook):
        f = sae.encode(acts)
        f2 = f.clone()
        f2[..., feat] = value
        return acts + (f2 - f) @ sae.W_dec_raw if keep_error else sae.decode(f2)
    return hook


# ---------------------------------------------------------------- 01.4 sae_train_step(params, opt, x, l1_coeff, dead)
def _student_step(*, renorm=True, project=True, zero_grad=True, worst=True, centre=True, scale=True,
                  reset_bias=True, only_dead=True, in_place=True, loss_after=False):
    """A student's step, written apart from the check's reference; each switch is one mistake."""
    def step(p, opt, x, lam, dead=None):
        We, be, Wd, bd = p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"]
        if dead is not None and bool(dead.any()):
            which = dead if only_dead else torch.ones_like(dead)
            with torch.no_grad():
                xh = torch.relu((x - bd) @ We + be) @ Wd + bd
                order = torch.argsort(((x - xh) ** 2).sum(-1), descending=worst)[:int(which.sum())]
                v = (x[order] - bd) if centre else x[order]
                v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
                s = 0.2 * torch.linalg.vector_norm(We[:, ~which], dim=0).mean() if scale and (~which).any() else 1.0
                Wd[which] = v
                We[:, which] = (v * s).T
                if reset_bias:
                    be[which] = 0
        if zero_grad:
            for t in p.values():
                t.grad = None
        f = torch.relu((x - bd) @ We + be)
        loss = ((x - (f @ Wd + bd)) ** 2).mean() + lam * f.sum(1).mean()
        loss.backward()
        if project:
            Wd.grad.sub_((Wd.grad * Wd).sum(-1, keepdim=True) * Wd)
        opt.step()
        if renorm:
            with torch.no_grad():
                if in_place:
                    Wd.div_(torch.linalg.vector_norm(Wd, dim=-1, keepdim=True))
                else:
                    p["W_dec"] = Wd / torch.linalg.vector_norm(Wd, dim=-1, keepdim=True)
        if loss_after:
            with torch.no_grad():
                f = torch.relu((x - bd) @ We + be)
                return float(((x - (f @ Wd + bd)) ** 2).mean() + lam * f.sum(1).mean())
        return loss.item()
    return step


for _name, _says, _switches in [
    ("no_renormalisation", "not renormalised", dict(renorm=False)),
    ("no_projection", "not projected", dict(project=False)),
    ("no_zero_grad", "never zeroed", dict(zero_grad=False)),
    ("resamples_best_inputs", "reconstructs BEST", dict(worst=False)),
    ("resamples_raw_inputs", "subtract b_dec first", dict(centre=False)),
    ("unit_encoder_columns", "keep unit norm", dict(scale=False)),
    ("keeps_dead_bias", "not reset to 0", dict(reset_bias=False)),
    ("resamples_every_feature", "every feature was resampled", dict(only_dead=False)),
    ("new_tensor_for_w_dec", "new tensor", dict(in_place=False)),
    ("loss_after_the_step", "before the step", dict(loss_after=True)),
]:
    WRONG.append(Answer("01.4", "check_sae_train_step", _name, _student_step(**_switches), _says))
RIGHT.append(Answer("01.4", "check_sae_train_step", "student_style_step", _student_step()))


@wrong("00.1", "check_mlp_activations", "dtype torch.float16")
def half_precision(m, t):
    return m.run_with_cache(t)[1][HP].half()


@wrong("00.1", "check_mlp_activations", "dtype torch.int64")
def rounded_to_integers(m, t):
    return m.run_with_cache(t)[1][HP].round().long()


@wrong("01.1a", "check_sae_forward", "should be a tensor, got list")
def x_hat_as_a_list(x, We, be, Wd, bd):
    f = torch.relu((x - bd) @ We + be)
    return f, (f @ Wd + bd).tolist()


# ---------------------------------------------------------------- 08.1 absorption_rate(feature_acts, labels, main, decoder, direction, min_cos)
def _carriers(decoder, direction, main, min_cos, normalise=True):
    d = np.asarray(decoder, float)
    if normalise:
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    return [j for j in np.flatnonzero(d @ u >= min_cos) if j != main]


@wrong("08.1", "check_absorption_rate", "divided by every token")
def absorption_over_all_tokens(acts, labels, main, decoder, direction, min_cos=0.5):
    c = _carriers(decoder, direction, main, min_cos)
    hit = labels & (acts[:, main] == 0) & (acts[:, c] > 0).any(1)
    return hit.sum() / len(labels)


@wrong("08.1", "check_absorption_rate", "1 - its recall")
def only_the_main_feature_silent(acts, labels, main, decoder, direction, min_cos=0.5):
    return float((acts[labels, main] == 0).mean())


@wrong("08.1", "check_absorption_rate", "raw dot products")
def unnormalised_decoder(acts, labels, main, decoder, direction, min_cos=0.5):
    c = _carriers(decoder, direction, main, min_cos, normalise=False)
    dom = acts[labels]
    return float(((dom[:, main] == 0) & (dom[:, c] > 0).any(1)).mean())


@wrong("08.1", "check_absorption_rate", "firing beside the main feature is not absorption")
def absorber_fires_anywhere(acts, labels, main, decoder, direction, min_cos=0.5):
    c = _carriers(decoder, direction, main, min_cos)
    return float((acts[labels][:, c] > 0).any(1).mean())


@wrong("08.1", "check_absorption_rate", "pointing AWAY")
def absolute_cosine(acts, labels, main, decoder, direction, min_cos=0.5):
    d = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
    cos = d @ (direction / np.linalg.norm(direction))
    c = [j for j in np.flatnonzero(np.abs(cos) >= min_cos) if j != main]
    dom = acts[labels]
    return float(((dom[:, main] == 0) & (dom[:, c] > 0).any(1)).mean())


@right("08.1", "check_absorption_rate")
def absorption_token_by_token(acts, labels, main, decoder, direction, min_cos=0.5):
    u = torch.as_tensor(direction, dtype=torch.float64)
    u = u / u.norm()
    carriers = [j for j in range(len(decoder)) if j != main and
                float(torch.as_tensor(decoder[j], dtype=torch.float64) @ u) / float(np.linalg.norm(decoder[j])) >= min_cos]
    n = hits = 0
    for t in range(len(labels)):
        if labels[t]:
            n += 1
            hits += acts[t, main] <= 0 and any(acts[t, j] > 0 for j in carriers)
    return hits / n
