"""SAE training: planted-feature recovery, unit decoder norms, resampling, resume, bad data."""
from __future__ import annotations

import pytest
import torch

from mono_utils.core.activations import TensorSource
from mono_utils.core.sae import SAEConfig
from mono_utils.core.train import TrainSAEConfig, resample_dead, train_sae

torch.set_num_threads(1)


def planted(n=20000, d=32, n_feat=40, p=0.08, seed=0):
    """Sparse non-negative combinations of ``n_feat`` known unit directions."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    on = torch.rand(n, n_feat, generator=g) < p
    mag = torch.rand(n, n_feat, generator=g) * 1.5 + 0.5
    return (on * mag) @ D + 0.3, D  # + an offset for the pre-encoder bias to find


def max_cos(D, sae):
    W = sae.W_dec_raw.detach()
    W = W / W.norm(dim=1, keepdim=True)
    return (D @ W.T).max(1).values


@pytest.mark.parametrize("arch,kw", [("relu", dict(l1_coeff=6e-2)), ("topk", dict(k=4))])
def test_recovers_planted_features(arch, kw):
    x, D = planted()
    cfg = SAEConfig(d_in=32, d_sae=80, architecture=arch, **kw)
    sae, hist = train_sae(cfg, TensorSource(x, 256), TrainSAEConfig(total_tokens=256 * 700, batch_size=256, lr=3e-3),
                          progress=False)
    sae = sae.cpu()   # trained on a GPU where there is one
    cos = max_cos(D, sae)
    assert cos.mean() >= 0.95, f"mean max cosine {cos.mean():.3f}"
    # the paper's constraint: dictionary vectors stay unit norm (in the SAE's scaled space)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(80), atol=1e-5)
    assert hist[-1]["fvu"] < 0.3
    assert cfg.input_scale == 1.0  # the caller's config is not mutated


def test_resampling_revives_dead_features():
    x, _ = planted(n=8192)
    cfg = SAEConfig(d_in=32, d_sae=64, l1_coeff=1e-2)
    tc = TrainSAEConfig(total_tokens=256 * 10, batch_size=256, lr=1e-3)
    sae, _ = train_sae(cfg, TensorSource(x, 256), tc, progress=False)
    sae = sae.cpu()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    xs = x[:4096] * sae.input_scale
    # kill 16 features: large negative bias, never fire
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:16] = True
    with torch.no_grad():
        sae.b_enc[dead] = -1e3
    sae.zero_grad()
    sae.loss(x[:256]).get("loss").backward()
    opt.step()
    assert (sae.encode(x[:4096])[:, dead] == 0).all()
    n = resample_dead(sae, opt, dead, xs, seed=0)
    assert n == 16
    f = sae.encode(x[:4096])
    assert ((f[:, dead] > 0).sum(0) > 0).all(), "every resampled feature fires again"
    assert torch.allclose(sae.W_dec[dead].norm(dim=1), torch.ones(16), atol=1e-5)
    assert (sae.b_enc[dead] == 0).all()
    live_norm = sae.W_enc[:, ~dead].norm(dim=0).mean()
    assert torch.allclose(sae.W_enc[:, dead].norm(dim=0), 0.2 * live_norm.expand(16), rtol=1e-4)
    for p in (sae.W_dec, sae.b_enc):
        assert (opt.state[p]["exp_avg"][dead] == 0).all() and (opt.state[p]["exp_avg_sq"][dead] == 0).all()
    assert (opt.state[sae.W_enc]["exp_avg"][:, dead] == 0).all()


def test_resampling_happens_during_training():
    x, _ = planted(n=8192)
    tc = TrainSAEConfig(total_tokens=256 * 80, batch_size=256, lr=1e-2, log_every=1,
                        resample_fracs=(0.5,), dead_window_frac=0.1)
    cfg = SAEConfig(d_in=32, d_sae=512, l1_coeff=1.0)  # strong L1: many features die early
    sae, hist = train_sae(cfg, TensorSource(x, 256), tc, progress=False)
    before = [h["dead_frac"] for h in hist if h["step"] == 39][0]
    after = [h["dead_frac"] for h in hist if h["step"] == 40][0]
    assert before > 0.05 and after < 0.5 * before


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_resume_equals_uninterrupted(tmp_path, arch):
    x, _ = planted(n=4096)
    cfg = SAEConfig(d_in=32, d_sae=64, architecture=arch, k=4, l1_coeff=3e-2)
    tc = TrainSAEConfig(total_tokens=128 * 40, batch_size=128, lr=2e-3, checkpoint_every=7,
                        resample_fracs=(0.3, 0.6), dead_window_frac=0.1)
    full, hist_full = train_sae(cfg, TensorSource(x, 128), tc, progress=False)
    ck = tmp_path / "ck.pt"
    train_sae(cfg, TensorSource(x, 128), tc, progress=False, checkpoint=ck, stop_after=17)  # "killed" at 17
    assert ck.exists()
    resumed, hist_res = train_sae(cfg, TensorSource(x, 128), tc, progress=False, checkpoint=ck)
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n
    assert [h["loss"] for h in hist_full] == [h["loss"] for h in hist_res]


def test_bad_training_data():
    x, _ = planted(n=2048)
    with pytest.raises(ValueError, match="d_in"):
        train_sae(SAEConfig(d_in=16, d_sae=32), TensorSource(x, 128), TrainSAEConfig(total_tokens=1280, batch_size=128),
                  progress=False)
    bad = x.clone()
    bad[5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        train_sae(SAEConfig(d_in=32, d_sae=32), TensorSource(bad, 128),
                  TrainSAEConfig(total_tokens=128 * 20, batch_size=128), progress=False)
    with pytest.raises(ValueError):
        TrainSAEConfig(total_tokens=0)
    with pytest.raises(ValueError):
        TrainSAEConfig(total_tokens=100, lr=-1.0)


def test_get_sae_builds_an_artifact_on_smoke(smoke_preset, smoke_store):
    from mono_utils.pipeline.saes import feature_density, get_sae, sae_history, sae_metrics
    from mono_utils.core.sae import SparseAutoencoder
    kw = dict(d_sae=256, total_tokens=40_960, store=smoke_store, progress=False)
    sae = get_sae(smoke_preset, which="A", **kw)
    folder = sae.folder
    for name in ("cfg.json", "sae_weights.safetensors", "config.json", "metrics.json", "history.json",
                 "feature_density.safetensors", "MANIFEST.json"):
        assert (folder / name).exists(), name
    m = sae_metrics(sae)
    assert sae.cfg.d_in == smoke_preset.d_mlp and sae.cfg.d_sae == 256
    assert 0 < m["l0"] < 256 and 0 <= m["fvu"] < 1 and m["ce_clean"] <= m["ce_sae"] <= m["ce_zero"] + 0.5
    assert m["loss_recovered"] > 0.3 and m["dead"] + m["ultralow"] <= 256
    assert len(feature_density(sae)) == 256 and sae_history(sae)[-1]["step"] == 40
    again = get_sae(smoke_preset, which="A", **kw)  # cached: loads, same weights
    assert again.folder == folder and torch.equal(again.W_dec, sae.W_dec)
    assert torch.equal(SparseAutoencoder.load(folder).W_enc, sae.W_enc)


def test_pick_device_reads_mono_device(monkeypatch):
    """$MONO_DEVICE wins over the automatic choice; an explicit device wins over both."""
    from mono_utils.core.device import deterministic, device_name, pick_device
    monkeypatch.setenv("MONO_DEVICE", "cpu")
    with monkeypatch.context() as m:     # a GPU present: $MONO_DEVICE=cpu still wins
        m.setattr(torch.cuda, "is_available", lambda: True)
        assert pick_device().type == "cpu"
    monkeypatch.setenv("MONO_DEVICE", "cuda")
    assert pick_device("cpu").type == "cpu"
    monkeypatch.delenv("MONO_DEVICE")
    assert pick_device().type in ("cpu", "cuda")
    assert device_name("cpu") == "cpu"
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic("cpu"):   # nothing to do on a CPU
        assert torch.are_deterministic_algorithms_enabled() == before
