"""Transcoders: a sparse dictionary that predicts an MLP's *output* from its *input*.

    f     = JumpReLU_theta(x @ W_enc + b_enc)             x: the MLP's input  (``blocks.0.mlp.hook_in``,
                                                                              after ln2's weight and bias)
    y_hat = f @ W_dec + b_dec  [+ x @ W_skip]             y: the MLP's output (``blocks.0.hook_mlp_out``)

(Dunefsky, Chlenski & Nanda 2024; the affine skip ``W_skip`` of Paulo, Shabalin & Belrose 2025.)
Trained with A/1's recipe, BatchTopK: the k x batch largest pre-activations of a batch are kept
(k per token on average), AuxK on dead latents, decoder rows of unit norm (in the scaled output
space), W_enc = W_dec^T at init; a threshold (an exponential moving average of the smallest kept
activation) replaces the batch top-k at inference, so the saved transcoder is a JumpReLU one.

Inputs and targets are scaled to mean norm sqrt(d) while training; the scales are folded into
the weights at the end, so a trained :class:`Transcoder` works on raw activations with no scale
of its own (which keeps every edge of an attribution graph a plain product of weights).

Saved in SAELens's transcoder format: ``cfg.json`` (architecture ``jumprelu_transcoder`` or
``jumprelu_skip_transcoder``, ``d_in``, ``d_sae``, ``d_out``, ``hook_name_out``) and
``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae], ``b_enc``, ``W_dec`` [d_sae, d_out],
``b_dec`` [d_out], ``threshold`` [d_sae], and for the skip variant ``W_skip`` [d_out, d_in],
SAELens's own key and orientation); our ``config.json`` beside them.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..store.artifacts import atomic_write_json, read_json, save_safetensors_atomic, sha256_file, verify_folder
from .activations import ActivationStream
from .device import deterministic, pick_device
from .malloc_tuning import tune_malloc
from .metrics import _ablation_baselines, density_histogram, loss_recovered, ultralow_threshold
from .model import HOOK_MLP_POST, lm_loss
from .sae_kernels import _batch_topk, _sparse_pass
from .train import TrainSAEConfig, dead_window, lr_factor

HOOK_MLP_IN = "blocks.0.mlp.hook_in"      # = blocks.0.ln2.hook_out (ln2.hook_normalized is before w, b in TL 4.x)
HOOK_MLP_OUT = "blocks.0.hook_mlp_out"
WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"
OUR_CFG = "config.json"
FORMAT = "mono_utils.transcoder/1"
ARCHITECTURES = {False: "jumprelu_transcoder", True: "jumprelu_skip_transcoder"}


@dataclass
class TranscoderConfig:
    d_in: int
    d_sae: int
    d_out: int
    k: int = 32                     # BatchTopK: mean active latents per token
    skip: bool = False              # affine skip connection x @ W_skip
    aux_k: int | None = None        # AuxK: dead latents used (None: d_out // 2)
    aux_coeff: float = 1 / 32
    seed: int = 0
    hook_name: str = HOOK_MLP_IN
    hook_name_out: str = HOOK_MLP_OUT
    model_name: str = "mono-1l"

    def __post_init__(self):
        for name in ("d_in", "d_sae", "d_out"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"TranscoderConfig.{name} must be a positive integer, got {v!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.d_sae:
            raise ValueError(f"TranscoderConfig.k must be an integer in 1..d_sae = {self.d_sae}, got {self.k!r}")
        if not isinstance(self.skip, bool):
            raise ValueError(f"TranscoderConfig.skip must be True or False, got {self.skip!r}")
        if self.aux_k is not None and (isinstance(self.aux_k, bool) or not isinstance(self.aux_k, int)
                                       or self.aux_k <= 0):
            raise ValueError(f"TranscoderConfig.aux_k must be a positive integer or None, got {self.aux_k!r}")
        if not (isinstance(self.aux_coeff, (int, float)) and math.isfinite(self.aux_coeff) and self.aux_coeff > 0):
            raise ValueError(f"TranscoderConfig.aux_coeff must be a finite number > 0, got {self.aux_coeff!r}")

    @property
    def aux_k_eff(self) -> int:
        return min(self.d_sae, self.aux_k if self.aux_k is not None else max(1, self.d_out // 2))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TranscoderConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Transcoder(nn.Module):
    """A JumpReLU transcoder on raw activations (scales folded in); see the module's docstring."""

    def __init__(self, cfg: TranscoderConfig):
        super().__init__()
        self.folder: Path | None = None
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.empty(cfg.d_sae, cfg.d_out)
        W_dec.uniform_(-math.sqrt(6.0 / cfg.d_out), math.sqrt(6.0 / cfg.d_out), generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        if cfg.d_in == cfg.d_out:   # A/1's recipe: W_enc = W_dec^T at init (possible when the widths agree)
            W_enc = W_dec.t().contiguous()
        else:
            W_enc = torch.empty(cfg.d_in, cfg.d_sae).uniform_(-math.sqrt(6.0 / cfg.d_sae), math.sqrt(6.0 / cfg.d_sae),
                                                               generator=g)
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out))
        # [d_in, d_out] here (x @ W_skip); SAELens stores its transpose
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out)) if cfg.skip else None
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def _check(self, x: torch.Tensor, width: int, what: str) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim == 0 or x.shape[-1] != width:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{what} have shape {shape} but the transcoder expects a last dimension of {width}: "
                             f"pass the model's {self.cfg.hook_name} (d_model) activations of the same model")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contain NaN/Inf values: check the model and its inputs before encoding")
        return x.to(self.W_enc.dtype)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of MLP inputs ``x`` [..., d_in] (linear in x: the attribution's handle)."""
        return self._check(x, self.cfg.d_in, "MLP inputs") @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.where(pre > self.threshold, pre, torch.zeros((), dtype=pre.dtype, device=pre.device)).relu_()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] of MLP inputs ``x`` [..., d_in]."""
        return self.activation(self.pre_acts(x))

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted MLP output from feature activations ``f`` (and, with a skip, the input ``x``)."""
        if f.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"feature activations have width {f.shape[-1]}, the transcoder has d_sae = {self.cfg.d_sae}")
        out = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("this is a skip transcoder: decode(f, x) needs the MLP input x for x @ W_skip")
            out = out + self._check(x, self.cfg.d_in, "MLP inputs") @ self.W_skip
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    # ------------------------------------------------------------ saving / loading
    def saelens_cfg(self) -> dict:
        c = self.cfg
        return {"d_in": c.d_in, "d_sae": c.d_sae, "d_out": c.d_out, "dtype": "float32", "device": "cpu",
                "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
                "architecture": ARCHITECTURES[c.skip], "hook_name_out": c.hook_name_out, "hook_layer_out": 0,
                "metadata": {"hook_name": c.hook_name, "model_name": c.model_name}}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            state = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
                     "threshold": self.threshold}
            if self.W_skip is not None:
                state["W_skip"] = self.W_skip.t()   # SAELens: [d_out, d_in]
            state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
        save_safetensors_atomic(state, folder / WEIGHTS)
        atomic_write_json(folder / SAELENS_CFG, self.saelens_cfg())
        ours = read_json(folder / OUR_CFG) if (folder / OUR_CFG).exists() else {}
        ours.update({"format": FORMAT, "transcoder": self.cfg.to_dict(), "weights_sha256": sha256_file(folder / WEIGHTS)})
        atomic_write_json(folder / OUR_CFG, ours)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "Transcoder":
        """Open a transcoder folder in SAELens's format (ours or another tool's JumpReLU one), checking it."""
        folder = Path(folder)
        missing = [n for n in (SAELENS_CFG, WEIGHTS) if not (folder / n).is_file()]
        if missing:
            raise ValueError(f"{folder} is not a transcoder folder: it lacks {', '.join(missing)}. Pass the folder "
                             f"that holds {SAELENS_CFG} and {WEIGHTS} (SAELens's transcoder format).")
        if (folder / "MANIFEST.json").exists():
            problems = verify_folder(folder)
            if problems:
                raise ValueError(f"transcoder artifact {folder} is damaged: {'; '.join(problems[:3])}. "
                                 f"Delete the folder and rebuild it.")
        lens = read_json(folder / SAELENS_CFG)
        arch = lens.get("architecture")
        if arch not in ARCHITECTURES.values():
            raise ValueError(f"{folder}: architecture {arch!r} is not a JumpReLU transcoder (expected one of "
                             f"{sorted(ARCHITECTURES.values())}); an SAE opens with core.sae.SparseAutoencoder.load")
        ours = read_json(folder / OUR_CFG) if (folder / OUR_CFG).exists() else {}
        if ours.get("weights_sha256") and ours["weights_sha256"] != sha256_file(folder / WEIGHTS):
            raise ValueError(f"{folder / WEIGHTS} does not match the checksum in {OUR_CFG}: it was modified or "
                             f"corrupted. Rebuild the transcoder.")
        try:
            state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS)).items()}
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise ValueError(f"cannot read {folder / WEIGHTS}: {e}. Rebuild the transcoder.") from e
        if ours.get("transcoder"):
            cfg = TranscoderConfig.from_dict(ours["transcoder"])
        else:
            meta = lens.get("metadata") or {}
            cfg = TranscoderConfig(d_in=int(lens["d_in"]), d_sae=int(lens["d_sae"]), d_out=int(lens["d_out"]),
                                   k=1, skip=arch == ARCHITECTURES[True],
                                   hook_name=meta.get("hook_name", HOOK_MLP_IN),
                                   hook_name_out=lens.get("hook_name_out", HOOK_MLP_OUT),
                                   model_name=meta.get("model_name", "unknown"))
        expect = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_out),
                  "b_dec": (cfg.d_out,), "threshold": (cfg.d_sae,)}
        if cfg.skip:
            expect["W_skip"] = (cfg.d_out, cfg.d_in)
        for name, shape in expect.items():
            if name not in state or tuple(state[name].shape) != shape:
                got = tuple(state[name].shape) if name in state else "missing"
                raise ValueError(f"{folder / WEIGHTS}: {name} is {got}, expected {shape}: the folder is inconsistent; "
                                 f"rebuild the transcoder")
            if not torch.isfinite(state[name]).all():
                raise ValueError(f"{folder / WEIGHTS}: {name} holds NaN or Inf: rebuild the transcoder")
        tc = cls(cfg)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(tc, name).copy_(state[name])
            tc.threshold.copy_(state["threshold"])
            if cfg.skip:
                tc.W_skip.copy_(state["W_skip"].t())
        tc.folder = folder
        return tc.to(device).eval()


