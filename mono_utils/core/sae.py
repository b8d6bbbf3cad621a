"""Sparse autoencoders: the paper's ReLU + L1 recipe, the 2024 recipes, one interface.

    x_s   = x * input_scale                  (scaling is internal; users pass raw activations)
    f     = ReLU(W_enc^T (x_s - b_dec) + b_enc)        or   TopK(...) for ``architecture="topk"``
    x_hat = (f @ W_dec + b_dec) / input_scale

Four named recipes (``RECIPES``; :func:`mono_utils.core.train.recipe_configs` gives both configs):

- ``paper2023`` (Bricken et al. 2023, the default): ReLU, loss MSE + lambda sum_i f_i, decoder
  rows kept at unit norm (parallel gradient removed), pre-encoder bias ``x - b_dec``,
  Kaiming-uniform encoder, b_dec at the geometric median, dead-feature resampling.
- ``anthropic2024`` (Anthropic's circuits update, April 2024): ReLU, loss MSE + lambda
  sum_i f_i ||W_dec,i|| with an unconstrained decoder, no pre-encoder bias, W_enc = W_dec^T at
  init with decoder rows of norm 0.1, zero biases, lambda warmed up over the first 5% of steps,
  lr decayed to 0 over the last 20%, gradient norm clipped at 1, no resampling. After training
  the decoder norms are folded into the encoder (f_i * ||W_dec,i|| becomes the feature), so the
  saved SAE has unit-norm dictionary vectors and the penalty reads as a plain L1.
- ``topk`` (Gao et al. 2024, as the suite built it before the recipes): the k largest
  pre-activations per token, AuxK on dead latents, Kaiming-uniform encoder.
- ``batchtopk`` (Bussmann et al. 2024): the k x batch largest activations over the whole batch
  (k per token on average), AuxK, W_enc = W_dec^T at init; a threshold (an exponential moving
  average of the smallest kept activation, as SAELens) replaces the batch top-k at inference,
  so the saved SAE is a JumpReLU with one shared threshold (SAELens saves BatchTopK so too).

Any BatchTopK SAE may train as a nested (Matryoshka) dictionary (Nabeshima 2024; Bussmann et al.
2025): ``matryoshka_prefixes = (m_1, ..., d_sae)`` makes the loss the mean over the prefixes of the
MSE of ``f[:, :m] @ W_dec[:m] + b_dec``, so the first m features must reconstruct on their own
(``prefix(m)`` gives them as an SAE of their own).

Parameters live in the scaled space (decoder rows unit norm there); ``W_dec_raw`` /
``b_dec_raw`` give the dictionary in raw activation space. Saved in SAELens's on-disk format
(``cfg.json`` + ``sae_weights.safetensors`` with only ``W_enc``, ``W_dec``, ``b_enc``,
``b_dec``, the input scale folded in), plus our own ``config.json`` beside it.
The fast hand-written training step lives in :mod:`mono_utils.sae_kernels`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

from ..store.artifacts import atomic_write_json, read_json, save_safetensors_atomic, sha256_file, verify_folder
from .model import HOOK_MLP_POST

WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"
OUR_CFG = "config.json"
FORMAT = "mono_utils.sae/1"
ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")   # jumprelu: inference only (foreign SAEs)
PENALTIES = ("l1", "l1_decoder_norm")
# Fields added after artifacts were first keyed by config hashes: ``to_dict`` leaves them out while
# they hold their default, so every config written before they existed hashes as it did.
_LATE_FIELDS = {"penalty": "l1", "unit_decoder": True, "pre_encoder_bias": True, "decoder_init_norm": None,
                "b_dec_init": "geometric_median", "recipe": None, "matryoshka_prefixes": ()}


# Each recipe: the SAEConfig fields and the TrainSAEConfig fields it sets (see the module's docstring).
RECIPES: dict[str, dict[str, dict]] = {
    "paper2023": {"sae": {"architecture": "relu"}, "train": {}},
    "anthropic2024": {
        "sae": {"architecture": "relu", "penalty": "l1_decoder_norm", "unit_decoder": False,
                "pre_encoder_bias": False, "encoder_init": "transpose", "decoder_init_norm": 0.1,
                "b_dec_init": "zeros", "recipe": "anthropic2024"},
        "train": {"resample": False, "l1_warmup_frac": 0.05, "lr_decay_frac": 0.2, "grad_clip": 1.0}},
    "topk": {"sae": {"architecture": "topk"}, "train": {}},
    "batchtopk": {"sae": {"architecture": "batchtopk", "encoder_init": "transpose"}, "train": {}},
}


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int
    architecture: str = "relu"      # "relu" (paper: ReLU + L1) or "topk" (Gao et al. 2024)
    l1_coeff: float = 3e-3          # lambda: MSE (mean over elements) + lambda * sum_i |f_i|
    k: int = 32                     # TopK: active latents per token
    aux_k: int | None = None        # TopK: dead latents used by the AuxK loss (None: d_in // 2)
    aux_coeff: float = 1 / 32       # TopK: weight of the AuxK loss
    input_scale: float = 1.0        # x is multiplied by this before encoding (undone on decode)
    seed: int = 0
    hook_name: str = HOOK_MLP_POST
    model_name: str = "mono-1l"
    encoder_init: str = "kaiming"   # "kaiming" (paper: untied Kaiming-uniform) or "transpose" (W_enc = W_dec^T)
    penalty: str = "l1"             # "l1" (paper: sum_i f_i) or "l1_decoder_norm" (2024: sum_i f_i ||W_dec,i||)
    unit_decoder: bool = True       # paper: decoder rows projected to unit norm after each step
    pre_encoder_bias: bool = True   # paper: encode x - b_dec; False: encode x (2024)
    decoder_init_norm: float | None = None   # norm of the initial decoder rows (None: 1; 2024: 0.1)
    b_dec_init: str = "geometric_median"     # or "zeros" (2024)
    recipe: str | None = None       # the recipe's name, for the record (None: paper2023 or topk by architecture)
    # BatchTopK only: nested dictionary sizes, increasing, ending at d_sae; the loss is the mean of
    # their reconstruction losses (Matryoshka). () : one reconstruction, as every other SAE
    matryoshka_prefixes: tuple = ()

    def __post_init__(self):
        for name in ("d_in", "d_sae"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"SAEConfig.{name} must be a positive integer, got {v!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"SAEConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        for name in ("l1_coeff", "aux_coeff", "input_scale"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"SAEConfig.{name} must be a finite number > 0, got {v!r}")
        if self.architecture == "topk":
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0:
                raise ValueError(f"SAEConfig.k must be a positive integer, got {self.k!r}")
            if self.k > self.d_sae:
                raise ValueError(f"SAEConfig.k = {self.k} exceeds d_sae = {self.d_sae}: a TopK SAE cannot "
                                 f"keep more latents than it has; lower k or raise d_sae")
        if self.aux_k is not None and (not isinstance(self.aux_k, int) or self.aux_k <= 0):
            raise ValueError(f"SAEConfig.aux_k must be a positive integer or None, got {self.aux_k!r}")
        if self.encoder_init not in ("kaiming", "transpose"):
            raise ValueError(f"SAEConfig.encoder_init must be 'kaiming' or 'transpose', got {self.encoder_init!r}")
        if self.architecture == "batchtopk":
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0 or self.k > self.d_sae:
                raise ValueError(f"SAEConfig.k must be an integer in 1..d_sae = {self.d_sae} for BatchTopK "
                                 f"(the mean number of active latents per token), got {self.k!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"SAEConfig.penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.b_dec_init not in ("geometric_median", "zeros"):
            raise ValueError(f"SAEConfig.b_dec_init must be 'geometric_median' or 'zeros', got {self.b_dec_init!r}")
        if self.decoder_init_norm is not None and not (isinstance(self.decoder_init_norm, (int, float))
                                                       and math.isfinite(self.decoder_init_norm)
                                                       and self.decoder_init_norm > 0):
            raise ValueError(f"SAEConfig.decoder_init_norm must be None or a finite number > 0, "
                             f"got {self.decoder_init_norm!r}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"SAEConfig.recipe must be None or one of {tuple(RECIPES)}, got {self.recipe!r}")
        self._check_prefixes()

    def _check_prefixes(self) -> None:
        mp = self.matryoshka_prefixes
        if not isinstance(mp, (tuple, list)) or any(isinstance(m, bool) or not isinstance(m, int) for m in mp):
            raise ValueError(f"SAEConfig.matryoshka_prefixes must be a tuple of integers such as "
                             f"(128, 512, {self.d_sae}), got {mp!r}")
        mp = self.matryoshka_prefixes = tuple(mp)   # a JSON list (config.json) comes back as a tuple
        if not mp:
            return
        if self.architecture != "batchtopk":
            raise ValueError(f"SAEConfig.matryoshka_prefixes needs architecture 'batchtopk' (a Matryoshka "
                             f"BatchTopK SAE), got {self.architecture!r}: use the batchtopk recipe or drop the prefixes")
        if mp[0] <= 0 or any(b <= a for a, b in zip(mp, mp[1:])) or mp[-1] != self.d_sae:
            raise ValueError(f"SAEConfig.matryoshka_prefixes must be strictly increasing positive sizes ending at "
                             f"d_sae = {self.d_sae} (the last prefix is the whole dictionary), got {mp}: e.g. "
                             f"({max(1, self.d_sae // 4)}, {self.d_sae})")

    @property
    def recipe_name(self) -> str:
        """The recipe this config follows (``recipe`` if set, else paper2023 / topk / batchtopk)."""
        if self.recipe is not None:
            return self.recipe
        return {"relu": "paper2023"}.get(self.architecture, self.architecture)

    @property
    def aux_k_eff(self) -> int:
        return min(self.d_sae, self.aux_k if self.aux_k is not None else max(1, self.d_in // 2))

    def to_dict(self) -> dict:
        """All fields, except the late ones (``_LATE_FIELDS``) that hold their default: the
        artifacts of the paper2023 and topk recipes keep the config hashes they had."""
        d = asdict(self)
        for name, default in _LATE_FIELDS.items():
            if d[name] == default:
                del d[name]
        if "matryoshka_prefixes" in d:
            d["matryoshka_prefixes"] = list(d["matryoshka_prefixes"])   # as JSON writes it
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SAEConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def geometric_median(points: torch.Tensor, iters: int = 200, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances."""
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"geometric_median needs a non-empty [n, d] tensor, got shape {tuple(points.shape)}")
    pts = points.double()
    y = pts.mean(0)
    for _ in range(iters):
        dist = (pts - y).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        y_new = (w[:, None] * pts).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * max(1.0, float(y.norm())):
            y = y_new
            break
        y = y_new
    return y.to(points.dtype)


