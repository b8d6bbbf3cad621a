"""Universality: streaming correlation, matching, the two-model pipeline, bad input."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mono_utils.core.model import model_config_of
from mono_utils.universality import cache as UC
from mono_utils.universality import compare as U


def _sparse_acts(rng, n, k, density=0.05):
    x = rng.exponential(1.0, (n, k)) * (rng.random((n, k)) < density)
    return x.astype(np.float32)


def _brute_max(a, b):
    """Reference: np.corrcoef over all pairs, excluding constant columns."""
    la, lb = a.std(0) > 0, b.std(0) > 0
    c = np.corrcoef(a[:, la].T, b[:, lb].T)[: la.sum(), la.sum():]
    best = np.full(a.shape[1], -1)
    best[la] = np.flatnonzero(lb)[c.argmax(1)]
    mx = np.zeros(a.shape[1])
    mx[la] = c.max(1)
    return best, mx, c


@pytest.mark.parametrize("density", [0.03, 0.5])   # sparse path and dense path
def test_matches_brute_force_with_dead_units(density, monkeypatch):
    monkeypatch.setattr(U, "SPARSE_MIN_UNITS", 0)
    rng = np.random.default_rng(0)
    a, b = _sparse_acts(rng, 3000, 40, density), _sparse_acts(rng, 3000, 30, density)
    a[:, 5] = 0          # never fires
    b[:, [2, 7]] = 0
    a[:, 6] = a[:, 3] * 2 + 0.5 * b[:, 11]   # strongly correlated with something in B? with b11
    b[:, 12] = 3 * a[:, 9]                   # exact copy of an A unit (scaled)
    res = U.max_correlation(a, b, chunk=700, keep_matrix=True)
    best, mx, c = _brute_max(a, b)
    assert not np.isnan(res.max_corr).any() and not np.isnan(res.corr).any()
    assert res.n_excluded_a == 1 and res.n_excluded_b == 2
    assert res.match[5] == -1 and res.max_corr[5] == 0
    np.testing.assert_array_equal(res.match, best)
    np.testing.assert_allclose(res.max_corr, mx, atol=1e-5)
    la, lb = a.std(0) > 0, b.std(0) > 0
    np.testing.assert_allclose(res.corr[np.ix_(la, lb)], c, atol=1e-5)
    assert res.match[9] == 12 and res.max_corr[9] > 0.9999
    assert res.summary()["n_live_a"] == 39
    assert res.median == pytest.approx(np.median(mx[la]), abs=1e-6)


def test_inputs_torch_scipy_and_chunks_agree():
    rng = np.random.default_rng(1)
    a, b = _sparse_acts(rng, 1000, 12), _sparse_acts(rng, 1000, 9)
    r1 = U.max_correlation(a, b, chunk=1000)
    r2 = U.max_correlation(torch.from_numpy(a), sp.csr_matrix(b), chunk=137)
    r3 = U.max_correlation([a[:400], a[400:]], [b[:400], b[400:]])
    for r in (r2, r3):
        np.testing.assert_array_equal(r.match, r1.match)
        np.testing.assert_allclose(r.max_corr, r1.max_corr, atol=1e-6)


def test_cosine_and_rowwise():
    rng = np.random.default_rng(2)
    a, b = _sparse_acts(rng, 500, 6, 0.3), _sparse_acts(rng, 500, 4, 0.3)
    st = U.CorrelationStats(6, 4).update(a, b)
    ref = (a.T @ b) / np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))
    np.testing.assert_allclose(st.cosine(), ref, atol=1e-5)
    x, y = rng.normal(size=(5, 50)), rng.normal(size=(5, 50))
    y[0] = 2 * x[0] + 1
    ref = [np.corrcoef(x[i], y[i])[0, 1] for i in range(5)]
    np.testing.assert_allclose(U.rowwise_pearson(x, y), ref, atol=1e-5)
    ds = U.DiagonalStats(5)
    ds.update(x.T[:20], y.T[:20])
    ds.update(x.T[20:], y.T[20:])
    np.testing.assert_allclose(ds.correlation(), ref, atol=1e-5)


def test_bad_input():
    a = np.ones((10, 3), np.float32)
    with pytest.raises(ValueError, match="same token"):
        U.max_correlation(a, np.ones((11, 3), np.float32))
    with pytest.raises(ValueError, match="tokens"):
        U.CorrelationStats(3, 3).update(a, np.ones((9, 3)))
    with pytest.raises(ValueError, match="no unit of B"):
        U.max_correlation(np.random.rand(10, 3), np.zeros((10, 2)))


# ---------------------------------------------------------------- two tiny models
class StandInSAE(torch.nn.Module):
    """The SAE interface (encode, W_dec_raw, cfg) with hand-set weights."""

    def __init__(self, W_enc, b_enc, W_dec):
        super().__init__()
        self.W_enc, self.b_enc, self._W_dec = W_enc.float(), b_enc.float(), W_dec.float()
        self.cfg = SimpleNamespace(d_in=W_enc.shape[0], d_sae=W_enc.shape[1], architecture="relu")

    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)

    @property
    def W_dec_raw(self):
        return self._W_dec


def _planted_sae(model, tokens, planted_token, slot, d_sae, seed):
    """Random sparse features, plus feature ``slot`` = a linear probe for ``planted_token``."""
    from mono_utils.core.model import mlp_post
    g = torch.Generator().manual_seed(seed)
    x = mlp_post(model, torch.from_numpy(tokens)).reshape(-1, model_config_of(model).d_mlp)
    y = torch.from_numpy((tokens.reshape(-1) == planted_token).astype(np.float32))
    X = torch.cat([x, torch.ones(len(x), 1)], 1)
    w = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    d = x.shape[1]
    W_enc = torch.randn(d, d_sae, generator=g) / d ** 0.5
    scale = (x @ W_enc).std(0)
    W_enc = W_enc / scale
    b_enc = torch.full((d_sae,), -2.0)
    probe = X @ w
    cut = probe.quantile(1 - 1.5 * float(y.mean()))     # fires on about as many tokens as the label
    W_enc[:, slot], b_enc[slot] = w[:-1] / probe.std(), (w[-1] - cut) / probe.std()
    W_dec = torch.randn(d_sae, d, generator=g)
    return StandInSAE(W_enc, b_enc, W_dec)


def test_planted_feature_is_matched_across_two_models(tiny_model):
    from mono_utils.core.model import ModelConfig, build_model
    model_b = build_model(ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=1))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 64, (96, 16)).astype(np.int64)
    sae_a = _planted_sae(tiny_model, tokens, 7, slot=3, d_sae=48, seed=0)
    sae_b = _planted_sae(model_b, tokens, 7, slot=40, d_sae=48, seed=1)
    label = (tokens == 7).astype(np.uint8)
    res = U.compare_models(tiny_model, model_b, sae_a, sae_b, tokens, labels={"tok": (label, ["other", "seven"])},
                           batch_rows=32, progress=False)
    assert res.features.match[3] == 40
    others = np.delete(res.features.live_max_corr, np.flatnonzero(res.features.live_a) == 3)
    assert res.features.max_corr[3] > 0.5 and res.features.max_corr[3] > others.max()
    i, lc = res.best_feature_for("tok:seven", "A")
    assert i == 3 and lc > 0.5
    table = res.named_matches(["tok:seven"])
    assert table.iloc[0]["feature_B"] == 40 and bool(table.iloc[0]["same_as_match"])
    for arr in (res.logit_sim, res.attribution_sim, res.features.max_corr, res.neurons.max_corr):
        assert not np.isnan(arr).any()
    assert res.neurons.live_a.sum() > 0 and -1 <= res.neurons.median <= 1
    assert res.acts_a.shape == (96 * 16, 48)
    m = res.metrics()["universality"]
    assert set(m) >= {"median_max_corr_features", "median_max_corr_neurons", "gap"}


def test_attribution_sim_against_reference(tiny_model):
    """Matched-pair attribution similarity equals a dense, direct computation."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 64, (8, 16)).astype(np.int64)
    n = tokens.size
    a = sp.csr_matrix(_sparse_acts(rng, n, 5, 0.4))
    b = sp.csr_matrix(_sparse_acts(rng, n, 4, 0.4))
    lw_a, lw_b = rng.normal(size=(5, 64)), rng.normal(size=(4, 64))
    match = np.array([0, 3, 1, 2, 0])
    got = U._attribution_sim(a, b, lw_a, lw_b, match, tokens, np.ones(5, bool), chunk=50)
    nxt = tokens[:, 1:].reshape(-1)
    keep = np.ones(tokens.shape, bool)
    keep[:, -1] = False
    A, B = a.toarray()[keep.reshape(-1)], b.toarray()[keep.reshape(-1)]
    for i, j in enumerate(match):
        ref = np.corrcoef(A[:, i] * lw_a[i, nxt], B[:, j] * lw_b[j, nxt])[0, 1]
        assert got[i] == pytest.approx(ref, abs=1e-5)


