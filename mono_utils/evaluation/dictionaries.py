"""Every dictionary of the suite behind one interface: what its units are, and their activations.

A *dictionary* turns a transformer's MLP activations into non-negative units, each with a direction in
MLP-activation space. The measures that ask "do features beat neurons, and do they beat random?" (sparse
probing, absorption, the panel of notebook 03's kind) take them all alike::

    dicts = get_dictionaries(preset)                       # DICTIONARY_NAMES
    acts = dicts["A/1"].unit_acts(tokens)                  # [rows * n_ctx, n_units], float32, >= 0

=================  =========  ==========  ==========================================================
name               kind       model       what it is
=================  =========  ==========  ==========================================================
neurons            basis      A           model A's MLP neurons (identity directions)
A/1                trained    A           the suite's main SAE (``preset.sae_recipe``)
paper2023          trained    A           the paper's recipe at A/1's width and tokens
randomized         control    randomized  A/1's recipe on the transformer with shuffled weights
frozen decoder     control    A           A/1's recipe, decoder frozen at random (encoder trained)
PCA                basis      A           principal directions, each as two units (+ and - part)
A/1 seed k         trained    A           A/1's recipe at seed k on fewer activations (error bars)
=================  =========  ==========  ==========================================================

``unit_acts(tokens)`` runs the dictionary's own transformer on token rows [rows, n_ctx] (every position,
BOS included) and encodes its MLP activations; ``mlp_acts(tokens)`` gives those activations and
``encode(x)`` encodes ones already at hand (several dictionaries of model A can share one forward pass).
``decoder`` [n_units, d_mlp]: each unit's direction, unit norm (an SAE's dictionary vectors; the
identity for neurons; +/- the principal directions for PCA). ``note``: how it was made and on how many
activations, for tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..autointerp.run import get_randomized_sae
from ..core.model import mlp_post
from ..pipeline.models import get_model
from ..pipeline.presets import resolve
from ..pipeline.saes import get_paper_sae, get_sae, sae_metrics
from .controls import PCABasis, get_frozen_decoder_sae, get_pca_dictionary
from .seeds import SEEDS, get_seed_runs

DICTIONARY_NAMES = ("neurons", "A/1", "paper2023", "randomized", "frozen decoder", "PCA")
SEED_NAMES = tuple(f"A/1 seed {k}" for k in SEEDS)
ALL_NAMES = DICTIONARY_NAMES + SEED_NAMES
KINDS = ("trained", "control", "basis")


@dataclass(eq=False)
class Dictionary:
    """One dictionary (see the module's docstring). ``sae`` / ``pca``: the artifact behind it, if any."""
    name: str
    kind: str
    model: str
    n_units: int
    decoder: np.ndarray
    note: str
    encoder: Callable = field(repr=False)
    transformer: object = field(repr=False)
    sae: object = field(default=None, repr=False)
    pca: PCABasis | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Dictionary {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.decoder.shape[0] != self.n_units:
            raise ValueError(f"Dictionary {self.name!r}: decoder has {self.decoder.shape[0]} rows for "
                             f"{self.n_units} units")

    @property
    def d_mlp(self) -> int:
        return int(self.transformer.cfg.d_mlp)

    def _check_tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[0] == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"{self.name}: tokens must be a non-empty integer array [rows, n_ctx], got "
                             f"{tokens.dtype} {tokens.shape}: pass token rows (e.g. get_tokens(preset).val[:64])")
        cfg = self.transformer.cfg
        if tokens.shape[1] > cfg.n_ctx:
            raise ValueError(f"{self.name}: rows of {tokens.shape[1]} tokens exceed the model's context of "
                             f"{cfg.n_ctx}: cut them to {cfg.n_ctx}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= cfg.d_vocab:
            raise ValueError(f"{self.name}: token ids {lo}..{hi} fall outside the vocabulary 0..{cfg.d_vocab - 1}: "
                             f"tokens of another tokenizer or preset?")
        return tokens

    def _batches(self, tokens, batch_rows: int, progress: bool):
        if not isinstance(batch_rows, int) or batch_rows <= 0:
            raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
        tokens = self._check_tokens(tokens)
        starts = range(0, len(tokens), batch_rows)
        for r in tqdm(starts, desc=f"{self.name} units", disable=not progress or len(starts) < 2):
            batch = torch.from_numpy(tokens[r:r + batch_rows].astype(np.int64))
            yield r * tokens.shape[1], mlp_post(self.transformer, batch).reshape(-1, self.d_mlp).float()

    def mlp_acts(self, tokens, batch_rows: int = 64, progress: bool = False) -> np.ndarray:
        """[rows * n_ctx, d_mlp] float32: the MLP activations this dictionary reads, on ``tokens``."""
        tokens = self._check_tokens(tokens)
        out = np.empty((tokens.size, self.d_mlp), dtype=np.float32)
        for start, x in self._batches(tokens, batch_rows, progress):
            out[start:start + len(x)] = x.numpy()
        return out

    @torch.no_grad()
    def encode(self, x) -> np.ndarray:
        """[m, n_units] float32 >= 0: the units of MLP activations ``x`` [m, d_mlp] (of this
        dictionary's transformer: ``model`` says which)."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.d_mlp:
            raise ValueError(f"{self.name}: encode needs MLP activations [rows, {self.d_mlp}], got {tuple(x.shape)}")
        return self.encoder(x).float().clamp_min_(0.0).numpy()

    @torch.no_grad()
    def unit_acts(self, tokens, batch_rows: int = 64, progress: bool = False) -> np.ndarray:
        """[rows * n_ctx, n_units] float32, >= 0, for token rows ``tokens`` [rows, n_ctx], running the
        dictionary's own transformer (``model``). Memory: rows x n_ctx x n_units x 4 bytes (A/1 on
        64 rows of 128: 134 MB)."""
        tokens = self._check_tokens(tokens)
        out = np.empty((tokens.size, self.n_units), dtype=np.float32)
        for start, x in self._batches(tokens, batch_rows, progress):
            out[start:start + len(x)] = self.encoder(x).float().clamp_min_(0.0).numpy()
        return out


def _sae_note(what: str, sae) -> str:
    m = sae_metrics(sae)
    return (f"{what}: {sae.cfg.recipe_name}, {sae.cfg.d_sae:,} features, trained on {int(m['train_tokens']):,} "
            f"activations (evaluated on {int(m.get('eval_tokens', 0)):,} tokens)")


def _from_sae(name: str, kind: str, model_name: str, sae, transformer, what: str) -> Dictionary:
    sae = sae.cpu().eval()
    decoder = sae.W_dec.detach().float()
    decoder = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return Dictionary(name, kind, model_name, int(sae.cfg.d_sae), decoder.numpy(), _sae_note(what, sae),
                      encoder=sae.encode, transformer=transformer, sae=sae)


def get_dictionaries(preset=None, store=None, *, names=None, progress: bool = True) -> dict:
    """``{name: Dictionary}`` for ``names`` (default ``DICTIONARY_NAMES``; ``SEED_NAMES`` too on
    request), in the order asked, each built (or loaded) from the artifact store."""
    p, s = resolve(preset, store)
    names = DICTIONARY_NAMES if names is None else ((names,) if isinstance(names, str) else tuple(names))
    bad = [n for n in names if n not in ALL_NAMES]
    if bad or not names:
        raise ValueError(f"unknown dictionary name(s) {bad or list(names)!r}: choose among "
                         f"{', '.join(repr(n) for n in ALL_NAMES)}")
    model = get_model(p, s, which="A", progress=progress).cpu().eval()
    seeds = {}
    if any(n in SEED_NAMES for n in names):
        wanted = tuple(k for k, n in zip(SEEDS, SEED_NAMES) if n in names)
        seeds = get_seed_runs(p, s, seeds=wanted, progress=progress)
    out = {}
    for name in names:
        if name == "neurons":
            d = int(model.cfg.d_mlp)
            out[name] = Dictionary(name, "basis", "A", d, np.eye(d, dtype=np.float32),
                                   f"neurons: model A's {d} MLP neurons (the positive part of each activation; "
                                   f"with a ReLU MLP, the activation itself)",
                                   encoder=lambda x: x.clamp_min(0.0), transformer=model)
        elif name == "A/1":
            out[name] = _from_sae(name, "trained", "A", get_sae(p, s, which="A", progress=progress), model, "A/1")
        elif name == "paper2023":
            out[name] = _from_sae(name, "trained", "A", get_paper_sae(p, s, which="A", progress=progress), model,
                                  "paper2023 (the paper's recipe at A/1's width)")
        elif name == "randomized":
            rmodel, rsae = get_randomized_sae(p, s, progress=progress, model=model)
            out[name] = _from_sae(name, "control", "randomized", rsae, rmodel.cpu().eval(),
                                  "randomized (A/1's recipe on model A with every weight tensor shuffled)")
        elif name == "frozen decoder":
            out[name] = _from_sae(name, "control", "A", get_frozen_decoder_sae(p, s, progress=progress), model,
                                  "frozen decoder (A/1's recipe, decoder frozen at its random unit-norm init, "
                                  "encoder and biases trained)")
        elif name == "PCA":
            pca = get_pca_dictionary(p, s, progress=progress)
            n = len(pca.components)
            out[name] = Dictionary(name, "basis", "A", pca.n_units, pca.decoder.numpy(),
                                   f"PCA: the {n} principal directions of model A's MLP activations (fitted on "
                                   f"{pca.n_fit:,} training activations), each as two units: the positive part "
                                   f"of the centred projection (unit i) and the negative part (unit {n} + i)",
                                   encoder=pca.encode, transformer=model, pca=pca)
        else:
            k = SEEDS[SEED_NAMES.index(name)]
            out[name] = _from_sae(name, "trained", "A", seeds[k], model,
                                  f"A/1 seed {k} (A/1's recipe at seed {k}, a side run on fewer activations)")
    return out
