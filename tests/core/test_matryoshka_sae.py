"""The nested (Matryoshka) BatchTopK option: its loss by hand, exact fast gradients, config checks and
round trips, prefixes as SAEs of their own, and a planted hierarchy whose coarse direction the first
prefix must recover."""
from __future__ import annotations

import json

import pytest
import torch
from _mono_standins import check_fast_gradients

from mono_utils.core.activations import TensorSource
from mono_utils.core.sae import SAEConfig, SparseAutoencoder
from mono_utils.core.sae_kernels import sae_grads
from mono_utils.core.train import TrainSAEConfig, train_sae

torch.set_num_threads(1)


def _nested(d_in=16, d_sae=48, prefixes=(6, 20, 48), k=4, seed=1):
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="batchtopk", k=k, encoder_init="transpose", seed=seed,
                    matryoshka_prefixes=prefixes)
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(3))
    return sae


def test_prefix_loss_is_the_mean_of_the_prefixes_reconstruction_losses_by_hand():
    sae = _nested(d_in=4, d_sae=6, prefixes=(2, 4, 6), k=2)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = sae.batch_activation(sae.pre_acts(x))        # input scale 1: x is already in the SAE's space
        W, b = sae.W_dec, sae.b_dec
        per_prefix = []
        for m in (2, 4, 6):
            sq = 0.0
            for t in range(5):
                for j in range(4):
                    x_hat = float(b[j]) + sum(float(f[t, i]) * float(W[i, j]) for i in range(m))
                    sq += (x_hat - float(x[t, j])) ** 2
            per_prefix.append(sq / 20)
        expected = sum(per_prefix) / 3
        out = sae.loss(x)
        st = sae_grads(sae, x)
    assert f[:, :2].abs().sum() > 0 and f[:, 2:].abs().sum() > 0   # every group takes part
    assert float(out["recon"]) == pytest.approx(expected, rel=1e-5)
    assert [float(v) for v in out["prefix_mse"]] == pytest.approx(per_prefix, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)     # no dead latents: no AuxK term
    assert float(out["mse"]) == pytest.approx(per_prefix[-1], rel=1e-5)  # the whole dictionary's
    assert float(st["recon"]) == pytest.approx(expected, rel=1e-5)      # the fast step's, the same
    assert float(st["mse"]) == pytest.approx(per_prefix[-1], rel=1e-5)


@pytest.mark.parametrize("dead_mask", [False, True])
def test_fast_gradients_equal_autograd(dead_mask):
    st, out, ref, x, dm = check_fast_gradients(_nested(), sparse=True, dead_mask=dead_mask)
    assert torch.allclose(st["prefix_mse"], out["prefix_mse"].detach(), rtol=1e-5)
    plain = _nested(prefixes=())
    plain.loss(x, dead_mask=dm)["loss"].backward()
    # the nested loss is another function: the first group's decoder rows get other gradients
    assert not torch.allclose(plain.W_dec.grad[:6], ref["W_dec"][:6], rtol=1e-3)


@pytest.mark.parametrize("prefixes, match", [((24, 12, 48), "strictly increasing"), ((12, 24), "ending at d_sae"),
                                             ((0, 48), "strictly increasing"), ((12, 12, 48), "strictly increasing"),
                                             ((12.0, 48), "tuple of integers"), ("12,48", "tuple of integers"),
                                             ((True, 48), "tuple of integers")])
def test_prefixes_must_increase_and_end_at_d_sae(prefixes, match):
    with pytest.raises(ValueError, match=match):
        SAEConfig(d_in=8, d_sae=48, architecture="batchtopk", k=4, matryoshka_prefixes=prefixes)


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_prefixes_need_batchtopk(arch):
    with pytest.raises(ValueError, match="needs architecture 'batchtopk'"):
        SAEConfig(d_in=8, d_sae=48, architecture=arch, k=4, matryoshka_prefixes=(12, 48))


def test_config_round_trips_and_leaves_other_hashes_alone(tmp_path):
    plain = SAEConfig(d_in=8, d_sae=48, architecture="batchtopk", k=4)
    assert "matryoshka_prefixes" not in plain.to_dict()      # unset: the dict (and hash) of before
    cfg = SAEConfig(d_in=8, d_sae=48, architecture="batchtopk", k=4, matryoshka_prefixes=[12, 24, 48])
    assert cfg.matryoshka_prefixes == (12, 24, 48)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["matryoshka_prefixes"] == [12, 24, 48] and SAEConfig.from_dict(d) == cfg
    sae = SparseAutoencoder(cfg)
    sae.save(tmp_path / "s")
    assert SparseAutoencoder.load(tmp_path / "s").cfg.matryoshka_prefixes == (12, 24, 48)