def check_activations(x: torch.Tensor, d_in: int, what: str = "activations") -> None:
    """Raise a clear error for a wrong width or NaN/Inf values."""
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != d_in:
        raise ValueError(f"{what} have last dimension {tuple(x.shape)[-1:] or '()'} but the SAE expects "
                         f"d_in = {d_in}: was it trained on another hook or model (d_mlp)? Use an SAE "
                         f"trained on this model's {HOOK_MLP_POST}.")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} contain {bad} NaN/Inf values: the SAE cannot encode them. Check the "
                         f"model weights and inputs (fp16 overflow?) before encoding.")


class SparseAutoencoder(nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.folder: Path | None = None   # the artifact folder it was loaded from (set by load)
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.empty(cfg.d_sae, cfg.d_in)
        _kaiming_uniform(W_dec, g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        if cfg.decoder_init_norm is not None:
            W_dec *= float(cfg.decoder_init_norm)
        if cfg.encoder_init == "transpose":
            W_enc = W_dec.t().contiguous()
        else:
            W_enc = torch.empty(cfg.d_in, cfg.d_sae)
            _kaiming_uniform(W_enc, g)
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("input_scale", torch.tensor(float(cfg.input_scale)))
        if cfg.architecture in ("batchtopk", "jumprelu"):   # inference threshold per feature (JumpReLU)
            self.register_buffer("threshold", torch.zeros(cfg.d_sae))

    # ------------------------------------------------------------ scaled-space core
    def set_input_scale(self, scale: float) -> None:
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"input scale must be finite and > 0, got {scale}")
        self.cfg.input_scale = float(scale)
        self.input_scale.fill_(float(scale))

    def pre_acts(self, xs: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations for scaled input ``xs``."""
        xc = xs - self.b_dec if self.cfg.pre_encoder_bias else xs
        return torch.addmm(self.b_enc, xc, self.W_enc) if xs.ndim == 2 else xc @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Inference activation (BatchTopK: the JumpReLU threshold, so each token is encoded alone)."""
        if self.cfg.architecture == "relu":
            return torch.relu(pre)
        if self.cfg.architecture in ("batchtopk", "jumprelu"):
            return torch.where(pre > self.threshold, pre, torch.zeros((), dtype=pre.dtype, device=pre.device)).relu_()
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def batch_activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The training activation of a batch [B, d_sae]: BatchTopK keeps the k*B largest over the batch."""
        if self.cfg.architecture != "batchtopk":
            return self.activation(pre)
        flat = torch.relu(pre).reshape(-1)
        vals, idx = flat.topk(min(flat.numel(), self.cfg.k * pre.shape[0]))
        return torch.zeros_like(flat).scatter_(0, idx, vals).reshape(pre.shape)

    def encode_scaled(self, xs: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_acts(xs))

    def decode_scaled(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    # ------------------------------------------------------------ public interface (raw space)
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] of raw activations ``x`` [..., d_in]."""
        check_activations(x, self.cfg.d_in)
        x = x.to(self.W_enc.dtype)
        return self.encode_scaled(x * self.input_scale)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction in raw activation space: ``f @ W_dec_raw + b_dec_raw``."""
        if f.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"feature activations have width {f.shape[-1]}, the SAE has d_sae = {self.cfg.d_sae}")
        return self.decode_scaled(f.to(self.W_dec.dtype)) / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def W_dec_raw(self) -> torch.Tensor:
        """[d_sae, d_in] dictionary in raw activation space."""
        return self.W_dec / self.input_scale

    @property
    def b_dec_raw(self) -> torch.Tensor:
        return self.b_dec / self.input_scale

    @property
    def W_enc_raw(self) -> torch.Tensor:
        """[d_in, d_sae] encoder acting on raw ``x - b_dec_raw``."""
        return self.W_enc * self.input_scale

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    # ------------------------------------------------------------ losses (autograd reference)
    def loss(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None) -> dict:
        """The training loss on raw ``x`` [batch, d_in] (autograd; the fast path is sae_kernels)."""
        xs = x * self.input_scale
        pre = self.pre_acts(xs)
        f = self.batch_activation(pre)
        err = self.decode_scaled(f) - xs
        mse = err.pow(2).mean()
        out = {"mse": mse, "l0": (f > 0).float().sum(-1).mean()}
        recon = mse
        if self.cfg.matryoshka_prefixes:   # the mean of the nested prefixes' reconstruction losses
            out["prefix_mse"] = torch.stack([(f[:, :m] @ self.W_dec[:m] + self.b_dec - xs).pow(2).mean()
                                             for m in self.cfg.matryoshka_prefixes])
            recon = out["recon"] = out["prefix_mse"].mean()
        if self.cfg.architecture == "relu":
            l1 = f.sum(-1).mean() if self.cfg.penalty == "l1" else (f * self.W_dec.norm(dim=1)).sum(-1).mean()
            out.update(l1=l1, loss=mse + self.cfg.l1_coeff * l1)
        else:
            aux = torch.zeros((), dtype=x.dtype)
            if dead_mask is not None and bool(dead_mask.any()):
                dead = dead_mask.nonzero()[:, 0]
                kk = min(self.cfg.aux_k_eff, len(dead))
                v, i = pre[:, dead].topk(kk, dim=-1)
                e_hat = torch.relu(v)[..., None].mul(self.W_dec[dead][i]).sum(-2)
                aux = (e_hat - (-err.detach())).pow(2).mean()
            out.update(aux=aux, loss=recon + self.cfg.aux_coeff * aux)
        return out

    def prefix(self, m: int) -> "SparseAutoencoder":
        """The first ``m`` features as an SAE of their own (a copy): a nested (Matryoshka)
        dictionary's prefix. Exact for SAEs whose features fire independently of each other at
        inference (ReLU, BatchTopK's per-feature threshold), not for TopK (the k largest of all)."""
        c = self.cfg
        if c.architecture == "topk":
            raise ValueError("a TopK SAE's first features depend on all the others (the k largest per token): "
                             "prefix() needs a ReLU or BatchTopK (JumpReLU) SAE")
        if isinstance(m, bool) or not isinstance(m, int) or not 0 < m <= c.d_sae:
            raise ValueError(f"prefix size must be an integer in 1..{c.d_sae}, got {m!r}")
        # k: BatchTopK's training sparsity, unused at inference (the threshold decides), at most d_sae
        cfg = SAEConfig.from_dict({**c.to_dict(), "d_sae": m, "k": min(c.k, m), "matryoshka_prefixes": ()})
        out = SparseAutoencoder(cfg).to(self.device)
        with torch.no_grad():
            out.W_enc.copy_(self.W_enc[:, :m])
            out.b_enc.copy_(self.b_enc[:m])
            out.W_dec.copy_(self.W_dec[:m])
            out.b_dec.copy_(self.b_dec)
            out.input_scale.copy_(self.input_scale)
            if hasattr(self, "threshold"):
                out.threshold.copy_(self.threshold[:m])
        return out

    @torch.no_grad()
    def fold_decoder_norms(self) -> None:
        """Rescale so every decoder row has unit norm, the function unchanged: f_i -> f_i ||W_dec,i||
        (the 2024 recipe's penalty becomes a plain L1 on the folded features)."""
        n = self.W_dec.norm(dim=1).clamp_min(1e-12)
        self.W_dec /= n[:, None]
        self.W_enc *= n
        self.b_enc *= n
        if hasattr(self, "threshold"):
            self.threshold *= n

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out of W_dec.grad the component parallel to each (unit-norm) dictionary row."""
        g = self.W_dec.grad
        if g is not None:
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec

    # ------------------------------------------------------------ saving / loading
    def saelens_tensors(self) -> dict[str, torch.Tensor]:
        """The four SAELens tensors with the input scale folded in (raw-space SAE)."""
        with torch.no_grad():
            out = {"W_enc": self.W_enc_raw.float().contiguous(), "W_dec": self.W_dec_raw.float().contiguous(),
                   "b_enc": self.b_enc.float().contiguous(), "b_dec": self.b_dec_raw.float().contiguous()}
            if hasattr(self, "threshold"):   # JumpReLU threshold (pre-activations are scale-free)
                out["threshold"] = self.threshold.float().contiguous()
            return out

    def saelens_cfg(self) -> dict:
        """SAELens's cfg.json: ``standard`` (ReLU, both ReLU recipes; the 2024 recipe without the
        pre-encoder bias), ``topk``, and ``jumprelu`` for BatchTopK (SAELens saves BatchTopK SAEs
        for inference as JumpReLU SAEs with the learned threshold)."""
        c = self.cfg
        arch = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}[c.architecture]
        cfg = {"d_in": c.d_in, "d_sae": c.d_sae, "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": bool(c.pre_encoder_bias), "normalize_activations": "none",
               "reshape_activations": "none", "architecture": arch,
               "metadata": {"hook_name": c.hook_name, "model_name": c.model_name}}
        if c.architecture == "topk":
            cfg.update(k=c.k, rescale_acts_by_decoder_norm=False)
        return cfg

    def save(self, folder: str | Path, metrics: dict | None = None) -> Path:
        """Write ``cfg.json``, ``sae_weights.safetensors`` (SAELens) and our ``config.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors_atomic(self.saelens_tensors(), folder / WEIGHTS)
        atomic_write_json(folder / SAELENS_CFG, self.saelens_cfg())
        ours_path = folder / OUR_CFG
        ours = read_json(ours_path) if ours_path.exists() else {}
        ours.update({"format": FORMAT, "sae": self.cfg.to_dict(),
                     "weights_sha256": sha256_file(folder / WEIGHTS)})
        atomic_write_json(ours_path, ours)
        if metrics is not None:
            atomic_write_json(folder / "metrics.json", metrics)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "SparseAutoencoder":
        """Open an SAE folder in SAELens's format (ours or another tool's), checking everything."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder: pass the SAE's folder (it holds {SAELENS_CFG} "
                                    f"and {WEIGHTS})")
        missing = [n for n in (SAELENS_CFG, WEIGHTS) if not (folder / n).is_file()]
        if missing:
            raise ValueError(f"{folder} is not an SAE folder: it lacks {', '.join(missing)}. Pass the folder "
                             f"that holds {SAELENS_CFG} and {WEIGHTS} (SAELens format).")
        if (folder / "MANIFEST.json").exists():
            problems = verify_folder(folder)
            if problems:
                raise ValueError(f"SAE artifact {folder} is damaged: {'; '.join(problems[:3])}. "
                                 f"Delete the folder and rebuild it.")
        lens = read_json(folder / SAELENS_CFG)        # nested too deep or not JSON: a named ArtifactError
        ours = read_json(folder / OUR_CFG) if (folder / OUR_CFG).exists() else {}
        for name, cfg in ((SAELENS_CFG, lens), (OUR_CFG, ours)):
            if not isinstance(cfg, dict):
                raise ValueError(f"{folder / name} holds a JSON {type(cfg).__name__}, not an object: it is not an SAE "
                                 f"config; re-save the SAE (or fix the file)")
        if ours.get("weights_sha256") and ours["weights_sha256"] != sha256_file(folder / WEIGHTS):
            raise ValueError(f"{folder / WEIGHTS} does not match the checksum recorded in {OUR_CFG}: it was "
                             f"modified or corrupted. Re-save or rebuild the SAE.")
        state = _read_weights(folder / WEIGHTS)
        cfg = _config_from(lens, ours, state, folder)
        sae = cls(cfg)
        scale = float(cfg.input_scale)
        b_enc = state["b_enc"]
        if not lens.get("apply_b_dec_to_input", True) and cfg.pre_encoder_bias:  # fold b_dec into b_enc
            b_enc = b_enc + state["b_dec"] @ state["W_enc"]
        with torch.no_grad():  # unfold the input scale back into the scaled-space parameters
            sae.W_enc.copy_(state["W_enc"] / scale)
            sae.W_dec.copy_(state["W_dec"] * scale)
            sae.b_dec.copy_(state["b_dec"] * scale)
            sae.b_enc.copy_(b_enc)
            if hasattr(sae, "threshold"):
                sae.threshold.copy_(state["threshold"])
        sae.folder = folder
        return sae.to(device)


def _kaiming_uniform(t: torch.Tensor, g: torch.Generator) -> None:
    fan_in = t.shape[1]
    bound = math.sqrt(6.0 / fan_in)  # kaiming_uniform_ with a = 0 (ReLU gain)
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=g)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"cannot read {path}: {e}. The weights file is truncated or corrupted: "
                         f"re-save or rebuild the SAE.") from e
    need = {"W_enc", "W_dec", "b_enc", "b_dec"}
    if not need <= set(state):
        raise ValueError(f"{path} lacks tensors {sorted(need - set(state))}: it is not an SAE weights file")
    for name, t in state.items():
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise ValueError(f"{path}: tensor {name} has dtype {t.dtype}, expected a floating type")
        if not torch.isfinite(t).all():
            raise ValueError(f"{path}: tensor {name} holds NaN or Inf values; the SAE is corrupted")
    return {k: v.float() for k, v in state.items()}


def _config_from(lens: dict, ours: dict, state: dict, folder: Path) -> SAEConfig:
    for key in ("d_in", "d_sae"):
        if key not in lens:
            raise ValueError(f"{folder / SAELENS_CFG} has no {key!r}: it is not an SAE config")
    d_in, d_sae = (_positive_int(lens[k], k, folder) for k in ("d_in", "d_sae"))
    expect = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    for name, shape in expect.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(f"{folder / WEIGHTS}: {name} has shape {tuple(state[name].shape)} but cfg.json "
                             f"says {shape} (d_in={d_in}, d_sae={d_sae}); the folder is inconsistent")
    norm = lens.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise ValueError(f"{folder}: normalize_activations = {norm!r} is not supported; fold the "
                         f"normalisation into the weights and save with 'none'")
    arch = lens.get("architecture", "standard")
    if arch not in ("standard", "topk", "jumprelu"):
        raise ValueError(f"{folder}: architecture {arch!r} is not supported (only 'standard', 'topk' and "
                         f"'jumprelu')")
    if arch == "jumprelu" and tuple(state.get("threshold", torch.empty(0)).shape) != (d_sae,):
        raise ValueError(f"{folder}: a jumprelu SAE needs a 'threshold' tensor of shape ({d_sae},) in {WEIGHTS}")
    if arch == "topk" and lens.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{folder}: rescale_acts_by_decoder_norm = true is not supported")
    if ours.get("sae"):
        cfg = SAEConfig.from_dict(ours["sae"])
        if (cfg.d_in, cfg.d_sae) != (d_in, d_sae):
            raise ValueError(f"{folder}: {OUR_CFG} says {cfg.d_in}->{cfg.d_sae} but cfg.json says {d_in}->{d_sae}")
        return cfg
    meta = lens.get("metadata") or {}
    return SAEConfig(d_in=d_in, d_sae=d_sae, architecture={"standard": "relu"}.get(arch, arch),
                     k=_positive_int(lens.get("k", 32), "k", folder), hook_name=meta.get("hook_name", HOOK_MLP_POST),
                     model_name=meta.get("model_name", "unknown"), input_scale=1.0)


def _positive_int(v, key: str, folder: Path) -> int:
    """A cfg.json size: an integer (or an integral number) > 0; NaN, Infinity, text... are damage."""
    ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v == int(v) and v > 0)
    if not ok:
        raise ValueError(f"{folder / SAELENS_CFG}: {key} is {v!r}, not a positive integer: the config is damaged "
                         f"or not an SAE's; fix it or re-save the SAE")
    return int(v)


def load_json_cfg(folder: str | Path) -> dict:
    return read_json(Path(folder) / SAELENS_CFG)
