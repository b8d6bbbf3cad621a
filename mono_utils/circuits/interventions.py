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
from ..pipeline.models import get_model, get_tokenizer, get_tokens
from ..pipeline.presets import resolve
from ..pipeline.transcoders import get_transcoder
from ..store.results import cached_result, input_id
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
    """``(table, r)``: for each prompt (a text, or token ids with BOS first; target: the model's top
    prediction) the ``per_prompt`` features
    at the last position with the largest |edge| to the logit, each pinned to ``m x`` its activation
    for every ``m`` in ``multipliers`` (0: ablated; 2: doubled); the table holds the predicted and the
    actual logit change of each intervention, ``r`` their Pearson correlation."""
    import pandas as pd  # lazy: pandas is heavy; only this view needs it
    prompts = list(prompts)
    if not prompts:
        raise ValueError("pass at least one prompt")
    rows = []
    for prompt in tqdm(prompts, desc="interventions", disable=not progress):
        if isinstance(prompt, str):
            g = attribution_graph(model, transcoder, tokenizer, prompt, contrast=contrast)
        else:
            g = attribution_graph(model, transcoder, tokenizer, tokens=list(prompt), contrast=contrast)
            prompt = "".join(g.str_tokens[1:])
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


def heldout_prompts(tokens: np.ndarray, n: int = 16, *, min_len: int = 12, seed: int = 0) -> list[list[int]]:
    """``n`` prompts cut from held-out token rows (BOS first): seeded rows, each cut at a seeded length in
    ``min_len``..n_ctx, so the interventions test the graphs on the corpus's own text, not on chosen prompts."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(tokens), size=min(n, len(tokens)), replace=False)
    n_ctx = tokens.shape[1]
    return [tokens[r, : int(rng.integers(min(min_len, n_ctx), n_ctx + 1))].astype(int).tolist() for r in rows]


def get_intervention_agreement(preset=None, store=None, *, which: str = "A", n_prompts: int = 16,
                               per_prompt: int = 5, progress: bool = True) -> dict:
    """The build's record of how well the graphs predict interventions (for the results file): on
    ``n_prompts`` held-out prompts (``heldout_prompts``), ``per_prompt`` features each ablated and doubled;
    the correlation of predicted and actual change for the logit difference to the runner-up and for the
    raw logit. Computed once per transcoder, then loaded: ``{"n", "r_runner_up", "r_raw_logit", ...}``."""
    p, s = resolve(preset, store)
    model = get_model(p, s, which=which, progress=progress)
    trc = get_transcoder(p, s, which=which, progress=progress)
    tok = get_tokenizer(p, s)
    config = {"transcoder": input_id(trc), "n_prompts": n_prompts, "per_prompt": per_prompt,
              "multipliers": [0.0, 2.0], "seed": 0, "version": 1}

    def compute():
        prompts = heldout_prompts(get_tokens(p, s).split("val")[0], n_prompts)
        table, r = intervention_agreement(model, trc, tok, prompts, per_prompt=per_prompt, progress=progress)
        raw, raw_r = intervention_agreement(model, trc, tok, prompts, per_prompt=per_prompt, contrast=None,
                                            progress=progress)
        arrays = {"predicted": table.predicted.to_numpy(), "actual": table.actual.to_numpy(),
                  "predicted_raw": raw.predicted.to_numpy(), "actual_raw": raw.actual.to_numpy()}
        return arrays, {"n": int(len(table)), "prompts": len(prompts), "r_runner_up": r, "r_raw_logit": raw_r}

    _, meta = cached_result("circuit-interventions", config, compute, s)
    return meta
