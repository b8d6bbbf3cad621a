"""Bundles: export every complete artifact to one file; import verifies, refuses, and is all-or-nothing."""
import io
import json
import tarfile

import numpy as np
import pytest

from mono_utils.store.artifacts import ArtifactStore, verify_folder
from mono_utils.store.bundle import BundleError, export_bundle, import_bundle


def _store(tmp_path, name="src"):
    store = ArtifactStore(tmp_path / name)

    def model(tmp):
        (tmp / "weights.npy").write_bytes(b"")
        np.save(tmp / "weights.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
        (tmp / "notes.json").write_text(json.dumps({"hello": "world"}))
        (tmp / "sub").mkdir()
        (tmp / "sub" / "t.txt").write_text("nested file")
        return {"val_loss": 1.5}

    store.get_or_build("model", "m", {"a": 1}, model)
    store.get_or_build("tokenizer", "t", {"v": 2}, lambda tmp: (tmp / "tokenizer.json").write_text("{}") and None)
    return store


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".lock")}


def _rewrite(src, dst, edit):
    """Copy a bundle member by member, letting ``edit(info, data)`` change/drop/add members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        members = [(m, tin.extractfile(m).read() if m.isfile() else b"") for m in tin.getmembers()]
        for m, data in edit(members):
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if m.isfile() else None)
    return dst


def test_roundtrip_restores_every_artifact(tmp_path):
    src = _store(tmp_path)
    b = export_bundle(tmp_path / "b.tar", src, verbose=False)
    dst = ArtifactStore(tmp_path / "dst")
    folders = import_bundle(b, dst, verbose=False)
    assert len(folders) == 2 and all(not verify_folder(f) for f in folders)
    assert _snapshot(dst.root) == _snapshot(src.root)
    assert [e["name"] for e in dst.entries()] == [e["name"] for e in src.entries()]
    # the store finds it: nothing is rebuilt
    assert dst.get_or_build("model", "m", {"a": 1}, lambda t: pytest.fail("rebuilt")) == dst.path("model", "m", {"a": 1})
    # importing again keeps what is there; gz works too; the sha256 check works
    import_bundle(b, dst, verbose=False)
    gz = export_bundle(tmp_path / "b.tar.gz", src, verbose=False)
    from mono_utils.store.artifacts import sha256_file
    import_bundle(gz, ArtifactStore(tmp_path / "dst2"), sha256=sha256_file(gz), verbose=False)
    with pytest.raises(BundleError, match="not the expected"):
        import_bundle(gz, ArtifactStore(tmp_path / "dst3"), sha256="0" * 64, verbose=False)


def test_export_leaves_out_damaged_and_refuses_empty(tmp_path, capsys):
    src = _store(tmp_path)
    (src.path("tokenizer", "t", {"v": 2}) / "tokenizer.json").write_text("tampered")
    b = export_bundle(tmp_path / "b.tar", src)
    assert "left out (damaged): tokenizer" in capsys.readouterr().out
    with tarfile.open(b) as t:
        assert not any("tokenizer" in n for n in t.getnames())
    with pytest.raises(ValueError, match="nothing to export"):
        export_bundle(tmp_path / "e.tar", ArtifactStore(tmp_path / "empty"))


@pytest.mark.parametrize("case,match", [
    ("tamper", "does not match its sha256"),
    ("drop", "partial"),
    ("extra", "not listed"),
    ("traversal", "traversal"),
    ("symlink", "links"),
    ("pickle", "only data files"),
    ("index", "first entry"),
    ("size", "bytes"),
])
def test_import_refuses_bad_bundles_and_changes_nothing(tmp_path, case, match):
    src = _store(tmp_path)
    good = export_bundle(tmp_path / "b.tar", src, verbose=False)

    def edit(members):
        out = []
        for m, data in members:
            if case == "tamper" and m.name.endswith("weights.npy"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            if case == "drop" and m.name.endswith("notes.json"):
                continue
            if case == "size" and m.name.endswith("notes.json"):
                data = data + b" "
                idx = json.loads(out[0][1])
                idx["files"][m.name]["size"] = len(data) - 1
                idx["files"][m.name]["sha256"] = "0" * 64
                out[0] = (out[0][0], json.dumps(idx).encode())
            out.append((m, data))
        if case == "index":
            out = out[1:] + out[:1]
        extra = {"extra": "artifacts/model/zzz/evil.json", "traversal": "artifacts/model/../../../evil.json",
                 "pickle": "artifacts/model/m/evil.pkl"}
        if case in extra:
            info = tarfile.TarInfo(extra[case])
            out.append((info, b"{}"))
        if case == "symlink":
            info = tarfile.TarInfo("artifacts/model/m/link.json")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            out.append((info, b""))
        return out

    bad = _rewrite(good, tmp_path / "bad.tar", edit)
    dst = ArtifactStore(tmp_path / "dst")
    import_bundle(good, dst, verbose=False)  # an existing store must not change either
    dst2 = ArtifactStore(tmp_path / "dst2")
    before = _snapshot(dst.root)
    with pytest.raises(BundleError, match=match):
        import_bundle(bad, dst, verbose=False)
    with pytest.raises(BundleError, match=match):
        import_bundle(bad, dst2, verbose=False)
    assert _snapshot(dst.root) == before
    assert not (tmp_path / "evil.json").exists() and not _snapshot(dst2.root)
    assert not [p for p in dst.root.rglob(".import-*")]


def test_import_refuses_truncated_and_non_bundles(tmp_path):
    src = _store(tmp_path)
    good = export_bundle(tmp_path / "b.tar", src, verbose=False)
    data = good.read_bytes()
    dst = ArtifactStore(tmp_path / "dst")
    for cut in (len(data) // 2, 700, 3000):
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        with pytest.raises(BundleError, match="partial|truncated|damaged|not a readable"):
            import_bundle(tmp_path / "cut.tar", dst, verbose=False)
    (tmp_path / "x.tar").write_bytes(b"hello, not a tar file" * 100)
    with pytest.raises(BundleError, match="not a readable bundle"):
        import_bundle(tmp_path / "x.tar", dst, verbose=False)
    with pytest.raises(FileNotFoundError, match="no bundle"):
        import_bundle(tmp_path / "missing.tar", dst, verbose=False)
    assert not _snapshot(dst.root)


def test_import_refuses_object_npy(tmp_path):
    """A .npy holding Python objects is a pickle in disguise: refused even with correct hashes."""
    store = ArtifactStore(tmp_path / "src")
    store.get_or_build("x", "obj", {}, lambda t: np.save(t / "a.npy", np.array([{"a": 1}], dtype=object),
                                                          allow_pickle=True))
    b = export_bundle(tmp_path / "b.tar", store, verbose=False)
    with pytest.raises(BundleError, match="Python objects"):
        import_bundle(b, ArtifactStore(tmp_path / "dst"), verbose=False)


def test_import_replaces_a_damaged_local_copy(tmp_path):
    src = _store(tmp_path)
    b = export_bundle(tmp_path / "b.tar", src, verbose=False)
    dst = ArtifactStore(tmp_path / "dst")
    import_bundle(b, dst, verbose=False)
    f = dst.path("model", "m", {"a": 1})
    (f / "notes.json").write_text("damaged")
    assert verify_folder(f)
    import_bundle(b, dst, verbose=False)
    assert not verify_folder(f)


def test_cli_export_import(tmp_path, capsys, monkeypatch):
    from mono_utils.cli import main
    monkeypatch.setenv("MONO_ARTIFACTS", str(tmp_path / "unused"))  # main() sets it; restored after
    src = _store(tmp_path)
    assert main(["export", str(tmp_path / "c.tar"), "--artifacts", str(src.root)]) == 0
    assert main(["import", str(tmp_path / "c.tar"), "--artifacts", str(tmp_path / "dst")]) == 0
    assert _snapshot(tmp_path / "dst") == _snapshot(src.root)
    (tmp_path / "bad.tar").write_bytes(b"junk")
    assert main(["import", str(tmp_path / "bad.tar"), "--artifacts", str(tmp_path / "dst")]) == 1
    assert "not a readable bundle" in capsys.readouterr().err
