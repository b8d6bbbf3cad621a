"""Every autointerp score side by side: the 0-9 headline, detection, intervals, the density control."""
from __future__ import annotations

import numpy as np
import pytest
from _mono_standins import planted_index
from test_autointerp_backends import Stub

from mono_utils.autointerp import run as ar
from mono_utils.autointerp.compare import _choose_provider, llm_comparison, synthetic_demo
from mono_utils.autointerp.protocol import (EvalCorpus, Example, ParseFailure, explain_scale, quantise, score_simulation,
                                   select_examples, weighted_spearman)
from mono_utils.autointerp.offline import OfflineBackend
from mono_utils.autointerp.run import (ArraySource, DensityMatchedSource, median_live_density, run_unit,
                                       score_all, score_units, summarize, with_density_control)
from mono_utils.autointerp.scores import (SCORES, DetectionConfig, detection_score, median_ci, score_summary,
                                          score_table, select_detection)
from mono_utils.store.artifacts import ArtifactStore


def word_corpus(rows=400, n_ctx=32, vocab=150, seed=0):
    rng = np.random.default_rng(seed)
    return EvalCorpus(rng.integers(0, vocab, (rows, n_ctx)), [f" w{i}" for i in range(vocab)]), rng


def sparse_with_faint(corpus, rng, faint_share=0.2):
    """6-10 on " w7" after a token below w100 (silent on the other third of its occurrences); a
    faint 0.01-0.2 (invisible on the 0-9 scale) on a share of the other tokens."""
    t = corpus.tokens
    prev = np.zeros_like(t)
    prev[:, 1:] = t[:, :-1]
    acts = np.where((t == 7) & (prev < 100), rng.uniform(6, 10, t.shape), 0.0)
    faint = (t != 7) & (rng.random(t.shape) < faint_share)
    return np.where(faint, rng.uniform(0.01, 0.2, t.shape), acts).astype(np.float32)


# ---------------------------------------------------------------- the simulation scores
def test_headline_compares_the_truth_on_the_explainers_scale():
    corpus, rng = word_corpus()
    acts = sparse_with_faint(corpus, rng)
    ue = select_examples(acts, corpus, seed=2)
    scale = explain_scale(ue)
    assert scale == pytest.approx(max(float(e.acts.max()) for e in ue.explain))
    visible = [quantise(e.acts, scale) for e in ue.simulate]          # what a reader of the display sees
    s = score_simulation(ue, visible)
    assert s["spearman"] == pytest.approx(1.0)
    # the same predictions on raw activations: the faint tokens outrank every 0, so the score drops
    assert s["spearman_raw"] < 0.6
    assert s["pearson"] > 0.95
    # by hand: the headline is the weighted Spearman of the quantised truth
    true = np.concatenate([e.acts for e in ue.simulate])
    pred = np.concatenate(visible)
    w = np.concatenate([np.full(len(e.acts), e.weight) for e in ue.simulate])
    assert s["spearman"] == pytest.approx(weighted_spearman(quantise(true, scale), pred, w))
    assert s["spearman_raw"] == pytest.approx(weighted_spearman(true, pred, w))
    assert s["spearman_unweighted"] == pytest.approx(weighted_spearman(true, pred))
    # with nothing faint, raw and quantised truth agree on a perfect reader
    clean = np.where(acts >= 1, acts, 0).astype(np.float32)
    ue2 = select_examples(clean, corpus, seed=2)
    s2 = score_simulation(ue2, [quantise(e.acts, explain_scale(ue2)) for e in ue2.simulate])
    assert s2["spearman"] == pytest.approx(1.0) and s2["spearman_raw"] > 0.95


# ---------------------------------------------------------------- detection
def _ex(acts, source="x"):
    acts = np.asarray(acts, np.float32)
    return Example(0, 0, 0, np.zeros(len(acts), np.int64), acts, source)


