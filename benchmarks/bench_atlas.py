"""Time and size of the feature atlas (``python -m mono_utils atlas``) of a built store.

The issue's goal: A/1 + model A's neurons of the default preset in at most 2 minutes on the
2-core machine once the activation index exists, and at most 60 MB. The script first loads (and
builds, if missing: not timed) everything the atlas reads, then times ``build_atlas`` and prints
the seconds per part and the bytes per unit set. With ``--screenshot PATH`` it also opens the
result in headless Chromium from file://, prints how long the index page takes to show its table
and how many bytes it loaded, and saves a PNG of one dashboard (the Hebrew demo feature of the
steering catalog when there is one).

The live atlas (``mono_utils.atlas.live``, written unless ``--no-live``): with ``--live-times``
the script opens it in headless Chromium from file:// and prints the live folder's size, the time
to interactive (navigation until the first typed text is analysed: runtime, tokenizer, model and A/1 loaded), one forward pass of
a full context (128 tokens on default; the preset's n_ctx) with A/1's encode (median of 5 after a
warm-up), and 40 greedy tokens steered by one A/1 feature (a forward pass and an encode per token).

Usage: .venv/bin/python benchmarks/bench_atlas.py [--preset default] [--out runs/default/atlas]
       [--sae B/1 ...] [--screenshot docs/atlas.png] [--no-live] [--live-times]
       .venv/bin/python benchmarks/bench_atlas.py --existing runs/default/atlas --json runs/default/bench-atlas.json
       (make run's atlas as it is: its size and the live times; ``make results`` reads the JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def warm(preset, store, saes) -> None:
    """Build (not timed) whatever the atlas reads, so that the timed run only gathers and writes."""
    from mono_utils.atlas import site
    from mono_utils.autointerp.run import get_offline_scores
    from mono_utils.pipeline.saes import get_sae_family
    from mono_utils.splitting.family import get_family_analysis
    from mono_utils.steering.catalog import get_feature_catalog
    from mono_utils.universality.cache import get_comparison
    site.load_sets(preset, store, saes)
    get_comparison(preset, store)
    get_family_analysis(preset, store, family=get_sae_family(preset, store, which="A"))
    get_offline_scores(preset, store)
    get_feature_catalog(preset, store)


def screenshot(out: Path, path: Path) -> dict:
    """Open the atlas from file:// in headless Chromium; time the first page; save one dashboard."""
    out = Path(out).resolve()
    from playwright.sync_api import sync_playwright
    meta_text = (out / "data" / "meta.js").read_text(encoding="utf-8")
    meta = json.loads(re.fullmatch(r'ATLAS\.put\("meta",(.*)\);\n', meta_text, re.S).group(1))
    demo = meta.get("knows", {}).get("steering", {}).get("demo", {})
    unit = demo.get("hebrew", demo.get("dna", 0))
    res = {"unit": unit}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=os.environ.get("MONO_CHROMIUM", "/usr/bin/chromium"), headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1280, "height": 820})
        loaded, outside = [], []
        page.on("request", lambda r: loaded.append(r.url))
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(out.resolve().as_uri()) else None)
        t = time.perf_counter()
        page.goto((out / "index.html").as_uri())
        page.wait_for_selector("table.units tbody tr")
        res["first_page_s"] = round(time.perf_counter() - t, 2)
        res["first_page_files"] = len(loaded)
        res["first_page_bytes"] = sum(Path(re.sub("^file://", "", u).split("#")[0]).stat().st_size for u in loaded)
        page.goto((out / "index.html").as_uri() + f"#/A1/{unit}")
        page.wait_for_selector(".examples .ctx")
        t = time.perf_counter()
        page.goto((out / "index.html").as_uri() + f"#/A1/{unit + 1}")
        page.wait_for_function("u => document.querySelector('h1').textContent === 'A/1 #' + u", arg=unit + 1)
        res["dashboard_s"] = round(time.perf_counter() - t, 2)
        page.goto((out / "index.html").as_uri() + f"#/A1/{unit}")
        page.wait_for_selector(".examples .ctx")
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        res["requests_outside"] = outside
        b.close()
    res["png_bytes"] = path.stat().st_size
    return res


