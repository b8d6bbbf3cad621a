"""The harness itself, on a synthetic notebook: Run All, error detection, a real slider drag,
plotly rendering offline, and the no-request-leaves-localhost check."""
import nbformat
from nbformat.v4 import new_code_cell, new_notebook

WIDGET_NB = [
    """import ipywidgets as w, plotly.graph_objects as go
from IPython.display import display
s = w.IntSlider(value=0, min=0, max=100, description="k")
s.add_class("t-slider")
out = w.HTML("value 0"); out.add_class("t-out")
fig = go.FigureWidget(go.Bar(x=["a", "b"], y=[1, 1])); box = w.Box([fig]); box.add_class("t-plot")
def on(ch):
    out.value = f"value {ch['new']}"
    fig.data[0].y = [1, ch["new"] + 1]
s.observe(on, names="value")
display(w.VBox([s, out, box]))""",
    "",
    "go.Figure(go.Scatter(y=[3, 1, 2]))",
]


def test_harness_runs_drags_and_sees_plots(lab, lab_page):
    nb = new_notebook(cells=[new_code_cell(src) for src in WIDGET_NB])
    lab.add_notebook("_harness.ipynb", nb)
    p = lab_page.open("_harness.ipynb")
    p.run_all_ok(timeout=120)
    p.wait_for_plots(2)
    before_text, before_plot = p.text("t-out"), p.plot_signature("t-plot")
    readout = p.drag_slider("t-slider", 0.8)
    assert readout and readout != "0", f"slider readout did not move: {readout!r}"
    after = p.wait_for_text("t-out", rf"value {readout}\b", timeout=30)
    assert after != before_text
    p.wait_for_change(lambda: p.plot_signature("t-plot"), before_plot, timeout=30)
    p.screenshot("harness-slider", "t-plot")
    p.assert_offline()


def test_harness_reports_errors(lab, lab_page):
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("raise ValueError('boom-42')"),
                             new_code_cell("y = 2")])
    lab.add_notebook("_harness_err.ipynb", nb)
    p = lab_page.open("_harness_err.ipynb")
    st = p.run_all(timeout=120)
    try:
        p.assert_no_errors(st)
    except AssertionError as e:
        assert "boom-42" in str(e) and "ValueError" in str(e)
    else:
        raise AssertionError("the harness did not see the error output")


def test_harness_blocks_external_requests(lab, lab_page):
    p = lab_page
    p.page.set_content('<img src="https://example.com/x.png"><p>x</p>')
    p.page.evaluate("() => fetch('http://example.com/y').catch(() => null)")
    p.page.wait_for_timeout(300)
    assert any("example.com" in u for u in p.requests.external)
    p.requests.external.clear()
    p.assert_offline()
