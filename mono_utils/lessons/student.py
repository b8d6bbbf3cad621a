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
With ``--graded`` (``graded=True``) the versions are for graded use: no folded solutions, no hints,
and a first cell (tag ``graded-setup``) that switches the checks to graded messages: they say what
is off, never the reference formula (``mono_utils.lessons.checks.set_graded``).

Nothing a student wrote is overwritten without ``--force`` (and then a copy is kept in
``<out>/backups/<time>/``), and a stub never replaces a solution: :func:`guard_writes` checks every
file the ``lessons`` and ``run-notebooks`` commands are about to write. A student version carries the
marker ``metadata.mono_utils.student_version`` (older ones are known by their stub and fold tags) and
the digest of its cells' sources when written: one nobody edited since is replaced by a newer version
(after a ``git pull``) without ``--force``;
a solution notebook is one with ``solution`` cells, or any notebook in the repository's notebooks/.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import nbformat

from ..store.artifacts import atomic_write_text, repo_root

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB_TAG, FOLD_TAG = "exercise-stub", "solution-fold"
GRADED_TAG = "graded-setup"
GRADED_SETUP = ("from mono_utils.lessons import set_graded\n"
                "set_graded()   # graded version: a failed check says what is off, not the formula that fixes it")
STUDENT_MARK = "mono_utils"     # metadata.mono_utils.student_version = true on every student notebook
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


def student_notebook(nb, name: str = "notebook", graded: bool = False):
    """A copy of ``nb`` with stubs for solutions, the solutions folded below, and no outputs.

    ``graded``: no folded solutions and no hints, and a setup cell before the first stub that
    switches the checks to messages without formulas.
    """
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
            if not (graded and "hint" in tags(nb.cells[i])):      # a hint names the formula
                cells.append(nb.cells[i])
            i += 1
        if graded:
            continue
        fold = nbformat.v4.new_markdown_cell(fold_markdown(solution_source(c.source)))
        fold.id = f"{c.id}-solution"[:64]
        fold.metadata["tags"] = [FOLD_TAG]
        cells.append(fold)
    if graded:
        first = next((k for k, c in enumerate(cells) if STUB_TAG in tags(c)), None)
        if first is not None:
            setup = nbformat.v4.new_code_cell(GRADED_SETUP)
            setup.id = "graded-setup"
            setup.metadata["tags"] = [GRADED_TAG]
            cells.insert(first, setup)
    nb.cells = cells
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nb.metadata[STUDENT_MARK] = {"student_version": True, **({"graded": True} if graded else {}),
                                 "sources_sha256": sources_digest(nb.cells)}
    return nb