def test_compare_models_bad_input(tiny_model):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 64, (4, 16))
    sae = StandInSAE(torch.randn(64, 8), torch.zeros(8), torch.randn(8, 64))
    other = StandInSAE(torch.randn(32, 8), torch.zeros(8), torch.randn(8, 32))
    with pytest.raises(ValueError, match="d_in"):
        U.compare_models(tiny_model, tiny_model, sae, other, tokens, progress=False)
    with pytest.raises(ValueError, match="one label per token"):
        U.compare_models(tiny_model, tiny_model, sae, sae, tokens, labels={"x": (np.zeros((3, 16)), ["a"])},
                         progress=False)


class _Tok:
    def __len__(self):
        return 64

    def decode(self, ids, **kw):
        return f"t{ids[0]}"


def test_figures_and_pair_html(tiny_model):
    from mono_utils.core.model import ModelConfig, build_model
    from mono_utils.universality import widgets as UW
    model_b = build_model(ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=1))
    tokens = np.random.default_rng(0).integers(0, 64, (32, 16)).astype(np.int64)
    sae_a = _planted_sae(tiny_model, tokens, 7, slot=3, d_sae=16, seed=0)
    sae_b = _planted_sae(model_b, tokens, 7, slot=5, d_sae=16, seed=1)
    res = U.compare_models(tiny_model, model_b, sae_a, sae_b, tokens, progress=False)
    fig = UW.max_corr_histogram(res)
    assert len(fig.data) == 2 and "median" in fig.data[0].name
    assert len(UW.similarity_scatter(res).data) == 4
    h = UW.pair_html(res, 3, tiny_model, model_b, sae_a, sae_b, _Tok())
    assert f"B/1 feature {res.features.match[3]}" in h and "top examples" in h
    w = UW.pair_browser(res, tiny_model, model_b, sae_a, sae_b, _Tok())
    w.children[0].children[1].value = 1          # move the rank slider: the pair shown changes
    assert "A/1 feature" in w.children[1].value
    vocab = [f"t{i}" for i in range(64)]
    tt = U.top_tokens(res.acts_a, tokens, vocab)
    assert len(tt) == 16 and "t7" in tt[3]


