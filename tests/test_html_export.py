"""The HTML export's parts without a browser (tests/browser/test_browser_html_export.py opens the pages):
math found and typeset, figures given HTML, widgets replaced by a note, no CDN on the page, big widget
models dropped from executed copies, search results that print as tables."""
import json
import re

import nbformat
import plotly.graph_objects as go
import pytest

from mono_utils.core.plots import figure_html, plotly_js_path
from mono_utils.features.widgets import ActiveUnits, UnitRows
from mono_utils.html_export import export_html, find_math
from mono_utils.notebooks import PLOTLY_MIME, WIDGET_MIME, add_figure_html, shrink_widget_state


def test_find_math_reads_dollars_as_jupyter_does_outside_code():
    assert find_math("score $f_i d_i$ and $$\\sum_i x_i$$") == [("f_i d_i", False), ("\\sum_i x_i", True)]
    assert find_math("it costs $5 and $6 more") == []                 # prices, not math
    assert find_math("code `$x$` and ```\n$y$\n``` stay") == []
    assert find_math("escaped \\$x\\$ stays") == []


def _figure_output(fig=None):
    fig = fig or go.Figure(go.Bar(x=["a"], y=[1]), layout=dict(title="t"))
    return nbformat.v4.new_output("display_data", data={PLOTLY_MIME: json.loads(fig.to_json()), "text/plain": "Figure"})


def test_figure_html_draws_from_the_page_or_beside_it_never_a_cdn():
    html = figure_html(go.Figure(go.Bar(x=["</script><b>x"], y=[1])), div_id="f1")
    assert "id='f1'" in html and "window.Plotly" in html and "'plotly.min.js'" not in html
    assert "plotly.min.js" in html and "cdn" not in html.lower() and "http" not in html
    assert "</script><b>" not in html                  # a label cannot end the script early
    with pytest.raises(ValueError, match="not a plotly figure"):
        figure_html({"data": "nope"})


def test_add_figure_html_twins_every_plotly_output_once():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[_figure_output(), _figure_output()])])
    assert add_figure_html(nb) == 2 and add_figure_html(nb) == 0
    ids = [o["data"]["text/html"][0].split("id='")[1].split("'")[0] for o in nb.cells[0].outputs]
    assert len(set(ids)) == 2                          # two figures, two ids


def test_shrink_widget_state_drops_big_models_and_their_references():
    key = "application/vnd.jupyter.widget-state+json"
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {key: {"state": {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_fig", "IPY_MODEL_html"]}},
        "fig": {"model_name": "AnyModel", "state": {"_esm": "x" * 300_000}},
        "html": {"model_name": "HTMLModel", "state": {"value": "<b>kept</b>", "layout": "IPY_MODEL_fig"}}}}}
    assert shrink_widget_state(nb) == ["AnyModel"]
    state = nb.metadata["widgets"][key]["state"]
    assert sorted(state) == ["box", "html"] and state["box"]["state"]["children"] == ["IPY_MODEL_html"]
    assert state["html"]["state"]["layout"] is None and len(json.dumps(nb.metadata)) < 2000


def test_export_html_page_is_offline_and_complete(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# T\n\nThe score $f_i d_i$, and $$\\log P(s)$$"),
        nbformat.v4.new_code_cell("fig", outputs=[_figure_output()]),
        nbformat.v4.new_code_cell("w", outputs=[nbformat.v4.new_output("display_data", data={
            WIDGET_MIME: {"model_id": "ab", "version_major": 2, "version_minor": 0},
            "text/plain": "SteeringWidget: an interactive widget (run the notebook to use it)"})])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, tmp_path / "01_t.ipynb")
    r = export_html(tmp_path / "01_t.ipynb", tmp_path / "html" / "01_t.html")
    page = (tmp_path / "html" / "01_t.html").read_text(encoding="utf-8")
    assert r["figures"] == 1 and r["widgets"] == 1 and r["math"] == 2
    assert page.count("<math") == 2 and "$f_i" not in page and "MONOMATH" not in page
    assert page.count('class="mono-plotly"') == 1 and page.count("__monoPlotlyQueue = ") == 1
    assert page.count("* plotly.js v") == 1 and r["bytes"] > 4e6    # plotly.js inlined, once
    ours = page.replace(plotly_js_path().read_text(encoding="utf-8"), "")   # plotly.js names map-icon URLs
    assert len(ours) < len(page) - 4e6
    assert not [s for s in ("cdnjs", "unpkg", "jsdelivr", "require.min.js", "MathJax.js", "<script src")
                if s in ours]
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:|url\(["']?https?:|@import""", ours)
    assert "SteeringWidget: an interactive widget; open the notebook in Jupyter" in page
    assert WIDGET_MIME not in page
    with pytest.raises(FileNotFoundError, match="run-notebooks"):
        export_html(tmp_path / "nope.ipynb", tmp_path / "x.html")
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable notebook"):
        export_html(tmp_path / "bad.ipynb", tmp_path / "x.html")


def test_search_results_print_as_tables_not_dicts():
    rows = UnitRows([{"unit": 3, "mean_act": 1.234567891234, "fires": 0.5, "occurrences": 7}])
    assert rows[0]["mean_act"] == 1.234567891234 and isinstance(rows, list)   # the data stay exact
    text = str(rows)
    assert "{'" not in text and "1.23" in text and "1.2345" not in text and "mean_act" in text
    assert "<table" in rows._repr_html_() and str(UnitRows()) == "(no units)"
    res = ActiveUnits(tokens=["def", " main"], units=[[(5, 2.123456789)], []], notes=["a note"])
    assert res["units"][0][0] == (5, 2.123456789)
    assert "5: 2.12" in repr(res) and "2.1234" not in repr(res) and "a note" in repr(res)
    assert "<table" in res._repr_html_()
