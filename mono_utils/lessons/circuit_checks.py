"""Checks for notebook 07's exercises (circuits): run the student's function on small hand-made data.

- 07.1 ``feature_logit_edge(activation, w_dec, w_unembed, ln_weight, ln_scale)``: one edge of an
  attribution graph by hand, a feature's contribution to a logit through the frozen final LayerNorm.
- 07.2 ``completeness_gap(graph, node_id)``: a node's value minus the sum of its incoming edges.

Each check says what is wrong when it recognises the mistake (as ``lessons.checks`` does) and shows
as a green or red box; with ``MONO_LESSONS_STRICT=1`` a failed check raises ``ExerciseFailed``.
"""
from __future__ import annotations


import numpy as np
import torch

from ..circuits.graph import AttributionGraph
# the machinery of every check (the time limit, the named return problems, strict mode) is checks.py's
from .checks import CheckResult, _call, _run, _Wrong


def _number(fn, *args) -> float:
    out = _call(fn, *args)     # under the checks' time limit; its errors and odd results named
    if torch.is_tensor(out) or isinstance(out, np.ndarray):
        if (out.size if isinstance(out, np.ndarray) else out.numel()) != 1:
            raise _Wrong(f"return one number, got an array of shape {tuple(out.shape)}: the edge is a dot product")
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, (int, float, np.floating, np.integer)):
        raise _Wrong(f"return a number, got {type(out).__name__}")
    return float(out)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(1.0, abs(b))


def _diagnose(got: float, want: float, mistakes: list[tuple[str, float]], rule: str) -> None:
    if _same(got, want):
        return
    for why, value in mistakes:
        if _same(got, value):
            raise _Wrong(f"{why}. The rule: {rule}")
    raise _Wrong(f"you returned {got:.6g}, the edge is {want:.6g}. The rule: {rule}")


# ---------------------------------------------------------------- 07.1
def reference_feature_logit_edge(activation, w_dec, w_unembed, ln_weight, ln_scale) -> float:
    """a x (w_dec . g), g = centre(ln_weight * w_unembed) / ln_scale: the final LayerNorm with its scale
    frozen, (v - mean v) / scale * w, read by the unembedding column; centring g is centring v."""
    g = torch.as_tensor(ln_weight, dtype=torch.float64) * torch.as_tensor(w_unembed, dtype=torch.float64)
    g = (g - g.mean()) / float(ln_scale)
    return float(activation) * float(torch.as_tensor(w_dec, dtype=torch.float64) @ g)


def check_feature_logit_edge(fn) -> CheckResult:
    """07.1: ``fn(activation, w_dec, w_unembed, ln_weight, ln_scale)`` -> the feature -> logit edge."""
    def test(fn):
        g = torch.Generator().manual_seed(71)
        d = 10
        w_dec = torch.randn(d, generator=g) + 0.4
        w_u = torch.randn(d, generator=g) + 0.7           # a mean far from 0: forgetting the centring shows
        ln_w = 1 + 0.5 * torch.rand(d, generator=g)
        a, scale = 1.7, 0.6
        want = reference_feature_logit_edge(a, w_dec, w_u, ln_w, scale)
        got = _number(fn, a, w_dec.clone(), w_u.clone(), ln_w.clone(), scale)
        plain = float(w_dec @ (ln_w * w_u))
        mistakes = [
            ("you did not centre: the LayerNorm subtracts the mean of the residual, so the unembedding direction "
             "seen by the residual is centred (subtract the mean of ln_weight * w_unembed)", a * plain / scale),
            ("you did not divide by the frozen LayerNorm scale", want * scale),
            ("you multiplied by the LayerNorm scale instead of dividing", want * scale * scale),
            ("you left out the LayerNorm weight (ln_weight multiplies each coordinate before the unembedding)",
             reference_feature_logit_edge(a, w_dec, w_u, torch.ones(d), scale)),
            ("you left out the activation: that is the virtual weight; the edge is activation x virtual weight",
             want / a),
        ]
        _diagnose(got, want, mistakes, "activation * (w_dec . g), g = (ln_weight*w_unembed - its mean) / ln_scale")
        return "the edge is activation x (decoder direction . centred, LayerNorm-weighted unembedding) / frozen scale."
    return _run("07.1", fn, test)


# ---------------------------------------------------------------- 07.2
def _tiny_graph() -> AttributionGraph:
    """tok:0, tok:1, bias, feat:1:3 (value 2.0), logit (value 0.9): edges chosen so that every mistake
    gives another number; the logit's edges are short of its value by 0.1 (as a pruned graph)."""
    nodes = [{"id": "tok:0", "kind": "token", "pos": 0, "feature": None, "value": 5.0, "label": "0"},
             {"id": "tok:1", "kind": "token", "pos": 1, "feature": None, "value": 4.0, "label": "1"},
             {"id": "bias", "kind": "bias", "pos": None, "feature": None, "value": 1.0, "label": "biases"},
             {"id": "feat:1:3", "kind": "feature", "pos": 1, "feature": 3, "value": 2.0, "label": "F3 @1"},
             {"id": "logit", "kind": "logit", "pos": 1, "feature": None, "value": 0.9, "label": "logit"}]
    src = np.array([0, 1, 2, 3, 1, 2])
    dst = np.array([3, 3, 3, 4, 4, 4])
    weight = np.array([0.5, 1.75, -0.25, 1.5, -0.3, -0.4])
    return AttributionGraph([0, 1], ["a", "b"], 7, "x", nodes, src, dst, weight)


def check_completeness_gap(fn) -> CheckResult:
    """07.2: ``fn(graph, node_id)`` -> the node's value minus the sum of the weights of its incoming edges."""
    def test(fn):
        graph = _tiny_graph()
        for node_id, want, mistakes in (
                ("feat:1:3", 0.0, [("you summed the edges leaving the node, not those entering it", 2.0 - 1.5),
                                   ("you returned the sum of the incoming edges, not value - sum", 2.0),
                                   ("you summed |weights|: negative edges count with their sign", 2.0 - 2.5),
                                   ("you left out the bias edge (the constants are a source like the others)",
                                    2.0 - 2.25)]),
                ("logit", 0.1, [("you returned the sum of the incoming edges, not value - sum", 0.8),
                                ("you summed |weights|: negative edges count with their sign", 0.9 - 2.2),
                                ("you left out the bias edge (the constants are a source like the others)", 0.9 - 1.2),
                                ("you returned sum - value: the gap is value minus the sum", -0.1)])):
            got = _number(fn, graph, node_id)
            _diagnose(got, want, mistakes, "graph.node(id)['value'] - sum of w over the edges whose target is id "
                                           "(graph.edges_into(id), or graph.dst == graph.index[id])")
        return "the value of a node minus the sum of its incoming edges: 0 for a complete graph."
    return _run("07.2", fn, test)