def test_label_correlation():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 3, 500)
    acts = _sparse_acts(rng, 500, 4, 0.3)
    acts[:, 2] = (ids == 1) * 2.0
    lc = U.label_correlation(acts, ids, 3, chunk=77)
    ref = np.corrcoef(acts.T, np.eye(3)[ids].T)[:4, 4:]
    np.testing.assert_allclose(lc, ref, atol=1e-5)
    assert lc[2, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one label per token"):
        U.label_correlation(acts, ids[:10], 3)


# ---------------------------------------------------------------- the cached comparison (notebook 04)
def test_example_entries_keep_examples_identical():
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 64, (40, 16))
    # rounded values: many ties, which top_positions breaks by position
    acts = sp.csc_matrix(np.round(_sparse_acts(rng, 640, 12, 0.3), 1))
    cut = UC.example_entries(acts, 16, k=5, before=10, after=3)
    vocab = [f"t{i}" for i in range(64)]
    assert cut.nnz < acts.nnz and (cut.getnnz(0) > 0).tolist() == (acts.getnnz(0) > 0).tolist()
    assert U.top_tokens(cut, tokens, vocab) == U.top_tokens(acts, tokens, vocab)
    for u in range(12):
        for k in (5, 4, 1):
            assert U.examples_html(cut, u, tokens, vocab, k=k) == U.examples_html(acts, u, tokens, vocab, k=k)


