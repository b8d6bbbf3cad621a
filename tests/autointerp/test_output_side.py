"""The output side: what a unit does, explained (offline and through the LLM prompts) and scored as the input side."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from _llm_servers import ReplyServer, chat_completion, send
from _mono_standins import StandInSAE, planted_index

from mono_utils.autointerp import output_side as osd
from mono_utils.autointerp.backends import build_messages, get_backend
from mono_utils.autointerp.offline import OfflineBackend
from mono_utils.autointerp.protocol import (EvalCorpus, LogitInput, OutputExplainInput, ParseFailure, SimulateInput,
                                            logit_test_tokens, select_examples)
from mono_utils.autointerp.run import ArraySource, IndexSource, logit_weight_matrix, score_all, unit_seed

DNA = ["".join(p) for p in itertools.product("ACGT", repeat=3)]          # 64 tokens of one kind


@pytest.fixture()
def model128():
    """A random 1-layer model with 128 tokens (the logit test needs >= 110): d_model 32, d_mlp 64, n_ctx 16."""
    from mono_utils.core.model import ModelConfig, build_model
    return build_model(ModelConfig(d_vocab=128, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0))


def dna_corpus(rows=500, n_ctx=32, n_words=200, dna_share=0.06, seed=0):
    """Lower-case words, with DNA triplets at ``dna_share`` of positions; ids 0..199 words, 200..263 DNA."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, n_words, (rows, n_ctx))
    dna = n_words + rng.integers(0, len(DNA), (rows, n_ctx))
    tokens = np.where(rng.random((rows, n_ctx)) < dna_share, dna, words)
    return EvalCorpus(tokens, [f" w{i}" for i in range(n_words)] + DNA), rng


def planted_output_unit(corpus, rng, n_words=200):
    """A unit that promotes DNA (10 triplets most, the other 54 next) and fires right before those 10."""
    v = len(corpus.vocab_strs)
    lw = rng.normal(0, 0.5, v)
    lw[n_words:] = 3 + rng.normal(0, 0.1, v - n_words)
    top = n_words + np.arange(10)
    lw[top] = 5 + rng.normal(0, 0.1, 10)
    nxt = np.zeros_like(corpus.tokens)
    nxt[:, :-1] = corpus.tokens[:, 1:]
    acts = np.where(np.isin(nxt, top), rng.uniform(2, 3, corpus.tokens.shape), 0.0).astype(np.float32)
    acts[:, -1] = 0
    return acts, lw, [corpus.vocab_strs[i] for i in top]


# ---------------------------------------------------------------- the offline output-side explainer
def test_output_explanation_round_trips_and_is_read_backwards():
    b = OfflineBackend()
    oin = OutputExplainInput(["ACG", " w3"], [9, 4], [" the"], [["GTA", 7], [" w9", 2]], [[",", 3]], 12)
    text = b.explain_output(oin)
    assert b.is_output_side(text) and "12 positions" in text
    e = b.parse_output_explanation(text)
    assert e == {"promoted": {"ACG": 9, " w3": 4}, "helped": {"GTA": 7, " w9": 2}, "hurt": {",": 3},
                 "suppressed": [" the"]}
    # active right before a token it promotes or helps predict, at that token's level; nothing follows the last
    pred = b.simulate(SimulateInput(text, [[" x", "ACG", " y", "GTA", " w3"], ["zz", " w9"]]))
    assert pred == [[9.0, 0.0, 7.0, 4.0, 0.0], [2.0, 0.0]]
    labels = b.label_logits(LogitInput(text, ["TTA", " court", "CCG", " of"]))
    assert labels == [True, False, True, False]
    with pytest.raises(ParseFailure, match="Fires on the tokens"):
        b.parse_explanation(text)            # an output-side text is not an input-side one
    with pytest.raises(ParseFailure, match="output-side"):
        b.parse_output_explanation("Statistical explanation (offline baseline). Fires on the tokens: none.")


def test_effect_tables_rank_by_total_and_level_by_mean():
    vocab = ["a", "b", "c", "d"]
    helped, hurt = osd.effect_tables([0, 0, 0, 1, 2, 3], [1.0, 1.0, 1.0, 2.5, -0.5, 0.0], vocab, shrink=0.0)
    assert helped == [["a", 4], ["b", 9]]      # a: 3 nats in 3 sightings (mean 1), b: 2.5 in one
    assert hurt == [["c", 9]]
    assert osd.effect_tables([], [], vocab) == ([], [])


