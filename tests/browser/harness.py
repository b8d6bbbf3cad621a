"""Real-browser test harness: JupyterLab (or Voila) in headless Chromium, driven by Playwright.

What it gives the tests in this folder (fixtures are re-exported by ``conftest.py``):

- ``lab``: a JupyterLab server on 127.0.0.1 serving a temporary copy of ``notebooks/``, with
  fresh ``JUPYTER_*`` folders, no token, ``windowingMode: none`` (every cell in the DOM), no
  news/update checks, and a kernel environment of ``MONO_PRESET=smoke`` and ``MONO_ARTIFACTS``
  pointing at the smoke artifact store (``$MONO_TEST_ARTIFACTS`` to reuse one across runs).
- ``browser_context``: Chromium (``/usr/bin/chromium``, never ``playwright install``) in which
  every request that does not go to localhost is recorded and aborted.
- ``lab_page``: a :class:`LabPage` with the helpers a test needs: open a notebook, Run All and
  wait until every code cell ran (or one failed), assert no error output, find widgets by CSS
  class, drag a slider with the real mouse, wait for an output to change or match, check that
  plotly and circuitsvis rendered, assert nothing left localhost, save screenshots into
  ``tests/screenshots/`` (git-ignored).

Without Chromium the tests are skipped locally with a reason; under ``CI=true`` they fail.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "tests" / "screenshots"
CHROMIUM = os.environ.get("MONO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
RATER = "browser-test"  # the rating form's rater in the kernels (data/ratings/browser-test.csv)
INSTALL_HINT = "install it with: apt-get install -y chromium chromium-driver"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_browser() -> None:
    """Skip (locally) or fail (in CI) when the browser stack is missing."""
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append(f"Chromium not found at {CHROMIUM} ({INSTALL_HINT}; or set MONO_CHROMIUM)")
    for mod in ("playwright.sync_api", "jupyterlab"):
        try:
            __import__(mod)
        except ImportError:
            problems.append(f"python package {mod.split('.')[0]} is missing (pip install -r requirements.txt)")
    if problems:
        msg = "browser tests need: " + "; ".join(problems)
        if in_ci():
            pytest.fail(msg + " -- CI=true, so this is an error, not a skip", pytrace=False)
        pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered:\n{tail}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s:\n{tail}")


def kernel_env(artifacts: Path, preset: str = "smoke") -> dict:
    env = dict(os.environ)
    env.update({"MONO_PRESET": preset, "MONO_ARTIFACTS": str(artifacts), "MONO_RATER": RATER,
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "TQDM_DISABLE": env.get("TQDM_DISABLE", "0")})
    env.pop("JUPYTER_PLATFORM_DIRS", None)
    return env


def prepare_notebook_copy(src: Path, dst: Path) -> None:
    """Copy a notebook, stripped of outputs, with the venv's python3 kernelspec (no picker dialog)."""
    import nbformat
    nb = nbformat.read(src, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("widgets", None)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)


