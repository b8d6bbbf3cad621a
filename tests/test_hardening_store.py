"""Keeps rows H20-H39 of the "Data kept and failures contained" table of tests/RELIABILITY.md true
(hardening round three, issue 25: the store, bundles, student notebooks, LLM replies, corpora, ratings).

Each row ``| H20 | ... |`` is the test ``test_h20_...`` here (test_reliability.py checks that rows and
tests match one to one). The rows marked "data loss" or "memory" in the table are the BAD items of
issue 25: each of their tests failed on the code before the fix (main at 1511651).
"""
from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from _llm_servers import ReplyServer, chat_completion, send

from mono_utils.store.artifacts import ArtifactError, ArtifactStore, verify_folder
from mono_utils.store.bundle import BundleError, export_bundle, import_bundle

REPO = Path(__file__).resolve().parent.parent


class PeakRSS:
    """The peak resident memory of this process above its level at the start, sampled every 10 ms."""

    def __init__(self):
        self.proc, self.stop, self.peak = psutil.Process(), threading.Event(), 0

    def _watch(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        gc.collect()
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grew_mb(self) -> float:
        return (self.peak - self.base) / 2**20


# ---------------------------------------------------------------- H20: an endless LLM reply
def test_h20_an_endless_llm_reply_is_cut_off_at_a_byte_cap(tmp_path):
    """BAD 5 (memory): the body is counted as it arrives; before, it was read whole until the timeout."""
    from mono_utils.autointerp import backends
    from mono_utils.autointerp.backends import LLMBackend
    from mono_utils.autointerp.protocol import ParseFailure
    stop, sent = threading.Event(), [0]

    def endless(h):   # no content-length: the body ends only when the connection does
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.end_headers()
        chunk = b'{"choices": [{"message": {"content": "' + b"z" * (1 << 16)
        while not stop.is_set() and sent[0] < 256 * 2**20:     # at most 256 MB, whatever the client does
            try:
                h.wfile.write(chunk)
                sent[0] += len(chunk)
            except OSError:
                return
    srv = ReplyServer(endless)
    try:
        b = LLMBackend("openai", base_url=srv.url + "/v1", api_key_env=None, cache_dir=tmp_path / "cache",
                       max_retries=2, timeout=30.0, backoff=0.01)
        import anthropic, openai  # noqa: F401,E401 - imported before the clock starts (seconds on a busy machine)
        t = time.monotonic()
        with PeakRSS() as mem, pytest.raises(ParseFailure, match="cap on a reply") as err:
            b.complete("sys", [{"role": "user", "content": "hi"}])
        took = time.monotonic() - t
    finally:
        stop.set()
        srv.close()
    assert srv.url in str(err.value) and b.stats["parse_failures"] == 1
    assert srv.requests == 1, "an over-long reply is not retried"
    assert took < 15.0, f"the call took {took:.1f}s: the reply was read until the timeout (30 s)"
    assert mem.grew_mb < 8 * backends.MAX_REPLY_BYTES / 2**20, f"memory grew {mem.grew_mb:.0f} MB for a capped reply"
    assert not list((tmp_path / "cache").rglob("*.json"))


# ---------------------------------------------------------------- H21: a PAX header bomb in a bundle
def _pax_bomb(path: Path, header_mb: int) -> Path:
    """A gzip bundle whose bundle.json member carries a ``header_mb`` MB PAX header (a few hundred KB packed)."""
    index = json.dumps({"format": "mono-bundle", "version": 1, "artifacts": [], "files": {}}).encode()
    info = tarfile.TarInfo("bundle.json")
    info.size = len(index)
    info.pax_headers = {"comment": "z" * (header_mb << 20)}
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(index))
    del info
    return path


def test_h21_a_pax_header_bomb_is_refused_before_tarfile_reads_it(tmp_path):
    """BAD 3 (memory): tarfile reads a PAX header whole; the raw headers are now scanned first, capped."""
    bomb = _pax_bomb(tmp_path / "bomb.tar.gz", 64)
    assert bomb.stat().st_size < 2**20, "the crafted bundle should be small on disk"
    dst = ArtifactStore(tmp_path / "dst")
    with PeakRSS() as mem, pytest.raises(BundleError, match="extended tar header of 67108"):
        import_bundle(bomb, dst, verbose=False)
    # before the fix: this bundle passed every check and tarfile held the header about 4 times over
    assert mem.grew_mb < 24, f"importing a {bomb.stat().st_size >> 10} KB bundle grew memory by {mem.grew_mb:.0f} MB"
    assert not (tmp_path / "dst").exists() or not [p for p in (tmp_path / "dst").rglob("*") if p.is_file()]
    # a real bundle (PAX format, with its small headers) still imports
    store = ArtifactStore(tmp_path / "src")
    store.get_or_build("x", "a" * 120, {"v": 1}, lambda t: (t / "data.json").write_text("{}") and None, verbose=False)
    assert len(import_bundle(export_bundle(tmp_path / "ok.tar.gz", store, verbose=False), dst, verbose=False)) == 1


