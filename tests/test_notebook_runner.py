"""The notebook runner's measurements: wall time, peak memory, time to the first picture."""
import nbformat

from mono_utils.notebooks import execute_notebook, format_table, is_picture


def test_is_picture_counts_plots_not_progress_bars():
    plot = {"output_type": "display_data", "data": {"application/vnd.plotly.v1+json": {}, "text/plain": "Figure"}}
    bar = {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {},
                                                   "text/plain": " 40%|####      | 2/5 [00:01<00:01]"}}
    text = {"output_type": "stream", "name": "stdout", "text": "hello"}
    widget = {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {},
                                                      "text/plain": "VBox(children=...)"}}
    assert is_picture(plot) and is_picture(widget)
    assert not is_picture(bar) and not is_picture(text)


def test_runner_records_time_to_first_picture(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('no picture yet')"),
                nbformat.v4.new_code_cell("import time; time.sleep(1.5)"),
                nbformat.v4.new_code_cell("from IPython.display import HTML; HTML('<b>a picture</b>')")]
    nbformat.write(nb, tmp_path / "n.ipynb")
    r = execute_notebook(tmp_path / "n.ipynb", tmp_path / "out" / "n.ipynb")
    assert r["ok"] and r["first_picture_s"] is not None
    assert 1.5 <= r["first_picture_s"] <= r["seconds"]
    assert "first picture" in format_table([r])
    nb.cells = nb.cells[:2]  # no picture at all
    nbformat.write(nb, tmp_path / "m.ipynb")
    r2 = execute_notebook(tmp_path / "m.ipynb", tmp_path / "out" / "m.ipynb")
    assert r2["ok"] and r2["first_picture_s"] is None and "| - |" in format_table([r2])
