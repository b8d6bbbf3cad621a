import numpy as np
import pytest
import torch
from _mono_standins import StandInSAE, random_tokens

from mono_utils.pipeline.saes import ultralow_cutoff, ultralow_mask
from mono_utils.core.index import ActivationIndex, build_index, build_index_arrays
from mono_utils.core.model import model_config_of


def _dense_sparse(n_tok, n_units, seed=0, density=0.1):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n_tok, n_units, generator=g) * 5
    a[torch.rand(n_tok, n_units, generator=g) > density] = 0
    a[:, 3] = 0  # a dead unit
    return a


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_build_index_arrays_equals_brute_force(chunk):
    n_tok, n_units = 300, 12
    a = _dense_sparse(n_tok, n_units)
    dom = np.random.default_rng(0).integers(0, 3, n_tok)
    arr = build_index_arrays(((s, a[s:s + chunk]) for s in range(0, n_tok, chunk)), n_units, n_tok,
                             domain=dom, n_domains=3)
    dense16 = a.half().float().numpy()
    for u in range(n_units):
        lo, hi = arr["indptr"][u], arr["indptr"][u + 1]
        rebuilt = np.zeros(n_tok, np.float32)
        rebuilt[arr["pos"][lo:hi]] = arr["val"][lo:hi]
        np.testing.assert_array_equal(rebuilt, dense16[:, u])
        assert np.all(np.diff(arr["pos"][lo:hi]) > 0)  # positions sorted within a unit
        for d in range(3):
            assert arr["domain_counts"][u, d] == int(((a[:, u] > 0).numpy() & (dom == d)).sum())
    np.testing.assert_allclose(arr["max"], a.max(0).values.numpy())
    np.testing.assert_array_equal(arr["count"], (a > 0).sum(0).numpy())
    assert arr["count"][3] == 0


def test_build_index_arrays_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected activations"):
        build_index_arrays([(0, torch.zeros(4, 5))], 6, 4)
    with pytest.raises(ValueError, match="runs past"):
        build_index_arrays([(0, torch.zeros(8, 6))], 6, 4)


@pytest.fixture()
def tiny_index(tiny_model, tmp_path):
    d_mlp = model_config_of(tiny_model).d_mlp
    sae = StandInSAE(d_mlp, 96, seed=1)
    sae.plant_copy_of_neuron(5, 7)
    sae.kill(9)
    toks, dom, sub, dn, sn = random_tokens(40, 16, 64, seed=2)
    build_index(tiny_model, sae, toks, dom, sub, dn, sn, tmp_path / "idx", chunk_tokens=100, progress=False)
    return ActivationIndex.load(tmp_path / "idx"), sae, toks


def test_index_equals_brute_force_on_tiny_model(tiny_model, tiny_index):
    from mono_utils.core.model import mlp_post
    idx, sae, toks = tiny_index
    x = mlp_post(tiny_model, torch.from_numpy(toks.astype(np.int64)))
    f = sae.encode(x.reshape(-1, x.shape[-1])).reshape(*toks.shape, -1).detach()
    for kind, dense in (("neuron", x), ("feature", f)):
        n = dense.shape[-1]
        assert idx.n_units(kind) == n
        np.testing.assert_allclose(idx.density(kind), (dense > 0).float().mean((0, 1)).numpy())
        np.testing.assert_allclose(idx.max_act(kind), dense.amax((0, 1)).numpy(), rtol=1e-6)
        for u in (0, 5, n - 1):
            np.testing.assert_allclose(idx.unit_acts(kind, u), dense[..., u].numpy(), rtol=2e-3, atol=1e-3)
            top = idx.top_examples(kind, u, k=3, distinct_rows=False)
            brute = np.argsort(-dense[..., u].numpy().reshape(-1), kind="stable")[:len(top)]
            assert [r * 16 + p for r, p, _ in top] == [int(b) for b in brute] or \
                np.allclose([a for *_, a in top], dense[..., u].numpy().reshape(-1)[brute], rtol=2e-3)
    assert not (idx.folder / ".chunks").exists()   # spilled chunks are cleaned up
    # the planted feature is a copy of neuron 7
    np.testing.assert_allclose(idx.unit_acts("feature", 5), idx.unit_acts("neuron", 7))


