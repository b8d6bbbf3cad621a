"""Classroom apps: the steering and rating widgets served by Voila (no code shown).

``python -m mono_utils app steering`` (or ``rating``) runs :func:`launch_app`, which serves
``apps/<name>_app.ipynb`` with Voila on http://127.0.0.1:8866 and opens nothing else; students
only see the widgets. ``--ip 0.0.0.0`` (``launch_app(..., ip="0.0.0.0")``) serves a classroom
network, behind a token (made up and printed when not given). Every open page runs a kernel of
its own (:data:`KERNEL_MB`): at most ``--max-kernels`` run at once (the next student gets a page
saying the app is full, see :mod:`mono_utils.app_server`), and a kernel idle for ``--cull-idle``
seconds with its page closed is shut down. ``--preset`` names the preset served; one that is not
built is refused up front (its kernels would otherwise train it, page after page). The app
notebooks are a few calls into :func:`steering_app` and :func:`rating_app`.
"""
from __future__ import annotations

import contextlib
import html
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from .core.index import INDEX_VERSION
from .pipeline.indexes import get_index
from .pipeline.models import get_model, get_tokenizer, get_tokens, model_artifact_config
from .pipeline.parallel import die_with_parent
from .pipeline.presets import PRESETS, Preset, get_preset, validate
from .pipeline.saes import get_sae, sae_artifact_config
from .features.rating import RatingSession
from .features.widgets import RatingWidget, make_renderer
from .steering.catalog import DEMO_PROMPT, feature_catalog
from .steering.widget import SteeringWidget
from .store.artifacts import ArtifactStore, repo_root

APPS = {"steering": "steering_app.ipynb", "rating": "rating_app.ipynb"}
# the resident memory of one steering-app kernel on smoke, most of it torch: 602 MB RSS (433 MB of it
# its own), measured by tests/test_hardening_apps.py::test_h40_... (it prints them); larger presets hold more
KERNEL_MB = 600
# how long ``build`` takes, for the message of an app asked to serve a preset that is not built
BUILD_TIME = {"smoke": "about 2 minutes", "default": "about 40 minutes on a 2-core CPU",
              "paper-dry": "hours on a CPU", "paper": "hours, on a GPU"}
MIN_TOKEN = 8


def app_path(name: str) -> Path:
    if name not in APPS:
        raise ValueError(f"unknown app {name!r}: choose one of {', '.join(APPS)}")
    path = repo_root() / "apps" / APPS[name]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: restore it from git (git checkout -- apps/)")
    return path


def is_local(ip: str) -> bool:
    """Whether ``ip`` serves this machine only (loopback), so that no token is needed."""
    return ip in ("localhost", "::1") or ip.startswith("127.")


