"""Execute notebooks top to bottom (headless) and measure wall time and peak memory."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from .store.artifacts import repo_root


def notebook_paths(folder: str | Path | None = None) -> list[Path]:
    folder = Path(folder) if folder else repo_root() / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def _tree_rss(pid: int) -> int:
    import psutil  # lazy: only to measure memory
    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def execute_notebook(path: str | Path, out: str | Path, preset: str | None = None,
                     timeout: int = 3600, env: dict | None = None) -> dict:
    """Run one notebook in a child process; returns wall time, peak RSS (process tree) and status."""
    path, out = Path(path).resolve(), Path(out).resolve()  # the child runs in the notebook folder
    out.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    if preset:
        child_env["MONO_PRESET"] = preset
    child_env.setdefault("PYTHONPATH", str(repo_root()))
    cmd = [sys.executable, "-m", "mono_utils.notebooks", str(path), str(out), str(timeout)]
    start = time.time()
    proc = subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=str(path.parent))
    peak = [0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.25)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    output, _ = proc.communicate()
    t.join()
    first = None
    marks = out.with_suffix(".first_picture")
    if marks.exists():  # written by the child: seconds from its start to the first picture
        first = float(marks.read_text())
        marks.unlink()
    return {"notebook": path.name, "ok": proc.returncode == 0, "seconds": time.time() - start,
            "peak_mb": peak[0] / 2**20, "first_picture_s": first,
            "log": output.decode("utf-8", "replace")[-4000:], "output": str(out)}


# What a person sees as a picture: a plot, a widget, an image or rendered HTML.
PICTURE_MIME = ("application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json",
                "image/png", "image/svg+xml", "text/html")


def is_picture(output: dict) -> bool:
    """A displayed plot, widget, image or HTML, not a progress bar."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return False
    data = output.get("data", {})
    if re.search(r"\d+%\|", str(data.get("text/plain", ""))):  # a tqdm bar is a widget too
        return False
    return any(m in data for m in PICTURE_MIME)


def _run_here(path: str, out: str, timeout: str) -> int:
    """Child-process entry: execute with nbclient, save the executed copy (even on error)."""
    import nbformat  # lazy: only to run notebooks
    from nbclient import NotebookClient  # lazy: only to run notebooks
    from nbclient.exceptions import CellExecutionError  # lazy: only to run notebooks
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    seen = []

    def on_cell_executed(cell, **_):
        if not seen and any(is_picture(o) for o in cell.get("outputs", [])):
            seen.append(time.time() - t0)
            Path(out).with_suffix(".first_picture").write_text(f"{seen[0]:.2f}")

    client = NotebookClient(nb, timeout=int(timeout), kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}},
                            on_cell_executed=on_cell_executed)
    code = 0
    try:
        client.execute()
    except CellExecutionError as e:
        print(str(e)[-3000:])
        code = 1
    finally:
        nbformat.write(nb, out)
    return code


def format_table(rows: list[dict]) -> str:
    lines = ["| notebook | status | wall time (s) | first picture (s) | peak memory (MB) |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        first = r.get("first_picture_s")
        lines.append(f"| {r['notebook']} | {'ok' if r['ok'] else 'FAILED'} | {r['seconds']:.0f} | "
                     f"{'-' if first is None else f'{first:.0f}'} | {r['peak_mb']:.0f} |")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"| **total** | | {total:.0f} | | {max((r['peak_mb'] for r in rows), default=0):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_run_here(*sys.argv[1:4]))
