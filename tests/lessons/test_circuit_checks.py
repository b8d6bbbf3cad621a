"""Notebook 07's checks: the reference answers pass, each known mistake is named, the rest get the rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_utils.lessons.circuit_checks import (
    check_completeness_gap,
    check_feature_logit_edge,
    reference_feature_logit_edge,
)
from mono_utils.lessons.checks import ExerciseFailed


def edge(activation, w_dec, w_unembed, ln_weight, ln_scale):
    g = ln_weight * w_unembed
    return activation * float(w_dec @ (g - g.mean())) / ln_scale


def gap(graph, node_id):
    return graph.node(node_id)["value"] - sum(graph.edges_into(node_id).values())


def test_reference_answers_pass():
    assert check_feature_logit_edge(edge).ok
    assert check_feature_logit_edge(reference_feature_logit_edge).ok
    assert check_completeness_gap(gap).ok


@pytest.mark.parametrize("wrong, said", [
    (lambda a, w, u, lw, s: a * float(w @ (lw * u)) / s, "did not centre"),
    (lambda a, w, u, lw, s: a * float(w @ ((lw * u) - (lw * u).mean())), "did not divide"),
    (lambda a, w, u, lw, s: a * float(w @ (u - u.mean())) / s, "LayerNorm weight"),
    (lambda a, w, u, lw, s: float(w @ ((lw * u) - (lw * u).mean())) / s, "left out the activation"),
    (lambda a, w, u, lw, s: torch.ones(3), "one number"),
    (lambda a, w, u, lw, s: 0.123, "The rule"),
])
def test_edge_mistakes_are_named(wrong, said):
    r = check_feature_logit_edge(wrong)
    assert not r.ok and said in r.message, r.message


def _outgoing(graph, node_id):
    i = graph.index[node_id]
    return graph.node(node_id)["value"] - float(graph.weight[graph.src == i].sum())


@pytest.mark.parametrize("wrong, said", [
    (lambda g, n: sum(g.edges_into(n).values()), "not value - sum"),
    (lambda g, n: g.node(n)["value"] - sum(abs(w) for w in g.edges_into(n).values()), "|weights|"),
    (lambda g, n: g.node(n)["value"] - sum(w for k, w in g.edges_into(n).items() if k != "bias"), "bias"),
    (lambda g, n: sum(g.edges_into(n).values()) - g.node(n)["value"], "value minus the sum"),
    (_outgoing, "leaving the node"),
    (lambda g, n: 0.0, "The rule"),
])
def test_gap_mistakes_are_named(wrong, said):
    r = check_completeness_gap(wrong)
    assert not r.ok and said in r.message, r.message


def test_unwritten_and_strict(monkeypatch):
    def stub(*a):
        raise NotImplementedError
    assert "not written yet" in check_completeness_gap(stub).message
    assert not check_feature_logit_edge(42).ok
    monkeypatch.setenv("MONO_LESSONS_STRICT", "1")
    with pytest.raises(ExerciseFailed, match="07.1"):
        check_feature_logit_edge(stub)
    assert np.isfinite(reference_feature_logit_edge(1.0, torch.ones(3), torch.arange(3.0), torch.ones(3), 2.0))


def test_a_function_that_never_returns_is_stopped_with_a_hint(monkeypatch):
    # the circuit checks run the student's function under the checks' time limit (they used to call it bare)
    from mono_utils.lessons import circuit_checks as C
    monkeypatch.setenv("MONO_CHECK_TIME_LIMIT", "1")

    def loops(*args):
        while True:
            pass
    for check in (C.check_feature_logit_edge, C.check_completeness_gap):
        r = check(loops)
        assert not r.ok and "loop that never ends" in r.message, r.message
