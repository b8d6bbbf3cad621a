"""Student versions of the notebooks, written from one source so that the two never drift.

The notebooks in ``notebooks/`` hold the solutions (``make run`` and the tests execute them).
Each exercise there is a few tagged cells:

- ``exercise`` (markdown): the task;
- ``solution`` (code): the answer, its lines to write between ``# BEGIN SOLUTION`` and
  ``# END SOLUTION``;
- ``check`` (code): the call of the lesson check (``mono_utils.lessons``);
- ``hint`` (markdown): a hint folded in ``<details>``.

:func:`student_notebook` replaces each ``solution`` cell by its stub (the marked lines become
``raise NotImplementedError``; tag ``exercise-stub``, same cell id) and puts the solution,
folded in ``<details>`` (tag ``solution-fold``), below the check and hint cells that follow it.
``python -m mono_utils lessons --out exercises/`` writes every notebook's student version.
"""
from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path

import nbformat

from ..store.artifacts import repo_root

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB_TAG, FOLD_TAG = "exercise-stub", "solution-fold"
FOLLOWERS = ("check", "hint")
_EXERCISE_ID = re.compile(r"Exercise\s+(\d\d\.\d[a-z]?)")


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _marked(source: str, where: str) -> list[tuple[int, int]]:
    """(begin, end) line numbers of every marked block; raises on a missing or unmatched marker."""
    lines = source.splitlines()
    blocks, start = [], None
    for i, line in enumerate(lines):
        s = line.strip()
        if s == BEGIN:
            if start is not None:
                raise ValueError(f"{where}: '{BEGIN}' twice without '{END}' between (line {i + 1})")
            start = i
        elif s == END:
            if start is None:
                raise ValueError(f"{where}: '{END}' without a '{BEGIN}' before it (line {i + 1})")
            blocks.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"{where}: '{BEGIN}' on line {start + 1} has no '{END}'")
    if not blocks:
        raise ValueError(f"{where}: a solution cell needs the lines a student writes between "
                         f"'{BEGIN}' and '{END}' (none found)")
    return blocks


def stub_source(source: str, exercise: str = "", where: str = "solution cell") -> str:
    """The solution's source with every marked block replaced by ``raise NotImplementedError``."""
    lines = source.splitlines()
    out, last = [], 0
    label = f"Exercise {exercise}: " if exercise else ""
    for b, e in _marked(source, where):
        out += lines[last:b]
        indent = lines[b][:len(lines[b]) - len(lines[b].lstrip())]
        out += [f"{indent}# YOUR CODE HERE (the hint below helps)",
                f'{indent}raise NotImplementedError("{label}write your code here")']
        last = e + 1
    out += lines[last:]
    return "\n".join(out)


def solution_source(source: str) -> str:
    """The solution without its marker lines."""
    return "\n".join(l for l in source.splitlines() if l.strip() not in (BEGIN, END))


def fold_markdown(solution: str) -> str:
    return ("<details><summary><b>Solution</b> (open it after you tried)</summary>\n\n"
            f"```python\n{solution}\n```\n\n</details>")


def folded_solution(markdown: str) -> str:
    """The code inside a fold cell (what a student copies back into the stub)."""
    m = re.search(r"```python\n(.*?)\n```", markdown, re.S)
    if not m:
        raise ValueError("this fold cell holds no ```python block")
    return m.group(1)


def exercise_id(nb, index: int) -> str:
    """The 'NN.M' of the nearest 'Exercise NN.M' heading at or above cell ``index``."""
    for c in reversed(nb.cells[:index + 1]):
        if c.cell_type == "markdown" and (m := _EXERCISE_ID.search(c.source)):
            return m.group(1)
    return ""


def student_notebook(nb, name: str = "notebook"):
    """A copy of ``nb`` with stubs for solutions, the solutions folded below, and no outputs."""
    nb = copy.deepcopy(nb)
    cells = []
    i = 0
    while i < len(nb.cells):
        c = nb.cells[i]
        if "solution" not in tags(c):
            cells.append(c)
            i += 1
            continue
        if c.cell_type != "code":
            raise ValueError(f"{name}: cell {c.get('id')} is tagged 'solution' but is {c.cell_type}, not code")
        where = f"{name}, cell {c.get('id')}"
        stub = nbformat.v4.new_code_cell(stub_source(c.source, exercise_id(nb, i), where))
        stub.id = c.id
        stub.metadata = {k: v for k, v in c.metadata.items() if k not in ("tags", "jupyter")}
        stub.metadata["tags"] = [t for t in tags(c) if t != "solution"] + [STUB_TAG]
        cells.append(stub)
        i += 1
        while i < len(nb.cells) and any(t in tags(nb.cells[i]) for t in FOLLOWERS):
            cells.append(nb.cells[i])
            i += 1
        fold = nbformat.v4.new_markdown_cell(fold_markdown(solution_source(c.source)))
        fold.id = f"{c.id}-solution"[:64]
        fold.metadata["tags"] = [FOLD_TAG]
        cells.append(fold)
    nb.cells = cells
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def count_exercises(nb) -> int:
    return sum("solution" in tags(c) for c in nb.cells)


def _write_atomic(nb, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_student_versions(out: str | Path, notebooks: str | Path | None = None) -> list[tuple[Path, int]]:
    """Write the student version of every notebook into ``out``; returns (path, exercises) pairs."""
    folder = Path(notebooks) if notebooks else repo_root() / "notebooks"
    src = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not src:
        raise FileNotFoundError(f"no notebooks (NN_*.ipynb) in {notebooks or 'notebooks/'}")
    out = Path(out)
    if out.resolve() in {p.parent.resolve() for p in src}:
        raise ValueError(f"--out {out} is the notebooks' own folder: the student versions would replace the "
                         f"solutions. Choose another folder, e.g. exercises/")
    written = []
    for p in src:
        nb = student_notebook(nbformat.read(p, as_version=4), p.name)
        nbformat.validate(nb)
        _write_atomic(nb, out / p.name)
        written.append((out / p.name, count_exercises(nbformat.read(p, as_version=4))))
    return written
