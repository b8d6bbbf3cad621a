import numpy as np
import pytest
import torch

from mono_utils.core import model as mm


def test_shapes_and_hook_names(tiny_model):
    x = torch.randint(0, 64, (2, 16))
    logits, cache = tiny_model.run_with_cache(x)
    assert logits.shape == (2, 16, 64)
    assert cache[mm.HOOK_MLP_POST].shape == (2, 16, 64)
    assert "blocks.0.hook_resid_pre" in cache
    assert torch.allclose(mm.mlp_post(tiny_model, x), cache[mm.HOOK_MLP_POST])
    assert mm.W_out(tiny_model).shape == (64, 32) and mm.W_U(tiny_model).shape == (32, 64)


def test_papers_shape_default():
    m = mm.build_model(mm.ModelConfig(d_vocab=4096))
    assert mm.W_out(m).shape == (512, 128)
    assert m.cfg.n_heads == 4 and m.cfg.d_head == 32 and m.cfg.n_ctx == 128


def test_seed_determines_weights():
    a = mm.build_model(mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0))
    a2 = mm.build_model(mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0))
    b = mm.build_model(mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=1))
    assert torch.equal(mm.W_out(a), mm.W_out(a2)) and not torch.equal(mm.W_out(a), mm.W_out(b))


def _toy_tokens(rows=64, n_ctx=16):
    rng = np.random.default_rng(0)
    # a learnable pattern: each token is (previous + 1) mod 64
    start = rng.integers(0, 64, size=(rows, 1))
    return ((start + np.arange(n_ctx)) % 64).astype(np.uint16)


def test_training_lowers_loss(tiny_model):
    toks = _toy_tokens()
    before = mm.evaluate(tiny_model, toks)["val_loss"]
    mm.train_model(tiny_model, toks, mm.TrainConfig(tokens=16 * 16 * 60, batch_size=16, lr=1e-2), progress=False)
    after = mm.evaluate(tiny_model, toks)["val_loss"]
    assert after < before - 1.0


def test_resume_equals_uninterrupted(tmp_path):
    cfg = mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0)
    tcfg = mm.TrainConfig(tokens=16 * 16 * 30, batch_size=16, lr=5e-3, checkpoint_every=7)
    toks = _toy_tokens()
    full = mm.build_model(cfg)
    mm.train_model(full, toks, tcfg, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    part = mm.build_model(cfg)
    mm.train_model(part, toks, tcfg, checkpoint=ckpt, progress=False, stop_after=11)   # "killed" at step 11
    resumed = mm.build_model(cfg)                                                       # a fresh process
    hist = mm.train_model(resumed, toks, tcfg, checkpoint=ckpt, progress=False)
    assert len(hist) == 30
    for (n, p), (_, q) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_save_load_and_mismatch(tmp_path, tiny_model):
    path = tmp_path / "m.safetensors"
    mm.save_weights(tiny_model, path)
    other = mm.build_model(mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=5))
    mm.load_weights(other, path)
    assert torch.equal(mm.W_out(other), mm.W_out(tiny_model))
    wrong = mm.build_model(mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=128, n_ctx=16))
    with pytest.raises(ValueError, match="d_mlp"):
        mm.load_weights(wrong, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="damaged"):
        mm.load_weights(other, path)


@pytest.mark.parametrize("field", ["d_mlp", "d_model", "d_vocab"])
def test_non_positive_sizes(field):
    kw = dict(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16)
    kw[field] = 0
    with pytest.raises(ValueError, match=field):
        mm.ModelConfig(**kw)


def test_unreachable_hub(monkeypatch):
    import mono_utils.core.corpus as data
    monkeypatch.setattr(data, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(ConnectionError, match="gelu-1l.*not reachable"):
        mm.load_pretrained("gelu-1l")


def test_smoke_model_artifact(smoke_model, smoke_tokens):
    from mono_utils.pipeline import models as pipeline
    m = pipeline.model_metrics(smoke_model)
    assert m["val_loss"] < 6.0                               # uniform over 1024 tokens is 6.93
    assert set(m["val_loss_by_domain"]) == set(smoke_tokens.domain_names)
    assert mm.sample(smoke_model, smoke_model.tokenizer, "def ", 5, seed=1) == \
        mm.sample(smoke_model, smoke_model.tokenizer, "def ", 5, seed=1)