def _assert_same_comparison(got, ref):
    for w in ("features", "neurons"):
        for f in ("max_corr", "match", "live_a", "live_b"):
            np.testing.assert_array_equal(getattr(getattr(got, w), f), getattr(getattr(ref, w), f))
    for f in ("logit_sim", "attribution_sim", "neuron_logit_sim", "label_corr_a", "label_corr_b", "density_a",
              "density_b", "tokens"):
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f))
    assert got.label_names == ref.label_names and got.metrics() == ref.metrics()
    assert got.named_matches().equals(ref.named_matches())
    vocab = [str(i) for i in range(int(ref.tokens.max()) + 1)]
    assert U.top_tokens(got.acts_b, got.tokens, vocab) == U.top_tokens(ref.acts_b.tocsc(), ref.tokens, vocab)


def test_comparison_cached_in_the_store(smoke_preset, smoke_store, tmp_path, monkeypatch):
    from mono_utils.pipeline import models as pipeline
    from mono_utils.pipeline.saes import get_sae
    from mono_utils.store.artifacts import ArtifactStore
    store = ArtifactStore(tmp_path)     # results here, the smoke models and SAEs from the shared store
    models = [pipeline.get_model(smoke_preset, smoke_store, which=w, progress=False) for w in "AB"]
    saes = [get_sae(smoke_preset, which=w, store=smoke_store, progress=False) for w in "AB"]
    data = pipeline.get_tokens(smoke_preset, smoke_store)
    kw = dict(models=models, data=data)
    res = UC.get_comparison(smoke_preset, store, progress=False, saes=saes, **kw)
    tokens, dom, sub, _ = UC.token_rows(smoke_preset, data)
    ref = U.compare_models(*models, *saes, tokens, labels={"subdomain": (sub, data.subdomain_names),
                                                           "domain": (dom, data.domain_names)},
                           min_count=res.params["min_count"], progress=False)
    _assert_same_comparison(res, ref)

    def fail(*a, **k):
        raise AssertionError("recomputed instead of loaded")
    monkeypatch.setattr(U, "compare_models", fail)
    again = UC.get_comparison(smoke_preset, store, progress=False, saes=saes, **kw)
    _assert_same_comparison(again, ref)
    assert len(list((tmp_path / "result").glob("universality-*"))) == 1
    # another SAE B (another folder): another result, computed anew
    monkeypatch.undo()
    other = get_sae(smoke_preset, which="B", store=smoke_store, progress=False)
    other.folder = other.folder.with_name(other.folder.name + "-other")
    UC.get_comparison(smoke_preset, store, progress=False, saes=(saes[0], other), **kw)
    assert len(list((tmp_path / "result").glob("universality-*"))) == 2


def test_get_comparison_bad_input(tmp_path):
    from mono_utils.store.artifacts import ArtifactStore
    with pytest.raises(ValueError, match="pair"):
        UC.get_comparison("smoke", ArtifactStore(tmp_path), progress=False, models=(object(),))
