"""The paper preset's shapes end to end on a CPU: every build stage in its own process, timed,
with its peak memory (resident set size, from the kernel's accounting of that process).

    python benchmarks/paper_dry.py                      # preset paper-dry, store data/artifacts-paper-dry
    python benchmarks/paper_dry.py --preset smoke --artifacts /tmp/s
    python benchmarks/paper_dry.py --interrupt "SAE family A" --after 60   # kill that stage after 60 s, then resume

Prints one row per stage (seconds, peak MB) and the build's total. Each stage loads what earlier
stages stored, so a row's time and memory are that stage's own (plus loading its inputs). With
``--interrupt`` the named stage is killed mid-way (SIGKILL: no clean-up runs), and the build is
run again from the top: every stage already stored is loaded, the killed one resumes from its
checkpoint or starts over, and the script checks that nothing stored before the kill was rebuilt.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mono_utils.pipeline.presets import get_preset  # noqa: E402
from mono_utils.stages import build_stages  # noqa: E402
from mono_utils.store.artifacts import ArtifactStore  # noqa: E402


def run_stage(name: str, preset: str, artifacts: str, kill_after: float | None = None) -> dict:
    """One stage in a fresh process: {seconds, peak_mb, rc, killed}."""
    cmd = [sys.executable, "-m", "mono_utils", "build", "--preset", preset, "--artifacts", artifacts,
           "--stage", name]
    t = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = False
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read() if proc.stderr else ""
    rc = os.waitstatus_to_exitcode(status)
    if rc and not killed:
        sys.stderr.write(err[-4000:])
    return {"seconds": time.time() - t, "peak_mb": usage.ru_maxrss / 1024, "rc": rc, "killed": killed}


def stored(store: ArtifactStore) -> dict[str, float]:
    """Every stored artifact and cached result: {folder: its modification time}."""
    out = {}
    for kind in sorted(p for p in store.root.iterdir() if p.is_dir()) if store.root.exists() else []:
        for f in kind.iterdir():
            if f.is_dir() and not f.name.startswith("."):
                out[str(f.relative_to(store.root))] = f.stat().st_mtime
    return out


def leftovers(store: ArtifactStore, prefix: str) -> list[str]:
    """Hidden files a build leaves while under way: checkpoints (``.ckpt-``), unfinished folders (``.tmp-``)."""
    if not store.root.exists():
        return []
    return sorted(str(f.relative_to(store.root)) for f in store.root.glob(f"*/{prefix}*"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper-dry")
    ap.add_argument("--artifacts", default=None, help="store folder (default data/artifacts-<preset>)")
    ap.add_argument("--only", nargs="*", help="only these stages (exact names)")
    ap.add_argument("--interrupt", default=None, help="stage to kill mid-way, then resume the build")
    ap.add_argument("--after", type=float, default=30.0, help="seconds into --interrupt's stage to kill it")
    args = ap.parse_args(argv)
    artifacts = args.artifacts or str(ROOT / "data" / f"artifacts-{args.preset}")
    store = ArtifactStore(artifacts)
    names = [n for n, _ in build_stages(get_preset(args.preset), store)]
    if args.only:
        names = [n for n in names if n in args.only]
    print(f"preset {args.preset}, store {artifacts}, {os.cpu_count()} cores", flush=True)
    rows, ok = [], True
    for name in names:
        if name == args.interrupt:
            r = run_stage(name, args.preset, artifacts, kill_after=args.after)
            print(f"| {name} (killed after {args.after:.0f} s: {r['killed']}) | {r['seconds']:.0f} | "
                  f"{r['peak_mb']:.0f} |", flush=True)
            if not r["killed"]:
                print(f"note: {name} finished before {args.after:.0f} s; nothing was interrupted", flush=True)
            before = stored(store)
            print(f"left by the kill: checkpoints {leftovers(store, '.ckpt-') or 'none'}; "
                  f"unfinished folders {leftovers(store, '.tmp-') or 'none'}", flush=True)
            r = run_stage(name, args.preset, artifacts)
            after = stored(store)
            rebuilt = [k for k, t in before.items() if after.get(k) != t]
            print(f"| {name} (resumed) | {r['seconds']:.0f} | {r['peak_mb']:.0f} |", flush=True)
            left = leftovers(store, ".ckpt-") + leftovers(store, ".tmp-")
            print(f"stored before the kill and rebuilt on resuming: {rebuilt or 'none'}; "
                  f"left over after resuming: {left or 'none'}", flush=True)
            ok &= not rebuilt and not left and r["rc"] == 0
        else:
            r = run_stage(name, args.preset, artifacts)
            print(f"| {name} | {r['seconds']:.0f} | {r['peak_mb']:.0f} |" + ("" if r["rc"] == 0 else
                  f" FAILED (exit {r['rc']})"), flush=True)
        rows.append((name, r))
        if r["rc"]:
            ok = False
            break
    total = sum(r["seconds"] for _, r in rows)
    peak = max((r["peak_mb"] for _, r in rows), default=0)
    print(f"\n| total | {total:.0f} s ({total / 60:.1f} min) | peak {peak:.0f} MB |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
