"""The README's three pictures, taken from the current build in headless Chromium (docs/img/*.png).

1. ``atlas.png``: the atlas's index page (``runs/<preset>/atlas/index.html``, written by ``make run``);
2. ``dashboard.png``: one feature's page in the atlas (by default A/1's most Hebrew-specific feature);
3. ``steering.png``: the steering app (``python -m mono_utils app steering``), the feature pinned.

Needs a finished ``make run`` (the atlas and the built store) and Chromium (``make browser-deps``).
Every page is opened with requests outside the folder or localhost aborted, as the tests do.

Usage: .venv/bin/python benchmarks/screenshots.py [--preset default] [--feature N] [--out docs/img]
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mono_utils.atlas.site import ReadOnlyStore
from mono_utils.pipeline.presets import get_preset
from mono_utils.steering.catalog import get_feature_catalog
from mono_utils.store.artifacts import ArtifactStore, repo_root

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def most_specific(catalog, domain: str) -> int:
    """The feature whose firings fall most in ``domain`` (among features firing there at least 20 times)."""
    names = [n.lower() for n in catalog.subdomain_names]
    j = names.index(domain)
    fires = catalog.sub_fires[:, j]
    share = fires / np.maximum(catalog.sub_fires.sum(1), 1)
    share[fires < 20] = -1
    return int(np.argmax(share))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--artifacts", default=None)
    ap.add_argument("--feature", type=int, default=None, help="the feature to show (default: the Hebrew one)")
    ap.add_argument("--out", default=str(repo_root() / "docs" / "img"))
    a = ap.parse_args()
    p, store = get_preset(a.preset), ArtifactStore(a.artifacts)
    atlas = repo_root() / "runs" / p.name / "atlas" / "index.html"
    if not atlas.exists():
        print(f"no atlas at {atlas}: run `make run` first")
        return 1
    feature = a.feature if a.feature is not None else most_specific(
        get_feature_catalog(p, ReadOnlyStore(store), progress=False), "hebrew")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright
    port = free_port()
    env = dict(os.environ, MONO_PRESET=p.name)
    if a.artifacts:
        env["MONO_ARTIFACTS"] = str(Path(a.artifacts).resolve())
    app = subprocess.Popen([sys.executable, "-m", "mono_utils", "app", "steering", "--preset", p.name,
                            "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                        viewport={"width": 1280, "height": 860})

            def local_only(route):
                url = route.request.url
                ok = url.startswith(("file://", "data:", "blob:")) or re.match(r"^(https?|wss?)://127\.0\.0\.1", url)
                return route.continue_() if ok else route.abort()

            ctx.route("**/*", local_only)
            page = ctx.new_page()
            page.goto(atlas.as_uri())
            page.wait_for_selector("table tbody tr", timeout=60_000)
            time.sleep(1.5)
            page.screenshot(path=str(out / "atlas.png"))
            # the unit's page: set the hash in the open page (a goto to the same file with a new fragment
            # showed the index page again) and wait until the page is the unit's (its crumbs)
            page.evaluate(f"() => {{ location.hash = '#/A1/{feature}'; }}")
            page.wait_for_selector(".crumbs", timeout=60_000)
            time.sleep(2)
            page.screenshot(path=str(out / "dashboard.png"))
            print(f"atlas.png, dashboard.png (A/1 feature {feature})")

            url = None
            deadline = time.time() + 600
            while url is None and time.time() < deadline:
                line = app.stdout.readline()
                if not line and app.poll() is not None:
                    raise RuntimeError("the steering app stopped before it served a page")
                m = re.search(r"(http://127\.0\.0\.1:\d+\S*)", line or "")
                url = m.group(1) if m else None
            for attempt in range(60):     # the app prints its address a moment before it listens
                try:
                    page.goto(url, timeout=120_000)
                    break
                except Exception as e:  # noqa: BLE001 - connection refused until the server is up
                    if "ERR_CONNECTION_REFUSED" not in str(e) or attempt == 59:
                        raise
                    time.sleep(2)
            page.wait_for_selector(".mono-steer-output", timeout=300_000)
            page.wait_for_function("() => /steered:/.test(document.querySelector('.mono-steer-output').innerText)",
                                   timeout=300_000)
            time.sleep(2)
            page.screenshot(path=str(out / "steering.png"), full_page=False)
            print("steering.png")
            ctx.close()
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