class Server:
    """A JupyterLab or Voila subprocess with its own process group and log file."""

    def __init__(self, cmd: list[str], env: dict, cwd: Path, url: str, log: Path, ready_path: str):
        self.cmd, self.env, self.cwd, self.url, self.log = cmd, env, cwd, url.rstrip("/"), log
        self.ready_path = ready_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "Server":
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=self._logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + self.ready_path, timeout, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(Exception):
            self._logf.close()

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class LabServer(Server):
    def __init__(self, root: Path, artifacts: Path, notebooks: Path | None = REPO / "notebooks"):
        self.root = root
        (root / "notebooks").mkdir(parents=True, exist_ok=True)
        if notebooks is not None and notebooks.exists():
            for nb in sorted(notebooks.glob("*.ipynb")):
                prepare_notebook_copy(nb, root / "notebooks" / nb.name)
        cfg = root / ".jupyter"
        dirs = {"JUPYTER_CONFIG_DIR": cfg / "config", "JUPYTER_RUNTIME_DIR": cfg / "runtime",
                "JUPYTERLAB_SETTINGS_DIR": cfg / "settings", "JUPYTERLAB_WORKSPACES_DIR": cfg / "workspaces"}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        settings = dirs["JUPYTERLAB_SETTINGS_DIR"]
        _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False})
        _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                    {"windowingMode": "none"})
        _write_json(settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings",
                    {"autosave": False})
        env = kernel_env(artifacts)
        env.update({k: str(v) for k, v in dirs.items()})
        port = free_port()
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=",
               "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}",
               "--ServerApp.open_browser=False"]
        super().__init__(cmd, env, root, f"http://127.0.0.1:{port}", root / "jupyterlab.log", "/api/status")

    def add_notebook(self, name: str, nb) -> str:
        """Write an nbformat notebook into the served folder; returns its path for :meth:`LabPage.open`."""
        import nbformat
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, self.root / "notebooks" / name)
        return name

    def shutdown_kernels(self) -> None:
        with contextlib.suppress(Exception):
            with urllib.request.urlopen(self.url + "/api/sessions", timeout=5) as r:
                sessions = json.loads(r.read())
            for s in sessions:
                req = urllib.request.Request(f"{self.url}/api/sessions/{s['id']}", method="DELETE")
                urllib.request.urlopen(req, timeout=10).close()


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# ---------------------------------------------------------------- browser side
class RequestLog:
    """Every request the browser made; the ones that left localhost were aborted."""

    def __init__(self):
        self.local: list[str] = []
        self.external: list[str] = []

    def handle(self, route) -> None:
        url = route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in LOCAL_HOSTS:
            self.external.append(url)
            route.abort()
        else:
            self.local.append(url)
            route.continue_()

    def on_websocket(self, ws) -> None:
        host = urlparse(ws.url).hostname
        (self.local if host in LOCAL_HOSTS else self.external).append(ws.url)


