"""How well does one unit's activation detect a binary label (a proxy)? Threshold-free and best-threshold scores.

A unit is read as a detector: "the context is present where the activation reaches t".
Activations are passed sparsely, as the activation index stores them: the positions where
the unit is non-zero and their values; every other token counts as 0.

- :func:`auroc`: area under the ROC curve (ties count half).
- :func:`pr_curve`, :func:`precision_at_recall`: the precision-recall curve of "act >= t".
- :func:`operating_point`: the threshold with the best F1 (the harmonic mean of specificity,
  P(label | act >= t), and sensitivity, P(act >= t | label)), and the average precision.

Why a best threshold: the ReLU neurons that best match a proxy here are "on" (> 0) on 15-55%
of tokens, so judging one at 0 calls it unspecific by construction, while an SAE feature's 0
is a real off state. Giving every unit its own best threshold compares the units, not their
zero points.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auroc(acts: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of dense ``acts`` as a score for ``y`` (ties count half); fast when most acts are 0."""
    a = np.asarray(acts, np.float64).reshape(-1)
    y = np.asarray(y, bool).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    if (a < 0).any():  # general case: rank everything
        rank_sum = float(rankdata(a)[y].sum())
    else:  # the zeros form one tie block below every non-zero value
        nz = np.flatnonzero(a > 0)
        n_zero = len(a) - len(nz)
        pos_nz = y[nz]
        rank_sum = (n_pos - int(pos_nz.sum())) * (n_zero + 1) / 2
        if len(nz):
            rank_sum += float((rankdata(a[nz])[pos_nz] + n_zero).sum())
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_curve(pos: np.ndarray, val: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, threshold)`` of "act >= t" for each distinct positive value t, highest t first.

    ``pos``/``val``: flat positions and values where the unit is > 0; ``y``: the flat bool label.
    """
    y = np.asarray(y, bool).reshape(-1)
    pos, val = np.asarray(pos, np.int64), np.asarray(val, np.float64)
    if len(pos) != len(val):
        raise ValueError(f"pos and val differ in length ({len(pos)} vs {len(val)})")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError("the label is true on no token or on every token: nothing to detect")
    keep = val > 0
    pos, val = pos[keep], val[keep]
    order = np.argsort(-val, kind="stable")
    v, hit = val[order], y[pos[order]]
    tp = np.cumsum(hit)
    k = np.arange(1, len(v) + 1)
    last = np.r_[v[1:] != v[:-1], True] if len(v) else np.zeros(0, bool)   # ties go together
    return tp[last] / k[last], tp[last] / n_pos, v[last]


def precision_at_recall(pos: np.ndarray, val: np.ndarray, y: np.ndarray, recall: float) -> float:
    """The best precision (specificity) of any threshold whose recall (sensitivity) is >= ``recall``; 0 if none."""
    precision, rec, _ = pr_curve(pos, val, y)
    ok = rec >= recall - 1e-12
    return float(precision[ok].max()) if ok.any() else 0.0


def operating_point(pos: np.ndarray, val: np.ndarray, y: np.ndarray) -> dict:
    """The best-F1 threshold of a sparse unit for the flat bool label ``y``, and its average precision.

    ``pos``/``val``: flat positions and values where the unit is > 0. Thresholds run over the
    unit's distinct positive values ("act >= t"); the tokens at 0 never count as detections.
    Returns ``{"f1", "threshold", "precision", "recall", "average_precision"}`` (precision is the
    specificity at that threshold, recall the sensitivity); f1, precision and recall are 0 when
    the unit never fires on the label. Average precision is the area under the precision-recall
    curve, with the tokens at 0 as its last step (recall 1 at the label's base rate).
    """
    precision, recall, v = pr_curve(pos, val, y)
    y = np.asarray(y, bool).reshape(-1)
    base = float(y.mean())
    f1 = np.where(recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    # area under the PR curve (step rule), closing with the zero block: recall 1 at the base rate
    ap = float(np.sum(np.diff(np.r_[0.0, recall, 1.0]) * np.r_[precision, base]))
    if not len(f1) or f1.max() == 0:
        return {"f1": 0.0, "threshold": float("nan"), "precision": 0.0, "recall": 0.0, "average_precision": ap}
    i = int(np.argmax(f1))
    return {"f1": float(f1[i]), "threshold": float(v[i]), "precision": float(precision[i]),
            "recall": float(recall[i]), "average_precision": ap}
