import json
import multiprocessing as mp
import os

import pytest

from mono_utils.store.artifacts import ArtifactError, ArtifactStore, atomic_write_bytes, config_hash, verify_folder


def _build_counter(counter_file):
    def build(tmp):
        with open(counter_file, "a") as f:
            f.write("x")
        (tmp / "weights.bin").write_bytes(b"abc" * 100)
        return {"score": 1.5}
    return build


def test_cache_hit_and_miss(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    counter = tmp_path / "count"
    a = store.get_or_build("thing", "t", {"x": 1}, _build_counter(counter))
    b = store.get_or_build("thing", "t", {"x": 1}, _build_counter(counter))
    assert a == b and counter.read_text() == "x"            # reuse
    c = store.get_or_build("thing", "t", {"x": 2}, _build_counter(counter))
    assert c != a and counter.read_text() == "xx"           # changed config rebuilds
    assert json.loads((a / "metrics.json").read_text()) == {"score": 1.5}
    assert json.loads((a / "config.json").read_text())["x"] == 1


def test_corruption_detected_and_rebuilt(tmp_path, capsys):
    store = ArtifactStore(tmp_path)
    counter = tmp_path / "count"
    a = store.get_or_build("thing", "t", {"x": 1}, _build_counter(counter))
    (a / "weights.bin").write_bytes(b"abd" * 100)            # same size, different bytes
    assert any("sha256" in p for p in verify_folder(a))
    with pytest.raises(ArtifactError, match="Delete the folder"):
        store.load_checked(a)
    store.get_or_build("thing", "t", {"x": 1}, _build_counter(counter))
    assert counter.read_text() == "xx" and not verify_folder(a)
    assert "damaged, rebuilding" in capsys.readouterr().out


def test_partial_artifact_is_rebuilt(tmp_path):
    store = ArtifactStore(tmp_path)
    counter = tmp_path / "count"
    a = store.get_or_build("thing", "t", {"x": 1}, _build_counter(counter))
    (a / "MANIFEST.json").unlink()                           # as if the build died before finishing
    assert "partial" in verify_folder(a)[0]
    store.get_or_build("thing", "t", {"x": 1}, _build_counter(counter))
    assert counter.read_text() == "xx"


def test_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)

    def boom(tmp):
        (tmp / "half").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.get_or_build("thing", "t", {"x": 1}, boom)
    assert not store.is_built("thing", "t", {"x": 1})
    assert not [p for p in (tmp_path / "thing").iterdir() if p.name.startswith(".tmp")]


def _concurrent(root, counter, q):
    import time
    store = ArtifactStore(root)

    def build(tmp):
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(0.5)
        (tmp / "w").write_text("w")
    q.put(str(store.get_or_build("thing", "t", {"x": 1}, build)))


def test_two_processes_build_once(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_concurrent, args=(tmp_path, tmp_path / "c", q)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(30)
    assert q.get() == q.get()
    assert (tmp_path / "c").read_text() == "x"


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def _killed_build(root, started):
    store = ArtifactStore(root)

    def build(tmp):
        (tmp / "half").write_text("half")
        started.set()
        import time
        time.sleep(60)          # killed here
    store.get_or_build("thing", "t", {"x": 1}, build)


def test_a_build_killed_mid_way_is_rebuilt_and_its_leftovers_removed(tmp_path):
    """Issue 21: SIGKILL runs no clean-up, so the killed build's .tmp folder stays; the next build
    of the same artifact removes it and builds the artifact whole (the lock died with the process)."""
    import signal
    ctx = mp.get_context("fork")
    started = ctx.Event()
    proc = ctx.Process(target=_killed_build, args=(tmp_path, started))
    proc.start()
    assert started.wait(30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    left = [p.name for p in (tmp_path / "thing").iterdir() if p.name.startswith(".tmp")]
    assert left == [f".tmp-{ArtifactStore(tmp_path).path('thing', 't', {'x': 1}).name}-{proc.pid}"]
    store = ArtifactStore(tmp_path)
    folder = store.get_or_build("thing", "t", {"x": 1}, lambda tmp: (tmp / "w").write_text("whole") and None)
    assert (folder / "w").read_text() == "whole" and not (folder / "half").exists()
    assert not [p for p in (tmp_path / "thing").iterdir() if p.name.startswith(".tmp")]
