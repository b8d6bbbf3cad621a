"""The transcoder of model A's MLP as an artifact: ``get_transcoder(preset)``.

A/1's width (``preset.sae_main``) and recipe (BatchTopK at ``preset.topk_k``, A/1's batch, lr and
schedule; on ``paper``, whose A/1 is the paper's ReLU + L1 recipe, still BatchTopK at its k), trained on the same stream of tokens as A/1 (same blocks, contexts, positions and
shuffles: :class:`core.transcoder.PairStream`), input the MLP's input, target its output.

The folder holds SAELens's transcoder files (``cfg.json`` + ``sae_weights.safetensors``), our
``config.json``, ``metrics.json`` (:func:`core.transcoder.evaluate_transcoder`, with A/1's FVU
on the MLP output beside its own), ``history.json`` and ``feature_density.safetensors``.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from safetensors.torch import load_file

from ..core.device import device_name, on_device, pick_device
from ..core.transcoder import PairStream, Transcoder, TranscoderConfig, evaluate_transcoder, train_transcoder
from ..store.artifacts import read_json, save_safetensors_atomic
from .indexes import get_index
from .models import get_model, get_tokens, model_artifact_config
from .presets import Preset, resolve
from .saes import STREAM_KW, get_sae, sae_train_config

# With or without W_skip, measured on smoke (2026-12-07, one thread, both on A/1's 200k activations,
# evaluated on the preset's 16k tokens): without, L0 12.1, FVU of the MLP output 0.61, loss recovered
# 78.2% (zero abl.) / 67.4% (mean abl.); with, L0 9.3, FVU 0.32, 89.8% / 84.8%, no feature dead in
# either. The skip halves the error at a lower L0 for one [d_model, d_model] matrix: the suite's has it.
DEFAULT_SKIP = True


def transcoder_tokens(p: Preset) -> int:
    """Activations the transcoder trains on: A/1's (``sae_tokens``), but on ``default`` half of them
    (2M), so that the stage takes under 8 minutes of one thread. Measured with
    ``benchmarks/transcoder_cost.py`` (2026-12-07, default shapes, one thread, CPU seconds of the
    process on a shared 2-core machine): harvest 24 us/token, a training step 32 ms, evaluation
    353 us/token: 2M activations -> 47 s + 126 s + 93 s = 4.4 min; all 4M would be ~7.3 min, too
    close to the limit."""
    return p.sae_tokens if p.name != "default" else p.sae_tokens // 2


def transcoder_artifact_config(p: Preset, *, which: str = "A", skip: bool | None = None, d_sae: int | None = None,
                               k: int | None = None, seed: int = 0, **train_overrides):
    """``(cfg, tc, config, name)`` of ``get_transcoder`` with these arguments, nothing built."""
    skip = DEFAULT_SKIP if skip is None else skip
    cfg = TranscoderConfig(d_in=p.d_model, d_sae=d_sae or p.sae_main, d_out=p.d_model, k=k or p.topk_k, skip=skip,
                           seed=seed, model_name=f"mono-1l-{which}-{p.name}")
    train_overrides.setdefault("total_tokens", transcoder_tokens(p))
    tc = sae_train_config(p, seed=seed, **train_overrides)
    config = {"model": model_artifact_config(p, which), "transcoder": cfg.to_dict(), "train": tc.to_dict(),
              "stream": dict(STREAM_KW), "eval": {"eval_tokens": p.eval_tokens, "density_tokens": p.density_tokens},
              "version": 1}
    name = f"transcoder{which}-{cfg.d_sae}{'-skip' if skip else ''}-{p.name}"
    return cfg, tc, config, name


def get_transcoder(preset=None, store=None, *, which: str = "A", skip: bool | None = None, d_sae: int | None = None,
                   k: int | None = None, seed: int = 0, progress: bool = True, live=None,
                   **train_overrides) -> Transcoder:
    """The transcoder of model ``which``'s MLP, trained (once) with A/1's recipe; see the module's docstring.

    ``skip``: with the affine skip ``W_skip`` (default ``DEFAULT_SKIP``); ``train_overrides``: fields
    of ``core.train.TrainSAEConfig`` (e.g. ``total_tokens``)."""
    p, s = resolve(preset, store)
    cfg, tc, config, name = transcoder_artifact_config(p, which=which, skip=skip, d_sae=d_sae, k=k, seed=seed,
                                                       **train_overrides)

    def build(tmp: Path):
        model = get_model(p, s, which=which, progress=progress)
        data = get_tokens(p, s)
        sae = get_sae(p, s, which=which, progress=progress) if cfg.d_sae == p.sae_main else None
        with on_device(model, pick_device()) as dev:
            source = PairStream(model, data.train, tc.batch_size, seed=seed, max_tokens=tc.total_tokens, device=dev,
                                **STREAM_KW)
            trc, hist = train_transcoder(cfg, source, tc, device=dev, progress=progress, live=live)
        trc.save(tmp)
        tv, _, _ = data.split("val")
        metrics, density = evaluate_transcoder(trc, model, tv, p.eval_tokens, p.density_tokens, sae=sae,
                                               progress=progress, store=s)
        save_safetensors_atomic({"density": density}, tmp / "feature_density.safetensors")
        (tmp / "history.json").write_text(json.dumps(hist))
        last = hist[-1] if hist else {}
        metrics.update(train_tokens=tc.steps * tc.batch_size, train_act_per_s=last.get("act_per_s"),
                       d_sae=cfg.d_sae, k=cfg.k, skip=cfg.skip, train_device=device_name(dev), **trc.scales)
        return metrics

    folder = s.get_or_build("transcoder", name, config, build)
    return Transcoder.load(folder)


def transcoder_metrics(trc) -> dict:
    return read_json(Path(trc.folder) / "metrics.json")


def transcoder_density(trc):
    return load_file(str(Path(trc.folder) / "feature_density.safetensors"))["density"]


TABLE_KEYS = ("train_tokens", "l0", "fvu", "loss_recovered", "loss_recovered_mean", "dead", "ultralow")


def transcoder_table(trc, sae):
    """The transcoder's metrics beside A/1's (both from their metrics.json): L0, FVU (A/1's of its own
    target, the MLP activations, and of the MLP output), loss recovered (zero / mean ablation, the
    same baselines), with the error term, dead, ultralow."""
    import pandas as pd  # lazy: pandas is heavy, and only notebook views need it
    for obj, what in ((trc, "transcoder"), (sae, "SAE")):
        if getattr(obj, "folder", None) is None or not (Path(obj.folder) / "metrics.json").exists():
            raise ValueError(f"the {what} has no metrics.json (not loaded from the artifact store): pass "
                             f"get_transcoder(preset) and get_sae(preset)")
    t, a = transcoder_metrics(trc), read_json(Path(sae.folder) / "metrics.json")
    missing = [k for k in TABLE_KEYS if k not in t or k not in a]
    if missing:
        raise ValueError(f"metrics.json lacks {missing}: an older build wrote it; delete that folder and rebuild")
    rows = [{"dictionary": f"transcoder ({'skip, ' if t.get('skip') else ''}MLP in -> out)",
             "features": int(t["d_sae"]), "tokens": int(t["train_tokens"]), "L0": t["l0"],
             "FVU of its target": t["fvu"], "FVU of the MLP output": t["fvu"],
             "loss recovered (zero abl.)": t["loss_recovered"], "loss recovered (mean abl.)": t["loss_recovered_mean"],
             "loss recovered with error term": t["loss_recovered_with_error"],
             "dead": int(t["dead"]), "ultralow": int(t["ultralow"])},
            {"dictionary": "A/1 (SAE on MLP activations)", "features": int(a.get("d_sae", sae.cfg.d_sae)),
             "tokens": int(a["train_tokens"]), "L0": a["l0"], "FVU of its target": a["fvu"],
             "FVU of the MLP output": t.get("sae_fvu_mlp_out"),
             "loss recovered (zero abl.)": a["loss_recovered"], "loss recovered (mean abl.)": a["loss_recovered_mean"],
             "loss recovered with error term": None, "dead": int(a["dead"]), "ultralow": int(a["ultralow"])}]
    return pd.DataFrame(rows).set_index("dictionary")


class _MlpInputEncoder:
    """The transcoder dressed as an SAE for ``core.index.build_index``, which encodes the MLP's
    activations of each forward pass it runs: while open (``with``), a hook on the MLP's input keeps the
    last pass's input, and ``encode`` ignores the activations it is handed and encodes that input."""

    def __init__(self, transcoder: Transcoder, model):
        self.transcoder, self.model = transcoder, model
        self.cfg = SimpleNamespace(d_sae=transcoder.cfg.d_sae)
        self.W_enc, self.folder = transcoder.W_enc, transcoder.folder
        self._last, self._handle = None, None

    def __enter__(self):
        def keep(module, inputs, output):
            self._last = output.detach()
        self._handle = self.model.blocks[0].mlp.hook_in.register_forward_hook(keep)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        self._last = None
        return False

    def encode(self, acts):
        x = self._last
        if x is None or x.shape[:-1].numel() != acts.shape[:-1].numel():
            raise RuntimeError("the transcoder's index encoder saw no matching forward pass: use it inside "
                               "`with`, right after the pass that produced the activations")
        return self.transcoder.encode(x.reshape(*acts.shape[:-1], x.shape[-1]))

    def state_dict(self):
        return self.transcoder.state_dict()