def test_planted_unit_output_side_names_its_tokens_and_scores_high():
    corpus, rng = dna_corpus()
    acts, lw, top = planted_output_unit(corpus, rng)
    r = osd.run_unit_output(OfflineBackend(), acts, corpus, 3, "feature", lw)
    assert r["status"] == "ok", r["status"]
    assert all(json.dumps(t) in r["output_explanation"] for t in top)       # it names the promoted tokens
    assert r["out_logit_accuracy"] > 0.9                                    # ranks 10-60 are DNA too
    assert r["out_spearman"] > 0.8                                          # active right before them
    # the same unit's input side: it fires on whatever word precedes the DNA, so a list of what it fires on
    # says little of where it fires next, and without the copied logits nothing of what it promotes
    from mono_utils.autointerp.run import run_unit
    inp = run_unit(OfflineBackend(), acts, corpus, 3, "feature", lw)
    assert inp.spearman < r["out_spearman"] - 0.3
    assert r["fires_only_logit_accuracy"] < 0.75
    # the logit test is the input side's: the same 100 tokens (same per-unit seed)
    kept = osd.run_unit_output(OfflineBackend(), acts, corpus, 3, "feature", lw, keep_prompts=True)
    ref = logit_test_tokens(lw, unit_seed(0, 3))
    assert np.array_equal(kept["logit_test"].token_ids, ref.token_ids)
    assert kept["examples"].simulate_rows == select_examples(acts, corpus, unit_seed(0, 3)).simulate_rows


def test_random_logit_weights_score_near_chance():
    corpus, rng = dna_corpus(seed=1)
    v = len(corpus.vocab_strs)
    acts = {u: ((rng.random(corpus.tokens.shape) < 0.03) * rng.gamma(2.0, 1.0, corpus.tokens.shape)).astype(np.float32)
            for u in range(24)}
    src = ArraySource(corpus, acts, rng.normal(size=(24, v)))
    df = osd.score_output_side(src, list(range(24)), OfflineBackend(), progress=False)
    assert (df.status == "ok").all()
    assert abs(df.out_logit_accuracy.mean() - osd.LOGIT_CHANCE) < 0.06
    assert abs(df.out_spearman.median()) < 0.15


def test_bad_input_is_named():
    corpus, rng = dna_corpus(rows=50)
    with pytest.raises(ValueError, match="logit weights"):
        osd.run_unit_output(OfflineBackend(), np.zeros(corpus.tokens.shape, np.float32), corpus)
    dead = osd.run_unit_output(OfflineBackend(), np.zeros(corpus.tokens.shape, np.float32), corpus,
                               logit_weights=np.zeros(len(corpus.vocab_strs)))
    assert dead["status"] == "dead"
    with pytest.raises(ValueError, match="no units"):
        osd.score_output_side(ArraySource(corpus, {}), [], OfflineBackend())


# ---------------------------------------------------------------- the measured effect
def test_effect_probe_equals_the_dashboards_ablation_effects(tiny_model):
    from mono_utils.core.model import mlp_post
    from mono_utils.features.dashboards import ablation_effects
    tokens = np.random.default_rng(0).integers(0, 64, (6, 16))
    mlp = mlp_post(tiny_model, torch.as_tensor(tokens))
    for n in (3, 11):                                               # neurons
        acts = mlp[..., n].numpy()
        eff, vocab_eff = osd.EffectProbe.of(tiny_model).effects(n, tokens, acts)
        ref = ablation_effects(tiny_model, tokens, "neuron", n)
        assert np.allclose(eff, ref, atol=2e-5), np.abs(eff - ref).max()
        assert vocab_eff.shape == (64,)
    sae = StandInSAE(64, 40, seed=3)
    f = sae.encode(mlp).detach()
    u = int(f.reshape(-1, 40).gt(0).sum(0).argmax())                 # a feature that fires here
    eff, _ = osd.EffectProbe.of(tiny_model, sae).effects(u, tokens, f[..., u].numpy())
    ref = ablation_effects(tiny_model, tokens, "feature", u, sae)
    assert np.abs(ref).max() > 0 and np.allclose(eff, ref, atol=2e-5), np.abs(eff - ref).max()
    # whole rows through a shared float16 cache: the same effects, to well under a level's step
    cache = osd.ResidualCache(tiny_model, tokens)
    cached, cached_vocab = osd.EffectProbe.of(tiny_model, sae).with_cache(cache).effects(
        u, tokens, f[..., u].numpy(), row_ids=np.arange(len(tokens)))
    assert np.allclose(cached, eff, atol=2e-3) and len(cache) == int((f[:, :-1, u] > 0).any(1).sum())
    with pytest.raises(ValueError, match="another model"):
        osd.EffectProbe(osd.EffectProbe.of(tiny_model).model, np.zeros((2, 32)),
                        cache=osd.ResidualCache(object(), tokens))
    # where the unit is silent nothing changes; a unit silent everywhere has no vocabulary effect
    none, vocab_none = osd.EffectProbe.of(tiny_model).effects(3, tokens, np.zeros(tokens.shape, np.float32))
    assert not none.any() and vocab_none is None
    with pytest.raises(ValueError, match="d_model"):
        osd.EffectProbe(tiny_model, np.zeros((4, 7)))