# ---------------------------------------------------------------- H22: one artifact's files under another's name
def _two_models(tmp: Path) -> tuple[ArtifactStore, Path, Path]:
    store = ArtifactStore(tmp / "store")
    a = store.get_or_build("model", "modelA-smoke", {"which": "A"},
                           lambda t: (t / "weights.json").write_text('{"model": "A"}') and None, verbose=False)
    b = store.get_or_build("model", "modelB-smoke", {"which": "B"},
                           lambda t: (t / "weights.json").write_text('{"model": "B"}') and None, verbose=False)
    return store, a, b


def _swap_b_into_a(a: Path, b: Path) -> None:
    shutil.rmtree(a)
    shutil.copytree(b, a)


def test_h22_another_artifacts_files_under_a_folder_name_are_damage(tmp_path, capsys):
    """BAD 4 (wrong results): the folder name is content-addressed; config.json must match it, on load and import."""
    store, a, b = _two_models(tmp_path)
    export_bundle(tmp_path / "good.tar", store, verbose=False)
    _swap_b_into_a(a, b)
    # on load: damaged, named, and the build rebuilds A (it used to hand model B out as A)
    problems = verify_folder(a)
    assert problems and "describes model/modelB-smoke, not model/modelA-smoke" in problems[0], problems
    assert [e["ok"] for e in store.entries() if e["name"] == a.name] == [False]
    with pytest.raises(ArtifactError, match="holds another artifact's files"):
        store.load_checked(a)
    again = store.get_or_build("model", "modelA-smoke", {"which": "A"},
                               lambda t: (t / "weights.json").write_text('{"model": "A"}') and None, verbose=False)
    assert json.loads((again / "weights.json").read_text()) == {"model": "A"}
    # on import: a bundle holding B's files under A's folder (its index consistent) is refused, store unchanged
    _swap_b_into_a(a, b)
    shutil.rmtree(b)
    with tarfile.open(tmp_path / "good.tar") as tin:
        members = {m.name: tin.extractfile(m).read() for m in tin.getmembers()}
    swapped = {n: members[n.replace("modelA-smoke", "modelB-smoke").replace(a.name.split("-")[-1], b.name.split("-")[-1])]
               for n in members if a.name in n}
    index = {"format": "mono-bundle", "version": 1, "artifacts": [], "files": {
        n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in swapped.items()}}
    with tarfile.open(tmp_path / "swapped.tar", "w") as tout:
        for name, data in [("bundle.json", json.dumps(index).encode())] + sorted(swapped.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    dst = ArtifactStore(tmp_path / "dst")
    with pytest.raises(BundleError, match="describes model/modelB-smoke, not model/modelA-smoke"):
        import_bundle(tmp_path / "swapped.tar", dst, verbose=False)
    assert not [p for p in (tmp_path / "dst").rglob("*") if p.is_file()]
    # the same config under a wrong hash suffix is refused too (the suffix is the config's hash)
    c = store.get_or_build("model", "modelC-smoke", {"which": "C"}, lambda t: None, verbose=False)
    other = store.root / "model" / ("modelC-smoke-" + "0" * 12)
    shutil.copytree(c, other)
    assert "not to its folder's suffix 000000000000" in " ".join(verify_folder(other))


# ---------------------------------------------------------------- H23: a student's notebooks are never overwritten
def _cli(argv) -> tuple[int, str]:
    import contextlib

    from mono_utils.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def _answer(path: Path) -> None:
    """What a student does: write an answer into the first stub and save."""
    nb = nbformat.read(path, as_version=4)
    stub = next(c for c in nb.cells if "exercise-stub" in c.metadata.get("tags", []))
    stub.source += "\n# my answer, typed for an hour"
    nbformat.write(nb, path)


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_h23_a_students_notebooks_are_never_overwritten(tmp_path):
    """BAD 1 (data loss): lessons --out and run-notebooks --out used to replace a student's answers, and
    lessons with --notebooks/--out swapped replaced the solutions with stubs."""
    ex = tmp_path / "exercises"
    assert _cli(["lessons", "--out", str(ex)])[0] == 0
    assert _cli(["lessons", "--out", str(ex)])[0] == 0, "rewriting untouched student versions needs no flag"
    _answer(ex / "00_model.ipynb")
    before = _files(ex)
    # 1. lessons again: refused, nothing written; --force keeps a copy of the answer
    rc, err = _cli(["lessons", "--out", str(ex)])
    assert rc == 1 and "would be overwritten, e.g. 00_model.ipynb (a student's notebook" in err and "--force" in err, err
    assert _files(ex) == before
    assert _cli(["lessons", "--out", str(ex), "--force"])[0] == 0
    kept = list((ex / "backups").rglob("00_model.ipynb"))
    assert len(kept) == 1 and kept[0].read_bytes() == before["00_model.ipynb"]
    assert b"typed for an hour" not in (ex / "00_model.ipynb").read_bytes()
    # 2. --notebooks and --out swapped: the solutions are never replaced by stubs, not even with --force
    solutions = tmp_path / "solutions"
    shutil.copytree(REPO / "notebooks", solutions)
    sol_before = _files(solutions)
    for extra in ([], ["--force"]):
        rc, err = _cli(["lessons", "--notebooks", str(ex), "--out", str(solutions), *extra])
        assert rc == 1 and "did you swap --notebooks and --out?" in err, err
    assert _files(solutions) == sol_before
    with pytest.raises(ValueError, match="never replaces a solution, even with --force"):
        _stub_over_solution(tmp_path)
    # 3. run-notebooks into the students' folder: refused before any notebook runs
    _answer(ex / "00_model.ipynb")
    before = _files(ex)
    rc, err = _cli(["run-notebooks", "--preset", "smoke", "--only", "00", "--out", str(ex)])
    assert rc == 1 and "would be overwritten" in err and "a student's notebook" in err, err
    assert _files(ex) == before
    rc, err = _cli(["run-notebooks", "--preset", "smoke", "--only", "00", "--out", str(REPO / "notebooks")])
    assert rc == 1 and "the notebooks' own folder" in err, err
    # what run-notebooks --force does before it runs anything: the student's notebook is copied aside first;
    # an earlier executed copy (a solution notebook) is replaced without a flag
    from mono_utils.lessons.student import guard_writes
    (kept,) = guard_writes({ex / "00_model.ipynb": None}, writes="solution", force=True)
    assert kept.read_bytes() == before["00_model.ipynb"] and kept.parent.parent == ex / "backups"
    assert guard_writes({solutions / "00_model.ipynb": None}, writes="solution") == []


def test_h23_after_a_pull_untouched_exercises_are_updated_and_answered_ones_kept(tmp_path):
    """A newer version of the lessons (a `git pull`) replaces the student versions nobody edited (run
    them, and they still count as untouched), and still refuses to replace one with an answer in it."""
    src, ex = tmp_path / "src", tmp_path / "exercises"
    src.mkdir()
    for name in ("00_model.ipynb", "01_train_sae.ipynb"):
        shutil.copy(REPO / "notebooks" / name, src / name)
    assert _cli(["lessons", "--notebooks", str(src), "--out", str(ex)])[0] == 0
    ran = nbformat.read(ex / "01_train_sae.ipynb", as_version=4)      # opened and run, not edited
    code = next(c for c in ran.cells if c.cell_type == "code")
    code.outputs, code.execution_count = [nbformat.v4.new_output("stream", text="ran\n")], 1
    nbformat.write(ran, ex / "01_train_sae.ipynb")

    def pull(marker: str) -> None:
        for name in ("00_model.ipynb", "01_train_sae.ipynb"):
            nb = nbformat.read(src / name, as_version=4)
            nb.cells[0].source += f"\n\n{marker}"
            nbformat.write(nb, src / name)

    pull("A sentence the teacher added.")
    rc, err = _cli(["lessons", "--notebooks", str(src), "--out", str(ex)])
    assert rc == 0, err
    for name in ("00_model.ipynb", "01_train_sae.ipynb"):
        assert "A sentence the teacher added." in (ex / name).read_text(encoding="utf-8"), name
    _answer(ex / "00_model.ipynb")
    before = _files(ex)
    pull("Another sentence.")
    rc, err = _cli(["lessons", "--notebooks", str(src), "--out", str(ex)])
    assert rc == 1 and "00_model.ipynb (a student's notebook" in err, err
    assert _files(ex) == before, "a refused run wrote something"


def _stub_over_solution(tmp: Path):
    """A folder holding a solution notebook under a student version's name, written with force=True."""
    from mono_utils.lessons.student import write_student_versions
    out = tmp / "mixed"
    out.mkdir()
    shutil.copy(REPO / "notebooks" / "01_train_sae.ipynb", out / "01_train_sae.ipynb")
    try:
        write_student_versions(out, REPO / "notebooks", force=True)
    finally:
        assert (out / "01_train_sae.ipynb").read_bytes() == (REPO / "notebooks" / "01_train_sae.ipynb").read_bytes()


# ---------------------------------------------------------------- H24: one rater's file holds one rater's rows
def test_h24_a_row_for_another_rater_is_not_counted_as_theirs(tmp_path):
    from _mono_standins import random_index

    from mono_utils.features import rating as rt
    idx = random_index()
    for who in ("bob", "mallory"):
        rt.RatingSession(idx, who, seed=0, n_features=2, n_neurons=2, folder=tmp_path).record("mine", 1, 1, 1, 0, 1)
    bob_row = (tmp_path / "bob.csv").read_text().splitlines()[1]
    forged = bob_row.replace(",mine,", ",planted by mallory,").replace(",1,1,1,0,1,", ",3,3,3,3,3,")
    forged = forged.replace(f",{bob_row.split(',')[-2]},", f",{rt.rubric_total(3, 3, 3, 3, 3)},")
    with open(tmp_path / "mallory.csv", "a", encoding="utf-8") as f:     # a row for bob inside mallory's file
        f.write(forged.replace("2026", "2099", 1) + "\n")
    rows, problems = rt.read_ratings(tmp_path / "mallory.csv")
    assert {r["rater"] for r in rows} == {"mallory"}
    assert any("a row for rater 'bob' in mallory's file" in p for p in problems), problems
    df, problems = rt.load_ratings(tmp_path)
    bob = df[df.rater == "bob"]
    assert len(bob) == 1 and bob.interpretation.tolist() == ["mine"], bob.interpretation.tolist()
    assert any("mallory.csv line" in p for p in problems)


# ---------------------------------------------------------------- H25: simulation replies that are not numbers 0-9
def _source(units=2):
    import numpy as np

    from mono_utils.autointerp.protocol import EvalCorpus
    from mono_utils.autointerp.run import ArraySource
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 200, (200, 16))
    acts = {u: np.where(tokens == 7, 3.0 + u, 0.0).astype(np.float32) for u in range(units)}
    return ArraySource(EvalCorpus(tokens, [f" w{i}" for i in range(200)]), acts, rng.normal(size=(units, 200)))


