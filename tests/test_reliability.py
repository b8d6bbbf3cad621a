"""Keeps tests/RELIABILITY.md true.

1. Every row of its bad-input table (``| B01 | ... |``) is a case here: the input is tried, the
   exception class must match the table's, and the table's message excerpt must appear in the
   error message. A case without a row, or a row without a case, fails the test.
2. The faults it lists are reproduced: training SIGKILLed at a random step and resumed (same
   weights); a build SIGKILLed half-way (leftovers ignored, rebuilt); two processes building the
   same artifact at once (built once, both get it); disk full while saving (old artifact kept).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _llm_servers import ReplyServer, chat_completion, send

from mono_utils.store.artifacts import ArtifactError, ArtifactStore, atomic_write_json, verify_folder

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "tests" / "RELIABILITY.md"


# ---------------------------------------------------------------- helpers for the cases
def _preset():
    from mono_utils.pipeline.presets import get_preset
    return get_preset("smoke")


def _tiny_lm():
    from mono_utils.core.model import ModelConfig, build_model
    return build_model(ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0))


def _weights_file(tmp: Path, edit) -> Path:
    from safetensors.torch import save_file
    state = {k: v.detach().clone() for k, v in _tiny_lm().named_parameters()}
    edit(state)
    save_file(state, str(tmp / "w.safetensors"))
    return tmp / "w.safetensors"


def _load_weights(tmp: Path, edit):
    from mono_utils.core.model import load_weights
    load_weights(_tiny_lm(), _weights_file(tmp, edit))


def _garbage_weights(tmp: Path):
    from mono_utils.core.model import load_weights
    (tmp / "w.safetensors").write_bytes(b"\x00garbage" * 50)
    load_weights(_tiny_lm(), tmp / "w.safetensors")


def _first_key(state):
    return next(iter(state))


def _artifact(tmp: Path) -> tuple[ArtifactStore, Path]:
    store = ArtifactStore(tmp / "store")
    folder = store.get_or_build("x", "a", {"v": 1}, lambda t: (t / "data.json").write_text('{"ok": 1}') and None)
    return store, folder


def _tampered(tmp):
    store, folder = _artifact(tmp)
    (folder / "data.json").write_text('{"ok": 2}')
    store.load_checked(folder)


def _half_written(tmp):
    store, folder = _artifact(tmp)
    (folder / "MANIFEST.json").unlink()
    store.load_checked(folder)


def _bad_json(tmp):
    from mono_utils.store.artifacts import read_json
    (tmp / "m.json").write_text('{"val_loss": 3.')
    read_json(tmp / "m.json")


class _SAE:  # the smallest thing check_interventions needs
    class cfg:
        d_sae = 8


def _generate(**kw):
    from mono_utils.steering.interventions import generate
    generate(None, None, _SAE(), kw.pop("prompt", "1,2,3"), kw.pop("ivs", ()), **kw)


def _prompt(prompt, max_new_tokens=8):
    from mono_utils.steering.interventions import prepare_prompt
    prepare_prompt(None, prompt, 16, max_new_tokens)


def _bundle(tmp: Path, edit=None, raw: bytes | None = None):
    from mono_utils.store.bundle import export_bundle, import_bundle
    store, _ = _artifact(tmp)
    b = export_bundle(tmp / "b.tar", store, verbose=False)
    if raw is not None:
        b.write_bytes(raw(b.read_bytes()))
    if edit is not None:
        with tarfile.open(b) as tin:
            members = [(m, tin.extractfile(m).read()) for m in tin.getmembers()]
        with tarfile.open(b, "w") as tout:
            for m, data in edit(members):
                m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
    import_bundle(b, ArtifactStore(tmp / "dst"), verbose=False)


def _tamper_member(members):
    return [(m, data.replace(b'"ok": 1', b'"ok": 7') if m.name.endswith("data.json") else data)
            for m, data in members]


def _add_member(name):
    def edit(members):
        return members + [(tarfile.TarInfo(name), b"{}")]
    return edit


class ExitStatus2(Exception):
    """The CLI printed an error and returned exit status 2 (the message is its stderr)."""


def _cli_unknown_preset(tmp):
    from mono_utils.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["build", "--preset", "huge", "--artifacts", str(tmp / "s")])
    if rc == 2:
        raise ExitStatus2(err.getvalue())


def _rater(name):
    from mono_utils.features.rating import rater_file
    rater_file(name, "/nonexistent-folder")


def _score(name, value):
    from mono_utils.features.rating import RUBRIC, rubric_total
    rubric_total(**{**{k: 0 for k in RUBRIC}, name: value})


def _sae_cfg(**kw):
    from mono_utils.core.sae import SAEConfig
    SAEConfig(**{"d_in": 8, "d_sae": 4, **kw})


def _sae_load(tmp, make):
    from mono_utils.core.sae import SparseAutoencoder
    SparseAutoencoder.load(make(tmp))


def _tokenizer_vocab(tmp):
    from mono_utils.core.tokenizer import train_tokenizer
    train_tokenizer(["hello world"], 100, tmp)


def _index_kind():
    from mono_utils.core.index import _check_kind
    _check_kind("banana")


# ---------------------------------------------------------------- hardening round two (issue 18)
def _cli(argv, env=None):
    """Run the CLI in-process; exit status 2 raises ExitStatus2 with its stderr."""
    from unittest import mock

    from mono_utils.cli import main
    err = io.StringIO()
    with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    if rc == 2:
        raise ExitStatus2(err.getvalue())
    return rc


def _device(value, cuda=False):
    from unittest import mock

    from mono_utils.core.device import pick_device
    with mock.patch.dict(os.environ, {"MONO_DEVICE": value}), mock.patch("torch.cuda.is_available", lambda: cuda):
        pick_device()


def _bad_manifest(tmp, manifest):
    store, folder = _artifact(tmp)
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    store.load_checked(folder)


def _store_env_is_a_file(tmp):
    from unittest import mock
    (tmp / "afile").write_text("not a folder")
    with mock.patch.dict(os.environ, {"MONO_ARTIFACTS": str(tmp / "afile")}):
        ArtifactStore()


def _sae_cfg_value(tmp, value: str):
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    SparseAutoencoder(SAEConfig(d_in=8, d_sae=4)).save(tmp / "sae")
    cfg = tmp / "sae" / "cfg.json"
    cfg.write_text(re.sub(r'"d_in": *\d+', f'"d_in": {value}', cfg.read_text()))
    (tmp / "sae" / "config.json").unlink()        # another tool's SAE: cfg.json alone describes it
    SparseAutoencoder.load(tmp / "sae")


def _tokenizer_files(tmp, edit):
    from mono_utils.core.tokenizer import load_tokenizer, train_tokenizer
    train_tokenizer(["hello world, the cat sat on the mat"] * 20, 300, tmp / "tok")
    edit(tmp / "tok" / "tokenizer.json")
    load_tokenizer(tmp / "tok")


def _empty_vocab(path: Path):
    tj = json.loads(path.read_text())
    tj["model"]["vocab"], tj["model"]["merges"], tj["added_tokens"] = {}, [], []
    path.write_text(json.dumps(tj))


def _bundle_with(tmp, edit):
    """A bundle from _artifact's store whose members ``edit(index, members)`` changes, bundle.json kept consistent."""
    import hashlib

    from mono_utils.store.bundle import export_bundle, import_bundle
    store, _ = _artifact(tmp)
    b = export_bundle(tmp / "b.tar", store, verbose=False)
    with tarfile.open(b) as tin:
        members = [(m.name, tin.extractfile(m).read()) for m in tin.getmembers()]
    index = json.loads(members[0][1])
    members = edit(index, members[1:])
    index["files"] = {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in members}
    raw = index.pop("_raw", None) or json.dumps(index).encode()
    with tarfile.open(b, "w") as tout:
        for name, data in [("bundle.json", raw)] + members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    import_bundle(b, ArtifactStore(tmp / "dst"), verbose=False)


