"""Cached analysis results: computed once from built artifacts, then loaded in a second.

A notebook's heavy analysis (a proxy table, autointerp scores, cross-model correlations, a
UMAP layout, a steering catalog) is a pure function of artifacts that are already built and
of a few parameters. ``cached_result`` keeps it in the artifact store like any other artifact
(kind ``result``), keyed by a config that names its inputs' folders (each folder name holds
its config hash) and the parameters. ``python -m mono_utils build`` computes these results
too, so that with artifacts built every notebook opens in seconds.

Results are numpy arrays (one safetensors file) plus JSON: nothing is pickled, so a shared
bundle cannot run code. Helpers convert the usual containers: ``frame_to_json`` /
``frame_from_json`` for pandas tables, ``csr_to_arrays`` / ``csr_from_arrays`` for sparse
matrices.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from .artifacts import ArtifactError, ArtifactStore, atomic_write_json, read_json

KIND = "result"
ARRAYS = "arrays.safetensors"
META = "result.json"


def input_id(obj) -> str:
    """The identity of an artifact-backed input: its folder name (name + config hash).

    Accepts an SAE or an activation index loaded from the store (their ``.folder``), a folder
    path (for a model: ``core.model.model_folder(model)``), or a plain string.
    """
    folder = getattr(obj, "folder", None)
    if folder is not None:   # + what was set on it after loading (an index's ultralow set)
        return Path(folder).name + getattr(obj, "identity_suffix", "")
    if isinstance(obj, (str, Path)):
        return Path(obj).name
    raise ValueError(f"cannot name {type(obj).__name__} as a cached-result input: pass an object loaded "
                     f"from the artifact store (it has .folder) or its folder path (a model's: core.model.model_folder)")


def cached_result(name: str, config: dict, compute: Callable[[], tuple[dict, dict]],
                  store: ArtifactStore | None = None, *, force: bool = False) -> tuple[dict, dict]:
    """``(arrays, meta)`` for ``config``: loaded if built, else ``compute()`` then saved.

    ``compute`` returns ``(arrays, meta)``: a dict of numpy arrays (any numeric or bool dtype)
    and a JSON-serialisable dict. ``config`` must name every input (see ``input_id``) and
    parameter, so a changed input or parameter is a different result.
    """
    store = store if store is not None else ArtifactStore()
    box = {}

    def build(tmp: Path):
        arrays, meta = compute()
        _save(tmp, arrays, meta)
        box["value"] = (arrays, meta)
        return {"arrays": sorted(arrays)}

    folder = store.get_or_build(KIND, name, config, build, force=force)
    if "value" in box:
        return box["value"]
    return load_result(folder)


def _save(folder: Path, arrays: dict, meta: dict) -> None:
    clean = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype == object or a.dtype.kind in "USO":
            raise TypeError(f"result array {k!r} has dtype {a.dtype}: store strings in the JSON part")
        clean[k] = np.ascontiguousarray(a)
    tmp = folder / (ARRAYS + ".tmp")
    save_file(clean, str(tmp))
    tmp.replace(folder / ARRAYS)
    atomic_write_json(folder / META, meta)


def load_result(folder: str | Path) -> tuple[dict, dict]:
    folder = ArtifactStore().load_checked(folder)
    try:
        arrays = load_file(str(folder / ARRAYS))
        meta = read_json(folder / META)
    except Exception as e:  # noqa: BLE001 - any parse failure is a damaged artifact
        raise ArtifactError(f"cached result {folder} cannot be read ({e}): delete the folder and rerun") from e
    return arrays, meta


def array_digest(*arrays) -> str:
    """A short content hash of arrays (dtype, shape and bytes), to name data inputs in a config."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def frame_to_json(df) -> dict:
    """A pandas DataFrame as plain JSON (columns, index, rows), dtypes kept by name."""
    return {"columns": [str(c) for c in df.columns], "index": df.index.tolist(),
            "data": df.astype(object).where(df.notna(), None).values.tolist(),
            "dtypes": [str(t) for t in df.dtypes]}


def frame_from_json(d: dict):
    df = pd.DataFrame(d["data"], columns=d["columns"], index=d["index"])
    for c, t in zip(d["columns"], d["dtypes"]):
        try:
            df[c] = df[c].astype(t)
        except (TypeError, ValueError):
            pass
    return df


def csr_to_arrays(prefix: str, m) -> dict:
    """A scipy sparse matrix as four arrays named ``prefix.data`` ... ``prefix.shape``."""
    m = m.tocsr()
    return {f"{prefix}.data": m.data, f"{prefix}.indices": m.indices.astype(np.int64),
            f"{prefix}.indptr": m.indptr.astype(np.int64), f"{prefix}.shape": np.asarray(m.shape, np.int64)}


def csr_from_arrays(prefix: str, arrays: dict):
    return sp.csr_matrix((arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]),
                         shape=tuple(int(s) for s in arrays[f"{prefix}.shape"]))