def test_measured_effects_reach_the_explanation(model128, tmp_path):
    idx, sae = planted_index(model128, tmp_path, rows=60)
    corpus = EvalCorpus(idx.tokens, [f" t{i}" for i in range(128)])
    probe = osd.EffectProbe.of(model128)
    n = int(np.argmax(idx.density("neuron")))
    lw = logit_weight_matrix(model128)[n]
    r = osd.run_unit_output(OfflineBackend(), idx.unit_acts("neuron", n), corpus, n, "neuron", lw, probe,
                            keep_prompts=True)
    assert r["status"] == "ok" and r["effect_positions"] > 0
    oin = r["output_input"]
    assert oin.contexts == r["effect_positions"] and oin.helped
    assert "Helps predict the next token:" in r["output_explanation"]
    # what removal measures over the whole vocabulary follows the logit weights (the final LayerNorm aside)
    assert 0 < r["effect_vs_logits"] <= 1
    with pytest.raises(ValueError, match="logit weights cover"):
        osd.run_unit_output(OfflineBackend(), idx.unit_acts("neuron", n), corpus, n, "neuron", lw[:120], probe)


# ---------------------------------------------------------------- the LLM path: the same prompts, a stand-in server
def test_llm_backend_explains_the_output_side_through_its_prompts(tmp_path, monkeypatch):
    monkeypatch.delenv("MONO_AUTOINTERP_MODEL", raising=False)
    corpus, rng = dna_corpus(rows=300)
    acts, lw, top = planted_output_unit(corpus, rng)
    ue = select_examples(acts, corpus, unit_seed(0, 0))
    sim = {str(i): [0] * len(e.acts) for i, e in enumerate(ue.simulate, 1)}
    replies = ["It promotes DNA.\nExplanation: predicts DNA triplets, active right before them.",
               json.dumps(sim), json.dumps({"plausible": list(range(1, 51))}),
               "Explanation: some words.", json.dumps({"plausible": [1, 2, 3]})]
    srv = ReplyServer(lambda h: send(h, chat_completion(replies.pop(0))))
    try:
        b = get_backend("openai", base_url=srv.url + "/v1", api_key_env=None, cache_dir=tmp_path / "cache",
                        max_retries=0, timeout=10.0)
        r = osd.run_unit_output(b, acts, corpus, 0, "feature", lw)
    finally:
        srv.close()
    assert r["status"] == "ok", r["status"]
    assert r["output_explanation"] == "predicts DNA triplets, active right before them."
    assert srv.requests == 5 and not replies            # explain_output, simulate, logits; explain, logits
    assert r["out_spearman"] == 0.0                     # a constant simulation scores 0
    assert 0 <= r["out_logit_accuracy"] <= 1 and 0 <= r["fires_only_logit_accuracy"] <= 1
    # the prompt: the system text, two demonstrations, then this unit's logits and effects
    oin = osd.output_explain_input(lw, corpus.vocab_strs)
    system, messages = build_messages("explain_output", oin)
    assert "only what the unit DOES" in system and len(messages) == 5
    assert all(json.dumps(t) in messages[-1]["content"] for t in top)
    assert "(none measured)" in messages[-1]["content"]


# ---------------------------------------------------------------- the square, the cache, the stage
def _frames(kind, units, spearman, logit, out_sp, out_lg, fires):
    inp = pd.DataFrame({"unit": units, "status": "ok", "spearman": spearman, "logit_accuracy": logit})
    out = pd.DataFrame({"unit": units, "status": "ok", "out_spearman": out_sp, "out_logit_accuracy": out_lg,
                        "fires_only_logit_accuracy": fires})
    return inp, out


