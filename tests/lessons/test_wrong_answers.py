"""Every known wrong answer (tests/lessons/wrong_answers.py) fails its check with the message that
names its mistake; every right answer, however written, passes; graded use hides the formulas."""
import re

import pytest

from mono_utils import lessons
from mono_utils.lessons import checks

from wrong_answers import RIGHT, WRONG  # noqa: E402 - tests/lessons is on sys.path (pytest rootdir-less import)

# what a reference formula looks like in a message: code of the answer
FORMULA = re.compile(r"\.sum\(|\.mean\(|\.pow\(|@|sae\.decode\(|np\.|ReLU\(|norm\(|weighted_rank\(|max\(1")


@pytest.fixture(autouse=True)
def not_strict(monkeypatch):
    monkeypatch.delenv(checks.STRICT_ENV, raising=False)
    monkeypatch.delenv(checks.GRADED_ENV, raising=False)
    yield
    checks.set_graded(None)


def test_the_table_covers_every_exercise_and_the_issues_43():
    assert len(WRONG) >= 43 and len({a.name for a in WRONG}) >= 43
    exercises = {a.exercise for a in WRONG}
    assert exercises >= {"00.1", "00.2", "01.1a", "01.1b", "01.2", "01.3a", "01.3b", "02.1", "02.3", "03.1",
                         "04.1", "05.1", "06.1"}
    assert {a.exercise for a in RIGHT} == exercises


@pytest.mark.parametrize("answer", WRONG, ids=[f"{a.exercise}-{a.name}" for a in WRONG])
def test_a_wrong_answer_gets_its_named_message(answer):
    r = getattr(lessons, answer.check)(answer.fn)
    assert not r.ok, f"{answer.exercise}: the wrong answer {answer.name} passes its check"
    assert answer.says.lower() in r.message.lower(), (
        f"{answer.exercise} {answer.name}: expected a message naming {answer.says!r}, got: {r.message}")


@pytest.mark.parametrize("answer", RIGHT, ids=[f"{a.exercise}-{a.name}" for a in RIGHT])
def test_a_right_answer_passes(answer):
    r = getattr(lessons, answer.check)(answer.fn)
    assert r.ok, f"{answer.exercise}: the right answer {answer.name} fails: {r.message}"


def test_graded_messages_say_what_is_off_without_the_formula():
    shown, hidden = 0, 0
    for a in WRONG:
        checks.set_graded(False)
        full = getattr(lessons, a.check)(a.fn).message
        checks.set_graded(True)
        short = getattr(lessons, a.check)(a.fn).message
        assert short and full.startswith(short), (a.name, short, full)
        assert not FORMULA.search(short), f"{a.exercise} {a.name}: graded message shows a formula: {short}"
        shown += FORMULA.search(full) is not None
        hidden += len(full) > len(short)
    assert shown >= 30 and hidden >= 40          # the teacher's messages do give the formulas


def test_the_graded_environment_variable(monkeypatch):
    fn = next(a.fn for a in WRONG if a.name == "about_zero")
    assert "(x - x.mean(0))" in lessons.check_fvu(fn).message
    monkeypatch.setenv(checks.GRADED_ENV, "1")
    assert "(x - x.mean(0))" not in lessons.check_fvu(fn).message


def test_a_check_can_fail_when_the_table_is_wrong():
    """The table's test would notice a check that stopped naming a mistake (break one on purpose)."""
    fn = next(a.fn for a in WRONG if a.name == "centred_on_x_hat")
    assert "reconstruction's mean" in lessons.check_fvu(fn).message
    assert "reconstruction's mean" not in lessons.check_fvu(lambda x, xh: 0.5).message


# ---------------------------------------------------------------- verdicts of the apply cells
def test_verdict_says_it_matches_or_what_is_off(monkeypatch):
    import numpy as np
    import torch
    ok = lessons.verdict("06.1", torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]), what="the logits")
    assert ok.ok and "matches the reference" in repr(ok) and "mono-check-ok" in ok._repr_html_()
    bad = lessons.verdict("06.1", torch.tensor([1.0, 2.4]), np.array([1.0, 2.0]), what="the logits")
    assert not bad.ok and "does not match" in repr(bad) and "largest difference 0.4" in bad.message
    named = lessons.verdict("01.3", 0.91, 0.2, what="FVU", mistakes={"divided by the energy about zero": 0.91})
    assert "known mistake gives: divided by the energy about zero" in named.message
    assert "shape" in lessons.verdict("04.1", np.zeros(3), np.zeros(4)).message
    assert "entries differ" in lessons.verdict("05.1", np.array([0, 1, 2]), np.array([0, 1, -1])).message
    assert "NaN" in lessons.verdict("01.3", float("nan"), 0.2).message
    assert "None" in lessons.verdict("01.3", None, 0.2).message
    assert "complex" in lessons.verdict("01.3", torch.tensor([1 + 1j]), np.array([1.0])).message
    assert lessons.verdict("02.1", (0.5, 0.25), (0.5, 0.25)).ok
    assert "item 2" in lessons.verdict("02.1", (0.5, 0.3), (0.5, 0.25)).message
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    with pytest.raises(lessons.ExerciseFailed):
        lessons.verdict("01.3", 0.5, 0.2)


# ---------------------------------------------------------------- graded student versions
def test_graded_student_versions(tmp_path, capsys):
    import nbformat
    from mono_utils.cli import main
    from mono_utils.lessons.student import FOLD_TAG, GRADED_TAG, STUB_TAG, tags
    from mono_utils.notebooks import notebook_paths
    assert main(["lessons", "--graded", "--out", str(tmp_path / "graded")]) == 0
    assert "without the formula" in capsys.readouterr().out
    n_stubs = 0
    for src in notebook_paths():
        nb = nbformat.read(tmp_path / "graded" / src.name, as_version=4)
        kinds = [set(tags(c)) for c in nb.cells]
        assert not any(FOLD_TAG in k or "hint" in k for k in kinds), f"{src.name}: a solution or hint in a graded version"
        assert "BEGIN SOLUTION" not in (tmp_path / "graded" / src.name).read_text(encoding="utf-8")
        stubs = [i for i, k in enumerate(kinds) if STUB_TAG in k]
        n_stubs += len(stubs)
        if stubs:
            setup = [i for i, k in enumerate(kinds) if GRADED_TAG in k]
            assert len(setup) == 1 and setup[0] < stubs[0] and nb.metadata["mono_utils"]["graded"]
            ns = {}
            exec(nb.cells[setup[0]].source, ns)          # the setup cell switches the checks to graded messages
            assert checks.graded()
            checks.set_graded(None)
    assert n_stubs >= 12
