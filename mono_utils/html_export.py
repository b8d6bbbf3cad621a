"""Executed notebooks as HTML pages that read anywhere, offline: what a teacher posts on a course page.

``python -m mono_utils.html_export [NOTEBOOK.ipynb | FOLDER ...] [--out FOLDER]`` (default: every
executed notebook in ``runs/<preset>/``, written to ``runs/<preset>/html/``). Each page is one
self-contained file that requests nothing from the network:

- every plotly figure is drawn: plotly.js (the copy inside the plotly package) is inlined once per
  page and each figure output gets HTML that draws it (``core.plots.figure_html``); nbconvert alone
  shows plotly's JSON as nothing;
- math in the prose (``$...$``, ``$$...$$``) is typeset as MathML at export (``latex2mathml``), which
  browsers render natively: nbconvert's template would fetch MathJax from a CDN and stay raw offline;
- an ipywidget, which needs a kernel, shows one line saying so; the static copies that
  ``run-notebooks`` saved after it (its figures, HTML and outputs) show what it showed;
- nbconvert's CDN scripts (require.js, MathJax, the widget manager, mermaid) are left out.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import sys
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from latex2mathml.converter import convert as latex_to_mathml
from nbconvert import HTMLExporter

from .core.plots import figure_html, plotly_js_path
from .notebooks import PLOTLY_MIME, WIDGET_MIME, notebook_paths
from .store.artifacts import repo_root

# nbconvert's lab page with every block that loads from a CDN emptied; plotly.js inlined once instead
_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}
{%- if resources.mono_plotly_js -%}<script type="text/javascript">{{ resources.mono_plotly_js }}</script>{%- endif -%}
{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}
<style>math[display="block"] { display: block; margin: 0.8em 0; } .mono-widget-note { color: #555; font-style: italic; }</style>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

# Math as Jupyter's markdown reads it: $$display$$ or $inline$ (no space just inside the dollars, no digit
# right after the closing one, so "$5 and $6" stays prose); code spans and fences are left alone.
_MATH_OR_CODE = re.compile(r"(?P<code>```.*?```|~~~.*?~~~|`[^`\n]*`)"
                           r"|(?<!\\)\$\$(?P<display>.+?)(?<!\\)\$\$"
                           r"|(?<![\\$])\$(?P<inline>[^\s$`](?:[^$\n`]*?[^\s\\$`])?)\$(?!\d)", re.S)
_PLACEHOLDER = "MONOMATH{}X"
_PROGRESS = re.compile(r"\d+%\|")


def find_math(text: str) -> list[tuple[str, bool]]:
    """Every math span of a markdown text outside code: ``(latex, is_display)``."""
    return [(m["display"], True) if m["display"] is not None else (m["inline"], False)
            for m in _MATH_OR_CODE.finditer(text) if m["code"] is None]


def _swap_math(text: str, found: list[tuple[str, bool]]) -> str:
    """Replace each math span by a placeholder that markdown leaves as it is (letters and digits)."""
    def sub(m):
        if m["code"] is not None:
            return m["code"]
        found.append((m["display"], True) if m["display"] is not None else (m["inline"], False))
        return _PLACEHOLDER.format(len(found) - 1)
    return _MATH_OR_CODE.sub(sub, text)


def _mathml(latex: str, display: bool) -> str:
    try:
        return latex_to_mathml(latex, display="block" if display else "inline")
    except Exception as e:  # noqa: BLE001 - one formula the converter cannot read must not lose the page
        print(f"warning: math left as LaTeX ({type(e).__name__}: {e}): {latex[:80]!r}", file=sys.stderr)
        return f"<code class='mono-raw-math'>{html.escape(latex)}</code>"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def prepare(nb) -> dict:
    """Make an executed notebook's outputs readable without Jupyter (in place); returns what was done
    and the math spans, in placeholder order, for :func:`finish`."""
    report = {"figures": 0, "widgets": 0, "math": []}
    for ci, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = _swap_math(cell.source, report["math"])
            continue
        if cell.cell_type != "code":
            continue
        for oi, o in enumerate(cell.get("outputs", [])):
            data = o.get("data")
            if not data:
                continue
            if PLOTLY_MIME in data:     # redrawn here: older copies have no HTML twin, or one that loads plotly.js
                data["text/html"] = figure_html(data[PLOTLY_MIME], div_id=f"mono-fig-c{ci}-o{oi}")
                report["figures"] += 1
            if WIDGET_MIME in data:
                text = _text(data.get("text/plain"))
                del data[WIDGET_MIME]
                if not _PROGRESS.search(text):   # a progress bar's text is the bar; any other widget needs a kernel
                    name = text.split(":", 1)[0].split("(", 1)[0].strip() or "widget"
                    data.pop("text/plain", None)
                    data["text/html"] = (f"<p class='mono-widget-note'>[{html.escape(name)}: an interactive "
                                         f"widget; open the notebook in Jupyter to use it. What it showed when "
                                         f"the notebook ran follows, if anything.]</p>")
                    report["widgets"] += 1
            if "text/markdown" in data:
                data["text/markdown"] = _swap_math(_text(data["text/markdown"]), report["math"])
    nb.metadata.pop("widgets", None)   # no widget manager on the page: its state would be dead weight
    return report


def finish(page: str, math: list[tuple[str, bool]]) -> str:
    """Put each formula back, typeset as MathML."""
    for i in range(len(math) - 1, -1, -1):   # MONOMATH1X must not eat MONOMATH10X: highest first
        page = page.replace(_PLACEHOLDER.format(i), _mathml(*math[i]))
    return page


def export_html(notebook: str | Path, out: str | Path) -> dict:
    """Write ``notebook`` (an executed .ipynb) as one self-contained offline page ``out``."""
    notebook, out = Path(notebook), Path(out)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook} does not exist: execute the notebooks first "
                                f"(python -m mono_utils run-notebooks --preset smoke) and export runs/smoke/")
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as e:  # noqa: BLE001 - nbformat raises several kinds for a damaged file
        raise ValueError(f"{notebook} is not a readable notebook ({type(e).__name__}: {e}): "
                         f"execute it again with python -m mono_utils run-notebooks") from e
    report = prepare(nb)
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"mono_page.html.j2": _TEMPLATE})],
                            template_file="mono_page.html.j2")
    resources = {"metadata": {"name": notebook.stem}}
    if report["figures"]:
        resources["mono_plotly_js"] = plotly_js_path().read_text(encoding="utf-8")
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    page = finish(page, report["math"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)       # atomic: a half-written page never replaces a good one
    return {"notebook": str(notebook), "html": str(out), "bytes": out.stat().st_size,
            "notebook_bytes": notebook.stat().st_size, "figures": report["figures"],
            "widgets": report["widgets"], "math": len(report["math"])}


def export_all(sources, out_dir: str | Path | None = None) -> list[dict]:
    """Export notebooks and folders of executed notebooks; a folder's pages go to ``<folder>/html/``
    unless ``out_dir`` is given."""
    rows = []
    for src in map(Path, sources):
        paths = notebook_paths(src) if src.is_dir() else [src]
        if src.is_dir() and not paths:
            raise FileNotFoundError(f"no executed notebooks (NN_*.ipynb) in {src}: run "
                                    f"python -m mono_utils run-notebooks --preset smoke first")
        dest = Path(out_dir) if out_dir else (src / "html" if src.is_dir() else src.parent / "html")
        for p in paths:
            rows.append(export_html(p, dest / (p.stem + ".html")))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mono_utils.html_export", description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="*", help="executed notebooks or folders of them (default runs/<preset>/)")
    ap.add_argument("--preset", default=os.environ.get("MONO_PRESET") or "default",
                    help="which runs/<preset>/ folder to export when no source is given")
    ap.add_argument("--out", default=None, help="folder for the pages (default: html/ beside the notebooks)")
    args = ap.parse_args(argv)
    sources = args.sources or [repo_root() / "runs" / args.preset]
    if not args.sources and not sources[0].is_dir():
        print(f"error: {sources[0]} does not exist: execute the notebooks first (python -m mono_utils "
              f"run-notebooks --preset {args.preset}), or name executed notebooks", file=sys.stderr)
        return 1
    try:
        rows = export_all(sources, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("| notebook | notebook MB | page MB | figures | widgets | formulas |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {Path(r['notebook']).name} | {r['notebook_bytes'] / 1e6:.2f} | {r['bytes'] / 1e6:.2f} | "
              f"{r['figures']} | {r['widgets']} | {r['math']} |")
    print(f"\n{len(rows)} page(s) written; each opens offline in a browser: "
          f"{Path(rows[0]['html']).resolve().as_uri() if rows else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
