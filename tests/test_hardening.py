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
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _llm_servers import ReplyServer, chat_completion, send
from _mono_standins import random_index

from mono_utils.store.artifacts import ArtifactError, ArtifactStore, verify_folder, write_manifest
from mono_utils.store.bundle import BundleError, export_bundle, import_bundle

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
    from mono_utils.autointerp.backends import DiskCache
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
    outside, _ = _store(tmp_path, "elsewhere")     # a whole artifact folder linked in from outside the store
    theirs = outside.get_or_build("x", "c", {"v": 3}, lambda t: (t / "data.json").write_text('{"theirs": "OUTSIDE"}')
                                  and None, verbose=False)
    (store.root / "x" / theirs.name).symlink_to(theirs, target_is_directory=True)
    bundle = export_bundle(tmp_path / "b.tar", store)
    raw = bundle.read_bytes()
    assert b"hunter2-SECRET" not in raw and b"OUTSIDE" not in raw, "the bundle carries files from outside the store"
    out = capsys.readouterr().out
    assert "leak.json" in out and "symbolic link" in out, out
    # the linked artifact counts as damaged (left out); the other one travels
    with tarfile.open(bundle) as t:
        names = t.getnames()
    assert any("/b-" in n for n in names) and not any(folder.name in n for n in names)
    assert any("symbolic link" in p for p in verify_folder(folder))


# ---------------------------------------------------------------- H03-H05: rating files
def test_h03_one_rater_in_two_tabs_loses_no_rating(tmp_path):
    from mono_utils.features import rating as rt
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
    from mono_utils.features import rating as rt
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

    from mono_utils.features import rating as rt
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
    assert problems and "MANIFEST.json is malformed" in problems[0]
    with pytest.raises(ArtifactError, match="MANIFEST.json is malformed"):
        store.load_checked(folder)
    from mono_utils.cli import main
    assert main(["info", "--artifacts", str(store.root)]) == 0
    assert "DAMAGED" in capsys.readouterr().out
    calls = []
    store.get_or_build("x", "a", {"v": 1}, lambda t: calls.append(1) or (t / "data.json").write_text('{"ok": 1}')
                       and None, verbose=False)
    assert calls == [1] and not verify_folder(folder)


# ---------------------------------------------------------------- H08-H10: a misbehaving LLM endpoint
def _backend(provider, url, tmp, **kw):
    from mono_utils.autointerp.backends import LLMBackend
    opts = dict(base_url=url + ("/v1" if provider == "openai" else ""), api_key_env=None, cache_dir=tmp / "cache",
                max_retries=0, timeout=5.0, concurrency=1)
    opts.update(kw)
    return LLMBackend(provider, **opts)


def _source(units=2):
    from mono_utils.autointerp.protocol import EvalCorpus
    from mono_utils.autointerp.run import ArraySource
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 60, (200, 16))
    acts = {u: np.where(tokens == 7, 3.0 + u, 0.0).astype(np.float32) for u in range(units)}
    return ArraySource(EvalCorpus(tokens, [f" w{i}" for i in range(60)]), acts, rng.normal(size=(units, 60)))


