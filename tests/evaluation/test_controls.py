"""The two controls of issue 30: an SAE whose decoder stays at its random init (bit for bit) while its
encoder trains, and PCA as a dictionary (orthonormal directions, variance in order, units that lose
nothing). In memory on planted data, and as artifacts on a tiny smoke preset (smoke's model A)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mono_utils.core.activations import TensorSource
from mono_utils.core.sae import SAEConfig, SparseAutoencoder
from mono_utils.core.train import TrainSAEConfig, resample_dead, train_sae
from mono_utils.evaluation.controls import (
    PCABasis,
    decoder_drift,
    fit_pca,
    get_frozen_decoder_sae,
    get_pca_dictionary,
    initial_decoder,
    pca_fit_tokens,
)
from mono_utils.evaluation.seeds import side_preset, side_tokens
from mono_utils.pipeline.saes import get_sae, sae_metrics

torch.set_num_threads(1)


def planted(n=8192, d=32, n_feat=40, p=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    on = torch.rand(n, n_feat, generator=g) < p
    return (on * (torch.rand(n, n_feat, generator=g) + 0.5)) @ D + 0.3


@pytest.mark.parametrize("arch", ["batchtopk", "relu"])
@pytest.mark.parametrize("freeze", [True, False])
def test_a_frozen_decoder_stays_bitwise_at_its_init_while_the_encoder_trains(arch, freeze):
    x = planted()
    cfg = SAEConfig(d_in=32, d_sae=64, architecture=arch, k=4, l1_coeff=3e-2,
                    encoder_init="transpose" if arch == "batchtopk" else "kaiming")
    tc = TrainSAEConfig(total_tokens=256 * 40, batch_size=256, lr=3e-3, resample_fracs=(0.3, 0.6),
                        dead_window_frac=0.1, freeze_decoder=freeze)
    init = SparseAutoencoder(cfg)
    sae, hist = train_sae(cfg, TensorSource(x, 256), tc, progress=False, device="cpu")
    assert torch.equal(initial_decoder(sae), init.W_dec.detach())
    if freeze:
        assert torch.equal(sae.W_dec.detach(), init.W_dec.detach()), "the frozen decoder moved"
        assert decoder_drift(sae) == 0.0
    else:   # the check can fail: a trained decoder moves
        assert decoder_drift(sae) > 1e-2
    assert (sae.W_enc.detach() - init.W_enc.detach()).abs().max() > 1e-2, "the encoder did not train"
    assert sae.b_enc.detach().abs().max() > 0
    assert hist[-1]["fvu"] < hist[0]["fvu"]


def test_resampling_leaves_a_frozen_decoder_alone():
    """Strong L1: many features die; resampling (at half the run) revives them through the encoder only."""
    x = planted()
    cfg = SAEConfig(d_in=32, d_sae=512, l1_coeff=1.0)
    tc = TrainSAEConfig(total_tokens=256 * 80, batch_size=256, lr=1e-2, log_every=1, resample_fracs=(0.5,),
                        dead_window_frac=0.1, freeze_decoder=True)
    sae, hist = train_sae(cfg, TensorSource(x, 256), tc, progress=False, device="cpu")
    before = [h["dead_frac"] for h in hist if h["step"] == 39][0]
    after = [h["dead_frac"] for h in hist if h["step"] == 40][0]
    assert before > 0.05 and after < before
    assert decoder_drift(sae) == 0.0


def test_resample_dead_with_a_frozen_decoder_restarts_the_encoder_along_each_row():
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=32))
    opt = torch.optim.Adam([sae.W_enc, sae.b_enc, sae.b_dec], lr=1e-3)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:5] = True
    W_dec = sae.W_dec.detach().clone()
    assert resample_dead(sae, opt, dead, torch.randn(256, 16), seed=0, freeze_decoder=True) == 5
    assert torch.equal(sae.W_dec.detach(), W_dec)
    enc = sae.W_enc.detach()[:, dead].t()
    cos = torch.nn.functional.cosine_similarity(enc, W_dec[dead], dim=1)
    assert torch.allclose(cos, torch.ones(5), atol=1e-5)


def test_freeze_decoder_keeps_the_old_configs_hashes():
    assert "freeze_decoder" not in TrainSAEConfig(total_tokens=1024).to_dict()
    assert TrainSAEConfig(total_tokens=1024, freeze_decoder=True).to_dict()["freeze_decoder"] is True


def test_the_frozen_decoder_artifact(tiny, smoke_store, smoke_model):
    sae = get_frozen_decoder_sae(tiny, smoke_store, progress=False)
    a1 = get_sae(tiny, smoke_store, progress=False)
    assert Path(sae.folder) != Path(a1.folder)
    stored = json.loads((Path(sae.folder) / "config.json").read_text())
    assert stored["train"]["freeze_decoder"] is True
    assert "freeze_decoder" not in json.loads((Path(a1.folder) / "config.json").read_text())["train"]
    # A/1's recipe and width; a side run's tokens and evaluation
    assert sae.cfg.recipe_name == a1.cfg.recipe_name == tiny.sae_recipe and sae.cfg.d_sae == tiny.sae_main
    m = sae_metrics(sae)
    assert m["train_tokens"] == side_tokens(tiny) // tiny.sae_batch * tiny.sae_batch < tiny.sae_tokens
    assert stored["eval"] == {"eval_tokens": side_preset(tiny).eval_tokens,
                              "density_tokens": side_preset(tiny).density_tokens}
    # stored: the input scale is folded in and out again, so equal up to float rounding
    assert decoder_drift(sae) < 1e-5
    assert decoder_drift(a1) > 1e-2
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(tiny.sae_main), atol=1e-5)
    # the same config is the same artifact
    assert Path(get_frozen_decoder_sae(tiny, smoke_store, progress=False).folder) == Path(sae.folder)


def test_pca_recovers_planted_variances():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    sd = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    x = (torch.randn(20_000, 8, generator=g, dtype=torch.float64) * sd) @ Q.t() + 2.0
    pca = fit_pca(TensorSource(x.float(), 1000), 20_000)
    assert pca.n_fit == 20_000
    assert torch.allclose(pca.explained_variance.double(), sd ** 2, rtol=0.05)
    assert torch.allclose(pca.mean.double(), x.mean(0), atol=1e-4)
    # the leading directions are the planted ones (up to sign)
    cos = (pca.components.double() @ Q).abs().diagonal()
    assert (cos[:4] > 0.99).all(), cos
    # the same as numpy's covariance
    ev = np.sort(np.linalg.eigvalsh(np.cov(x.float().double().numpy().T)))[::-1]
    assert np.allclose(pca.explained_variance.numpy(), ev, rtol=1e-4, atol=1e-6)


def test_the_pca_dictionary(tiny, smoke_store, smoke_model):
    pca = get_pca_dictionary(tiny, smoke_store, progress=False)
    d = tiny.d_mlp
    C = pca.components.double()
    assert C.shape == (d, d) and pca.n_fit == pca_fit_tokens(tiny)
    assert torch.allclose(C @ C.t(), torch.eye(d, dtype=torch.float64), atol=1e-4), "components not orthonormal"
    ev = pca.explained_variance
    assert (ev >= 0).all() and (ev[:-1] >= ev[1:]).all(), "explained variance not in decreasing order"
    assert float(pca.explained_variance_ratio.sum()) == pytest.approx(1.0, abs=1e-4)
    assert ev[0] > 0
    # sign convention: each component's largest entry is positive
    assert (pca.components[torch.arange(d), pca.components.abs().argmax(1)] > 0).all()
    # units: positive and negative part, nothing lost
    x = torch.randn(100, d).abs()
    u = pca.encode(x)
    assert u.shape == (100, 2 * d) and (u >= 0).all()
    assert pca.decoder.shape == (2 * d, d) and torch.equal(pca.decoder[d:], -pca.components)
    assert torch.allclose(u[:, :d] - u[:, d:], pca.project(x), atol=1e-5)
    assert ((u[:, :d] > 0) & (u[:, d:] > 0)).sum() == 0   # one side at a time
    assert torch.allclose(pca.reconstruct(x), x, atol=1e-3)
    # loaded again from its folder: the same tensors
    again = PCABasis.load(pca.folder)
    assert torch.equal(again.components, pca.components) and torch.equal(again.mean, pca.mean)
    assert Path(get_pca_dictionary(tiny, smoke_store, progress=False).folder) == Path(pca.folder)
    m = json.loads((Path(pca.folder) / "metrics.json").read_text())
    assert m["n_units"] == 2 * d and 1 <= m["components_for_90pct"] <= m["components_for_99pct"] <= d
    with pytest.raises(ValueError, match=f"\\[rows, {d}\\]"):
        pca.encode(torch.zeros(3, d + 1))
