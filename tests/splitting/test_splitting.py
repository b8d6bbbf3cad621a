"""Feature splitting: linking across sizes on a constructed split, trees, UMAP determinism, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_utils.splitting import family as S
from mono_utils.universality import cache as UC


def _constructed(seed=0, n=4000):
    """Level 0 (4 features): feature 1 fires on set P. Level 1 (8): features 5 and 2 split P in two
    halves. Level 2 (16): feature 5's half splits again into 9 and 14. Everything else: random noise."""
    rng = np.random.default_rng(seed)
    noise = lambda k: (rng.exponential(1, (n, k)) * (rng.random((n, k)) < 0.02)).astype(np.float32)  # noqa: E731
    a0, a1, a2 = noise(4), noise(8), noise(16)
    in_p = rng.random(n) < 0.2
    half = rng.random(n) < 0.5
    quarter = rng.random(n) < 0.5
    v = rng.uniform(1, 2, n).astype(np.float32)
    a0[:, 1] = np.where(in_p, v, 0)
    a1[:, 5] = np.where(in_p & half, v, 0)
    a1[:, 2] = np.where(in_p & ~half, v, 0)
    a2[:, 9] = np.where(in_p & half & quarter, v, 0)
    a2[:, 14] = np.where(in_p & half & ~quarter, v, 0)
    a2[:, 3] = np.where(in_p & ~half, v, 0)
    a2[:, 7] = 0          # dead
    return {4: a0, 8: a1, 16: a2}


def test_one_direction_splits_into_two():
    g = S.link_activations(_constructed(), threshold=0.4, chunk=1000)
    assert sorted(g.children(0, 1)) == [2, 5]
    assert sorted(g.children(1, 5)) == [9, 14]
    assert list(g.children(1, 2)) == [3]
    assert g.ancestors(2, 14) == [(1, 5, pytest.approx(g.parent_sim[2][14]))] + [(0, 1, pytest.approx(g.parent_sim[1][5]))]
    assert 0.6 < g.parent_sim[1][5] < 0.8          # cos of a set with its half ~ 1/sqrt(2)
    desc = {(lv, f) for lv, f, _, _ in g.descendants(0, 1)}
    assert desc == {(1, 2), (1, 5), (2, 3), (2, 9), (2, 14)}
    assert g.root(2, 9) == (0, 1)
    top = g.splits().iloc[0]
    assert (top["level"], top["feature"], top["n_children"]) in {(0, 1, 2), (1, 5, 2)}
    assert g.parent[2][7] == -1 and not g.live[2][7]
    # noise features are not linked to anything at the paper's threshold
    assert (g.parent[1][[i for i in range(8) if i not in (2, 5)]] == -1).all()
    s = g.summary()
    assert s["4->8"]["parents_that_split"] == 1


def test_sparse_path_agrees(monkeypatch):
    acts = _constructed(seed=1)
    dense = S.link_activations(acts)
    monkeypatch.setattr(S, "DENSE_MAX_CELLS", 0)
    sparse = S.link_activations(acts, chunk=900)
    for lv in range(3):
        np.testing.assert_array_equal(dense.parent[lv], sparse.parent[lv])
        np.testing.assert_allclose(dense.parent_sim[lv], sparse.parent_sim[lv], atol=1e-5)
    assert dense.links[1].nnz == sparse.links[1].nnz


def test_threshold_matters():
    acts = _constructed()
    assert len(S.link_activations(acts, threshold=0.75).children(0, 1)) == 0


def test_bad_family():
    acts = _constructed()
    with pytest.raises(ValueError, match="at least two"):
        S.link_activations({4: acts[4]})
    with pytest.raises(ValueError, match="different token sets"):
        S.link_activations({4: acts[4], 8: acts[8][:100]})
    with pytest.raises(ValueError, match="key them by dictionary size"):
        S.link_activations({4: acts[4], 9: acts[8]})
    g = S.link_activations(acts)
    with pytest.raises(ValueError, match="does not exist"):
        g.children(0, 4)


class _SAE:
    def __init__(self, d_in, d_sae):
        from types import SimpleNamespace
        self.cfg = SimpleNamespace(d_in=d_in, d_sae=d_sae)
        self.W = torch.randn(d_in, d_sae, generator=torch.Generator().manual_seed(d_sae))

    def encode(self, x):
        return torch.relu(x @ self.W - 1)


