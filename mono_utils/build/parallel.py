"""``build --jobs N``: independent build stages side by side, one process per stage.

Model A and model B, A's SAEs and B's, the indexes... do not depend on each other. On a
2-core machine two single-threaded processes finish them sooner than one process using two
threads for small matrices. Each stage is ``python -m mono_utils build --stage NAME`` with
its own log under ``runs/build-logs/``; the artifact store's locks make a shared dependency
safe, and the order below only ever starts a stage whose dependencies are built.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..core.malloc_tuning import MALLOC_TUNING
from ..store.artifacts import repo_root


def run_parallel(names: list[str], deps: dict, jobs: int, preset: str, store_root: Path) -> int:
    log_dir = repo_root() / "runs" / "build-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               MONO_ARTIFACTS=str(Path(store_root).resolve()))
    if os.environ.get("MONO_MALLOC_TUNING", "1") != "0":   # see mono_utils.malloc_tuning
        env.update({k: v for k, v in MALLOC_TUNING.items() if k not in os.environ})  # a user's own tuning wins
    pending = list(names)
    wanted = set(names)
    done: set[str] = set()
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    rows, failed, t_start = [], None, time.time()
    while pending or running:
        ready = [n for n in pending if all(d in done or d not in wanted for d in deps.get(n, ()))]
        while ready and len(running) < jobs and failed is None:
            name = ready.pop(0)
            pending.remove(name)
            log = open(log_dir / f"{name.replace('/', '-').replace(' ', '_')}.log", "w")
            cmd = [sys.executable, "-m", "mono_utils", "build", "--preset", preset, "--stage", name]
            print(f"== {name} ({preset}) started, log {log.name}", flush=True)
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time(), log)
        if failed is not None and not running:
            break
        time.sleep(0.5)
        for name, (proc, t0, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            sec = time.time() - t0
            if proc.returncode == 0:
                done.add(name)
                rows.append((name, sec))
                print(f"   {name} done in {sec:.0f}s", flush=True)
            else:
                failed = failed or name
                tail = Path(log.name).read_text(errors="replace").splitlines()[-15:]
                print(f"   {name} FAILED after {sec:.0f}s; last lines of {log.name}:\n" + "\n".join(tail), flush=True)
        if failed is None and pending and not running and not any(
                all(d in done or d not in wanted for d in deps.get(n, ())) for n in pending):
            raise RuntimeError(f"build stages {pending} wait on each other: check STAGE_DEPS")
    wall = time.time() - t_start
    print("\n| stage | seconds |\n|---|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.0f} |")
    print(f"| total wall time ({jobs} jobs, {threads} thread(s) each) | {wall:.0f} |")
    if failed is not None:
        print(f"error: stage {failed!r} failed (finished artifacts are kept; run the same command again to resume)",
              file=sys.stderr)
        return 1
    return 0