BAD_REPLIES = {
    "not UTF-8": (b"\xff\xfe\x00 not utf-8 \xc3\x28", "application/json"),
    "JSON of the wrong shape": (b'{"unexpected": ["shape"], "content": 5, "choices": "no"}', "application/json"),
    "an HTML page with status 200": (b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("bad", sorted(BAD_REPLIES))
def test_h08_a_misbehaving_endpoint_fails_units_not_the_run(provider, bad, tmp_path):
    from mono_utils.autointerp.run import score_units, summarize
    body, ctype = BAD_REPLIES[bad]
    srv = ReplyServer(lambda h: send(h, body, ctype))
    try:
        b = _backend(provider, srv.url, tmp_path)
        df = score_units(_source(2), [0, 1], b, progress=False, verbose=False)
    finally:
        srv.close()
    assert len(df) == 2 and df.status.str.startswith("failed").all(), df.status.tolist()
    assert summarize(df)["failed"] == 2 and b.stats["parse_failures"] == 2
    assert all(srv.url in s and "not the API's format" in s for s in df.status), df.status.tolist()
    assert not list((tmp_path / "cache").rglob("*.json")), "a failed reply was cached"


def test_h09_a_dripping_endpoint_is_cut_off_at_the_timeout(tmp_path):
    from mono_utils.autointerp.backends import BackendUnavailableError
    stop = threading.Event()

    def drip(h):
        body = chat_completion("Explanation: slow.")
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        for byte in body:                     # one byte every 0.2 s: each read is quick, the whole is not
            if stop.wait(0.2):
                return
            try:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
            except OSError:
                return
    srv = ReplyServer(drip)
    try:
        b = _backend("openai", srv.url, tmp_path, timeout=1.0, max_retries=1, backoff=0.01, max_backoff=0.01)
        t = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="no complete reply within 1s"):
            b.complete("sys", [{"role": "user", "content": "hi"}])
        took = time.monotonic() - t
    finally:
        stop.set()
        srv.close()
    assert took < 4.0, f"two attempts with timeout=1 took {took:.1f}s (the whole body drips for {0.2 * 150:.0f}s+)"
    assert srv.requests == 2 and b.stats["retries"] == 1


def test_h10_only_good_replies_are_cached_and_the_url_is_in_the_key(tmp_path):
    from mono_utils.autointerp.backends import MAX_REPLY_CHARS, parse_explanation
    from mono_utils.autointerp.protocol import ParseFailure
    replies = ["I cannot help with that.", "Explanation: " + "z" * (MAX_REPLY_CHARS + 10), "Explanation: fine."]
    srv = ReplyServer(lambda h: send(h, chat_completion(replies.pop(0) if len(replies) > 1 else replies[0])))
    other = ReplyServer(lambda h: send(h, chat_completion("Explanation: from the other server.")))
    msgs = [{"role": "user", "content": "hi"}]
    try:
        b = _backend("openai", srv.url, tmp_path)
        with pytest.raises(ParseFailure, match="not cached"):            # unparseable: not cached
            b.complete("sys", msgs, parse=parse_explanation)
        with pytest.raises(ParseFailure, match="character cap"):          # over the cap: not cached
            b.complete("sys", msgs, parse=parse_explanation)
        assert not list((tmp_path / "cache").rglob("*.json"))
        assert b.complete("sys", msgs, parse=parse_explanation) == "fine."  # asked again, then cached
        assert srv.requests == 3 and len(list((tmp_path / "cache").rglob("*.json"))) == 1
        assert b.complete("sys", msgs, parse=parse_explanation) == "fine." and srv.requests == 3
        # the same request to another server is not answered from the first one's cache
        b2 = _backend("openai", other.url, tmp_path)
        assert b2.complete("sys", msgs, parse=parse_explanation) == "from the other server."
        assert b.request_key("sys", msgs, 10) != b2.request_key("sys", msgs, 10)
        # a reply an older version cached without parsing it is asked again, not replayed
        key = b.request_key("s2", msgs, b.max_tokens)
        b.cache.put(key, {"text": "gibberish"})
        assert b.complete("s2", msgs, parse=parse_explanation) == "fine." and srv.requests == 4
    finally:
        srv.close()
        other.close()


# ---------------------------------------------------------------- H11: steering's logits guarded
def test_h11_non_finite_logits_stop_both_steering_backends_alike(tmp_path):
    import torch

    from mono_utils.core.model import ModelConfig, build_model
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    from mono_utils.core.tokenizer import train_tokenizer
    from mono_utils.steering.interventions import Intervention, generate
    tok = train_tokenizer(["1,2,3,4,5,6,7,8,9,10 the cat sat on the mat. "] * 30, 300, tmp_path / "tok")
    lm = build_model(ModelConfig(d_vocab=len(tok), d_model=32, n_heads=2, d_mlp=64, n_ctx=24, seed=3), tokenizer=tok)
    lm.eval()
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96, seed=1))
    ok = [Intervention(5, "clamp", 50.0)]
    texts = {be: generate(lm, tok, sae, "1,2,3", ok, temperature=0, max_new_tokens=6, backend=be).new_ids
             for be in ("fast", "hooks")}
    assert texts["fast"] == texts["hooks"], "the two backends disagree within the documented range"
    with torch.no_grad():
        sae.W_dec[5].fill_(3e38)                # a decoder row that overflows float32 when steered
    errors = {}
    for be in ("fast", "hooks"):
        with pytest.raises(ValueError, match="logits are not finite") as info:
            generate(lm, tok, sae, "1,2,3", [Intervention(5, "clamp", 10_000.0)], temperature=0, max_new_tokens=6,
                     backend=be)
        errors[be] = str(info.value)
    assert errors["fast"] == errors["hooks"]


