"""What ``make run`` did, step by step: wall time, peak memory, exit status, commit and machine.

``python -m mono_utils.runrecord --record runs/<preset>/make-run.json --step build -- <command>`` runs a
command, echoes (and keeps) its output and adds the step to the record; ``mono_utils.report`` reads it
into ``docs/results.md``. Kept apart from the report so that timing a step loads neither torch nor the
lessons (it only runs and waits).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from .store.artifacts import atomic_output, repo_root


def machine() -> str:
    import torch  # lazy: only the report and `timed` need it
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem_s = f", {mem:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        mem_s = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores{mem_s}, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root or repo_root(),
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root or repo_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_timed(record: Path, step: str, cmd: list[str], log: Path | None = None) -> int:
    """Run ``cmd``, echo and keep its output, and add ``step`` (wall time, peak memory, exit status) to ``record``.

    Peak memory is the largest resident set of any process it waited for (``RUSAGE_CHILDREN``):
    what ``/usr/bin/time -v`` calls the maximum resident set size, without needing GNU time.
    The load average is sampled while it runs, so a time measured on a busy machine says so (the
    step's own processes count: a build of two jobs on an idle machine shows a load of about 2).
    """
    if not cmd:
        raise ValueError("timed: give the command after `--`, e.g. "
                         "`python -m mono_utils.runrecord --record R --step build -- make build`")
    record, started = Path(record), time.time()
    record.parent.mkdir(parents=True, exist_ok=True)
    loads: list[float] = []
    done = threading.Event()

    def sample_load():
        while not done.wait(10.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    sink = open(log, "w", encoding="utf-8") if log else None
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if sink:
                sink.write(line)
        rc = proc.wait()
    finally:
        done.set()
        if sink:
            sink.close()
    wall = time.time() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # KiB on Linux
    loads = loads or [os.getloadavg()[0]]
    data = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
    if step == "build" or "steps" not in data:   # a build starts a new record
        data = {"commit": git_commit(), "machine": machine(), "steps": {},
                "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds")}
    data["steps"][step] = {"seconds": round(wall, 1), "peak_mb": round(peak_kb / 1024), "exit": rc,
                           "load_mean": round(sum(loads) / len(loads), 2), "load_max": round(max(loads), 2),
                           "command": " ".join(cmd), "commit": git_commit()}
    with atomic_output(record) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1), encoding="utf-8")
    return rc


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m mono_utils.runrecord",
                                 description="run a command and record its wall time and peak memory (make run uses it)")
    ap.add_argument("--record", required=True, help="JSON file of steps (e.g. runs/default/make-run.json)")
    ap.add_argument("--step", required=True, help="the step's name; `build` starts a new record")
    ap.add_argument("--log", default=None, help="also keep the command's output in this file")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    return run_timed(Path(a.record), a.step, cmd, log=Path(a.log) if a.log else None)


if __name__ == "__main__":
    sys.exit(main())