BAD_PREDICTIONS = {"'NaN'": "NaN", "NaN": float("nan"), "-5": -5, "1e308": 1e308, "'7'": "7", "true": True}


def test_h25_simulation_replies_that_are_not_numbers_are_counted_failures(tmp_path):
    """Any simulator (an LLM's parsed reply, a custom backend): "NaN", NaN, -5, 1e308, "7", true fail the unit."""
    from mono_utils.autointerp.offline import OfflineBackend
    from mono_utils.autointerp.run import score_units, summarize

    class Simulator(OfflineBackend):
        bad = None

        def simulate(self, inp):
            out = super().simulate(inp)
            out[0][0] = self.bad
            return out
    for shown, bad in BAD_PREDICTIONS.items():
        b = Simulator()
        b.bad = bad
        df = score_units(_source(2), [0, 1], b, progress=False, verbose=False)
        assert df.status.str.startswith("failed").all(), (shown, df.status.tolist())
        assert summarize(df)["failed"] == 2 and "is not a number from 0 to 9" in df.status.iloc[0], df.status.iloc[0]
    good = score_units(_source(2), [0, 1], OfflineBackend(), progress=False, verbose=False)
    assert (good.status == "ok").all(), good.status.tolist()
    # an LLM's reply: parsed, refused, counted, not cached
    from mono_utils.autointerp.backends import LLMBackend, parse_simulation
    from mono_utils.autointerp.protocol import ParseFailure
    srv = ReplyServer(lambda h: send(h, chat_completion('{"1": [0, -5]}')))
    try:
        b = LLMBackend("openai", base_url=srv.url + "/v1", api_key_env=None, cache_dir=tmp_path / "cache",
                       max_retries=0, timeout=10.0)
        with pytest.raises(ParseFailure, match="prediction -5 is not a number from 0 to 9"):
            b.complete("sys", [{"role": "user", "content": "hi"}], parse=lambda t: parse_simulation(t, [2]))
    finally:
        srv.close()
    assert b.stats["parse_failures"] == 1 and not list((tmp_path / "cache").rglob("*.json"))