def default_max_kernels() -> int:
    """As many app kernels as three quarters of the memory available now holds (1 to 16)."""
    return max(1, min(16, int(psutil.virtual_memory().available * 0.75 // (KERNEL_MB * 2**20))))


def voila_command(name: str, port: int = 8866, ip: str = "127.0.0.1", open_browser: bool = False, *,
                  max_kernels: int = 8, cull_idle: int = 600, token: str | None = None) -> list[str]:
    """The Voila command line that serves app ``name`` (sources stripped, no browser opened).

    At most ``max_kernels`` pages are open at once (one kernel each; beyond, a page says the app
    is full); a kernel idle for ``cull_idle`` seconds with no page connected is shut down. Beyond
    localhost a ``token`` is required; it travels in ``$JUPYTER_TOKEN`` (see :func:`launch_app`),
    not on this command line, which any user of the machine can read with ``ps``.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    if not isinstance(max_kernels, int) or isinstance(max_kernels, bool) or max_kernels < 1:
        raise ValueError(f"max_kernels must be a positive integer (pages open at once), got {max_kernels!r}")
    if not isinstance(cull_idle, int) or isinstance(cull_idle, bool) or cull_idle < 1:
        raise ValueError(f"cull_idle must be a positive number of seconds, got {cull_idle!r}: a kernel left "
                         f"idle that long with its page closed is shut down")
    if token is not None and len(token) < MIN_TOKEN:
        raise ValueError(f"the token is {len(token)} characters long: use at least {MIN_TOKEN} "
                         f"(or leave --token out and one is made up for you)")
    if not is_local(ip) and not token:
        raise ValueError(f"serving on {ip} lets anyone on the network start kernels: it needs a token "
                         f"(leave --token out and one is made up and printed, or pass --token with "
                         f"{MIN_TOKEN}+ characters), or serve --ip 127.0.0.1")
    cmd = [sys.executable, "-m", "voila", str(app_path(name)), f"--port={port}", "--Voila.port_retries=0", f"--Voila.ip={ip}",
           "--strip_sources=True", "--theme=light", "--show_tracebacks=False",
           f"--Voila.root_dir={repo_root() / 'apps'}",
           "--VoilaConfiguration.multi_kernel_manager_class=mono_utils.app_server.CappedKernelManager",
           f"--CappedKernelManager.max_kernels={max_kernels}",
           f"--CappedKernelManager.cull_idle_timeout={cull_idle}",
           f"--CappedKernelManager.cull_interval={max(1, min(60, cull_idle // 4))}",
           # a page still open keeps its kernel: only closed tabs and loads that never connected are culled
           "--CappedKernelManager.cull_connected=False"]
    if token:
        cmd.append("--Voila.auto_token=True")   # Voila's identity provider then reads $JUPYTER_TOKEN
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def free_port(ip: str = "127.0.0.1", port: int = 8866, tries: int = 50) -> int:
    """``port`` if nothing listens there, else the next free one of the following ``tries``.

    The app prints the port this returns and pins Voila to it (``port_retries=0``), so the
    address printed is the one served (Voila on its own would move to the next port silently).
    """
    for p in range(port, min(65536, port + tries + 1)):
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind((ip if ip not in ("", "0.0.0.0") else "0.0.0.0", p))
            except OSError:
                continue
            return p
    raise OSError(f"ports {port}..{port + tries} on {ip} are all taken: pass --port with a free one")


def missing_artifacts(name: str, preset=None, store: ArtifactStore | None = None) -> list[str]:
    """What app ``name`` needs of ``preset`` that ``store`` has not built (nothing is built here)."""
    p = _preset(preset)
    store = store if store is not None else ArtifactStore()
    _, _, sae_cfg, sae_artifact = sae_artifact_config(p)
    needs = [("model A", "model", f"modelA-{p.name}", model_artifact_config(p, "A")),
             (f"SAE A/1 ({sae_artifact})", "sae", sae_artifact, sae_cfg)]
    missing = [label for label, kind, artifact, cfg in needs if not store.is_built(kind, artifact, cfg)]
    if name == "rating" and not missing:
        index_cfg = {"which": "A", "d_sae": p.sae_main, "sae": store.path("sae", sae_artifact, sae_cfg).name,
                     "model": store.path("model", f"modelA-{p.name}", needs[0][3]).name,
                     "index_tokens": p.index_tokens, "version": INDEX_VERSION}
        # the config get_index hashes into the index's folder name (tests/test_apps.py checks they agree)
        if not store.is_built("index", f"indexA-{p.sae_main}-{p.name}", index_cfg):
            missing.append("the activation index of A/1")
    return missing


def _preset(preset) -> Preset:
    """``preset`` (a Preset or a name) itself: unlike get_preset, ``$MONO_PRESET`` does not override it."""
    if isinstance(preset, Preset):
        return validate(preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return validate(PRESETS[preset])


def check_built(name: str, preset=None, store: ArtifactStore | None = None) -> None:
    """Refuse to serve a preset that is not built: the app's kernel would start training it behind
    "Executing 1 of 1" (the default preset: about 40 minutes), once per page load."""
    p = _preset(preset)
    store = store if store is not None else ArtifactStore()
    missing = missing_artifacts(name, p, store)
    if not missing:
        return
    built = [q for q in PRESETS if q != p.name and not missing_artifacts(name, q, store)]
    other = (f", or serve a preset that is built: --preset {built[0]}" if built else "")
    raise FileNotFoundError(
        f"the {name} app needs the {p.name} preset's {', '.join(missing)}, not built in {store.root}: build "
        f"it first with `python -m mono_utils build --preset {p.name}` ({BUILD_TIME.get(p.name, 'a while')})"
        f"{other}")


def lan_address() -> str:
    """This machine's address on its network (for the URL students type), or its host name."""
    with contextlib.suppress(OSError), contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        s.connect(("10.255.255.255", 1))   # UDP: nothing is sent, the kernel only picks the outgoing address
        return s.getsockname()[0]
    return socket.gethostname()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_app(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """Stop a Voila started by :func:`launch_app` and the kernels it started; its exit status.

    SIGTERM lets Voila shut its kernels down; a kernel still alive after ``timeout`` (Voila was
    stuck, or killed) is killed by its process id, which this function read beforehand.
    """
    kernels = []
    with contextlib.suppress(psutil.Error):
        kernels = psutil.Process(proc.pid).children(recursive=True)
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(kernels, timeout=timeout / 2)
    for k in alive:
        with contextlib.suppress(psutil.Error):
            k.kill()
    return proc.returncode


def launch_app(name: str, port: int = 8866, *, ip: str = "127.0.0.1", open_browser: bool = False,
               env: dict | None = None, wait: bool = True, log=None, preset=None, store=None,
               max_kernels: int | None = None, cull_idle: int = 600, token: str | None = None,
               check: bool = True):
    """Serve app ``name`` ("steering" or "rating") with Voila, for ``preset`` built in ``store``.

    ``wait=True`` (the CLI) blocks until Ctrl-C or SIGTERM, stops Voila and its kernels, and
    returns the exit status; ``wait=False`` returns the running ``subprocess.Popen`` (tests; stop
    it with :func:`stop_app`). ``env`` adds environment variables for the app's kernel; ``preset``
    and ``store`` default to its (or this process's) ``MONO_PRESET`` and ``MONO_ARTIFACTS``. A
    preset that is not built is refused (:func:`check_built`; ``check=False`` skips it). ``max_kernels`` (default: what three
    quarters of the free memory holds, :data:`KERNEL_MB` each) caps the pages open at once;
    ``cull_idle`` seconds free a closed page's kernel. Beyond localhost a token is required:
    ``token=None`` makes one up; the URL printed carries it.
    """
    try:
        import voila  # noqa: F401
    except ImportError as e:
        raise ImportError("the apps need Voila: pip install voila (it is in requirements.txt)") from e
    if not is_local(ip) and token is None:
        token = secrets.token_urlsafe(16)
    max_kernels = default_max_kernels() if max_kernels is None else max_kernels
    voila_command(name, port, ip, open_browser, max_kernels=max_kernels, cull_idle=cull_idle,
                  token=token)   # checks the name, port, cap and token first
    asked = {**os.environ, **(env or {})}
    p = _preset(preset if preset is not None else asked.get("MONO_PRESET") or "default")
    store = store if isinstance(store, ArtifactStore) else ArtifactStore(store or asked.get("MONO_ARTIFACTS") or None)
    if check:
        check_built(name, p, store)
    served = free_port(ip, port)
    cmd = voila_command(name, served, ip, open_browser, max_kernels=max_kernels, cull_idle=cull_idle, token=token)
    full_env = {**os.environ, **(env or {}), "MONO_PRESET": p.name, "MONO_ARTIFACTS": str(store.root.resolve())}
    full_env.pop("JUPYTER_TOKEN_FILE", None)
    if token:
        full_env["JUPYTER_TOKEN"] = token
    else:
        full_env.pop("JUPYTER_TOKEN", None)
    full_env["PYTHONPATH"] = os.pathsep.join(d for d in (str(repo_root()), full_env.get("PYTHONPATH", "")) if d)
    taken = f" (port {port} is taken)" if served != port else ""
    host = ip if is_local(ip) or ip not in ("", "0.0.0.0", "::") else lan_address()
    url = f"http://{host}:{served}/" + (f"?token={token}" if token else "")
    print(f"serving the {name} app ({p.name} preset) on {url}{taken}" + (" (Ctrl-C to stop)" if wait else ""),
          flush=True)
    print(f"at most {max_kernels} pages open at once (each holds about {KERNEL_MB} MB; --max-kernels to change); "
          f"a closed page's kernel is freed after {cull_idle} s idle", flush=True)
    popen = dict(env=full_env, cwd=repo_root() / "apps",
                 preexec_fn=die_with_parent if sys.platform == "linux" else None)
    if not wait:
        proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if log else subprocess.DEVNULL, start_new_session=True, **popen)
        proc.port, proc.url = served, url
        return proc
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None   # SIGTERM, like Ctrl-C, stops Voila
    proc = None
    try:
        proc = subprocess.Popen(cmd, **popen)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            stop_app(proc)
        if main:
            signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------- the apps' contents
def steering_app(preset=None, store=None, which: str = "A", prompt: str | None = None):
    """The steering widget on the demo prompt with the DNA feature (or the first live one) pinned."""
    p = get_preset(preset)
    model = get_model(p, store, which=which, progress=False)
    tok = get_tokenizer(p, store)
    data = get_tokens(p, store)
    sae = get_sae(p, which=which, store=store, progress=False)
    tv, _, sv = data.split("val")
    rows = min(len(tv), max(16, p.eval_tokens // p.n_ctx))
    catalog = feature_catalog(model, sae, tv[:rows], sv[:rows], data.subdomain_names, tok, progress=False)
    feature = None
    if "dna" in data.subdomain_names:
        feature = catalog.domain_feature("dna")
    if feature is None:
        feature = int(catalog.search("")[0])
    return SteeringWidget(model, tok, sae, catalog, prompt=prompt or DEMO_PROMPT, features=[int(feature)])


def rating_app(preset=None, store=None, which: str = "A", seed: int = 0, n_features: int = 20,
               n_neurons: int = 20, folder=None):
    """A name box, then the blinded rating form for that rater (saved after every unit)."""

    import ipywidgets as W  # lazy: widgets only in a notebook

    p = get_preset(preset)
    model = get_model(p, store, which=which, progress=False)
    tok = get_tokenizer(p, store)
    sae = get_sae(p, which=which, store=store, progress=False)
    index = get_index(p, which=which, store=store, sae=sae, model=model, progress=False)
    render = make_renderer(index, model, tok, sae)
    name = W.Text(value=os.environ.get("MONO_RATER", ""), placeholder="your name (letters, digits, - or _)",
                  description="rater")
    start = W.Button(description="start rating", button_style="primary")
    status = W.HTML()
    box = W.VBox([W.HTML("<h3>Rate features and neurons (blinded)</h3>"), W.HBox([name, start]), status])
    name.add_class("mono-app-rater")
    start.add_class("mono-app-start")
    status.add_class("mono-app-status")

    def begin(_=None):
        try:
            session = RatingSession(index, name.value, seed=seed, n_features=n_features,
                                    n_neurons=n_neurons, folder=folder)
        except ValueError as e:
            status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        form = RatingWidget(session, render)
        box.children = [W.HTML(f"<small>ratings are saved to {html.escape(str(session.path))}</small>"),
                        form.widget]
        box.form = form

    start.on_click(begin)
    box.begin = begin
    return box
