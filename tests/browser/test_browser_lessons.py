"""A student version of an exercise notebook in JupyterLab in real Chromium: the stub's check says
"not written yet", a wrong answer shows the check's message, the folded solution opens, and the
solution pasted into the stub turns the check green."""
import time

import nbformat

from harness import REPO, need_notebook

SET_SOURCE = """([i, src]) => {
  const w = window.jupyterapp.shell.currentWidget;
  w.content.model.cells.get(i).sharedModel.setSource(src);
  return true;
}"""
SELECT = """([i]) => { const w = window.jupyterapp.shell.currentWidget; w.content.activeCellIndex = i; return true; }"""
CELL_IDS = """() => { const c = window.jupyterapp.shell.currentWidget.content.model.cells;
  const out = []; for (let i = 0; i < c.length; i++) out.push(c.get(i).id); return out; }"""

WRONG = '''def fvu(x, x_hat):
    return float((x - x_hat).pow(2).sum() / x.pow(2).sum())

def loss_recovered(ce_clean, ce_sae, ce_ablated):
    return (ce_sae - ce_clean) / (ce_ablated - ce_clean)'''


def _run(p, index: int) -> None:
    p.page.evaluate(SELECT, [index])
    p.command("notebook:run-cell", wait=False)


def _wait_for(cell, selector: str, text: str | None = None, count: int = 1, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loc = cell.locator(selector)
        if loc.count() >= count and (text is None or text in loc.first.inner_text()):
            return loc
        time.sleep(0.25)
    raise AssertionError(f"no {selector} with {text!r} in the cell; it shows: {cell.inner_text()[:600]!r}")


def test_exercise_check_messages_and_folded_solution(lab, lab_page):
    from mono_utils.lessons.student import student_notebook
    need_notebook("01_train_sae.ipynb")
    src = REPO / "notebooks" / "01_train_sae.ipynb"
    nb = student_notebook(nbformat.read(src, as_version=4), src.name)
    p = lab_page.open(lab.add_notebook("01_train_sae_student.ipynb", nb))
    ids = p.page.evaluate(CELL_IDS)
    stub, check, fold = (ids.index(i) for i in ("ex-01-3-solution", "ex-01-3-check", "ex-01-3-solution-solution"))
    assert fold > check > stub
    cells = p.page.locator(".jp-Notebook .jp-Cell")
    check_cell, fold_cell = cells.nth(check), cells.nth(fold)

    # 1. the stub as handed out: the check says it is not written yet
    _run(p, stub)
    _run(p, check)
    _wait_for(check_cell, ".mono-check-fail", "not written yet", count=2)
    p.screenshot("lessons-stub", None)

    # 2. a wrong answer (FVU about zero, the share lost): the check names both mistakes
    p.page.evaluate(SET_SOURCE, [stub, WRONG])
    p.command("notebook:clear-all-cell-outputs")
    _run(p, stub)
    _run(p, check)
    fails = _wait_for(check_cell, ".mono-check-fail", count=2)
    text = " ".join(fails.all_inner_texts())
    assert "about the mean" in text and "share LOST" in text, text
    check_cell.scroll_into_view_if_needed()
    p.screenshot("lessons-wrong")

    # 3. the folded solution is closed, and opens on a click
    fold_cell.scroll_into_view_if_needed()
    code = fold_cell.locator("details pre").first
    assert not code.is_visible(), "the solution should be folded"
    fold_cell.locator("details summary").first.click()
    code.wait_for(state="visible", timeout=10_000)
    solution = code.inner_text()
    assert "x.mean(0)" in solution and "def loss_recovered" in solution
    p.screenshot("lessons-fold-open")

    # 4. the solution pasted into the stub: both checks turn green
    p.page.evaluate(SET_SOURCE, [stub, solution])
    p.command("notebook:clear-all-cell-outputs")
    _run(p, stub)
    _run(p, check)
    _wait_for(check_cell, ".mono-check-ok", count=2)
    assert check_cell.locator(".mono-check-fail").count() == 0
    check_cell.scroll_into_view_if_needed()
    p.screenshot("lessons-right")
    st = p.state()
    assert not [e for c in st["cells"] for e in c["errors"]], "a cell raised an error"
    p.assert_offline()