def test_family_activations(tiny_model):
    tokens = np.random.default_rng(0).integers(0, 64, (6, 16))
    acts = S.family_activations(tiny_model, {8: _SAE(64, 8), 16: _SAE(64, 16)}, tokens, batch_rows=4, progress=False)
    from mono_utils.core.model import mlp_post
    x = mlp_post(tiny_model, torch.from_numpy(tokens)).reshape(-1, 64)
    np.testing.assert_allclose(acts[16].toarray(), _SAE(64, 16).encode(x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="different widths"):
        S.family_activations(tiny_model, {8: _SAE(64, 8), 16: _SAE(32, 16)}, tokens, progress=False)
    with pytest.raises(ValueError, match="at least two"):
        S.family_activations(tiny_model, {8: _SAE(64, 8)}, tokens, progress=False)


def test_umap_deterministic():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 12))
    dec = {s: centers[rng.integers(0, 5, s)] + 0.1 * rng.normal(size=(s, 12)) for s in (30, 60)}
    a = S.umap_layout(dec, seed=3)
    b = S.umap_layout(dec, seed=3)
    assert len(a) == 90 and list(a["size"].unique()) == [30, 60]
    np.testing.assert_array_equal(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy())
    with pytest.raises(ValueError, match="at least two"):
        S.umap_layout({30: dec[30]})


def test_tree_figure_and_lineage_widget():
    from mono_utils.splitting import widgets as SW
    g = S.link_activations(_constructed())
    hover = {lv: [f"f{lv}.{i}" for i in range(s)] for lv, s in enumerate(g.sizes)}
    fig = SW.family_tree_figure(g, 1, 5, hover)
    pts = fig.data[1]
    assert sorted(pts.text, key=int) == sorted(["1", "2", "5", "3", "9", "14"], key=int)
    html = SW.lineage_html(g, 1, 5, hover)
    assert "f0.1" in html and "f2.14" in html
    w = SW.lineage_widget(g, hover, examples=lambda lv, f: f"<p>examples {lv}/{f}</p>", start=(0, 1))
    w.children[0].children[1].value = 2          # pick another feature
    assert "examples 0/2" in w.children[2].value
    import pandas as pd
    lay = pd.DataFrame({"size": [4, 4, 8], "feature": [0, 1, 0], "x": [0., 1., 2.], "y": [0., 1., 0.]})
    assert len(SW.umap_figure(lay, {4: ["a", "b", "c", "d"], 8: ["e"] * 8}).data) == 2


def test_family_quality_figure_shows_each_size_in_order():
    from mono_utils.splitting.widgets import family_quality_figure
    fig = family_quality_figure({2048: {"l0": 20.0, "loss_recovered": 0.9}, 512: {"l0": 10.0, "loss_recovered": 0.8}})
    l0, rec = fig.data
    assert list(l0.x) == ["512", "2,048"] and list(l0.y) == [10.0, 20.0]
    assert list(rec.y) == pytest.approx([80.0, 90.0])