def test_square_table_and_figure():
    a_in, a_out = _frames("feature", [1, 2, 3], [0.5, 0.6, 0.7], [0.6] * 3, [0.1] * 3, [0.9] * 3, [0.5] * 3)
    n_in, n_out = _frames("neuron", [4, 5], [0.3, 0.3], [0.5, 0.7], [0.2, 0.4], [0.8, 0.8], [0.55, 0.55])
    n_out = pd.concat([n_out, pd.DataFrame({"unit": [9], "status": ["dead"]})])   # not scored on both sides
    inputs, outputs = {"feature": a_in, "neuron": n_in}, {"feature": a_out, "neuron": n_out}
    long = osd.square_summary(inputs, outputs)
    cell = long.set_index(["kind", "cell"])
    assert cell.loc[("feature", "input-side -> activations"), "median"] == pytest.approx(0.6)
    assert cell.loc[("neuron", "output-side -> promoted tokens"), "n"] == 2
    assert cell.loc[("neuron", "input-side -> promoted tokens"), "chance"] == osd.LOGIT_CHANCE
    table = osd.output_side_table(inputs, outputs)
    assert list(table.index) == ["features", "neurons", "chance"]
    assert table.loc["features", "output-side -> promoted tokens"].startswith("0.90 [")
    assert table.loc["chance", "input-side -> activations"] == "0.00"
    fig = osd.output_side_figure(inputs, outputs)
    assert len(fig.data) == 5 and {d.name for d in fig.data} == {
        "input side (what it fires on)", "input side, written without the logits", "output side (what it does)"}
    with pytest.raises(ValueError, match="input-side scores"):
        osd.square_summary({}, outputs)


def test_cached_output_side_equals_direct_then_loads(model128, tmp_path, monkeypatch):
    from mono_utils.store.artifacts import ArtifactStore
    idx, sae = planted_index(model128, tmp_path, rows=60)
    vocab = [f" t{i}" for i in range(128)]
    sources = {"feature": IndexSource(idx, "feature", vocab, logit_weight_matrix(model128, sae), logit_id="m1"),
               "neuron": IndexSource(idx, "neuron", vocab, logit_weight_matrix(model128), logit_id="m0")}
    probes = {"feature": osd.EffectProbe.of(model128, sae), "neuron": osd.EffectProbe.of(model128)}
    store = ArtifactStore(tmp_path / "art")
    first = osd.cached_output_side(sources, probes, 5, store=store, progress=False)
    monkeypatch.setattr(osd, "score_output_side", lambda *a, **k: pytest.fail("recomputed instead of loaded"))
    loaded = osd.cached_output_side(sources, probes, 5, store=store, progress=False)
    for k in sources:
        pd.testing.assert_frame_equal(first[k], loaded[k])
        assert len(first[k]) == 5 and (first[k].status == "ok").all()
    with pytest.raises(ValueError, match="no effect probe"):
        osd.cached_output_side(sources, {"feature": probes["feature"]}, 5, store=store)
    # the square reads the input side on the same units
    inputs = score_all(sources, OfflineBackend(), n_units=5, progress=False)
    table = osd.output_side_table(inputs, first)
    assert (table.drop(index="chance")["units scored"] == 5).all()


def test_stage_on_smoke(smoke_preset, smoke_store):
    from mono_utils import stages
    from mono_utils.autointerp.run import get_offline_scores, preset_sources, with_density_control
    assert "autointerp output side" in dict(stages.build_stages(smoke_preset, smoke_store))
    sources = with_density_control(preset_sources(smoke_preset, smoke_store, progress=False))
    out = osd.get_output_side(smoke_preset, smoke_store, sources=sources, progress=False)
    assert set(out) == set(sources)
    n = osd.output_side_units(smoke_preset)
    for kind, df in out.items():
        assert len(df) == min(n, len(sources[kind].units)), kind
        ok = df[df.status == "ok"]
        assert len(ok) >= 0.9 * len(df), (kind, df.status.value_counts())
        assert ok.output_explanation.str.startswith("Statistical explanation of the output side").all()
        assert (ok.effect_positions > 0).mean() > 0.9, kind
        assert ok.out_logit_accuracy.between(0, 1).all() and ok.out_spearman.between(-1, 1).all()
    again = osd.get_output_side(smoke_preset, smoke_store, sources=sources, progress=False)   # loaded
    pd.testing.assert_frame_equal(again["feature"], out["feature"])
    table = osd.output_side_table(get_offline_scores(smoke_preset, smoke_store, sources=sources, progress=False), out)
    assert set(table.index) == {*(osd.KIND_LABELS.get(k, k) for k in sources), "chance"}
