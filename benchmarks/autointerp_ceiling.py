"""How far can any token-lookup simulator go? A ceiling for the offline autointerp backend.

For a random sample of live A/1 features and A's neurons, the simulator is replaced by an
*oracle* that predicts each token's activation as the unit's mean activation on that token
(or on that (previous, current) token pair, or on that token within the text's corpus label)
over the whole activation index. The held-out
examples and the importance-weighted Spearman are the protocol's own (``select_examples``,
``score_simulation``). The oracle reads the test rows' statistics, so it is a ceiling, never
a method.

If the token oracle scores neurons far above features, the reason is visible: in a
one-layer model a neuron is close to a function of the current token, while features depend
on context. Then no explanation that only lists tokens can make features beat neurons; the
paper's gap comes from explanations that must be succinct (an LLM cannot list a neuron's
hundred tokens), which the offline baseline does not model.

Usage: .venv/bin/python benchmarks/autointerp_ceiling.py [--units 100] [--preset default]
"""
from __future__ import annotations

import argparse
import time


def main() -> int:
    from mono_utils.autointerp import run as R
    from mono_utils.autointerp.experiments import ceiling_table
    from mono_utils.store.artifacts import ArtifactStore
    from mono_utils.pipeline.presets import get_preset
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--artifacts", default=None)
    a = ap.parse_args()
    p, s = get_preset(a.preset), ArtifactStore(a.artifacts)
    t0 = time.time()
    sources = R.preset_sources(p, s, randomized=False, paper=False, progress=False)
    offline = R.get_offline_scores(p, s, progress=False)
    print(f"# autointerp ceiling: {a.units} live units per kind, preset {p.name} (loaded in {time.time() - t0:.0f} s)")
    table = ceiling_table(sources, offline, n_units=a.units, seed=1)
    print("| units | " + " | ".join(table.columns) + " |")
    print("|---|" + "---:|" * len(table.columns))
    for name, row in table.iterrows():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
