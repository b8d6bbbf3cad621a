"""LLM backends through the real ``anthropic`` and ``openai`` SDKs, against a local stub server.

The stub (127.0.0.1, a free port) speaks the Anthropic Messages API and the OpenAI
chat-completions wire formats, answers like a tiny "LLM" that knows the planted unit, and can
be scripted to reply 429, 500, slowly, with malformed text or with a non-JSON body.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from mono_utils.autointerp.backends import (
    BackendError,
    BackendUnavailableError,
    LLMBackend,
    MissingKeyError,
    get_backend,
    parse_explanation,
    parse_logit_labels,
    parse_simulation,
)
from mono_utils.autointerp.protocol import EvalCorpus, ParseFailure
from mono_utils.autointerp.run import ArraySource, score_units, summarize

KEY = "sk-test-SECRET-7f3a9c1e5b"


# ---------------------------------------------------------------- the stub server
def stub_llm(system: str, user: str) -> str:
    if "Predict the unit's activation" in system:
        out = {}
        for num, toks in re.findall(r"^(\d+): (\[.*\])$", user, flags=re.M):
            out[num] = [9 if t == " w7" else 0 for t in json.loads(toks)]
        return "```json\n" + json.dumps(out) + "\n```"
    if "About half of the listed tokens" in system:
        n = len(re.findall(r"^\d+\. ", user, flags=re.M))
        return json.dumps({"plausible": list(range(1, n // 2 + 1))})
    return "The unit fires on one word.\nExplanation: the word w7."


class Stub:
    def __init__(self):
        self.script: list[str] = []      # actions for the next requests: ok, 429, 500, 401, slow, malformed, badjson
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with stub.lock:
                    action = stub.script.pop(0) if stub.script else "ok"
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    stub.requests.append({"path": self.path, "action": action,
                                          "auth": self.headers.get("x-api-key") or self.headers.get("authorization")})
                try:
                    time.sleep(stub.delay + (2.0 if action == "slow" else 0))
                    self.respond(body, action)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

            def send(self, code, obj, headers=()):
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def respond(self, body, action):
                anthropic = self.path.endswith("/messages")
                if action in ("429", "500", "401"):
                    kind = {"429": "rate_limit_error", "500": "api_error", "401": "authentication_error"}[action]
                    err = {"type": "error", "error": {"type": kind, "message": f"stub {action}"}}
                    return self.send(int(action), err, [("retry-after", "0")] if action == "429" else [])
                if action == "badjson":
                    return self.send(200, b"<html>not json</html>")
                if anthropic:
                    system = body.get("system", "")
                    user = body["messages"][-1]["content"]
                else:
                    system = body["messages"][0]["content"]
                    user = body["messages"][-1]["content"]
                text = "I am not sure what you mean." if action == "malformed" else stub_llm(system, user)
                if anthropic:
                    return self.send(200, {"id": "msg_stub", "type": "message", "role": "assistant",
                                           "model": body["model"], "content": [{"type": "text", "text": text}],
                                           "stop_reason": "end_turn", "stop_sequence": None,
                                           "usage": {"input_tokens": 11, "output_tokens": 7}})
                return self.send(200, {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0,
                                       "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": text}}],
                                       "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub():
    s = Stub()
    yield s
    s.close()


@pytest.fixture()
def keys(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("MONO_AUTOINTERP_MODEL", raising=False)


def backend(provider, stub, tmp_path, **kw):
    url = f"http://127.0.0.1:{stub.port}" + ("/v1" if provider == "openai" else "")
    opts = dict(base_url=url, cache_dir=tmp_path / "cache", backoff=0.01, max_backoff=0.05, timeout=5.0,
                max_retries=3, concurrency=2)
    opts.update(kw)
    return get_backend(provider, **opts)


def planted_source(units=3):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 120, (300, 24))
    corpus = EvalCorpus(tokens, [f" w{i}" for i in range(120)])
    acts = {}
    for u in range(units):
        acts[u] = np.where(tokens == 7, 3.0 + u, 0.0).astype(np.float32)
    return ArraySource(corpus, acts, rng.normal(size=(units, 120)))


# ---------------------------------------------------------------- end to end through both SDKs
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_end_to_end_and_cache(provider, stub, keys, tmp_path, capsys):
    b = backend(provider, stub, tmp_path)
    src = planted_source()
    df = score_units(src, [0, 1, 2], b, progress=False)
    assert (df.status == "ok").all(), df.status.tolist()
    assert (df.spearman > 0.9).all()
    assert df.explanation[0] == "the word w7."
    assert df.logit_accuracy.notna().all()
    # 4 calls per unit: explain, simulate, simulate the detection contexts, label the logits
    assert len(stub.requests) == 12 and b.stats["calls"] == 12
    assert all(r["auth"] in (KEY, f"Bearer {KEY}") for r in stub.requests)      # the key reaches the server
    assert ("/v1/messages" if provider == "anthropic" else "/v1/chat/completions") in stub.requests[0]["path"]
    assert "about 12 calls" in capsys.readouterr().out          # the estimate is shown before the run
    # a rerun costs nothing: every reply comes from the cache
    b2 = backend(provider, stub, tmp_path)
    df2 = score_units(src, [0, 1, 2], b2, progress=False)
    assert len(stub.requests) == 12 and b2.stats["cache_hits"] == 12
    assert df2.drop(columns=[]).equals(df)


def test_retries_on_429_and_500(stub, keys, tmp_path):
    b = backend("anthropic", stub, tmp_path)
    stub.script = ["429", "500", "ok"]
    assert parse_explanation(b.complete("sys", [{"role": "user", "content": "hi"}])) == "the word w7."
    assert [r["action"] for r in stub.requests] == ["429", "500", "ok"]
    assert b.stats["retries"] == 2


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_slow_reply_times_out_and_is_retried(provider, stub, keys, tmp_path):
    b = backend(provider, stub, tmp_path, timeout=0.5)
    stub.script = ["slow", "ok"]
    t = time.time()
    b.complete("sys", [{"role": "user", "content": "hi"}])
    assert time.time() - t < 2.0                        # did not wait for the slow reply
    assert b.stats["retries"] == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_malformed_replies_are_counted_failures(provider, stub, keys, tmp_path):
    b = backend(provider, stub, tmp_path, concurrency=1)
    src = planted_source(2)
    # unit 0: explanation fine, simulation malformed; unit 1: the explanation itself is malformed
    stub.script = ["ok", "malformed", "ok", "malformed"]
    df = score_units(src, [0, 1], b, progress=False, verbose=False)
    assert df.status.str.startswith("failed").all()
    assert summarize(df)["failed"] == 2 and b.stats["parse_failures"] == 2
    # a body that is not JSON at all is a failure too, never a crash
    stub.script = ["badjson"]
    with pytest.raises(ParseFailure):
        backend(provider, stub, tmp_path / "other").explain(src_explain_input(src))


def src_explain_input(src):
    from mono_utils.autointerp.protocol import explain_input, select_examples
    return explain_input(select_examples(src.unit_acts(0), src.corpus), src.corpus.vocab_strs)


def test_bounded_concurrency(stub, keys, tmp_path):
    stub.delay = 0.15
    b = backend("openai", stub, tmp_path, concurrency=2)
    score_units(planted_source(5), list(range(5)), b, progress=False, verbose=False)
    assert stub.max_in_flight == 2


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_unreachable_endpoint_clear_error_after_retries(provider, keys, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                            # nothing listens there now
    b = get_backend(provider, base_url=f"http://127.0.0.1:{port}", cache_dir=tmp_path, backoff=0.01,
                    max_retries=2, timeout=2)
    with pytest.raises(BackendUnavailableError, match=rf"127\.0\.0\.1:{port}.*after 3 attempts"):
        b.complete("sys", [{"role": "user", "content": "hi"}])
    assert b.stats["calls"] == 3


def test_persistent_500_gives_up(stub, keys, tmp_path):
    b = backend("openai", stub, tmp_path, max_retries=2)
    stub.script = ["500"] * 10
    with pytest.raises(BackendUnavailableError, match="HTTP 500"):
        b.complete("sys", [{"role": "user", "content": "hi"}])
    assert len(stub.requests) == 3


def test_bad_key_is_not_retried(stub, keys, tmp_path):
    b = backend("anthropic", stub, tmp_path)
    stub.script = ["401"]
    with pytest.raises(BackendError, match="401.*ANTHROPIC_API_KEY"):
        b.complete("sys", [{"role": "user", "content": "hi"}])
    assert len(stub.requests) == 1


@pytest.mark.parametrize("provider,var", [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")])
def test_missing_key_names_the_variable(provider, var, monkeypatch, tmp_path):
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(MissingKeyError, match=var):
        get_backend(provider, cache_dir=tmp_path)


def test_local_server_without_key(stub, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = backend("openai", stub, tmp_path, api_key_env=None)
    assert "w7" in b.complete("sys", [{"role": "user", "content": "hi"}])


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown autointerp backend"):
        get_backend("claude")


# ---------------------------------------------------------------- keys are never written
def test_no_key_in_any_written_file(stub, keys, tmp_path, capsys, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    for provider in ("anthropic", "openai"):
        b = backend(provider, stub, tmp_path / provider)
        stub.script = ["429", "500", "ok", "malformed"]
        df = score_units(planted_source(2), [0, 1], b, progress=False)
        df.to_csv(tmp_path / f"{provider}.csv")
        df.to_json(tmp_path / f"{provider}.json")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + caplog.text


# ---------------------------------------------------------------- parsing
def test_parsers():
    assert parse_simulation('Sure!\n```json\n{"1": [0, 3], "2": [9]}\n```', [2, 1]) == [[0, 3], [9]]
    # out of 0-9 (10 tolerated), not a JSON number, or not finite: a failure, no longer clipped or cast
    for bad in ('{"1": [0]}', '{"1": [0, 1], "2": ["x"]}', "no json", "{1: 2}", '[1, 2]', '{"1": [0, 30], "2": [1]}',
                '{"1": [0, 1], "2": [-1]}', '{"1": [0, "7"], "2": [1]}', '{"1": [0, true], "2": [1]}',
                '{"1": [0, NaN], "2": [1]}', '{"1": [0, 1e308], "2": [1]}'):
        with pytest.raises(ParseFailure):
            parse_simulation(bad, [2, 1])
    assert parse_logit_labels('{"plausible": [1, 3]}', 3) == [True, False, True]
    with pytest.raises(ParseFailure):
        parse_logit_labels('{"plausible": [4]}', 3)
    assert parse_explanation("thinking...\nexplanation: Arabic text") == "Arabic text"
    with pytest.raises(ParseFailure):
        parse_explanation("I cannot tell.")


def test_estimate(keys, tmp_path):
    b = LLMBackend("anthropic", cache_dir=tmp_path)
    from mono_utils.autointerp.run import estimate_run
    est = estimate_run(planted_source(), [0, 1, 2], b)
    assert est["calls"] == 9 and est["input_tokens"] > 3 * 1000
    assert not list(Path(tmp_path).rglob("*.json"))      # estimating makes no calls
