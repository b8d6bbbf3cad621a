"""The class server (classroom/jupyterhub_config.py, mono_utils/classroom.py).

The fast tests check the per-student copy and the read-only lock. The slow one starts the real hub on
localhost as root: three Unix students created here, registered and started through the hub's REST API,
one student notebook run in each at the same time through their own server's kernel API, then what a
student may not do (write the shared store, read another student's files) tried from inside their
kernels. It measures each student's memory and CPU while they run (MONO_CLASS_SIZING_OUT=file.json keeps
the figures; docs/class-server.md quotes them). MONO_CLASS_NOTEBOOK picks the notebook; MONO_CLASS_BUNDLE
and MONO_CLASS_PRESET run it on a teacher's bundle instead of the smoke store.

It needs root, useradd and the proxy (`make hub-proxy`); without them it skips, unless
MONO_REQUIRE_HUB=1 (CI's `make class-test`), where a missing piece fails it.
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
import requests
from _hub_kernel import UserSampler, run_cells, start_session

from mono_utils.classroom import copy_exercises, lock_read_only, prepare_student_home
from mono_utils.lessons.student import FOLD_TAG, STUB_TAG, folded_solution, tags

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "classroom" / "jupyterhub_config.py"
PROXY = REPO / "classroom" / "node_modules" / ".bin" / "configurable-http-proxy"
# the hub and the students' servers run from this venv (`make class-env`): its Python must be one every
# account can run (a venv made from a Python under /root, 0700, is not)
CLASS_VENV = Path(os.environ.get("MONO_CLASS_VENV", REPO / ".venv-class"))
STUDENTS = ["monostu1", "monostu2", "monostu3"]
NOTEBOOK = os.environ.get("MONO_CLASS_NOTEBOOK", "02_neurons_vs_features.ipynb")


# ---------------------------------------------------------------- fast: the files
def _template(tmp_path: Path) -> Path:
    t = tmp_path / "template"
    t.mkdir()
    for name in ("00_a.ipynb", "01_b.ipynb"):
        (t / name).write_text(f"template {name}", encoding="utf-8")
    return t


def test_copy_exercises_never_replaces_a_students_file(tmp_path):
    t, dest = _template(tmp_path), tmp_path / "home" / "exercises"
    dest.parent.mkdir()
    assert [p.name for p in copy_exercises(t, dest)] == ["00_a.ipynb", "01_b.ipynb"]
    (dest / "00_a.ipynb").write_text("my answers", encoding="utf-8")
    (dest / "01_b.ipynb").unlink()
    assert [p.name for p in copy_exercises(t, dest)] == ["01_b.ipynb"]   # only what is missing
    assert (dest / "00_a.ipynb").read_text(encoding="utf-8") == "my answers"
    assert stat.S_IMODE((dest / "01_b.ipynb").stat().st_mode) & 0o022 == 0


def test_copy_exercises_follows_no_planted_link(tmp_path):
    t, home = _template(tmp_path), tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home.mkdir()
    (home / "exercises").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="symbolic link"):
        copy_exercises(t, home / "exercises")
    (home / "exercises").unlink()
    (home / "exercises").mkdir()
    (home / "exercises" / "00_a.ipynb").symlink_to(elsewhere / "victim")
    assert [p.name for p in copy_exercises(t, home / "exercises")] == ["01_b.ipynb"]
    assert not (elsewhere / "victim").exists()


def test_lock_read_only_sets_modes_and_refuses_links(tmp_path):
    store = tmp_path / "store"
    (store / "kind" / "name").mkdir(parents=True)
    (store / "kind" / "name" / "w.safetensors").write_bytes(b"x")
    os.chmod(store / "kind" / "name" / "w.safetensors", 0o600)
    os.chmod(store / "kind", 0o700)
    assert lock_read_only(store) == 4
    assert stat.S_IMODE((store / "kind").stat().st_mode) == 0o755
    assert stat.S_IMODE((store / "kind" / "name" / "w.safetensors").stat().st_mode) == 0o644
    (store / "kind" / "link").symlink_to("/etc")
    with pytest.raises(ValueError, match="symbolic link"):
        lock_read_only(store)


def test_prepare_student_home_refuses_root():
    with pytest.raises(ValueError, match="root is not a student"):
        prepare_student_home("root", "/nonexistent")


def test_default_config_requires_real_logins_on_localhost(monkeypatch):
    """The configuration as shipped: PAM (passwords of real accounts), one group, this machine only."""
    from traitlets.config import Config
    for key in ("MONO_CLASS_IP", "MONO_CLASS_PORT", "MONO_CLASS_GROUP"):
        monkeypatch.delenv(key, raising=False)
    c = Config()
    exec(compile(CONFIG.read_text(encoding="utf-8"), str(CONFIG), "exec"),
         {"get_config": lambda: c, "__file__": str(CONFIG)})
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.PAMAuthenticator.allowed_groups == {"students"}
    assert c.JupyterHub.ip == "127.0.0.1" and c.JupyterHub.hub_ip == "127.0.0.1"
    assert c.JupyterHub.spawner_class == "localprocess"
    assert c.Spawner.environment["MONO_ARTIFACTS"] == "/srv/monolab/store"


# ---------------------------------------------------------------- slow: the hub itself
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the class server test runs as root (it creates Unix accounts)"
    if not shutil.which("useradd"):
        return "useradd is missing"
    if not PROXY.exists():
        return f"the hub's proxy is not installed ({PROXY}): run `make hub-proxy`"
    hub = CLASS_VENV / "bin" / "jupyterhub"
    if not hub.exists():
        return f"no JupyterHub in {CLASS_VENV}: run `make class-env`"
    python = (CLASS_VENV / "bin" / "python").resolve()
    for p in [*REPO.parents, *python.parents]:
        if not p.stat().st_mode & stat.S_IXOTH:
            return (f"{p} is not traversable by other users: students could not run {python} "
                    f"(make the class venv from a system Python: make class-env STUDENT_PY=/usr/bin/python3)")
    return None


def _delete_users():
    for u in STUDENTS:
        subprocess.run(["userdel", "-r", u], capture_output=True)


def _student_cells(nb) -> list[str]:
    """The code a student runs: each stub replaced by its folded solution (the student's answer)."""
    out = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        if STUB_TAG in tags(c):
            fold = next(d for d in nb.cells[i:] if FOLD_TAG in tags(d))
            out.append(folded_solution(fold.source))
        else:
            out.append(c.source)
    return out


PROBE = r"""
import json, os, pathlib
OTHER, NB = "__OTHER__", "__NB__"
store = pathlib.Path(os.environ["MONO_ARTIFACTS"])
some = next(p for p in sorted(store.rglob("*")) if p.is_file())
probe = {"whoami": os.getuid(), "store": str(store)}
def attempt(name, fn):
    try:
        fn()
        probe[name] = "allowed"
    except PermissionError:
        probe[name] = "denied"
    except OSError as e:
        probe[name] = f"error {e.errno}"
attempt("create_in_store", lambda: open(store / "planted.txt", "w").close())
attempt("append_to_store_file", lambda: open(some, "ab").close())
attempt("delete_store_file", lambda: os.unlink(some))
attempt("mkdir_in_store", lambda: (store / "kind-x").mkdir())
attempt("read_other_notebook", lambda: open(f"/home/{OTHER}/exercises/{NB}", "rb").read())
attempt("list_other_home", lambda: os.listdir(f"/home/{OTHER}"))
attempt("write_other_home", lambda: open(f"/home/{OTHER}/planted.txt", "w").close())
attempt("write_own_home", lambda: open(pathlib.Path.home() / "mine.txt", "w").close())
print("__PROBE__" + json.dumps(probe))
"""


@pytest.fixture(scope="module")
def class_bundle(smoke_store, tmp_path_factory):
    """Every smoke artifact the notebooks read, built once and exported as the teacher would; or the
    teacher's own bundle in $MONO_CLASS_BUNDLE (with $MONO_CLASS_PRESET its preset), to size a real class."""
    if os.environ.get("MONO_CLASS_BUNDLE"):
        return Path(os.environ["MONO_CLASS_BUNDLE"])
    env = dict(os.environ, MONO_ARTIFACTS=str(smoke_store.root))
    subprocess.run([sys.executable, "-m", "mono_utils", "build", "--preset", "smoke", "--artifacts",
                    str(smoke_store.root)], env=env, check=True, cwd=REPO, capture_output=True)
    bundle = tmp_path_factory.mktemp("bundle") / "class.tar"
    subprocess.run([sys.executable, "-m", "mono_utils", "export", str(bundle), "--artifacts",
                    str(smoke_store.root)], env=env, check=True, cwd=REPO, capture_output=True)
    return bundle


@pytest.mark.slow
def test_class_server_three_students_at_once(request):
    why = _missing()
    if why:
        if os.environ.get("MONO_REQUIRE_HUB") == "1":
            pytest.fail(why)
        pytest.skip(why)
    class_bundle = request.getfixturevalue("class_bundle")   # only now: it builds every smoke artifact
    _delete_users()
    root = Path(tempfile.mkdtemp(prefix="monolab-class-"))
    os.chmod(root, 0o755)   # mkdtemp's 0700 would hide the store from the students
    hub = None
    try:
        # the teacher: import the bundle once, write the exercises, create the accounts
        subprocess.run([str(CLASS_VENV / "bin" / "python"), "-m", "mono_utils.classroom", "prepare", "--bundle", str(class_bundle),
                        "--root", str(root)], check=True, cwd=REPO, capture_output=True)
        subprocess.run(["groupadd", "-f", "students"], check=True)
        passwords = {u: secrets.token_urlsafe(12) for u in STUDENTS}
        for u in STUDENTS:
            subprocess.run(["useradd", "-m", "-G", "students", "-s", "/bin/bash", u], check=True)
            subprocess.run(["chpasswd"], input=f"{u}:{passwords[u]}\n", text=True, check=True)

        # the hub: the shipped configuration, plus an admin token for this test only
        port, admin_token = _free_port(), secrets.token_hex(32)
        override = root / "hub" / "test_config.py"
        override.write_text(
            f"load_subconfig({str(CONFIG)!r})\n"
            f"c.JupyterHub.hub_port = {_free_port()}\n"
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{_free_port()}'\n"
            "c.JupyterHub.services = [{'name': 'class-test', 'api_token': %r}]\n"
            "c.JupyterHub.load_roles = [{'name': 'class-test', 'services': ['class-test'],\n"
            "    'scopes': ['admin:users', 'admin:servers', 'tokens', 'list:users']}]\n" % admin_token,
            encoding="utf-8")
        os.chmod(override, 0o600)
        env = dict(os.environ, MONO_CLASS_ROOT=str(root), MONO_CLASS_PORT=str(port),
                   MONO_CLASS_PRESET=os.environ.get("MONO_CLASS_PRESET", "smoke"),
                   TQDM_DISABLE="1")
        log = open(root / "hub" / "hub.log", "w")
        hub = subprocess.Popen([str(CLASS_VENV / "bin" / "jupyterhub"), "-f", str(override)],
                               cwd=root / "hub", env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        api = f"{base}/hub/api"
        admin = {"Authorization": f"token {admin_token}"}
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{api}/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert hub.poll() is None and time.time() < deadline, (root / "hub" / "hub.log").read_text()
            time.sleep(1)

        # authentication is on: no token, no server; a wrong password is refused, the right one works
        assert requests.get(f"{api}/users", timeout=10).status_code == 403
        login = requests.Session()
        login.get(f"{base}/hub/login", timeout=10)
        xsrf = login.cookies.get("_xsrf", "")
        bad = login.post(f"{base}/hub/login", data={"username": STUDENTS[0], "password": "wrong",
                                                   "_xsrf": xsrf}, allow_redirects=False, timeout=30)
        assert bad.status_code == 403, bad.status_code
        good = login.post(f"{base}/hub/login", data={"username": STUDENTS[0], "password": passwords[STUDENTS[0]],
                                                    "_xsrf": xsrf}, allow_redirects=False, timeout=30)
        assert good.status_code == 302, good.status_code

        # three students through the REST API; their servers start, each with their own copy
        r = requests.post(f"{api}/users", headers=admin, json={"usernames": STUDENTS}, timeout=30)
        assert r.status_code in (201, 409), r.text
        tokens = {}
        for u in STUDENTS:
            requests.post(f"{api}/users/{u}/server", headers=admin, timeout=120).raise_for_status()
            tokens[u] = requests.post(f"{api}/users/{u}/tokens", headers=admin, json={"note": "class test"},
                                      timeout=120).json()["token"]
        def ready(u):   # a loaded machine can stall the hub's event loop for seconds: a timeout is "not yet"
            try:
                return requests.get(f"{api}/users/{u}", headers=admin, timeout=60).json().get("servers", {}) \
                    .get("", {}).get("ready")
            except requests.Timeout:
                return False

        deadline = time.time() + 600
        while not all(ready(u) for u in STUDENTS):
            assert hub.poll() is None and time.time() < deadline, (root / "hub" / "hub.log").read_text()[-4000:]
            time.sleep(1)
        for u in STUDENTS:
            home = Path(pwd.getpwnam(u).pw_dir)
            assert stat.S_IMODE(home.stat().st_mode) == 0o700
            mine = home / "exercises" / NOTEBOOK
            assert mine.stat().st_uid == pwd.getpwnam(u).pw_uid
            # one student's token opens no other student's server
            other = STUDENTS[(STUDENTS.index(u) + 1) % 3]
            assert requests.get(f"{base}/user/{other}/api/contents/exercises", timeout=30, allow_redirects=False,
                                headers={"Authorization": f"token {tokens[u]}"}).status_code in (302, 403, 404)

        # a student notebook in each server at the same time, as each student runs it
        sources = {}
        for u in STUDENTS:
            got = requests.get(f"{base}/user/{u}/api/contents/exercises/{NOTEBOOK}", timeout=60,
                               headers={"Authorization": f"token {tokens[u]}"})
            got.raise_for_status()
            sources[u] = _student_cells(nbformat.from_dict(got.json()["content"]))
        kernels = {u: start_session(base, u, tokens[u], f"exercises/{NOTEBOOK}") for u in STUDENTS}
        results, errors = {}, {}

        def student(u):
            try:
                results[u] = run_cells(base, u, tokens[u], kernels[u], sources[u])
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                errors[u] = repr(e)

        with UserSampler(STUDENTS) as sampler:
            time.sleep(2)
            idle = sampler.sample()
            cpu0 = sampler.cpu_seconds()
            t0 = time.time()
            runners = [threading.Thread(target=student, args=(u,)) for u in STUDENTS]
            for t in runners:
                t.start()
            for t in runners:
                t.join()
            wall = time.time() - t0
            sampler.sample()
            hub_procs = [psutil.Process(hub.pid), *psutil.Process(hub.pid).children(recursive=True)]
            hub_rss = sum(p.memory_info().rss for p in hub_procs
                          if p.username() not in STUDENTS)   # the hub and its proxy, not the students
            cpu1 = sampler.cpu_seconds()
        assert not errors, errors
        for u in STUDENTS:
            failed = [c for c in results[u] if c["status"] != "ok"]
            assert not failed and len(results[u]) == len(sources[u]), f"{u}: {failed}"

        sizing = {"notebook": NOTEBOOK, "students": len(STUDENTS), "wall_s_all_three": wall,
                  "cores_on_machine": os.cpu_count(),
                  "hub_and_proxy_rss_mb": hub_rss / 2**20,
                  "per_student": {u: {"idle_rss_mb": idle[u][0] / 2**20, "idle_pss_mb": idle[u][1] / 2**20,
                                      "peak_rss_mb": sampler.peak_rss[u] / 2**20,
                                      "peak_pss_mb": sampler.peak_pss[u] / 2**20,
                                      "cpu_s": cpu1[u] - cpu0[u]} for u in STUDENTS}}
        print(json.dumps(sizing, indent=1))
        if os.environ.get("MONO_CLASS_SIZING_OUT"):
            Path(os.environ["MONO_CLASS_SIZING_OUT"]).write_text(json.dumps(sizing, indent=1), encoding="utf-8")
        assert all(s["peak_pss_mb"] > s["idle_pss_mb"] > 0 and s["cpu_s"] > 0
                   for s in sizing["per_student"].values()), sizing
        # what no student may do, tried from inside each student's own kernel
        for i, u in enumerate(STUDENTS):
            other = STUDENTS[(i + 1) % 3]
            probe = PROBE.replace("__OTHER__", other).replace("__NB__", NOTEBOOK)
            out = run_cells(base, u, tokens[u], kernels[u], [probe])[0]
            assert out["status"] == "ok", out
            seen = json.loads(out["stdout"].split("__PROBE__", 1)[1])
            assert seen["whoami"] == pwd.getpwnam(u).pw_uid
            assert seen["store"] == str(root / "store")
            for key in ("create_in_store", "append_to_store_file", "delete_store_file", "mkdir_in_store",
                        "read_other_notebook", "list_other_home", "write_other_home"):
                assert seen[key] == "denied", (u, key, seen)
            assert seen["write_own_home"] == "allowed", seen

    finally:
        if hub is not None:
            hub.terminate()
            try:
                hub.wait(30)
            except subprocess.TimeoutExpired:
                hub.kill()
        if (root / "hub" / "hub.log").exists():   # shown by pytest when the test fails
            print((root / "hub" / "hub.log").read_text(errors="replace")[-6000:])
        # servers the hub left behind (it stops them on exit; this is a backstop), each by its id
        for p in psutil.process_iter(["username"]):
            if p.info["username"] in STUDENTS:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        time.sleep(1)
        _delete_users()
        shutil.rmtree(root, ignore_errors=True)
