"""The feature atlas (``python -m mono_utils atlas``) in real headless Chromium, opened from file://:
the index opens, a token search finds a unit, its dashboard shows its examples, the link to its B/1
match opens that unit, the density histogram filters the list, and no request leaves the folder."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from harness import SCREENSHOTS, require_browser


def _data(path: Path):
    first = path.read_text(encoding="utf-8").split("\n")[0] + "\n"   # vocab.js: the strings, then the bytes
    m = re.fullmatch(r'ATLAS\.put\(("[^"]*"),(.*)\);\n', first, re.S)
    return json.loads(m.group(2))


@pytest.fixture(scope="module")
def atlas_dir(smoke_store, smoke_preset, tmp_path_factory):
    require_browser()
    from mono_utils.atlas.site import build_atlas
    out = tmp_path_factory.mktemp("atlas-browser") / "atlas"
    build_atlas(smoke_preset, out, saes=("B/1",), store=smoke_store, progress=False)
    return out.resolve()


def _target(atlas: Path):
    """A token whose strongest A/1 feature has a B/1 match: (token text, feature, B feature, A units B lists)."""
    vocab = _data(atlas / "data" / "vocab.js")
    tokens = _data(atlas / "data" / "A1" / "tokens.js")
    units = _data(atlas / "data" / "A1" / "units.js")
    shard = units["shard"]
    occ = tokens["_occ"]
    for t in sorted(occ, key=lambda t: (-occ[t], int(t))):
        text = vocab[int(t)]
        if t not in tokens or vocab.count(text) != 1 or not text.strip() or "\n" in text or "\ufffd" in text:
            continue
        u = tokens[t][0][0]
        rec = _data(atlas / "data" / "A1" / "d" / f"{u // shard:04d}.js")[u % shard]
        ab = rec.get("x", {}).get("ab", {})
        if "unit" in ab:
            j = ab["unit"]
            b = _data(atlas / "data" / "B1" / "d" / f"{j // shard:04d}.js")[j % shard]
            return text, u, j, [x[0] for x in b["x"]["ba"]["units"]]
    pytest.fail("no token of the smoke index has a top feature with a B/1 match")


def test_atlas_offline_in_chromium(atlas_dir, browser_context):
    text, unit, b_unit, b_lists = _target(atlas_dir)
    page = browser_context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto((atlas_dir / "index.html").as_uri())
        # the index opens: the A/1 table, its histogram, dead/ultralow counts
        page.wait_for_selector("table.units tbody tr", timeout=15_000)
        assert page.locator("h1").first.inner_text().startswith("A/1")
        assert page.locator("svg.hist rect.bar").count() > 0
        n_all = page.locator("p.count").first.inner_text()
        # a token search (typed the way the page shows tokens: spaces as ·) finds the unit
        page.fill("#q", text.replace(" ", "\u00b7"))
        page.press("#q", "Enter")
        first = page.locator("table.units tbody tr").first
        page.wait_for_function("u => { const r = document.querySelector('table.units tbody tr');"
                               " return r && r.dataset.unit === String(u); }", arg=unit, timeout=15_000)
        assert "Units that fire most on" in page.locator("#results").inner_text()
        # its dashboard opens and shows its examples
        first.locator("a.unitlink").click()
        page.wait_for_selector(".examples .ctx", timeout=15_000)
        assert page.locator("h1").first.inner_text() == f"A/1 #{unit}"
        assert page.locator(".examples .ctx").count() >= 2
        assert page.locator(".examples .ctx bdi.peak").count() >= 1
        shaded = page.evaluate("() => Array.from(document.querySelectorAll('.examples .ctx bdi.ct'))"
                               ".filter(e => e.style.background.startsWith('rgba')).length")
        assert shaded >= 1, "no activation is shaded"
        page.screenshot(path=str(_shot("atlas_dashboard")))
        # the link to its B/1 match opens that unit, which names it back
        link = page.locator(".knows .match a.unitlink").first
        assert link.inner_text() == f"B/1 #{b_unit}"
        link.click()
        page.wait_for_function("j => { const h = document.querySelector('h1');"
                               " return h && h.textContent === 'B/1 #' + j; }", arg=b_unit, timeout=15_000)
        page.wait_for_selector(".examples .ctx", timeout=15_000)
        if unit in b_lists:
            assert page.locator(f'.knows .match a[href="#/A1/{unit}"]').count() == 1
        page.go_back()
        page.wait_for_function("u => { const h = document.querySelector('h1');"
                               " return h && h.textContent === 'A/1 #' + u; }", arg=unit, timeout=15_000)
        # the log-density histogram: a click lists that bin's units only
        page.goto((atlas_dir / "index.html").as_uri() + "#/A1")
        page.wait_for_selector("svg.hist rect.hit")
        bars = page.locator("svg.hist rect.bar")
        heights = [float(bars.nth(i).get_attribute("height")) for i in range(bars.count())]
        i = max(range(len(heights)), key=heights.__getitem__)
        page.locator(f'svg.hist rect.hit[data-bin="{i}"]').dispatch_event("click")
        page.wait_for_selector(".chip")
        assert page.locator("p.count").first.inner_text() != n_all
        assert page.locator("svg.hist rect.bar.sel").count() == 1
    finally:
        page.close()
    assert not errors, errors
    root = atlas_dir.as_uri().rstrip("/") + "/"
    outside = [u for u in requests if not (u.startswith("file://") and
                                           Path(unquote(urlparse(u).path)).resolve().is_relative_to(atlas_dir))]
    assert not outside, f"requests outside the atlas folder {root}: {outside[:5]}"
    assert any("/data/A1/tokens.js" in u for u in requests) and any("/data/B1/d/" in u for u in requests)


def _shot(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
