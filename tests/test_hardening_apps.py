"""Hardening round three (issue 25), the apps' share: Voila kernels capped, culled and stopped with
the app, a token beyond localhost, presets refused when not built; atlas leftovers, a teacher's
files and the published store path; per-preset build logs; MONO_PRESET read one way; notebook stalls.

Each ``test_hNN_...`` is the row ``HNN`` of tests/RELIABILITY.md's "Data kept" table.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from mono_utils.store.artifacts import ArtifactStore

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def app_store(smoke_store, smoke_preset):
    """The smoke store with what the steering app loads (model A, its SAE) built."""
    from mono_utils.pipeline.saes import get_sae
    get_sae(smoke_preset, smoke_store, which="A", progress=False)
    return smoke_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the app exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on {port} after {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def _get(url: str, timeout: float = 600) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _voila_of(app: subprocess.Popen) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in psutil.Process(app.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "voila" in " ".join(p.cmdline()[:3]):
                    return p
        time.sleep(0.2)
    raise AssertionError("the app started no Voila process")


def _kernels(voila: psutil.Process) -> list[psutil.Process]:
    out = []
    with contextlib.suppress(psutil.Error):
        for p in voila.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "ipykernel" in " ".join(p.cmdline()) and _alive(p):
                    out.append(p)
    return out


def _app_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("MONO_PRESET", "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE")}


# ---------------------------------------------------------------- H40-H42: the apps
@pytest.mark.slow
def test_h40_app_kernels_are_capped_culled_and_stopped_with_the_app(app_store, tmp_path):
    """The BAD item: every page load started a ~0.6 GB kernel that was never shut down, and SIGTERM to
    ``app`` left Voila serving. Fails on the old code: ``--max-kernels``/``--cull-idle`` do not exist
    there, and without them three loads leave three kernels alive and SIGTERM orphans Voila."""
    port, log = _free_port(), tmp_path / "app.log"
    cmd = [sys.executable, "-m", "mono_utils", "app", "steering", "--preset", "smoke", "--artifacts",
           str(app_store.root), "--port", str(port), "--max-kernels", "2", "--cull-idle", "8"]
    with open(log, "wb") as logf:
        app = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=_app_env(), cwd=REPO,
                               start_new_session=True)
    voila, counts, done = None, [], threading.Event()
    try:
        _wait_for_port(port, app, log)
        voila = _voila_of(app)

        def watch():
            while not done.is_set():
                counts.append(len(_kernels(voila)))
                time.sleep(0.2)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        url = f"http://127.0.0.1:{port}/"
        with ThreadPoolExecutor(3) as pool:              # three students open the page at once
            pages = list(pool.map(lambda _: _get(url), range(3)))
        codes = sorted(code for code, _ in pages)
        assert codes == [200, 200, 503], (codes, log.read_text(errors="replace")[-3000:])
        full = next(body for code, body in pages if code == 503)
        assert "The app is full: 2 copies of it are open" in full and "--max-kernels" in full
        shown = [body for code, body in pages if code == 200]
        assert all("application/vnd.jupyter.widget-view+json" in b for b in shown), "a page shows no widget"
        alive = _kernels(voila)
        assert len(alive) == 2
        rss = [k.memory_full_info() for k in alive]
        print(f"\nper app kernel (steering, smoke): RSS {[round(m.rss / 2**20) for m in rss]} MB, "
              f"USS {[round(m.uss / 2**20) for m in rss]} MB")
        # plain requests never connect a websocket: both kernels are idle with no page, and culled
        deadline = time.monotonic() + 8 + 2 + 90
        while _kernels(voila) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _kernels(voila), "idle kernels with no page were not culled"
        code, body = _get(url)                           # a freed slot serves the next student
        assert code == 200 and "widget-view" in body
        done.set()
        watcher.join()
        assert max(counts) <= 2, f"{max(counts)} kernels were alive at once with --max-kernels 2"
        left = _kernels(voila)
        assert left
        app.send_signal(signal.SIGTERM)                  # the teacher's `kill` (or a closed terminal)
        app.wait(timeout=60)
        gone = time.monotonic() + 30
        while (_alive(voila) or any(_alive(k) for k in left)) and time.monotonic() < gone:
            time.sleep(0.3)
        assert not _alive(voila), "Voila outlived the app it was started by (SIGTERM)"
        assert not any(_alive(k) for k in left), "an app kernel outlived the app"
    finally:
        done.set()
        for p in ([voila] if voila else []) + (_kernels(voila) if voila else []):
            with contextlib.suppress(psutil.Error):
                p.kill()
        if app.poll() is None:
            app.kill()
            app.wait()


@pytest.mark.slow
def test_h41_beyond_localhost_the_app_needs_a_token_kept_off_the_command_line(tmp_path, capsys):
    pytest.importorskip("voila")
    from mono_utils.apps import launch_app, stop_app
    port = _free_port()
    with open(tmp_path / "voila.log", "wb") as log:
        proc = launch_app("rating", port=port, ip="0.0.0.0", wait=False, check=False, log=log,
                          env={"MONO_PRESET": "smoke", "MONO_ARTIFACTS": str(tmp_path / "empty")})
    try:
        out = capsys.readouterr().out
        token = out.split("?token=")[1].split()[0]
        assert len(token) >= 16 and f":{port}/?token={token}" in out
        assert not any(token in a for a in proc.args), "the token is on the command line (`ps` shows it)"
        _wait_for_port(port, proc, tmp_path / "voila.log")
        kernel_api = f"http://127.0.0.1:{port}/api/kernels/00000000-0000-0000-0000-000000000000"
        assert _get(kernel_api)[0] == 403                          # no token: refused
        assert _get(kernel_api + "?token=wrong-token-1234")[0] == 403
        assert _get(kernel_api + f"?token={token}")[0] == 404      # the token: in (no such kernel)
    finally:
        stop_app(proc)
    assert proc.poll() is not None


def test_h42_an_app_on_a_preset_that_is_not_built_is_refused_before_serving(tmp_path, monkeypatch):
    """`app steering` on a store without the default preset started training it (~40 min) in the
    page's kernel behind "Executing 1 of 1"; now it is refused, naming the build and its time, and
    `--preset` says which preset to serve."""
    from mono_utils import apps
    from mono_utils.cli import make_parser
    started = []
    monkeypatch.setattr(apps.subprocess, "Popen", lambda *a, **k: started.append(a))
    monkeypatch.delenv("MONO_PRESET", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        apps.launch_app("steering", store=ArtifactStore(tmp_path / "store"))
    assert "the steering app needs the default preset's model A" in str(info.value)
    assert "python -m mono_utils build --preset default` (about 40 minutes" in str(info.value)
    assert not started, "Voila was started for a preset that is not built"
    assert make_parser().parse_args(["app", "rating", "--preset", "smoke"]).preset == "smoke"


@pytest.mark.slow
def test_h42_a_built_preset_is_named_and_served(app_store, smoke_preset, monkeypatch):
    from mono_utils import apps
    from mono_utils.pipeline.indexes import get_index
    assert apps.missing_artifacts("steering", "smoke", app_store) == []
    get_index(smoke_preset, app_store, progress=False)
    # the index config the app checks is the one get_index hashes (else `app rating` would refuse a built store)
    assert apps.missing_artifacts("rating", "smoke", app_store) == []
    if apps.missing_artifacts("steering", "default", app_store):
        with pytest.raises(FileNotFoundError, match="or serve a preset that is built: --preset smoke"):
            apps.check_built("steering", "default", app_store)
    popen = {}
    monkeypatch.setattr(apps.subprocess, "Popen", lambda cmd, **k: popen.update(k) or type("P", (), {})())
    monkeypatch.setenv("MONO_PRESET", "default")    # the argument wins over the teacher's shell
    apps.launch_app("steering", preset="smoke", store=app_store, wait=False)
    assert popen["env"]["MONO_PRESET"] == "smoke"
    assert popen["env"]["MONO_ARTIFACTS"] == str(Path(app_store.root).resolve())


# ---------------------------------------------------------------- H43-H45: the atlas folder
def _tiny_site(out: Path, stale_pid: int | None = None):
    """write_site with no unit sets: the atlas's own files (page, assets, meta, marker) and nothing else."""
    from mono_utils.atlas.site import write_site
    return write_site(out, [], ["a", "b"], {"title": "t", "built": "now"}, progress=False)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_h43_leftovers_of_an_interrupted_atlas_write_are_cleaned(tmp_path):
    out = tmp_path / "atlas"
    dead = _dead_pid()
    for name in (f".atlas.partial-{dead}", f".atlas.old-{dead}", f".atlas.partial-{os.getpid()}x"):
        (tmp_path / name / "data").mkdir(parents=True)
    live = tmp_path / f".atlas.partial-{os.getppid()}"            # a writer that is still running
    live.mkdir()
    teacher = tmp_path / ".atlas.partial-notes"                    # not a PID: not ours
    teacher.mkdir()
    _tiny_site(out)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert f".atlas.partial-{dead}" not in left and f".atlas.old-{dead}" not in left
    assert live.exists() and teacher.exists() and (tmp_path / f".atlas.partial-{os.getpid()}x").exists()
    assert (out / "atlas.json").exists() and not list(tmp_path.glob(f".atlas.*-{os.getpid()}"))


