"""Planted dictionaries for the probing, absorption and panel tests: labels and units whose answers are known.

Token rows with per-token labels (domains code / multilingual / generated / english; subdomains python /
hebrew / arabic / dna / readme) and planted "MLP activations" x [tokens, 16]:

- x[:, 0] > 0 exactly on code tokens, x[:, 1] on Hebrew, x[:, 2] on Arabic;
- x[:, 5] = 1 on DNA tokens, x[:, 6] = 1 on every other DNA token (exactly half of them);
- x[:, 8:] small non-negative noise.

``A/1`` (and its seeds) has unit 0 = x0 (the code label exactly), units 1, 2 = Hebrew, Arabic, and two DNA units
with the same decoder direction e5: unit 3 fires on the DNA tokens with x6 = 1, unit 4 on the others. Unit 3 is
the main DNA unit (precision 1, recall 0.5; ties go to the lower index), silent on half of the DNA tokens where
unit 4, carrying the same direction, fires: absorption 0.5. The controls' units are random projections of the noise dimensions alone: they read nothing of the labels.
"""
from __future__ import annotations

import numpy as np
import torch

from mono_utils.core.model import ModelConfig, build_model
from mono_utils.evaluation.dictionaries import Dictionary
from mono_utils.evaluation.probing_table import TokenSet

D = 16
DOMAINS = ["code", "multilingual", "generated", "english"]
SUBDOMAINS = ["python", "hebrew", "arabic", "dna", "readme"]


class PlantedDictionary(Dictionary):
    """A Dictionary whose MLP activations are the planted x (the transformer is only there for the logit test)."""

    def mlp_acts(self, tokens, batch_rows: int = 64, progress: bool = False) -> np.ndarray:
        if np.asarray(tokens).size != len(self.planted_x):
            raise ValueError("planted x covers the planted token rows only")
        return self.planted_x


def planted_tokens(rows: int = 48, n_ctx: int = 16, seed: int = 0, d_vocab: int = 1024) -> TokenSet:
    g = np.random.default_rng(seed)
    tokens = g.integers(1, d_vocab, size=(rows, n_ctx)).astype(np.int64)
    tokens[:, 0] = 0
    sub = g.integers(0, len(SUBDOMAINS), size=(rows, n_ctx))
    sub[:, 0] = 4                                    # BOS positions (never measured): readme
    dna = np.flatnonzero(sub.reshape(-1) == 3)
    if len(dna) % 2:                                  # an even number of DNA tokens: exactly half absorbed
        sub.reshape(-1)[dna[-1]] = 4
    dom = np.array([0, 1, 1, 2, 3])[sub]            # python->code, hebrew/arabic->multilingual, dna->generated
    return TokenSet(tokens, dom.astype(np.uint8), sub.astype(np.uint8), list(DOMAINS), list(SUBDOMAINS),
                    {"planted": seed})


def planted_x(ts: TokenSet, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(100 + seed)
    sub = ts.subdomain.reshape(-1)
    n = len(sub)
    x = np.zeros((n, D), np.float32)
    x[:, 0] = (sub == 0) * (1 + g.random(n))
    x[:, 1] = (sub == 1) * (1 + g.random(n))
    x[:, 2] = (sub == 2) * (1 + g.random(n))
    dna = np.flatnonzero(sub == 3)
    x[dna, 5] = 1.0
    x[dna[::2], 6] = 1.0                              # exactly every other DNA token
    x[:, 8:] = np.abs(g.normal(0, 0.2, (n, D - 8)))
    return x


def tiny_transformer(d_vocab: int = 1024):
    return build_model(ModelConfig(d_vocab=d_vocab, d_model=16, n_heads=2, d_mlp=D, n_ctx=16, seed=0))


def _trained_encoder(noise: float, seed: int):
    g = torch.Generator().manual_seed(seed)

    def encode(x):
        x = torch.as_tensor(x, dtype=torch.float32)
        out = torch.zeros(len(x), 8)
        out[:, 0], out[:, 1], out[:, 2] = x[:, 0], x[:, 1], x[:, 2]
        out[:, 3] = x[:, 5] * x[:, 6]
        out[:, 4] = x[:, 5] * (1 - x[:, 6])
        out[:, 5:8] = x[:, 8:11] + noise * torch.rand(len(x), 3, generator=g)
        return out
    return encode


def _trained_decoder() -> np.ndarray:
    dec = np.zeros((8, D), np.float32)
    for unit, dim in enumerate([0, 1, 2, 5, 5, 8, 9, 10]):
        dec[unit, dim] = 1.0
    return dec


def _random_encoder(seed: int, units: int = 8):
    """Random units that read only the noise dimensions x[:, 8:]: nothing of the labels."""
    w = torch.randn(D - 8, units, generator=torch.Generator().manual_seed(seed))

    def encode(x):
        return torch.relu(torch.as_tensor(x, dtype=torch.float32)[:, 8:] @ w - 0.1)
    dec = np.zeros((units, D), np.float32)
    dec[:, 8:] = w.T.numpy()
    return encode, dec / np.linalg.norm(dec, axis=1, keepdims=True)


def planted_dictionaries(ts: TokenSet, seeds: int = 3, transformer=None) -> dict:
    """``{name: PlantedDictionary}``: A/1, ``seeds`` seed runs of it (the same units, their noise units
    differing), two random controls and the neurons (x itself)."""
    x = planted_x(ts)
    model = transformer if transformer is not None else tiny_transformer()

    def make(name, kind, n_units, decoder, encoder):
        d = PlantedDictionary(name, kind, "A", n_units, np.asarray(decoder, np.float32), f"planted {name}",
                              encoder=encoder, transformer=model)
        d.planted_x = x
        return d

    out = {"neurons": make("neurons", "basis", D, np.eye(D), lambda v: torch.as_tensor(v).clamp_min(0)),
           "A/1": make("A/1", "trained", 8, _trained_decoder(), _trained_encoder(0.0, 0))}
    for k in range(seeds):
        out[f"A/1 seed {k}"] = make(f"A/1 seed {k}", "trained", 8, _trained_decoder(), _trained_encoder(0.05, k))
    for i, name in enumerate(("randomized", "frozen decoder")):
        enc, dec = _random_encoder(7 + i)
        out[name] = make(name, "control", 8, dec, enc)
    return out