# ---------------------------------------------------------------- activations: (MLP input, MLP output) pairs
class _Stop(Exception):
    pass


@torch.no_grad()
def mlp_in_out(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MLP's input and output [batch, pos, d_model] each; the forward pass stops after the MLP."""
    box = {}

    def grab_in(act, hook):
        box["in"] = act.detach()
        return act

    def grab_out(act, hook):
        box["out"] = act.detach()
        raise _Stop

    try:
        model.run_with_hooks(tokens, fwd_hooks=[(HOOK_MLP_IN, grab_in), (HOOK_MLP_OUT, grab_out)])
    except _Stop:
        pass
    return box["in"], box["out"]


class PairStream(ActivationStream):
    """:class:`ActivationStream` of (MLP input | MLP output) rows, [*, 2 d_model]: the same blocks,
    contexts, positions and shuffles as the SAE's stream of MLP activations, so a transcoder and A/1
    see the same tokens in the same order."""

    def __init__(self, model, tokens: np.ndarray, batch_size: int, **kw):
        if kw.get("cache") is not None:
            raise ValueError("PairStream keeps no activation cache (pairs are cheap to harvest): pass cache=None")
        super().__init__(model, tokens, batch_size, **kw)
        self.d_model = int(model.cfg.d_model)
        self.d_in = 2 * self.d_model

    @torch.no_grad()
    def compute_block(self, b: int) -> torch.Tensor:
        rows = self._rows_of_block(b)
        rng = np.random.default_rng([self.seed, 29, b])
        n_ctx = self.tokens.shape[1]
        chunks = []
        for s in range(0, len(rows), self.model_batch):
            r = rows[s:s + self.model_batch]
            tok = torch.from_numpy(self.tokens[r].astype(np.int64)).to(self.device)
            acts = torch.cat(mlp_in_out(self.model, tok), -1).float()
            if self.tpc == n_ctx - self.first:
                chunks.append(acts[:, self.first:].reshape(-1, acts.shape[-1]).cpu())
            else:
                pos = np.stack([rng.choice(np.arange(self.first, n_ctx), self.tpc, replace=False) for _ in range(len(r))])
                pos_t = torch.from_numpy(pos).to(acts.device)
                chunks.append(acts.gather(1, pos_t[..., None].expand(-1, -1, acts.shape[-1]))
                              .reshape(-1, acts.shape[-1]).cpu())
        block = torch.cat(chunks)
        if not torch.isfinite(block).all():
            raise ValueError(f"MLP inputs/outputs of block {b} hold NaN/Inf: check the model weights")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        return block[torch.randperm(len(block), generator=g)[: self.block_size]].contiguous()


# ---------------------------------------------------------------- training
def transcoder_grads(tc: Transcoder, xs: torch.Tensor, ys: torch.Tensor, dead_mask: torch.Tensor | None) -> dict:
    """Fill ``.grad`` of the transcoder's parameters for scaled inputs ``xs`` and targets ``ys``.

    The SAE's sparse BatchTopK path (``core.sae_kernels``) with the target set to ``ys`` (minus the
    skip's prediction) and no pre-encoder bias; ``W_skip``'s gradient is ``xs^T d_yhat``."""
    cfg = tc.cfg
    B = xs.shape[0]
    W_enc, b_enc, W_dec, b_dec = tc.W_enc.detach(), tc.b_enc.detach(), tc.W_dec.detach(), tc.b_dec.detach()
    pre = torch.addmm(b_enc, xs, W_enc)
    target = ys - xs @ tc.W_skip.detach() if tc.W_skip is not None else ys
    crow, col, v, min_kept = _batch_topk(tc, pre.relu_(), cfg.k, B)
    scale = 2.0 / (B * cfg.d_out)
    y_hat, dW_dec, dW_encT, db_enc, d_yhat, sq = _sparse_pass(crow, col, v, target, xs, W_dec, b_dec, 0.0, scale, B)
    active = v > 0
    fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=xs.device)
    fired[col[active]] = True
    stats = {"sq": sq, "nnz": active.sum(), "fired": fired, "min_kept": min_kept, "aux": 0.0}
    if dead_mask is not None and bool(dead_mask.any()):
        # AuxK (Gao et al. 2024): the top dead latents predict what the live ones left unexplained
        dead = dead_mask.nonzero()[:, 0]
        kk = min(cfg.aux_k_eff, len(dead))
        av, ai = pre[:, dead].topk(kk, dim=1)
        ai, order = ai.sort(dim=1)
        av = av.gather(1, order).relu_().reshape(-1)
        acol = dead[ai.reshape(-1)]
        acrow = torch.arange(0, B * kk + 1, kk, device=xs.device)
        _, a_dW_dec, a_dW_encT, a_db_enc, _, a_sq = _sparse_pass(
            acrow, acol, av, target - y_hat, xs, W_dec, None, 0.0, cfg.aux_coeff * scale, B, with_bias=False)
        dW_dec += a_dW_dec
        dW_encT += a_dW_encT
        db_enc += a_db_enc
        stats["aux"] = float(a_sq) / (B * cfg.d_out)
    grads = [(tc.W_enc, dW_encT.t()), (tc.b_enc, db_enc), (tc.W_dec, dW_dec), (tc.b_dec, d_yhat.sum(0))]
    if tc.W_skip is not None:
        grads.append((tc.W_skip, xs.t() @ d_yhat))
    for p, g in grads:
        p.grad = g.contiguous()
    stats["mse"] = sq / (B * cfg.d_out)
    return stats