def test_h44_rewriting_an_atlas_keeps_a_teachers_own_files(tmp_path):
    out = tmp_path / "atlas"
    first = _tiny_site(out)
    assert first["kept"] == []
    (out / "notes.md").write_text("my lesson plan")
    (out / "slides").mkdir()
    (out / "slides" / "week1.pdf").write_bytes(b"%PDF")
    (out / "data" / "my-extra.json").write_text("{}")
    second = _tiny_site(out)
    assert sorted(second["kept"]) == ["data/my-extra.json", "notes.md", "slides/week1.pdf"]
    assert (out / "notes.md").read_text() == "my lesson plan" and (out / "slides" / "week1.pdf").read_bytes() == b"%PDF"
    own = json.loads((out / "atlas.json").read_text())["files"]
    assert "index.html" in own and "notes.md" not in own         # the teacher's files stay theirs
    assert _tiny_site(out)["kept"] == second["kept"]               # and are kept again next time


@pytest.mark.slow
def test_h45_a_no_build_atlas_does_not_publish_the_store_path(app_store, smoke_preset, tmp_path):
    """`atlas --no-build` named each analysis not built as "<kind>/<name> is not built in /home/.../store"
    in data/meta.js, published with the site."""
    from mono_utils.atlas.site import build_atlas
    from mono_utils.pipeline.indexes import get_index
    get_index(smoke_preset, app_store, progress=False)
    out = tmp_path / "atlas"
    static = {"live": False} if "live" in inspect.signature(build_atlas).parameters else {}   # no ONNX: faster
    rep = build_atlas(smoke_preset, out, (), app_store, progress=False, build_missing=False, **static)
    meta = (out / "data" / "meta.js").read_text(encoding="utf-8")
    root = str(Path(app_store.root).resolve())
    published = [p.relative_to(out) for p in out.rglob("*") if p.is_file() and root in p.read_text(errors="replace")]
    assert not published, f"the store's path {root} is in {published}"
    for name in rep["missing"]:
        assert "is not built (--no-build)" in meta, name


