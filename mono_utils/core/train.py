"""Training sparse autoencoders: fast steps, resampling, checkpoints, live curves, artifacts.

``train_sae(cfg, source, TrainSAEConfig(...))`` trains on ``source.batch(step)`` (a pure
function of the step, see :mod:`mono_utils.activations`), so a run killed at any point and
restarted from its checkpoint ends bit-identical to an uninterrupted one.
``get_sae(preset)`` / ``get_sae_family(preset)`` build (or load) the suite's SAEs as artifacts.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .device import deterministic, pick_device
from .malloc_tuning import tune_malloc
from .sae import RECIPES, SAEConfig, SparseAutoencoder, check_activations, geometric_median
from .sae_kernels import sae_grads


@dataclass
class TrainSAEConfig:
    total_tokens: int
    batch_size: int = 4096
    lr: float = 1e-3
    warmup_frac: float = 0.02          # linear lr warm-up
    lr_decay_frac: float = 0.2         # linear decay to 0 over the last fraction (0: constant, as the paper)
    l1_warmup_frac: float = 0.05       # lambda ramps up from 0 (0: constant, as the paper)
    resample: bool = True              # the paper's dead-feature resampling (ReLU SAEs)
    # paper: 25k..100k of 1M steps, scaled to the run. The presets' short runs resample longer
    # still (to 80%) and anneal the lr over the second half: see sae_pipeline.sae_train_config.
    resample_fracs: tuple = (0.1, 0.25, 0.4, 0.55, 0.7)
    dead_window_frac: float = 0.05     # "did not fire in the last ... steps" (paper: 12.5k of 1M)
    resample_batches: int = 16         # loss pool = this many recent batches (paper: 819,200 inputs)
    normalize_input: bool = True       # input scale so that mean ||x|| = sqrt(d_in)
    sparse_threshold: float = 0.03     # ReLU: switch to the sparse step below this feature density
    bf16: bool = False                 # bf16 matmuls (fast only with AMX / GPUs); never the default
    checkpoint_every: int = 50
    log_every: int = 10
    seed: int = 0
    grad_clip: float = 0.0             # clip the gradient's global norm to this (0: never, as the paper)
    threshold_lr: float = 0.01         # BatchTopK: EMA rate of the inference threshold (as SAELens)
    freeze_decoder: bool = False       # a control: W_dec stays at its random init (no update, renorm, resample)

    def __post_init__(self):
        for name in ("total_tokens", "batch_size", "checkpoint_every", "log_every", "resample_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"TrainSAEConfig.{name} must be a positive integer, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainSAEConfig.lr must be > 0, got {self.lr!r}")
        for name in ("warmup_frac", "lr_decay_frac", "l1_warmup_frac", "dead_window_frac", "sparse_threshold",
                     "threshold_lr"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TrainSAEConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"TrainSAEConfig.grad_clip must be >= 0 (0: no clipping), got {self.grad_clip!r}")

    @property
    def steps(self) -> int:
        return max(1, self.total_tokens // self.batch_size)

    def to_dict(self) -> dict:
        """All fields, except the late ones (``_LATE_TRAIN_FIELDS``) that hold their default, so
        configs written before they existed keep their hashes."""
        d = asdict(self)
        d["resample_fracs"] = list(self.resample_fracs)
        for name, default in _LATE_TRAIN_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d


_LATE_TRAIN_FIELDS = {"grad_clip": 0.0, "threshold_lr": 0.01}
_LATE_TRAIN_FIELDS["freeze_decoder"] = False


def recipe_configs(recipe: str, d_in: int, d_sae: int, total_tokens: int, *, sae: dict | None = None,
                   train: dict | None = None) -> tuple[SAEConfig, TrainSAEConfig]:
    """The SAE and training configs of a named recipe (``sae.RECIPES``), ``sae``/``train`` overriding
    any field (lambda, k, lr, batch...). ``paper2023`` gives exactly the configs of today's
    ReLU + L1 runs with the same overrides."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown SAE recipe {recipe!r}: choose one of {tuple(RECIPES)}")
    r = RECIPES[recipe]
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, **{**r["sae"], **(sae or {})})
    tc = TrainSAEConfig(total_tokens=total_tokens, **{**r["train"], **(train or {})})
    return cfg, tc

