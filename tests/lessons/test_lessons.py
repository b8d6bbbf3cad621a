"""Lessons: every notebook's solutions pass their checks, every stub fails with the helpful message,
wrong answers get the message that names the mistake, and the student versions are generated from
the tags and run once the folded solutions are pasted back (fast: synthetic data, no store)."""
import json

import nbformat
import numpy as np
import pytest
import torch

from mono_utils import lessons
from mono_utils.lessons import checks
from mono_utils.lessons.student import (FOLD_TAG, STUB_TAG, folded_solution, solution_source, stub_source,
                                        student_notebook, tags, write_student_versions)
from mono_utils.notebooks import notebook_paths

NOTEBOOKS = notebook_paths()
IDS = [p.name for p in NOTEBOOKS]


def _read(p):
    return nbformat.read(p, as_version=4)


def _exercises(nb):
    """(solution cell, [check cells]) for every exercise of a teacher notebook."""
    out = []
    for i, c in enumerate(nb.cells):
        if "solution" in tags(c):
            follow = []
            for d in nb.cells[i + 1:]:
                if "check" in tags(d) or "hint" in tags(d):
                    follow.append(d)
                else:
                    break
            out.append((c, [d for d in follow if "check" in tags(d)]))
    return out


def _run_cells(sources, ns=None):
    """Execute cells like a kernel: displayed objects and each cell's last expression go to ns["_shown"]."""
    import ast
    if ns is None:
        ns = {"_shown": []}
        ns["display"] = lambda *a, **k: ns["_shown"].extend(a)
    for src in sources:
        tree = ast.parse(src)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<cell>", "exec"), ns)
        if last is not None:
            ns["_shown"].append(eval(compile(ast.Expression(last.value), "<cell>", "eval"), ns))
    return ns


@pytest.fixture()
def strict(monkeypatch):
    monkeypatch.setenv(checks.STRICT_ENV, "1")


# ---------------------------------------------------------------- notebooks: structure
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_notebook_is_a_lesson(path):
    nb = _read(path)
    text = [c.source for c in nb.cells if c.cell_type == "markdown"]
    plan = [c for c in nb.cells if c.get("id") == "lesson-plan"]
    assert plan and nb.cells.index(plan[0]) <= 2, f"{path.name}: the learning objectives should open the notebook"
    bullets = [line for line in plan[0].source.splitlines() if line.startswith("- ")]
    assert 3 <= len(bullets) <= 5, f"{path.name}: {len(bullets)} objectives, the lesson format asks for 3-5"
    assert "laptop" in plan[0].source and "GPU" in plan[0].source and "**You need:**" in plan[0].source
    assert "Questions to discuss" in text[-1] or "Questions to discuss" in text[-2], f"{path.name}: no closing questions"
    exercises = _exercises(nb)
    assert exercises, f"{path.name} has no checked exercise"
    for sol, chk in exercises:
        assert chk, f"{path.name}: solution cell {sol.id} is not followed by a check cell"
        assert any(line.strip() == "# BEGIN SOLUTION" for line in sol.source.splitlines())
    for c in nb.cells:
        if "hint" in tags(c):
            assert c.source.startswith("<details>"), f"{path.name}: hint {c.id} should be folded"


# ---------------------------------------------------------------- solutions and stubs against the checks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_solution_passes_its_check(path, strict):
    for sol, chk in _exercises(_read(path)):
        ns = _run_cells([sol.source] + [c.source for c in chk])   # strict: a failing check raises
        results = [r for r in ns["_shown"] if isinstance(r, lessons.CheckResult)]
        assert results and all(r.ok for r in results)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_stub_fails_its_check_with_the_helpful_message(path, strict):
    for sol, chk in _exercises(_read(path)):
        ns = _run_cells([stub_source(sol.source, "xx")])
        with pytest.raises(lessons.ExerciseFailed) as e:
            _run_cells([c.source for c in chk], ns)
        assert "not written yet" in e.value.message and "NotImplementedError" in e.value.message