# ---------------------------------------------------------------- H46-H47: builds and MONO_PRESET
def test_h46_two_presets_built_at_once_keep_separate_logs(tmp_path, monkeypatch):
    from mono_utils.pipeline import parallel

    class FakeProc:
        returncode = 0

        def __init__(self, cmd, stdout, **kw):
            stdout.write(f"built {cmd[cmd.index('--preset') + 1]}\n")

        def poll(self):
            return 0
    monkeypatch.setattr(parallel.subprocess, "Popen", FakeProc)
    for preset in ("smoke", "default"):
        assert parallel.run_parallel(["corpus"], {"corpus": ()}, 1, preset, tmp_path / "store") == 0
    logs = tmp_path / "store" / "build-logs"
    assert (logs / "smoke" / "corpus.log").read_text() == "built smoke\n"
    assert (logs / "default" / "corpus.log").read_text() == "built default\n"


@pytest.mark.parametrize("argv", [["build"], ["run-notebooks"], ["atlas"], ["app", "steering"]])
def test_h47_an_empty_mono_preset_is_the_default_for_every_command(argv, monkeypatch):
    from mono_utils.cli import make_parser
    monkeypatch.setenv("MONO_PRESET", "")
    assert make_parser().parse_args(argv).preset == "default"
    monkeypatch.setenv("MONO_PRESET", "smoke")
    assert make_parser().parse_args(argv).preset == "smoke"
    assert make_parser().parse_args(argv + ["--preset", "default"]).preset == "default"   # the flag wins


