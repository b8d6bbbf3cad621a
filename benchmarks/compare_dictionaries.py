"""A/1 (the preset's recipe) against the paper's recipe at the same width and activations, on
every analysis that uses A/1: how the default's recipe was chosen (issue 16). A benchmark that
prints figures, not a test.

    .venv/bin/python benchmarks/compare_dictionaries.py [--preset default] [--artifacts DIR] [--no-b]

Per dictionary: the SAE's metrics and its wasted features by both readings (its own located
ultralow cluster, the paper's definition; and everything dead or below the paper recipe's
located cutoff), notebook 02's proxy wins, notebook 03's offline autointerp medians, notebook
04's universality (A against B: this trains B/1 of the paper's recipe, ~11 min on 2 cores,
unless ``--no-b``), and notebook 06's steering effect (share of generated tokens that the domain
proxy accepts with the domain's feature clamped at 10x its max activation, 8 seeds). The cached
analyses are read (built if missing); the paper recipe's steering catalog is scanned here.
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mono_utils.autointerp.run import get_offline_scores, summarize  # noqa: E402
from mono_utils.pipeline.models import get_model, get_tokenizer, get_tokens  # noqa: E402
from mono_utils.pipeline.presets import get_preset  # noqa: E402
from mono_utils.pipeline.saes import feature_density, get_paper_sae, get_sae, sae_metrics  # noqa: E402
from mono_utils.features.proxies import get_proxy_table, win_counts  # noqa: E402
from mono_utils.steering.catalog import demo_effects, get_feature_catalog  # noqa: E402
from mono_utils.store.artifacts import ArtifactStore  # noqa: E402
from mono_utils.universality.cache import get_comparison  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--artifacts", default=None)
    ap.add_argument("--no-b", action="store_true", help="skip universality (it needs B/1 of the paper's recipe)")
    a = ap.parse_args()
    p, s = get_preset(a.preset), ArtifactStore(a.artifacts)
    if p.sae_recipe == "paper2023":
        print(f"preset {p.name}: A/1 is the paper's recipe already; nothing to compare")
        return 1
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# A/1 ({p.sae_recipe}) against paper2023, preset {p.name}, store {s.root}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}\n")
    model, tok, data = get_model(p, s, which="A"), get_tokenizer(p, s), get_tokens(p, s)
    saes = {"A/1 " + p.sae_recipe: get_sae(p, s, which="A"), "paper2023": get_paper_sae(p, s, which="A")}
    cut = float(sae_metrics(saes["paper2023"])["ultralow_density"])
    rows = {name: {} for name in saes}
    for name, sae in saes.items():
        m, dens = sae_metrics(sae), feature_density(sae)
        r = rows[name]
        r["L0"] = f"{m['l0']:.1f}"
        r["loss recovered (zero / mean ablation)"] = f"{m['loss_recovered']:.1%} / {m['loss_recovered_mean']:.1%}"
        r["FVU"] = f"{m['fvu']:.3f}"
        r["dead; ultralow (own located cluster, the paper's definition)"] = (
            f"{m['dead']}; {m['ultralow']} ({(m['dead'] + m['ultralow']) / m['d_sae']:.1%} wasted)")
        r[f"dead or live below {cut:.2g} (paper2023's cutoff)"] = f"{float((dens < cut).float().mean()):.1%}"
    for name, dictionary in zip(saes, ("main", "paper2023")):
        wins = win_counts(get_proxy_table(p, s, dictionary=dictionary, progress=False)[0])
        rows[name]["proxies: labels where the best feature beats the best neuron"] = \
            ", ".join(f"{k} {v}" for k, v in wins.items())
    scores = get_offline_scores(p, s, progress=False)
    for name, kind in zip(saes, ("feature", "feature_paper2023")):
        sm = summarize(scores[kind])
        rows[name]["autointerp offline: units; headline / Pearson / detection / logit test; multi-token headline"] = (
            f"{sm['scored']}; " + " / ".join(f"{sm['all'].get('median_' + c, np.nan):.2f}" for c in
                                             ("spearman", "pearson", "detection", "logit_accuracy"))
            + f"; {sm['multi_token'].get('median_spearman', np.nan):.2f} ({sm['multi_token']['n']} units)")
    for kind in ("neuron", "randomized", "neuron_at_density"):
        sm = summarize(scores[kind])
        print(f"(autointerp {kind}: headline {sm['all'].get('median_spearman', np.nan):.2f}, "
              f"logit test {sm['all'].get('median_logit_accuracy', np.nan):.2f})")
    if not a.no_b:
        model_b = get_model(p, s, which="B")
        pairs = {"A/1 " + p.sae_recipe: (saes["A/1 " + p.sae_recipe], get_sae(p, s, which="B")),
                 "paper2023": (saes["paper2023"], get_paper_sae(p, s, which="B"))}
        for name, pair in pairs.items():
            u = get_comparison(p, s, progress=False, models=(model, model_b), saes=pair).metrics()["universality"]
            rows[name]["universality: median max activation correlation, live features vs neurons"] = (
                f"{u['median_max_corr_features']:.3f} ({u['features']['n_live_a']:,} live) vs "
                f"{u['median_max_corr_neurons']:.3f}")
    for name, sae in saes.items():
        cat = get_feature_catalog(p, s, model=model, sae=sae, tokenizer=tok, data=data, progress=False)
        eff = demo_effects(model, tok, sae, cat, seeds=range(8), multiples=(10.0,), headline=10.0)
        rows[name]["steering at 10x max: domain share baseline -> clamped (ratio)"] = "; ".join(
            f"{d} {e['baseline_share']:.2f} -> {e['steered_share']:.2f} ({e['ratio']:.1f}x)" for d, e in eff.items())
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print("| measure | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join(rows[n].get(k, "") for n in rows) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
