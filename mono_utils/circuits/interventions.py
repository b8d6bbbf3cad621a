"""Interventions that test an attribution graph: pin a feature, compare the logit change the graph
predicts with the one the model gives.

Pinning feature f at the last position to value v changes the MLP's output there by
``(v - a_f) W_dec[f]`` (the replacement model: the transcoder with its error term held fixed, so that
with v = a_f the model is untouched). The graph predicts the logit to move by
``(v - a_f) / a_f x edge(f -> logit)``, with the final LayerNorm's scale frozen; the model runs the
change through the real LayerNorm, whose scale moves with it. In one layer that scale is the only
thing the graph freezes on this path, so the two agree closely unless a pin moves the residual's norm.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.transcoder import HOOK_MLP_OUT
from .graph import AttributionGraph, attribution_graph


@torch.no_grad()
def pinned_logit(model, transcoder, graph: AttributionGraph, feature: int, value: float) -> float:
    """The target logit at the last position with feature ``feature`` there pinned to ``value``."""
    T = len(graph.tokens)
    node = graph.node(f"feat:{T - 1}:{feature}") if f"feat:{T - 1}:{feature}" in graph.index else None
    a = node["value"] if node is not None else 0.0
    delta = (float(value) - a) * transcoder.W_dec[int(feature)].detach()

    def pin(act, hook):
        out = act.clone()
        out[:, T - 1] += delta.to(act.dtype)
        return out

    logits = model.run_with_hooks(torch.tensor(graph.tokens)[None], fwd_hooks=[(HOOK_MLP_OUT, pin)])
    return graph.readout(logits[0, -1])


def predicted_change(graph: AttributionGraph, feature: int, value: float) -> float:
    """The logit change the graph predicts for pinning ``feature`` (at the last position) to ``value``:
    (value - a) x the feature's virtual weight to the logit (its edge / its activation)."""
    T = len(graph.tokens)
    fid = f"feat:{T - 1}:{feature}"
    a = graph.node(fid)["value"]
    return (float(value) - a) * graph.edge(fid, "logit") / a


def intervention_agreement(model, transcoder, tokenizer, prompts, *, per_prompt: int = 5,
                           multipliers=(0.0, 2.0), contrast: int | str | None = "runner-up", progress: bool = True):
    """``(table, r)``: for each prompt (target: the model's top prediction) the ``per_prompt`` features
    at the last position with the largest |edge| to the logit, each pinned to ``m x`` its activation
    for every ``m`` in ``multipliers`` (0: ablated; 2: doubled); the table holds the predicted and the
    actual logit change of each intervention, ``r`` their Pearson correlation."""
    import pandas as pd  # lazy: pandas is heavy; only this view needs it
    prompts = list(prompts)
    if not prompts:
        raise ValueError("pass at least one prompt")
    rows = []
    for prompt in tqdm(prompts, desc="interventions", disable=not progress):
        g = attribution_graph(model, transcoder, tokenizer, prompt, contrast=contrast)
        T = len(g.tokens)
        into = g.edges_into("logit")
        feats = sorted((k for k in into if k.startswith(f"feat:{T - 1}:")), key=lambda k: -abs(into[k]))[:per_prompt]
        for fid in feats:
            f = int(fid.rsplit(":", 1)[1])
            a = g.node(fid)["value"]
            for m in multipliers:
                v = m * a
                rows.append({"prompt": prompt, "target": g.target_str, "feature": f, "activation": a, "pinned to": v,
                             "predicted": predicted_change(g, f, v),
                             "actual": pinned_logit(model, transcoder, g, f, v) - g.logit})
    table = pd.DataFrame(rows)
    if len(table) < 2:
        raise ValueError(f"only {len(table)} interventions: the prompts activate too few features at their last "
                         f"position; pass more prompts or raise per_prompt")
    r = float(np.corrcoef(table.predicted, table.actual)[0, 1])
    return table, r
