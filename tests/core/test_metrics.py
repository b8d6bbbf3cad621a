"""Metric functions against hand-computed values, and the full evaluation on a tiny model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mono_utils.core.metrics import density_histogram, evaluate_sae, fvu, kl_divergence, loss_recovered
from mono_utils.core.model import set_model_folder
from mono_utils.core.sae import SAEConfig, SparseAutoencoder

torch.set_num_threads(1)


def test_fvu_is_about_the_mean_not_zero():
    x = torch.tensor([[10.0, 1.0], [12.0, 3.0], [14.0, 5.0]])
    x_hat = torch.tensor([[11.0, 1.0], [12.0, 3.0], [13.0, 5.0]])
    # hand: squared error 1 + 0 + 1 = 2; about the mean (12, 3): 4+0+4 + 4+0+4 = 16
    assert fvu(x, x_hat) == pytest.approx(2 / 16)
    # about zero would be 2 / (100+1+144+9+196+25) = 2/475: much smaller (the flattering bug)
    assert fvu(x, x_hat) > 2 / 475 * 10


def test_loss_recovered_and_kl():
    assert loss_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)
    assert loss_recovered(2.0, 2.0, 4.0) == 1.0
    assert math.isnan(loss_recovered(2.0, 2.0, 2.0))
    p = torch.tensor([[0.0, math.log(3.0)]])  # probs 1/4, 3/4
    q = torch.tensor([[0.0, 0.0]])            # probs 1/2, 1/2
    hand = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(kl_divergence(p, q)[0]) == pytest.approx(hand, rel=1e-5)
    assert float(kl_divergence(p, p)[0]) == pytest.approx(0.0, abs=1e-7)


def test_density_histogram_counts():
    d = np.array([0.0, 0.0, 1e-7, 1e-5, 1e-5, 0.5])
    h = density_histogram(d, lo=-8, hi=0, width=1.0)
    assert h["dead"] == 2 and sum(h["counts"]) == 4
    assert h["counts"][1] == 1 and h["counts"][3] == 2 and h["counts"][7] == 1  # bins [-7,-6), [-5,-4), [-1,0)


def _perfect_sae(d):
    """f = (relu(x), relu(-x)): reconstructs any x exactly."""
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_evaluate_perfect_and_zero_saes(tiny_model):
    from mono_utils.core.model import HOOK_MLP_POST, lm_loss, mlp_post
    tokens = np.random.default_rng(0).integers(0, 64, size=(12, 16)).astype(np.uint16)
    m = evaluate_sae(_perfect_sae(64), tiny_model, tokens, batch_rows=5)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-6) and m["mse"] == pytest.approx(0.0, abs=1e-8)
    assert m["loss_recovered"] == pytest.approx(1.0, abs=1e-4) and m["kl_sae"] == pytest.approx(0.0, abs=1e-5)
    assert m["eval_tokens"] == 12 * 15
    # hand-computed clean and zero-ablated losses
    tok = torch.from_numpy(tokens.astype(np.int64))
    assert m["ce_clean"] == pytest.approx(float(lm_loss(tiny_model(tok), tok)), rel=1e-5)

    def zero(act, hook):
        act = act.clone()
        act[:, 1:] = 0
        return act
    ce_zero = float(lm_loss(tiny_model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_POST, zero)]), tok))
    assert m["ce_zero"] == pytest.approx(ce_zero, rel=1e-5)
    # an SAE whose features never fire: reconstruction = b_dec; dead = all; L0 0
    sae = _perfect_sae(64)
    acts = mlp_post(tiny_model, tok)[:, 1:].reshape(-1, 64)
    with torch.no_grad():
        sae.b_enc.fill_(-1e4)
        sae.b_dec.copy_(acts.mean(0))
    m2 = evaluate_sae(sae, tiny_model, tokens)
    assert m2["dead"] == 128 and m2["dead_frac"] == 1.0 and m2["l0"] == 0.0
    assert m2["fvu"] == pytest.approx(1.0, rel=1e-4)  # predicting the mean explains nothing
    assert m2["ce_sae"] == pytest.approx(m2["ce_mean"], rel=1e-4)
    assert m2["loss_recovered_mean"] == pytest.approx(0.0, abs=1e-3)


def test_evaluate_rejects_wrong_width(tiny_model):
    tokens = np.zeros((2, 16), dtype=np.uint16)
    with pytest.raises(ValueError, match="d_in = 32"):
        evaluate_sae(SparseAutoencoder(SAEConfig(d_in=32, d_sae=64)), tiny_model, tokens)


def test_ablation_baselines_are_cached_per_model_and_tokens(tiny_model):
    """The zero/mean-ablation losses are computed once per (model weights, tokens) and reused."""
    from mono_utils.core import metrics
    tokens = np.random.default_rng(1).integers(0, 64, size=(6, 16)).astype(np.uint16)
    metrics._BASELINES.clear()
    m1 = evaluate_sae(_perfect_sae(64), tiny_model, tokens)
    assert len(metrics._BASELINES) == 1
    m2 = evaluate_sae(_perfect_sae(64), tiny_model, tokens)
    assert len(metrics._BASELINES) == 1 and m2["ce_zero"] == m1["ce_zero"] and m2["ce_mean"] == m1["ce_mean"]
    # other tokens: a new entry
    evaluate_sae(_perfect_sae(64), tiny_model, tokens[:3])
    assert len(metrics._BASELINES) == 2
    # changed weights: never the stale baseline
    params = dict(tiny_model.named_parameters())
    name = next(n for n in params if "head" in n)  # the unembedding
    with torch.no_grad():
        params[name].mul_(2.0)
    try:
        m3 = evaluate_sae(_perfect_sae(64), tiny_model, tokens)
        assert len(metrics._BASELINES) == 3 and m3["ce_zero"] != m1["ce_zero"]
    finally:
        with torch.no_grad():
            params[name].mul_(0.5)


def test_density_counts_more_tokens_than_the_loss_evaluation(tiny_model):
    """density_tokens: dead/density over all requested rows (brute force), losses over the first ones."""
    from mono_utils.core.model import mlp_post
    tokens = np.random.default_rng(2).integers(0, 64, size=(20, 16)).astype(np.uint16)
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96, seed=3))
    with torch.no_grad():
        sae.b_enc.fill_(-0.3)   # many rare features, so that more tokens revive some "dead" ones
    small = evaluate_sae(sae, tiny_model, tokens, max_tokens=4 * 16, batch_rows=3)
    m, density = evaluate_sae(sae, tiny_model, tokens, max_tokens=4 * 16, batch_rows=3,
                              density_tokens=20 * 16, return_density=True)
    assert m["eval_tokens"] == 4 * 15 and m["density_tokens"] == 20 * 15
    for k in ("mse", "l0", "ce_sae", "loss_recovered", "kl_sae"):   # the loss side is unchanged
        assert m[k] == pytest.approx(small[k], rel=1e-6, abs=1e-9)
    acts = mlp_post(tiny_model, torch.from_numpy(tokens.astype(np.int64)))[:, 1:].reshape(-1, 64)
    brute = (sae.encode(acts) > 0).float().mean(0)
    torch.testing.assert_close(density, brute)
    assert m["dead"] == int((brute == 0).sum()) and m["dead_on_eval_tokens"] == small["dead"]
    assert m["dead"] <= m["dead_on_eval_tokens"]


def test_sparse_decode_equals_dense():
    from mono_utils.core.metrics import _decode
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, seed=0))
    sae.set_input_scale(2.5)
    f = torch.zeros(10, 64)
    f[torch.arange(10), torch.arange(10) * 3] = torch.rand(10) + 0.1
    torch.testing.assert_close(_decode(sae, f), sae.decode(f), rtol=1e-5, atol=1e-6)


def test_ablation_baselines_persist_on_disk_for_stored_models(tiny_model, tmp_path, monkeypatch):
    """A model from the artifact store: another process (empty memory cache) loads the baselines."""
    from mono_utils.core import metrics
    from mono_utils.store.artifacts import ArtifactStore
    store = ArtifactStore(tmp_path)
    tokens = np.random.default_rng(4).integers(0, 64, size=(6, 16)).astype(np.uint16)
    set_model_folder(tiny_model, tmp_path / "modelA-tiny-abc")
    metrics._BASELINES.clear()
    m1 = evaluate_sae(_perfect_sae(64), tiny_model, tokens, store=store)
    assert list((tmp_path / "result").glob("ablation-baselines-*"))
    metrics._BASELINES.clear()
    monkeypatch.setattr(metrics, "_compute_baselines", lambda *a, **k: pytest.fail("recomputed"))
    m2 = evaluate_sae(_perfect_sae(64), tiny_model, tokens, store=store)
    assert m2["ce_zero"] == m1["ce_zero"] and m2["ce_mean"] == m1["ce_mean"]


def test_ultralow_cutoff_is_located_in_a_bimodal_histogram():
    from mono_utils.core.metrics import ultralow_threshold
    rng = np.random.default_rng(0)
    main = 10 ** rng.normal(-2.5, 0.35, 3000)
    low = 10 ** rng.normal(-5.3, 0.2, 900)
    t = ultralow_threshold(np.concatenate([main, low, np.zeros(40)]))   # dead features are ignored
    assert 10 ** -4.8 < t < 10 ** -3.4
    assert ((low < t).mean() > 0.97) and ((main < t).mean() < 0.01)
    # a low mode holding most features is still the ultralow cluster (short runs leave many there)
    t = ultralow_threshold(np.concatenate([main[:500], 10 ** rng.normal(-5.3, 0.2, 2000)]))
    assert 10 ** -4.8 < t < 10 ** -3.4
    # one mode only, or two modes of ordinary features (the lower one above 1e-3): the fixed fallback
    assert ultralow_threshold(main) == 1e-5
    assert ultralow_threshold(np.concatenate([main, 10 ** rng.normal(-1.0, 0.1, 2000)])) == 1e-5
    assert ultralow_threshold(np.zeros(10)) == 1e-5


def test_ultralow_cluster_needs_parallel_encoders_when_the_encoder_is_given():
    """The paper's second test: the low mode's encoder vectors are nearly parallel."""
    from mono_utils.core.metrics import ultralow_threshold
    rng = np.random.default_rng(1)
    density = np.concatenate([10 ** rng.normal(-2.5, 0.35, 600), 10 ** rng.normal(-5.3, 0.2, 400)])
    low = density < 1e-4
    random_enc = rng.normal(size=(64, 1000))
    assert ultralow_threshold(density) < 1e-3                        # bimodal by density alone
    assert ultralow_threshold(density, encoder=random_enc) == 1e-5   # but ordinary (random) encoders
    parallel = random_enc.copy()
    parallel[:, low] = rng.normal(size=(64, 1)) + 0.3 * rng.normal(size=(64, int(low.sum())))
    t = ultralow_threshold(density, encoder=torch.from_numpy(parallel))
    assert t < 1e-3 and ((density < t) == low).all()


def test_mean_pairwise_cosine_by_hand():
    from mono_utils.core.metrics import mean_pairwise_cosine
    enc = np.array([[1.0, 2.0, 0.0, 5.0], [0.0, 0.0, 3.0, 5.0]])   # [d_in, d_sae]: columns are features
    # features 0, 1, 2: cosines (0,1) = 1, (0,2) = 0, (1,2) = 0 -> mean 1/3; feature 3 left out
    assert mean_pairwise_cosine(enc, np.array([True, True, True, False])) == pytest.approx(1 / 3)
    assert math.isnan(mean_pairwise_cosine(enc, np.array([True, False, False, False])))


def test_wide_saes_are_evaluated_in_row_slices_with_the_same_metrics(tiny_model, monkeypatch):
    """Issue 21: at 131,072 features a batch's dense [rows, d_sae] block is sliced by rows
    (metrics.EVAL_MAX_CELLS); the slices give the metrics and densities of one piece."""
    from mono_utils.core import metrics
    tokens = np.random.default_rng(4).integers(0, 64, size=(12, 16)).astype(np.uint16)
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96, seed=5))
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)
    whole, d_whole = evaluate_sae(sae, tiny_model, tokens, max_tokens=6 * 16, batch_rows=3,
                                  density_tokens=12 * 16, return_density=True)
    seen = []
    real = metrics._sae_rows
    monkeypatch.setattr(metrics, "_sae_rows", lambda d, n: seen.append(real(d, n, max_cells=96 * 7)) or seen[-1])
    sliced, d_sliced = evaluate_sae(sae, tiny_model, tokens, max_tokens=6 * 16, batch_rows=3,
                                    density_tokens=12 * 16, return_density=True)
    assert seen and set(seen) == {7}          # 45 rows a batch, in slices of 7: the slicing ran
    torch.testing.assert_close(d_sliced, d_whole, rtol=0, atol=0)
    for k in ("mse", "fvu", "l0", "ce_sae", "loss_recovered", "kl_sae", "dead", "ultralow"):
        assert sliced[k] == pytest.approx(whole[k], rel=1e-6, abs=1e-9), k


def test_eval_slices_leave_default_widths_whole():
    from mono_utils.core.metrics import _sae_rows
    assert _sae_rows(8192, 32 * 127) == 32 * 127          # default's widest SAE: one piece, as before
    assert _sae_rows(131072, 32 * 127) == 512             # paper's widest: 512 rows (256 MB fp32) at a time
    assert _sae_rows(10**9, 5) == 1


def test_evaluation_on_a_named_device_gives_the_same_metrics(tiny_model):
    """``device=``: the build evaluates where it trained (a GPU at the paper's widths); on the CPU
    the result is the default's, and the model and the SAE come back on the CPU."""
    tokens = np.random.default_rng(6).integers(0, 64, size=(10, 16)).astype(np.uint16)
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96, seed=7))
    a = evaluate_sae(sae, tiny_model, tokens, max_tokens=4 * 16, density_tokens=10 * 16, batch_rows=3)
    b = evaluate_sae(sae, tiny_model, tokens, max_tokens=4 * 16, density_tokens=10 * 16, batch_rows=3,
                     device="cpu")
    assert a == b
    assert sae.W_enc.device.type == "cpu" and next(tiny_model.parameters()).device.type == "cpu"
    if torch.cuda.is_available():   # on a lent GPU machine: the same metrics to float tolerance
        g = evaluate_sae(sae, tiny_model, tokens, max_tokens=4 * 16, density_tokens=10 * 16, batch_rows=3,
                         device="cuda")
        for k in ("mse", "l0", "ce_sae", "loss_recovered", "kl_sae"):
            assert g[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
        assert g["dead"] == a["dead"] and next(tiny_model.parameters()).device.type == "cpu"
