"""Keeps the "Data kept and failures contained" table of tests/RELIABILITY.md true.

Each row ``| H01 | ... |`` of that table is the test ``test_h01_...`` here (test_reliability.py
checks that rows and tests match one to one). Rows H01-H07 are the data-loss items of the
second hardening round: each of their tests failed on the code before the fix (main at 6c7cd73).
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from _mono_standins import random_index
from mono_utils.artifacts import ArtifactError, ArtifactStore, sha256_file, verify_folder, write_manifest
from mono_utils.bundle import BundleError, export_bundle, import_bundle

REPO = Path(__file__).resolve().parent.parent


def _store(tmp: Path, name="store") -> tuple[ArtifactStore, Path]:
    store = ArtifactStore(tmp / name)
    folder = store.get_or_build("x", "a", {"v": 1}, lambda t: (t / "data.json").write_text('{"ok": 1}') and None,
                                verbose=False)
    return store, folder


def _rewrite_bundle(path: Path, edit) -> None:
    """Rewrite a bundle's members with ``edit(index, members) -> members`` and a consistent bundle.json."""
    with tarfile.open(path) as tin:
        members = [(m.name, tin.extractfile(m).read()) for m in tin.getmembers()]
    index = json.loads(members[0][1])
    members = edit(index, members[1:])
    import hashlib
    index["files"] = {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in members}
    with tarfile.open(path, "w") as tout:
        for name, data in [("bundle.json", json.dumps(index).encode())] + members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".lock")}


# ---------------------------------------------------------------- H01: caches never travel in bundles
def test_h01_a_bundle_cannot_poison_the_llm_cache(tmp_path):
    from mono_utils.autointerp_backends import DiskCache
    store, _ = _store(tmp_path)
    cache = DiskCache(store.root / "autointerp-cache")
    cache.put("ab" + "0" * 62, {"text": "Explanation: the honest reply."})
    shard = store.root / "autointerp-cache" / "ab"
    write_manifest(shard)                      # even a cache shard that looks like a complete artifact
    bundle = export_bundle(tmp_path / "b.tar", store, verbose=False)
    with tarfile.open(bundle) as t:
        assert not [n for n in t.getnames() if "autointerp-cache" in n], "a cache travelled in a bundle"
    # a hostile bundle plants a reply (with a MANIFEST that verifies) and would delete the others
    planted = {"key": "ab" + "1" * 62, "text": "Explanation: planted by the bundle."}

    def plant(index, members):
        body = json.dumps(planted).encode()
        rel = f"{planted['key']}.json"
        manifest = json.dumps({"files": {rel: {"size": len(body), "sha256": __import__("hashlib").sha256(body).hexdigest()}}})
        index["artifacts"].append({"kind": "autointerp-cache", "folder": "ab", "files": [rel, "MANIFEST.json"]})
        return members + [(f"artifacts/autointerp-cache/ab/{rel}", body),
                          ("artifacts/autointerp-cache/ab/MANIFEST.json", manifest.encode())]
    _rewrite_bundle(bundle, plant)
    before = _tree(store.root)
    with pytest.raises(BundleError, match="not an artifact kind"):
        import_bundle(bundle, store, verbose=False)
    assert _tree(store.root) == before, "the import changed the store"
    assert cache.get("ab" + "0" * 62)["text"] == "Explanation: the honest reply."
    assert cache.get(planted["key"]) is None


# ---------------------------------------------------------------- H02: export never follows a link
def test_h02_export_does_not_follow_symlinks_out_of_the_store(tmp_path, capsys):
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2-SECRET"}')
    store, folder = _store(tmp_path)
    store.get_or_build("x", "b", {"v": 2}, lambda t: (t / "data.json").write_text('{"ok": 2}') and None,
                       verbose=False)
    (folder / "leak.json").symlink_to(secret)
    bundle = export_bundle(tmp_path / "b.tar", store)
    raw = bundle.read_bytes()
    assert b"hunter2-SECRET" not in raw, "the bundle carries a file from outside the store"
    out = capsys.readouterr().out
    assert "leak.json" in out and "symbolic link" in out, out
    # the linked artifact counts as damaged (left out); the other one travels
    with tarfile.open(bundle) as t:
        names = t.getnames()
    assert any("/b-" in n for n in names) and not any(folder.name in n for n in names)
    assert any("symbolic link" in p for p in verify_folder(folder))