JS_NOTEBOOK_STATE = """
() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  if (!w || !w.content || !w.content.model || !w.sessionContext) return null;
  const sc = w.sessionContext;
  const kernel = sc.session && sc.session.kernel;
  const cells = w.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    const errors = [];
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j);
      if (o.type === 'error') {
        const j2 = o.toJSON();
        errors.push({ename: j2.ename, evalue: j2.evalue, traceback: (j2.traceback || []).join('\\n')});
      }
    }
    out.push({index: i, count: c.executionCount, empty: c.sharedModel.getSource().trim() === '',
              errors: errors, source: c.sharedModel.getSource().slice(0, 200)});
  }
  return {ready: !!(w.context && w.context.isReady && sc.isReady),
          kernel: kernel ? kernel.status : null, busy: sc.kernelDisplayStatus, cells: out};
}
"""

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LabPage:
    """A Playwright page on a JupyterLab server, with notebook- and widget-level helpers."""

    def __init__(self, page, server: Server, requests: RequestLog, name: str = "page"):
        self.page, self.server, self.requests, self.name = page, server, requests, name

    # ------------------------------------------------ notebooks
    def open(self, notebook: str, timeout: float = 120) -> "LabPage":
        """Open ``notebooks/<notebook>`` and wait for its kernel to be idle."""
        self.notebook = notebook
        self.page.goto(f"{self.server.url}/lab/tree/notebooks/{notebook}?reset")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._dismiss_dialogs()
            st = self.state()
            if st and st["ready"] and st["kernel"] == "idle":
                return self
            time.sleep(0.5)
        raise TimeoutError(f"{notebook}: kernel not idle after {timeout:.0f}s (state {self.state()}); "
                           f"server log:\n{self.server.log_tail()}")

    def _dismiss_dialogs(self) -> None:
        dlg = self.page.locator(".jp-Dialog .jp-mod-accept")
        with contextlib.suppress(Exception):
            if dlg.count():
                dlg.first.click(timeout=2000)

    def state(self) -> dict | None:
        return self.page.evaluate(JS_NOTEBOOK_STATE)

    def command(self, name: str, args: dict | None = None, wait: bool = True):
        """Run a JupyterLab command; ``wait=False`` does not await its promise (Run All's resolves
        only when every cell has run)."""
        if wait:
            return self.page.evaluate("([n, a]) => window.jupyterapp.commands.execute(n, a)", [name, args or {}])
        return self.page.evaluate("([n, a]) => { window.jupyterapp.commands.execute(n, a); return true; }",
                                  [name, args or {}])

    def run_all(self, timeout: float = 600) -> dict:
        """Run All; wait until every non-empty code cell ran, or one shows an error. Returns the state."""
        self.command("notebook:clear-all-cell-outputs")
        self.command("notebook:run-all-cells", wait=False)
        t0 = time.monotonic()
        deadline = t0 + timeout
        st, last = None, None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            st = self.state()
            if st is None:
                continue
            cells = [c for c in st["cells"] if not c["empty"]]
            progress = (st["kernel"], sum(c["count"] is not None for c in cells), len(cells))
            if progress != last:
                print(f"[{time.monotonic() - t0:6.1f}s] {self.notebook}: kernel {progress[0]}, "
                      f"{progress[1]}/{progress[2]} cells ran", flush=True)
                last = progress
            if any(c["errors"] for c in cells):
                return st
            if all(c["count"] is not None for c in cells) and st["kernel"] == "idle":
                return st
        pending = [c["index"] for c in (st or {}).get("cells", []) if c["count"] is None and not c["empty"]]
        self.screenshot(f"{self.name}-timeout")
        raise TimeoutError(f"{self.notebook}: Run All did not finish in {timeout:.0f}s; cells not run: {pending}")

    def assert_no_errors(self, st: dict | None = None) -> dict:
        st = st or self.state()
        errors = [(c["index"], e) for c in st["cells"] for e in c["errors"]]
        if errors:
            self.screenshot(f"{self.name}-error")
            i, e = errors[0]
            raise AssertionError(f"{self.notebook}: cell {i} raised {e['ename']}: {e['evalue']}\n"
                                 f"{ANSI.sub('', e['traceback'])[-3000:]}")
        not_run = [c["index"] for c in st["cells"] if c["count"] is None and not c["empty"]]
        assert not not_run, f"{self.notebook}: cells {not_run} did not run"
        return st

    def run_all_ok(self, timeout: float = 600) -> dict:
        return self.assert_no_errors(self.run_all(timeout))

    # ------------------------------------------------ widgets
    def widget(self, css_class: str, timeout: float = 30_000):
        """The (first) element with this CSS class (ipywidgets ``add_class``), waited for."""
        loc = self.page.locator(f".{css_class}").first
        loc.wait_for(state="attached", timeout=timeout)
        loc.scroll_into_view_if_needed(timeout=timeout)
        return loc

    def slider_by_label(self, label: str):
        """An ipywidgets slider found by its description label (for widgets without CSS classes)."""
        loc = self.page.locator(f".widget-slider:has(.widget-label:text-is({json.dumps(label)}))").first
        loc.wait_for(state="attached", timeout=30_000)
        loc.scroll_into_view_if_needed(timeout=30_000)
        return loc

    def drag_slider(self, target, fraction: float = 0.85, steps: int = 12) -> str:
        """Drag a slider's handle with the real mouse to ``fraction`` of its track; returns the readout.

        ``target``: a CSS class (``add_class``) or a Playwright locator of the slider widget."""
        root = self.widget(target) if isinstance(target, str) else target
        handle = root.locator(".noUi-handle").first
        track = root.locator(".noUi-target").first
        handle.wait_for(state="visible", timeout=30_000)
        hb, tb = handle.bounding_box(), track.bounding_box()
        assert hb and tb, f"slider {target} has no visible handle/track"
        x0, y0 = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
        x1 = tb["x"] + tb["width"] * fraction
        m = self.page.mouse
        m.move(x0, y0)
        m.down()
        for k in range(1, steps + 1):
            m.move(x0 + (x1 - x0) * k / steps, y0)
            time.sleep(0.02)
        m.up()
        return self.readout(root)

    def readout(self, target) -> str:
        root = self.page.locator(f".{target}").first if isinstance(target, str) else target
        r = root.locator(".widget-readout")
        # ipywidgets shows negative numbers with a Unicode minus; outputs use ASCII '-'
        return r.first.inner_text().strip().replace("\u2212", "-") if r.count() else ""

    def text(self, css_class: str) -> str:
        return self.widget(css_class).inner_text()

    def wait_for_change(self, read, old, timeout: float = 60, settle: float = 0.0):
        """Poll ``read()`` until it differs from ``old`` (then optionally until stable)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur = read()
            if cur != old:
                if settle:
                    time.sleep(settle)
                    while (nxt := read()) != cur and time.monotonic() < deadline:
                        cur = nxt
                        time.sleep(settle)
                return cur
            time.sleep(0.25)
        raise TimeoutError(f"value did not change within {timeout:.0f}s (still {str(old)[:200]!r})")

    def wait_for_text(self, css_class: str, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        cur = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                cur = self.page.locator(f".{css_class}").first.inner_text(timeout=1000)
                if rx.search(cur):
                    return cur
            time.sleep(0.25)
        raise TimeoutError(f".{css_class} never matched {pattern!r}; last text {cur[:300]!r}")

    @staticmethod
    def _plots(css_class: str | None, inner: str = "") -> str:
        """Selector of plotly plots, scoped to ``css_class`` (on the plot itself or an ancestor)."""
        if not css_class:
            return f".js-plotly-plot{inner}"
        return f".{css_class}.js-plotly-plot{inner}, .{css_class} .js-plotly-plot{inner}"

    def plot_signature(self, css_class: str | None = None) -> str:
        """The SVG of the plotly plots (inside ``css_class`` if given): changes when a plot redraws."""
        return self.page.evaluate(
            "(sel) => Array.from(document.querySelectorAll(sel)).map(e => e.innerHTML).join('|')",
            self._plots(css_class, " .main-svg"))

    def count_plots(self, css_class: str | None = None) -> int:
        """Rendered plotly plots (a ``.js-plotly-plot`` holding a drawn ``.main-svg``)."""
        return self.page.evaluate("(s) => Array.from(document.querySelectorAll(s)).filter("
                                  "p => p.querySelector('.main-svg')).length", self._plots(css_class))

    def wait_for_plots(self, n: int = 1, css_class: str | None = None, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.count_plots(css_class)
            if got >= n:
                return got
            time.sleep(0.25)
        raise AssertionError(f"expected >= {n} rendered plotly plot(s){' in .' + css_class if css_class else ''}, "
                             f"found {self.count_plots(css_class)}")

    def count_circuitsvis(self) -> int:
        """circuitsvis views whose React root actually rendered children."""
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('[id^=\"circuits-vis-\"]'))"
            ".filter(e => e.childElementCount > 0).length")

    def assert_circuitsvis_rendered(self) -> int:
        """Every circuitsvis container on the page rendered (an empty one means it tried a CDN)."""
        total = self.page.locator('[id^="circuits-vis-"]').count()
        ok = self.count_circuitsvis()
        assert ok == total, f"{total - ok} of {total} circuitsvis view(s) are empty (CDN import offline?)"
        return total

    # ------------------------------------------------ network + screenshots
    def assert_offline(self) -> None:
        ext = sorted(set(self.requests.external))
        assert not ext, f"{len(ext)} request(s) tried to leave localhost (aborted): {ext[:10]}"

    def screenshot(self, name: str, css_class: str | None = None) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        with contextlib.suppress(Exception):
            if css_class:
                loc = self.page.locator(f".{css_class}").first
                loc.scroll_into_view_if_needed(timeout=5000)
                loc.screenshot(path=str(path), timeout=15_000)
            else:
                self.page.screenshot(path=str(path), timeout=15_000)
        return path


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def browser_artifacts(smoke_store, smoke_preset):
    """The smoke artifact store the kernels use, with the basics built up front (once)."""
    require_browser()
    from mono_utils.pipeline.models import get_model
    from mono_utils.pipeline.saes import get_sae
    for which in ("A", "B"):
        get_model(smoke_preset, smoke_store, which=which, progress=False)
    get_sae(smoke_preset, smoke_store, which="A")
    return Path(smoke_store.root).resolve()


@pytest.fixture(scope="session")
def lab(tmp_path_factory, browser_artifacts):
    require_browser()
    server = LabServer(tmp_path_factory.mktemp("lab"), browser_artifacts)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    require_browser()
    from playwright.sync_api import sync_playwright
    requests = RequestLog()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(30_000)
        ctx.route("**/*", requests.handle)
        ctx.mono_requests = requests
        yield ctx
        ctx.close()


def _new_page(request, browser_context, server) -> "LabPage":
    page = browser_context.new_page()
    page.on("websocket", browser_context.mono_requests.on_websocket)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    return LabPage(page, server, browser_context.mono_requests, name)


@pytest.fixture()
def lab_page(request, browser_context, lab):
    browser_context.mono_requests.external.clear()
    lp = _new_page(request, browser_context, lab)
    yield lp
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        lp.screenshot(f"{lp.name}-FAILED")
    lp.page.close()
    lab.shutdown_kernels()


def served_notebooks() -> list[str]:
    return sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))


def need_notebook(name: str) -> None:
    """Skip locally (fail in CI) when a notebook the test drives is missing."""
    if not (REPO / "notebooks" / name).exists():
        msg = f"notebooks/{name} does not exist"
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


# ---------------------------------------------------------------- Voila apps
class VoilaServer(Server):
    """``mono_utils.apps.launch_app(name)`` (the documented command) on a free port."""

    def __init__(self, name: str, artifacts: Path, folder: Path, extra_env: dict | None = None):
        self.name, self.artifacts, self.extra_env = name, artifacts, extra_env or {}
        port = free_port()
        super().__init__([], {}, folder, f"http://127.0.0.1:{port}", folder / f"voila-{name}.log", "/")
        self.port = port

    def start(self, timeout: float = 60) -> "VoilaServer":
        from mono_utils.apps import launch_app
        self._logf = open(self.log, "wb")
        env = {k: v for k, v in kernel_env(self.artifacts).items() if k.startswith(("MONO_", "PYTHONPATH", "TQDM"))}
        self.proc = launch_app(self.name, self.port, env={**env, **self.extra_env}, wait=False, log=self._logf)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # wait for the port only: GET / would start a kernel
            if self.proc.poll() is not None:
                raise RuntimeError(f"voila exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.3)
        raise TimeoutError(f"voila did not listen on {self.port} within {timeout:.0f}s:\n{self.log_tail()}")


@pytest.fixture()
def voila_page(request, browser_context, browser_artifacts, tmp_path):
    """``start(name, **env)`` serves an app and returns a :class:`LabPage` on it."""
    servers, pages = [], []

    def start(name: str, **env) -> LabPage:
        srv = VoilaServer(name, browser_artifacts, tmp_path, env).start()
        servers.append(srv)
        lp = _new_page(request, browser_context, srv)
        pages.append(lp)
        browser_context.mono_requests.external.clear()
        lp.page.goto(srv.url + "/", timeout=600_000)
        return lp

    yield start
    rep = getattr(request.node, "rep_call", None)
    for lp in pages:
        if rep is not None and rep.failed:
            lp.screenshot(f"{lp.name}-FAILED")
        lp.page.close()
    for srv in servers:
        srv.stop()
