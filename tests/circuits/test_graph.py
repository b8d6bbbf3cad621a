"""Attribution graphs on smoke's model A and a small transcoder of its MLP: complete (the edges into
every node sum to its value), exact (a frozen-scale intervention moves the logit exactly as the graph
says), pruned by share, and confirmed by interventions in the real model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_utils.circuits.graph import attribution_graph
from mono_utils.circuits.interventions import intervention_agreement, pinned_logit, predicted_change
from mono_utils.pipeline.transcoders import get_transcoder

PROMPTS = ["ACGTTGCAACGTAGCTTGCA", "SGVsbG8gd29ybGQhIFRoaXMgaXM=", "שלום עולם, מה שלומך",
           "def main(args):\n    return args", "The cat sat on the mat and", "Calories 200\nTotal Fat 8g",
           '{"name": "x", "id": 12,', "GET /index.html HTTP/1.1\nHost:"]


@pytest.fixture(scope="module")
def parts(tiny, smoke_store, smoke_model, smoke_tokenizer):
    return smoke_model, get_transcoder(tiny, smoke_store, progress=False), smoke_tokenizer


@pytest.mark.parametrize("contrast", [None, "mean", "runner-up"])
@pytest.mark.parametrize("prompt", PROMPTS[:4])
def test_edges_into_every_node_sum_to_its_value(parts, prompt, contrast):
    model, trc, tok = parts
    g = attribution_graph(model, trc, tok, prompt, contrast=contrast)
    gaps = g.completeness_gaps()
    assert "logit" in gaps and len(g.features()) > 0
    assert len(gaps) == len(g.features()) + 1           # every feature and the logit have incoming edges
    assert max(abs(v) for v in gaps.values()) < 1e-4, sorted(gaps.items(), key=lambda kv: -abs(kv[1]))[:3]
    # the logit node is the model's own
    logits = model(torch.tensor(g.tokens)[None])[0, -1]
    assert g.logit == pytest.approx(g.readout(logits), abs=1e-5)


def test_feature_to_logit_edges_are_exact_with_the_scale_frozen(parts):
    """Pinning a feature with ln_final's scale held at its value moves the logit exactly as predicted."""
    model, trc, tok = parts
    g = attribution_graph(model, trc, tok, PROMPTS[0])
    T = len(g.tokens)
    scale = g.frozen["ln_final_scale"]
    for node in g.features(T - 1)[:5]:
        f, a = node["feature"], node["value"]
        delta = -a * trc.W_dec[f]

        def pin(act, hook):
            out = act.clone()
            out[:, T - 1] += delta
            return out

        def freeze(act, hook):
            out = act.clone()
            out[:, T - 1] = scale
            return out

        with torch.no_grad():
            new = model.run_with_hooks(torch.tensor(g.tokens)[None],
                                       fwd_hooks=[("blocks.0.hook_mlp_out", pin), ("ln_final.hook_scale", freeze)])
        assert g.readout(new[0, -1]) - g.logit == pytest.approx(predicted_change(g, f, 0.0), abs=1e-4)
        assert predicted_change(g, f, 0.0) == pytest.approx(-g.edge(node["id"], "logit"), abs=1e-6)


def test_a_feature_before_the_last_position_reaches_no_logit(parts):
    model, trc, tok = parts
    g = attribution_graph(model, trc, tok, PROMPTS[4])
    T = len(g.tokens)
    into = g.edges_into("logit")
    assert all(int(k.split(":")[1]) == T - 1 for k in into if k.startswith("feat:"))
    early = [n for n in g.features() if n["pos"] < T - 1]
    assert early
    f = early[0]
    assert set(g.edges_into(f["id"])) == {f"tok:{j}" for j in range(f["pos"] + 1)} | {"bias"}


def test_prune_keeps_the_share_asked_for(parts):
    model, trc, tok = parts
    g = attribution_graph(model, trc, tok, PROMPTS[3])
    scores = g.edge_scores()
    assert scores[g.dst == g.index["logit"]].sum() == pytest.approx(1.0)
    small, big = g.prune(0.5), g.prune(0.95)
    assert len(small.weight) < len(big.weight) <= len(g.weight)
    kept = small.edge_scores()   # recomputed on the pruned graph: check on the full graph's scores instead
    order = np.sort(scores)[::-1]
    assert order[: len(small.weight)].sum() >= 0.5 * scores.sum() - 1e-9
    assert order[: len(small.weight) - 1].sum() < 0.5 * scores.sum()
    assert "logit" in small.index and len(kept) == len(small.weight)
    with pytest.raises(ValueError, match="share"):
        g.prune(0)


def test_interventions_agree_with_the_graph(parts):
    """At least 50 pins; the logit difference to the runner-up follows the graph (r >= 0.9, measured
    0.99 on smoke's A/1-sized transcoder); the raw logit, whose final LayerNorm scale moves with a pin,
    is reported beside it, never hidden."""
    model, trc, tok = parts
    table, r = intervention_agreement(model, trc, tok, PROMPTS, progress=False)
    assert len(table) >= 50
    assert r >= 0.9, r
    raw_table, raw_r = intervention_agreement(model, trc, tok, PROMPTS, contrast=None, progress=False)
    assert len(raw_table) == len(table) and -1 <= raw_r <= 1
    row = table.iloc[0]
    g = attribution_graph(model, trc, tok, row.prompt, contrast="runner-up")
    assert pinned_logit(model, trc, g, int(row.feature), row["pinned to"]) - g.logit == pytest.approx(row.actual, abs=1e-6)


def test_bad_inputs_name_the_fix(parts):
    model, trc, tok = parts
    with pytest.raises(ValueError, match="not one"):
        attribution_graph(model, trc, tok, "ACGT", target="hello world and more")
    with pytest.raises(ValueError, match="vocabulary"):
        attribution_graph(model, trc, tok, "ACGT", target=10**7)
    with pytest.raises(ValueError, match="shorten"):
        attribution_graph(model, trc, tok, tokens=[0] * (model.cfg.n_ctx + 1))
    with pytest.raises(ValueError, match="prompt"):
        attribution_graph(model, trc, tok)
    with pytest.raises(KeyError, match="node ids look like"):
        attribution_graph(model, trc, tok, "ACGT").node("feat:99")


def test_the_builds_record_on_heldout_prompts(parts, tiny, smoke_store, smoke_tokens):
    from mono_utils.circuits.interventions import get_intervention_agreement, heldout_prompts
    val = smoke_tokens.split("val")[0]
    a, b = heldout_prompts(val, 6), heldout_prompts(val, 6)
    assert a == b and len(a) == 6 and all(12 <= len(p) <= val.shape[1] for p in a)
    meta = get_intervention_agreement(tiny, smoke_store, n_prompts=6, progress=False)
    assert meta["n"] >= 50 and meta["prompts"] == 6
    assert meta["r_runner_up"] >= 0.9 and -1 <= meta["r_raw_logit"] <= 1
    assert get_intervention_agreement(tiny, smoke_store, n_prompts=6, progress=False) == meta   # stored, then loaded