def test_detection_score_hand_computed():
    # scale 9: an activation >= 0.5 is visible. Positives: 3, negatives: 2 (one of them faint: 0.4)
    exs = [_ex([0, 9, 0]), _ex([0, 3, 0]), _ex([1, 0, 0]), _ex([0, 0, 0]), _ex([0.4, 0, 0])]
    pred = [[0, 7, 0], [0, 0.2, 0], [0.6, 0, 0], [0, 0, 0], [0, 0, 0.5]]
    d = detection_score(exs, pred, scale=9.0)
    assert (d["detection_pos"], d["detection_neg"]) == (3, 2)
    assert d["detection_tpr"] == pytest.approx(2 / 3) and d["detection_tnr"] == pytest.approx(1 / 2)
    assert d["detection"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert detection_score(exs, [[0, 0, 0]] * 5, 9.0)["detection"] == pytest.approx(0.5)   # silence: chance
    assert detection_score(exs, [[9, 9, 9]] * 5, 9.0)["detection"] == pytest.approx(0.5)   # always on: chance
    only_pos = detection_score(exs[:2], pred[:2], 9.0)
    assert np.isnan(only_pos["detection"]) and only_pos["detection_neg"] == 0
    with pytest.raises(ParseFailure):
        detection_score(exs, pred[:4], 9.0)
    with pytest.raises(ParseFailure):
        detection_score(exs, [[0, 0]] * 5, 9.0)


def test_detection_contexts_are_held_out_and_labelled_as_a_reader_sees_them():
    corpus, rng = word_corpus(rows=800)
    acts = sparse_with_faint(corpus, rng)
    ue = select_examples(acts, corpus, seed=1)
    cfg = DetectionConfig()
    det = select_detection(acts, corpus, ue, seed=3, cfg=cfg)
    rows = [e.row for e in det]
    assert len(set(rows)) == len(rows)                                   # one context per row
    assert not set(rows) & (ue.explain_rows | ue.simulate_rows)          # never an explained or simulated row
    scale = explain_scale(ue)
    pos = [e for e in det if e.source.startswith("quantile")]
    neg = [e for e in det if not e.source.startswith("quantile")]
    assert len(pos) == cfg.n_quantiles * cfg.per_quantile
    assert sum(e.source == "random" for e in neg) == cfg.n_random
    assert sum(e.source == "top-token" for e in neg) == cfg.n_top_token
    assert all(quantise(e.acts.max(), scale) >= 1 for e in pos)
    assert all(quantise(e.acts.max(), scale) == 0 for e in neg)         # faint activations allowed, not visible
    assert any(e.acts.max() > 0 for e in neg)                            # ...and some negatives do hold them
    assert all(" w7" in e.tokens(corpus.vocab_strs) for e in neg if e.source == "top-token")
    # across quantiles: the positives span the visible rows' maxima, not only the top
    row_max = acts.max(1)
    visible = np.sort(row_max[quantise(row_max, scale) >= 1])
    maxima = sorted(float(e.acts.max()) for e in pos)
    assert maxima[0] < np.quantile(visible, 0.2) and maxima[-1] > np.quantile(visible, 0.8)
    # a unit that fires on every occurrence of its token has no silent top-token context: random ones only
    always = np.where(corpus.tokens == 7, 5.0, 0.0).astype(np.float32)
    ue_a = select_examples(always, corpus, seed=1)
    det_a = select_detection(always, corpus, ue_a, seed=3, cfg=cfg)
    assert [e.source for e in det_a].count("top-token") == 0 and [e.source for e in det_a].count("random") == 10
    # seeded
    again = select_detection(acts, corpus, ue, seed=3, cfg=cfg)
    assert [(e.row, e.start) for e in again] == [(e.row, e.start) for e in det]
    other = select_detection(acts, corpus, ue, seed=4, cfg=cfg)
    assert [(e.row, e.start) for e in other] != [(e.row, e.start) for e in det]


def test_detection_in_run_unit_tells_a_good_explanation_from_none():
    corpus, rng = word_corpus(rows=800)
    acts = sparse_with_faint(corpus, rng)
    good = run_unit(OfflineBackend(), acts, corpus, 0)
    assert good.status == "ok" and good.extra["detection_pos"] == 20 and good.extra["detection_neg"] == 20
    # "fires on w7" finds every activating context and every silent random one, and is fooled by
    # each w7 the unit stays silent on: the top-token negatives are there to catch exactly that
    assert good.extra["detection_tpr"] == 1.0 and good.extra["detection_tnr"] == 0.5
    assert good.detection == pytest.approx(0.75)

    class Reader(OfflineBackend):          # knows the rule: w7 after a token below w100
        def simulate(self, inp):
            out = []
            for x in inp.examples:
                ids = [int(t[2:]) for t in x]
                out.append([9.0 if i == 7 and k and ids[k - 1] < 100 else 0.0 for k, i in enumerate(ids)])
            return out

    reader = run_unit(Reader(), acts, corpus, 0)
    # no false alarm; it misses only a w7 at a context's first token, whose previous token it cannot see
    assert reader.extra["detection_tnr"] == 1.0 and reader.detection >= 0.9 > good.detection

    class Silent(OfflineBackend):
        def simulate(self, inp):
            return [[0.0] * len(x) for x in inp.examples]

    silent = run_unit(Silent(), acts, corpus, 0)
    assert silent.detection == pytest.approx(0.5) and silent.spearman == 0.0

    class BrokenDetection(OfflineBackend):
        calls = 0

        def simulate(self, inp):
            self.calls += 1
            if self.calls == 2:
                raise ParseFailure("garbled")
            return super().simulate(inp)

    r = run_unit(BrokenDetection(), acts, corpus, 0)
    assert r.status == "ok" and np.isnan(r.detection) and r.failures == 1 and r.spearman == good.spearman
    assert r.extra["detection_failure"] == "garbled"


def test_dense_unit_without_silent_contexts_has_no_detection_score():
    corpus, rng = word_corpus()
    acts = (0.5 + rng.random(corpus.tokens.shape)).astype(np.float32)     # on everywhere, always visible
    r = run_unit(OfflineBackend(), acts, corpus, 0)
    assert r.status == "ok" and np.isnan(r.detection) and r.extra["detection_neg"] == 0


# ---------------------------------------------------------------- medians and intervals
def test_median_ci_is_seeded_and_covers_the_median():
    rng = np.random.default_rng(0)
    v = rng.normal(0.3, 0.2, 400)
    med, lo, hi = median_ci(v, seed=1)
    assert med == pytest.approx(np.median(v)) and lo < med < hi
    assert median_ci(v, seed=1) == (med, lo, hi)
    assert median_ci(v, seed=2) != (med, lo, hi)
    # about the normal approximation of the median's spread: 1.2533 * sd / sqrt(n), 95% half-width 1.96x
    assert (hi - lo) / 2 == pytest.approx(1.96 * 1.2533 * 0.2 / np.sqrt(400), rel=0.35)
    _, lo4, hi4 = median_ci(v[:25], seed=1)
    assert hi4 - lo4 > hi - lo                                            # fewer units: wider
    assert np.isnan(median_ci([np.nan, np.nan])[0])
    assert median_ci([0.4]) == (0.4, 0.4, 0.4)
    assert median_ci([0.1, np.nan, 0.3])[0] == pytest.approx(0.2)         # NaNs left out
    with pytest.raises(ValueError, match="level"):
        median_ci(v, level=95)


def _planted_sources():
    corpus, rng = word_corpus()
    t = corpus.tokens
    feats = [np.where(t == k, rng.uniform(2, 3, t.shape), 0.0).astype(np.float32) for k in (3, 5, 7, 9)]
    neurons = [(np.maximum(0, rng.normal(0, 1, t.shape)) * (rng.random(t.shape) < 0.4)).astype(np.float32)
               for _ in range(4)]
    return {"feature": ArraySource(corpus, feats), "neuron": ArraySource(corpus, neurons, kind="neuron")}


def test_score_table_every_score_every_kind():
    sources = with_density_control(_planted_sources())
    assert list(sources) == ["feature", "neuron", "neuron_at_density"]
    results = score_all(sources, OfflineBackend(), progress=False, logits=False)
    for df in results.values():
        assert set(SCORES) <= set(df.columns)
    long = score_summary(results, n_boot=200)
    assert len(long) == 3 * len(SCORES)
    assert (long["low"] <= long["median"] + 1e-12).all() and (long["median"] <= long["high"] + 1e-12).all()
    feat = long[(long.kind == "feature") & (long.score == "spearman")].iloc[0]
    assert feat["median"] == pytest.approx(results["feature"].spearman.median())
    table = score_table(results, n_boot=200)
    assert list(table.index) == ["features", "neurons", "neurons at the features' density"]
    assert list(table.columns) == ["n"] + [SCORES[s][0] for s in SCORES]
    assert table.loc["features", "n"] == 4
    cell = table.loc["features", SCORES["spearman"][0]]
    assert cell.startswith(f"{feat['median']:.2f} [")
    s = summarize(results["feature"])
    assert s["all"]["median_detection"] == pytest.approx(results["feature"].detection.median())
    with pytest.raises(ValueError, match="rescore"):
        score_summary({"feature": results["feature"].drop(columns=["detection"])})
    with pytest.raises(ValueError, match="part"):
        score_summary(results, part="some")


# ---------------------------------------------------------------- neurons at the features' density
def test_density_matched_neurons_keep_their_strongest_activations():
    sources = _planted_sources()
    feat_density = median_live_density(sources["feature"])
    assert feat_density == pytest.approx(np.median([(sources["feature"].unit_acts(u) > 0).mean() for u in range(4)]))
    ctl = with_density_control(sources)["neuron_at_density"]
    assert isinstance(ctl, DensityMatchedSource) and ctl.density == feat_density and ctl.units == [0, 1, 2, 3]
    n_tokens = sources["neuron"].corpus.tokens.size
    for u in ctl.units:
        base, sparse = sources["neuron"].unit_acts(u), ctl.unit_acts(u)
        assert (sparse > 0).sum() == round(feat_density * n_tokens)
        kept = sparse > 0
        assert np.array_equal(sparse[kept], base[kept])                       # values unchanged where kept
        assert base[~kept].max() <= sparse[kept].min()                        # the strongest ones kept
    assert (sources["neuron"].unit_acts(0) > 0).mean() > 3 * feat_density       # it was much denser
    with pytest.raises(ValueError, match="density"):
        DensityMatchedSource(sources["neuron"], 0.0)
    # a unit already sparser than the target is left as it is
    sparse_src = DensityMatchedSource(sources["feature"], 0.5)
    assert np.array_equal(sparse_src.unit_acts(0), sources["feature"].unit_acts(0))
    assert with_density_control({"neuron": sources["neuron"]}) == {"neuron": sources["neuron"]}


def test_cached_scores_hold_every_score_and_the_density_control(tiny_model, tmp_path):
    idx, _ = planted_index(tiny_model, tmp_path, rows=60)
    vocab = [f" t{i}" for i in range(128)]
    sources = with_density_control({"feature": ar.IndexSource(idx, "feature", vocab),
                                    "neuron": ar.IndexSource(idx, "neuron", vocab)})
    assert sources["neuron_at_density"].density == pytest.approx(
        float(np.median(idx.density("feature")[idx.live_units("feature")])))
    ident = ar.source_identity(sources["neuron_at_density"])
    assert ident["density_matched"] == sources["neuron_at_density"].density
    assert ident != ar.source_identity(sources["neuron"])
    store = ArtifactStore(tmp_path / "art")
    res = ar.cached_offline_scores(sources, n_units=5, store=store, progress=False)
    assert list(res) == ["feature", "neuron", "neuron_at_density"]
    again = ar.cached_offline_scores(sources, n_units=5, store=store, progress=False)
    for k in res:
        assert set(SCORES) <= set(res[k].columns)
        assert res[k][list(SCORES)].equals(again[k][list(SCORES)])


def test_score_units_detection_flag():
    sources = _planted_sources()
    df = score_units(sources["feature"], [0, 1], OfflineBackend(), logits=False, progress=False, detection=False)
    assert df.detection.isna().all() and df.spearman.notna().all()


# ---------------------------------------------------------------- the synthetic lesson and the LLM path
def test_synthetic_demo_shows_where_the_scores_part():
    d = synthetic_demo(seed=0)
    q, raw, det = (SCORES[k][0] for k in ("spearman", "spearman_raw", "detection"))
    sparse = [u for u in d.index.get_level_values(0) if u.startswith("sparse")][0]
    dense = [u for u in d.index.get_level_values(0) if u.startswith("dense")][0]
    oracle = d.loc[(sparse, "reader's oracle")]
    # a perfect reader of the display: perfect on the 0-9 scale and on detection, poor on raw ranks
    assert oracle[q] == 1.0 and oracle[det] == 1.0 and oracle[raw] < 0.5
    assert d.loc[(dense, "reader's oracle")][raw] > 0.95                  # nothing faint: raw ranks agree
    for unit in (sparse, dense):
        const = d.loc[(unit, "constant 0")]
        assert const[q] == 0 and const[raw] == 0 and const[det] == 0.5
    assert d.equals(synthetic_demo(seed=0))                                 # seeded


def _two_kinds():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 120, (1200, 24))
    corpus = EvalCorpus(tokens, [f" w{i}" for i in range(120)])
    acts = {u: np.where(tokens == 7, 3.0 + u, 0.0).astype(np.float32) for u in range(3)}
    even = (np.arange(1200) % 2 == 0)[:, None]          # other rows: other prompts (no shared cache entries)
    other = {u: np.where((tokens == 7) & even, 1.0 + u, 0.0).astype(np.float32) for u in range(3)}
    return {"feature": ArraySource(corpus, acts, rng.normal(size=(3, 120))),
            "neuron": ArraySource(corpus, other, rng.normal(size=(3, 120)), kind="neuron")}


