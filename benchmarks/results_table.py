"""The results table alone, printed from a built store (the rows of ``docs/results.md``'s last table).

``python -m mono_utils report`` writes the whole file (``make results``); this prints just the
model and dictionary rows, for a quick look at a store without touching ``docs/``.

Usage: .venv/bin/python benchmarks/results_table.py [--preset default] [--artifacts DIR]
"""
from __future__ import annotations

import argparse
import datetime

from mono_utils.atlas.site import NotBuilt, ReadOnlyStore
from mono_utils.pipeline.presets import get_preset
from mono_utils.report import results_rows
from mono_utils.runrecord import git_commit
from mono_utils.store.artifacts import ArtifactStore


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--artifacts", default=None)
    a = ap.parse_args()
    p, s = get_preset(a.preset), ReadOnlyStore(ArtifactStore(a.artifacts))
    print(f"# results on preset {p.name}, read from {s.root} on {datetime.date.today()}, code at commit {git_commit()}\n")
    try:
        rows = list(results_rows(p, s))
    except NotBuilt as e:
        print(f"not built: {e}. Build it first: python -m mono_utils build --preset {p.name}")
        return 1
    print("| what | ours |\n|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
