"""Cached analysis results: computed once, loaded after, rebuilt when inputs change, never pickled."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mono_utils.store.artifacts import ArtifactError, ArtifactStore
from mono_utils.store.results import (
    cached_result,
    csr_from_arrays,
    csr_to_arrays,
    frame_from_json,
    frame_to_json,
    input_id,
)


def test_cached_result_computes_once_and_reloads(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(5, dtype=np.float32), "mask": np.array([True, False])}, {"median": 0.5}

    a1, m1 = cached_result("demo", {"inputs": ["saeA-1"], "n": 5}, compute, store)
    a2, m2 = cached_result("demo", {"inputs": ["saeA-1"], "n": 5}, compute, store)
    assert len(calls) == 1
    np.testing.assert_array_equal(a1["x"], a2["x"])
    assert a2["mask"].dtype == np.bool_ and m2 == {"median": 0.5}
    cached_result("demo", {"inputs": ["saeA-1"], "n": 6}, compute, store)   # changed parameter: recomputed
    assert len(calls) == 2


def test_tampered_result_is_rebuilt(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.ones(3)}, {}

    cached_result("demo", {"n": 1}, compute, store)
    folder = store.path("result", "demo", {"n": 1})
    (folder / "arrays.safetensors").write_bytes(b"garbage")
    a, _ = cached_result("demo", {"n": 1}, compute, store)
    assert len(calls) == 2 and a["x"].tolist() == [1, 1, 1]


def test_string_arrays_are_refused(tmp_path):
    with pytest.raises(TypeError, match="JSON part"):
        cached_result("demo", {"n": 2}, lambda: ({"s": np.array(["a"])}, {}), ArtifactStore(tmp_path))


def test_frame_and_sparse_round_trip():
    df = pd.DataFrame({"unit": [1, 2], "score": [0.5, np.nan], "kind": ["feature", "neuron"]})
    back = frame_from_json(frame_to_json(df))
    assert back["unit"].dtype == df["unit"].dtype and back["kind"].tolist() == ["feature", "neuron"]
    assert np.isnan(back["score"][1]) and back["score"][0] == 0.5
    m = sp.random(20, 30, density=0.1, format="csr", random_state=0, dtype=np.float32)
    back = csr_from_arrays("acts", csr_to_arrays("acts", m))
    assert (back != m).nnz == 0 and back.shape == m.shape


def test_input_id_names_folders_and_refuses_other_objects(tmp_path):
    class Loaded:
        folder = tmp_path / "saeA-4096-relu-default-abc123"
    assert input_id(Loaded()) == "saeA-4096-relu-default-abc123"
    assert input_id(str(tmp_path / "x-1")) == "x-1"
    with pytest.raises(ValueError, match="artifact store"):
        input_id(object())


def test_unreadable_result_is_a_clear_error(tmp_path):
    from mono_utils.store.results import load_result
    with pytest.raises(ArtifactError):
        load_result(tmp_path / "missing")
