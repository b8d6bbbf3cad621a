"""Toy models of superposition (Elhage et al. 2022) and an SAE that recovers their features.

The toy model squeezes ``n`` sparse features through ``m < n`` hidden dimensions and back::

    h  = W x                  W: [m, n], x in [0, 1]^n, each x_i nonzero with probability 1 - S
    x' = ReLU(W^T h + b)      loss = sum_i I_i (x_i - x'_i)^2,  importance I_i = decay ** i

Column ``W[:, i]`` is feature i's direction in the hidden space. With dense features (S = 0) the
model keeps the ``m`` most important ones, orthogonal, and drops the rest; as features grow
sparse it packs more than ``m`` of them into the ``m`` dimensions (superposition), because two
features that are rarely active together rarely interfere. Everything here trains many
independent *instances* at once (``W: [instances, m, n]``), one per sparsity (or importance),
in seconds on a CPU; every random step takes the config's seed.

Measures (all on ``W`` of shape ``[..., m, n]``, per feature):

- ``feature_norms``: ||W_i||; a feature is *represented* when it is above 0.5 (the paper's cut).
- ``superposition``: sum_{j != i} (W_i/||W_i|| . W_j)^2, how much the other features project onto
  feature i's direction (0: it has a dimension of its own).
- ``feature_dimensionality``: D_i = ||W_i||^2 / sum_j (W_i/||W_i|| . W_j)^2, the share of a
  dimension feature i gets: 1 alone, 1/2 in an antipodal pair (digon), 2/3 in a triangle,
  2/5 in a pentagon (in m = 2).

An SAE (:mod:`mono_utils.core.sae`, trained by :func:`mono_utils.core.train.train_sae`) on the
toy model's hidden activations ``h`` is scored against the ground truth, the columns of ``W``:
:func:`recovery_scores`.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn as nn
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from .sae import SAEConfig
from .train import TrainSAEConfig, train_sae

REPRESENTED = 0.5        # the paper's cut: a feature with ||W_i|| above it is represented
IN_SUPERPOSITION = 0.1   # ... and shares its direction when other features project above this
RECOVERED = 0.9          # an SAE latent recovers a feature when their directions' cosine exceeds this
STICKY = {"dedicated": 1.0, "triangle": 2 / 3, "digon": 1 / 2, "pentagon": 2 / 5}   # D_i of the m = 2 shapes
_EPS = 1e-8


@dataclass(frozen=True)
class ToyConfig:
    """One batch of toy models: an instance per entry of ``sparsity`` (and of ``importance`` rows)."""
    n_features: int = 20
    n_hidden: int = 5
    sparsity: tuple = (0.0,)       # S per instance: each feature is zero with probability S
    importance: float | tuple = 1.0   # a decay d (I_i = d ** i), or rows of I_i, one per instance
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-2               # Adam, decayed to lr / 20 along a cosine: small runs, settled weights
    seed: int = 0
    restarts: int = 1              # train each instance from this many starts, keep the lowest loss (the paper's
                                   # remedy for the local minima of tiny models)

    def __post_init__(self):
        for name in ("n_features", "n_hidden", "steps", "batch_size", "restarts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"ToyConfig.{name} must be a positive integer, got {v!r}")
        if not self.sparsity or any(not (0 <= s < 1) for s in self.sparsity):
            raise ValueError(f"ToyConfig.sparsity must be a non-empty sequence of values in [0, 1) (1 would "
                             f"mean a feature is never active), got {self.sparsity!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"ToyConfig.lr must be a finite number > 0, got {self.lr!r}")
        rows = self.importance_rows()
        if not torch.isfinite(rows).all() or (rows < 0).any():
            raise ValueError("ToyConfig.importance must hold finite values >= 0")

    @property
    def n_instances(self) -> int:
        return len(self.sparsity)

    def importance_rows(self) -> torch.Tensor:
        """I as [instances, n_features]."""
        n, k = self.n_features, self.n_instances
        if isinstance(self.importance, (int, float)) and not isinstance(self.importance, bool):
            return (float(self.importance) ** torch.arange(n, dtype=torch.float32)).expand(k, n).clone()
        rows = torch.as_tensor(self.importance, dtype=torch.float32)
        if rows.shape == (n,):
            return rows.expand(k, n).clone()
        if rows.shape != (k, n):
            raise ValueError(f"ToyConfig.importance must be a decay (a number), {n} values or one row of {n} per "
                             f"instance ({k} x {n}); got shape {tuple(rows.shape)}")
        return rows

    def feature_probability(self) -> torch.Tensor:
        """1 - S per instance, [instances]."""
        return 1 - torch.tensor(self.sparsity, dtype=torch.float32)


class ToyModel(nn.Module):
    """``x' = ReLU(W^T W x + b)`` for every instance at once; ``x`` is ``[instances, batch, n]``."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        # Xavier-normal per instance (std sqrt(2 / (m + n))): an instance's start does not depend on how many
        # instances train beside it, only on the seed and its position
        # (drawn one instance at a time: torch draws a large tensor's normals in another order than a small one's)
        std = math.sqrt(2 / (cfg.n_hidden + cfg.n_features))
        self.W = nn.Parameter(torch.stack([torch.randn(cfg.n_hidden, cfg.n_features, generator=g)
                                           for _ in range(cfg.n_instances)]) * std)
        self.b = nn.Parameter(torch.zeros(cfg.n_instances, cfg.n_features))
        self.losses: list[float] = []          # the training loss every 50 steps (summed over instances)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """h = W x: [instances, batch, m]."""
        return torch.bmm(x, self.W.transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.bmm(self.hidden(x), self.W) + self.b[:, None, :])


