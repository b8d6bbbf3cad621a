"""The student's install (requirements-student.txt, `make student-env`): from an imported bundle, every
notebook runs in it, as its student version with each exercise answered (a stub replaced by its folded
solution, as a student pastes it; tests/lessons proves the rest of a student notebook is the teacher's,
cell for cell), in the student venv's own kernel.

Slow (a venv of ~1.5 GB the first time, then seven notebooks): `make student-test` (a CI step of its
own). In `make test` it skips while .venv-student is missing, unless MONO_REQUIRE_STUDENT_ENV=1.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mono_utils.core.corpus import CORPUS_DISTRIBUTIONS
from mono_utils.lessons.student import FOLD_TAG, STUB_TAG, folded_solution, student_notebook, tags
from mono_utils.notebooks import notebook_paths

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-student"
PY = VENV / "bin" / "python"
# what a student does not need: the corpus's text sources, building, testing, serving (babel stays:
# jupyterlab_server needs it)
NOT_FOR_STUDENTS = ("Faker", "pycountry", "Django", "circuitsvis", "scikit-learn", "umap-learn",
                    "playwright", "pytest", "pytest-timeout", "voila", "jupyterhub", "anthropic", "openai")


def _student_env() -> Path:
    if os.environ.get("MONO_REQUIRE_STUDENT_ENV") == "1":
        # make is a no-op when the venv is current (its stamp newer than requirements-student.txt)
        subprocess.run(["make", "student-env"], cwd=REPO, check=True)
    if not PY.exists():
        pytest.skip(f"no student install at {VENV}: run `make student-env` (or `make student-test`)")
    return PY


def answered(nb):
    """The student version with every stub replaced by the code of its folded solution."""
    nb = student_notebook(nb)
    for i, c in enumerate(nb.cells):
        if STUB_TAG in tags(c):
            c.source = folded_solution(next(d for d in nb.cells[i:] if FOLD_TAG in tags(d)).source)
    return nb


def test_answered_exercises_hold_no_stub():
    source = nbformat.read(notebook_paths()[1], as_version=4)
    nb = answered(source)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "YOUR CODE HERE" not in code and any(STUB_TAG in tags(c) for c in nb.cells)
    assert "YOUR CODE HERE" in "\n".join(c.source for c in student_notebook(source).cells)   # the stubs it replaced


@pytest.mark.slow
def test_student_install_is_small_and_lacks_build_only_packages():
    py = _student_env()
    probe = ("import importlib.metadata as m, json, sys\n"
             f"names = {list(NOT_FOR_STUDENTS)!r}\n"
             "have = {}\n"
             "for n in names:\n"
             "    try: have[n] = m.version(n)\n"
             "    except m.PackageNotFoundError: pass\n"
             "print(json.dumps(have))")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {}, f"the student install holds packages only building or testing needs: {out}"
    needed = [d for d in CORPUS_DISTRIBUTIONS if d not in NOT_FOR_STUDENTS]
    got = subprocess.run([str(py), "-c", "import importlib.metadata as m, sys; "
                          f"[m.version(n) for n in {needed!r}]; import mono_utils.pipeline, mono_utils.lessons"],
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("path", notebook_paths(), ids=[p.name for p in notebook_paths()])
def test_every_answered_exercise_notebook_runs_in_the_student_install(path, student_bundle, tmp_path):
    py = _student_env()
    store = student_bundle["store"]
    nb = answered(nbformat.read(path, as_version=4))
    first = nbformat.v4.new_code_cell("import sys; print('__PREFIX__' + sys.prefix)")
    nb.cells.insert(0, first)
    work = tmp_path / "exercises"
    work.mkdir()
    nbformat.write(nb, work / path.name)
    env = dict(os.environ, MONO_PRESET="smoke", MONO_ARTIFACTS=str(store), MONO_RATINGS_DIR=str(tmp_path / "r"),
               PYTHONPATH="", VIRTUAL_ENV=str(VENV), PATH=f"{VENV / 'bin'}:{os.environ.get('PATH', '')}")
    # the student venv's own runner and kernel (mono_utils.notebooks, run by its Python)
    done = subprocess.run([str(py), "-m", "mono_utils.notebooks", str(work / path.name), str(tmp_path / path.name),
                           "900"], cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{path.name} failed in the student install:\n{done.stdout[-4000:]}"
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    prefix = "".join(o.get("text", "") for o in executed.cells[0].outputs)
    assert f"__PREFIX__{VENV}" in prefix, f"the kernel was not the student venv's: {prefix}"
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.fixture(scope="module")
def student_bundle(smoke_store, tmp_path_factory):
    """The teacher's side (full install): every smoke artifact, exported; the student's side (student
    install): the bundle imported into a fresh store."""
    py = _student_env()
    if os.environ.get("MONO_CLASS_BUNDLE"):   # a teacher's bundle instead (tests/test_classroom.py reads it too)
        bundle = Path(os.environ["MONO_CLASS_BUNDLE"])
    else:
        subprocess.run([sys.executable, "-m", "mono_utils", "build", "--preset", "smoke", "--artifacts",
                        str(smoke_store.root)], check=True, cwd=REPO, capture_output=True)
        bundle = tmp_path_factory.mktemp("bundle") / "class.tar"
        subprocess.run([sys.executable, "-m", "mono_utils", "export", str(bundle), "--artifacts",
                        str(smoke_store.root)], check=True, cwd=REPO, capture_output=True)
    store = tmp_path_factory.mktemp("student-store")
    got = subprocess.run([str(py), "-m", "mono_utils", "import", str(bundle), "--artifacts", str(store)],
                         cwd=REPO, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-2000:]
    return {"bundle": bundle, "store": store}