def test_store_address_changes_only_when_set():
    from mono_utils.pipeline.presets import get_preset
    from mono_utils.pipeline.saes import sae_artifact_config
    from mono_utils.store.artifacts import config_hash
    p = get_preset("smoke")
    _, _, config, name = sae_artifact_config(p, which="A", d_sae=512)
    _, _, config0, name0 = sae_artifact_config(p, which="A", d_sae=512, matryoshka_prefixes=())
    _, _, config1, name1 = sae_artifact_config(p, which="A", d_sae=512, matryoshka_prefixes=(128, 256, 512))
    assert config_hash(config) == config_hash(config0) and name == name0 == "saeA-512-batchtopk-smoke"
    assert "matryoshka_prefixes" not in config["sae"]
    assert config_hash(config1) != config_hash(config) and name1 == "saeA-512-batchtopk-matryoshka-smoke"


def test_a_prefix_is_an_sae_of_its_own():
    sae = _nested()
    with torch.no_grad():
        sae.threshold.uniform_(0.0, 0.5, generator=torch.Generator().manual_seed(5))
    sae.set_input_scale(1.7)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(6))
    f = sae.encode(x)
    for m in (6, 20, 48):
        pre = sae.prefix(m)
        assert pre.cfg.d_sae == m and pre.cfg.matryoshka_prefixes == ()
        assert torch.allclose(pre.encode(x), f[:, :m], atol=1e-5)   # one matmul or a slice of a wider one
        assert torch.allclose(pre.decode(f[:, :m]), f[:, :m] @ sae.W_dec_raw[:m] + sae.b_dec_raw, atol=1e-5)
    assert torch.allclose(sae.prefix(2).encode(x), f[:, :2], atol=1e-5)   # narrower than k: k is for training
    with pytest.raises(ValueError, match="integer in 1..48"):
        sae.prefix(49)
    topk = SparseAutoencoder(SAEConfig(d_in=16, d_sae=48, architecture="topk", k=4))
    with pytest.raises(ValueError, match="TopK"):
        topk.prefix(8)


def planted_hierarchy(n=24000, seed=7):
    """A coarse direction P, on for 35% of the tokens (magnitude 1.5-2.5), with four children: on 60% of
    P's tokens one child adds its own direction (magnitude 0.5-1). Three unrelated directions fire on 10%
    of the tokens each. All directions orthonormal. (The data's seed is not the SAE's: torch's normal and
    uniform draws of one seed are related, and P would start anti-parallel to the SAE's feature 0.)"""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    P, children, other = Q[0], Q[1:5], Q[5:8]
    parent = torch.rand(n, generator=g) < 0.35
    child = torch.randint(0, 4, (n,), generator=g)
    with_child = parent & (torch.rand(n, generator=g) < 0.6)
    u = lambda lo, hi: torch.rand(n, generator=g) * (hi - lo) + lo   # noqa: E731
    x = (parent * u(1.5, 2.5))[:, None] * P + (with_child * u(0.5, 1.0))[:, None] * children[child]
    on = torch.rand(n, 3, generator=g) < 0.1
    x += (on * (torch.rand(n, 3, generator=g) * 0.5 + 0.5)) @ other
    return x, P, parent


def _train(prefixes, x):
    cfg = SAEConfig(d_in=16, d_sae=12, architecture="batchtopk", k=2, encoder_init="transpose",
                    matryoshka_prefixes=prefixes)
    sae, _ = train_sae(cfg, TensorSource(x, 256), TrainSAEConfig(total_tokens=256 * 600, batch_size=256, lr=3e-3),
                       progress=False)
    return sae.cpu()


def _unit_rows(sae):
    dec = sae.W_dec_raw.detach()
    return dec / dec.norm(dim=1, keepdim=True)


def test_the_first_prefix_recovers_the_coarse_direction():
    """A one-feature prefix must reconstruct alone: its feature becomes P and fires on P's tokens. A plain
    BatchTopK SAE of the same size and k has no feature that close to P (its nearest mixes P with children).
    Measured on this problem: 8 of 8 runs (2 data seeds x 4 SAE seeds) as here; a one-feature prefix can
    also settle on -P (a feature for P's absence, the decoder bias carrying P), seen from other starts."""
    x, P, parent = planted_hierarchy()
    nested = _train((1, 12), x)
    with torch.no_grad():
        first = nested.encode(x)[:, 0] > 0
    assert float(_unit_rows(nested)[0] @ P) > 0.95      # feature 0, alone in its prefix, is the coarse direction
    assert float(first[parent].float().mean()) > 0.95  # and fires on the coarse direction's tokens
    assert float(first[~parent].float().mean()) < 0.05
    plain = _train((), x)
    assert float((_unit_rows(plain) @ P).max()) < 0.9