def feature_batch(probability: torch.Tensor, n_features: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """[instances, batch, n] features, each uniform on [0, 1] with probability ``probability[i]``, else 0.

    One uniform draw u per entry: u < p happens with probability p, and then u / p is uniform on [0, 1].
    """
    p = probability[:, None, None]
    u = torch.rand(len(probability), batch, n_features, generator=generator)
    return torch.where(u < p, u / p, torch.zeros(()))


def toy_loss(model: ToyModel, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """sum over instances of the mean over the batch of sum_i I_i (x_i - x'_i)^2."""
    return ((x - model(x)).pow(2) * importance[:, None, :]).sum(-1).mean(1).sum()


def train_toy(cfg: ToyConfig, progress: bool = True) -> ToyModel:
    """Train every instance of ``cfg`` (seeded: the same config gives the same weights).

    With ``cfg.restarts = r`` every instance trains from r starts side by side and the one with the
    lowest loss on a held-out batch (seeded) is kept.
    """
    if cfg.restarts > 1:
        return _best_of_restarts(cfg, progress)
    with one_thread():
        return _train(cfg, progress)


@contextmanager
def one_thread():
    """Torch on one thread for the block: the toy's matrices are tiny, and on a busy 2-core machine a
    second thread only adds waiting (measured on the project's machine under load: about 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(cfg: ToyConfig, progress: bool) -> ToyModel:
    model = ToyModel(cfg)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    prob, imp = cfg.feature_probability(), cfg.importance_rows()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    bar = tqdm(range(cfg.steps), desc=f"toy models {cfg.n_features} -> {cfg.n_hidden} x {cfg.n_instances}",
               disable=not progress, mininterval=1.0)
    for step in bar:
        # cosine decay to lr / 20: the last steps settle the geometry instead of jittering it
        for grp in opt.param_groups:
            grp["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        loss = toy_loss(model, feature_batch(prob, cfg.n_features, cfg.batch_size, g), imp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            model.losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{model.losses[-1]:.4f}")
    model.eval()
    return model


@torch.no_grad()
def instance_losses(model: ToyModel, rows: int = 8192, seed: int = 12_345) -> torch.Tensor:
    """Each instance's loss on one held-out batch (the same batch for every call with this seed): [instances]."""
    cfg = model.cfg
    # one uniform draw shared by every instance (each thresholds it at its own density): an instance's
    # score does not depend on the instances beside it, and instances of one sparsity see the same data
    u = torch.rand(rows, cfg.n_features, generator=torch.Generator().manual_seed(seed))
    p = cfg.feature_probability()[:, None, None]
    x = torch.where(u < p, u / p, torch.zeros(()))
    return ((x - model(x)).pow(2) * cfg.importance_rows()[:, None, :]).sum(-1).mean(1)


def _best_of_restarts(cfg: ToyConfig, progress: bool) -> ToyModel:
    r, k = cfg.restarts, cfg.n_instances
    wide = replace(cfg, sparsity=tuple(s for s in cfg.sparsity for _ in range(r)),
                   importance=tuple(tuple(row) for row in cfg.importance_rows().repeat_interleave(r, 0).tolist()),
                   restarts=1)
    trained = train_toy(wide, progress)
    best = instance_losses(trained).view(k, r).argmin(1) + torch.arange(k) * r
    model = ToyModel(cfg)
    with torch.no_grad():
        model.W.copy_(trained.W[best])
        model.b.copy_(trained.b[best])
    model.losses = trained.losses
    model.eval()
    return model


# ---------------------------------------------------------------- measures
def _weights(W) -> torch.Tensor:
    if isinstance(W, ToyModel):
        W = W.W
    W = torch.as_tensor(W).detach().float()
    if W.ndim < 2:
        raise ValueError(f"W must be [m, n] or [instances, m, n] (features are columns), got shape {tuple(W.shape)}")
    return W


def feature_norms(W) -> torch.Tensor:
    """||W_i|| per feature: [..., n]."""
    return _weights(W).norm(dim=-2)


def _projections(W: torch.Tensor) -> torch.Tensor:
    """P[..., i, j] = (W_i / ||W_i||) . W_j."""
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(_EPS)
    return unit.transpose(-1, -2) @ W


def superposition(W) -> torch.Tensor:
    """sum_{j != i} (W_i / ||W_i|| . W_j)^2 per feature: [..., n] (0 for a feature of norm ~0)."""
    P = _projections(_weights(W)).pow(2)
    return P.sum(-1) - P.diagonal(dim1=-2, dim2=-1)


def feature_dimensionality(W) -> torch.Tensor:
    """D_i = ||W_i||^2 / sum_j (W_i / ||W_i|| . W_j)^2 per feature: [..., n] (0 for a feature of norm ~0)."""
    W = _weights(W)
    denom = _projections(W).pow(2).sum(-1)
    return W.norm(dim=-2).pow(2) / denom.clamp_min(_EPS)


def dimensions_per_feature(W) -> torch.Tensor:
    """m / ||W||_F^2 per instance: the paper's average share of a dimension per (represented) feature."""
    W = _weights(W)
    return W.shape[-2] / W.pow(2).sum((-1, -2)).clamp_min(_EPS)


def feature_status(W) -> np.ndarray:
    """Per feature: 'not represented', 'dedicated' (a dimension of its own) or 'superposition'."""
    norms, sup = feature_norms(W).numpy(), superposition(W).numpy()
    out = np.full(norms.shape, "not represented", dtype=object)
    out[norms > REPRESENTED] = "dedicated"
    out[(norms > REPRESENTED) & (sup > IN_SUPERPOSITION)] = "superposition"
    return out


def sweep_table(model: ToyModel) -> list[dict]:
    """One row per instance: its sparsity, features represented, of them in superposition, m / ||W||_F^2."""
    status = feature_status(model)
    dpf = dimensions_per_feature(model)
    return [{"sparsity": s, "1/(1-S)": 1 / (1 - s), "represented": int((st != "not represented").sum()),
             "in superposition": int((st == "superposition").sum()), "dimensions per feature": float(dpf[i])}
            for i, (s, st) in enumerate(zip(model.cfg.sparsity, status))]


# ---------------------------------------------------------------- an SAE on the hidden activations
class ToyActivations:
    """The hidden activations ``h = W x`` of one trained instance, as an activation source for
    :func:`mono_utils.core.train.train_sae`: ``batch(step)`` is a pure function of the step (and the seed).

    ``features()`` gives the ground truth: the columns of ``W``, as rows ``[n, m]``. With ``skip_empty``
    the rows where no feature is active are left out: at high sparsity they are most rows (0.99^20 = 82%
    at S = 0.99, n = 20), all the zero vector, and teach an SAE nothing.
    """

    def __init__(self, model: ToyModel, instance: int, batch_size: int = 1024, seed: int = 0,
                 skip_empty: bool = True):
        if not 0 <= instance < model.cfg.n_instances:
            raise ValueError(f"instance {instance} is not one of the model's 0..{model.cfg.n_instances - 1}")
        self.W = model.W[instance].detach().clone()            # [m, n]
        self.probability = model.cfg.feature_probability()[instance:instance + 1]
        self.sparsity = model.cfg.sparsity[instance]
        self.n_features, self.d_in = model.cfg.n_features, model.cfg.n_hidden
        self.batch_size, self.seed, self.skip_empty = batch_size, seed, skip_empty

    def _draw(self, rows: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = feature_batch(self.probability, self.n_features, rows, g)[0]
        if self.skip_empty:
            # exactly the distribution given that some feature is on: the first active feature k has
            # P(k) proportional to (1 - p)^k p; those before it are off, those after it as usual
            p, n = float(self.probability[0]), self.n_features
            first = torch.multinomial((1 - p) ** torch.arange(n, dtype=torch.float64) * p, rows, replacement=True,
                                      generator=g)
            cols = torch.arange(n)[None, :]
            x = torch.where(cols < first[:, None], torch.zeros(()), x)
            x[torch.arange(rows), first] = torch.rand(rows, generator=g)
        return x @ self.W.T

    def batch(self, step: int) -> torch.Tensor:
        return self._draw(self.batch_size, self.seed * 1_000_003 + step)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        return self._draw(n, 7_919 + self.seed * 1_000_003 + seed)

    def features(self) -> torch.Tensor:
        return self.W.T.clone()


def recovery_scores(dictionary, features, represented=None) -> dict:
    """How well the rows of ``dictionary`` ([d_sae, m], an SAE's decoder directions) recover the true
    feature directions ``features`` ([n, m]).

    For each true feature: its best cosine with any latent (``best_cosine``) and that latent. The
    summary, over every feature and over the ``represented`` ones (a bool [n]; the toy model drops
    the others, so no SAE can find them): the mean of the best cosines and how many exceed ``RECOVERED``.
    """
    D = torch.as_tensor(dictionary).detach().float()
    F = torch.as_tensor(features).detach().float()
    if D.ndim != 2 or F.ndim != 2 or D.shape[1] != F.shape[1]:
        raise ValueError(f"dictionary [d_sae, m] and features [n, m] must share m; got {tuple(D.shape)} and "
                         f"{tuple(F.shape)} (pass W.T of a toy instance, features as rows)")
    cos = (F / F.norm(dim=1, keepdim=True).clamp_min(_EPS)) @ (D / D.norm(dim=1, keepdim=True).clamp_min(_EPS)).T
    best, latent = cos.max(dim=1)
    rep = (F.norm(dim=1) > REPRESENTED) if represented is None else torch.as_tensor(represented, dtype=torch.bool)
    out = {"best_cosine": best, "best_latent": latent, "represented": rep,
           "mean_max_cosine_all": float(best.mean()), "recovered_all": int((best > RECOVERED).sum()),
           "n_features": int(len(F)), "n_represented": int(rep.sum())}
    out["mean_max_cosine"] = float(best[rep].mean()) if rep.any() else float("nan")
    out["recovered"] = int((best[rep] > RECOVERED).sum())
    return out


def train_toy_sae(source: ToyActivations, d_sae: int, total_tokens: int, l1_coeff: float = 3e-2,
                  seed: int = 0, progress: bool = True):
    """The paper's recipe (ReLU + L1, unit decoder rows, resampling; :mod:`mono_utils.core.train`) on a toy
    model's hidden activations. Returns ``(sae, history)``."""
    cfg = SAEConfig(d_in=source.d_in, d_sae=d_sae, l1_coeff=l1_coeff, seed=seed, hook_name="toy.hidden",
                    model_name=f"toy-{source.n_features}-{source.d_in}")
    tc = TrainSAEConfig(total_tokens=total_tokens, batch_size=source.batch_size, lr=3e-3, seed=seed,
                        log_every=20, checkpoint_every=10**9)
    with one_thread():
        return train_sae(cfg, source, tc, device="cpu", progress=progress)


# ---------------------------------------------------------------- configs of the notebook's experiments
def sweep_config(sizes: "ToySizes", seed: int = 0) -> ToyConfig:
    """The paper's first experiment: 20 features, 5 dimensions, I_i = 0.7^i, one instance per sparsity."""
    return ToyConfig(n_features=20, n_hidden=5, sparsity=tuple(sizes.sweep), importance=0.7, steps=sizes.steps,
                     seed=seed)


def phase_config(sizes: "ToySizes", points: int = 10, seed: int = 0) -> ToyConfig:
    """Two features, one dimension: feature 0 has importance 1, feature 1 a relative importance from
    0.1 to 10 (rows), both a sparsity from 0 to 0.99 (columns); one instance per grid point."""
    sparsities = 1 - np.logspace(0, -2, points)
    ratios = np.logspace(-1, 1, points)
    S = tuple(float(s) for _ in ratios for s in sparsities)
    importance = tuple((1.0, float(r)) for r in ratios for _ in sparsities)
    return ToyConfig(n_features=2, n_hidden=1, sparsity=S, importance=importance, steps=sizes.phase_steps,
                     batch_size=256, restarts=3, seed=seed)


def geometry_config(sizes: "ToySizes", seed: int = 0) -> ToyConfig:
    """Five features of slowly decaying importance (I_i = 0.9^i, as ARENA: equal ones leave the dense
    model a saddle) in two dimensions, at sparsities from dense to very sparse."""
    S = tuple(float(s) for s in 1 - np.logspace(0, -2.5, 12))
    return ToyConfig(n_features=5, n_hidden=2, sparsity=S, importance=0.9, steps=sizes.steps, seed=seed)


# ---------------------------------------------------------------- figures (plotly, offline)
STATUS_COLOURS = {"not represented": "#d0d0d0", "dedicated": "#1f77b4", "superposition": "#d62728"}


def _label(s: float) -> str:
    return f"S = {s:.3g}"


def wtw_figure(model: ToyModel, instances: list[int]) -> go.Figure:
    """W^T W (top: which features share directions) and the bias b (bottom) of a few instances."""
    k = len(instances)
    fig = make_subplots(rows=2, cols=k, row_heights=[0.78, 0.22], vertical_spacing=0.08,
                        subplot_titles=[_label(model.cfg.sparsity[i]) for i in instances])
    W, b = model.W.detach(), model.b.detach()
    for c, i in enumerate(instances, start=1):
        wtw = (W[i].T @ W[i]).numpy()
        fig.add_trace(go.Heatmap(z=wtw, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True, showscale=c == k,
                                 colorbar=dict(title="W<sup>T</sup>W", len=0.7, y=0.62),
                                 hovertemplate="features %{y} and %{x}: %{z:.2f}<extra></extra>"), row=1, col=c)
        fig.update_yaxes(autorange="reversed", row=1, col=c, title_text="feature" if c == 1 else None)
        fig.add_trace(go.Bar(x=list(range(len(b[i]))), y=b[i].numpy(), marker_color="#555", showlegend=False,
                             hovertemplate="b[%{x}] = %{y:.2f}<extra></extra>"), row=2, col=c)
        fig.update_yaxes(range=[-1, 0.5], row=2, col=c, title_text="bias" if c == 1 else None)
    fig.update_layout(height=480, title="W<sup>T</sup>W (top) and the bias b (bottom): the diagonal is each "
                      "feature's norm squared, an off-diagonal entry two features sharing a direction")
    return fig


def norms_figure(model: ToyModel, instances: list[int] | None = None) -> go.Figure:
    """The paper's bars: ||W_i|| per feature (most important at the top), coloured by superposition."""
    instances = list(range(model.cfg.n_instances)) if instances is None else instances
    norms, sup = feature_norms(model).numpy(), superposition(model).numpy()
    fig = make_subplots(rows=1, cols=len(instances), shared_yaxes=True, horizontal_spacing=0.01,
                        subplot_titles=[f"{1 - model.cfg.sparsity[i]:.3g}" for i in instances])
    for c, i in enumerate(instances, start=1):
        fig.add_trace(go.Bar(y=list(range(model.cfg.n_features)), x=norms[i], orientation="h",
                             marker=dict(color=np.clip(sup[i], 0, 1), colorscale=[[0, "black"], [1, "#ffd000"]],
                                         cmin=0, cmax=1, showscale=c == len(instances),
                                         colorbar=dict(title="superposition")),
                             customdata=sup[i], showlegend=False,
                             hovertemplate="feature %{y}: norm %{x:.2f}, superposition %{customdata:.2f}<extra></extra>"),
                      row=1, col=c)
        fig.update_xaxes(range=[0, 1.3], showticklabels=False, row=1, col=c)
    fig.update_yaxes(autorange="reversed", title_text="feature (most important first)", row=1, col=1)
    fig.update_layout(height=430, title="||W<sub>i</sub>|| per feature, one panel per feature density 1 - S; "
                      "black: a dimension of its own, yellow: shares it with others")
    return fig


def sweep_figure(model: ToyModel) -> go.Figure:
    """Features represented and in superposition against sparsity, with the m dimensions as a line."""
    rows = sweep_table(model)
    x = [r["1/(1-S)"] for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=x, y=[r["represented"] for r in rows], mode="lines+markers", name="represented (norm > 0.5)")
    fig.add_scatter(x=x, y=[r["in superposition"] for r in rows], mode="lines+markers",
                    name="... of them in superposition")
    fig.add_hline(y=model.cfg.n_hidden, line_dash="dot", annotation_text=f"m = {model.cfg.n_hidden} dimensions")
    fig.update_layout(xaxis_type="log", xaxis_title="1 / (1 - S) (sparser to the right)", yaxis_title="features",
                      height=340, title=f"{model.cfg.n_features} features in {model.cfg.n_hidden} dimensions: "
                                         f"how many it keeps, and how many share")
    return fig


def phase_grid(model: ToyModel, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sparsities, relative importances, status of feature 1 as [importance, sparsity] codes 0/1/2)."""
    status = feature_status(model)[:, 1]
    codes = np.array([list(STATUS_COLOURS).index(s) for s in status]).reshape(points, points)
    S = np.array(model.cfg.sparsity[:points])
    ratios = model.cfg.importance_rows()[::points, 1].numpy()
    return S, ratios, codes


def phase_figure(model: ToyModel, points: int) -> go.Figure:
    """What the model does with feature 1 (the varying one), over sparsity and relative importance."""
    S, ratios, codes = phase_grid(model, points)
    colours = list(STATUS_COLOURS.values())
    scale = [[0, colours[0]], [1 / 3, colours[0]], [1 / 3, colours[1]], [2 / 3, colours[1]],
             [2 / 3, colours[2]], [1, colours[2]]]
    fig = go.Figure(go.Heatmap(z=codes, x=1 / (1 - S), y=ratios, zmin=-0.5, zmax=2.5, colorscale=scale,
                               colorbar=dict(tickvals=[0, 1, 2], ticktext=list(STATUS_COLOURS)),
                               customdata=np.array(list(STATUS_COLOURS), dtype=object)[codes],
                               hovertemplate="1/(1-S) %{x:.3g}, importance %{y:.2g}: %{customdata}<extra></extra>"))
    fig.update_layout(xaxis_type="log", yaxis_type="log", height=380,
                      xaxis_title="1 / (1 - S) (sparser to the right)",
                      yaxis_title="importance of feature 1 / feature 0",
                      title="Two features, one dimension: the phase change of feature 1")
    return fig


def geometry_figure(model: ToyModel, instances: list[int]) -> go.Figure:
    """The columns of W as arrows in the plane (m = 2), each labelled with its dimensionality D_i."""
    D, norms = feature_dimensionality(model).numpy(), feature_norms(model).numpy()
    W = model.W.detach().numpy()
    fig = make_subplots(rows=1, cols=len(instances), subplot_titles=[_label(model.cfg.sparsity[i]) for i in instances])
    for c, i in enumerate(instances, start=1):
        for f in range(model.cfg.n_features):
            x, y = W[i, 0, f], W[i, 1, f]
            kept = norms[i, f] > REPRESENTED          # a dropped feature is a stub at the origin: no label
            fig.add_scatter(x=[0, x], y=[0, y], mode="lines+markers+text", showlegend=False,
                            marker=dict(size=[0, 8]), line=dict(width=2),
                            text=["", f"{f}: D={D[i, f]:.2f}" if kept else ""], textposition="top center",
                            hovertemplate=f"feature {f}: ({x:.2f}, {y:.2f}), D = {D[i, f]:.2f}<extra></extra>",
                            row=1, col=c)
        fig.update_xaxes(range=[-1.5, 1.5], row=1, col=c, showticklabels=False)
        fig.update_yaxes(range=[-1.5, 1.5], row=1, col=c, showticklabels=False, scaleanchor=f"x{c if c > 1 else ''}")
    fig.update_layout(height=380, title="Five features in two dimensions: the columns of W (arrows), each "
                      "represented one labelled with its dimensionality D")
    return fig


def dimensionality_figure(model: ToyModel) -> go.Figure:
    """D_i of every represented feature against sparsity, with the shapes' values as lines."""
    D, norms = feature_dimensionality(model).numpy(), feature_norms(model).numpy()
    xs, ys = [], []
    for i, s in enumerate(model.cfg.sparsity):
        for f in range(model.cfg.n_features):
            if norms[i, f] > REPRESENTED:
                xs.append(1 / (1 - s))
                ys.append(D[i, f])
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", name="a feature's D<sub>i</sub>",
                               marker=dict(size=9, opacity=0.6)))
    dpf = dimensions_per_feature(model).numpy()
    fig.add_scatter(x=[1 / (1 - s) for s in model.cfg.sparsity], y=dpf, mode="lines", line_color="black",
                    name="m / ||W||<sub>F</sub><sup>2</sup>")
    for name, v in STICKY.items():
        fig.add_hline(y=v, line_dash="dot", line_color="grey", annotation_text=f"{name} {v:.2g}",
                      annotation_position="right")
    fig.update_layout(xaxis_type="log", height=400, xaxis_title="1 / (1 - S) (sparser to the right)",
                      yaxis_title="feature dimensionality D<sub>i</sub>", yaxis_range=[0, 1.1],
                      legend=dict(orientation="h", y=-0.25),
                      title="Each represented feature's share of a dimension")
    return fig


def recovery_figure(scores: dict, baseline: dict | None = None, names=("SAE latents", "hidden dimensions")) -> go.Figure:
    """Each represented true feature's best cosine with the SAE's dictionary (and with a baseline basis).

    The dropped features are left out: their columns are near-zero noise, carry nothing into the hidden
    layer, and their "best cosine" means nothing (``recovery_scores`` reports the score over all of them)."""
    rep = scores["represented"].numpy()
    kept = [i for i in range(scores["n_features"]) if rep[i]]
    labels = [str(i) for i in kept]
    fig = go.Figure(go.Bar(x=labels, y=scores["best_cosine"].numpy()[kept], name=names[0]))
    if baseline is not None:
        fig.add_bar(x=labels, y=baseline["best_cosine"].numpy()[kept], name=names[1])
    fig.add_hline(y=RECOVERED, line_dash="dot", annotation_text=f"recovered above {RECOVERED}")
    fig.update_layout(barmode="group", height=340, yaxis_range=[0, 1.05],
                      xaxis_title=f"true feature (the {scores['n_features'] - len(kept)} dropped ones left out)",
                      yaxis_title="best cosine with a direction",
                      title=f"{scores['recovered']} of {scores['n_represented']} represented features recovered; "
                            f"mean max cosine {scores['mean_max_cosine']:.3f}")
    return fig


# ---------------------------------------------------------------- presets
@dataclass(frozen=True)
class ToySizes:
    """How much the notebook trains: the same science on every preset, fewer steps on ``smoke``."""
    steps: int = 2000
    phase_steps: int = 1500
    sae_tokens: int = 1_000_000
    sweep: tuple = field(default=(0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999))


def toy_sizes(preset: str | None = None) -> ToySizes:
    """The notebook's sizes for ``preset`` (default: ``$MONO_PRESET``). Only ``smoke`` is smaller:
    the toy models need no build and run in seconds on every other preset."""
    name = preset or os.environ.get("MONO_PRESET") or "default"
    if name == "smoke":
        return ToySizes(steps=800, phase_steps=600, sae_tokens=300_000)
    return ToySizes()
