"""The suite's SAEs as artifacts: ``get_sae(preset)`` (A/1) and ``get_sae_family(preset)`` (A/0..).

Each SAE folder holds SAELens's ``cfg.json`` + ``sae_weights.safetensors``, our
``config.json``, ``metrics.json`` (from :mod:`mono_utils.metrics`), ``history.json`` (the
training curves) and ``feature_density.safetensors`` (density of each feature on the
evaluation tokens).
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from ..core.activations import ActivationStream
from ..core.device import device_name, on_device, pick_device
from ..core.malloc_tuning import release_memory
from ..core.metrics import ULTRALOW_DEFAULT, evaluate_sae
from ..core.sae import RECIPES, SAEConfig, SparseAutoencoder
from ..core.train import TrainSAEConfig, train_sae
from ..store.artifacts import ArtifactStore, config_hash, read_json, save_safetensors_atomic
from .models import get_model, get_tokens, model_artifact_config
from .presets import Preset, get_preset, resolve


def sae_train_config(p: Preset, architecture: str = "relu", **overrides):
    """Training hyper-parameters for a preset (``overrides`` replace any field)."""
    kw = dict(total_tokens=p.sae_tokens, batch_size=p.sae_batch, lr=p.sae_lr,
              checkpoint_every=max(10, p.sae_tokens // p.sae_batch // 20),
              log_every=max(1, min(10, p.sae_tokens // p.sae_batch // 50)))
    if p.sae_schedule == "paper":  # long runs: the paper's constant schedule
        kw.update(lr_decay_frac=0.0, l1_warmup_frac=0.0)
    else:
        # Short runs: features keep dying until late (measured on default: from 40% to 80% of
        # the run), so resampling continues to 80%, and the second half anneals the lr so
        # the revived features settle instead of dying again.
        kw.update(lr_decay_frac=0.5, resample_fracs=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))
    kw.update(overrides)
    return TrainSAEConfig(**kw)


def sae_name(which: str, d_sae: int, architecture: str, p: Preset) -> str:
    return f"sae{which}-{d_sae}-{architecture}-{p.name}"


def sae_artifact_config(p: Preset, *, which: str = "A", d_sae: int | None = None, architecture: str = "relu",
                        l1_coeff: float | None = None, k: int | None = None, cache: bool = False, seed: int = 0,
                        recipe: str | None = None, **train_overrides):
    """``(cfg, tc, config, name)``: the SAE config, training config, artifact config (hashed into the
    folder name) and artifact name of ``get_sae`` with these arguments, nothing built.

    ``recipe`` (``core.sae.RECIPES``): ``paper2023`` is ``architecture="relu"`` (the same artifact),
    ``topk`` is ``architecture="topk"``; ``anthropic2024`` and ``batchtopk`` set the SAE fields and
    training fields of their recipe (``train_overrides`` still win)."""
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown SAE recipe {recipe!r}: choose one of {tuple(RECIPES)}")
        sae_fields = dict(RECIPES[recipe]["sae"])
        architecture = sae_fields.pop("architecture")
        train_overrides = {**RECIPES[recipe]["train"], **train_overrides}
    else:
        sae_fields = {}
    d_sae = d_sae or p.sae_main
    model_cfg = model_artifact_config(p, which)
    cfg = SAEConfig(d_in=p.d_mlp, d_sae=d_sae, architecture=architecture,
                    l1_coeff=l1_coeff if l1_coeff is not None else p.l1_coeff,
                    k=k if k is not None else p.topk_k, seed=seed, model_name=f"mono-1l-{which}-{p.name}",
                    **sae_fields)
    tc = sae_train_config(p, architecture, seed=seed, **train_overrides)
    sae_cfg = cfg.to_dict()
    sae_cfg.pop("input_scale")
    config = {"model": model_cfg, "sae": sae_cfg, "train": tc.to_dict(), "stream": dict(STREAM_KW),
              "eval": {"eval_tokens": p.eval_tokens, "density_tokens": p.density_tokens}, "version": 1}
    if cache:  # fp16-cached activations give (slightly) different SAEs: a different artifact
        config["fp16_cache"] = True
    name = sae_name(which, d_sae, architecture if cfg.recipe is None else cfg.recipe, p)
    return cfg, tc, config, name


STREAM_KW = {"tokens_per_context": None, "block_size": 1 << 17, "skip_bos": True}


def get_sae(preset=None, store: ArtifactStore | None = None, *, which: str = "A", d_sae: int | None = None,
            architecture: str = "relu", l1_coeff: float | None = None, progress: bool = True, live=None,
            k: int | None = None, cache: bool = False, seed: int = 0, recipe: str | None = None,
            **train_overrides):
    """The SAE on model ``which``'s MLP activations, trained (once) on the preset's train tokens.

    Defaults: ``d_sae = preset.sae_main`` (A/1), ``l1_coeff = preset.l1_coeff``,
    ``k = preset.topk_k``. ``cache=True`` keeps the harvested activations on disk (fp16) for
    the next SAE of the same model. ``live``: e.g. a ``core.train.LivePlot()`` shown in a notebook.
    ``recipe``: one of ``core.sae.RECIPES`` (None: the ``architecture``'s own, paper2023 or topk).
    """
    p, s = resolve(preset, store)
    cfg, tc, config, name = sae_artifact_config(p, which=which, d_sae=d_sae, architecture=architecture,
                                                l1_coeff=l1_coeff, k=k, cache=cache, seed=seed, recipe=recipe,
                                                **train_overrides)
    d_sae, architecture, stream_kw = cfg.d_sae, cfg.architecture, STREAM_KW

    def build(tmp: Path):
        model = get_model(p, s, which=which, progress=progress)
        data = get_tokens(p, s)
        cache_dir = None
        if cache:
            cache_dir = s.root / "activations" / f"acts{which}-{p.name}-b{tc.batch_size}-s{seed}"
        ckpt = s.root / "sae" / f".ckpt-{name}-{_hash(config)}.pt"
        with on_device(model, pick_device()) as dev:   # harvest and train on a GPU when there is one
            source = ActivationStream(model, data.train, tc.batch_size, seed=seed, cache=cache_dir,
                                      max_tokens=tc.total_tokens, device=dev, **stream_kw)
            sae, hist = train_sae(cfg, source, tc, device=dev, checkpoint=ckpt, progress=progress, live=live)
        sae = sae.cpu()
        sae.save(tmp)
        tv, _, _ = data.split("val")
        # on the training device: at the paper's widths the CPU would take hours (issue 21)
        metrics, density = evaluate_sae(sae, model, tv, p.eval_tokens, progress=progress, return_density=True,
                                        density_tokens=p.density_tokens, store=s, device=dev)
        save_safetensors_atomic({"density": density}, tmp / "feature_density.safetensors")
        (tmp / "history.json").write_text(json.dumps(hist))
        last = hist[-1] if hist else {}
        metrics.update(train_tokens=tc.steps * tc.batch_size, train_act_per_s=last.get("act_per_s"),
                       input_scale=sae.cfg.input_scale, d_sae=d_sae, architecture=architecture, recipe=cfg.recipe_name,
                       train_device=device_name(dev))
        ckpt.unlink(missing_ok=True)
        return metrics

    folder = s.get_or_build("sae", name, config, build)
    sae = SparseAutoencoder.load(folder)
    return sae


def get_sae_family(preset=None, store: ArtifactStore | None = None, *, which: str = "A", sizes=None,
                   architecture: str = "relu", l1_coeff: float | None = None, progress: bool = True,
                   cache: bool = False, **kw) -> dict[int, SparseAutoencoder]:
    """A/0, A/1, ...: one SAE per dictionary size (shared lambda); ``cache=True`` harvests once (fp16)."""
    p = get_preset(preset)
    sizes = tuple(sizes) if sizes is not None else p.sae_sizes
    out = {}
    for n in sizes:
        extra = dict(kw)
        if n != p.sae_main and "total_tokens" not in kw and not p.side_runs_full:
            extra["total_tokens"] = family_tokens(p, n)
        out[n] = get_sae(p, store, which=which, d_sae=n, architecture=architecture, l1_coeff=l1_coeff,
                         progress=progress, cache=cache, **extra)
        release_memory()   # the next (wider) size starts from the memory this one freed
    return out


def family_tokens(p: Preset, d_sae: int) -> int:
    """Training tokens of a family member other than the main size (not on ``paper``).

    The other sizes only serve the splitting lesson: half the main run's tokens, and at most
    half its compute (tokens x width), so the 8x-wider dictionary does not cost as much as the
    rest of the build.
    """
    return max(p.sae_batch, min(p.sae_tokens // 2, p.sae_tokens * p.sae_main // (2 * d_sae)))


def topk_tokens(p: Preset) -> int:
    """TopK trains on a quarter of the main run's tokens (not on ``paper``): it only serves the
    side-by-side comparison, and the suite's time budget is tight. On default (lr 1e-3) it still
    reconstructs better than A/1 with 59 dead latents of 4,096; at lr 3.5e-4 the same budget
    left 68% dead (benchmarks/RESULTS.md)."""
    return p.sae_tokens if p.side_runs_full else max(p.sae_batch, p.sae_tokens // 4)


def get_topk_sae(preset=None, store: ArtifactStore | None = None, *, which: str = "A", progress: bool = True,
                 live=None, **kw) -> SparseAutoencoder:
    """The TopK SAE of notebook 01 at A/1's width (AuxK for dead latents), on ``topk_tokens``."""
    p = get_preset(preset)
    kw.setdefault("total_tokens", topk_tokens(p))
    return get_sae(p, which=which, architecture="topk", store=store, progress=progress, live=live, **kw)


SWEEP_MULTIPLIERS = (0.5, 2.0)


def get_lambda_sweep(preset=None, store: ArtifactStore | None = None, *, which: str = "A",
                     multipliers=SWEEP_MULTIPLIERS, progress: bool = True) -> dict[float, SparseAutoencoder]:
    """The small L0 vs loss-recovered sweep of notebook 01: lambda x each multiplier, a quarter of
    the main run's tokens (the paper preset: all of them).

    One definition shared by the notebook and ``python -m mono_utils build`` so both name the
    same artifacts.
    """
    p = get_preset(preset)
    tokens = p.sae_tokens if p.side_runs_full else max(p.sae_batch, p.sae_tokens // 4)
    return {m: get_sae(p, store, which=which, l1_coeff=p.l1_coeff * m, progress=progress, total_tokens=tokens)
            for m in multipliers}


def sae_metrics(sae) -> dict:
    return read_json(Path(sae.folder) / "metrics.json")


def ultralow_cutoff(sae) -> float:
    """The density below which ``sae``'s live features form the ultralow cluster (its metrics.json;
    ``metrics.ULTRALOW_DEFAULT`` for an SAE outside the artifact store or from before the cutoff
    was located)."""
    folder = getattr(sae, "folder", None)
    if folder is None or not (Path(folder) / "metrics.json").exists():
        return ULTRALOW_DEFAULT
    return float(read_json(Path(folder) / "metrics.json").get("ultralow_density") or ULTRALOW_DEFAULT)


def ultralow_mask(sae):
    """Bool [d_sae]: the features in ``sae``'s ultralow cluster, as its metrics located it on the
    density tokens (``feature_density.safetensors`` below the recorded cutoff); None for an SAE
    outside the artifact store or from before the densities were recorded."""
    folder = getattr(sae, "folder", None)
    if folder is None or not (Path(folder) / "feature_density.safetensors").exists():
        return None
    cutoff = sae_metrics(sae).get("ultralow_density")
    if cutoff is None:
        return None
    dens = feature_density(sae).numpy()
    return (dens > 0) & (dens < cutoff)


def sae_history(sae) -> list[dict]:
    return json.loads((Path(sae.folder) / "history.json").read_text())


def feature_density(sae):
    return load_file(str(Path(sae.folder) / "feature_density.safetensors"))["density"]


def _hash(cfg: dict) -> str:
    return config_hash(cfg)
