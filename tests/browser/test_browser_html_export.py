"""Every executed notebook as a teacher posts it: ``python -m mono_utils.html_export`` of the copies that
``run-notebooks`` writes, opened from file:// in headless Chromium that may load nothing else (every
other request is aborted and counted). Each page must draw every plotly figure and circuitsvis view,
typeset every formula, show no widget placeholder, no raw dump and no "�"; executed 06 stays under 1 MB.

The notebooks are executed once per session on the smoke preset (as tests/test_notebooks.py does);
``MONO_TEST_EXECUTED=/some/dir`` reuses executed copies there (and fills in missing ones) while developing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness import SCREENSHOTS, require_browser

from mono_utils.core.tokenizer import decode_run
from mono_utils.html_export import export_all, find_math
from mono_utils.notebooks import PLOTLY_MIME, notebook_paths

NOTEBOOKS = notebook_paths()
REPO_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ATLAS_JS = Path(__file__).resolve().parents[2] / "mono_utils" / "atlas" / "assets" / "atlas.js"
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
# What must never reach a reader: a widget's repr or placeholder, a dict dumped by print, a float printed
# with all its digits, a byte that decoded to the replacement character.
PLACEHOLDERS = re.compile(r"<FigureWidget|FigureWidget\(|<Figure\b|VBox\(children|HBox\(children|"
                          r"its final figure>|Error displaying widget")
RAW_DICT = re.compile(r"\{'[A-Za-z_][\w ]*': ")
LONG_FLOAT = re.compile(r"\d\.\d{9,}")


class Executed:
    """Executed copies on the smoke preset (conftest.executed_notebooks: one run per session, shared with
    tests/test_notebooks.py), each exported the first time a test asks for it."""

    def __init__(self, run, html: Path):
        self.run, self.html, self.pages = run, html, {}

    def notebook(self, name: str) -> Path:
        r, out = self.run(REPO_NOTEBOOKS / name)
        assert r["ok"], f"{name} failed:\n{r['log']}"
        return out

    def page(self, name: str) -> dict:
        if name not in self.pages:
            r = export_all([self.notebook(name)], self.html)[0]
            print(f"{name}: notebook {r['notebook_bytes'] / 1e6:.2f} MB, page {r['bytes'] / 1e6:.2f} MB, "
                  f"{r['figures']} figures, {r['widgets']} widgets, {r['math']} formulas")
            self.pages[name] = r
        return self.pages[name]


@pytest.fixture(scope="module")
def executed(executed_notebooks, tmp_path_factory) -> Executed:
    require_browser()
    return Executed(executed_notebooks, tmp_path_factory.mktemp("html"))


class FilePages:
    """Pages of the session's Chromium (harness.browser_context: a second ``sync_playwright`` in the same
    process fails once the Lab tests have started theirs), each routed so that anything off file:// is
    aborted and remembered: a page that needs it would break offline."""

    def __init__(self, ctx):
        self.ctx, self.mono_left = ctx, []

    def new_page(self):
        page = self.ctx.new_page()
        page.set_default_timeout(60_000)

        def route(r):
            if r.request.url.startswith(LOCAL_SCHEMES):
                r.continue_()
            else:
                self.mono_left.append(r.request.url)
                r.abort()
        page.route("**/*", route)
        return page


@pytest.fixture(scope="module")
def chromium(browser_context):
    require_browser()
    return FilePages(browser_context)


def _outputs(nb: dict):
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


PAGE_STATE = """() => {
  const figs = [...document.querySelectorAll('.mono-plotly')];
  const cv = [...document.querySelectorAll('[id^="circuits-vis-"]')];
  const text = sel => [...document.querySelectorAll(sel)].map(e => e.innerText).join('\\n');
  return {figures: figs.length,
          drawn: figs.filter(d => d.querySelector('svg.main-svg, canvas')).length,
          missing: [...document.querySelectorAll('.mono-plotly-missing')].filter(e => e.offsetParent).length,
          circuitsvis: cv.length, circuitsvisDrawn: cv.filter(e => e.childElementCount > 0).length,
          math: document.querySelectorAll('math').length,
          markdown: text('.jp-MarkdownCell .jp-RenderedMarkdown'),
          outputs: text('.jp-OutputArea-output'),
          body: document.body.innerText};
}"""


# A known defect, reported rather than hidden. Notebook 03's long float was corpus text (a constant of scipy's
# source quoted whole in the offline explanation's "Seen in contexts like", shown by the game); the quote now
# marks the active tokens (autointerp.offline._marked). What remains: the explainer's prompt, the explanations
# and the examples show a byte split across tokens as "\ufffd": autointerp's EvalCorpus.from_tokenizer reads
# vocabulary strings with str_tokens, not as the atlas shows them (readable_vocab)
# notebooks whose export is known to fail, with why (none: notebook 03's split bytes, the last, now show as ‹d7›)
KNOWN: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(p.name, marks=pytest.mark.xfail(reason=KNOWN[p.name], strict=False))
                                  if p.name in KNOWN else p.name for p in NOTEBOOKS])
def test_exported_page_shows_everything_offline(name, executed, chromium):
    nb = json.loads(executed.notebook(name).read_text(encoding="utf-8"))
    exported = executed.page(name)
    outs = _outputs(nb)
    assert not [o for o in outs if o.get("output_type") == "error"], f"{name} has an error output"
    n_plotly = sum(PLOTLY_MIME in o.get("data", {}) for o in outs)
    n_math = sum(len(find_math("".join(c["source"]) if isinstance(c["source"], list) else c["source"]))
                 for c in nb["cells"] if c["cell_type"] == "markdown")
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    chromium.mono_left.clear()
    try:
        page.goto(Path(exported["html"]).as_uri(), wait_until="load")
        page.wait_for_function("() => [...document.querySelectorAll('.mono-plotly')].every("
                               "d => d.querySelector('svg.main-svg, canvas'))", timeout=120_000)
        st = page.evaluate(PAGE_STATE)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"html-export-{Path(name).stem}.png"), full_page=True)
    finally:
        page.close()
    assert not chromium.mono_left, f"{name}: the page tried to load {sorted(set(chromium.mono_left))[:5]}"
    assert not errors, f"{name}: JavaScript errors on the page: {errors[:3]}"
    assert st["figures"] == n_plotly == exported["figures"], \
        f"{name}: {n_plotly} plotly outputs in the notebook, {st['figures']} figures on the page"
    assert st["drawn"] == st["figures"] and not st["missing"], f"{name}: {st['figures'] - st['drawn']} figure(s) not drawn"
    assert st["circuitsvis"] == st["circuitsvisDrawn"], f"{name}: a circuitsvis view is empty"
    assert st["math"] == n_math, f"{name}: {n_math} formulas in the prose, {st['math']} typeset"
    assert not find_math(st["markdown"]), f"{name}: raw LaTeX in the prose: {find_math(st['markdown'])[:3]}"
    for pattern, what in ((PLACEHOLDERS, "a widget placeholder"), (RAW_DICT, "a raw dict dump"),
                          (LONG_FLOAT, "a float printed with all its digits")):
        m = pattern.search(st["outputs"])
        assert m is None, f"{name}: {what} in the outputs: ...{st['outputs'][max(0, m.start() - 80):m.end() + 80]}..."
    assert "\ufffd" not in st["body"], f"{name}: a byte shown as \ufffd (should read as the atlas shows it)"


@pytest.mark.slow
def test_executed_06_is_small(executed):
    size = executed.notebook("06_steering.ipynb").stat().st_size
    assert size < 1_000_000, f"executed 06 is {size / 1e6:.2f} MB: a widget's saved state came back"


CASES = [[b"ab", "ש".encode()[:1], "ש".encode()[1:], b"c"],        # a Hebrew letter split in two tokens
         ["ع".encode()[:1]], ["α".encode()[1:]],                      # a lone lead byte, a lone continuation
         [b"\xff\xce", "α".encode(), b"x"], ["🦄".encode()[:3], "🦄".encode()[3:] + b" hi"], [b""],
         [b"\xed\xa0\x80"]]                                          # an encoded surrogate is no character


def test_split_bytes_read_as_the_atlas_reads_them(chromium):
    """``decode_run`` (notebooks, widgets) gives what the atlas's own JavaScript gives, byte for byte."""
    src = ATLAS_JS.read_text(encoding="utf-8")
    start, end = src.index("var vhex = A.data.vocabhex"), src.index("function tokLabel")
    page = chromium.new_page()
    try:
        page.goto("about:blank")
        for pieces in CASES:
            vocabhex = [p.hex() for p in pieces]
            js = ("(vocabhex) => { var A = {data: {vocabhex: vocabhex}}, vocab = [];"
                  " function tokText(id) { return vocab[id]; }\n" + src[start:end] +
                  "\nreturn decodeRun(vocabhex.map(function (_, i) { return i; })); }")
            assert decode_run(pieces) == page.evaluate(js, vocabhex), pieces
    finally:
        page.close()
    assert decode_run(CASES[0]) == ["ab", "ש", "", "c"] and decode_run(CASES[1]) == ["\u2039d8\u203a"]
