"""The activation stream: deterministic, shuffled across contexts, bounded, cached on disk."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_utils.core.activations import ActivationStream, TensorSource
from mono_utils.core.model import mlp_post

torch.set_num_threads(1)


def _tokens(rows=40, n_ctx=16, seed=0):
    t = np.random.default_rng(seed).integers(1, 64, size=(rows, n_ctx)).astype(np.uint16)
    t[:, 0] = 0  # BOS
    return t


def test_stream_is_deterministic_and_from_the_mlp(tiny_model):
    tok = _tokens()
    a = ActivationStream(tiny_model, tok, 32, seed=3, block_size=128, tokens_per_context=8)
    b = ActivationStream(tiny_model, tok, 32, seed=3, block_size=128, tokens_per_context=8)
    assert a.block_size == 128 and a.rows_per_block == 16
    for step in (0, 3, 5, 9):  # crosses blocks, out of order (a resumed run)
        assert torch.equal(a.batch(step), b.batch(step))
        assert a.batch(step).shape == (32, 64)
    # every activation in block 0 is a real MLP activation of one of its rows (not BOS)
    rows = a._rows_of_block(0)
    acts = mlp_post(tiny_model, torch.from_numpy(tok[rows].astype(np.int64)))[:, 1:].reshape(-1, 64)
    blk = a.block(0)
    dist = torch.cdist(blk, acts, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert dist.max() < 1e-4
    bos = mlp_post(tiny_model, torch.from_numpy(tok[:1].astype(np.int64)))[0, 0]
    assert torch.cdist(blk, bos[None]).min() > 1e-3
    # a different seed gives a different stream
    c = ActivationStream(tiny_model, tok, 32, seed=4, block_size=128, tokens_per_context=8)
    assert not torch.equal(a.batch(0), c.batch(0))


def test_batches_mix_many_contexts(tiny_model):
    tok = _tokens(rows=64)
    s = ActivationStream(tiny_model, tok, 64, seed=0, block_size=512, tokens_per_context=8)
    rows = s._rows_of_block(0)
    acts = mlp_post(tiny_model, torch.from_numpy(tok[rows].astype(np.int64)))[:, 1:]
    owner = torch.cdist(s.batch(0), acts.reshape(-1, 64)).argmin(1) // acts.shape[1]
    assert len(set(owner.tolist())) >= 30  # 64 activations from >= 30 different contexts
    # every pass over the data uses a fresh row order, memory is one block
    assert len(s._rows_of_block(0)) == len(s._rows_of_block(100)) == s.rows_per_block
    assert s.block(0).shape[0] == s.block_size


def test_disk_cache_is_reused(tiny_model, tmp_path):
    tok = _tokens()
    s = ActivationStream(tiny_model, tok, 32, seed=1, block_size=128, cache=tmp_path / "c", max_tokens=256)
    first = [s.batch(i).clone() for i in range(8)]
    assert (tmp_path / "c" / "acts.npy").exists()
    s2 = ActivationStream(tiny_model, tok, 32, seed=1, block_size=128, cache=tmp_path / "c", max_tokens=256)

    def boom(b):
        raise AssertionError("recomputed a cached block")
    s2.compute_block = boom
    for i in range(8):
        assert torch.equal(s2.batch(i), first[i])  # fp16 values, identical in both runs
    assert torch.allclose(first[0], ActivationStream(tiny_model, tok, 32, seed=1, block_size=128).batch(0),
                          rtol=1e-3, atol=1e-3)


def test_bad_stream_inputs(tiny_model):
    with pytest.raises(ValueError, match="rows, n_ctx"):
        ActivationStream(tiny_model, np.zeros(10, dtype=np.uint16), 8)
    with pytest.raises(ValueError, match="batch_size"):
        ActivationStream(tiny_model, _tokens(), 0)
    with pytest.raises(ValueError):
        TensorSource(torch.zeros(4, 3), batch_size=8)


class _RecordingModule(torch.nn.Linear):
    """Records the devices it is moved to instead of moving (no GPU on CI)."""

    def __init__(self):
        super().__init__(2, 2)
        self.moves = []

    def to(self, *args, **kwargs):
        self.moves.append(str(args[0]))
        return self


def test_on_device_moves_the_model_there_and_back_even_on_error():
    from mono_utils.core.device import on_device
    m = _RecordingModule()
    with on_device(m, "cpu") as dev:
        assert dev == torch.device("cpu")
    assert m.moves == []                                   # the CPU: nothing to move
    with on_device(m, "cuda:0") as dev:
        assert dev == torch.device("cuda:0") and m.moves == ["cuda:0"]
    assert m.moves == ["cuda:0", "cpu"]
    m.moves.clear()
    with pytest.raises(RuntimeError, match="boom"):
        with on_device(m, torch.device("cuda")):
            raise RuntimeError("boom")
    assert m.moves == ["cuda", "cpu"]                      # back on the CPU after a failure too