def lr_factor(step: int, tc: TrainSAEConfig) -> float:
    n = tc.steps
    warm = max(1, int(n * tc.warmup_frac))
    f = min(1.0, (step + 1) / warm)
    decay_start = int(n * (1 - tc.lr_decay_frac))
    if tc.lr_decay_frac > 0 and step >= decay_start:
        f *= max(0.0, (n - step) / max(1, n - decay_start))
    return f


def l1_factor(step: int, tc: TrainSAEConfig) -> float:
    ramp = int(tc.steps * tc.l1_warmup_frac)
    return 1.0 if ramp == 0 else min(1.0, (step + 1) / ramp)


def resample_steps(tc: TrainSAEConfig) -> list[int]:
    return sorted({int(tc.steps * f) for f in tc.resample_fracs if 0 < int(tc.steps * f) < tc.steps})


def dead_window(tc: TrainSAEConfig) -> int:
    return max(1, int(tc.steps * tc.dead_window_frac))


@torch.no_grad()
def init_sae(cfg: SAEConfig, source, tc: TrainSAEConfig, device) -> SparseAutoencoder:
    """A fresh SAE: input scale from a sample, b_dec at the sample's geometric median."""
    sae = SparseAutoencoder(cfg)
    x = source.sample(min(8192, 4 * tc.batch_size), seed=tc.seed).float()
    check_activations(x, cfg.d_in, "training activations")
    if tc.normalize_input:
        mean_norm = float(x.norm(dim=1).mean())
        if mean_norm <= 0:
            raise ValueError("the training activations are all zero: is the model trained and the hook right?")
        sae.set_input_scale(math.sqrt(cfg.d_in) / mean_norm)
    if cfg.b_dec_init == "geometric_median":
        sae.b_dec.copy_(geometric_median(x[:4096] * sae.input_scale))
    return sae.to(device)


