"""Two controls beside the randomized-transformer SAE: a frozen random decoder, and PCA.

- ``get_frozen_decoder_sae(preset)``: A/1's recipe (``preset.sae_recipe``, A/1's width and setting) on
  model A, its decoder FROZEN at the random unit-norm initialisation (``core.train.TrainSAEConfig``'s
  ``freeze_decoder``: W_dec stays out of the optimizer, the renormalisation and the resampling); the
  encoder and both biases train as usual. Trained on ``seeds.side_tokens(preset)`` activations and
  evaluated as the seed runs are (``seeds.side_preset``), so that it compares with A/1's recipe at
  matched tokens and with the seeds' spread. If such an SAE scores close to a trained one on a measure,
  that measure does not need learned dictionary directions (Korznikov et al. 2026).
- ``get_pca_dictionary(preset)``: the principal directions of model A's MLP activations (all ``d_mlp``
  of them: 512 on default), fitted on ``PCA_FIT_TOKENS`` training activations (the first of the
  seeded activation stream A/1 trains on, BOS positions left out as for the SAEs). A projection on a
  principal direction is signed; as a dictionary each direction gives TWO non-negative units, the
  positive part and the negative part of the projection of the centred activation:
  ``units = [relu(z), relu(-z)]`` with ``z = (x - mean) @ components.T``, so ``2 x d_mlp`` units
  (1,024 on default), unit ``i`` along ``+components[i]`` and unit ``d_mlp + i`` along
  ``-components[i]``. Nothing is lost (z = relu(z) - relu(-z)) and every unit fires on one side only,
  as an SAE feature does; but each unit fires on about half the tokens (it is a dense basis).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..core.activations import ActivationStream
from ..core.sae import SparseAutoencoder
from ..pipeline.models import get_model, get_tokens, model_artifact_config
from ..pipeline.presets import resolve
from ..pipeline.saes import STREAM_KW, get_sae
from ..store.artifacts import save_safetensors_atomic
from .seeds import side_preset, side_tokens

PCA_FILE = "pca.safetensors"
PCA_FIT_TOKENS = 131_072     # activations the PCA is fitted on (at most; a quarter of sae_tokens on smoke)


# ---------------------------------------------------------------- the frozen random decoder
def get_frozen_decoder_sae(preset=None, store=None, which: str = "A", *, seed: int = 0,
                           progress: bool = True) -> SparseAutoencoder:
    """A/1's recipe on model ``which`` with its decoder frozen at its random unit-norm initialisation
    (encoder and biases trained), on ``side_tokens(preset)`` activations (default 500,000; A/1: 4M),
    evaluated on ``side_preset(preset)``'s smaller sample; an artifact of the store.

    Its artifact config is A/1's recipe plus ``train.freeze_decoder: true`` (and the side budget), so it
    has an address of its own (its folder name reads like A/1's: ``saeA-<width>-<recipe>-<preset>-<hash>``)."""
    p, s = resolve(preset, store)
    get_model(p, s, which=which, progress=progress)   # built (if at all) with the preset's own evaluation
    return get_sae(side_preset(p), s, which=which, seed=seed, total_tokens=side_tokens(p), freeze_decoder=True,
                   progress=progress)


def initial_decoder(sae: SparseAutoencoder) -> torch.Tensor:
    """The decoder [d_sae, d_in] that ``sae``'s config initialises (scaled space, unit-norm rows):
    what a frozen decoder must still be."""
    return SparseAutoencoder(type(sae.cfg).from_dict(sae.cfg.to_dict())).W_dec.detach()


def decoder_drift(sae: SparseAutoencoder) -> float:
    """Largest |W_dec - its initialisation| over all entries (scaled space, unit-norm rows): 0 for a
    decoder frozen in memory, ~1e-7 (float rounding) after a save and load, which fold the input scale
    into the stored weights and out again; a trained decoder moves by ~0.1 or more."""
    return float((sae.W_dec.detach().cpu() - initial_decoder(sae)).abs().max())


# ---------------------------------------------------------------- PCA
@dataclass(eq=False)
class PCABasis:
    """Principal directions of MLP activations: ``components`` [n, d] (orthonormal rows, by explained
    variance, largest first), ``mean`` [d], ``explained_variance`` [n] (eigenvalues of the sample
    covariance, descending) and ``n_fit`` activations it was fitted on."""
    components: torch.Tensor
    mean: torch.Tensor
    explained_variance: torch.Tensor
    n_fit: int
    folder: Path | None = None

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        total = float(self.explained_variance.sum())
        return self.explained_variance / total if total > 0 else torch.full_like(self.explained_variance, math.nan)

    @property
    def n_units(self) -> int:
        return 2 * len(self.components)

    @property
    def decoder(self) -> torch.Tensor:
        """[2n, d]: the unit directions, ``+components`` then ``-components``."""
        return torch.cat([self.components, -self.components])

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Signed projections ``(x - mean) @ components.T`` [m, n] of raw activations ``x`` [m, d]."""
        x = torch.as_tensor(x).float()
        if x.ndim != 2 or x.shape[1] != self.components.shape[1]:
            raise ValueError(f"PCA projection needs activations [rows, {self.components.shape[1]}], got "
                             f"{tuple(x.shape)}: pass the MLP activations of the model it was fitted on")
        return (x - self.mean) @ self.components.t()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The 2n non-negative units ``[relu(z), relu(-z)]`` of ``x`` (see the module's docstring)."""
        z = self.project(x)
        return torch.cat([torch.relu(z), torch.relu(-z)], dim=1)

    def reconstruct(self, x: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """``x`` rebuilt from its first ``n`` principal directions (all: exact up to rounding)."""
        c = self.components[:n] if n is not None else self.components
        return self.mean + ((torch.as_tensor(x).float() - self.mean) @ c.t()) @ c

    @classmethod
    def load(cls, folder: str | Path) -> "PCABasis":
        folder = Path(folder)
        path = folder / PCA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} holds no {PCA_FILE}: pass a folder of get_pca_dictionary(preset)")
        t = load_file(str(path))
        return cls(t["components"], t["mean"], t["explained_variance"], int(t["n_fit"]), folder)


def fit_pca(source, n_tokens: int, *, progress: bool = False) -> PCABasis:
    """PCA of the first ``n_tokens`` activations of ``source`` (a ``core.activations`` source: its
    ``batch(step)`` [batch_size, d]): mean and covariance accumulated in float64, then ``eigh``.

    Components come sorted by explained variance (largest first), each signed so that its entry of
    largest magnitude is positive (a deterministic sign)."""
    bs = int(source.batch_size)
    steps = max(1, n_tokens // bs)
    d = int(source.d_in)
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, d, dtype=torch.float64)
    n = 0
    for step in tqdm(range(steps), desc="PCA of MLP activations", disable=not progress):
        x = source.batch(step).double()
        if not torch.isfinite(x).all():
            raise ValueError(f"activation batch {step} holds NaN/Inf: check the model before fitting a PCA")
        s1 += x.sum(0)
        s2 += x.t() @ x
        n += len(x)
    if n < 2:
        raise ValueError(f"a PCA needs at least 2 activations, got {n}: raise n_tokens")
    mean = s1 / n
    cov = (s2 - n * torch.outer(mean, mean)) / (n - 1)
    cov = (cov + cov.t()) / 2
    vals, vecs = torch.linalg.eigh(cov)          # ascending
    order = torch.argsort(vals, descending=True)
    vals, comps = vals[order].clamp_min(0.0), vecs[:, order].t().contiguous()
    big = comps.abs().argmax(dim=1)
    sign = torch.sign(comps[torch.arange(d), big])
    comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
    return PCABasis(comps.float(), mean.float(), vals.float(), n)


def pca_fit_tokens(p) -> int:
    """Activations the PCA is fitted on: ``PCA_FIT_TOKENS`` (131,072: 256 per dimension on default),
    at most a quarter of ``sae_tokens`` (smoke: 49,152), in whole batches of ``sae_batch``."""
    return max(1, min(PCA_FIT_TOKENS, p.sae_tokens // 4) // p.sae_batch) * p.sae_batch


def get_pca_dictionary(preset=None, store=None, *, which: str = "A", seed: int = 0,
                       progress: bool = True) -> PCABasis:
    """The PCA of model ``which``'s MLP activations as a stored artifact (``pca.safetensors``: components,
    mean, explained variance, n_fit), fitted on ``pca_fit_tokens(preset)`` training activations of the
    activation stream at ``seed`` (seed 0: the first activations A/1 trains on)."""
    p, s = resolve(preset, store)
    n_fit = pca_fit_tokens(p)
    config = {"model": model_artifact_config(p, which), "n_fit": n_fit, "batch": p.sae_batch, "seed": seed,
              "stream": dict(STREAM_KW), "units": "positive and negative part of each projection", "version": 1}

    def build(tmp: Path):
        model = get_model(p, s, which=which, progress=progress)
        data = get_tokens(p, s)
        # A/1's stream (same batch, seed 0): the PCA sees the first n_fit activations A/1 trains on
        source = ActivationStream(model, data.train, p.sae_batch, seed=seed, max_tokens=n_fit, **STREAM_KW)
        pca = fit_pca(source, n_fit, progress=progress)
        save_safetensors_atomic({"components": pca.components, "mean": pca.mean,
                                 "explained_variance": pca.explained_variance,
                                 "n_fit": torch.tensor(pca.n_fit)}, tmp / PCA_FILE)
        ratio = pca.explained_variance_ratio
        cum = torch.cumsum(ratio, 0)
        return {"n_fit": pca.n_fit, "d_in": int(pca.components.shape[1]), "n_units": pca.n_units,
                "total_variance": float(pca.explained_variance.sum()),
                "explained_ratio_first": float(ratio[0]),
                "components_for_90pct": int((cum < 0.9).sum()) + 1,
                "components_for_99pct": int((cum < 0.99).sum()) + 1}

    folder = s.get_or_build("pca", f"pca{which}-{p.name}", config, build)
    return PCABasis.load(folder)
