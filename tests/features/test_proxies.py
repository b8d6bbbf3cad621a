import numpy as np
import pytest
from _mono_standins import random_tokens

from mono_utils.core.index import ActivationIndex, build_index_arrays
from mono_utils.features import proxies as px
from mono_utils.features import proxy_plots as pp


def _enc(tok, text):
    from mono_utils.core.tokenizer import encode
    return np.array(encode(tok, text))


@pytest.fixture(scope="module")
def tok(smoke_tokenizer, smoke_tokens):
    tok = smoke_tokenizer
    tok._test_lpu = px.unigram_logp(smoke_tokens.train, len(px.token_bytes(tok)))  # P(s) on the corpus
    return tok


def _llr(tok, text, name):
    tb = px.token_bytes(tok)
    ids = _enc(tok, text)
    return ids, px.proxy_llr(ids[None], tb, name, tok._test_lpu)[0]


def test_token_bytes_roundtrip(tok):
    tb = px.token_bytes(tok)
    ids = _enc(tok, "שלום hello مرحبا ACGT")
    assert b"".join(tb[i] for i in ids).decode() == "שלום hello مرحبا ACGT"


def test_proxies_on_hand_made_strings(tok):
    _, dna = _llr(tok, "ACGTTGCAACGTAGCTAGCTTACG", "dna")
    assert (dna > 0).mean() > 0.8
    for text in ("The cat sat on the mat.", "def foo(x):\n    return x"):
        for name in px.LLR_PROXIES[:1] + ("hebrew", "arabic"):
            assert not (_llr(tok, text, name)[1] > 0).any(), (text, name)
    ids, heb = _llr(tok, "שלום עולם ברוכים הבאים", "hebrew")
    assert (heb > -np.inf).mean() > 0.8 and (heb > 0).mean() > 0.6 and not (_llr(tok, "שלום עולם", "arabic")[1] > 0).any()
    _, ara = _llr(tok, "مرحبا بالعالم كيف حالك", "arabic")
    assert (ara > -np.inf).mean() > 0.8 and (ara > 0).mean() > 0.6 and not (_llr(tok, "مرحبا بالعالم", "hebrew")[1] > 0).any()
    _, b64 = _llr(tok, "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQ=", "base64")
    assert (b64 > -np.inf).all()
    # a lone "A" in English is not DNA (runs of >= 2 tokens only)
    ids, lone = _llr(tok, "I saw A dog", "dna")
    assert not (lone > 0).any()
    with pytest.raises(ValueError, match="unknown proxy"):
        _llr(tok, "x", "klingon")


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score
    g = np.random.default_rng(0)
    a = np.where(g.random(2000) < 0.7, 0, g.random(2000))
    y = g.random(2000) < 0.3 + 0.5 * (a > 0.5)
    assert px.auroc(a, y) == pytest.approx(roc_auc_score(y, a))
    a2 = g.normal(size=500)
    y2 = g.random(500) < 0.5
    assert px.auroc(a2, y2) == pytest.approx(roc_auc_score(y2, a2))
    assert np.isnan(px.auroc(a, np.zeros(2000, bool)))


def test_best_units_find_a_planted_detector():
    toks, dom, sub, dn, sn = random_tokens(50, 20, 64, seed=0)
    y = sub == 2                                       # the proxy: subdomain s2
    g = np.random.default_rng(1)
    n_tok, U = toks.size, 8
    acts = np.where(g.random((n_tok, U)) < 0.3, g.random((n_tok, U)), 0).astype(np.float32)
    acts[:, 4] = y.reshape(-1) * (1 + g.random(n_tok))  # unit 4 fires exactly on the proxy
    acts[:, 6] = np.where(y.reshape(-1), 0.1, 0.0) + np.where(g.random(n_tok) < 0.5, 0.5, 0)  # sensitive, unspecific
    import torch
    arrs = {k: build_index_arrays([(0, torch.from_numpy(acts))], U, n_tok, dom, 3, sub, 5) for k in ("feature", "neuron")}
    idx = ActivationIndex.from_arrays(toks, dom, sub, dn, sn, arrs)
    np.testing.assert_allclose(px.pearson_all(idx, "feature", y),
                               [np.corrcoef(acts[:, u].astype(np.float16).astype(float), y.reshape(-1))[0, 1] for u in range(U)],
                               atol=1e-6)
    best = px.best_units(idx, y)["feature"]
    assert best["unit"] == 4 and best["specificity"] == 1 and best["sensitivity"] == 1 and best["auroc"] == 1
    s6 = px.score_unit(idx, "feature", 6, y)
    assert s6["sensitivity"] == 1 and s6["specificity"] < 0.6
    table = px.proxy_table(idx, None, masks={"s2": y, "everything": np.ones_like(y)}, progress=False)
    assert set(table.proxy) == {"s2"} and len(table) == 2      # a proxy true everywhere is skipped
    m = px.table_metrics(table)
    assert m["proxies"]["s2"]["feature"]["unit"] == 4
    fig = pp.proxy_figure(idx, table, "s2", {"s2": y})
    assert len(fig.data) == 4
    with pytest.raises(ValueError, match="not in the table"):
        pp.proxy_figure(idx, table, "dna", {"s2": y})


