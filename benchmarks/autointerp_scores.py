"""Every autointerp score of every live unit, timed: features, neurons, the randomized control and
the neurons at the features' density, with the offline backend (the build's cached result).

Prints the wall time of the scoring (all kinds, every score, logit test included), then the
median and bootstrap 95% interval of each score per kind, as a Markdown table (all units, then
multi-token units only). The target is <= 3 minutes on the default preset on 2 cores; the script
measures, it does not assert.

Usage: .venv/bin/python benchmarks/autointerp_scores.py [--preset default] [--artifacts DIR] [--cached]
(``--cached`` loads the stored result instead of recomputing it; ``--without-randomized`` leaves the
randomized control out, for a store that does not hold it yet.) The CPU time of this process is
printed beside the wall time: on a shared machine the wall time measures the neighbours too.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import time

from mono_utils.autointerp import run as R
from mono_utils.autointerp.scores import SCORES, score_summary
from mono_utils.pipeline.presets import get_preset
from mono_utils.store.artifacts import ArtifactStore


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--artifacts", default=None)
    ap.add_argument("--cached", action="store_true", help="load the stored scores instead of recomputing them")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--without-randomized", action="store_true", help="leave the randomized control out")
    a = ap.parse_args()
    p, s = get_preset(a.preset), ArtifactStore(a.artifacts)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    t0 = time.time()
    sources = R.with_density_control(R.preset_sources(p, s, randomized=not a.without_randomized, progress=False))
    loaded = time.time() - t0
    print(f"# autointerp, every score: preset {p.name}, {datetime.date.today()}, commit {commit}")
    print(f"sources loaded in {loaded:.1f} s; live units: "
          + ", ".join(f"{k} {len(src.units)}" for k, src in sources.items())
          + f" (neurons at the features' density: {sources['neuron_at_density'].density:.4f} of tokens)")
    t1, c1 = time.time(), time.process_time()
    results = R.cached_offline_scores(sources, R.default_n_units(p), 0, s, progress=False, force=not a.cached)
    wall, cpu = time.time() - t1, time.process_time() - c1
    per_kind = ", ".join(f"{k} {df.attrs.get('seconds', float('nan')):.1f} s" for k, df in results.items())
    print(f"scoring {'loaded' if a.cached else 'computed'} in {wall:.1f} s wall, {cpu:.1f} s CPU of this process "
          f"({per_kind}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for part in ("all", "multi_token"):
        long = score_summary(results, part=part, n_boot=a.n_boot)
        print(f"\n## {part.replace('_', '-')} units: median [bootstrap 95% interval], seed 0, {a.n_boot} resamples\n")
        print("| units | n | " + " | ".join(SCORES[k][0] for k in SCORES) + " |")
        print("|---|---:|" + "---:|" * len(SCORES))
        for kind, g in long.groupby("units", sort=False):
            g = g.set_index("score")
            cells = [f"{g.loc[k, 'median']:.2f} [{g.loc[k, 'low']:.2f}, {g.loc[k, 'high']:.2f}]" for k in SCORES]
            print(f"| {kind} | {int(g['n'].max())} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
