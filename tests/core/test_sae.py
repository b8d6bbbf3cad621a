"""The SAE module: config checks, exact gradients, SAELens save/load, bad inputs."""
from __future__ import annotations

import json

import pytest
import torch
from _mono_standins import check_fast_gradients

from mono_utils.core.sae import SAEConfig, SparseAutoencoder, geometric_median

torch.set_num_threads(1)


def _sae(arch="relu", **kw):
    cfg = SAEConfig(d_in=16, d_sae=48, architecture=arch, k=4, l1_coeff=0.1, seed=1, **kw)
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(3))
    return sae


@pytest.mark.parametrize("bad", [dict(d_in=0), dict(d_sae=-4), dict(l1_coeff=0.0), dict(l1_coeff=-1.0),
                                 dict(architecture="topk", k=0), dict(architecture="topk", k=99),
                                 dict(architecture="gated"), dict(input_scale=float("nan"))])
def test_config_rejects_bad_values(bad):
    kw = dict(d_in=8, d_sae=32)
    kw.update(bad)
    with pytest.raises(ValueError):
        SAEConfig(**kw)


def test_k_larger_than_d_sae_message():
    with pytest.raises(ValueError, match="exceeds d_sae"):
        SAEConfig(d_in=8, d_sae=16, architecture="topk", k=17)


@pytest.mark.parametrize("arch", ["relu", "topk"])
@pytest.mark.parametrize("sparse", [False, True])
def test_fast_gradients_equal_autograd(arch, sparse):
    check_fast_gradients(_sae(arch, input_scale=1.7), sparse, dead_mask=arch == "topk")


def test_topk_keeps_k_and_interface_consistency():
    sae = _sae("topk", input_scale=3.0)
    x = torch.randn(10, 16)
    f = sae.encode(x)
    assert ((f > 0).sum(-1) <= 4).all()
    assert torch.allclose(sae.decode(f), f @ sae.W_dec_raw + sae.b_dec_raw, atol=1e-5)
    assert torch.allclose(sae(x), sae.decode(f))


def test_input_scale_is_internal():
    """Scaling the input scale and the weights consistently leaves raw outputs unchanged."""
    a = _sae()
    b = _sae(input_scale=4.0)
    with torch.no_grad():
        b.W_enc.copy_(a.W_enc / 4.0)
        b.W_dec.copy_(a.W_dec * 4.0)
        b.b_dec.copy_(a.b_dec * 4.0)
    x = torch.randn(5, 16)
    assert torch.allclose(a.encode(x), b.encode(x), atol=1e-5)
    assert torch.allclose(a(x), b(x), atol=1e-5)


def test_geometric_median_beats_mean_with_outliers():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(200, 3, generator=g) * 0.1
    pts[:20] += 100.0  # outliers drag the mean, not the median
    med = geometric_median(pts)
    assert med.norm() < 1.0 < pts.mean(0).norm()
    obj = lambda y: (pts - y).norm(dim=1).sum()  # noqa: E731
    for delta in torch.eye(3) * 1e-2:
        assert obj(med) <= obj(med + delta) + 1e-4 and obj(med) <= obj(med - delta) + 1e-4


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_save_load_roundtrip_saelens_format(tmp_path, arch):
    from safetensors.torch import load_file
    sae = _sae(arch, input_scale=2.5)
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["d_in"] == 16 and cfg["d_sae"] == 48 and cfg["dtype"] == "float32"
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert cfg["architecture"] == ("standard" if arch == "relu" else "topk")
    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert set(w) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    assert w["W_enc"].shape == (16, 48) and w["W_dec"].shape == (48, 16)
    x = torch.randn(20, 16)
    # SAELens's own forward with the saved (folded) raw-space weights reproduces ours
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if arch == "relu":
        f = torch.relu(pre)
    else:
        v, i = pre.topk(4, dim=-1)
        f = torch.zeros_like(pre).scatter_(-1, i, torch.relu(v))
    assert torch.allclose(f @ w["W_dec"] + w["b_dec"], sae(x), atol=1e-4)
    back = SparseAutoencoder.load(tmp_path / "s")
    assert back.cfg == sae.cfg
    assert torch.allclose(back(x), sae(x), atol=1e-5)
    assert torch.allclose(back.encode(x), sae.encode(x), atol=1e-5)


