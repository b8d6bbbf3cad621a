"""Execute notebooks top to bottom (headless) and measure wall time and peak memory.

Two limits stop a stalled run with a message that names the notebook and the cell: ``timeout``
seconds per cell (nbclient's) and ``total_timeout`` seconds per notebook (the whole process tree
is stopped, after a note of what it was doing: CPU use, lock files and network connections open).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from .store.artifacts import repo_root


def notebook_paths(folder: str | Path | None = None) -> list[Path]:
    """The lessons in course order: by name, so 00_intro_superposition (no build) runs and is timed before
    00_model (tests/test_notebooks.py checks JupyterLab's file browser agrees)."""
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


def _processes(pid: int) -> list:
    import psutil  # lazy: only to watch a run
    try:
        proc = psutil.Process(pid)
        return [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stall_report(pid: int, sample_s: float = 2.0) -> str:
    """What the process tree of ``pid`` is doing: per process its CPU use over ``sample_s`` seconds,
    the lock files it holds open (a build waiting on another's lock) and its remote connections (a
    call to a network or LLM endpoint that does not answer)."""
    import psutil  # lazy: only to watch a run
    procs = _processes(pid)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(sample_s)
    lines = []
    for p in procs:
        try:
            with p.oneshot():
                cmd = " ".join(p.cmdline()[1:4])[:80]
                cpu = p.cpu_percent(None)
                locks = [f.path for f in p.open_files() if Path(f.path).name.startswith(".lock")]
                remote = [f"{c.raddr.ip}:{c.raddr.port} ({c.status})" for c in p.net_connections("inet")
                          if c.raddr and c.raddr.ip not in ("127.0.0.1", "::1")]
        except psutil.Error:
            continue
        what = "idle (waiting)" if cpu < 5 else f"busy ({cpu:.0f}% CPU)"
        lines.append(f"  pid {p.pid} [{cmd}]: {what}" + (f"; lock files open: {', '.join(locks)}" if locks else "")
                     + (f"; connections: {', '.join(remote[:4])}" if remote else ""))
    return "\n".join(lines)


def _kill_tree(pid: int) -> None:
    import psutil  # lazy: only to watch a run
    procs = _processes(pid)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def _where(marker: Path) -> str:
    """The cell the child was running, from the marker it writes as each cell starts."""
    try:
        index, _, first = marker.read_text(encoding="utf-8").partition("\t")
        return f"cell {index} ({first.strip()[:80]!r})"
    except OSError:
        return "before the first cell (starting the kernel)"


def execute_notebook(path: str | Path, out: str | Path, preset: str | None = None,
                     timeout: int = 3600, env: dict | None = None, total_timeout: float | None = None) -> dict:
    """Run one notebook in a child process; returns wall time, peak RSS (process tree) and status.

    ``timeout``: seconds a cell may run; ``total_timeout``: seconds the whole notebook may run (None:
    no limit). Past either the run fails, and ``log`` starts with the notebook, the cell and the limit;
    past ``total_timeout`` also with what each process was doing (:func:`stall_report`)."""
    path, out = Path(path).resolve(), Path(out).resolve()  # the child runs in the notebook folder
    out.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    if preset:
        child_env["MONO_PRESET"] = preset
    child_env.setdefault("PYTHONPATH", str(repo_root()))
    cmd = [sys.executable, "-m", "mono_utils.notebooks", str(path), str(out), str(timeout)]
    start = time.time()
    marker = out.with_suffix(".cell")
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=str(path.parent))
    peak = [0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.25)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    stalled = None
    try:
        output, _ = proc.communicate(timeout=total_timeout)
    except subprocess.TimeoutExpired:
        stalled = (f"{path.name} did not finish within {total_timeout:g} s (the per-notebook limit): stopped at "
                   f"{_where(marker)}; what it was doing:\n{stall_report(proc.pid)}\n")
        _kill_tree(proc.pid)
        output, _ = proc.communicate()
    t.join()
    marker.unlink(missing_ok=True)
    first = None
    marks = out.with_suffix(".first_picture")
    if marks.exists():  # written by the child: seconds from its start to the first picture
        first = float(marks.read_text())
        marks.unlink()
    log = output.decode("utf-8", "replace")[-4000:]
    return {"notebook": path.name, "ok": proc.returncode == 0 and stalled is None, "seconds": time.time() - start,
            "peak_mb": peak[0] / 2**20, "first_picture_s": first, "log": (stalled or "") + log,
            "output": str(out), "stalled": stalled}


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


# Run in the kernel after the last cell: the final state of every live widget, for static copies.
WIDGET_SNAPSHOT = r"""
def _mono_widget_snapshot():
    import json
    try:
        import ipywidgets
    except ImportError:
        return {}
    inst = getattr(ipywidgets.widgets.widget, "_instances", None) or getattr(ipywidgets.Widget, "widgets", {})
    out = {}
    for mid, w in list(inst.items()):
        rec = {"name": type(w).__name__}
        if hasattr(w, "to_plotly_json") and hasattr(w, "batch_update"):   # a plotly FigureWidget
            import plotly.io as pio
            rec["figure"] = json.loads(pio.to_json(w, validate=False))
        elif isinstance(w, ipywidgets.Output):
            rec["outputs"] = [dict(o) for o in w.outputs]
        elif isinstance(w, ipywidgets.HTML):
            rec["html"] = w.value
        kids = [c.model_id for c in getattr(w, "children", ()) or () if getattr(c, "model_id", None)]
        if kids:
            rec["children"] = kids
        out[mid] = rec
    return out
print("__MONO_WIDGETS__" + __import__("json").dumps(_mono_widget_snapshot()))
del _mono_widget_snapshot
"""
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
_PROGRESS = re.compile(r"\d+%\|")


def _snapshot(client, index: int) -> dict:
    """Execute WIDGET_SNAPSHOT in the notebook's kernel (a cell outside the notebook)."""
    import nbformat  # lazy: only to run notebooks
    cell = nbformat.v4.new_code_cell(WIDGET_SNAPSHOT)
    client.nb.cells.append(cell)          # nbclient looks cells up by index
    try:
        client.execute_cell(cell, index, store_history=False)
    except Exception as e:  # noqa: BLE001 - a failed snapshot leaves the copy as it was, never fails the run
        print(f"widget snapshot failed: {e}")
        return {}
    finally:
        client.nb.cells.remove(cell)
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    for line in text.splitlines():
        if line.startswith("__MONO_WIDGETS__"):
            return json.loads(line[len("__MONO_WIDGETS__"):])
    return {}


def _static_parts(model_id: str, snap: dict, seen: set | None = None) -> list[dict]:
    """The figures, HTML and outputs inside a widget, depth first, as plain outputs."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in snap:
        return []
    seen.add(model_id)
    rec, parts = snap[model_id], []
    meta = {"mono_static_fallback": True}
    if "figure" in rec:
        title = ((rec["figure"].get("layout") or {}).get("title") or {})
        title = title.get("text") if isinstance(title, dict) else title
        parts.append({"output_type": "display_data", "metadata": meta,
                      "data": {PLOTLY_MIME: rec["figure"],
                               "text/plain": [f"plotly figure{': ' + str(title) if title else ''} "
                                              f"(the widget's final state)"]}})
    if rec.get("html"):
        parts.append({"output_type": "display_data", "metadata": meta,
                      "data": {"text/html": [rec["html"]], "text/plain": [f"<{rec['name']}>"]}})
    for o in rec.get("outputs", []):
        if o.get("output_type") in ("display_data", "execute_result", "stream"):
            o = dict(o)
            if o.get("output_type") == "execute_result":
                o = {"output_type": "display_data", "data": o.get("data", {}), "metadata": meta}
            parts.append(o)
    for kid in rec.get("children", []):
        parts += _static_parts(kid, snap, seen)
    return parts


def add_static_fallbacks(nb, snap: dict) -> int:
    """Give every widget output of an executed notebook a static fallback; returns how many were given one.

    A FigureWidget becomes its final figure (a plain plotly output). Any other widget keeps its view,
    with a one-line text/plain (not a page-long repr) and static copies of the figures, HTML and
    outputs inside it after it. Progress bars are left alone.
    """
    import nbformat  # lazy: only to run notebooks
    done = 0
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        new = []
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            view = data.get(WIDGET_MIME)
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if not view or _PROGRESS.search(text) or view.get("model_id") not in snap:
                new.append(o)
                continue
            mid = view["model_id"]
            rec = snap[mid]
            parts = _static_parts(mid, snap)
            if "figure" in rec:
                new.append(nbformat.from_dict({"output_type": "display_data", **{k: v for k, v in parts[0].items()
                                                                                  if k != "output_type"}}))
            else:
                o = nbformat.from_dict(dict(o))
                o["data"]["text/plain"] = (f"{rec['name']}: an interactive widget (run the notebook to use it)"
                                           + ("; static copies of what it showed follow" if parts else ""))
                new.append(o)
                new += [nbformat.from_dict(p) for p in parts]
            done += 1
        cell["outputs"] = new
    return done


def prune_widget_state(nb) -> int:
    """Drop saved widget states no output can reach any more (e.g. a FigureWidget, with its plotly.js
    bundle of ~5 MB, once its output became a static figure); returns how many were dropped."""
    key = "application/vnd.jupyter.widget-state+json"
    state = nb.get("metadata", {}).get("widgets", {}).get(key, {}).get("state")
    if not state:
        return 0
    todo = [o["data"][WIDGET_MIME].get("model_id") for c in nb.cells if c.get("cell_type") == "code"
            for o in c.get("outputs", []) if WIDGET_MIME in o.get("data", {})]
    keep = set()
    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state:
            continue
        keep.add(mid)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid].get("state", {})))
    drop = [m for m in state if m not in keep]
    for m in drop:
        del state[m]
    return len(drop)


def add_figure_html(nb) -> int:
    """Give every plotly output a ``text/html`` twin that draws it outside Jupyter (nbconvert, GitHub's
    viewer shows the JSON as nothing); returns how many were given one. Jupyter still draws the JSON:
    its plotly renderer ranks above HTML. The twin loads ``plotly.min.js`` from beside the page (see
    ``core.plots.figure_html``); ``python -m mono_utils.html_export`` inlines it once per page."""
    from .core.plots import figure_html  # lazy: plotly costs the CLI 0.7 s at start (see cli.py)
    done = 0
    for ci, cell in enumerate(nb.cells):
        for oi, o in enumerate(cell.get("outputs", []) if cell.get("cell_type") == "code" else []):
            data = o.get("data", {})
            if PLOTLY_MIME in data and "text/html" not in data:
                data["text/html"] = [figure_html(data[PLOTLY_MIME], div_id=f"mono-plotly-c{ci}-o{oi}")]
                done += 1
    return done


def shrink_widget_state(nb, max_model_bytes: int = 200_000) -> list[str]:
    """Drop saved widget models bigger than ``max_model_bytes`` and every reference to them; returns the
    dropped model names. A FigureWidget's model carries plotly.js (~5 MB of ``_esm``) and its static copy
    follows it in the outputs; without its model, a container's saved view shows the rest."""
    key = "application/vnd.jupyter.widget-state+json"
    state = nb.get("metadata", {}).get("widgets", {}).get(key, {}).get("state")
    if not state:
        return []
    big = {m for m, rec in state.items() if len(json.dumps(rec)) > max_model_bytes}
    dropped = [state.pop(m).get("model_name", "?") for m in sorted(big)]
    refs = {f"IPY_MODEL_{m}" for m in big}
    for rec in state.values():
        for k, v in list(rec.get("state", {}).items()):
            if isinstance(v, list) and any(x in refs for x in v if isinstance(x, str)):
                rec["state"][k] = [x for x in v if not (isinstance(x, str) and x in refs)]
            elif isinstance(v, str) and v in refs:
                rec["state"][k] = None
    return dropped


SHELL_POLL_STEP_S = 5.0


def _poll_shell_in_steps(channel, step: float = SHELL_POLL_STEP_S) -> None:
    """Make ``channel.get_msg(timeout)`` poll in steps of ``step`` seconds up to ``timeout``.

    Why (issue 25's stall): nbclient waits for a cell's ``execute_reply`` with one poll of the shell
    socket for the whole cell limit. Notebook 03 on smoke once sat ~15 minutes (the 900 s limit) with
    both the client and the kernel idle in ``epoll_wait``, then finished and passed: the reply had
    arrived, the wake-up for it had not, and the poll's final check at its timeout found it. zmq's
    socket descriptor is edge-triggered, so a notification can be consumed without the waiting poll
    seeing it; widget traffic in the same cell makes that likelier (nbclient issue 312 reports the same
    block with ipywidgets). A new poll checks the queue first, so re-polling every few seconds turns a
    missed wake-up into at most ``step`` seconds of delay; a real stall still ends at the cell limit."""
    from queue import Empty   # lazy, with the rest of the notebook runner
    inner = channel.get_msg

    async def get_msg(timeout=None):
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            wait = step if deadline is None else max(0.0, min(step, deadline - time.monotonic()))
            try:
                return await inner(timeout=wait)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg


def _run_here(path: str, out: str, timeout: str) -> int:
    """Child-process entry: execute with nbclient, save the executed copy (even on error) with a static
    fallback for every widget output."""
    import nbformat  # lazy: only to run notebooks
    from nbclient import NotebookClient  # lazy: only to run notebooks
    from .core.plots import copy_plotly_js  # lazy: as in add_figure_html
    from nbclient.exceptions import CellExecutionError, CellTimeoutError  # lazy: only to run notebooks
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    seen = []
    marker = Path(out).with_suffix(".cell")

    def on_cell_start(cell, cell_index, **_):   # where a stalled run was, for the parent's message
        first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
        marker.write_text(f"{cell_index}\t{first}", encoding="utf-8")

    def on_cell_executed(cell, **_):
        if not seen and any(is_picture(o) for o in cell.get("outputs", [])):
            seen.append(time.time() - t0)
            Path(out).with_suffix(".first_picture").write_text(f"{seen[0]:.2f}")

    client = NotebookClient(nb, timeout=int(timeout), kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}},
                            on_cell_executed=on_cell_executed, on_cell_start=on_cell_start)
    code = 0
    try:
        with client.setup_kernel():
            _poll_shell_in_steps(client.kc.shell_channel)
            info = client.wait_for_reply(client.kc.kernel_info())
            if info is not None and "language_info" in info["content"]:
                nb.metadata["language_info"] = info["content"]["language_info"]
            try:
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            except CellExecutionError as e:
                print(str(e)[-3000:])
                code = 1
            except CellTimeoutError:
                first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                print(f"{Path(path).name}: cell {index} ({first.strip()[:80]!r}) ran longer than {timeout} s (the "
                      f"per-cell limit) and was stopped: it is stalled or needs a larger limit (--timeout)")
                with contextlib.suppress(Exception):   # what the kernel was doing, as for the per-notebook limit
                    print("what the kernel was doing:\n" + stall_report(int(client.km.provisioner.pid)))
                code = 2   # the kernel is still busy: no snapshot cell after it
            if code != 2:
                add_static_fallbacks(nb, _snapshot(client, len(nb.cells)))
            client.set_widgets_metadata()
            prune_widget_state(nb)
            shrink_widget_state(nb)
    finally:
        add_figure_html(nb)
        copy_plotly_js(Path(out).parent)   # what the figures' HTML loads when the copy is converted beside it
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
