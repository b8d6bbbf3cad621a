"""The README's results table, read from a built store: every figure it quotes, with where it came from.

Loads what the build made (nothing is built: a missing artifact stops the script and names the
stage to build) and prints Markdown rows in the README's order: the models, A/1, B/1, the TopK
twin, the paper's recipe at A/1's width, the recipes at matched tokens, the lambda sweep, the family and its splitting links, universality, the proxies, and the
autointerp medians (the offline backend's cached result; intervals: `benchmarks/autointerp_scores.py`).
A quoted figure that disagrees with this output is stale.

Usage: .venv/bin/python benchmarks/results_table.py [--preset default] [--artifacts DIR]
"""
from __future__ import annotations

import argparse
import datetime
import subprocess

import numpy as np

from mono_utils.atlas.site import NotBuilt, ReadOnlyStore
from mono_utils.autointerp.run import get_offline_scores, summarize
from mono_utils.pipeline.models import get_model, model_metrics
from mono_utils.pipeline.presets import get_preset
from mono_utils.pipeline.saes import (get_lambda_sweep, get_paper_sae, get_recipe_runs, get_sae, get_sae_family,
                                  get_topk_sae, sae_metrics)
from mono_utils.features.proxies import get_proxy_table, win_counts
from mono_utils.splitting.family import get_family_analysis
from mono_utils.store.artifacts import ArtifactStore
from mono_utils.universality.cache import get_comparison

NAMED = ("dna", "base64", "hebrew", "arabic")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def sae_row(m: dict) -> str:
    return (f"L0 {m['l0']:.1f}, loss recovered {pct(m['loss_recovered'])} / {pct(m['loss_recovered_mean'])}, "
            f"FVU {m['fvu']:.3f}, KL {m['kl_sae']:.2f}, dead {m['dead']} ({pct(m['dead_frac'])}), "
            f"ultralow {m['ultralow']} ({pct(m['ultralow_frac'])}), "
            f"{m['train_tokens']:,} activations")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--artifacts", default=None)
    a = ap.parse_args()
    p, s = get_preset(a.preset), ReadOnlyStore(ArtifactStore(a.artifacts))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# results on preset {p.name}, read from {s.root} on {datetime.date.today()}, code at commit {commit}\n")
    try:
        rows = list(table_rows(p, s))
    except NotBuilt as e:
        print(f"not built: {e}. Build it first: python -m mono_utils build --preset {p.name}")
        return 1
    print("| what | ours |\n|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")
    return 0


def table_rows(p, s):
    models = {w: get_model(p, s, which=w, progress=False) for w in "AB"}
    mm = {w: model_metrics(m) for w, m in models.items()}
    yield ("model A / B validation loss (nats/token)",
           f"{mm['A']['val_loss']:.3f} / {mm['B']['val_loss']:.3f} ({mm['A']['train_tokens']:,} training tokens)")

    a1 = sae_metrics(get_sae(p, s, which="A", progress=False))
    b1 = sae_metrics(get_sae(p, s, which="B", progress=False))
    setting = f"k {p.topk_k}" if p.sae_recipe in ("topk", "batchtopk") else f"λ {p.l1_coeff:g}"
    yield (f"A/1 ({p.sae_recipe}, {p.sae_main:,} features, {setting})", sae_row(a1))
    yield ("A/1 dead on the loss tokens alone; ultralow cutoff",
           f"{a1['dead_on_eval_tokens']}; {a1['ultralow_density']:.2g}")
    yield ("B/1", sae_row(b1))
    if p.sae_recipe != "paper2023":
        yield (f"A/1 paper2023 (λ {p.l1_coeff:g})",
               sae_row(sae_metrics(get_paper_sae(p, s, which="A", progress=False))))
    yield ("A/1 TopK", sae_row(sae_metrics(get_topk_sae(p, s, which="A", progress=False))))
    for name, sae in get_recipe_runs(p, s, which="A", progress=False).items():
        m = sae_metrics(sae)
        yield (f"recipe {name} (notebook 01, matched tokens), dead + ultralow share "
               f"{pct((m['dead'] + m['ultralow']) / m['d_sae'])}", sae_row(m))
    for mult, sae in get_lambda_sweep(p, s, which="A", progress=False).items():
        yield (f"λ × {mult:g}", sae_row(sae_metrics(sae)))
    family = get_sae_family(p, s, which="A", progress=False)
    for n, sae in sorted(family.items()):
        yield (f"family {n:,}", sae_row(sae_metrics(sae)))

    fam = get_family_analysis(p, s, progress=False)
    summ = fam.graph.summary()
    links = [(k, v) for k, v in summ.items() if "->" in k]
    yield ("feature splitting: share of live features linked to a parent; parents that split",
           "; ".join(f"{k}: {v['linked_frac']:.2f}, {v['parents_that_split']}" for k, v in links))

    res = get_comparison(p, s, progress=False)
    u = res.metrics()["universality"]
    yield ("universality: median max activation correlation, live A/1 features vs neurons",
           f"{u['median_max_corr_features']:.3f} ({u['features']['n_live_a']:,} live) vs "
           f"{u['median_max_corr_neurons']:.3f} (gap {u['gap']:.2f}), {u['features']['n_tokens']:,} tokens")
    yield ("universality: median logit-weight / attribution similarity of matched features",
           f"{u['median_logit_sim_features']:.2f} / {u['median_attribution_sim_features']:.2f}")
    named = res.named_matches([f"subdomain:{n}" for n in NAMED if f"subdomain:{n}" in res.label_names])
    yield ("matched named features A ↔ B (activation correlation)",
           ", ".join(f"{r.label} {r.activation_corr:.2f}" for r in named.itertuples()))

    for dictionary in ("main", "paper2023") if p.sae_recipe != "paper2023" else ("main",):
        table, _ = get_proxy_table(p, s, dictionary=dictionary, progress=False)
        wins = win_counts(table)
        yield (f"proxies ({'A/1' if dictionary == 'main' else 'A/1 paper2023'}): labels where the best feature "
               f"beats the best neuron", ", ".join(f"{k} {v}" for k, v in wins.items()))
        if dictionary == "main":
            for proxy in ("dna", "base64", "hebrew", "arabic"):
                sub = table[table.proxy.str.lower() == proxy]
                if len(sub):
                    by = {r.kind: r for r in sub.itertuples()}
                    yield (f"proxy {proxy}: Pearson / specificity when on, feature vs neuron",
                           f"{by['feature'].pearson:.2f} / {by['feature'].specificity:.2f} vs "
                           f"{by['neuron'].pearson:.2f} / {by['neuron'].specificity:.2f}")

    scores = get_offline_scores(p, s, progress=False)
    for kind, df in scores.items():
        sm = summarize(df)
        al, mt = sm["all"], sm["multi_token"]
        yield (f"autointerp offline, {kind}: scored units; medians headline / raw / unweighted / Pearson / "
               f"detection / logit test; multi-token headline",
               f"{sm['scored']} ({mt['n']} multi-token): " + " / ".join(
                   f"{al.get('median_' + c, np.nan):.2f}" for c in
                   ("spearman", "spearman_raw", "spearman_unweighted", "pearson", "detection", "logit_accuracy"))
               + f"; {mt.get('median_spearman', np.nan):.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
