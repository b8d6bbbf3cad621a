import numpy as np
import pytest
from _mono_standins import random_index

from mono_utils.features import rating as rt


@pytest.fixture()
def idx():
    return random_index()


def test_rubric_total():
    assert rt.rubric_total(3, 5, 3, None, 3) == 14
    assert rt.rubric_total(3, 5, 2, 1, 3) == 14
    assert rt.rubric_total(3, 5, 3, 1, 3) == 14          # separation is not applicable at logit 3
    assert rt.rubric_total(0, 0, 0, 0, 0) == 0
    with pytest.raises(ValueError, match="from 0 to 5"):
        rt.rubric_total(1, 6, 0, 0, 0)
    with pytest.raises(ValueError, match="from 0 to 3"):
        rt.rubric_total(1.5, 1, 0, 0, 0)


def test_draw_units_blinded_mix(idx):
    plan = rt.draw_units(idx, 5, 4, seed=3)
    assert len(plan) == 9 and sum(k == "feature" for k, _ in plan) == 5
    assert all(u != 0 for _, u in plan)                   # dead units are never drawn
    assert plan == rt.draw_units(idx, 5, 4, seed=3) and plan != rt.draw_units(idx, 5, 4, seed=4)


def test_session_survives_interruption_and_resumes(idx, tmp_path):
    s = rt.RatingSession(idx, "ada", seed=1, n_features=4, n_neurons=4, folder=tmp_path)
    assert s.current()[0] == 0
    for i in range(3):
        s.record(f"unit {i}, meaning", 2, 3, 1, 1, 2)
    # "the kernel dies": a new session with the same rater/seed picks up at item 3
    s2 = rt.RatingSession(idx, "ada", seed=1, n_features=4, n_neurons=4, folder=tmp_path)
    assert s2.current() == (3, *s2.plan[3]) and s2.plan == s.plan
    assert s2.progress() == "3 of 8 rated"
    while not s2.finished:
        s2.record("x", 3, 5, 3, None, 3)
    with pytest.raises(ValueError, match="complete"):
        s2.record("x", 0, 0, 0, 0, 0)
    df, problems = rt.load_ratings(tmp_path)
    assert problems == [] and len(df) == 8 and set(df.item) == set(range(8))
    assert df.rater.eq("ada").all() and df.seed.eq(1).all()
    assert df[df.item == 0].interpretation.item() == "unit 0, meaning"
    # a different seed is a different session in the same file
    s3 = rt.RatingSession(idx, "ada", seed=2, n_features=2, n_neurons=2, folder=tmp_path)
    assert s3.current()[0] == 0


def test_corrupted_file_is_reported_and_good_rows_kept(idx, tmp_path):
    s = rt.RatingSession(idx, "bob", seed=0, n_features=3, n_neurons=3, folder=tmp_path)
    for _ in range(3):
        s.record("ok", 1, 1, 1, 0, 1)
    p = tmp_path / "bob.csv"
    text = p.read_text()
    lines = text.splitlines()
    bad = lines[:2] + ["garbage,,line", lines[2].replace(",4,", ",9,", 1)[:-5], "\x00\x01"] + lines[3:]
    p.write_text("\n".join(bad) + "\n")
    s2 = rt.RatingSession(idx, "bob", seed=0, n_features=3, n_neurons=3, folder=tmp_path)
    assert len(s2.problems) >= 2 and all("bob.csv line" in m for m in s2.problems)
    assert len(s2.done_items) >= 2
    s2.record("next", 2, 2, 2, 1, 2)
    rows, problems = rt.read_ratings(p)
    assert len(rows) >= 3 and "next" in {r["interpretation"] for r in rows}   # good rows kept, the new one added
    assert p.read_text().startswith("\n".join(bad))     # append-only: the damaged lines stay for a human to see
    assert len(problems) == len(s2.problems) >= 2


def test_bad_rater_names(idx, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        rt.RatingSession(idx, "  ", folder=tmp_path)
    with pytest.raises(ValueError, match="letters, digits"):
        rt.RatingSession(idx, "../etc/passwd", folder=tmp_path)


def test_unblinding_and_agreement(idx, tmp_path):
    g = np.random.default_rng(0)
    for rater, noise in (("r1", 0), ("r2", 1), ("r3", 3)):
        s = rt.RatingSession(idx, rater, seed=7, n_features=5, n_neurons=5, folder=tmp_path)
        while not s.finished:
            i, kind, unit = s.current()
            base = 12 if kind == "feature" else 1
            tgt = int(np.clip(base + g.integers(-noise, noise + 1) + (unit % 2), 0, 14))
            conf, act = min(3, tgt), min(5, max(0, tgt - 3))
            logit = min(3, max(0, tgt - 8))
            spec = min(3, max(0, tgt - conf - act - logit))
            s.record("i", conf, act, logit, 0, spec)
    df, _ = rt.load_ratings(tmp_path)
    summ = rt.summary(df)
    assert summ["feature"]["median"] > summ["neuron"]["median"] and summ["feature"]["n"] == 15
    ag = rt.agreement(df)
    assert ag["raters"] == ["r1", "r2", "r3"] and ag["units_with_2plus_raters"] == 10
    by = {(p["a"], p["b"]): p for p in ag["pairs"]}
    assert by[("r1", "r2")]["spearman"] > 0.5 and by[("r1", "r2")]["shared_units"] == 10
    fig = rt.unblind_figure(df)
    assert len(fig.data) == 2