@torch.no_grad()
def resample_dead(sae: SparseAutoencoder, opt, dead: torch.Tensor, pool: torch.Tensor, seed: int,
                  freeze_decoder: bool = False) -> int:
    """The paper's resampling of ``dead`` (bool [d_sae]) features from scaled inputs ``pool``."""
    idx = dead.nonzero()[:, 0]
    if len(idx) == 0:
        return 0
    losses = []
    # 4,096 rows at a time, fewer for wide SAEs: [4096, 131072] fp32 is 2.1 GB a tensor (the
    # paper preset), several alive at once; every SAE up to 16,384 features keeps 4,096 rows
    for chunk in pool.split(max(1, min(4096, 2**26 // sae.cfg.d_sae))):
        f = sae.encode_scaled(chunk)
        err = (sae.decode_scaled(f) - chunk).pow(2).mean(1)
        losses.append(err + sae.cfg.l1_coeff * f.sum(1) if sae.cfg.architecture == "relu" else err)
    w = torch.cat(losses).pow(2).double()
    g = torch.Generator(device="cpu").manual_seed(seed)
    pick = torch.multinomial(w.cpu(), len(idx), replacement=len(idx) > len(pool), generator=g).to(pool.device)
    vec = pool[pick]
    vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    if freeze_decoder:   # the frozen rows stay: the encoder restarts along each one's own direction
        vec = sae.W_dec[idx]
    else:
        sae.W_dec[idx] = vec
    sae.W_enc[:, idx] = (vec * 0.2 * enc_norm).t()
    sae.b_enc[idx] = 0.0
    for p, sl in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key][sl] = 0.0
    return len(idx)


def train_sae(cfg: SAEConfig, source, tc: TrainSAEConfig, *, device=None, checkpoint: str | Path | None = None,
              progress: bool = True, live=None, stop_after: int | None = None):
    """Train an SAE; returns ``(sae, history)``. ``live``: a callable (e.g. ``LivePlot``) fed each record.

    ``device``: default :func:`pick_device` (a GPU when there is one); the SAE comes back there.
    """
    dev = pick_device(device)
    with deterministic(dev):
        return _train_sae(cfg, source, tc, dev, checkpoint, progress, live, stop_after)


def _train_sae(cfg, source, tc, dev, checkpoint, progress, live, stop_after):
    tune_malloc()   # no page faults per step (see malloc_tuning)
    if getattr(source, "d_in", cfg.d_in) != cfg.d_in:
        raise ValueError(f"the activation source has d_in = {source.d_in} but the SAE config says d_in = "
                         f"{cfg.d_in}: set SAEConfig.d_in to the model's d_mlp")
    cfg = SAEConfig.from_dict(cfg.to_dict())  # never mutate the caller's config
    ident = {"sae": cfg.to_dict(), "train": tc.to_dict()}
    torch.manual_seed(tc.seed)
    sae = init_sae(cfg, source, tc, dev)
    opt = _adam(sae, tc.lr, dev, skip=("W_dec",) if tc.freeze_decoder else ())
    n, window = tc.steps, dead_window(tc)
    last_fired = torch.zeros(cfg.d_sae, dtype=torch.int64, device=dev)
    k_arch = cfg.architecture in ("topk", "batchtopk")
    if cfg.architecture == "jumprelu":
        raise ValueError("architecture 'jumprelu' is for loading other tools' SAEs; train 'batchtopk' instead")
    history, start, use_sparse = [], 0, k_arch
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        st = torch.load(ckpt, weights_only=True, map_location=dev)
        if st.get("ident") == repr(ident):
            sae.load_state_dict(st["sae"])
            sae.cfg.input_scale = float(sae.input_scale)
            opt.load_state_dict(st["opt"])
            last_fired, start, use_sparse = st["last_fired"].to(dev), int(st["step"]), bool(st["use_sparse"])
            keys = st["hist_keys"]
            history = [dict(zip(keys, row)) for row in st["hist"].tolist()]
    resamples = set(resample_steps(tc)) if (tc.resample and cfg.architecture == "relu") else set()
    bar = tqdm(range(start, n), total=n, initial=start, desc=f"SAE {cfg.d_in}->{cfg.d_sae} {cfg.architecture}",
               disable=not progress)
    t0, seen0, done = time.perf_counter(), start, start
    for step in bar:
        x = source.batch(step).to(dev, non_blocking=True).float()
        if not torch.isfinite(x).all():
            raise ValueError(f"training batch {step} holds NaN/Inf activations: check the model and the "
                             f"activation cache (delete it to rebuild)")
        xs = x * sae.input_scale
        dead_mask = (step - last_fired) >= window if k_arch else None
        stats = sae_grads(sae, xs, l1_coeff=cfg.l1_coeff * l1_factor(step, tc), dead_mask=dead_mask,
                          sparse=use_sparse, bf16=tc.bf16)
        if tc.freeze_decoder:   # no update, no clipping share, no projection of the frozen decoder
            sae.W_dec.grad = None
        if cfg.unit_decoder:
            sae.remove_parallel_grad()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(sae.parameters()), tc.grad_clip, foreach=True)
        for grp in opt.param_groups:
            grp["lr"] = tc.lr * lr_factor(step, tc)
        opt.step()
        if cfg.unit_decoder and not tc.freeze_decoder:
            sae.normalize_decoder()
        if stats.get("min_kept") is not None:   # BatchTopK: the inference threshold follows the batches
            with torch.no_grad():
                sae.threshold.mul_(1 - tc.threshold_lr).add_(tc.threshold_lr * stats["min_kept"])
        last_fired[stats["fired"]] = step + 1
        density = float(stats["nnz"]) / (x.shape[0] * cfg.d_sae)
        if cfg.architecture == "relu" and dev.type == "cpu":
            use_sparse = density < tc.sparse_threshold
        done = step + 1
        if done in resamples:
            dead = (done - last_fired) >= window
            pool = torch.cat([source.batch(j).to(dev).float() for j in _pool_steps(source, step, tc)])
            k = resample_dead(sae, opt, dead, pool * sae.input_scale, seed=tc.seed * 1009 + done,
                              freeze_decoder=tc.freeze_decoder)
            last_fired[dead] = done
            if k:
                use_sparse = False
        if done % tc.log_every == 0 or done == n:
            mse = float(stats["mse"])
            var = float((xs - xs.mean(0)).pow(2).mean())
            recon = float(stats.get("recon", mse))   # a Matryoshka SAE's: the mean over its prefixes
            rec = {"step": done, "tokens": done * tc.batch_size, "loss": mse + cfg.l1_coeff * float(stats["l1"])
                   if cfg.architecture == "relu" else recon + cfg.aux_coeff * float(stats.get("aux", 0.0)),
                   "mse": mse, "fvu": mse / max(var, 1e-12), "l0": float(stats["nnz"]) / x.shape[0],
                   "dead_frac": float(((done - last_fired) >= min(window, done)).float().mean()),
                   "lr": opt.param_groups[0]["lr"],
                   "act_per_s": (done - seen0) * tc.batch_size / max(1e-9, time.perf_counter() - t0)}
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"SAE loss became {rec['loss']} at step {done}: lower the learning rate")
            history.append(rec)
            bar.set_postfix(mse=f"{mse:.4f}", l0=f"{rec['l0']:.1f}", dead=f"{rec['dead_frac']:.2f}")
            if live is not None:
                live(rec)
        if ckpt is not None and (done % tc.checkpoint_every == 0 or done == stop_after) and done < n:
            _save_ckpt(ckpt, sae, opt, done, last_fired, use_sparse, history, ident)
        if stop_after is not None and done >= stop_after:
            break
    if not cfg.unit_decoder and done >= n:
        sae.fold_decoder_norms()   # unit dictionary vectors, the same function (see SparseAutoencoder)
    sae.eval()
    return sae, history