def test_load_foreign_saelens_folder(tmp_path):
    """A folder another tool wrote (no config.json, apply_b_dec_to_input false) opens correctly."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(0)
    W_enc, W_dec = torch.randn(8, 24, generator=g), torch.randn(24, 8, generator=g)
    b_enc, b_dec = torch.randn(24, generator=g), torch.randn(8, generator=g)
    (tmp_path / "f").mkdir()
    save_file({"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}, str(tmp_path / "f" / "sae_weights.safetensors"))
    (tmp_path / "f" / "cfg.json").write_text(json.dumps({"d_in": 8, "d_sae": 24, "dtype": "float32", "apply_b_dec_to_input": False,
                                                        "architecture": "standard", "metadata": {"hook_name": "h"}}))
    sae = SparseAutoencoder.load(tmp_path / "f")
    x = torch.randn(6, 8, generator=g)
    f = torch.relu(x @ W_enc + b_enc)
    assert torch.allclose(sae.encode(x), f, atol=1e-4)
    assert torch.allclose(sae.decode(f), f @ W_dec + b_dec, atol=1e-4)


def test_bad_inputs_have_clear_errors():
    sae = _sae()
    with pytest.raises(ValueError, match="d_in = 16"):
        sae.encode(torch.randn(3, 15))
    x = torch.randn(3, 16)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        sae.encode(x)
    x[1, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN/Inf"):
        sae(x)


def test_truncated_tampered_and_non_sae_folders(tmp_path):
    sae = _sae()
    folder = sae.save(tmp_path / "s")
    wpath = folder / "sae_weights.safetensors"
    data = wpath.read_bytes()
    wpath.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checksum|truncated|corrupted"):
        SparseAutoencoder.load(folder)
    # tampered: same size, one value changed -> checksum mismatch
    tampered = bytearray(data)
    tampered[-3] ^= 0xFF
    wpath.write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match="checksum"):
        SparseAutoencoder.load(folder)
    # without our checksum a truncated file still fails cleanly
    (folder / "config.json").unlink()
    wpath.write_bytes(data[:100])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        SparseAutoencoder.load(folder)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not an SAE folder"):
        SparseAutoencoder.load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        SparseAutoencoder.load(tmp_path / "missing")


def test_nan_weights_and_shape_mismatch_rejected(tmp_path):
    from safetensors.torch import load_file, save_file
    folder = _sae().save(tmp_path / "s")
    (folder / "config.json").unlink()
    w = load_file(str(folder / "sae_weights.safetensors"))
    w["b_enc"][0] = float("nan")
    save_file(w, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        SparseAutoencoder.load(folder)
    w["b_enc"][0] = 0.0
    w["W_dec"] = w["W_dec"][:40]
    save_file(w, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="shape"):
        SparseAutoencoder.load(folder)


def test_column_sums_in_order_equal_index_add():
    """The GPU's fixed-order bias gradient equals index_add_, empty columns included."""
    from mono_utils.core.sae_kernels import _transpose_pattern, column_sums
    g = torch.Generator().manual_seed(0)
    B, m, k = 64, 300, 4   # 256 entries over 300 columns: many columns are empty
    col = torch.stack([torch.randperm(m, generator=g)[:k].sort().values for _ in range(B)]).reshape(-1)
    crow = torch.arange(0, B * k + 1, k)
    vals = torch.randn(B * k, generator=g)
    crow_t, _, order = _transpose_pattern(crow, col, B, m)
    a = column_sums(vals, col, crow_t, order, m, in_order=True)
    b = column_sums(vals, col, crow_t, order, m, in_order=False)
    assert (torch.bincount(col, minlength=m) == 0).any()
    assert torch.equal(a, b)
