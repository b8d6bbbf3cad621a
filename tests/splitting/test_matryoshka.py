"""Notebook 05's nested dictionary: the per-domain measures against core.probing, and the stages on smoke."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mono_utils.core.probing import absorption, domain_direction
from mono_utils.splitting import matryoshka as M


def _toy(seed=0, n=600, units=7, d=5, n_labels=3):
    rng = np.random.default_rng(seed)
    acts = (rng.exponential(1, (n, units)) * (rng.random((n, units)) < 0.15)).astype(np.float32)
    ids = rng.integers(0, n_labels, n)
    acts[ids == 1, 2] += 1.0            # unit 2 fires on label 1 (and on some of the rest)
    acts[(ids == 1) & (rng.random(n) < 0.4), 2] = 0   # silent on 40% of label 1
    x = rng.normal(size=(n, d))
    x[ids == 1] += 2.0
    decoder = rng.normal(size=(units, d))
    return acts, ids, x, decoder


def test_label_f1_by_hand():
    acts, ids, _, _ = _toy()
    f1 = M.label_f1(sp.csr_matrix(acts), ids, 3)
    for u in range(acts.shape[1]):
        for lab in range(3):
            fires, on = acts[:, u] > 0, ids == lab
            tp = (fires & on).sum()
            assert f1[u, lab] == pytest.approx(2 * tp / (fires.sum() + on.sum()))
    with pytest.raises(ValueError, match="one label per token"):
        M.label_f1(sp.csr_matrix(acts), ids[:-1], 3)


def test_domain_directions_equal_core_probing():
    _, ids, x, _ = _toy()
    sums = np.stack([x[ids == lab].sum(0) for lab in range(3)])
    dirs = M.domain_directions(sums, np.bincount(ids, minlength=3), x.sum(0))
    for lab in range(3):
        np.testing.assert_allclose(dirs[lab], domain_direction(x, ids == lab), atol=1e-10)


def test_domain_owner_equals_core_absorption_on_every_feature():
    acts, ids, x, decoder = _toy()
    lab = ids == 1
    direction = domain_direction(x, lab)
    decoder[4] = direction + 0.1 * decoder[4]       # unit 4 carries the direction: a possible absorber
    acts[lab & (acts[:, 2] == 0), 4] = 1.5          # and fires where the owner is silent
    f1 = M.label_f1(sp.csr_matrix(acts), ids, 3)[:, 1]
    r = M.domain_owner(sp.csc_matrix(acts), f1, lab, decoder, direction)
    ref = absorption(acts, lab, main=r["owner"], decoder=decoder, direction=direction)
    assert r["owner"] == int(np.argmax(f1)) == 2
    assert r["absorption"] == pytest.approx(ref.rate) and r["recall"] == pytest.approx(ref.main_recall)
    assert r["absorbers"] == len(ref.absorbers) and ref.rate > 0.2
    fires = acts[:, r["owner"]] > 0
    assert r["precision"] == pytest.approx((fires & lab).sum() / fires.sum())


# ---------------------------------------------------------------- the stages (smoke)
def test_matryoshka_stages_on_smoke(smoke_preset, smoke_store):
    from mono_utils.pipeline.saes import get_sae_family, sae_metrics
    from mono_utils.stages import STAGE_DEPS, build_stages
    names = [n for n, _ in build_stages(smoke_preset, smoke_store)]
    assert {"Matryoshka A", "Matryoshka analysis"} <= set(names) and "family analysis" in STAGE_DEPS["Matryoshka analysis"]
    sizes = sorted(smoke_preset.sae_sizes)
    nested = M.get_matryoshka_sae(smoke_preset, smoke_store, progress=False)
    assert nested.cfg.matryoshka_prefixes == tuple(sizes) and nested.cfg.d_sae == sizes[-1]
    assert "matryoshka" in nested.folder.name
    family = get_sae_family(smoke_preset, which="A", store=smoke_store, progress=False)
    # the same training activations as the family's member of its width
    assert sae_metrics(nested)["train_tokens"] == sae_metrics(family[sizes[-1]])["train_tokens"]
    an = M.get_matryoshka_analysis(smoke_preset, smoke_store, progress=False, nested=nested, family=family)
    q = an.quality.set_index(["dictionary", "width"])
    assert len(q) == 2 * len(sizes)
    l0 = [q.loc[(M.NESTED, n), "L0"] for n in sizes]
    assert l0 == sorted(l0) and l0[0] > 0                  # a prefix's features are a subset of the next one's
    assert q.loc[(M.NESTED, sizes[-1]), "FVU"] == pytest.approx(sae_metrics(nested)["fvu"])
    assert all(0 < q.loc[(M.NESTED, n), "loss recovered"] <= 1.05 for n in sizes)
    o = an.owners
    assert len(o) and set(o.dictionary) == {M.NESTED, M.FAMILY} and sorted(o.width.unique()) == sizes
    assert o[["recall", "precision", "absorption", "f1"]].apply(lambda c: c.between(0, 1).all()).all()
    first = o[o.width == sizes[0]]
    assert first["keeps first owner"].all()                # at the first width every owner is its own
    nested_owners = o[o.dictionary == M.NESTED]
    assert (nested_owners.owner < nested_owners.width).all()   # an owner at width n is one of the first n
    assert set(an.links.step) == {f"{a}->{b}" for a, b in zip(sizes, sizes[1:])}
    s = an.summary()
    assert list(s.index.get_level_values("width").unique()) == sizes
    text = M.gain_report(an)
    assert f"{sizes[-1]:,} features" in text and "nested" in text
    fig = M.matryoshka_figure(an)
    assert len(fig.data) > 4
    assert len(M.owners_table(an).columns) == 2 * len(sizes)
    again = M.get_matryoshka_analysis(smoke_preset, smoke_store, progress=False, nested=nested, family=family)
    for name in ("quality", "owners", "links"):                 # loaded from the store: the same tables
        pd.testing.assert_frame_equal(getattr(again, name), getattr(an, name))