def _pool_steps(source, step: int, tc: TrainSAEConfig) -> list[int]:
    """Recent batches for the resampling loss pool, staying inside the current block of a stream."""
    per_block = getattr(source, "block_size", 0) // tc.batch_size
    first = (step // per_block) * per_block if per_block else 0
    return [j for j in range(step, step - tc.resample_batches, -1) if j >= first] or [step]


def _adam(sae, lr, dev, skip=()):
    kw = {"fused": True} if dev.type in ("cpu", "cuda") else {}
    params = [p for n, p in sae.named_parameters() if n not in skip]   # skip: frozen parameters (W_dec)
    try:
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), **kw)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


HIST_KEYS = ["step", "tokens", "loss", "mse", "fvu", "l0", "dead_frac", "lr", "act_per_s"]


def _save_ckpt(path: Path, sae, opt, step, last_fired, use_sparse, history, ident) -> None:
    # straight to a temporary file, then renamed: no copy of the weights and Adam state in memory
    # (at 131,072 features they are 1.6 GB, and a buffer and its bytes held them twice more)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"sae": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
                        "opt": opt.state_dict(), "step": step, "last_fired": last_fired.cpu(),
                        "use_sparse": use_sparse, "hist_keys": HIST_KEYS, "ident": repr(ident),
                        "hist": torch.tensor([[h[k] for k in HIST_KEYS] for h in history], dtype=torch.float64)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LivePlot:
    """A plotly FigureWidget of loss, MSE, L0 and dead fraction, updated by each record."""

    PANELS = ("loss", "mse", "l0", "dead_frac")

    def __init__(self, title: str = "SAE training", every: int = 1):
        import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
        from plotly.subplots import make_subplots  # lazy: plotly is heavy: figures only
        fig = make_subplots(rows=1, cols=4, subplot_titles=["loss", "MSE (scaled)", "L0", "dead fraction"])
        for i, _ in enumerate(self.PANELS):
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines", showlegend=False), row=1, col=i + 1)
        fig.update_layout(height=260, title=title, margin=dict(t=60, b=30, l=40, r=10))
        try:
            self.figure = go.FigureWidget(fig)
        except Exception:  # noqa: BLE001 - no anywidget/ipywidgets: a static figure still works
            self.figure = fig
        self.records, self.every = [], every

    def __call__(self, rec: dict) -> None:
        self.records.append(rec)
        if len(self.records) % self.every:
            return
        self._redraw()

    def replay(self, records: list[dict]) -> None:
        """Draw a finished run's history at once (one redraw, not one per record)."""
        self.records.extend(records)
        self._redraw()

    def _redraw(self) -> None:
        xs = [r["tokens"] for r in self.records]
        with self.figure.batch_update() if hasattr(self.figure, "batch_update") else _null():
            for i, key in enumerate(self.PANELS):
                self.figure.data[i].x = xs
                self.figure.data[i].y = [r[key] for r in self.records]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