def _cache_member(index, members):
    body = json.dumps({"key": "ab" + "1" * 62, "text": "Explanation: planted"}).encode()
    return members + [("artifacts/autointerp-cache/ab/ab" + "1" * 62 + ".json", body)]


def _empty_manifest(index, members):
    return [(n, b'{"files": {}}' if n.endswith("MANIFEST.json") else d) for n, d in members]


def _deep_index(index, members):
    index["_raw"] = b'{"format": "mono-bundle", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return members


def _no_room(tmp):
    from unittest import mock
    usage = __import__("shutil").disk_usage(tmp)
    with mock.patch("shutil.disk_usage", lambda p: usage._replace(free=1000)):
        _bundle(tmp)


def _bomb(tmp):
    """A bundle whose bundle.json lists a 1 GiB member (the check comes before anything is unpacked)."""
    from mono_utils.store.bundle import import_bundle
    name = "artifacts/x/a-0123456789ab/zeros.npy"
    index = {"format": "mono-bundle", "version": 1, "artifacts": [], "files": {name: {"size": 2**30, "sha256": "0" * 64}}}
    with tarfile.open(tmp / "bomb.tar.gz", "w:gz") as tout:
        raw = json.dumps(index).encode()
        info = tarfile.TarInfo("bundle.json")
        info.size = len(raw)
        tout.addfile(info, io.BytesIO(raw))
    import_bundle(tmp / "bomb.tar.gz", ArtifactStore(tmp / "dst"), verbose=False)