def sources_digest(cells) -> str:
    """A digest of what a student can write in a notebook: each cell's type and source (not outputs,
    execution counts or metadata, which running it changes). Recorded when a student version is written,
    so that one nobody edited since can be replaced by a newer version without asking."""
    parts = [[c.get("cell_type"), "".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source")]
             for c in cells if isinstance(c, dict)]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def unedited_student_version(path: Path) -> bool:
    """A student version whose cells still hold exactly what we wrote (run, maybe, but not edited)."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        recorded = nb["metadata"][STUDENT_MARK]["sources_sha256"]
        return isinstance(recorded, str) and recorded == sources_digest(nb["cells"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return False


def count_exercises(nb) -> int:
    return sum("solution" in tags(c) for c in nb.cells)


# ---------------------------------------------------------------- what may be overwritten
class OverwriteRefused(ValueError):
    """A command would overwrite a student's work or a solution notebook."""


def notebook_role(path: str | Path) -> str:
    """``"solution"`` (it holds solution cells, or lies in the repository's notebooks/), ``"student"``
    (a student version: the marker, or stub/fold cells), ``"missing"``, or ``"other"`` (anything else)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.resolve().parent == (repo_root() / "notebooks").resolve():
        return "solution"
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells, meta = nb.get("cells", []), nb.get("metadata", {})
        cell_tags = {t for c in cells if isinstance(c, dict) for t in (c.get("metadata") or {}).get("tags", [])}
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        return "other"
    if "solution" in cell_tags:
        return "solution"
    if (isinstance(meta, dict) and isinstance(meta.get(STUDENT_MARK), dict) and meta[STUDENT_MARK].get("student_version")) \
            or cell_tags & {STUB_TAG, FOLD_TAG}:
        return "student"
    return "other"


def guard_writes(planned: dict[Path, bytes | None], *, writes: str, force: bool = False,
                 flag: str = "--force") -> list[Path]:
    """Check the files a command is about to write before it writes any; returns the backups made.

    ``planned`` maps each target to the bytes it will get (None: not known in advance, e.g. an
    executed notebook). ``writes`` is ``"student"`` (stubs: they never replace a solution, even with
    ``force``) or ``"solution"`` (executed solutions: they may replace an earlier executed copy).
    A target holding anything else, unless it already holds exactly the planned bytes, is a
    student's work: refused without ``force``; with it, copied to ``<folder>/backups/<time>/`` first.
    """
    at_risk, solutions = [], []
    for target, data in planned.items():
        role = notebook_role(target)
        if role == "missing" or (data is not None and target.read_bytes() == data):
            continue
        if role == "student" and writes == "student" and unedited_student_version(target):
            continue     # written by us and never edited: a newer version replaces it, nothing is lost
        if role == "solution" and writes == "student":
            solutions.append(target)
        elif not (role == "solution" and writes == "solution"):
            at_risk.append((target, role))
    if solutions:
        raise OverwriteRefused(
            f"{len(solutions)} file(s) to write hold solution notebooks (e.g. {solutions[0]}): a student version "
            f"(stubs) never replaces a solution, even with {flag}. Write the student versions into another folder "
            f"(--out exercises/), and check that --notebooks names the solutions (notebooks/), not the student "
            f"versions")
    if at_risk and not force:
        kinds = "a student's notebook" if any(r == "student" for _, r in at_risk) else "a notebook that is not ours"
        raise OverwriteRefused(
            f"{len(at_risk)} notebook(s) already in {at_risk[0][0].parent} would be overwritten, e.g. {at_risk[0][0].name} "
            f"({kinds}: edits and answers in it would be lost). Nothing was written. Choose another folder with "
            f"--out, or add {flag} to replace them (each is first copied to {at_risk[0][0].parent / 'backups'}/)")
    backups = []
    if at_risk:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for target, _ in at_risk:
            keep = target.parent / "backups" / stamp / target.name
            n = 1
            while keep.exists():            # two --force runs within a second keep both copies
                keep, n = target.parent / "backups" / f"{stamp}-{n}" / target.name, n + 1
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, keep)
            backups.append(keep)
    return backups


def check_out_folder(out: str | Path, option: str = "--out") -> Path:
    """``out`` as a folder to write notebooks into; a file there is refused with the fix."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out} is a file, not a folder: give a folder to write the notebooks into "
                         f"(e.g. {option} exercises/); the file was left as it is")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{option} {out}: {parent} is a file, not a folder: give a folder to write the "
                             f"notebooks into (e.g. {option} exercises/)")
    return out


def write_student_versions(out: str | Path, notebooks: str | Path | None = None, *,
                           force: bool = False, graded: bool = False) -> list[tuple[Path, int]]:
    """Write the student version of every notebook into ``out``; returns (path, exercises) pairs.

    A notebook already in ``out`` that differs from its new version (a student's answers, or an
    older version) is kept unless ``force`` (then a copy goes to ``out/backups/<time>/``); a solution
    notebook in ``out`` is never replaced. Every check is made before anything is written.
    """
    folder = Path(notebooks) if notebooks else repo_root() / "notebooks"
    src = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not src:
        raise FileNotFoundError(f"no notebooks (NN_*.ipynb) in {notebooks or 'notebooks/'}")
    out = check_out_folder(out)
    if out.resolve() in {p.parent.resolve() for p in src}:
        raise ValueError(f"--out {out} is the notebooks' own folder: the student versions would replace the "
                         f"solutions. Choose another folder, e.g. exercises/")
    sources = [(p, nbformat.read(p, as_version=4)) for p in src]
    if all(count_exercises(nb) == 0 for _, nb in sources) and any(notebook_role(p) == "student" for p, _ in sources):
        raise OverwriteRefused(f"--notebooks {folder} holds student versions (stubs), not the solutions: did you swap "
                               f"--notebooks and --out? Give the solutions' folder (notebooks/) to --notebooks")
    planned = {}
    for p, nb in sources:
        student = student_notebook(nb, p.name, graded=graded)
        nbformat.validate(student)
        text = nbformat.writes(student)
        planned[out / p.name] = (text if text.endswith("\n") else text + "\n").encode("utf-8")   # as nbformat.write
    backups = guard_writes(planned, writes="student", force=force)
    for b in backups:
        print(f"kept a copy of {b.name} in {b.parent}")
    written = []
    for (p, nb), (target, data) in zip(sources, planned.items()):
        atomic_write_text(target, data.decode("utf-8"))
        written.append((target, count_exercises(nb)))
    return written
