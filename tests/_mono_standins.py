"""Stand-ins shared by the neurons-vs-features tests: a tiny SAE with the project's interface."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mono_utils.core.model import model_config_of
from mono_utils.core.sae_kernels import sae_grads


class StandInSAE(nn.Module):
    """ReLU SAE with ``encode``/``decode``/``W_dec_raw`` and a ``cfg`` like mono_utils.core.sae's."""

    def __init__(self, d_in: int, d_sae: int, seed: int = 0, bias: float = -0.05):
        super().__init__()
        self.folder = None   # like SparseAutoencoder: not loaded from the store
        g = torch.Generator().manual_seed(seed)
        self.cfg = SimpleNamespace(d_in=d_in, d_sae=d_sae, architecture="relu")
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5)
        self.b_enc = nn.Parameter(torch.full((d_sae,), bias))
        w = torch.randn(d_sae, d_in, generator=g)
        self.W_dec = nn.Parameter(w / w.norm(dim=1, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec

    def forward(self, x):
        return self.decode(self.encode(x))

    @property
    def W_dec_raw(self):
        return self.W_dec

    @torch.no_grad()
    def plant_copy_of_neuron(self, feature: int, neuron: int, scale: float = 1.0):
        """Make ``feature`` fire exactly as ``neuron`` (times ``scale``) with dictionary vector e_neuron."""
        self.b_dec.zero_()
        self.W_enc[:, feature] = 0
        self.W_enc[neuron, feature] = scale
        self.b_enc[feature] = 0
        self.W_dec[feature] = 0
        self.W_dec[feature, neuron] = 1.0

    @torch.no_grad()
    def kill(self, feature: int):
        self.W_enc[:, feature] = 0
        self.b_enc[feature] = -1e6


def random_tokens(rows: int, n_ctx: int, d_vocab: int, seed: int = 0, bos: int = 0):
    rng = np.random.default_rng(seed)
    t = rng.integers(1, d_vocab, size=(rows, n_ctx)).astype(np.uint16)
    t[:, 0] = bos
    dom = (np.arange(rows)[:, None] % 3 + np.zeros((1, n_ctx), int)).astype(np.uint8)
    sub = ((np.arange(rows)[:, None] % 5) + np.zeros((1, n_ctx), int)).astype(np.uint8)
    return t, dom, sub, ["a", "b", "c"], ["s0", "s1", "s2", "s3", "s4"]


class CharTokenizer:
    """A toy tokenizer: id 0 is <|endoftext|>, ids 1.. are single characters of ALPHABET."""
    ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,\n"

    def __init__(self, d_vocab: int = 64):
        self.d_vocab = d_vocab
        self.chars = ["<|endoftext|>"] + list(self.ALPHABET[: d_vocab - 1])

    def __len__(self):
        return self.d_vocab

    def decode(self, ids, **kw):
        return "".join(self.chars[int(i)] for i in ids)

    def convert_tokens_to_ids(self, tok):
        return 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.chars.index(c) for c in text if c in self.chars]}


def planted_index(model, tmp_path, rows=40, seed=2):
    """An index of ``model`` with a stand-in SAE whose feature 5 copies neuron 7 and feature 9 is dead."""
    from mono_utils.core.index import ActivationIndex, build_index
    d_mlp = model_config_of(model).d_mlp
    sae = StandInSAE(d_mlp, 96, seed=1)
    sae.plant_copy_of_neuron(5, 7)
    sae.kill(9)
    toks, dom, sub, dn, sn = random_tokens(rows, model_config_of(model).n_ctx, model_config_of(model).d_vocab, seed=seed)
    build_index(model, sae, toks, dom, sub, dn, sn, tmp_path / "idx", chunk_tokens=100, progress=False)
    return ActivationIndex.load(tmp_path / "idx"), sae


def random_index(n_features=30, n_neurons=16, rows=20, n_ctx=8, seed=0):
    """An in-memory ActivationIndex from random sparse activations (units 0 of each kind are dead)."""
    import torch

    from mono_utils.core.index import ActivationIndex, build_index_arrays
    toks, dom, sub, dn, sn = random_tokens(rows, n_ctx, 64, seed=seed)
    g = np.random.default_rng(seed)
    arrs = {}
    for kind, U in (("feature", n_features), ("neuron", n_neurons)):
        a = np.where(g.random((toks.size, U)) < 0.2, g.random((toks.size, U)), 0).astype(np.float32)
        a[:, 0] = 0
        arrs[kind] = build_index_arrays([(0, torch.from_numpy(a))], U, toks.size, dom, 3, sub, 5)
    idx = ActivationIndex.from_arrays(toks, dom, sub, dn, sn, arrs)
    idx.ultralow_density = 0.0
    return idx


def check_fast_gradients(sae, sparse: bool, dead_mask: bool = False):
    """Assert that the hand-written gradients (``sae_grads``) equal autograd's on ``sae.loss``, for
    64 seeded inputs (every third feature marked dead when ``dead_mask``). Returns
    ``(fast stats, autograd loss dict, autograd gradients)`` for recipe-specific checks."""
    x = torch.randn(64, sae.cfg.d_in, generator=torch.Generator().manual_seed(4))
    dm = None
    if dead_mask:
        dm = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
        dm[::3] = True
    out = sae.loss(x, dead_mask=dm)
    out["loss"].backward()
    ref = {n: q.grad.clone() for n, q in sae.named_parameters()}
    sae.zero_grad()
    st = sae_grads(sae, x * sae.input_scale, dead_mask=dm, sparse=sparse)
    assert float(st["mse"]) == pytest.approx(float(out["mse"]), rel=1e-5)
    for n, q in sae.named_parameters():
        assert torch.allclose(q.grad, ref[n], rtol=1e-4, atol=1e-6 * float(ref[n].abs().max())), n
    return st, out, ref, x, dm
