"""The dictionary interface of issue 30: every dictionary's units on the same tokens (shapes, non-negative,
what each is made of), the randomized one on its own transformer, and clear errors for a bad name or
bad tokens. On a tiny smoke preset (smoke's model A; SAEs of 128 features on a few thousand activations)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_utils.core.model import mlp_post
from mono_utils.evaluation.dictionaries import (
    ALL_NAMES,
    DICTIONARY_NAMES,
    KINDS,
    SEED_NAMES,
    Dictionary,
    get_dictionaries,
)
from mono_utils.evaluation.seeds import side_tokens
from mono_utils.pipeline.models import get_tokens

EXPECTED = {  # name: (kind, model)
    "neurons": ("basis", "A"), "A/1": ("trained", "A"), "paper2023": ("trained", "A"),
    "randomized": ("control", "randomized"), "frozen decoder": ("control", "A"), "PCA": ("basis", "A"),
    "A/1 seed 0": ("trained", "A"), "A/1 seed 1": ("trained", "A"), "A/1 seed 2": ("trained", "A"),
}


@pytest.fixture(scope="module")
def dicts(tiny, smoke_store, smoke_model):
    return get_dictionaries(tiny, smoke_store, names=ALL_NAMES, progress=False)


@pytest.fixture(scope="module")
def tokens(tiny, smoke_store):
    return get_tokens(tiny, smoke_store).val[:3]


def test_the_interface_names():
    assert DICTIONARY_NAMES == ("neurons", "A/1", "paper2023", "randomized", "frozen decoder", "PCA")
    assert SEED_NAMES == ("A/1 seed 0", "A/1 seed 1", "A/1 seed 2")
    assert set(EXPECTED) == set(ALL_NAMES)


def test_every_dictionary_gives_non_negative_units_of_the_right_shape(dicts, tokens, tiny):
    assert list(dicts) == list(ALL_NAMES)
    d = tiny.d_mlp
    n_units = {"neurons": d, "PCA": 2 * d}
    for name, dic in dicts.items():
        assert isinstance(dic, Dictionary) and dic.name == name
        assert (dic.kind, dic.model) == EXPECTED[name] and dic.kind in KINDS
        assert dic.n_units == n_units.get(name, tiny.sae_main), name
        assert dic.decoder.shape == (dic.n_units, d)
        assert np.allclose(np.linalg.norm(dic.decoder, axis=1), 1.0, atol=1e-5), name
        assert dic.note.startswith(name), dic.note
        if dic.sae is not None:
            assert "trained on" in dic.note and "activations" in dic.note, dic.note
        u = dic.unit_acts(tokens, batch_rows=2)
        assert u.shape == (tokens.size, dic.n_units) and u.dtype == np.float32, name
        assert np.isfinite(u).all() and (u >= 0).all() and (u > 0).any(), name
        x = dic.mlp_acts(tokens)
        assert x.shape == (tokens.size, d)
        assert np.allclose(dic.encode(x), u, atol=1e-5), name   # batching changes nothing
    # the side runs' notes name their own (smaller) budget
    for name in ("frozen decoder", *SEED_NAMES):
        assert f"trained on {side_tokens(tiny):,} activations" in dicts[name].note, dicts[name].note


def test_what_each_dictionary_is_made_of(dicts, tokens, smoke_model):
    x = mlp_post(smoke_model, torch.from_numpy(tokens.astype(np.int64))).reshape(tokens.size, -1).numpy()
    assert np.array_equal(dicts["neurons"].unit_acts(tokens), np.maximum(x, 0))
    assert np.allclose(dicts["A/1"].mlp_acts(tokens), x)
    a1 = dicts["A/1"]
    assert np.allclose(a1.unit_acts(tokens), a1.sae.encode(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    # the randomized control reads its own (shuffled) transformer
    assert not np.allclose(dicts["randomized"].mlp_acts(tokens), x)
    assert dicts["randomized"].transformer is not a1.transformer
    # PCA: positive part then negative part of the centred projection
    pca = dicts["PCA"]
    n = pca.n_units // 2
    u = pca.unit_acts(tokens)
    assert np.allclose(u[:, :n] - u[:, n:], pca.pca.project(torch.from_numpy(x)).numpy(), atol=1e-4)
    assert np.array_equal(pca.decoder[n:], -pca.decoder[:n])
    # seeds and controls are distinct artifacts
    folders = {dicts[k].sae.folder for k in ("A/1", "paper2023", "frozen decoder", *SEED_NAMES)}
    assert len(folders) == 3 + len(SEED_NAMES)


def test_default_names_and_a_single_name(tiny, smoke_store, smoke_model):
    one = get_dictionaries(tiny, smoke_store, names="neurons", progress=False)
    assert list(one) == ["neurons"]


def test_a_bad_name_names_the_valid_ones(tiny, smoke_store):
    with pytest.raises(ValueError) as e:
        get_dictionaries(tiny, smoke_store, names=["A/1", "A/2"], progress=False)
    msg = str(e.value)
    assert "A/2" in msg and all(repr(n) in msg for n in ALL_NAMES)
    with pytest.raises(ValueError, match="choose among"):
        get_dictionaries(tiny, smoke_store, names=[], progress=False)


def test_bad_tokens_are_named(dicts, tokens, tiny):
    dic = dicts["neurons"]
    with pytest.raises(ValueError, match="integer array"):
        dic.unit_acts(tokens.astype(np.float32))
    with pytest.raises(ValueError, match="integer array"):
        dic.unit_acts(tokens[0])
    with pytest.raises(ValueError, match="vocabulary"):
        dic.unit_acts(tokens + 10 * tiny.vocab_size)
    with pytest.raises(ValueError, match="context"):
        dic.unit_acts(np.zeros((1, tiny.n_ctx + 1), dtype=np.int64))
    with pytest.raises(ValueError, match="batch_rows"):
        dic.unit_acts(tokens, batch_rows=0)
    with pytest.raises(ValueError, match="MLP activations"):
        dic.encode(np.zeros((2, tiny.d_mlp + 1), dtype=np.float32))
