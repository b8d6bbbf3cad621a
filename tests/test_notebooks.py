"""Every notebook, executed top to bottom on the smoke preset (as a user's Run All would)."""
import json
import os
import time

import pytest

from _notebook_runs import notebook_env

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


def test_the_superposition_intro_opens_the_course():
    """First in sorted() (the runner, its timings table, the student versions) and in JupyterLab's file
    browser, which sorts with localeCompare (ICU): punctuation before digits before letters, so a name like
    00-superposition, first by bytes, lands after 00_model there. Here the names first differ in a letter
    against a letter ('i' < 'm'), which every collation orders alike."""
    names = [p.name for p in NOTEBOOKS]
    assert names[:2] == ["00_intro_superposition.ipynb", "00_model.ipynb"], names
    k = next(i for i, (a, b) in enumerate(zip(*names[:2])) if a != b)
    assert names[0][k].isalpha() and names[1][k].isalpha() and names[0][k] < names[1][k]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, executed_notebooks):
    # run once per session (conftest.executed_notebooks: the HTML export test reads the same copy),
    # without LLM keys, within CELL_LIMIT_S a cell and NOTEBOOK_LIMIT_S a notebook
    r, out = executed_notebooks(path)
    assert r["ok"], f"{path.name} failed:\n{r['log']}"
    executed = json.loads(out.read_text(encoding="utf-8"))
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


def test_executed_copies_give_widgets_a_static_fallback(tmp_path):
    """A FigureWidget is saved as its final figure, not a page-long repr; a container keeps its view with a
    one-line text and static copies of its figure, HTML and output; a progress bar stays as it is."""
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import plotly.graph_objects as go\nfrom IPython.display import display\n"
                                  "f = go.FigureWidget()\nf.add_scatter(x=[], y=[])\ndisplay(f)\n"
                                  "with f.batch_update():\n    f.data[0].x = [1, 2, 3]\n    f.data[0].y = [3, 1, 2]"),
        nbformat.v4.new_code_cell("import ipywidgets as W\nout = W.Output()\nwith out:\n    print('inside')\n"
                                  "W.VBox([W.IntSlider(3), f, W.HTML('<b>bold</b>'), out])"),
        nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor i in tqdm(range(3)):\n    pass")])
    nbformat.write(nb, tmp_path / "w.ipynb")
    env = dict(os.environ, TQDM_DISABLE="0")
    r = execute_notebook(tmp_path / "w.ipynb", tmp_path / "out" / "w.ipynb", env=env, timeout=120)
    assert r["ok"], r["log"]
    cells = json.loads((tmp_path / "out" / "w.ipynb").read_text(encoding="utf-8"))["cells"]
    fig_out = cells[0]["outputs"]
    assert len(fig_out) == 1 and "application/vnd.jupyter.widget-view+json" not in fig_out[0]["data"]
    fig = fig_out[0]["data"]["application/vnd.plotly.v1+json"]
    assert fig["data"][0]["x"] == [1, 2, 3] and fig["data"][0]["y"] == [3, 1, 2]   # the final state
    box = cells[1]["outputs"]
    assert "application/vnd.jupyter.widget-view+json" in box[0]["data"]
    assert "".join(box[0]["data"]["text/plain"]).startswith("VBox: an interactive widget")
    kinds = [tuple(sorted(o.get("data", {"stream": 1}))) for o in box[1:]]
    assert any("application/vnd.plotly.v1+json" in k for k in kinds) and any("text/html" in k for k in kinds)
    assert any("inside" in "".join(o.get("text", "")) for o in box[1:])
    bar = [o for o in cells[2]["outputs"] if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert bar and "%|" in "".join(bar[0]["data"]["text/plain"])
    assert r["first_picture_s"] is not None
    saved = json.loads((tmp_path / "out" / "w.ipynb").read_text(encoding="utf-8"))
    state = saved["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    box_id = box[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert box_id in state      # the container's view still has its state (and its figure's, a child)
    assert (tmp_path / "out" / "w.ipynb").stat().st_size < 12 * 2**20


def test_prune_widget_state_keeps_what_outputs_reach():
    import nbformat
    from mono_utils.notebooks import prune_widget_state
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "aa"}, "text/plain": "VBox"}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data=view)])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {
        "aa": {"state": {"children": ["IPY_MODEL_bb"]}}, "bb": {"state": {"layout": "IPY_MODEL_cc"}},
        "cc": {"state": {}}, "dd": {"state": {"_esm": "x" * 1000}}}}}
    assert prune_widget_state(nb) == 1
    assert sorted(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]) == ["aa", "bb", "cc"]


def _sleepy(tmp_path, code: str):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(code)])
    nbformat.write(nb, tmp_path / "03_stall.ipynb")
    return tmp_path / "03_stall.ipynb"


def test_a_stalled_cell_fails_fast_naming_the_notebook_and_cell(tmp_path):
    path = _sleepy(tmp_path, "import time\ntime.sleep(600)")
    t0 = time.time()
    r = execute_notebook(path, tmp_path / "out" / path.name, timeout=3, total_timeout=120)
    assert not r["ok"] and time.time() - t0 < 60
    assert "03_stall.ipynb: cell 1 ('import time') ran longer than 3 s (the per-cell limit)" in r["log"]
    assert "what the kernel was doing:" in r["log"] and "idle (waiting)" in r["log"], r["log"]


def test_the_notebooks_run_without_llm_keys(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("MONO_AUTOINTERP_BASE_URL", "http://10.255.255.1/v1")
    env = notebook_env(MONO_PRESET="smoke")
    assert "ANTHROPIC_API_KEY" not in env and "MONO_AUTOINTERP_BASE_URL" not in env and env["MONO_PRESET"] == "smoke"