# ---------------------------------------------------------------- H48: a notebook that stalls
def test_h48_a_reply_whose_wake_up_was_missed_is_read_at_the_next_step():
    """The stall's likely cause: one poll of the shell socket for a cell's whole limit, whose wake-up
    was missed. The runner polls in steps: a reply the first poll did not see is read at the next one
    (here after 0.02 s, not the 5 s limit), and with no reply the limit still ends it with Empty."""
    import asyncio
    from queue import Empty

    from mono_utils.notebooks import _poll_shell_in_steps

    class Channel:
        def __init__(self, reply_at_call):
            self.calls, self.reply_at_call = [], reply_at_call

        async def get_msg(self, timeout=None):
            self.calls.append(timeout)
            await asyncio.sleep(timeout)
            if len(self.calls) == self.reply_at_call:
                return {"msg_type": "execute_reply"}
            raise Empty

    def run(coro):   # in a thread of its own: after the browser tests Playwright's loop runs in this one
        box = {}

        def target():
            try:
                box["value"] = asyncio.run(coro)
            except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
                box["error"] = e
        t = threading.Thread(target=target)
        t.start()
        t.join(30)
        if "error" in box:
            raise box["error"]
        return box["value"]

    ch = Channel(reply_at_call=2)       # the first poll misses the reply, the second reads it
    _poll_shell_in_steps(ch, step=0.01)
    t0 = time.monotonic()
    assert run(ch.get_msg(timeout=5.0)) == {"msg_type": "execute_reply"}
    assert time.monotonic() - t0 < 1.0 and ch.calls == [0.01, 0.01]
    never = Channel(reply_at_call=-1)
    _poll_shell_in_steps(never, step=0.01)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        run(never.get_msg(timeout=0.05))
    assert 0.05 <= time.monotonic() - t0 < 1.0 and len(never.calls) >= 5


def test_h48_a_stalled_notebook_is_stopped_naming_its_cell_and_what_it_waits_on(tmp_path):
    """Notebook 03 once sat ~15 minutes idle in CI. Now each notebook has a total limit: past it the
    process tree (kernel included) is stopped, and the message names the notebook, the cell, and what
    each process was doing: here idle, holding the lock file of an artifact another build holds."""
    import fcntl

    import nbformat

    from mono_utils.notebooks import execute_notebook
    lock = tmp_path / ".lock-indexA-smoke"
    code = (f"from pathlib import Path\nfrom mono_utils.store.artifacts import file_lock\n"
            f"with file_lock(Path({str(lock)!r})):\n    pass")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(code)]),
                   tmp_path / "03_stall.ipynb")
    with open(lock, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)    # another build holds the artifact
        before = {p.pid for p in psutil.process_iter()}
        t0 = time.time()
        r = execute_notebook(tmp_path / "03_stall.ipynb", tmp_path / "out" / "03_stall.ipynb", timeout=600,
                             total_timeout=60)
        took = time.time() - t0
    assert not r["ok"] and took < 150, took
    assert r["stalled"].startswith("03_stall.ipynb did not finish within 60 s (the per-notebook limit): stopped "
                                   "at cell 1 ('from pathlib import Path')"), r["stalled"]
    assert "idle (waiting)" in r["stalled"] and f"lock files open: {lock}" in r["stalled"], r["stalled"]
    time.sleep(1)
    left = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before and _alive(p)
            and "ipykernel" in " ".join(p.info["cmdline"] or [])]
    assert not left, f"the stalled notebook's kernel is still running: {left}"


# ---------------------------------------------------------------- H49: names in error messages
def _names_in_raises() -> list[tuple[str, int, str]]:
    """(file, line, dotted name) for every ``mono_utils.X.Y`` in a string of a ``raise`` statement."""
    import ast
    import re
    found = []
    for path in sorted((REPO / "mono_utils").rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for part in ast.walk(node.exc):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    for name in re.findall(r"\bmono_utils(?:\.[A-Za-z_]\w*)+", part.value):
                        found.append((str(path.relative_to(REPO)), node.lineno, name.rstrip(".")))
    return found


def _resolves(dotted: str) -> bool:
    import importlib
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_h49_every_mono_utils_name_an_error_message_gives_exists():
    """Two messages sent users to ``mono_utils.pipeline.get_model`` / ``get_tokenizer``, which are in
    ``mono_utils.pipeline.models``: a name a message gives must import, or the fix it names is a dead end."""
    names = _names_in_raises()
    assert len(names) >= 2, names          # the scan finds the messages (it once found none: a broken scan)
    dead = [f"{f}:{line}: {name}" for f, line, name in names if not _resolves(name)]
    assert not dead, "error messages name things that do not exist:\n" + "\n".join(dead)
    assert not _resolves("mono_utils.pipeline.no_such_function")     # and the check can fail
