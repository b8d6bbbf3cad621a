"""Every notebook, executed top to bottom on the smoke preset (as a user's Run All would)."""
import json
import os

import pytest

from mono_utils.notebooks import execute_notebook, format_table, is_picture, notebook_paths

NOTEBOOKS = notebook_paths()


def test_notebooks_committed_without_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        assert cells[0]["cell_type"] == "markdown", f"{nb.name} should open with prose"
        for c in cells:
            if c["cell_type"] == "code":
                assert not c.get("outputs") and not c.get("execution_count"), f"{nb.name} has outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, smoke_store, tmp_path):
    env = dict(os.environ, MONO_PRESET="smoke", MONO_ARTIFACTS=str(smoke_store.root),
               MONO_RATINGS_DIR=str(tmp_path / "ratings"))
    r = execute_notebook(path, tmp_path / path.name, preset="smoke", env=env, timeout=900)
    assert r["ok"], f"{path.name} failed:\n{r['log']}"
    executed = json.loads((tmp_path / path.name).read_text(encoding="utf-8"))
    errors = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_runner_accepts_a_relative_output_path(tmp_path, monkeypatch):
    import nbformat
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1 + 1\nprint(x)")]),
                   nb_dir / "00_tiny.ipynb")
    monkeypatch.chdir(tmp_path)
    r = execute_notebook(nb_dir / "00_tiny.ipynb", "out/00_tiny.ipynb", timeout=120)
    assert r["ok"], r["log"]
    out = json.loads((tmp_path / "out" / "00_tiny.ipynb").read_text(encoding="utf-8"))
    assert "".join(out["cells"][0]["outputs"][0]["text"]) == "2\n"
    assert r["peak_mb"] > 0


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
    import nbformat
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