def test_a_check_displays_rather_than_raises_in_a_notebook(monkeypatch):
    monkeypatch.delenv(checks.STRICT_ENV, raising=False)
    r = lessons.check_fvu(lambda x, x_hat: float((x - x_hat).pow(2).sum() / x.pow(2).sum()))
    assert not r.ok and "about the mean" in r.message
    assert "mono-check-fail" in r._repr_html_() and "✘" in repr(r)
    good = lessons.check_fvu(lambda x, x_hat: float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()))
    assert good.ok and "mono-check-ok" in good._repr_html_()
    assert "expected a function" in lessons.check_fvu(3.0).message


# ---------------------------------------------------------------- wrong answers name their mistake
def _msg(check, fn):
    r = check(fn)
    assert not r.ok, f"{check.__name__} accepted a wrong answer"
    return r.message


def test_00_wrong_answers():
    hp = "blocks.0.mlp.hook_pre"
    assert "pre-activations" in _msg(lessons.check_mlp_activations,
                                     lambda m, t: m.run_with_cache(t, names_filter=hp)[1][hp])
    assert "tuple" in _msg(lessons.check_mlp_activations, lambda m, t: m.run_with_cache(t))
    assert "logits" in _msg(lessons.check_mlp_activations, lambda m, t: m(t))
    assert "only the positions" in _msg(lessons.check_top_neuron_for_token,
                                        lambda a, t, i: int(a.mean((0, 1)).argmax()))
    assert "mean" in _msg(lessons.check_top_neuron_for_token, lambda a, t, i: int(a[t == i].max(0).values.argmax()))


def test_01_wrong_answers():
    fwd = lambda x, We, be, Wd, bd: (torch.relu(x @ We + be), torch.relu(x @ We + be) @ Wd + bd)
    assert "subtract b_dec" in _msg(lessons.check_sae_forward, fwd)
    no_bias = lambda x, We, be, Wd, bd: (torch.relu((x - bd) @ We + be), torch.relu((x - bd) @ We + be) @ Wd)
    assert "add b_dec back" in _msg(lessons.check_sae_forward, no_bias)
    no_relu = lambda x, We, be, Wd, bd: ((x - bd) @ We + be, ((x - bd) @ We + be) @ Wd + bd)
    assert "ReLU" in _msg(lessons.check_sae_forward, no_relu)
    assert "summed over the d_in" in _msg(lessons.check_sae_loss,
                                          lambda x, xh, f, l: (x - xh).pow(2).sum(-1).mean() + l * f.sum(-1).mean())
    assert "L1 penalty is missing" in _msg(lessons.check_sae_loss, lambda x, xh, f, l: (x - xh).pow(2).mean())
    assert "parallel component itself" in _msg(lessons.check_project_decoder_grad,
                                               lambda W, g: (g * W).sum(1, keepdim=True) * W)
    assert "still points along" in _msg(lessons.check_project_decoder_grad,
                                        lambda W, g: g - (g * W).sum(0, keepdim=True) * W)
    assert "EXPLAINED" in _msg(lessons.check_fvu, lambda x, xh: 1 - float((x - xh).pow(2).sum() / (x - x.mean(0)).pow(2).sum()))
    assert "share LOST" in _msg(lessons.check_loss_recovered, lambda c, s, a: (s - c) / (a - c))


def test_02_03_wrong_answers():
    def swapped(a, c, t):
        on = a > t
        return int((on & c).sum()) / max(1, int(c.sum())), int((on & c).sum()) / max(1, int(on.sum()))
    assert "swapped" in _msg(lessons.check_specificity_sensitivity, swapped)

    def ge(a, c, t):
        on = a >= t
        return int((on & c).sum()) / max(1, int(on.sum())), int((on & c).sum()) / max(1, int(c.sum()))
    assert "strictly above" in _msg(lessons.check_specificity_sensitivity, ge)
    from mono_utils.autointerp.protocol import weighted_pearson, weighted_spearman
    assert "ignored the weights" in _msg(lessons.check_simulation_score, lambda t, p, w: weighted_spearman(t, p))
    assert "not their ranks" in _msg(lessons.check_simulation_score, lambda t, p, w: weighted_pearson(t, p, w))
    from mono_utils.autointerp.protocol import weighted_rank

    def unguarded(t, p, w):
        w = np.asarray(w, float) / np.sum(w)
        rt, rp = weighted_rank(t, w), weighted_rank(p, w)
        dt, dp = rt - w @ rt, rp - w @ rp
        if np.ptp(p) == 0:
            return float("nan")          # 0 / 0, as an unguarded division gives
        return float(w @ (dt * dp) / np.sqrt((w @ (dt * dt)) * (w @ (dp * dp))))
    assert "constant" in _msg(lessons.check_simulation_score, unguarded)


