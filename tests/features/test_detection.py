import numpy as np
import pytest

from mono_utils.features.detection import auroc, operating_point, precision_at_recall


def _sparse(a):
    pos = np.flatnonzero(a > 0)
    return pos, a[pos]


def test_operating_point_matches_sklearn():
    from sklearn.metrics import average_precision_score, precision_recall_curve
    g = np.random.default_rng(0)
    for trial in range(5):
        n = 3000
        y = g.random(n) < 0.1
        a = np.where(g.random(n) < 0.6, 0, np.round(g.random(n) + 1.5 * y, 2))   # ties on purpose
        op = operating_point(*_sparse(a), y)
        prec, rec, thr = precision_recall_curve(y, a)
        keep = thr > 0                               # "act >= t" with t > 0: the zeros never detect
        f1 = 2 * prec[:-1][keep] * rec[:-1][keep] / np.maximum(prec[:-1][keep] + rec[:-1][keep], 1e-300)
        i = int(np.argmax(f1))
        assert op["f1"] == pytest.approx(f1[i])
        assert op["threshold"] == pytest.approx(thr[keep][i])
        assert op["precision"] == pytest.approx(prec[:-1][keep][i]) and op["recall"] == pytest.approx(rec[:-1][keep][i])
        assert op["average_precision"] == pytest.approx(average_precision_score(y, a))
        for r in (0.1, 0.5, 0.9):
            ok = keep & (rec[:-1] >= r)
            assert precision_at_recall(*_sparse(a), y, r) == pytest.approx(prec[:-1][ok].max() if ok.any() else 0.0)


def test_a_dense_unit_gets_its_own_threshold():
    g = np.random.default_rng(1)
    y = g.random(5000) < 0.05
    dense = np.where(y, 2.0, 0.1 + 0.5 * g.random(5000))      # positive everywhere, high on the label
    op = operating_point(*_sparse(dense), y)
    assert op == pytest.approx({"f1": 1.0, "threshold": 2.0, "precision": 1.0, "recall": 1.0,
                                "average_precision": 1.0})
    assert auroc(dense, y) == 1.0
    off = operating_point(np.array([], np.int64), np.array([], np.float32), y)
    assert off["f1"] == 0 and np.isnan(off["threshold"]) and off["average_precision"] == pytest.approx(y.mean())
    wrong = operating_point(*_sparse(np.where(y, 0.0, 1.0)), y)      # fires only off the label
    assert wrong["f1"] == 0


def test_bad_input():
    y = np.zeros(10, bool)
    with pytest.raises(ValueError, match="no token or on every token"):
        operating_point(np.array([1]), np.array([1.0]), y)
    y[3] = True
    with pytest.raises(ValueError, match="differ in length"):
        operating_point(np.array([1, 2]), np.array([1.0]), y)