def live_times(out: Path) -> dict:
    """The live atlas in headless Chromium from file://: time to interactive, a full-context forward
    pass with A/1's encode, 40 steered greedy tokens (see the module docstring)."""
    out = Path(out).resolve()
    from playwright.sync_api import sync_playwright
    res = {"live_bytes": sum(p.stat().st_size for p in (out / "live").rglob("*") if p.is_file())}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=os.environ.get("MONO_CHROMIUM", "/usr/bin/chromium"), headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not (r.url.startswith(out.as_uri())
                                                                    or r.url.startswith("data:")) else None)
        t = time.perf_counter()
        page.goto((out / "index.html").as_uri())
        page.wait_for_function("() => window.ATLAS && ATLAS.live")
        page.evaluate("() => ATLAS.live.analyse('Hello', 'A1').then(() => true)")   # the first answer: model and A/1 ready
        res["time_to_interactive_s"] = round(time.perf_counter() - t, 2)
        res["init_in_page_s"] = round(page.evaluate("() => ATLAS.live.t.init_ms") / 1000, 2)
        res.update(page.evaluate("""async () => {
            const L = ATLAS.live, n = L.meta.n_ctx;
            const ids = [L.meta.bos];
            for (let i = 1; i < n; i++) ids.push((i * 37) % L.meta.d_vocab);
            const once = async () => { const r = await L.forward(ids); await L.encode('A1', r.act.data, r.T); };
            await once();
            const ms = [];
            for (let k = 0; k < 5; k++) { const t = performance.now(); await once(); ms.push(performance.now() - t); }
            ms.sort((a, b) => a - b);
            const t = performance.now();
            const g = await L.generate({prompt: '1,2,3,4,5,6,7,8,9,10', set: 'A1', unit: 0, mode: 'clamp', value: 10,
                                        n: 40, temperature: 0});
            return {forward_tokens: n, forward_encode_ms: Math.round(ms[2] * 10) / 10,
                    generate_40_s: Math.round(performance.now() - t) / 1000, generated: g.ids.length};
        }"""))
        res["requests_outside"] = outside
        b.close()
    return res


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def time_existing(out: Path, json_path: str | None) -> int:
    """Size and live times of an atlas already written; with ``json_path``, the figures as JSON too."""
    if not (out / "index.html").is_file():
        raise SystemExit(f"no atlas in {out}: write one first (make run, or python -m mono_utils atlas --out {out})")
    files = [f for f in out.rglob("*") if f.is_file()]
    res = {"atlas_bytes": sum(f.stat().st_size for f in files), "atlas_files": len(files)}
    if (out / "live").is_dir():
        res.update(live_times(out))
    res.update(date=time.strftime("%Y-%m-%d"), commit=_commit(),
               machine=f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
               load_average_after=round(os.getloadavg()[0], 2))
    print(json.dumps(res, indent=1))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(json_path).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        tmp.replace(json_path)
    return 0


def main() -> int:
    from mono_utils.atlas import site
    from mono_utils.pipeline.presets import get_preset
    from mono_utils.store.artifacts import ArtifactStore
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--out", default=None, help="folder to write (default: a temporary one)")
    ap.add_argument("--sae", action="append", default=[], help="as for python -m mono_utils atlas")
    ap.add_argument("--screenshot", default=None, help="save a PNG of one dashboard here")
    ap.add_argument("--no-live", action="store_true", help="the static atlas alone (as python -m mono_utils atlas --no-live)")
    ap.add_argument("--live-times", action="store_true", help="time the live model in headless Chromium")
    ap.add_argument("--artifacts", default=None, help="artifact store (default data/artifacts or $MONO_ARTIFACTS)")
    ap.add_argument("--no-build", action="store_true",
                    help="build nothing (the unit sets' indexes must be built; analyses not built are left out)")
    ap.add_argument("--existing", default=None,
                    help="time an atlas already written (e.g. make run's runs/default/atlas): no build, no writing")
    ap.add_argument("--json", default=None,
                    help="also write the figures here as JSON (make results reads runs/<preset>/bench-atlas.json)")
    args = ap.parse_args()
    if args.existing:
        return time_existing(Path(args.existing), args.json)
    preset, store = get_preset(args.preset), ArtifactStore(args.artifacts)
    if not args.no_build:
        warm(preset, store, args.sae)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "atlas"
        t = time.perf_counter()
        rep = site.build_atlas(preset, out, args.sae, store, progress=False, live=not args.no_live,
                               build_missing=not args.no_build)
        wall = time.perf_counter() - t
        print(f"atlas of {args.preset} ({', '.join(rep['sets'])}): {wall:.1f} s wall, "
              f"{rep['bytes'] / 1e6:.1f} MB in {rep['files']} files")
        print("seconds:", json.dumps(rep["seconds"]))
        for key, s in rep["sets"].items():
            print(f"  {key:7s} {sum(s['bytes'].values()) / 1e6:6.1f} MB  {s['seconds']:6.1f} s  "
                  + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in s["bytes"].items()))
        if rep.get("live"):
            print(f"  live    {rep['live']['total'] / 1e6:6.1f} MB  ({', '.join(rep['live']['sets'])}) "
                  + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(rep["live"]["bytes"].items(), key=lambda kv: -kv[1])[:6]))
        if args.screenshot:
            print("browser:", json.dumps(screenshot(out, Path(args.screenshot))))
        if args.live_times and rep.get("live"):
            print("live:", json.dumps(live_times(out)))
    print(f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}; "
          f"load average {os.getloadavg()[0]:.1f} when done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
