"""The SAE recipes side by side on model A of a built store (a benchmark, not a test).

    MONO_ARTIFACTS=/path/to/store python benchmarks/bench_recipes.py --runs paper2023,anthropic2024 \
        [--preset default] [--tokens 1000000] [--out results.jsonl]

Each run trains an A/1-sized SAE (the preset's ``sae_main`` features, its batch, lr and lambda
or k) with one recipe of ``mono_utils.core.sae.RECIPES`` (or a variant of the paper's recipe,
``RUNS`` below) on ``--tokens`` activations of model A, saves it in SAELens's format under
``<store>/bench-recipes/<run>-<tokens>`` (with its feature densities), opens it again with ``SparseAutoencoder.load`` and evaluates it
as the build evaluates A/1 (``core.metrics.evaluate_sae`` on the preset's evaluation and density
tokens): dead and ultralow counts, L0, loss recovered (zero and mean ablation), FVU about the
mean, training act/s. One JSON line per run is appended to ``--out``; ``--table`` prints the
table of every line in it.

``--diagnose FOLDER`` (an SAE folder with ``feature_density.safetensors``, e.g. a build's A/1)
prints the signature of the ultralow cluster that Anthropic described (circuits update, Feb
2024): the live features below the density cutoff against those above it, by the mean pairwise
cosine of their encoder vectors, their encoder bias ``b_enc`` and the shared bias
``-W_enc^T b_dec`` that the pre-encoder bias gives every feature.

The activations are harvested once into an fp16 cache in the store (every run reads the same
stream; the build trains on fp32 activations, so a run here is not byte-identical to the build's).
The model, tokens and ablation baselines must be in the store already (copy them from a built one):
the script builds nothing but the cache.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mono_utils.pipeline.models import get_model, get_tokens  # noqa: E402
from mono_utils.pipeline.presets import resolve  # noqa: E402
from mono_utils.pipeline.saes import sae_artifact_config  # noqa: E402
from mono_utils.core.activations import ActivationStream  # noqa: E402
from mono_utils.core.metrics import evaluate_sae  # noqa: E402
from mono_utils.core.sae import SparseAutoencoder  # noqa: E402
from mono_utils.core.train import dead_window, resample_steps, train_sae  # noqa: E402
from mono_utils.store.artifacts import save_safetensors_atomic  # noqa: E402

# run name -> (recipe, SAEConfig field overrides, TrainSAEConfig field overrides)
RUNS = {
    "paper2023": ("paper2023", {}, {}),
    # the suspected causes of the ultralow cluster, one at a time, the rest the paper's recipe
    "paper2023-no-pre-bias": ("paper2023", {"pre_encoder_bias": False}, {}),
    "paper2023-window25": ("paper2023", {}, {"dead_window_frac": 0.25}),   # dead = silent for 25% of the run
    "paper2023-no-resample": ("paper2023", {}, {"resample": False}),
    "paper2023-lr3e-4": ("paper2023", {}, {"lr": 3e-4}),
    "paper2023-lr3e-3": ("paper2023", {}, {"lr": 3e-3}),
    "paper2023-const-l1": ("paper2023", {}, {"l1_warmup_frac": 0.0}),    # λ from the first step, as the paper
    "paper2023-batch2048": ("paper2023", {}, {"batch_size": 2048}),      # a quarter of the steps, 4x the batch
    "paper2023-no-lr-decay": ("paper2023", {}, {"lr_decay_frac": 0.0}),  # constant lr after warm-up, as the paper
    "anthropic2024": ("anthropic2024", {}, {}),
    "topk": ("topk", {}, {}),
    "batchtopk": ("batchtopk", {}, {}),
}


def run_one(name: str, preset: str, tokens: int, progress: bool) -> dict:
    recipe, sae_over, train_over = RUNS[name]
    p, s = resolve(preset, None)
    cfg, tc, _, _ = sae_artifact_config(p, which="A", recipe=recipe, total_tokens=tokens, **train_over)
    cfg = dataclasses.replace(cfg, **sae_over)
    model = get_model(p, s, which="A", progress=progress)
    data = get_tokens(p, s)
    cache = s.root / "activations" / f"bench-recipes-A-{p.name}-b{tc.batch_size}-t{tokens}"
    source = ActivationStream(model, data.train, tc.batch_size, seed=0, cache=cache, max_tokens=tc.total_tokens,
                              tokens_per_context=None, block_size=1 << 17, skip_bos=True)
    t0 = time.perf_counter()
    sae, hist = train_sae(cfg, source, tc, device="cpu", progress=progress)
    train_s = time.perf_counter() - t0
    folder = s.root / "bench-recipes" / f"{name}-{tokens}"   # one folder per run and token count
    sae.save(folder)
    sae = SparseAutoencoder.load(folder)          # what the suite would open
    tv, _, _ = data.split("val")
    t1 = time.perf_counter()
    m, density = evaluate_sae(sae, model, tv, p.eval_tokens, density_tokens=p.density_tokens, store=s,
                              progress=progress, return_density=True)
    save_safetensors_atomic({"density": density}, folder / "feature_density.safetensors")
    m.pop("density_hist", None)
    # the cluster's cutoff is located per run (between the histogram's two modes); a fixed line too,
    # so that runs whose histograms differ are compared on the same footing
    live = density > 0
    m["live_below_1e-4"] = int((live & (density < 1e-4)).sum())
    m["live_below_3e-4"] = int((live & (density < 10 ** -3.5)).sum())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"run": name, "recipe": recipe, "sae_overrides": sae_over, "train_overrides": train_over,
            "preset": p.name, "d_sae": cfg.d_sae, "train_tokens": tc.steps * tc.batch_size, "steps": tc.steps,
            "batch": tc.batch_size, "lr": tc.lr, "l1_coeff": cfg.l1_coeff, "k": cfg.k,
            "resample_steps": resample_steps(tc) if (tc.resample and cfg.architecture == "relu") else [],
            "dead_window_steps": dead_window(tc), "train_s": round(train_s, 1),
            "eval_s": round(time.perf_counter() - t1, 1),
            "train_act_per_s": hist[-1]["act_per_s"] if hist else None,
            "final_train_l0": hist[-1]["l0"] if hist else None,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            **{k: v for k, v in m.items() if not isinstance(v, (list, dict))}}


def diagnose(folder: Path) -> str:
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from mono_utils.core.metrics import ultralow_threshold
    sae = SparseAutoencoder.load(folder)
    d = load_file(str(folder / "feature_density.safetensors"))["density"].numpy()
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    We = sae.W_enc.detach()
    cut = metrics.get("ultralow_density") or ultralow_threshold(d, encoder=We)
    hist = np.histogram(np.log10(d[d > 0]), bins=np.arange(-7, 0.01, 0.5))
    lines = [f"{folder.name}: dead {int((d == 0).sum())}, ultralow cutoff {cut:.1e}",
             "log10 density histogram (bin start: count): " +
             ", ".join(f"{e:.1f}: {c}" for e, c in zip(hist[1][:-1], hist[0]) if c)]
    En = We / We.norm(dim=0, keepdim=True).clamp_min(1e-12)
    shared = -(sae.b_dec @ We) if sae.cfg.pre_encoder_bias else torch.zeros(sae.cfg.d_sae)
    g = np.random.default_rng(0)
    for name, mask in (("below the cutoff", (d > 0) & (d < cut)), ("above the cutoff", d >= cut)):
        idx = np.flatnonzero(mask)
        if len(idx) < 2:
            lines.append(f"{name}: {len(idx)} features")
            continue
        sub = torch.from_numpy(g.choice(idx, min(len(idx), 800), replace=False))
        C = En[:, sub].T @ En[:, sub]
        pair = float((C.sum() - C.diag().sum()) / (len(sub) * (len(sub) - 1)))
        mk = torch.from_numpy(idx)
        lines.append(f"{name}: {len(idx)} features | mean pairwise encoder cosine {pair:.3f} | median b_enc "
                     f"{float(sae.b_enc[mk].median()):.3f} | median -W_enc^T b_dec {float(shared[mk].median()):.3f} | "
                     f"median encoder norm {float(We[:, mk].norm(dim=0).median()):.3f}")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = ("| run | tokens | L0 | loss rec. (zero / mean abl.) | FVU | dead | ultralow (cutoff) "
            "| dead + ultralow | train act/s |")
    out = [head, "|" + "---|" * 9]
    for r in rows:
        n = r["d_sae"]
        du = r["dead"] + r["ultralow"]
        out.append(f"| {r['run']} | {r['train_tokens'] / 1e6:.2f}M | {r['l0']:.1f} | "
                   f"{100 * r['loss_recovered']:.1f}% / {100 * r['loss_recovered_mean']:.1f}% | {r['fvu']:.3f} | "
                   f"{r['dead']} | {r['ultralow']} ({r['ultralow_density']:.1e}) | {du} ({100 * du / n:.1f}%) | "
                   f"{r['train_act_per_s'] or 0:.0f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="paper2023,anthropic2024,topk,batchtopk",
                    help=f"comma-separated, of {', '.join(RUNS)}")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--tokens", type=int, default=1_000_000, help="training activations per run")
    ap.add_argument("--out", default="bench_recipes.jsonl")
    ap.add_argument("--table", action="store_true", help="only print the table of --out")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--diagnose", nargs="+", metavar="FOLDER", help="only diagnose these SAE folders")
    a = ap.parse_args()
    if a.diagnose:
        import torch
        with torch.no_grad():
            print("\n\n".join(diagnose(Path(f)) for f in a.diagnose))
        return
    out = Path(a.out)
    if not a.table:
        for name in a.runs.split(","):
            if name not in RUNS:
                raise SystemExit(f"unknown run {name!r}: choose among {', '.join(RUNS)}")
        for name in a.runs.split(","):
            row = run_one(name, a.preset, a.tokens, not a.no_progress)
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(table([row]), flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    print(table(rows))


if __name__ == "__main__":
    main()