def test_04_05_06_wrong_answers():
    def cosine(a, b):
        c = (a / np.linalg.norm(a, axis=0)).T @ (b / np.linalg.norm(b, axis=0))
        return c.max(1), c.argmax(1)
    assert "cosine similarities" in _msg(lessons.check_max_activation_correlation, cosine)

    def axis(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        c = (a / np.linalg.norm(a, axis=0)).T @ (b / np.linalg.norm(b, axis=0))
        return c.max(0), c.argmax(0)
    assert "one per unit of B" in _msg(lessons.check_max_activation_correlation, axis)

    def no_threshold(s, l, t=0.4):
        return ((s / np.linalg.norm(s, axis=0)).T @ (l / np.linalg.norm(l, axis=0))).argmax(0)
    assert "threshold" in _msg(lessons.check_link_parents, no_threshold)

    def replace(sae, feat, value, keep_error=True):
        def hook(acts, hook):
            f = sae.encode(acts)
            f[..., feat] = value
            return sae.decode(f)
        return hook
    assert "forgot the error term" in _msg(lessons.check_clamp_hook, replace)

    def add(sae, feat, value, keep_error=True):
        return lambda acts, hook: acts + value * sae.W_dec_raw[feat]
    assert "'add' steering" in _msg(lessons.check_clamp_hook, add)

    def none(sae, feat, value, keep_error=True):
        def hook(acts, hook):
            acts += 0
        return hook
    assert "returns None" in _msg(lessons.check_clamp_hook, none)


# ---------------------------------------------------------------- student versions
def test_stub_and_solution_sources():
    src = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    return x + 1\n    # END SOLUTION\n"
    stub = stub_source(src, "01.2")
    assert "return x + 1" not in stub and "raise NotImplementedError(\"Exercise 01.2" in stub
    assert "    # YOUR CODE HERE" in stub and stub.startswith("def f(x):\n    '''doc'''")
    assert solution_source(src) == "def f(x):\n    '''doc'''\n    return x + 1"
    with pytest.raises(ValueError, match="BEGIN SOLUTION"):
        stub_source("def f(x):\n    return x\n")
    with pytest.raises(ValueError, match="has no"):
        stub_source("def f(x):\n    # BEGIN SOLUTION\n    return x\n")


def test_lessons_command_writes_student_versions(tmp_path, capsys):
    from mono_utils.cli import main
    assert main(["lessons", "--out", str(tmp_path / "exercises")]) == 0
    out = capsys.readouterr().out
    assert f"{len(NOTEBOOKS)} student notebooks" in out
    for src in NOTEBOOKS:
        teacher, student = _read(src), _read(tmp_path / "exercises" / src.name)
        sols = [c for c in teacher.cells if "solution" in tags(c)]
        stubs = [c for c in student.cells if STUB_TAG in tags(c)]
        folds = [c for c in student.cells if FOLD_TAG in tags(c)]
        assert len(sols) == len(stubs) == len(folds)
        raw = (tmp_path / "exercises" / src.name).read_text(encoding="utf-8")
        assert "# BEGIN SOLUTION" not in raw.replace("\\n", "\n").split("<details>")[0] or folds
        for s, st, fo in zip(sols, stubs, folds):
            assert st.id == s.id and "NotImplementedError" in st.source and "BEGIN SOLUTION" not in st.source
            assert folded_solution(fo.source) == solution_source(s.source)
            assert fo.source.startswith("<details>")
            # the fold comes after the check and hint that follow the stub
            i, j = student.cells.index(st), student.cells.index(fo)
            assert all(set(tags(c)) & {"check", "hint"} for c in student.cells[i + 1:j])
        # every other cell is the teacher's, unchanged
        rest_t = [(c.cell_type, c.source) for c in teacher.cells if "solution" not in tags(c)]
        rest_s = [(c.cell_type, c.source) for c in student.cells if not set(tags(c)) & {STUB_TAG, FOLD_TAG}]
        assert rest_t == rest_s
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    with pytest.raises(ValueError, match="notebooks' own folder"):
        write_student_versions(NOTEBOOKS[0].parent)


def test_student_versions_pass_every_check_once_solutions_are_pasted(strict):
    """Each stub replaced by the code of its folded solution, as a student pastes it: every check passes.
    The rest of a student notebook is the teacher's, cell for cell (test above), which the notebook
    tests execute top to bottom."""
    n, shown = 0, []
    for src in NOTEBOOKS:
        student = student_notebook(_read(src), src.name)
        ns = {"_shown": shown, "display": lambda *a, **k: shown.extend(a)}
        for i, c in enumerate(student.cells):
            if STUB_TAG in tags(c):
                fold = next(d for d in student.cells[i:] if FOLD_TAG in tags(d))
                _run_cells([folded_solution(fold.source)], ns)
            elif "check" in tags(c):
                _run_cells([c.source], ns)
                n += 1
    results = [r for r in shown if isinstance(r, lessons.CheckResult)]
    assert n >= 10 and len(results) >= 12 and all(r.ok for r in results)


# ---------------------------------------------------------------- notebook 03's game
def _round():
    from mono_utils.autointerp.protocol import Example
    from mono_utils.lessons.game import Round
    acts = [np.array([0, 0, 2.0, 0.5]), np.array([0, 0, 0, 0.0]), np.array([1.0, 0, 0, 4.0])]
    ex = [Example(row=i, start=0, centre=2, token_ids=np.arange(4), acts=a.astype(np.float32), source="top")
          for i, a in enumerate(acts)]
    return Round("feature", 7, "fires on ' b' and ' d'", ex, [" a", " b", " c", " d"],
                 [np.zeros(4), np.zeros(4), np.array([0, 0, 0, 9.0])], max_act=4.0)


def test_game_scores_guesses_like_the_protocol():
    from mono_utils.autointerp.protocol import weighted_spearman
    from mono_utils.lessons.game import parse_guesses, score_guesses
    rnd = _round()
    perfect = [10 * e.acts / 4 for e in rnd.examples]
    s = score_guesses(rnd, perfect)
    assert s["you"] == pytest.approx(1.0) and s["tokens"] == 12
    true = np.concatenate([e.acts for e in rnd.examples])
    assert s["offline simulator"] == pytest.approx(weighted_spearman(true, np.concatenate(rnd.offline)))
    assert score_guesses(rnd, "0 0 0 0\n0 0 0 0\n0 0 0 0")["you"] == 0.0      # a constant guess
    assert score_guesses(rnd, "0,0,5,1\n0 0 0 0\n2 0 0 10")["you"] > 0.9
    with pytest.raises(ValueError, match="one row per context"):
        parse_guesses("0 0 0 0", rnd)
    with pytest.raises(ValueError, match="context 2 has 4 tokens"):
        parse_guesses("0 0 0 0\n0 0\n0 0 0 0", rnd)
    with pytest.raises(ValueError, match="between 0 and 10"):
        parse_guesses("0 0 0 0\n0 0 0 0\n0 0 0 11", rnd)
    assert [list(map(float, t)) for t in rnd.truth()][2] == [2.5, 0.0, 0.0, 10.0]


def test_game_widget_scores_on_click():
    from mono_utils.lessons.game import round_widget
    got = []
    w = round_widget(_round(), got.append)
    boxes = [c.children[1] for c in w.children[1:4]]
    for b, v in zip(boxes, ["0 0 5 1", "0 0 0 0", "2 0 0 10"]):
        b.value = v
    button, out = w.children[4], w.children[5]
    button.click()
    assert got and got[0]["you"] > 0.9 and "your score" in out.value
    boxes[0].value = "0 0"
    button.click()
    assert "context 1 has 4 tokens" in out.value