# ---------------------------------------------------------------- H26: files written for others respect the umask
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_h26_files_written_for_others_respect_the_umask(tmp_path, umask):
    """Student notebooks, bundles and every atomic write used to be 0600 (mkstemp's mode) whatever the umask."""
    from mono_utils.lessons.student import write_student_versions
    from mono_utils.store.artifacts import atomic_write_json
    shutil.copytree(REPO / "notebooks", tmp_path / "src",      # one notebook is enough: 00_model
                    ignore=lambda folder, names: [n for n in names if n != "00_model.ipynb"])
    old = os.umask(umask)
    try:
        (notebook, _), = write_student_versions(tmp_path / "exercises", tmp_path / "src")
        store = ArtifactStore(tmp_path / "store")
        store.get_or_build("x", "a", {"v": 1}, lambda t: (t / "data.json").write_text("{}") and None, verbose=False)
        bundle = export_bundle(tmp_path / "class.tar.gz", store, verbose=False)
        settings = atomic_write_json(tmp_path / "settings.json", {"v": 1})
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for path in (notebook, bundle, settings):
        assert path.stat().st_mode & 0o777 == want, f"{path.name}: {oct(path.stat().st_mode & 0o777)}, want {oct(want)}"


def test_h27_a_read_only_store_names_the_missing_artifact(tmp_path, monkeypatch):
    """A student's kernel on the class's shared store (root-owned, read-only for them) used to die with a
    bare PermissionError on the store's folder when a notebook needed an artifact the bundle lacked."""
    from mono_utils.store import artifacts
    store = artifacts.ArtifactStore(tmp_path / "store")
    store.get_or_build("tokens", "tiny", {"n": 1}, lambda tmp: {"n": 1})       # built while writable
    # what a non-root student meets (as root, os.access says yes to everything): no write access
    monkeypatch.setattr(artifacts.os, "access", lambda path, mode: not (mode & os.W_OK))
    assert store.get_or_build("tokens", "tiny", {"n": 1}, lambda tmp: {"n": 1}).is_dir(), "a built one still loads"
    built = []
    with pytest.raises(PermissionError) as e:
        store.get_or_build("model", "A", {"d_mlp": 8}, lambda tmp: built.append(tmp))
    assert "model/A-" in str(e.value) and "read-only for you" in str(e.value) and "bundle that holds it" in str(e.value)
    assert not built and not (tmp_path / "store" / "model").exists()



