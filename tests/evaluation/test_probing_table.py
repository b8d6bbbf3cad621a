"""Sparse probing and absorption for every dictionary, on planted dictionaries whose answers are known
(tests/evaluation/_evaluation_planted.py): a unit that is the label reads it at k = 1 with accuracy 1.0, a
main feature silent on half its domain while a feature with its decoder direction fires there gives
absorption 0.5; random units probe near chance; the hard pairs that the corpus lacks are named."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _evaluation_planted import planted_dictionaries, planted_tokens, planted_x
from mono_utils.evaluation import probing_table as P


@pytest.fixture(scope="module")
def ts():
    return planted_tokens()


@pytest.fixture(scope="module")
def tables(ts):
    return P.probing_and_absorption(planted_dictionaries(ts), ts, pairs=(("hebrew", "arabic"), ("python", "js")),
                                    progress=False)


def _acc(table, dictionary, task, k):
    row = table[(table.dictionary == dictionary) & (table.task == task) & (table.k == k)]
    assert len(row) == 1, (dictionary, task, k)
    return float(row.accuracy.iloc[0])


def test_a_unit_that_is_the_label_is_read_at_k1(tables):
    probing, _, _ = tables
    assert _acc(probing, "A/1", "domain: code", 1) == 1.0
    assert _acc(probing, "A/1", "hebrew vs arabic", 1) == 1.0
    assert _acc(probing, "neurons", "domain: code", 1) == 1.0          # x[:, 0] is the code label too
    for control in ("randomized", "frozen decoder"):                   # units that read none of the labels
        for k in (1, 20):
            assert 0.3 < _acc(probing, control, "domain: code", k) < 0.7, (control, k)
    assert set(probing.k) == {1, 2, 5, 20}
    assert (probing["tokens per class"] > 0).all()


def test_tasks_name_what_the_corpus_lacks(ts, tables):
    _, _, skipped = tables
    assert any("python vs js" in s and "no subdomain js" in s for s in skipped), skipped
    tasks, _ = P.label_tasks(ts, (("hebrew", "arabic"),))
    assert [t.name for t in tasks] == ["domain: code", "domain: multilingual", "domain: generated",
                                       "domain: english", "hebrew vs arabic"]
    pair = tasks[-1]
    sub = ts.subdomain.reshape(-1)[ts.keep]
    assert np.array_equal(pair.include, (sub == 1) | (sub == 2)) and np.array_equal(pair.y, sub == 1)


def test_every_dictionary_probes_the_same_tokens(ts):
    task = P.label_tasks(ts, ())[0][0]
    idx, y = P.task_rows(task, max_per_class=50, seed=0)
    idx2, _ = P.task_rows(task, max_per_class=50, seed=0)
    assert np.array_equal(idx, idx2) and y.sum() == 50 and (~y).sum() == 50


def test_absorption_finds_the_planted_half(ts, tables):
    _, absorb, _ = tables
    a1 = absorb[absorb.dictionary == "A/1"].set_index("label")
    for label in ("subdomain:dna", "domain:generated"):       # the same tokens, two levels
        r = a1.loc[label]
        assert r["main unit"] == 3 and r["precision"] == 1.0 and r["recall"] == 0.5 and r["specific"]
        assert r["absorption"] == 0.5 and r["absorbers"] == 1
    heb = a1.loc["subdomain:hebrew"]
    assert heb["specific"] and heb["recall"] == 1.0 and heb["absorption"] == 0.0
    # a label whose best unit is not specific has no rate
    eng = a1.loc["subdomain:readme"]
    assert not eng["specific"] and np.isnan(eng["absorption"])
    summary = P.absorption_summary(absorb)
    assert summary.loc["A/1", "specific labels"] == int(a1["specific"].sum())
    assert summary.loc["A/1", "mean absorption"] == pytest.approx(a1.loc[a1["specific"], "absorption"].mean())


def test_absorption_reads_the_direction_with_its_sign(ts):
    """The same planted units with unit 4's decoder flipped: it no longer carries the DNA direction."""
    dicts = planted_dictionaries(ts, seeds=0)
    d = dicts["A/1"]
    d.decoder = d.decoder.copy()
    d.decoder[4] *= -1
    _, absorb, _ = P.probing_and_absorption({"A/1": d}, ts, pairs=(), progress=False)
    r = absorb.set_index("label").loc["subdomain:dna"]
    assert r["absorption"] == 0.0 and r["absorbers"] == 0


def test_probing_summary_means_over_tasks(tables):
    probing, _, _ = tables
    s = P.probing_summary(probing)
    want = probing[(probing.dictionary == "A/1") & (probing.kind == "domain") & (probing.k == 1)].accuracy.mean()
    assert s.loc["A/1", ("domain", 1)] == pytest.approx(want)
    assert list(s.index)[:2] == ["neurons", "A/1"]


def test_heldout_rows_are_the_validation_split(smoke_preset, smoke_tokens):
    ts = P.heldout_rows(smoke_preset, smoke_tokens, 2048)
    tv, dv, sv = smoke_tokens.split("val")
    rows = 2048 // tv.shape[1]
    assert np.array_equal(ts.tokens, tv[:rows]) and np.array_equal(ts.subdomain, sv[:rows])
    assert ts.desc["rows"] == rows and len(ts.keep) == rows * (tv.shape[1] - 1)
    masks = ts.label_masks(min_tokens=1)
    assert all(m.dtype == bool and len(m) == len(ts.keep) for m in masks.values())
    assert {k.split(":")[0] for k in masks} == {"domain", "subdomain"}


def test_bad_activations_are_refused(ts):
    d = planted_dictionaries(ts, seeds=0)["A/1"]
    d.encoder = lambda x: -np.ones((len(x), 8), np.float32)     # bypasses the clamp: a broken dictionary
    d.encode = lambda x: -np.ones((len(x), 8), np.float32)
    with pytest.raises(ValueError, match="negative activations"):
        P.dictionary_acts(d, x=planted_x(ts))
    with pytest.raises(ValueError, match="one of the two"):
        P.dictionary_acts(d)
    assert isinstance(P.probing_table({}, []), pd.DataFrame)