def test_label_fast_path_equals_a_pass(tiny_model, tmp_path):
    from _mono_standins import planted_index
    idx, _ = planted_index(tiny_model, tmp_path)
    for j, name in enumerate(idx.subdomain_names):
        y = idx.subdomain == j
        for kind in ("feature", "neuron"):
            np.testing.assert_allclose(px.pearson_all(idx, kind, y, f"subdomain:{name}"), px.pearson_all(idx, kind, y),
                                       atol=1e-9)
    y = idx.domain == 1
    np.testing.assert_allclose(px.pearson_all(idx, "neuron", y, "domain:b"), px.pearson_all(idx, "neuron", y), atol=1e-9)


def _fail(*a, **k):
    raise AssertionError("recomputed: the cached result should have been loaded")


def test_cached_proxy_table_equals_direct_then_loads(tok, tiny_model, tmp_path, monkeypatch):
    import pandas as pd
    from _mono_standins import planted_index

    from mono_utils.store.artifacts import ArtifactStore
    idx, _ = planted_index(tiny_model, tmp_path)
    store = ArtifactStore(tmp_path / "art")
    direct_masks = px.proxy_masks(idx, tok)
    direct = px.proxy_table(idx, tok, direct_masks, min_tokens=1, progress=False)
    table, masks = px.cached_proxy_table(idx, tok, store, min_tokens=1, progress=False)
    pd.testing.assert_frame_equal(table, direct)
    monkeypatch.setattr(px, "proxy_table", _fail)
    monkeypatch.setattr(px, "_unit_sums", _fail)
    again, masks2 = px.cached_proxy_table(idx, tok, store, min_tokens=1, progress=False)
    pd.testing.assert_frame_equal(again, direct)
    assert list(masks2) == list(direct_masks)
    for k, v in direct_masks.items():
        np.testing.assert_array_equal(masks2[k], v)
    with pytest.raises(AssertionError, match="recomputed"):     # another parameter: another entry
        px.cached_proxy_table(idx, tok, store, min_tokens=2, progress=False)
    monkeypatch.undo()
    other, _ = planted_index(tiny_model, tmp_path / "b", seed=3)
    other.folder = tmp_path / "b" / "idx-other"                 # another index artifact: another entry
    px.cached_proxy_table(other, tok, store, min_tokens=1, progress=False)
    assert len([p for p in (store.root / "result").iterdir() if not p.name.startswith(".")]) == 2


def test_get_proxy_table_writes_metrics(tok, tiny_model, tmp_path):
    import json

    from _mono_standins import planted_index

    from mono_utils.store.artifacts import ArtifactStore
    idx, _ = planted_index(tiny_model, tmp_path)
    table, masks = px.get_proxy_table("smoke", ArtifactStore(tmp_path / "art"), index=idx, tokenizer=tok,
                                      progress=False)
    metrics = json.loads((idx.folder / "metrics.json").read_text())
    assert set(metrics["proxies"]) == set(table.proxy) and set(table.proxy) <= set(masks)


def test_best_unit_is_the_best_detector_not_the_best_correlated():
    toks, dom, sub, dn, sn = random_tokens(50, 20, 64, seed=2)
    y = (sub == 1).reshape(-1)
    g = np.random.default_rng(3)
    n_tok = toks.size
    acts = np.zeros((n_tok, 3), np.float32)
    acts[:, 0] = np.where(y & (g.random(n_tok) < 0.7), 5.0, 0)            # precise, misses 30%
    acts[:, 1] = np.where(y, 1.0, np.where(g.random(n_tok) < 0.2, 0.9, 0))  # exact above 0.95, noisy below
    import torch
    arrs = {k: build_index_arrays([(0, torch.from_numpy(acts))], 3, n_tok, dom, 3, sub, 5) for k in ("feature", "neuron")}
    idx = ActivationIndex.from_arrays(toks, dom, sub, dn, sn, arrs)
    r = px.pearson_all(idx, "feature", y)
    assert r[0] > r[1]                                   # Pearson alone would pick unit 0
    best = px.best_units(idx, y)["feature"]
    assert best["unit"] == 1 and best["best_f1"] == pytest.approx(1.0)
    assert best["specificity"] < 0.6 and best["specificity_at_t"] == pytest.approx(1.0)
    table = px.proxy_table(idx, None, masks={"s1": y}, progress=False)
    assert px.win_counts(table)["best_f1"] == "0/1"       # the same units on both sides: no win
    m = px.table_metrics(table)
    assert m["proxies_feature_wins"] == "0/1" and m["proxies_feature_wins_by_metric"]["auroc"] == "0/1"
    wt = px.win_table({"one SAE": table, "another": table})
    assert list(wt.index) == ["one SAE", "another"] and list(wt.columns) == list(px.WIN_METRICS.values())
    with pytest.raises(ValueError, match="unknown dictionary 'gated'.*paper2023"):
        px.get_proxy_table("smoke", index=idx, tokenizer=None, dictionary="gated")
    fig = pp.proxy_figure(idx, table, "s1", {"s1": y})
    assert any(sh.type == "line" for sh in fig.layout.shapes)   # the threshold is drawn
    assert list(table.specificity_at_feature_sensitivity) == [1.0, 1.0]
    pr = pp.pr_figure(idx, table, "s1", {"s1": y})
    curve = pr.data[0]
    assert curve.x[-1] == pytest.approx(1.0) and min(curve.y) == pytest.approx(best["specificity"])
    assert pr.data[2].x[0] == pytest.approx(1.0) and pr.data[2].y[0] == pytest.approx(1.0)   # the best-F1 star
    with pytest.raises(ValueError, match="not in the table"):
        pp.pr_figure(idx, table, "dna", {"s1": y})
