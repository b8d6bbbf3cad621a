"""Autointerp protocol: example selection (no leaks), scores, the offline backend, the control."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from mono_utils.autointerp.backends import build_messages, get_backend, render_explain
from mono_utils.autointerp.offline import OfflineBackend
from mono_utils.autointerp.protocol import (
    EvalCorpus,
    ExplainInput,
    ParseFailure,
    ProtocolConfig,
    SimulateInput,
    explain_input,
    logit_test_tokens,
    quantise,
    score_simulation,
    select_examples,
    simulate_input,
    weighted_pearson,
    weighted_rank,
    weighted_spearman,
)
from mono_utils.autointerp.run import ArraySource, randomized_model, run_unit, score_units, summarize


# ---------------------------------------------------------------- synthetic data
def unique_corpus(rows=300, n_ctx=24):
    """Every (row, pos) has its own token, so any text can be traced back to its row."""
    tokens = np.arange(rows * n_ctx).reshape(rows, n_ctx)
    return EvalCorpus(tokens, [f"<r{r}p{p}>" for r in range(rows) for p in range(n_ctx)])


def word_corpus(rows=400, n_ctx=32, vocab=150, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (rows, n_ctx))
    return EvalCorpus(tokens, [f" w{i}" for i in range(vocab)]), rng


def sparse_acts(shape, seed=0, density=0.05):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < density) * rng.gamma(2.0, 1.0, shape).astype(np.float32)


# ---------------------------------------------------------------- scores
def test_weighted_spearman_hand_computed():
    # weighted mid-ranks: x -> [0.5, 1.5, 3.0], y -> [0.5, 3.5, 2.0]; weighted corr = 0.375 / 1.125
    x, y, w = [1, 2, 3], [1, 3, 2], [1, 1, 2]
    assert np.allclose(weighted_rank(x, w), [0.5, 1.5, 3.0])
    assert np.allclose(weighted_rank(y, w), [0.5, 3.5, 2.0])
    assert weighted_spearman(x, y, w) == pytest.approx(1 / 3)
    # integer weights == repeating the points
    assert weighted_spearman(x, y, w) == pytest.approx(stats.spearmanr([1, 2, 3, 3], [1, 3, 2, 2])[0])


def test_spearman_and_pearson_match_scipy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 200).astype(float)          # many ties
    y = x + rng.normal(0, 2, 200)
    assert weighted_spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert weighted_pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    w = rng.integers(1, 4, 200)
    assert weighted_spearman(x, y, w) == pytest.approx(stats.spearmanr(np.repeat(x, w), np.repeat(y, w))[0])
    assert weighted_pearson(x, y, w) == pytest.approx(np.corrcoef(np.repeat(x, w), np.repeat(y, w))[0, 1])


def test_constant_prediction_scores_zero():
    x = np.array([0, 0, 3, 5, 9.0])
    assert weighted_spearman(x, np.zeros(5)) == 0.0
    assert weighted_pearson(x, np.full(5, 4.0)) == 0.0
    assert weighted_spearman(np.zeros(5), x) == 0.0


def test_quantise():
    assert quantise(np.array([0, 0.5, 1.0, 2.0]), 1.0).tolist() == [0, 4, 9, 9]
    assert quantise(np.array([0.3]), 0.0).tolist() == [0]


# ---------------------------------------------------------------- example selection
def test_selection_counts_and_disjoint_rows():
    corpus, rng = word_corpus(rows=600)
    acts = np.zeros(corpus.tokens.shape, np.float32)        # one active token per row, levels spread evenly
    acts[np.arange(600), rng.integers(0, 32, 600)] = rng.permutation(np.linspace(0.05, 10, 600))
    cfg = ProtocolConfig()
    ue = select_examples(acts, corpus, seed=3, cfg=cfg)
    assert not ue.explain_rows & ue.simulate_rows
    assert len({e.row for e in ue.explain}) == len(ue.explain)          # one example per row
    src = [e.source for e in ue.explain]
    assert src.count("top") == cfg.explain_top and src.count("random") == cfg.explain_random
    assert len(ue.explain) == 49 and len(ue.simulate) == 60                 # the paper's counts
    assert all(len(e.acts) == 9 for e in ue.simulate)                       # 540 predictions
    assert sum(len(e.acts) for e in ue.simulate) == 540


def test_explanation_prompt_never_holds_held_out_text():
    corpus = unique_corpus()
    acts = sparse_acts(corpus.tokens.shape, seed=5, density=0.1)
    ue = select_examples(acts, corpus, seed=0)
    ein = explain_input(ue, corpus.vocab_strs)
    _, messages = build_messages("explain", ein)
    prompt = messages[-1]["content"]
    for e in ue.simulate:
        assert f"<r{e.row}p" not in prompt
    for e in ue.explain:
        assert f"<r{e.row}p" in prompt


def test_simulator_never_sees_activations():
    corpus = unique_corpus()
    acts = sparse_acts(corpus.tokens.shape, seed=2, density=0.1)
    ue = select_examples(acts, corpus, seed=0)
    assert {f.name for f in dataclasses.fields(SimulateInput)} == {"explanation", "examples"}
    before = build_messages("simulate", simulate_input("expl", ue, corpus.vocab_strs))
    for e in ue.simulate:                 # the held-out truth changes; what the simulator sees must not
        e.acts = e.acts * 7 + 1
    after = build_messages("simulate", simulate_input("expl", ue, corpus.vocab_strs))
    assert before == after
    user = after[1][-1]["content"]
    assert "interval" not in user and "top-token" not in user      # no labels
    # shuffled: the held-out examples are not grouped by where they were sampled
    src = [e.source for e in ue.simulate]
    assert src != sorted(src, key=lambda s: (s != "top", s))

    seen = []

    class Spy(OfflineBackend):
        def simulate(self, inp):
            seen.append(inp)
            assert isinstance(inp, SimulateInput)
            assert all(isinstance(t, str) for ex in inp.examples for t in ex)
            return super().simulate(inp)

    run_unit(Spy(), acts, corpus, 0)
    assert len(seen) == 2                 # the simulation examples, then the detection contexts
    run_unit(Spy(), acts, corpus, 0, detection=False)
    assert len(seen) == 3


def test_importance_weights_post_stratify_held_out_rows():
    corpus, _ = word_corpus(rows=400, vocab=300)
    acts = sparse_acts(corpus.tokens.shape, seed=4, density=0.004)
    ue = select_examples(acts, corpus, seed=1)
    held_out = 400 - len(ue.explain_rows)
    by_stratum = {}
    for e in ue.simulate:
        by_stratum.setdefault(e.stratum, []).append(e.weight)
    for s, ws in by_stratum.items():
        assert len(set(ws)) == 1                      # one weight per stratum
    total = sum(sum(ws) for ws in by_stratum.values())
    assert held_out * 0.9 <= total <= held_out + 1e-9  # each sampled stratum sums to its population
    assert by_stratum["silent"][0] > by_stratum["top"][0]   # rare silent samples stand for many rows
    assert by_stratum["silent"][0] > by_stratum["silent+top-token"][0]   # top tokens out of context: over-sampled


def test_score_simulation_checks_lengths():
    corpus = unique_corpus()
    ue = select_examples(sparse_acts(corpus.tokens.shape), corpus)
    with pytest.raises(ParseFailure):
        score_simulation(ue, [[0] * 9])
    perfect = [e.acts for e in ue.simulate]
    s = score_simulation(ue, perfect)
    assert s["spearman_raw"] == pytest.approx(1.0) and s["pearson"] == pytest.approx(1.0)
    # the headline compares the truth on the explainer's 0-9 scale: predicting that scale exactly is perfect
    scale = max(float(e.acts.max()) for e in ue.explain)
    assert score_simulation(ue, [quantise(e.acts, scale) for e in ue.simulate])["spearman"] == pytest.approx(1.0)


def test_logit_test_tokens_and_no_leak_into_explainer():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=500)
    test = logit_test_tokens(lw, seed=1)
    order = np.argsort(-lw)
    assert set(test.token_ids[test.labels]) == set(order[10:60])
    assert not set(test.token_ids[~test.labels]) & set(order[:60])
    assert test.labels.sum() == 50 and len(test.labels) == 100
    assert test.labels[:50].sum() not in (0, 50)                       # shuffled
    corpus = unique_corpus(rows=30, n_ctx=20)                           # vocab 600
    ue = select_examples(sparse_acts(corpus.tokens.shape, density=0.2), corpus)
    lw = rng.normal(size=600)
    ein = explain_input(ue, corpus.vocab_strs, lw)
    shown = set(ein.top_logits) | set(ein.bottom_logits)
    assert not shown & set(logit_test_tokens(lw).tokens(corpus.vocab_strs))


# ---------------------------------------------------------------- the offline backend
def planted_units(corpus, rng):
    t = corpus.tokens
    feature = np.where(t == 7, rng.uniform(2, 3, t.shape), 0.0) + np.where(t == 9, 1.0, 0.0)
    prev = np.zeros_like(t)
    prev[:, 1:] = t[:, :-1]
    bigram = np.where(prev == 11, 2.0, 0.0)
    noise = np.maximum(0, rng.normal(0, 1, t.shape)) * (rng.random(t.shape) < 0.3)
    return [feature.astype(np.float32), bigram.astype(np.float32), noise.astype(np.float32)]


def test_offline_backend_recovers_planted_units_and_is_deterministic():
    corpus, rng = word_corpus()
    acts = planted_units(corpus, rng)
    lw = rng.normal(size=(3, 150))
    df1 = score_units(ArraySource(corpus, acts, lw), [0, 1, 2], get_backend("offline"), progress=False)
    df2 = score_units(ArraySource(corpus, acts, lw), [0, 1, 2], OfflineBackend(), progress=False)
    assert df1.drop(columns=[]).equals(df2)
    assert (df1.status == "ok").all()
    s = df1.set_index("unit").spearman
    assert s[0] > 0.9 and s[1] > 0.8 and s[2] < 0.3
    assert df1.single_token[0] and not df1.single_token[2]
    assert '" w7"' in df1.explanation[0]
    summary = summarize(df1)
    assert summary["scored"] == 3 and summary["single_token"]["n"] == 1


def test_offline_simulator_reads_only_the_explanation():
    b = OfflineBackend()
    ein = ExplainInput([{"label": "top", "tokens": ["a", " b", "c"], "acts": [0, 9, 0]}] * 3, [], [])
    expl = b.explain(ein)
    pred = b.simulate(SimulateInput(expl, [[" b", "x", " b"], ["zz"]]))
    assert pred[0][0] > 0 and pred[0][1] == 0 and pred[0][2] > 0 and pred[1] == [0.0]
    with pytest.raises(ParseFailure):
        b.simulate(SimulateInput("a free-text explanation", [["a"]]))


def test_offline_logit_labels_prefer_tokens_like_the_promoted_ones():
    b = OfflineBackend()
    from mono_utils.autointerp.protocol import LogitInput
    expl = b.explain(ExplainInput([{"label": "top", "tokens": ["ACG"], "acts": [9]}], ["GT", "TTA", "CCG"], []))
    toks = ["ACGT", "GGA", " the", " court", "TC", " of"]
    labels = b.label_logits(LogitInput(expl, toks))
    assert labels == [True, True, False, False, True, False]


def test_bad_input():
    corpus, rng = word_corpus()
    src = ArraySource(corpus, planted_units(corpus, rng))
    with pytest.raises(ValueError, match="no units"):
        score_units(src, [], OfflineBackend())
    with pytest.raises(ValueError, match="unknown autointerp backend 'gpt5'.*offline"):
        get_backend("gpt5")
    with pytest.raises(ValueError, match="shape"):
        select_examples(np.zeros((3, 3)), corpus)
    dead = ArraySource(corpus, {0: np.zeros(corpus.tokens.shape)})
    assert score_units(dead, [0], OfflineBackend(), progress=False).status[0] == "dead"


def test_parse_failure_is_counted_not_raised():
    corpus, rng = word_corpus()

    class Broken(OfflineBackend):
        def simulate(self, inp):
            raise ParseFailure("garbled")

    df = score_units(ArraySource(corpus, planted_units(corpus, rng)), [0, 1], Broken(), progress=False)
    assert (df.status == "failed: garbled").all() and (df.failures == 1).all()
    assert summarize(df)["failed"] == 2


# ---------------------------------------------------------------- the randomized control
def test_randomized_model_shuffles_each_tensor(tiny_model):
    import torch
    r1, r2 = randomized_model(tiny_model, seed=0), randomized_model(tiny_model, seed=0)
    r3 = randomized_model(tiny_model, seed=1)
    orig = dict(tiny_model.named_parameters())
    changed = 0
    for name, p in r1.named_parameters():
        o = orig[name]
        assert p.shape == o.shape
        assert torch.equal(p.detach().reshape(-1).sort().values, o.detach().reshape(-1).sort().values)
        if o.unique().numel() > 4:                       # constant tensors (fresh biases) cannot change
            assert not torch.equal(p, o), name
            changed += 1
        assert torch.equal(p, dict(r2.named_parameters())[name])
    assert changed >= 5
    assert any(not torch.equal(p, dict(r3.named_parameters())[n]) for n, p in r1.named_parameters())
    toks = torch.arange(16)[None] % 64
    assert not torch.allclose(tiny_model(toks), r1(toks))


def test_offline_backend_generalises_to_a_token_class():
    corpus, rng = word_corpus(vocab=400)
    vocab = corpus.vocab_strs
    for i in range(200, 400):                       # a "script" of 200 tokens, fired on as a whole
        vocab[i] = " " + chr(0x05D0 + i % 27) + chr(0x05D0 + (i // 27) % 27)
    corpus = EvalCorpus(corpus.tokens, vocab)
    acts = np.where(corpus.tokens >= 200, 2.0, 0.0).astype(np.float32)
    r = run_unit(OfflineBackend(), acts, corpus, 0)
    assert '"hebrew script"' in r.explanation
    assert r.spearman > 0.8


def test_widget_and_figures_offline():
    from mono_utils.autointerp.widget import autointerp_widget, score_all, score_figure, summary_table
    corpus, rng = word_corpus()
    acts = planted_units(corpus, rng)
    sources = {"feature": ArraySource(corpus, acts[:2], rng.normal(size=(2, 150))),
               "neuron": ArraySource(corpus, acts[2:], rng.normal(size=(1, 150)), kind="neuron")}
    results = score_all(sources, OfflineBackend(), progress=False)
    fig = score_figure(results)
    assert len(fig.data) >= 2
    table = summary_table(results)
    assert set(table.units) == {"features", "neurons"}
    w = autointerp_widget(sources, default_n=5)
    w.controls["n"].value = 5
    w.run()
    assert set(w.state["results"]) == {"feature", "neuron"}


def test_cached_offline_scores_equal_direct_then_load(tiny_model, tmp_path, monkeypatch):
    import pandas as pd
    from _mono_standins import planted_index

    from mono_utils.autointerp import run as ar
    from mono_utils.store.artifacts import ArtifactStore
    idx, _ = planted_index(tiny_model, tmp_path, rows=60)
    vocab = [f" t{i}" for i in range(128)]    # the logit test needs >= 110 tokens
    logits = np.random.default_rng(0).normal(size=(96, 128))

    def sources(logit_id="m1"):
        return {"feature": ar.IndexSource(idx, "feature", vocab, logits, logit_id=logit_id),
                "neuron": ar.IndexSource(idx, "neuron", vocab)}
    store = ArtifactStore(tmp_path / "art")
    direct = ar.score_all(sources(), OfflineBackend(), n_units=6, progress=False)
    cached = ar.cached_offline_scores(sources(), n_units=6, store=store, progress=False)
    monkeypatch.setattr(ar, "score_units", lambda *a, **k: pytest.fail("recomputed instead of loaded"))
    loaded = ar.cached_offline_scores(sources(), n_units=6, store=store, progress=False)
    for res in (cached, loaded):
        assert list(res) == list(direct)
        for k in direct:
            pd.testing.assert_frame_equal(res[k], direct[k])
            assert res[k].attrs["backend"] == "offline"
    monkeypatch.undo()
    ar.cached_offline_scores(sources("m2"), n_units=6, store=store, progress=False)     # other logits
    ar.cached_offline_scores(sources(), n_units=6, store=store, backend=OfflineBackend(shrink=2.0),
                             progress=False)                                           # other backend parameters
    assert len([p for p in (store.root / "result").iterdir() if not p.name.startswith(".")]) == 3
    with pytest.raises(ValueError, match="IndexSource"):
        ar.cached_offline_scores({"x": ArraySource(*word_corpus()[:1], acts=np.zeros((1, 400, 32)))}, store=store)


def test_lookup_ceiling_token_and_pair_oracles():
    """A unit that is a function of the current token: the token oracle is perfect. One that
    fires on a token only after a given token: only the pair oracle sees it. Noise: neither."""
    from mono_utils.autointerp.experiments import lookup_ceiling
    corpus, rng = word_corpus(vocab=20)
    t = corpus.tokens
    token_unit = np.where(t == 7, 3.0, 0.0) + np.where(t == 9, 1.0, 0.0)
    prev = np.full_like(t, -1)
    prev[:, 1:] = t[:, :-1]
    # fires on w5 after w11 only: w5 alone is a poor guess (it mostly comes after other tokens)
    pair_unit = np.where((t == 5) & (prev == 11), 2.0, 0.0)
    noise = np.maximum(0, rng.normal(0, 1, t.shape)) * (rng.random(t.shape) < 0.3)
    src = ArraySource(corpus, [a.astype(np.float32) for a in (token_unit, pair_unit, noise)])
    c = lookup_ceiling(src, [0, 1, 2])
    assert list(c["unit"]) == [0, 1, 2]
    assert c["token"][0] > 0.99 and c["pair"][0] > 0.99
    assert c["pair"][1] > 0.99 and c["token"][1] < c["pair"][1] - 0.3
    assert c["token"][2] < 0.3 and c["pair"][2] < 0.5
    assert np.isnan(c["label_token"]).all()               # no labels: no label oracle


def test_lookup_ceiling_label_oracle():
    """A unit that fires on a token only in one kind of text: the (label, token) oracle sees it."""
    from mono_utils.autointerp.experiments import lookup_ceiling
    corpus, rng = word_corpus(vocab=20)
    t = corpus.tokens
    labels = np.zeros_like(t)
    labels[::3] = 1                                        # every third row is "another kind of text"
    unit = np.where((t == 7) & (labels == 1), 2.0, 0.0).astype(np.float32)
    c = lookup_ceiling(ArraySource(corpus, [unit]), [0], labels=labels)
    assert c["label_token"][0] > 0.99 and c["token"][0] < c["label_token"][0] - 0.2
    with pytest.raises(ValueError, match="one label per token"):
        lookup_ceiling(ArraySource(corpus, [unit]), [0], labels=labels[:2])


def test_ceiling_table_sets_offline_scores_beside_the_oracles():
    from mono_utils.autointerp.experiments import ceiling_table
    corpus, rng = word_corpus(vocab=20)
    acts = planted_units(corpus, rng)
    src = ArraySource(corpus, acts)
    results = {"feature": score_units(src, [0, 1, 2], OfflineBackend(), logits=False, progress=False)}
    t = ceiling_table({"feature": src}, results, n_units=2, kinds=("feature",))
    assert list(t.index) == ["features (2 at random)"]
    row = t.iloc[0]
    assert 0 <= row["oracle: mean per token"] <= row["oracle: mean per (previous, current) pair"] + 1e-9 <= 1 + 1e-9
    empty = results["feature"].assign(status="dead")
    with pytest.raises(ValueError, match="no scored feature units"):
        ceiling_table({"feature": src}, {"feature": empty}, kinds=("feature",))


def test_budget_curve_limits_the_explanation():
    from mono_utils.autointerp.experiments import budget_curve
    from mono_utils.autointerp.protocol import ExplainInput
    from mono_utils.autointerp.widget import budget_figure
    corpus, rng = word_corpus(vocab=20)
    src = ArraySource(corpus, planted_units(corpus, rng))
    curve = budget_curve({"feature": src, "neuron": src}, budgets=(1, 3), n_units=None, progress=False)
    assert list(curve["tokens named"]) == [1, 1, 3, 3] and list(curve.kind) == ["feature", "neuron"] * 2
    assert (curve.scored == len(src.units)).all() and curve["median"].between(-1, 1).all()
    # the same sample on both sides: the same medians
    assert curve.iloc[0]["median"] == curve.iloc[1]["median"]
    examples = [{"tokens": [f"w{i}", f"w{i + 1}"], "acts": [9, 5]} for i in range(8)]
    text = OfflineBackend(max_tokens=2, max_after=0, max_classes=0).explain(
        ExplainInput(examples=examples, top_logits=[], bottom_logits=[]))
    e = OfflineBackend.parse_explanation(text)
    assert len(e["on"]) <= 2 and not e["after"] and not e["classes"]
    assert len(budget_figure(curve).data) == 4
    with pytest.raises(ValueError, match="budgets"):
        budget_curve({"feature": src}, budgets=(0,), progress=False)
