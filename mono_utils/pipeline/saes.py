"""The suite's SAEs as artifacts: ``get_sae(preset)`` (A/1, of ``preset.sae_recipe``), ``get_paper_sae(preset)``
(the paper's recipe at A/1's size) and ``get_sae_family(preset)`` (A/0..),
and ``get_recipe_runs(preset)``: the four recipes of ``core.sae.RECIPES`` side by side (notebook 01),
with the views that read them (``recipe_table``, ``recipe_density_figure``, ``recipe_curves_figure``).

Each SAE folder holds SAELens's ``cfg.json`` + ``sae_weights.safetensors``, our
``config.json``, ``metrics.json`` (from :mod:`mono_utils.metrics`), ``history.json`` (the
training curves) and ``feature_density.safetensors`` (density of each feature on the
evaluation tokens).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..core.activations import ActivationStream
from ..core.device import device_name, on_device, pick_device
from ..core.malloc_tuning import release_memory
from ..core.metrics import ULTRALOW_DEFAULT, evaluate_sae
from ..core.sae import RECIPES, SAEConfig, SparseAutoencoder
from ..core.train import TrainSAEConfig, train_sae
from ..store.artifacts import ArtifactStore, config_hash, read_json, save_safetensors_atomic
from .models import get_model, get_tokens, model_artifact_config
from .presets import Preset, get_preset, resolve


def sae_train_config(p: Preset, **overrides):
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


def sae_artifact_config(p: Preset, *, which: str = "A", d_sae: int | None = None, architecture: str | None = None,
                        l1_coeff: float | None = None, k: int | None = None, cache: bool = False, seed: int = 0,
                        recipe: str | None = None, matryoshka_prefixes: tuple = (), **train_overrides):
    """``(cfg, tc, config, name)``: the SAE config, training config, artifact config (hashed into the
    folder name) and artifact name of ``get_sae`` with these arguments, nothing built.

    ``recipe`` (``core.sae.RECIPES``): ``paper2023`` is ``architecture="relu"`` (the same artifact),
    ``topk`` is ``architecture="topk"``; ``anthropic2024`` and ``batchtopk`` set the SAE fields and
    training fields of their recipe (``train_overrides`` still win). With neither ``recipe`` nor
    ``architecture``, the preset's own: ``preset.sae_recipe`` (the recipe of A/1, B/1 and the family).
    ``matryoshka_prefixes`` (BatchTopK): a nested dictionary (``SAEConfig``), named ``...-matryoshka``."""
    if recipe is None and architecture is None:
        recipe = p.sae_recipe
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown SAE recipe {recipe!r}: choose one of {tuple(RECIPES)}")
        sae_fields = dict(RECIPES[recipe]["sae"])
        architecture = sae_fields.pop("architecture")
        train_overrides = {**RECIPES[recipe]["train"], **train_overrides}
    else:
        sae_fields = {}
    if l1_coeff is not None and architecture in ("topk", "batchtopk"):
        # A/1's recipe may be a k one (preset.sae_recipe): a lambda would be ignored, the SAE built is not the one asked for
        raise ValueError(f"l1_coeff={l1_coeff!r} has no effect on a {architecture} SAE (k sets its sparsity): pass "
                         f"recipe='paper2023' or 'anthropic2024' for an L1 SAE, or k=... for this one")
    d_sae = d_sae or p.sae_main
    model_cfg = model_artifact_config(p, which)
    cfg = SAEConfig(d_in=p.d_mlp, d_sae=d_sae, architecture=architecture,
                    l1_coeff=l1_coeff if l1_coeff is not None else p.l1_coeff,
                    k=k if k is not None else p.topk_k, seed=seed, model_name=f"mono-1l-{which}-{p.name}",
                    matryoshka_prefixes=tuple(matryoshka_prefixes), **sae_fields)
    tc = sae_train_config(p, seed=seed, **train_overrides)
    sae_cfg = cfg.to_dict()
    sae_cfg.pop("input_scale")
    config = {"model": model_cfg, "sae": sae_cfg, "train": tc.to_dict(), "stream": dict(STREAM_KW),
              "eval": {"eval_tokens": p.eval_tokens, "density_tokens": p.density_tokens}, "version": 1}
    if cache:  # fp16-cached activations give (slightly) different SAEs: a different artifact
        config["fp16_cache"] = True
    name = sae_name(which, d_sae, (architecture if cfg.recipe is None else cfg.recipe)
                    + ("-matryoshka" if cfg.matryoshka_prefixes else ""), p)
    return cfg, tc, config, name


STREAM_KW = {"tokens_per_context": None, "block_size": 1 << 17, "skip_bos": True}


def get_sae(preset=None, store: ArtifactStore | None = None, *, which: str = "A", d_sae: int | None = None,
            architecture: str | None = None, l1_coeff: float | None = None, progress: bool = True, live=None,
            k: int | None = None, cache: bool = False, seed: int = 0, recipe: str | None = None,
            matryoshka_prefixes: tuple = (), **train_overrides):
    """The SAE on model ``which``'s MLP activations, trained (once) on the preset's train tokens.

    Defaults: ``d_sae = preset.sae_main`` (A/1), ``l1_coeff = preset.l1_coeff``,
    ``k = preset.topk_k``, the recipe ``preset.sae_recipe`` (so ``get_sae(preset)`` is A/1).
    ``recipe``: one of ``core.sae.RECIPES``; ``architecture`` (``"relu"`` or ``"topk"``) names
    the paper's recipe or TopK the older way. ``cache=True`` keeps the harvested activations on
    disk (fp16) for the next SAE of the same model. ``live``: e.g. a ``core.train.LivePlot()``
    shown in a notebook. ``matryoshka_prefixes``: a nested BatchTopK dictionary (``core.sae.SAEConfig``).
    """
    p, s = resolve(preset, store)
    cfg, tc, config, name = sae_artifact_config(p, which=which, d_sae=d_sae, architecture=architecture,
                                                l1_coeff=l1_coeff, k=k, cache=cache, seed=seed, recipe=recipe,
                                                matryoshka_prefixes=matryoshka_prefixes, **train_overrides)
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


SIDE_RUN_FRACTION = 8       # a side run trains on sae_tokens / 8 activations (side_run_tokens)...
SIDE_EVAL_FRACTION = 4      # ... is evaluated on eval_tokens / 4 held-out tokens...
SIDE_DENSITY_FRACTION = 2   # ... and counts its feature densities on density_tokens / 2


def side_eval_preset(p: Preset) -> Preset:
    """``p`` with the smaller evaluation every side run uses (a quarter of ``eval_tokens``, half of
    ``density_tokens``; default: 65,536 and 262,144); ``p`` itself where side runs are full (``paper``).

    Side runs: the family's other sizes, TopK and notebook 01's recipes, the lambda sweep, the randomized
    control and issue 30's seeds and controls. A/1, B/1 and the paper's recipe at A/1's tokens keep the
    preset's evaluation. The evaluation is part of each run's artifact config (``sae_artifact_config``); the
    time it saves (about 45 s of one thread a run on default) pays for the new stages of ``make run``."""
    if p.side_runs_full:
        return p
    return p.replace(eval_tokens=max(p.n_ctx, p.eval_tokens // SIDE_EVAL_FRACTION),
                     density_tokens=max(p.n_ctx, p.density_tokens // SIDE_DENSITY_FRACTION))


def _model_first(p: Preset, store, which: str, progress: bool) -> None:
    """Model ``which`` built (if at all) with the preset's own evaluation, before a side run asks for it
    through ``side_eval_preset(p)``: the model's artifact ignores the evaluation fields, its metrics do not."""
    get_model(p, store, which=which, progress=progress)