def test_dead_unknown_and_intervals(tiny_index):
    idx, _, _ = tiny_index
    assert idx.is_dead("feature", 9) and idx.top_examples("feature", 9) == []
    assert idx.interval_samples("feature", 9) == []
    assert 9 not in idx.live_units("feature")
    with pytest.raises(ValueError, match="numbered 0..95"):
        idx.unit_acts("feature", 96)
    with pytest.raises(ValueError, match="'feature'"):
        idx.density("neurons")
    with pytest.raises(ValueError, match="integer"):
        idx.top_examples("neuron", "x")
    live = int(idx.live_units("neuron")[0])
    iv = idx.interval_samples("neuron", live, n_intervals=11, per=2, seed=0)
    assert len(iv) == 11 and iv[0]["hi"] >= iv[-1]["hi"]
    for it in iv:
        for r, p, a in it["examples"]:
            assert it["lo"] - 1e-3 <= a <= it["hi"] + 1e-3
            assert abs(idx.unit_acts("neuron", live)[r, p] - a) < 1e-6
    assert iv == idx.interval_samples("neuron", live, n_intervals=11, per=2, seed=0)  # seeded
    assert sum(idx.domain_counts("neuron", live).values()) == int((idx.unit_acts("neuron", live) > 0).sum())


def test_get_index_artifact(smoke_preset, smoke_store):
    from mono_utils.pipeline import models as pipeline
    from mono_utils.pipeline.indexes import get_index
    model = pipeline.get_model(smoke_preset, smoke_store, which="A", progress=False)
    sae = StandInSAE(smoke_preset.d_mlp, 64, seed=3)
    p = smoke_preset.replace(index_tokens=4096)
    idx = get_index(p, which="A", store=smoke_store, sae=sae, model=model, progress=False)
    assert idx.n_tokens >= 4096 and idx.n_units("feature") == 64 and idx.n_units("neuron") == smoke_preset.d_mlp
    idx2 = get_index(p, which="A", store=smoke_store, sae=sae, model=model, progress=False)
    assert idx2.folder == idx.folder
    assert "source" in __import__("json").loads((idx.folder / "metrics.json").read_text())


def test_index_takes_the_sae_ultralow_set(tmp_path):
    """One ultralow set per SAE: the index takes the one the SAE's metrics located, and cached
    results keyed by the index see the change."""
    import json
    from types import SimpleNamespace

    import numpy as np
    import torch
    from _mono_standins import random_index
    from safetensors.torch import save_file

    from mono_utils.store.results import input_id
    idx = random_index(n_features=30)
    idx.folder = tmp_path / "indexA"
    before = input_id(idx)
    dens = np.full(30, 0.05, np.float32)
    dens[[3, 4]] = 1e-6          # the SAE's ultralow cluster
    dens[0] = 0.0                # dead there (and in the index)
    folder = tmp_path / "sae"
    folder.mkdir()
    save_file({"density": torch.from_numpy(dens)}, str(folder / "feature_density.safetensors"))
    (folder / "metrics.json").write_text(json.dumps({"ultralow_density": 1e-4}))
    sae = SimpleNamespace(folder=folder)
    assert idx.use_sae_ultralow(ultralow_mask(sae), ultralow_cutoff(sae))
    assert idx.ultralow_density == 1e-4
    assert sorted(np.flatnonzero(idx.ultralow_mask("feature"))) == [3, 4]
    assert idx.is_ultralow("feature", 3) and not idx.is_ultralow("feature", 5)
    live = set(idx.live_units("feature").tolist())
    assert not live & {0, 3, 4} and 5 in live
    assert input_id(idx) != before
    # an SAE from outside the store (no recorded densities): the index keeps its own cutoff
    outside = SimpleNamespace(folder=None)
    assert not random_index().use_sae_ultralow(ultralow_mask(outside), ultralow_cutoff(outside))