def test_h28_reading_proxies_on_a_read_only_store_writes_nothing(tmp_path, monkeypatch):
    """The class server's hub test: notebook 02 in a student's kernel died with a PermissionError writing the
    SAE's metrics.json in the shared store, though every artifact was built. Metrics it already holds are not
    written again, and a record the reader may not write is left as the builder wrote it."""
    import pandas as pd

    from mono_utils.features import proxies
    from mono_utils.store import artifacts
    store = ArtifactStore(tmp_path / "store")
    folder = store.get_or_build("sae", "tiny", {"n": 1}, lambda tmp: {"l0": 3.0})
    row = {m: 0.5 for m in proxies.WIN_METRICS}
    table = pd.DataFrame([{"proxy": "dna", "kind": "feature", **row}, {"proxy": "dna", "kind": "neuron", **row}])
    proxies.save_proxy_metrics(table, [folder], store)                 # the builder, writable: recorded
    before = (folder / "metrics.json").read_bytes()
    assert json.loads(before)["proxies_feature_wins"] == "0/1"

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(folder / ".metrics.json.tmp"))
    monkeypatch.setattr(artifacts, "atomic_write_json", refuse)
    store.update_metrics(folder, **proxies.table_metrics(table))     # a student: the same record, nothing written
    proxies.save_proxy_metrics(table, [folder], store)
    changed = table.assign(best_f1=[0.9, 0.1])
    proxies.save_proxy_metrics(changed, [folder], store)               # a new record it may not write: kept, no error
    assert (folder / "metrics.json").read_bytes() == before
    with pytest.raises(PermissionError):                               # the store's own call still says so
        store.update_metrics(folder, **proxies.table_metrics(changed))
