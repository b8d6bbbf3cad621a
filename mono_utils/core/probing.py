"""Two measures that tell a dictionary's units apart from random directions: sparse probing and absorption.

Sparse probing (SAEBench; Gurnee et al. 2023): can a label be read off k units? The k units whose mean
activation differs most between the label's tokens and the others are picked on a training split, a
logistic regression is fitted on those k units alone, and its accuracy is measured on held-out tokens,
with both classes sampled equally (so chance is 0.5 whatever the label's share).

Absorption (SAEBench's definition, adapted from first letters to our domain labels): a domain's main
feature should fire on the domain's tokens. On the tokens where it stays silent, another feature may
fire in its place that carries the same direction: that feature has *absorbed* the domain there. The
domain's direction is the difference of the mean MLP activation on the domain's tokens and elsewhere
(a linear probe's direction, as SAEBench uses, without fitting one); a feature carries it when its
decoder vector's cosine with it is at least ``min_cos``. The absorption rate is the share of the
domain's tokens on which the main feature is silent while such a feature fires.

Both are plain NumPy (the logistic regression is a few Newton steps on at most ``max(ks)`` inputs), so
they run in the student install and are exact to reproduce: every sampling takes a seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 25) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularised logistic regression, by Newton's method (few inputs, exact)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit_logistic needs x [n, k] and y [n], got {x.shape} and {y.shape}")
    scale = x.std(0) + 1e-12                    # standardised inputs: one l2 fits units of any size
    xs = np.hstack([(x - x.mean(0)) / scale, np.ones((len(x), 1))])
    w = np.zeros(xs.shape[1])
    reg = np.full(xs.shape[1], l2 * len(x))
    reg[-1] = 0.0                               # the bias is not penalised
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -30, 30)))
        grad = xs.T @ (p - y) + reg * w
        hess = (xs * (p * (1 - p))[:, None]).T @ xs + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    coef = w[:-1] / scale
    return coef, float(w[-1] - coef @ x.mean(0))


def balanced_split(y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with both classes equally many in each (the smaller class sets the size)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n = min(len(pos), len(neg))
    if n < 4:
        raise ValueError(f"a probe needs at least 4 tokens of each class, got {len(pos)} with the label and "
                         f"{len(neg)} without: use more tokens or a more common label")
    pos, neg = rng.permutation(pos)[:n], rng.permutation(neg)[:n]
    n_test = max(1, int(round(n * test_frac)))
    test = np.concatenate([pos[:n_test], neg[:n_test]])
    train = np.concatenate([pos[n_test:], neg[n_test:]])
    return train, test


def sparse_probing(acts: np.ndarray, labels: np.ndarray, ks=(1, 2, 5, 20), test_frac: float = 0.3,
                   seed: int = 0) -> dict[int, float]:
    """Held-out accuracy (balanced classes, chance 0.5) of a logistic probe on the top-k units, for each k.

    ``acts`` [tokens, units]: the dictionary's activations; ``labels`` [tokens] bool. The k units are the
    ones whose mean activation differs most between the classes on the training split only.
    """
    acts = np.asarray(acts, dtype=np.float32)
    labels = np.asarray(labels, dtype=bool)
    if acts.ndim != 2 or len(acts) != len(labels):
        raise ValueError(f"sparse_probing needs acts [tokens, units] and labels [tokens], got {acts.shape} and "
                         f"{labels.shape}")
    train, test = balanced_split(labels, test_frac, seed)
    diff = np.abs(acts[train][labels[train]].mean(0) - acts[train][~labels[train]].mean(0))
    order = np.argsort(-diff, kind="stable")
    out = {}
    for k in ks:
        units = order[:min(k, acts.shape[1])]
        coef, bias = fit_logistic(acts[train][:, units], labels[train])
        pred = acts[test][:, units] @ coef + bias > 0
        out[int(k)] = float((pred == labels[test]).mean())
    return out


@dataclass
class Absorption:
    rate: float               # share of the domain's tokens: main silent, an absorbing feature firing
    main_recall: float        # share of the domain's tokens on which the main feature fires
    absorbers: list[int]      # the features (other than main) that carry the domain's direction
    n_tokens: int             # the domain's tokens


def domain_direction(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit vector from the mean MLP activation elsewhere to the mean on the domain's tokens."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("a domain direction needs tokens with and without the label")
    d = x[labels].mean(0) - x[~labels].mean(0)
    return d / (np.linalg.norm(d) + 1e-12)


def absorption(feature_acts: np.ndarray, labels: np.ndarray, main: int, decoder: np.ndarray,
               direction: np.ndarray, min_cos: float = 0.5) -> Absorption:
    """How often ``main`` stays silent on the domain's tokens while a feature carrying ``direction`` fires.

    ``feature_acts`` [tokens, features]; ``decoder`` [features, d]: each feature's dictionary vector;
    ``direction`` [d]: the domain's direction (``domain_direction``).
    """
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        raise ValueError("absorption needs at least one token of the domain")
    dec = decoder / (np.linalg.norm(decoder, axis=1, keepdims=True) + 1e-12)
    cos = dec @ (direction / (np.linalg.norm(direction) + 1e-12))
    absorbers = [int(j) for j in np.flatnonzero(cos >= min_cos) if j != main]
    acts = feature_acts[labels]
    main_on = acts[:, main] > 0
    other_on = (acts[:, absorbers] > 0).any(1) if absorbers else np.zeros(len(acts), dtype=bool)
    return Absorption(rate=float((~main_on & other_on).mean()), main_recall=float(main_on.mean()),
                      absorbers=absorbers, n_tokens=int(labels.sum()))