@pytest.mark.parametrize("distinct_rows", [True, False])
def test_top_examples_of_a_dense_unit_equal_the_full_sort(distinct_rows):
    """Dense units take a partial sort; it must give exactly the full stable sort's answer, ties included."""
    n_rows, n_ctx = 400, 64
    rng = np.random.default_rng(0)
    a = np.round(rng.random((n_rows * n_ctx, 2)) * 20) / 4     # many ties, ~97% of tokens non-zero
    a[: n_rows * n_ctx // 2, 1] = 5.0                           # unit 1: its maximum on 12,800 tokens
    arr = build_index_arrays([(0, torch.from_numpy(a).float())], 2, n_rows * n_ctx)
    idx = ActivationIndex.from_arrays(np.zeros((n_rows, n_ctx), np.uint16), np.zeros((n_rows, n_ctx), np.uint8),
                                      np.zeros((n_rows, n_ctx), np.uint8), ["d"], ["s"], {"neuron": arr})
    for unit in (0, 1):
        pos, val = idx.unit_entries("neuron", unit)
        assert len(val) > 2 * 2048
        want, rows = [], set()
        for j in np.argsort(-val, kind="stable"):
            r, p = divmod(int(pos[j]), n_ctx)
            if distinct_rows and r in rows:
                continue
            rows.add(r)
            want.append((r, p, float(val[j])))
            if len(want) == 10:
                break
        assert idx.top_examples("neuron", unit, 10, distinct_rows=distinct_rows) == want


@pytest.mark.parametrize("mode", ["quantile", "width"])
def test_interval_samples_equal_the_reference(mode):
    """interval_samples groups the entries by interval without one pass per interval: same samples as
    the plain definition (searchsorted into the edges, then flatnonzero per interval)."""
    n_rows, n_ctx = 300, 32
    rng = np.random.default_rng(1)
    a = np.round(rng.exponential(1.0, (n_rows * n_ctx, 3)) * 8) / 8      # ties on the edges too
    a[rng.random(a.shape) < np.array([0.02, 0.5, 0.97])] = 0
    arr = build_index_arrays([(0, torch.from_numpy(a).float())], 3, n_rows * n_ctx)
    idx = ActivationIndex.from_arrays(np.zeros((n_rows, n_ctx), np.uint16), np.zeros((n_rows, n_ctx), np.uint8),
                                      np.zeros((n_rows, n_ctx), np.uint8), ["d"], ["s"], {"neuron": arr})
    for unit in range(3):
        pos, val = idx.unit_entries("neuron", unit)
        edges = idx.interval_edges("neuron", unit, 11, mode)
        rng2 = np.random.default_rng(5)
        bins = np.clip(np.searchsorted(edges, val, side="right") - 1, 0, 10)
        want = []
        for b in range(10, -1, -1):
            members = np.flatnonzero(bins == b)
            pick = rng2.choice(members, size=min(3, len(members)), replace=False) if len(members) else []
            ex = sorted([(int(pos[j]) // n_ctx, int(pos[j]) % n_ctx, float(val[j])) for j in pick], key=lambda e: -e[2])
            want.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(len(members)), "examples": ex})
        assert idx.interval_samples("neuron", unit, 11, 3, seed=5, mode=mode) == want


def test_release_pages_keeps_every_entry_readable(tiny_index):
    """The atlas hands an index's memory-mapped pages back after writing it: the entries must read
    the same afterwards (re-read from the file), and the arrays must really be memory-mapped."""
    idx, _, _ = tiny_index
    assert getattr(idx.units["feature"].pos, "_mmap", None) is not None, "entries are not memory-mapped"
    before = {(k, u): tuple(np.array(a) for a in idx.unit_entries(k, u)) for k in ("feature", "neuron")
              for u in range(idx.n_units(k))}
    idx.release_pages()
    for (k, u), arrays in before.items():
        for a, b in zip(arrays, idx.unit_entries(k, u)):
            np.testing.assert_array_equal(a, np.asarray(b))