def train_transcoder(cfg: TranscoderConfig, source, tc: TrainSAEConfig, *, device=None, progress: bool = True,
                     live=None) -> tuple[Transcoder, list[dict]]:
    """Train a transcoder on ``source.batch(step)`` rows [x | y] (a :class:`PairStream`); returns
    ``(transcoder, history)``, the transcoder on the CPU with its scales folded into the weights."""
    dev = pick_device(device)
    with deterministic(dev):
        return _train(cfg, source, tc, dev, progress, live)


def _train(cfg, source, tc, dev, progress, live):
    tune_malloc()
    d_in = cfg.d_in
    if getattr(source, "d_in", cfg.d_in + cfg.d_out) != cfg.d_in + cfg.d_out:
        raise ValueError(f"the pair source gives rows of width {source.d_in}, the config expects d_in + d_out = "
                         f"{cfg.d_in + cfg.d_out}: build the transcoder's config from the same model")
    torch.manual_seed(tc.seed)
    trc = Transcoder(cfg)
    with torch.no_grad():
        sample = source.sample(min(8192, 4 * tc.batch_size), seed=tc.seed).float()
        x0, y0 = sample[:, :d_in], sample[:, d_in:]
        in_scale = math.sqrt(cfg.d_in) / float(x0.norm(dim=1).mean().clamp_min(1e-12))
        out_scale = math.sqrt(cfg.d_out) / float(y0.norm(dim=1).mean().clamp_min(1e-12))
        trc.b_dec.copy_((y0 * out_scale).mean(0))
    trc = trc.to(dev)
    params = [p for p in trc.parameters()]
    try:
        opt = torch.optim.Adam(params, lr=tc.lr, betas=(0.9, 0.999), fused=dev.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(params, lr=tc.lr, betas=(0.9, 0.999))
    n, window = tc.steps, dead_window(tc)
    last_fired = torch.zeros(cfg.d_sae, dtype=torch.int64, device=dev)
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(n), desc=f"transcoder {cfg.d_in}->{cfg.d_sae}->{cfg.d_out}{' +skip' if cfg.skip else ''}",
               disable=not progress)
    for step in bar:
        batch = source.batch(step).to(dev).float()
        xs, ys = batch[:, :d_in] * in_scale, batch[:, d_in:] * out_scale
        stats = transcoder_grads(trc, xs, ys, (step - last_fired) >= window)
        with torch.no_grad():   # unit decoder rows: no gradient along them (A/1's recipe)
            g = trc.W_dec.grad
            g -= (g * trc.W_dec).sum(1, keepdim=True) * trc.W_dec
        for grp in opt.param_groups:
            grp["lr"] = tc.lr * lr_factor(step, tc)
        opt.step()
        with torch.no_grad():
            trc.W_dec /= trc.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if stats["min_kept"] is not None:
                trc.threshold.mul_(1 - tc.threshold_lr).add_(tc.threshold_lr * stats["min_kept"])
        last_fired[stats["fired"]] = step + 1
        done = step + 1
        if done % tc.log_every == 0 or done == n:
            mse = float(stats["mse"])
            var = float((ys - ys.mean(0)).pow(2).mean())
            rec = {"step": done, "tokens": done * tc.batch_size, "loss": mse + cfg.aux_coeff * float(stats["aux"]),
                   "mse": mse, "fvu": mse / max(var, 1e-12), "l0": float(stats["nnz"]) / len(xs),
                   "dead_frac": float(((done - last_fired) >= min(window, done)).float().mean()),
                   "lr": opt.param_groups[0]["lr"], "act_per_s": done * tc.batch_size / max(1e-9, time.perf_counter() - t0)}
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"transcoder loss became {rec['loss']} at step {done}: lower the learning rate")
            history.append(rec)
            bar.set_postfix(fvu=f"{rec['fvu']:.3f}", l0=f"{rec['l0']:.1f}", dead=f"{rec['dead_frac']:.2f}")
            if live is not None:
                live(rec)
    # fold the scales: raw x -> pre-activations unchanged; outputs back to raw units
    with torch.no_grad():
        trc.W_enc.mul_(in_scale)
        trc.W_dec.div_(out_scale)
        trc.b_dec.div_(out_scale)
        if trc.W_skip is not None:
            trc.W_skip.mul_(in_scale / out_scale)
    trc = trc.cpu().eval()
    trc.scales = {"input_scale": in_scale, "output_scale": out_scale}
    return trc, history


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_transcoder(trc: Transcoder, model, tokens: np.ndarray, max_tokens: int | None = None,
                        density_tokens: int | None = None, batch_rows: int = 32, sae=None, progress: bool = False,
                        store=None) -> tuple[dict, torch.Tensor]:
    """``(metrics, density)`` of a transcoder on token rows ``tokens`` [rows, n_ctx] (positions 1..,
    as the SAE metrics): L0, MSE and FVU (about the mean) of the MLP output, the next-token loss
    with the transcoder's prediction in place of the MLP's output (``ce_tc``) and with its error
    term added back (``ce_tc_err``: exact, ``max_logit_diff_with_error`` says how exact), loss
    recovered against the SAE metrics' own zero and mean ablations (``core.metrics``, the same
    baselines as A/1's), dead and ultralow features on ``density_tokens``.

    ``sae``: an SAE of the same model's MLP activations (A/1) whose reconstruction, pushed through
    W_out, gives ``sae_fvu_mlp_out``: A/1's FVU measured on the transcoder's target."""
    tune_malloc()
    if int(model.cfg.d_model) != trc.cfg.d_in:
        raise ValueError(f"the transcoder reads d_in = {trc.cfg.d_in} but the model's d_model is {model.cfg.d_model}: "
                         f"use a transcoder of this model (same preset)")
    trc = trc.cpu().eval()
    n_ctx, d_mlp = tokens.shape[1], int(model.cfg.d_mlp)
    rows = len(tokens) if max_tokens is None else max(1, min(len(tokens), max_tokens // n_ctx))
    drows = rows if density_tokens is None else max(rows, min(len(tokens), density_tokens // n_ctx))
    batches = [torch.from_numpy(tokens[s:min(s + batch_rows, rows)].astype(np.int64)) for s in range(0, rows, batch_rows)]
    ce_abl = _ablation_baselines(model, tokens[:rows], batches, d_mlp, progress, store)
    ce = {"clean": 0.0, "tc": 0.0, "tc_err": 0.0}
    sq = sxx = sae_sq = l0 = 0.0
    sx, n, n_pred, max_diff = None, 0, 0, 0.0
    fires = torch.zeros(trc.cfg.d_sae, dtype=torch.float64)
    W_out, b_out = model.W_out[0].detach(), model.b_out[0].detach()
    for tok in tqdm(batches, desc="evaluating transcoder", disable=not progress):
        box = {}

        def grab(key):
            def fn(act, hook):
                box[key] = act.detach().clone()
                return act
            return fn

        hooks = [(HOOK_MLP_IN, grab("x")), (HOOK_MLP_OUT, grab("y"))] + ([(HOOK_MLP_POST, grab("h"))] if sae else [])
        clean = model.run_with_hooks(tok, fwd_hooks=hooks)
        x, y = box["x"][:, 1:], box["y"][:, 1:]
        f = trc.encode(x)
        y_hat = trc.decode(f, x)
        err = y - y_hat
        y64 = y.reshape(-1, y.shape[-1]).double()
        sq += float((y64 - y_hat.reshape(y64.shape).double()).pow(2).sum())
        sx = y64.sum(0) if sx is None else sx + y64.sum(0)
        sxx += float(y64.pow(2).sum())
        n += len(y64)
        active = (f > 0).reshape(-1, f.shape[-1])
        l0 += float(active.sum())
        fires += active.sum(0).double()
        if sae is not None:
            h = box["h"][:, 1:].reshape(-1, d_mlp)
            y_sae = sae.decode(sae.encode(h)) @ W_out + b_out
            sae_sq += float((y64 - y_sae.double()).pow(2).sum())

        def splice(value):
            def fn(act, hook):
                out = act.clone()
                out[:, 1:] = value
                return out
            return fn

        spliced = model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_OUT, splice(y_hat))])
        with_err = model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_OUT, splice(y_hat + err))])
        max_diff = max(max_diff, float((with_err - clean).abs().max()))
        ce["clean"] += float(lm_loss(clean, tok, reduce=False).sum())
        ce["tc"] += float(lm_loss(spliced, tok, reduce=False).sum())
        ce["tc_err"] += float(lm_loss(with_err, tok, reduce=False).sum())
        n_pred += tok.shape[0] * (n_ctx - 1)
    ce = {k: v / n_pred for k, v in {**ce, **ce_abl}.items()}
    n_density = n
    for s in tqdm(range(rows, drows, batch_rows), desc="transcoder density", disable=not progress or drows <= rows):
        tok = torch.from_numpy(tokens[s:min(s + batch_rows, drows)].astype(np.int64))
        x, _ = mlp_in_out(model, tok)
        fires += (trc.encode(x[:, 1:]) > 0).reshape(-1, trc.cfg.d_sae).sum(0).double()
        n_density += x.shape[0] * (n_ctx - 1)
    density = (fires / n_density).float()
    var = sxx - float(sx.pow(2).sum()) / n
    cut = ultralow_threshold(density.numpy(), encoder=trc.W_enc)
    d_out = trc.cfg.d_out
    m = {"l0": l0 / n, "mse": sq / (n * d_out), "fvu": sq / var if var > 0 else None,
         "ce_clean": ce["clean"], "ce_tc": ce["tc"], "ce_tc_with_error": ce["tc_err"],
         "ce_zero": ce["zero"], "ce_mean": ce["mean"],
         "loss_recovered": loss_recovered(ce["clean"], ce["tc"], ce["zero"]),
         "loss_recovered_mean": loss_recovered(ce["clean"], ce["tc"], ce["mean"]),
         "loss_recovered_with_error": loss_recovered(ce["clean"], ce["tc_err"], ce["zero"]),
         "max_logit_diff_with_error": max_diff,
         "dead": int((density == 0).sum()), "dead_frac": float((density == 0).float().mean()),
         "ultralow_density": cut, "ultralow": int(((density > 0) & (density < cut)).sum()),
         "ultralow_below_1e-5": int(((density > 0) & (density < 1e-5)).sum()),
         "density_hist": density_histogram(density.numpy()), "eval_tokens": n, "density_tokens": n_density}
    if sae is not None:
        m["sae_fvu_mlp_out"] = sae_sq / var if var > 0 else None
    return m, density
