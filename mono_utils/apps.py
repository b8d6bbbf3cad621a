"""Classroom apps: the steering and rating widgets served by Voila (no code shown).

``python -m mono_utils app steering`` (or ``rating``) runs :func:`launch_app`, which serves
``apps/<name>_app.ipynb`` with Voila on http://127.0.0.1:8866 and opens nothing else; students
only see the widgets. ``--ip 0.0.0.0`` (``launch_app(..., ip="0.0.0.0")``) serves a classroom
network. The app notebooks are a few calls into :func:`steering_app` and :func:`rating_app`,
which build everything they need from the artifact store (or build it first, on ``smoke``).
"""
from __future__ import annotations

import contextlib
import html
import os
import socket
import subprocess
import sys
from pathlib import Path

from .pipeline.indexes import get_index
from .pipeline.models import get_model, get_tokenizer, get_tokens
from .pipeline.presets import get_preset
from .pipeline.saes import get_sae
from .features.rating import RatingSession
from .features.widgets import RatingWidget, make_renderer
from .steering.catalog import DEMO_PROMPT, feature_catalog
from .steering.widget import SteeringWidget
from .store.artifacts import repo_root

APPS = {"steering": "steering_app.ipynb", "rating": "rating_app.ipynb"}


def app_path(name: str) -> Path:
    if name not in APPS:
        raise ValueError(f"unknown app {name!r}: choose one of {', '.join(APPS)}")
    path = repo_root() / "apps" / APPS[name]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: restore it from git (git checkout -- apps/)")
    return path


def voila_command(name: str, port: int = 8866, ip: str = "127.0.0.1", open_browser: bool = False) -> list[str]:
    """The Voila command line that serves app ``name`` (sources stripped, no browser opened)."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    cmd = [sys.executable, "-m", "voila", str(app_path(name)), f"--port={port}", "--Voila.port_retries=0", f"--Voila.ip={ip}",
           "--strip_sources=True", "--theme=light", "--show_tracebacks=False",
           f"--Voila.root_dir={repo_root() / 'apps'}"]
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


def launch_app(name: str, port: int = 8866, *, ip: str = "127.0.0.1", open_browser: bool = False,
               env: dict | None = None, wait: bool = True, log=None):
    """Serve app ``name`` ("steering" or "rating") with Voila.

    ``wait=True`` (the CLI) blocks until Ctrl-C and returns the exit status; ``wait=False``
    returns the running ``subprocess.Popen`` (tests). ``env`` adds environment variables for
    the app's kernel (e.g. ``MONO_PRESET``, ``MONO_ARTIFACTS``).
    """
    try:
        import voila  # noqa: F401
    except ImportError as e:
        raise ImportError("the apps need Voila: pip install voila (it is in requirements.txt)") from e
    voila_command(name, port, ip, open_browser)   # checks the name and port first
    served = free_port(ip, port)
    cmd = voila_command(name, served, ip, open_browser)
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root()), full_env.get("PYTHONPATH", "")) if p)
    taken = f" (port {port} is taken)" if served != port else ""
    print(f"serving the {name} app on http://{ip}:{served}/{taken}" + (" (Ctrl-C to stop)" if wait else ""), flush=True)
    if wait:
        try:
            return subprocess.call(cmd, env=full_env, cwd=repo_root() / "apps")
        except KeyboardInterrupt:
            return 0
    proc = subprocess.Popen(cmd, env=full_env, cwd=repo_root() / "apps", stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log else subprocess.DEVNULL, start_new_session=True)
    proc.port = served
    return proc


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
