"""``build --jobs N``: independent build stages side by side, one process per stage.

Model A and model B, A's SAEs and B's, the indexes... do not depend on each other. On a
2-core machine two single-threaded processes finish them sooner than one process using two
threads for small matrices. Each stage is ``python -m mono_utils build --stage NAME`` with
its own log in ``<store>/build-logs/<preset>/`` (beside the artifacts it builds; two presets
built at once in one store keep separate logs); the artifact store's
locks make a shared dependency safe, and the order below only ever starts a stage whose
dependencies are built. The workers end with the parent: Ctrl-C or SIGTERM stops them, and on
Linux a SIGKILLed parent takes them along (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..core.malloc_tuning import MALLOC_TUNING
from ..store.artifacts import LOCAL_FOLDERS


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this worker when its parent dies (even by SIGKILL); also the apps' Voila."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_parallel(names: list[str], deps: dict, jobs: int, preset: str, store_root: Path) -> int:
    # <store>/build-logs/<preset>: the stage names are the same for every preset
    log_dir = Path(store_root) / LOCAL_FOLDERS[-1] / preset
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None  # SIGTERM, like Ctrl-C, stops the workers
    try:
        return _run(names, deps, jobs, preset, store_root, log_dir, running)
    finally:
        if main:
            signal.signal(signal.SIGTERM, old)
        for proc, _, log in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _, log in running.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def _run(names, deps, jobs, preset, store_root, log_dir, running) -> int:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               MONO_ARTIFACTS=str(Path(store_root).resolve()))
    if os.environ.get("MONO_MALLOC_TUNING", "1") != "0":   # see mono_utils.malloc_tuning
        env.update({k: v for k, v in MALLOC_TUNING.items() if k not in os.environ})  # a user's own tuning wins
    pending = list(names)
    wanted = set(names)
    done: set[str] = set()
    rows, failed, t_start = [], None, time.time()
    while pending or running:
        ready = [n for n in pending if all(d in done or d not in wanted for d in deps.get(n, ()))]
        while ready and len(running) < jobs and failed is None:
            name = ready.pop(0)
            pending.remove(name)
            log = open(log_dir / f"{name.replace('/', '-').replace(' ', '_')}.log", "w")
            cmd = [sys.executable, "-m", "mono_utils", "build", "--preset", preset, "--stage", name]
            print(f"== {name} ({preset}) started, log {log.name}", flush=True)
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                              preexec_fn=die_with_parent if sys.platform == "linux" else None),
                             time.time(), log)
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