def get_sae_family(preset=None, store: ArtifactStore | None = None, *, which: str = "A", sizes=None,
                   architecture: str | None = None, l1_coeff: float | None = None, progress: bool = True,
                   cache: bool = False, **kw) -> dict[int, SparseAutoencoder]:
    """A/0, A/1, ...: one SAE per dictionary size, all of A/1's recipe (``preset.sae_recipe``) and
    setting (a shared lambda or k); ``cache=True`` harvests once (fp16)."""
    p = get_preset(preset)
    sizes = tuple(sizes) if sizes is not None else p.sae_sizes
    _model_first(p, store, which, progress)
    out = {}
    for n in sizes:
        extra = dict(kw)
        if n != p.sae_main and "total_tokens" not in kw and not p.side_runs_full:
            extra["total_tokens"] = family_tokens(p, n)
        out[n] = get_sae(p if n == p.sae_main else side_eval_preset(p), store, which=which, d_sae=n,
                         architecture=architecture, l1_coeff=l1_coeff, progress=progress, cache=cache, **extra)
        release_memory()   # the next (wider) size starts from the memory this one freed
    return out


def side_run_tokens(p: Preset) -> int:
    """Training activations of every side run (not on ``paper``, where side runs train on all of
    ``sae_tokens``): an eighth of the main run's (default: 500,000 against A/1's 4M; smoke: 25,000).

    Side runs: TopK and notebook 01's recipes, the lambda sweep, the family's other sizes, the nested
    (Matryoshka) SAE, issue 30's seeds and frozen-decoder control. One budget for all of them, so that
    runs of one recipe, width and seed are one artifact (the recipes' ``batchtopk`` is seed 0 of the
    seed runs; the recipes' ``paper2023`` is lambda x 1 beside the sweep's x 0.5 and x 2) and every comparison among side runs
    is at matched tokens. It was a quarter of A/1's for TopK, the recipes and the family until the build
    outgrew ``make run``'s 45 minutes (docs/results.md times each stage)."""
    return p.sae_tokens if p.side_runs_full else max(p.sae_batch, p.sae_tokens // SIDE_RUN_FRACTION)


def family_tokens(p: Preset, d_sae: int) -> int:
    """Training tokens of a family member other than the main size (not on ``paper``): the side runs'
    budget (``side_run_tokens``), and at most half the main run's compute (tokens x width)."""
    return max(p.sae_batch, min(side_run_tokens(p), p.sae_tokens * p.sae_main // (2 * d_sae)))


def topk_tokens(p: Preset) -> int:
    """TopK trains on the side runs' budget (``side_run_tokens``): it only serves the side-by-side
    comparison of notebook 01 (and the recipes at matched tokens). With so few activations at k 18
    many of its latents die (docs/results.md counts them; at k 24, far fewer: docs/findings.md,
    "SAE recipes")."""
    return side_run_tokens(p)


def get_paper_sae(preset=None, store: ArtifactStore | None = None, *, which: str = "A", progress: bool = True,
                  live=None, **kw) -> SparseAutoencoder:
    """The paper's recipe (``paper2023``: ReLU + L1, resampling) at A/1's width and on A/1's tokens:
    the dictionary every comparison with the paper is made with (notebook 01 trains it live,
    notebooks 02 and 03 set it beside A/1). Where ``preset.sae_recipe`` is ``paper2023`` (the
    ``paper`` preset) this is A/1 itself."""
    return get_sae(preset, store, which=which, recipe="paper2023", progress=progress, live=live, **kw)


def get_topk_sae(preset=None, store: ArtifactStore | None = None, *, which: str = "A", progress: bool = True,
                 live=None, **kw) -> SparseAutoencoder:
    """The TopK SAE of notebook 01 at A/1's width (AuxK for dead latents), on ``topk_tokens``."""
    p = get_preset(preset)
    kw.setdefault("total_tokens", topk_tokens(p))
    _model_first(p, store, which, progress)
    return get_sae(side_eval_preset(p), which=which, architecture="topk", store=store, progress=progress, live=live,
                   **kw)


# The 2024 recipe's penalty is lambda * sum_i f_i ||W_dec,i|| with a free decoder. Once its decoder
# norms are folded into the features the penalty reads as the paper's plain L1 at the same lambda,
# yet at the preset's lambda it trains far less sparse than the paper's recipe: on default, 1M
# activations, L0 44.4 against 24.3 for the paper's (benchmarks/bench_recipes.py, 2026-11-30,
# commit 3ca2f0a; docs/findings.md, "SAE recipes"), above the suite's L0 <= 20 target. Doubling lambda brings
# it there: the run get_recipe_runs builds at 2 x lambda (2026-11-30: default, 1M activations, model A
# of a fresh build of e2e459f, code of commit 06c21d4) has L0 20.7, loss recovered 88.4% (zero
# ablation) / 94.4% (mean), 43 dead + 29 ultralow of 4,096. Notebook 01's table shows the figures
# of the build at hand.
ANTHROPIC2024_L1_SCALE = 2.0


def recipe_tokens(p: Preset) -> int:
    """Activations each run of ``get_recipe_runs`` trains on: the TopK side run's (``topk_tokens``),
    so that the ``topk`` entry is that very artifact and every recipe is compared at matched tokens."""
    return topk_tokens(p)


def get_recipe_runs(preset=None, store: ArtifactStore | None = None, *, which: str = "A", recipes=None,
                    progress: bool = True) -> dict[str, SparseAutoencoder]:
    """Every SAE recipe of ``core.sae.RECIPES`` on model ``which`` at A/1's width, each trained
    (once) on ``recipe_tokens(preset)`` activations: ``{recipe: SparseAutoencoder}``, in RECIPES' order.

    ``topk`` is the TopK side run of ``get_topk_sae`` (the same artifact, not trained again);
    ``paper2023`` uses the preset's lambda (on a quarter of A/1's tokens it is an artifact of its own,
    except on ``paper``, where it is A/1), ``anthropic2024`` the preset's lambda x
    ``ANTHROPIC2024_L1_SCALE``, ``batchtopk`` the preset's k. ``recipes``: a subset of the names
    (default: all four).
    """
    p, s = resolve(preset, store)
    names = tuple(RECIPES) if recipes is None else tuple(recipes)
    unknown = [r for r in names if r not in RECIPES]
    if unknown or not names:
        raise ValueError(f"unknown SAE recipe(s) {unknown or list(names)!r}: choose among {tuple(RECIPES)}")
    tokens = recipe_tokens(p)
    _model_first(p, s, which, progress)
    runs = {}
    for name in tqdm([r for r in RECIPES if r in names], desc="SAE recipes", disable=not progress):
        if name == "topk":
            runs[name] = get_topk_sae(p, s, which=which, progress=progress, total_tokens=tokens)
        else:
            l1 = p.l1_coeff * ANTHROPIC2024_L1_SCALE if name == "anthropic2024" else None
            runs[name] = get_sae(side_eval_preset(p), s, which=which, recipe=name, l1_coeff=l1, total_tokens=tokens,
                                 progress=progress)
        release_memory()   # the next run starts from the memory this one freed
    return runs


SWEEP_MULTIPLIERS = (0.5, 2.0)


def get_lambda_sweep(preset=None, store: ArtifactStore | None = None, *, which: str = "A",
                     multipliers=SWEEP_MULTIPLIERS, progress: bool = True) -> dict[float, SparseAutoencoder]:
    """The small L0 vs loss-recovered sweep of notebook 01: the paper's recipe at lambda x each
    multiplier, an eighth of the main run's tokens (the paper preset: all of them), with the side runs'
    smaller evaluation (``side_eval_preset``).

    One definition shared by the notebook and ``python -m mono_utils build`` so both name the
    same artifacts.
    """
    p = get_preset(preset)
    tokens = side_run_tokens(p)
    _model_first(p, store, which, progress)
    return {m: get_sae(side_eval_preset(p), store, which=which, recipe="paper2023", l1_coeff=p.l1_coeff * m,
                       progress=progress, total_tokens=tokens)
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


def _stored_metrics(name: str, sae, keys=()) -> dict:
    """``sae``'s metrics.json, with a clear error when it is not an artifact or lacks ``keys``."""
    folder = getattr(sae, "folder", None)
    if folder is None or not (Path(folder) / "metrics.json").exists():
        raise ValueError(f"recipe {name!r}: the SAE has no metrics.json (not loaded from the artifact store): "
                         f"pass the SAEs of get_recipe_runs(preset)")
    m = sae_metrics(sae)
    missing = [k for k in keys if k not in m]
    if missing:
        raise ValueError(f"recipe {name!r}: {folder}/metrics.json has no {missing}: an older build wrote it; "
                         f"delete that folder and run get_recipe_runs(preset) again")
    return m


RECIPE_TABLE_KEYS = ("train_tokens", "l0", "loss_recovered", "loss_recovered_mean", "fvu", "dead", "ultralow")


def recipe_table(runs: dict, reference_cutoff: float | None = None):
    """One row per recipe of ``runs`` (``get_recipe_runs``), read from each SAE's metrics.json:
    training tokens, sparsity setting, L0, loss recovered (zero / mean ablation), FVU, dead, ultralow,
    and the share of the dictionary that the two leave out of every analysis.

    "ultralow" is each SAE's own located cluster (``metrics.ultralow_threshold``: a low mode of the
    density histogram whose encoders are nearly parallel, the paper's signature; 1e-5 where there is
    none). ``reference_cutoff`` (e.g. the paper's recipe's located cutoff) adds the other reading:
    the share dead or live below that one density for every row, cluster or not."""
    import pandas as pd  # lazy: pandas is heavy, and only notebook views need it (not the build's workers)
    rows = []
    for name, sae in runs.items():
        m = _stored_metrics(name, sae, RECIPE_TABLE_KEYS)
        cfg = sae.cfg
        d_sae = int(m.get("d_sae", cfg.d_sae))
        rows.append({"recipe": name, "features": d_sae, "tokens": int(m["train_tokens"]),
                     "setting": f"lambda {cfg.l1_coeff:.3g}" if cfg.architecture == "relu" else f"k {cfg.k}",
                     "L0": m["l0"], "loss recovered (zero abl.)": m["loss_recovered"],
                     "loss recovered (mean abl.)": m["loss_recovered_mean"], "FVU": m["fvu"],
                     "dead": int(m["dead"]), "ultralow": int(m["ultralow"]),
                     "dead + ultralow share": (int(m["dead"]) + int(m["ultralow"])) / d_sae})
        if reference_cutoff is not None:
            if not (Path(sae.folder) / "feature_density.safetensors").exists():
                raise ValueError(f"recipe {name!r}: {sae.folder} has no feature_density.safetensors: an older "
                                 f"build wrote it; delete that folder and build it again")
            dens = feature_density(sae)
            rows[-1][f"dead + below {reference_cutoff:.2g} share"] = float((dens < reference_cutoff).float().mean())
    return pd.DataFrame(rows).set_index("recipe")


def _colors(n: int) -> list[str]:
    import plotly.colors  # lazy: plotly is heavy: figures only
    pal = plotly.colors.qualitative.Plotly
    return [pal[i % len(pal)] for i in range(n)]


def recipe_density_figure(runs: dict):
    """The log10 feature-density histograms of ``runs`` overlaid (outlines), from each SAE's stored
    ``density_hist`` (metrics.json), with each recipe's ultralow cutoff as a dotted line of its colour."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    fig = go.Figure()
    lowest = 0.0    # the left edge of the lowest non-empty bin of any recipe: the x axis starts there
    for (name, sae), color in zip(runs.items(), _colors(len(runs))):
        m = _stored_metrics(name, sae, ("density_hist", "ultralow_density", "ultralow"))
        h = m["density_hist"]
        filled = [e for e, c in zip(h["edges"], h["counts"]) if c]
        lowest = min([lowest] + filled[:1])
        # a step outline per recipe (four filled histograms on top of each other are unreadable)
        fig.add_scatter(x=h["edges"], y=list(h["counts"]) + h["counts"][-1:], mode="lines", line_shape="hv",
                        line=dict(color=color, width=2), legendgroup=name,
                        name=f"{name} (dead {h['dead']}, ultralow {m['ultralow']})")
        cut = m["ultralow_density"]
        if cut:
            fig.add_vline(x=math.log10(cut), line=dict(color=color, dash="dot", width=1))
    fig.update_layout(title="log10 feature density, one outline per recipe (dotted: each one's ultralow cutoff)",
                      xaxis_title="log10 density (fraction of held-out tokens where the feature fires)",
                      yaxis_title="live features", height=380, legend=dict(orientation="h", y=-0.25),
                      xaxis_range=[lowest - 0.5, 0])
    return fig


RECIPE_CURVES = (("loss", "loss (each recipe's own objective)"), ("mse", "MSE (scaled space)"), ("l0", "L0"))


def recipe_curves_figure(runs: dict):
    """Training curves of ``runs`` from each SAE's stored history.json: loss, MSE and L0 against step."""
    import plotly.graph_objects as go  # lazy: plotly is heavy: figures only
    from plotly.subplots import make_subplots  # lazy: plotly is heavy: figures only
    fig = make_subplots(rows=1, cols=len(RECIPE_CURVES), subplot_titles=[t for _, t in RECIPE_CURVES])
    for (name, sae), color in zip(runs.items(), _colors(len(runs))):
        _stored_metrics(name, sae)
        hist = sae_history(sae)
        if not hist:
            raise ValueError(f"recipe {name!r}: {sae.folder}/history.json is empty: rebuild that SAE")
        steps = [h["step"] for h in hist]
        for col, (key, _) in enumerate(RECIPE_CURVES, start=1):
            fig.add_trace(go.Scatter(x=steps, y=[h[key] for h in hist], mode="lines", name=name, legendgroup=name,
                                     line=dict(color=color), showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="step")
    for col, (key, _) in enumerate(RECIPE_CURVES, start=1):
        if key in ("mse", "l0"):   # both fall by orders of magnitude (L0 from thousands at the start)
            fig.update_yaxes(type="log", row=1, col=col)
    fig.update_layout(title="training curves of the recipes (same batch: step = tokens / batch)", height=360,
                      margin=dict(t=70, b=40, l=50, r=10))
    return fig


def _hash(cfg: dict) -> str:
    return config_hash(cfg)