# ---------------------------------------------------------------- the cached analysis (notebook 05)
def test_family_analysis_and_umap_cached(smoke_preset, smoke_store, tmp_path, monkeypatch):
    import copy

    import pandas as pd

    from mono_utils.pipeline import models as pipeline
    from mono_utils.pipeline.saes import get_sae_family
    from mono_utils.features.dashboards import readable_vocab
    from mono_utils.store.artifacts import ArtifactStore
    from mono_utils.universality import compare as U
    store = ArtifactStore(tmp_path)     # results here, the smoke model and family from the shared store
    model = pipeline.get_model(smoke_preset, smoke_store, which="A", progress=False)
    family = get_sae_family(smoke_preset, which="A", store=smoke_store, progress=False)
    data, tok = pipeline.get_tokens(smoke_preset, smoke_store), pipeline.get_tokenizer(smoke_preset, smoke_store)
    kw = dict(model=model, family=family, data=data, tokenizer=tok)
    fam = S.get_family_analysis(smoke_preset, store, progress=False, **kw)
    lay = S.get_umap_layout(smoke_preset, store, progress=False, family=family, analysis=fam)

    tokens, _, sub, _ = UC.token_rows(smoke_preset, data)
    acts = S.family_activations(model, family, tokens, progress=False)
    g = S.link_activations(acts)
    vocab = readable_vocab(tok)   # what the analysis shows (hover, examples)
    ref_layout = S.umap_layout({n: s.W_dec_raw.detach() for n, s in family.items()},
                               live={n: acts[n].getnnz(0) > 0 for n in family})

    def check(f, layout):
        assert f.graph.sizes == g.sizes and f.graph.summary() == g.summary() and f.graph.splits().equals(g.splits())
        for lv, n in enumerate(g.sizes):
            np.testing.assert_array_equal(f.graph.parent[lv], g.parent[lv])
            np.testing.assert_array_equal(f.graph.parent_sim[lv], g.parent_sim[lv])
            np.testing.assert_array_equal(f.live[n], acts[n].getnnz(0) > 0)
            assert f.hover[lv] == U.top_tokens(acts[n].tocsc(), tokens, vocab)
            if lv:
                assert (f.graph.links[lv - 1].tocsr() != g.links[lv - 1].tocsr()).nnz == 0
        feat = int(np.flatnonzero(f.live[g.sizes[1]])[0])
        assert U.examples_html(f.acts[g.sizes[1]], feat, f.tokens, vocab) == \
            U.examples_html(acts[g.sizes[1]].tocsc(), feat, tokens, vocab)
        lc = U.label_correlation(acts[g.sizes[0]], sub, len(data.subdomain_names))
        np.testing.assert_array_equal(f.label_corr, lc)
        assert layout.equals(ref_layout)

    check(fam, lay)

    def fail(*a, **k):
        raise AssertionError("recomputed instead of loaded")
    for name in ("family_activations", "link_activations", "umap_layout"):
        monkeypatch.setattr(S, name, fail)
    check(S.get_family_analysis(smoke_preset, store, progress=False, **kw),
          S.get_umap_layout(smoke_preset, store, progress=False, **kw))
    assert len(list((tmp_path / "result").glob("splitting-*"))) == 1
    assert len(list((tmp_path / "result").glob("umap-*"))) == 1
    # another SAE of the family (another folder): another analysis; another seed: another map
    monkeypatch.undo()
    renamed = dict(family)
    renamed[g.sizes[0]] = copy.copy(family[g.sizes[0]])
    renamed[g.sizes[0]].folder = family[g.sizes[0]].folder.with_name("renamed-0")
    S.get_family_analysis(smoke_preset, store, progress=False, **{**kw, "family": renamed})
    assert len(list((tmp_path / "result").glob("splitting-*"))) == 2
    monkeypatch.setattr(S, "umap_layout", lambda *a, seed, **k: pd.DataFrame(
        {"size": [g.sizes[0]], "feature": [0], "x": [float(seed)], "y": [0.0]}))
    assert S.get_umap_layout(smoke_preset, store, progress=False, family=family, analysis=fam, seed=1)["x"].tolist() == [1.0]
    assert len(list((tmp_path / "result").glob("umap-*"))) == 2


def test_excluded_features_get_no_links():
    """An SAE's ultralow cluster is left out: no links, not live; the rest links as before."""
    acts = _constructed()
    excl = np.zeros(16, bool)
    excl[9] = True
    g = S.link_activations(acts, threshold=0.4, chunk=1000, exclude={16: excl})
    assert sorted(g.children(1, 5)) == [14]
    assert g.parent[2][9] == -1 and not g.live[2][9]
    assert list(g.children(1, 2)) == [3] and sorted(g.children(0, 1)) == [2, 5]
    with pytest.raises(ValueError, match="not in the family"):
        S.link_activations(acts, exclude={32: np.zeros(32, bool)})
    with pytest.raises(ValueError, match="one bool per feature"):
        S.link_activations(acts, exclude={16: np.zeros(15, bool)})


def test_blocked_path_matches_dense_in_many_blocks(monkeypatch):
    """Issue 21: pairs of sizes wider than DENSE_MAX_CELLS (the paper preset's 65,536 x 131,072)
    go a block of the larger size's features at a time; any block width gives the dense result."""
    acts = _constructed(seed=2)
    dense = S.link_activations(acts)
    monkeypatch.setattr(S, "DENSE_MAX_CELLS", 0)
    for cells in (4, 12, 10**6):          # 1, 3 (with a ragged last block) and all columns a block
        monkeypatch.setattr(S, "LINK_BLOCK_CELLS", cells)
        b = S.link_activations(acts)
        for lv in range(3):
            np.testing.assert_array_equal(dense.parent[lv], b.parent[lv])
            np.testing.assert_allclose(dense.parent_sim[lv], b.parent_sim[lv], atol=1e-6)
        for lv in range(2):
            d, k = dense.links[lv].tocsr(), b.links[lv].tocsr()
            assert (d != 0).nnz == k.nnz and ((d != 0) != (k != 0)).nnz == 0
            np.testing.assert_allclose(d.toarray(), k.toarray(), atol=1e-6)