# ---------------------------------------------------------------- H03-H05: rating files
def test_h03_one_rater_in_two_tabs_loses_no_rating(tmp_path):
    from mono_utils import rating as rt
    idx = random_index()
    tab1 = rt.RatingSession(idx, "ada", seed=0, n_features=3, n_neurons=3, folder=tmp_path)
    tab2 = rt.RatingSession(idx, "ada", seed=0, n_features=3, n_neurons=3, folder=tmp_path)  # opened before tab1 saves
    tab1.record("first tab", 1, 1, 1, 0, 1)
    tab2.record("second tab", 2, 2, 2, 0, 2, item=1)
    tab1.record("first tab again", 3, 3, 3, None, 3, item=2)
    rows, problems = rt.read_ratings(tmp_path / "ada.csv")
    assert problems == []
    assert sorted(r["interpretation"] for r in rows) == ["first tab", "first tab again", "second tab"]
    # a third tab sees all of them, and re-rating an item keeps one (the newest) row for it
    tab3 = rt.RatingSession(idx, "ada", seed=0, n_features=3, n_neurons=3, folder=tmp_path)
    assert tab3.done_items == {0, 1, 2}
    tab3.record("changed my mind", 0, 0, 0, 0, 0, item=1)
    df, _ = rt.load_ratings(tmp_path)
    assert len(df) == 3 and df[df.item == 1].interpretation.item() == "changed my mind"


def test_h04_a_long_interpretation_is_refused_and_old_rows_are_never_dropped(tmp_path):
    from mono_utils import rating as rt
    idx = random_index()
    s = rt.RatingSession(idx, "bea", seed=0, n_features=2, n_neurons=2, folder=tmp_path)
    with pytest.raises(ValueError, match="characters long"):
        s.record("x" * 200_000, 1, 1, 1, 0, 1)
    assert not (tmp_path / "bea.csv").exists() or rt.read_ratings(tmp_path / "bea.csv")[0] == []
    # a file that already holds an over-long row (written by an older version) keeps it byte for byte
    s.record("short", 1, 1, 1, 0, 1)
    p = tmp_path / "bea.csv"
    long_row = p.read_text().splitlines()[1].replace("short", "y" * 200_000)
    p.write_text(p.read_text() + long_row.replace(",0,", ",1,", 1) + "\n")
    before = p.read_text()
    s2 = rt.RatingSession(idx, "bea", seed=0, n_features=2, n_neurons=2, folder=tmp_path)
    s2.record("next", 2, 2, 2, 0, 2)
    after = p.read_text()
    assert after.startswith(before), "a new rating rewrote the file and dropped a row"
    assert "y" * 200_000 in after


def test_h05_formulas_in_interpretations_are_neutralised(tmp_path):
    import csv
    from mono_utils import rating as rt
    idx = random_index()
    s = rt.RatingSession(idx, "cy", seed=0, n_features=3, n_neurons=3, folder=tmp_path)
    attacks = ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(A1)"]
    for i, text in enumerate(attacks):
        s.record(text, 1, 1, 1, 0, 1, item=i)
    with open(tmp_path / "cy.csv", newline="", encoding="utf-8") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    rows, _ = rt.read_ratings(tmp_path / "cy.csv")
    assert sorted(r["interpretation"] for r in rows) == sorted("'" + a for a in attacks)


# ---------------------------------------------------------------- H06-H07: damaged MANIFESTs
def _damage_manifest(folder: Path, manifest) -> None:
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("manifest", [{"files": {}}, {"files": {"data.json": {"sha256": "0" * 64}}}])
def test_h06_an_empty_or_inconsistent_manifest_is_damage_and_is_rebuilt(tmp_path, manifest):
    store, folder = _store(tmp_path)
    m = json.loads((folder / "MANIFEST.json").read_text())
    if manifest["files"]:   # consistent with the folder except for a forged hash of the one listed file
        manifest = {"files": {"data.json": m["files"]["data.json"]}}
    _damage_manifest(folder, manifest)
    assert verify_folder(folder), "an empty/inconsistent MANIFEST passed the check"
    assert [e["ok"] for e in store.entries()] == [False]
    calls = []
    store.get_or_build("x", "a", {"v": 1}, lambda t: calls.append(1) or (t / "data.json").write_text('{"ok": 1}')
                       and None, verbose=False)
    assert calls == [1] and not verify_folder(folder)


@pytest.mark.parametrize("manifest", [
    {"files": {"data.json": {"sha256": "0" * 64}, "config.json": {"sha256": "0" * 64}}},   # no size
    {"files": ["data.json", "config.json"]},                                               # a list
    {"files": {"data.json": "abc"}},
    ["not", "an", "object"],
])
def test_h07_a_malformed_manifest_is_damage_not_a_crash(tmp_path, manifest, capsys):
    store, folder = _store(tmp_path)
    _damage_manifest(folder, manifest)
    problems = verify_folder(folder)
    assert problems and "malformed" in problems[0]
    with pytest.raises(ArtifactError, match="malformed"):
        store.load_checked(folder)
    from mono_utils.cli import main
    assert main(["info", "--artifacts", str(store.root)]) == 0
    assert "DAMAGED" in capsys.readouterr().out
    calls = []
    store.get_or_build("x", "a", {"v": 1}, lambda t: calls.append(1) or (t / "data.json").write_text('{"ok": 1}')
                       and None, verbose=False)
    assert calls == [1] and not verify_folder(folder)