def _steer(**kw):
    from mono_utils.steering.interventions import Intervention
    _generate(**kw) if "ivs" not in kw else _generate(ivs=[Intervention(0, *kw.pop("ivs"))], **kw)


def _long_interpretation(tmp):
    from _mono_standins import random_index

    from mono_utils.features.rating import RatingSession
    RatingSession(random_index(), "ada", folder=tmp).record("x" * 200_000, 1, 1, 1, 0, 1)


def _llm_reply(tmp, provider, body: bytes, ctype="application/json", **kw):
    from mono_utils.autointerp.backends import LLMBackend
    from mono_utils.autointerp.protocol import ExplainInput
    with ReplyServer(lambda h: send(h, body, ctype)) as srv:
        b = LLMBackend(provider, base_url=srv.url + ("/v1" if provider == "openai" else ""), api_key_env=None,
                       cache_dir=tmp / "cache", max_retries=0, timeout=5.0, **kw)
        b.explain(ExplainInput([{"label": "top", "tokens": ["a", "b"], "acts": [0, 9]}], ["b"], ["a"]))


# ---------------------------------------------------------------- hardening round three (issue 25): store, lessons, LLM
def _pax_bundle(tmp, header_bytes: int = 2 << 20):
    """A bundle whose bundle.json member carries a PAX header of ``header_bytes`` (a few KB packed)."""
    from mono_utils.store.bundle import import_bundle
    raw = json.dumps({"format": "mono-bundle", "version": 1, "artifacts": [], "files": {}}).encode()
    info = tarfile.TarInfo("bundle.json")
    info.size, info.pax_headers = len(raw), {"comment": "z" * header_bytes}
    with tarfile.open(tmp / "pax.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as tout:
        tout.addfile(info, io.BytesIO(raw))
    import_bundle(tmp / "pax.tar.gz", ArtifactStore(tmp / "dst"), verbose=False)


def _two_models(tmp):
    store = ArtifactStore(tmp / "store")
    folders = [store.get_or_build("model", f"model{w}-smoke", {"which": w},
                                  lambda t, w=w: (t / "weights.json").write_text(json.dumps({"model": w})) and None,
                                  verbose=False) for w in "AB"]
    return store, *folders


def _swapped_bundle(tmp):
    """Model B's files under model A's folder name; bundle.json consistent with them."""
    import hashlib

    from mono_utils.store.bundle import export_bundle, import_bundle
    store, a, b = _two_models(tmp)
    with tarfile.open(export_bundle(tmp / "b.tar", store, verbose=False)) as tin:
        members = {m.name: tin.extractfile(m).read() for m in tin.getmembers()}
    swapped = {n.replace(b.name, a.name): d for n, d in members.items() if b.name in n}
    index = {"format": "mono-bundle", "version": 1, "artifacts": [],
             "files": {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in swapped.items()}}
    with tarfile.open(tmp / "swapped.tar", "w") as tout:
        for name, data in [("bundle.json", json.dumps(index).encode())] + sorted(swapped.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    import_bundle(tmp / "swapped.tar", ArtifactStore(tmp / "dst"), verbose=False)


def _swapped_folder(tmp):
    import shutil
    store, a, b = _two_models(tmp)
    shutil.rmtree(a)
    shutil.copytree(b, a)
    store.load_checked(a)


def _deep_sae_cfg(tmp):
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    SparseAutoencoder(SAEConfig(d_in=8, d_sae=4)).save(tmp / "sae")
    (tmp / "sae" / "cfg.json").write_text("[" * 100_000 + "]" * 100_000)
    SparseAutoencoder.load(tmp / "sae")


def _jsonl(tmp, line: str):
    from mono_utils.core.corpus import load_text_files
    (tmp / "c.jsonl").write_text('{"text": "a first document"}\n' + line + "\n", encoding="utf-8")
    load_text_files([tmp / "c.jsonl"])


def _tokenizer_store_removed(tmp):
    """The store deleted (by hand, by another process) while a tokenizer is being read from it."""
    import shutil
    from unittest import mock

    import transformers

    from mono_utils.core.tokenizer import load_tokenizer, train_tokenizer
    folder = tmp / "store" / "tokenizer" / "bpe300-x-0123456789ab"
    train_tokenizer(["hello world, the cat sat on the mat"] * 20, 300, folder)
    real = transformers.AutoTokenizer.from_pretrained

    def removed_meanwhile(path, **kw):
        shutil.rmtree(tmp / "store")
        return real(path, **kw)
    with mock.patch.object(transformers.AutoTokenizer, "from_pretrained", removed_meanwhile):
        load_tokenizer(folder)


def _store_removed_mid_build(tmp):
    import shutil
    store = ArtifactStore(tmp / "store")
    store.get_or_build("x", "a", {"v": 1}, lambda t: (t / "a.json").write_text("{}") and shutil.rmtree(tmp / "store"),
                       verbose=False)


def _one_notebook_lessons(tmp, edit_first: bool = True):
    """Student versions of notebook 00 in tmp/exercises, the first stub answered (as a student does)."""
    import shutil

    import nbformat

    from mono_utils.lessons.student import write_student_versions
    (tmp / "src").mkdir()
    shutil.copy(REPO / "notebooks" / "00_model.ipynb", tmp / "src")
    write_student_versions(tmp / "exercises", tmp / "src")
    if edit_first:
        nb = nbformat.read(tmp / "exercises" / "00_model.ipynb", as_version=4)
        next(c for c in nb.cells if "exercise-stub" in c.metadata.get("tags", [])).source += "\n# my answer"
        nbformat.write(nb, tmp / "exercises" / "00_model.ipynb")


def _lessons_again(tmp):
    from mono_utils.lessons.student import write_student_versions
    _one_notebook_lessons(tmp)
    write_student_versions(tmp / "exercises", tmp / "src")


def _lessons_swapped(tmp):
    import shutil

    from mono_utils.lessons.student import write_student_versions
    _one_notebook_lessons(tmp, edit_first=False)
    shutil.copytree(tmp / "src", tmp / "solutions")
    write_student_versions(tmp / "solutions", tmp / "exercises")


def _lessons_out_file(tmp):
    from mono_utils.lessons.student import write_student_versions
    (tmp / "exercises.ipynb").write_text("{}")
    write_student_versions(tmp / "exercises.ipynb")


def _run_notebooks_into_exercises(tmp):
    _one_notebook_lessons(tmp)
    _cli(["run-notebooks", "--preset", "smoke", "--only", "00", "--out", str(tmp / "exercises")], {"MONO_DEBUG": "1"})


def _endless_reply(tmp):
    """An endpoint that streams a reply that never ends (it stops at 64 MB, whatever the client does)."""
    def endless(h):
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.end_headers()
        chunk = b" " * (1 << 16)
        with contextlib.suppress(OSError):
            for _ in range(1024):
                h.wfile.write(chunk)
    with ReplyServer(endless) as srv:
        from mono_utils.autointerp.backends import LLMBackend
        LLMBackend("openai", base_url=srv.url + "/v1", api_key_env=None, cache_dir=tmp / "cache", max_retries=0,
                   timeout=30.0).complete("sys", [{"role": "user", "content": "hi"}])


def _simulation_reply(value: str):
    from mono_utils.autointerp.backends import parse_simulation
    parse_simulation('{"1": [0, ' + value + '], "2": [3]}', [2, 1])


def _student_returns(check: str, fn, limit: str = "20"):
    from unittest import mock

    from mono_utils import lessons
    with mock.patch.dict(os.environ, {"MONO_LESSONS_STRICT": "1", "MONO_CHECK_TIME_LIMIT": limit}):
        getattr(lessons, check)(fn)


def _loops_forever(*args):
    while True:
        try:
            pass
        except Exception:   # noqa: BLE001 - a student's catch-all does not swallow the time limit
            pass


def _surrogate_interpretation(tmp):
    from _mono_standins import random_index

    from mono_utils.features.rating import RatingSession
    RatingSession(random_index(), "ada", folder=tmp).record("an emoji cut in half: \ud83d!", 1, 1, 1, 0, 1)


# ---------------------------------------------------------------- hardening round three, the apps' share (issue 25)
def _app(tmp, **kw):
    """launch_app with arguments it refuses before anything is started or built."""
    from mono_utils.apps import launch_app
    from mono_utils.store.artifacts import ArtifactStore as Store
    launch_app("steering", wait=False, store=Store(tmp / "store"), **kw)


def _voila(**kw):
    from mono_utils.apps import voila_command
    voila_command("steering", **kw)


# id -> callable(tmp_path). The table's rows name the same ids.
CASES = {
    # configs
    "C01": lambda t: __import__("mono_utils.pipeline.presets", fromlist=["x"]).get_preset("huge"),
    "C02": lambda t: _preset().replace(n_heads=3),
    "C03": lambda t: _preset().replace(topk_k=10_000),
    "C04": lambda t: __import__("mono_utils.core.model", fromlist=["x"]).ModelConfig(d_vocab=0),
    "C05": lambda t: __import__("mono_utils.core.model", fromlist=["x"]).TrainConfig(tokens=0),
    "C06": lambda t: _sae_cfg(architecture="topk", k=8),
    "C07": lambda t: _sae_cfg(architecture="gated"),
    "C08": lambda t: __import__("mono_utils.pipeline.models", fromlist=["x"]).model_configs(_preset(), "C"),
    "C09": _tokenizer_vocab,
    "C10": _cli_unknown_preset,
    # files
    "F01": lambda t: _load_weights(t, lambda s: s.__setitem__(_first_key(s), torch.zeros(3, 3))),
    "F02": _garbage_weights,
    "F03": lambda t: _load_weights(t, lambda s: s[_first_key(s)].fill_(float("nan"))),
    "F04": _bad_json,
    "F05": _tampered,
    "F06": _half_written,
    "F07": lambda t: _sae_load(t, lambda d: (d / "empty").mkdir() or d / "empty"),
    "F08": lambda t: _sae_load(t, lambda d: d / "no-such-folder"),
    # widget values and prompts
    "W01": lambda t: _generate(ivs=[__import__("mono_utils.steering.interventions", fromlist=["x"]).Intervention(0, "clamp", float("nan"))]),
    "W02": lambda t: __import__("mono_utils.steering.interventions", fromlist=["x"]).Intervention(0, "clamp", float("inf")),
    "W03": lambda t: __import__("mono_utils.steering.interventions", fromlist=["x"]).Intervention(0, "boost", 1.0),
    "W04": lambda t: _generate(ivs=[__import__("mono_utils.steering.interventions", fromlist=["x"]).Intervention(99, "clamp", 1.0)]),
    "W05": lambda t: _generate(top_p=0.0),
    "W06": lambda t: _generate(temperature=float("inf")),
    "W07": lambda t: _score("confidence", 9),
    "W08": lambda t: _index_kind(),
    "P01": lambda t: _prompt(""),
    "P02": lambda t: _prompt(b"bytes"),
    "P03": lambda t: _prompt("1,2,3", max_new_tokens=40),
    "P04": lambda t: _rater(""),
    "P05": lambda t: _rater("../../etc/passwd"),
    # bundles
    "B01": lambda t: _bundle(t, edit=_tamper_member),
    "B02": lambda t: _bundle(t, raw=lambda b: b[: len(b) // 2]),
    "B03": lambda t: _bundle(t, edit=_add_member("artifacts/x/../../../evil.json")),
    "B04": lambda t: _bundle(t, edit=_add_member("artifacts/x/a-1/run.pkl")),
    "B05": lambda t: _bundle(t, raw=lambda b: b"this is not a tar file " * 40),
    "B06": lambda t: _bundle(t, edit=lambda m: m[1:]),
    # hardening round two (issue 18)
    "B07": lambda t: _bundle_with(t, _cache_member),
    "B08": lambda t: _bundle_with(t, _empty_manifest),
    "B09": lambda t: _bundle_with(t, _deep_index),
    "B10": _no_room,
    "B11": _bomb,
    "C11": lambda t: _cli(["build", "--preset", "", "--artifacts", str(t / "s")]),
    "C12": lambda t: _device("cuda"),
    "C13": lambda t: _device("tpu"),
    "C14": lambda t: _cli(["build", "--preset", "smoke", "--jobs", "1000", "--artifacts", str(t / "s")]),
    "C15": lambda t: _cli(["build", "--preset", "smoke", "--only", "nosuchstage", "--artifacts", str(t / "s")]),
    "C16": lambda t: _cli(["build", "--preset", "smoke", "--stage", "model C", "--artifacts", str(t / "s")]),
    "F09": lambda t: _bad_manifest(t, {"files": {"data.json": {"sha256": "0" * 64}}}),
    "F10": lambda t: _bad_manifest(t, {"files": ["data.json", "config.json"]}),
    "F11": _store_env_is_a_file,
    "F12": lambda t: _sae_cfg_value(t, "NaN"),
    "F13": lambda t: _sae_cfg_value(t, '"abc"'),
    "F14": lambda t: _tokenizer_files(t, lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
    "F15": lambda t: _tokenizer_files(t, _empty_vocab),
    "W09": lambda t: _steer(ivs=("clamp", 1e30)),
    "W10": lambda t: _steer(temperature=1e-300),
    "W11": lambda t: _steer(temperature=-1.0),
    "W12": _long_interpretation,
    "P06": lambda t: _rater("-2+3"),
    "L01": lambda t: _llm_reply(t, "openai", b"\xff\xfe\x00not utf-8 \xc3\x28"),
    "L02": lambda t: _llm_reply(t, "anthropic", b'{"unexpected": ["shape"], "content": 5}'),
    "L03": lambda t: _llm_reply(t, "openai", b"<html><body>Welcome to nginx!</body></html>", "text/html"),
    "L04": lambda t: _llm_reply(t, "openai", chat_completion("Explanation: " + "z" * 300_000)),
    # hardening round three (issue 25): store, bundles, student notebooks, corpora, LLM replies, checks
    "B12": _pax_bundle,
    "B13": _swapped_bundle,
    "B14": _swapped_folder,
    "E01": _deep_sae_cfg,
    "E02": lambda t: _jsonl(t, '{"text": null}'),
    "E03": lambda t: _jsonl(t, "12345"),
    "E04": lambda t: _jsonl(t, '["a"]'),
    "E05": lambda t: _jsonl(t, '{"text": "half a pair \\ud800 here"}'),
    "E06": _tokenizer_store_removed,
    "E07": _store_removed_mid_build,
    "L05": _lessons_out_file,
    "L06": _lessons_swapped,
    "L07": _lessons_again,
    "L08": _run_notebooks_into_exercises,
    "L09": _endless_reply,
    "T01": lambda t: _simulation_reply('"NaN"'),
    "T02": lambda t: _simulation_reply("NaN"),
    "T03": lambda t: _simulation_reply("-5"),
    "T04": lambda t: _simulation_reply("1e308"),
    "T05": lambda t: _simulation_reply('"7"'),
    "T06": lambda t: _simulation_reply("true"),
    "T07": lambda t: _student_returns("check_fvu", lambda x, x_hat: torch.tensor(0.5 + 0.5j)),
    "T08": lambda t: _student_returns("check_project_decoder_grad", lambda W, g: np.array([object()] * 3)),
    "T09": lambda t: _student_returns("check_fvu", _loops_forever, limit="1"),
    "R01": _surrogate_interpretation,
    # hardening round three, the apps' share (issue 25)
    "W13": lambda t: _steer(top_k=1.5),
    "W14": lambda t: _steer(top_k=True),
    "W15": lambda t: _steer(top_k="5"),
    "W16": lambda t: _steer(top_p=1e-300),
    "W17": lambda t: _steer(top_p="0.9"),
    "W18": lambda t: _steer(temperature="0.8"),
    "C17": lambda t: _cli(["atlas", "--no-build", "--out", str(t / "atlas")], env={"MONO_PRESET": " "}),
    "C18": lambda t: _cli(["app", "steering"], env={"MONO_PRESET": "huge"}),
    "C19": lambda t: _cli(["build", "--preset", "smoke", "--only", "", "--artifacts", str(t / "s")]),
    "C20": lambda t: _cli(["build", "--preset", "smoke", "--only", "--artifacts", str(t / "s")]),
    "C21": lambda t: _cli(["run-notebooks", "--preset", "smoke", "--only", "", "--out", str(t / "runs")]),
    "A01": lambda t: _voila(ip="0.0.0.0"),
    "A02": lambda t: _app(t, ip="0.0.0.0", token=""),
    "A03": lambda t: _app(t, preset="smoke", max_kernels=0),
    "A04": lambda t: _app(t, preset="smoke", cull_idle=0),
    "A05": lambda t: _app(t, preset="default"),
}


def table_rows() -> dict[str, tuple[str, str]]:
    """id -> (exception class, message excerpt) from RELIABILITY.md's bad-input table."""
    rows = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*([A-Z]\d\d)\s*\|.*\|\s*`(\w+)`\s*\|\s*(.+?)\s*\|\s*$", line)
        if m and not m.group(1).startswith("H"):
            excerpt = m.group(3).strip()
            assert excerpt.startswith("\u201c") and excerpt.endswith("\u201d"), f"{m.group(1)}: quote the excerpt"
            rows[m.group(1)] = (m.group(2), excerpt[1:-1].replace("\\|", "|"))
    return rows


def test_table_and_cases_match():
    rows = table_rows()
    assert len(rows) >= 20, f"RELIABILITY.md lists only {len(rows)} bad inputs"
    assert sorted(rows) == sorted(CASES), (f"table without case: {sorted(set(rows) - set(CASES))}; "
                                           f"case without row: {sorted(set(CASES) - set(rows))}")


def test_hardening_rows_and_tests_match():
    """Each row ``| H01 | ... |`` of the "Data kept" table is a test ``test_h01_...`` in a tests/test_hardening*.py."""
    rows = set(re.findall(r"^\|\s*(H\d\d)\s*\|", TABLE.read_text(encoding="utf-8"), flags=re.M))
    # the H tests live in tests/test_hardening.py and, by theme, tests/test_hardening_*.py
    tests = {m.upper() for f in sorted((REPO / "tests").glob("test_hardening*.py"))
             for m in re.findall(r"^def test_(h\d\d)_\w+\(", f.read_text(encoding="utf-8"), flags=re.M)}
    assert len(rows) >= 10, f"RELIABILITY.md lists only {len(rows)} H rows"
    assert rows == tests, f"row without test: {sorted(rows - tests)}; test without row: {sorted(tests - rows)}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_the_documented_error(case, tmp_path):
    exc_name, excerpt = table_rows()[case]
    with pytest.raises(BaseException) as info:
        CASES[case](tmp_path)
    err = info.value
    names = {c.__name__ for c in type(err).__mro__}
    assert exc_name in names, f"{case}: expected {exc_name}, got {type(err).__name__}: {err}"
    assert excerpt in str(err), f"{case}: message {str(err)!r} lacks the documented {excerpt!r}"


# ---------------------------------------------------------------- faults survived
TRAIN_SCRIPT = textwrap.dedent("""
    import os, sys, numpy as np, torch
    torch.set_num_threads(1)
    from mono_utils.core import model as mm
    cfg = mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0)
    tcfg = mm.TrainConfig(tokens=16 * 16 * 30, batch_size=16, lr=5e-3, checkpoint_every=4)
    toks = np.load(sys.argv[1]); kill_at = int(sys.argv[3])
    def on_step(rec):
        if rec["step"] == kill_at:
            os.kill(os.getpid(), 9)          # a hard kill: no cleanup, no finally
    mm.train_model(mm.build_model(cfg), toks, tcfg, checkpoint=sys.argv[2], progress=False, on_step=on_step)
""")


def _run(code: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=300)


def test_training_killed_at_a_random_step_resumes_to_the_same_result(tmp_path):
    from mono_utils.core import model as mm
    kill_at = int(np.random.default_rng().integers(5, 29))  # random on purpose; printed on failure
    toks = np.random.default_rng(0).integers(0, 64, size=(64, 16)).astype(np.uint16)
    np.save(tmp_path / "toks.npy", toks)
    ckpt = tmp_path / "ckpt.pt"
    r = _run(TRAIN_SCRIPT, tmp_path / "toks.npy", ckpt, kill_at)
    assert r.returncode == -9, f"the training process was not killed (rc {r.returncode}): {r.stderr[-2000:]}"
    assert ckpt.exists(), f"no checkpoint before the kill at step {kill_at}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = mm.ModelConfig(d_vocab=64, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, seed=0)
        tcfg = mm.TrainConfig(tokens=16 * 16 * 30, batch_size=16, lr=5e-3, checkpoint_every=4)
        resumed = mm.build_model(cfg)
        hist = mm.train_model(resumed, toks, tcfg, checkpoint=ckpt, progress=False)
        full = mm.build_model(cfg)
        mm.train_model(full, toks, tcfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [h["step"] for h in hist] == list(range(1, 31)), f"history has gaps after a kill at {kill_at}"
    for (n, p), (_, q) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), f"{n} differs after a kill at step {kill_at}"


HALF_SCRIPT = textwrap.dedent("""
    import os, sys
    from mono_utils.store.artifacts import ArtifactStore
    def build(tmp):
        with open(tmp / "big.json", "w") as f:
            f.write('{"half": "wri'); f.flush()
            os.kill(os.getpid(), 9)
    ArtifactStore(sys.argv[1]).get_or_build("x", "a", {"v": 1}, build)
""")


def test_half_written_artifact_is_ignored_and_rebuilt(tmp_path):
    root = tmp_path / "store"
    r = _run(HALF_SCRIPT, root)
    assert r.returncode == -9
    store = ArtifactStore(root)
    final = store.path("x", "a", {"v": 1})
    assert not final.exists() and list((root / "x").glob(".tmp-*")), "expected only a hidden leftover"
    assert store.entries() == [], "a half-written build must not be listed"
    assert not store.is_built("x", "a", {"v": 1})
    folder = store.get_or_build("x", "a", {"v": 1}, lambda t: (t / "big.json").write_text('{"whole": 1}') and None)
    assert folder == final and not verify_folder(folder)
    assert json.loads((folder / "big.json").read_text()) == {"whole": 1}
    # a file truncated after the fact is detected and rebuilt (tests/test_artifacts.py covers more)
    (folder / "big.json").write_text('{"who')
    with pytest.raises(ArtifactError, match="truncated"):
        store.load_checked(folder)


CONCURRENT_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from mono_utils.store.artifacts import ArtifactStore
    def build(tmp):
        with open(sys.argv[2], "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1.0)
        (tmp / "data.json").write_text('{"n": 1}')
    while time.time() < float(sys.argv[3]):
        time.sleep(0.005)
    print(ArtifactStore(sys.argv[1]).get_or_build("x", "shared", {"v": 1}, build))
""")


def test_two_processes_building_the_same_artifact_build_it_once(tmp_path):
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SCRIPT, str(tmp_path / "s"), str(tmp_path / "log"),
                               str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    assert outs[0][0] == outs[1][0], "the two processes got different folders"
    assert len((tmp_path / "log").read_text().split()) == 1, "the artifact was built twice"
    assert not verify_folder(Path(outs[0][0].strip()))


def _disk_full(monkeypatch, after: int = 0):
    """Make the (after+1)-th and later fsync calls fail with ENOSPC, as a full disk does."""
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_disk_full_while_saving_keeps_the_old_artifact(tmp_path, monkeypatch):
    store, folder = _artifact(tmp_path)
    before = _tree(store.root)
    for after in (0, 1, 2):  # fail at the first, second, third write of the rebuild
        with monkeypatch.context() as m:
            _disk_full(m, after)
            with pytest.raises(OSError, match="No space left"):
                store.get_or_build("x", "a", {"v": 1}, lambda t: (t / "data.json").write_text('{"ok": 9}') and None,
                                   force=True)
        assert _tree(store.root) == before, "a failed rebuild changed the store"
        assert not verify_folder(folder)
    # a single JSON file (metrics, ratings, settings) keeps its old content too
    atomic_write_json(tmp_path / "m.json", {"v": 1})
    with monkeypatch.context() as m:
        _disk_full(m)
        with pytest.raises(OSError):
            atomic_write_json(tmp_path / "m.json", {"v": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.json")] == []


def test_disk_full_while_saving_model_weights_or_a_bundle(tmp_path, monkeypatch):
    from mono_utils.core.model import load_weights, save_weights
    from mono_utils.store.bundle import export_bundle
    lm = _tiny_lm()
    save_weights(lm, tmp_path / "w.safetensors")
    old = (tmp_path / "w.safetensors").read_bytes()
    with torch.no_grad():
        next(lm.parameters()).add_(1.0)
    store, _ = _artifact(tmp_path)
    bundle = export_bundle(tmp_path / "b.tar", store, verbose=False)
    old_bundle = bundle.read_bytes()
    with monkeypatch.context() as m:
        _disk_full(m)
        with pytest.raises(OSError):
            save_weights(lm, tmp_path / "w.safetensors")
        with pytest.raises(OSError):
            export_bundle(tmp_path / "b.tar", store, verbose=False)
    assert (tmp_path / "w.safetensors").read_bytes() == old
    load_weights(_tiny_lm(), tmp_path / "w.safetensors")
    assert bundle.read_bytes() == old_bundle
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