def test_blocked_links_are_capped_to_the_strongest_per_feature():
    """Dense activations (an untrained SAE) link everything to everything: the blocked path keeps
    the MAX_LINKS_PER_FEATURE strongest links of each larger feature, so memory stays bounded."""
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    xs = sp.csr_matrix(rng.random((300, 40)).astype(np.float32))     # every feature fires everywhere
    ys = sp.csr_matrix(rng.random((300, 24)).astype(np.float32))
    parent, best, links = S._blocked_links(xs, ys, threshold=0.4, block_cells=40 * 5, max_links=3)
    cos = (xs.toarray() / np.linalg.norm(xs.toarray(), axis=0)).T @ (ys.toarray() / np.linalg.norm(ys.toarray(), axis=0))
    assert (cos > 0.4).all()                                          # 960 links above the threshold...
    lk = links.tocsc()
    assert lk.nnz == 24 * 3                                           # ...3 kept per larger feature
    for j in range(24):
        kept = lk.indices[lk.indptr[j]:lk.indptr[j + 1]]
        np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(-cos[:, j])[:3]))
    np.testing.assert_array_equal(parent, cos.argmax(0))
    np.testing.assert_allclose(best, cos.max(0), rtol=1e-6)


def test_family_activations_in_row_slices_for_wide_saes(tiny_model, monkeypatch):
    """Issue 21: a batch of 8,192 tokens at 131,072 features would be 4.3 GB dense; wide SAEs are
    encoded in slices of rows (ENCODE_MAX_CELLS), with the same activations (to float rounding: a
    matrix product of fewer rows may sum in another order)."""
    tokens = np.random.default_rng(1).integers(0, 64, (6, 16))
    family = {8: _SAE(64, 8), 16: _SAE(64, 16)}
    whole = S.family_activations(tiny_model, family, tokens, batch_rows=4, progress=False)
    monkeypatch.setattr(S, "ENCODE_MAX_CELLS", 16 * 5)     # 5 rows of the 16-wide SAE at a time
    sliced = S.family_activations(tiny_model, family, tokens, batch_rows=4, progress=False)
    for n in (8, 16):
        assert sliced[n].shape == whole[n].shape
        np.testing.assert_allclose(sliced[n].toarray(), whole[n].toarray(), rtol=1e-5, atol=1e-5)


def test_splits_table_equals_one_tree_walk_per_feature():
    """Issue 21: splits() counts descendants bottom-up (linear in features); the table is the one
    that walking each splitting feature's subtree (descendants()) gives."""
    rng = np.random.default_rng(0)
    sizes = [6, 20, 70, 200]
    parent = [np.full(6, -1)] + [np.where(rng.random(n) < 0.8, rng.integers(0, m, n), -1) for m, n in zip(sizes, sizes[1:])]
    sims = [rng.uniform(0.4, 1, n).astype(np.float32) for n in sizes]
    g = S.SplitGraph(sizes, parent, sims, 0.4, [np.ones(n, bool) for n in sizes])
    table = g.splits()
    assert len(table) > 10
    for _, r in table.iterrows():
        kids = np.flatnonzero(g.parent[r["level"] + 1] == r["feature"])
        assert r["children"] == kids.tolist() and r["n_children"] == len(kids)
        assert r["n_descendants"] == len(g.descendants(r["level"], r["feature"]))
        assert r["mean_sim"] == pytest.approx(float(g.parent_sim[r["level"] + 1][kids].mean()))


def test_umap_subset_caps_the_map_with_equal_shares_from_the_smallest_size():
    """Issue 21: the paper preset's ~250k directions are cut to UMAP_MAX_POINTS (seeded); a
    family under the cap (every default build) keeps every live feature."""
    rng = np.random.default_rng(0)
    live = {4: np.array([1, 1, 0, 1], bool), 64: rng.random(64) < 0.5, 256: rng.random(256) < 0.9}
    whole = S.umap_subset(live, 10**6)
    assert all((whole[n] == live[n]).all() for n in live)
    cut = S.umap_subset(live, 60, seed=1)
    counts = {n: int(cut[n].sum()) for n in live}
    assert counts[4] == 3 and counts[64] == min(int(live[64].sum()), 57 // 2) and sum(counts.values()) == 60
    assert all((cut[n] <= live[n]).all() for n in live)                  # only live features
    again = S.umap_subset(live, 60, seed=1)
    assert all((again[n] == cut[n]).all() for n in live)                 # seeded