@pytest.fixture()
def no_llm_env(monkeypatch):
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "MONO_AUTOINTERP_BASE_URL", "MONO_AUTOINTERP_MODEL"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_llm_comparison_skipped_without_key_or_endpoint(no_llm_env, capsys):
    assert llm_comparison(_two_kinds(), n_units=2) is None
    out = capsys.readouterr().out
    assert "skipped" in out and "ANTHROPIC_API_KEY" in out and "MONO_AUTOINTERP_BASE_URL" in out
    assert _choose_provider(None, None) is None
    no_llm_env.setenv("OPENAI_API_KEY", "k")
    assert _choose_provider(None, None) == "openai"
    no_llm_env.setenv("ANTHROPIC_API_KEY", "k")
    assert _choose_provider(None, None) == "anthropic"
    assert _choose_provider(None, "http://127.0.0.1:1/v1") == "openai"     # an endpoint wins
    with pytest.raises(ValueError, match="n_units"):
        llm_comparison(_two_kinds(), n_units=0)


def test_llm_comparison_estimates_first_then_scores_every_kind(no_llm_env, tmp_path, capsys):
    stub = Stub()
    try:
        url = f"http://127.0.0.1:{stub.port}/v1"
        kw = dict(base_url=url, cache_dir=tmp_path / "cache", backoff=0.01, max_backoff=0.05, timeout=5.0,
                  progress=False)
        # above the budget: the estimate is printed and nothing is called
        assert llm_comparison(_two_kinds(), n_units=2, max_dollars=0.0, **kw) is None
        out = capsys.readouterr().out
        assert "12 calls" in out and "$" in out and "not run" in out
        assert stub.requests == []
        res = llm_comparison(_two_kinds(), n_units=2, **kw)              # a local server: no key needed
        out = capsys.readouterr().out
        assert "12 calls" in out and "not run" not in out
        assert list(res) == ["feature", "neuron"]
        assert len(stub.requests) == 12 and all(r["auth"] == "Bearer no-key-needed" for r in stub.requests)
        for df in res.values():
            assert (df.status == "ok").all() and len(df) == 2
            assert df.logit_accuracy.isna().all()                            # no logit test here
        # the stub "LLM" explains "w7" and predicts 9 on every w7: right for the features, fooled by
        # the odd rows' silent w7s for the neurons (the top-token negatives of detection)
        assert (res["feature"].spearman > 0.9).all() and (res["feature"].detection > 0.9).all()
        assert (res["neuron"].detection < res["feature"].detection).all()
        assert score_table(res, n_boot=100).shape == (2, 1 + len(SCORES))
    finally:
        stub.close()