def transcoder_index_tokens(p: Preset) -> int:
    """Tokens of the transcoder's activation index: A/1's on smoke, half of them on larger presets (default:
    262,144; it serves notebook 07's dashboards and autointerp, each beside the neurons on the same tokens)."""
    return p.index_tokens if p.name == "smoke" else max(p.n_ctx, p.index_tokens // 2)


def get_transcoder_index(preset=None, store=None, *, which: str = "A", progress: bool = True, model=None):
    """The activation index of model ``which``'s neurons and its transcoder's features (``get_transcoder``),
    on ``transcoder_index_tokens(preset)`` held-out tokens: built once, then loaded (``core.index``)."""
    p, s = resolve(preset, store)
    model = model if model is not None else get_model(p, s, which=which, progress=progress)
    trc = get_transcoder(p, s, which=which, progress=progress)
    with _MlpInputEncoder(trc, model) as encoder:
        return get_index(p.replace(index_tokens=transcoder_index_tokens(p)), s, which=which, progress=progress,
                         sae=encoder, model=model)


def transcoder_logit_weights(transcoder, model):
    """[d_sae, d_vocab]: each feature's decoder direction read by the unembedding (a transcoder writes to
    the residual stream directly; the final LayerNorm left out, as ``core.model.direction_logit_weights``)."""
    return transcoder.W_dec.detach().float() @ model.W_U.detach().float()