# ---------------------------------------------------------------- H12-H17: CLI, store, apps
def test_h12_an_empty_mono_preset_means_the_default(monkeypatch):
    from mono_utils.pipeline.presets import get_preset
    from mono_utils.cli import make_parser
    monkeypatch.setenv("MONO_PRESET", "")
    assert make_parser().parse_args(["build"]).preset == "default"
    assert make_parser().parse_args(["run-notebooks"]).preset == "default"
    assert get_preset().name == "default"


def test_h13_a_complete_store_on_a_read_only_file_system_can_be_read(tmp_path, monkeypatch):
    import builtins
    import errno

    from mono_utils.store import artifacts
    store, folder = _store(tmp_path)
    real_open = builtins.open

    def read_only_open(path, mode="r", *a, **kw):   # what a read-only mount answers to any write
        if any(c in mode for c in "wax+") and str(path).startswith(str(store.root)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *a, **kw)
    monkeypatch.setattr(artifacts, "open", read_only_open, raising=False)
    assert store.get_or_build("x", "a", {"v": 1}, lambda t: pytest.fail("rebuilt"), verbose=False) == folder
    assert store.is_built("x", "a", {"v": 1}) and [e["ok"] for e in store.entries()] == [True]
    with pytest.raises(OSError, match="Read-only"):     # building something new still needs to write
        store.get_or_build("x", "new", {"v": 2}, lambda t: None, verbose=False)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and ps --ppid")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_h14_killing_the_jobs_parent_stops_its_workers(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MONO_ARTIFACTS": str(tmp_path / "s")}
    parent = subprocess.Popen([sys.executable, "-m", "mono_utils", "build", "--preset", "smoke", "--jobs", "2",
                               "--only", "SAE A/1", "SAE B/1", "--artifacts", str(tmp_path / "s")], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(workers) < 2:
            workers = _children(parent.pid)
            time.sleep(0.2)
        assert len(workers) == 2, "the two workers did not start"
        time.sleep(1.0)
        parent.send_signal(sig)
        parent.wait(timeout=30)
        deadline = time.time() + 5    # each worker still has its model and SAE to train: a minute or more
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), f"workers outlived a {sig.name}ed parent"
    finally:
        for w in [parent.pid, *workers]:
            with __import__("contextlib").suppress(OSError):
                os.kill(w, signal.SIGKILL)


def test_h15_parallel_build_logs_go_beside_the_store(tmp_path, monkeypatch):
    from mono_utils.pipeline import parallel as build_parallel
    calls = []

    class FakeProc:
        returncode = 0

        def __init__(self, cmd, stdout, **kw):
            calls.append(cmd)
            stdout.write("built\n")

        def poll(self):
            return 0
    monkeypatch.setattr(build_parallel.subprocess, "Popen", FakeProc)
    assert build_parallel.run_parallel(["corpus"], {"corpus": ()}, 1, "smoke", tmp_path / "store") == 0
    assert (tmp_path / "store" / "build-logs" / "smoke" / "corpus.log").read_text() == "built\n"   # per preset (H46)
    assert ArtifactStore(tmp_path / "store").entries() == []        # the logs are not an artifact


def test_h16_the_app_prints_the_port_it_serves(capsys):
    pytest.importorskip("voila")
    import urllib.error
    import urllib.request

    from mono_utils.apps import launch_app
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = launch_app("rating", port=port, wait=False, check=False)   # serves, builds nothing
        try:
            out = capsys.readouterr().out
            assert f"port {port} is taken" in out and f":{proc.port}/" in out and proc.port != port
            assert f"--port={proc.port}" in proc.args and "--Voila.port_retries=0" in proc.args
            deadline, served = time.time() + 90, False
            while time.time() < deadline and not served and proc.poll() is None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/", timeout=5).close()
                    served = True
                except urllib.error.HTTPError:      # any HTTP answer: Voila is there
                    served = True
                except OSError:
                    time.sleep(0.5)
            assert served, "Voila does not answer on the printed port"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_h17_info_does_not_list_caches(tmp_path, capsys):
    from mono_utils.autointerp.backends import DiskCache
    from mono_utils.cli import main
    store, _ = _store(tmp_path)
    for i in range(3):
        DiskCache(store.root / "autointerp-cache").put(f"{i:02d}" + "0" * 62, {"text": "x"})
    (store.root / "activations" / "actsA-smoke").mkdir(parents=True)
    assert [e["kind"] for e in store.entries()] == ["x"]
    assert main(["info", "--artifacts", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "DAMAGED" not in out and "autointerp-cache" not in out and "activations" not in out
