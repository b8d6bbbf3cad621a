"""LLM backends for autointerp: the Anthropic Messages API and any OpenAI-compatible endpoint.

Both speak the interface of :class:`mono_utils.autointerp_offline.OfflineBackend`
(``explain``, ``simulate``, ``label_logits``, ``estimate``). Prompts are template files with
few-shot demonstrations in ``mono_utils/prompts/``. Every call goes through
:meth:`LLMBackend.complete`, which

* answers from an on-disk JSON cache keyed by the hash of the full request, the endpoint's
  base URL included (a rerun costs nothing; entries are written atomically and hold no key
  or header; caches stay on the machine: bundles never carry them);
* otherwise calls the API with a timeout that bounds the *whole* call (a server that drips
  a byte a second is cut off after ``timeout`` seconds, not kept alive read by read),
  retrying with exponential backoff (and the server's ``retry-after``) on 429, 408/409, 5xx,
  timeouts and refused connections, and raises :class:`BackendUnavailableError` naming the
  endpoint once the retries are spent;
* fails at once, clearly, on other 4xx replies (a bad key, an unknown model).

A reply that cannot be parsed (bytes that are not UTF-8, JSON of the wrong shape, an HTML
page with status 200, a reply longer than ``MAX_REPLY_CHARS``, a reply body over
``MAX_REPLY_BYTES`` (counted as it arrives: an endless stream is cut off there, not read until the
timeout), text without the expected answer) raises :class:`~mono_utils.autointerp.ParseFailure` naming the endpoint, which the
runner counts as a failed unit; such a reply is never cached, so the next run asks again.
API keys are read from the environment only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import string
import threading
import time
from pathlib import Path

from ..store.artifacts import atomic_write_json, canonical_json, default_root
from .offline import OfflineBackend
from .protocol import ExplainInput, LogitInput, OutputExplainInput, ParseFailure, SimulateInput, check_predictions

log = logging.getLogger("mono_utils.autointerp")
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PROVIDERS = {
    # provider: (default model, key variable, default base url)
    "anthropic": ("claude-sonnet-5", "ANTHROPIC_API_KEY", None),
    "openai": ("gpt-4o-mini", "OPENAI_API_KEY", None),
}
MODEL_ENV = "MONO_AUTOINTERP_MODEL"
RETRY_STATUS = {408, 409, 429}
MAX_REPLY_CHARS = 100_000   # a reply longer than this is a failure (and not cached)
# The HTTP body is counted as it arrives and the read stops here: 100 000 characters JSON-escaped
# (\uXXXX: 6 bytes each) plus the envelope fit well inside; an endless stream stops here.
MAX_REPLY_BYTES = 2 * 2**20


class MissingKeyError(ValueError):
    """The API key variable is not set."""


class BackendError(RuntimeError):
    """The API refused a request for a reason retries cannot fix (bad key, unknown model...)."""


class BackendUnavailableError(ConnectionError):
    """The endpoint did not answer successfully after all retries."""


class _WholeCallTimeout(Exception):
    """A call took longer than the backend's timeout in all (however fast each read was)."""


class _ReplyTooLarge(Exception):
    """The reply's body passed ``MAX_REPLY_BYTES`` while it was being read (the read was stopped)."""


def _capped_stream(stream, limit: int):
    """``stream`` (an httpx2 byte stream) that raises :class:`_ReplyTooLarge` once ``limit`` bytes came."""
    import httpx2  # lazy: only LLM runs need it (both SDKs read replies through it)

    class Capped(httpx2.SyncByteStream):
        def __iter__(self):
            n = 0
            for chunk in stream:
                n += len(chunk)
                if n > limit:
                    raise _ReplyTooLarge(f"the reply passed {limit} bytes (the cap on a reply's size) and was "
                                         f"cut off there")
                yield chunk

        def close(self):
            stream.close()
    return Capped()


def _cap_reply(response) -> None:
    """An httpx response hook (run before the body is read): bound the bytes a reply may hold."""
    enc = response.headers.get("content-encoding", "identity").strip().lower()
    if enc not in ("", "identity"):   # a compressed body could inflate past any cap on the bytes read
        raise _ReplyTooLarge(f"the reply is compressed ({enc}) although an uncompressed one was asked for")
    size = response.headers.get("content-length")
    if size is not None and size.strip().isdigit() and int(size) > MAX_REPLY_BYTES:
        raise _ReplyTooLarge(f"the reply announces {int(size)} bytes, over the {MAX_REPLY_BYTES}-byte cap on a reply")
    response.stream = _capped_stream(response.stream, MAX_REPLY_BYTES)


def _ask_uncompressed(request) -> None:
    """An httpx request hook: ask for an uncompressed reply, so that the bytes counted are the bytes held."""
    request.headers["accept-encoding"] = "identity"


def _too_large(e: BaseException | None) -> _ReplyTooLarge | None:
    """The :class:`_ReplyTooLarge` behind ``e`` (the SDKs wrap it as a connection error), if any."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, _ReplyTooLarge):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


# ---------------------------------------------------------------- prompts
def _template(name: str) -> string.Template:
    return string.Template((PROMPTS_DIR / name).read_text(encoding="utf-8"))


def _demos(name: str) -> list[dict]:
    return json.loads((PROMPTS_DIR / name).read_text(encoding="utf-8"))


def show_token(tok: str) -> str:
    """A token as printed in an explanation prompt (newlines and tabs made visible)."""
    return tok.replace("\n", "\u21b5").replace("\t", "\u21e5")


def render_example(tokens: list[str], acts: list[int]) -> str:
    """Text with each active token marked as ``«token:7»``."""
    return "".join(f"\u00ab{show_token(t)}:{a}\u00bb" if a > 0 else show_token(t) for t, a in zip(tokens, acts))


def render_explain(inp: ExplainInput) -> str:
    blocks = [f"Example {i} ({ex['label']}): {render_example(ex['tokens'], ex['acts'])}"
              for i, ex in enumerate(inp.examples, 1)]
    fmt = lambda toks: ", ".join(json.dumps(t, ensure_ascii=False) for t in toks) or "(not available)"
    return _template("explain_user.txt").substitute(
        examples="\n".join(blocks), top_logits=fmt(inp.top_logits), bottom_logits=fmt(inp.bottom_logits))


def render_explain_output(inp: OutputExplainInput) -> str:
    """The output-side explainer's prompt: logit weights and measured next-token effects, no activations."""
    q = lambda t: json.dumps(t, ensure_ascii=False)  # noqa: E731
    levelled = lambda pairs: ", ".join(f"{q(t)} ({int(m)})" for t, m in pairs) or "(none measured)"  # noqa: E731
    return _template("explain_output_user.txt").substitute(
        top_logits=levelled(zip(inp.top_logits, inp.top_levels)) if inp.top_logits else "(not available)",
        bottom_logits=", ".join(q(t) for t in inp.bottom_logits) or "(not available)",
        contexts=int(inp.contexts), helped=levelled(inp.helped), hurt=levelled(inp.hurt))


def render_simulate(inp: SimulateInput) -> str:
    lines = [f"{i}: {json.dumps(toks, ensure_ascii=False)}" for i, toks in enumerate(inp.examples, 1)]
    return _template("simulate_user.txt").substitute(explanation=inp.explanation, examples="\n".join(lines))


def render_logits(inp: LogitInput) -> str:
    lines = [f"{i}. {json.dumps(t, ensure_ascii=False)}" for i, t in enumerate(inp.tokens, 1)]
    return _template("logits_user.txt").substitute(explanation=inp.explanation, tokens="\n".join(lines))


def build_messages(task: str, inp) -> tuple[str, list[dict]]:
    """(system prompt, messages with the few-shot demonstrations first) for a task."""
    render = {"explain": render_explain, "simulate": render_simulate, "logits": render_logits,
              "explain_output": render_explain_output}[task]
    cls = {"explain": ExplainInput, "simulate": SimulateInput, "logits": LogitInput,
           "explain_output": OutputExplainInput}[task]
    system = (PROMPTS_DIR / f"{task}_system.txt").read_text(encoding="utf-8").strip()
    messages = []
    for demo in _demos(f"{task}_demos.json"):
        messages.append({"role": "user", "content": render(cls(**demo["input"]))})
        answer = demo["answer"]
        messages.append({"role": "assistant", "content": answer if isinstance(answer, str) else json.dumps(answer)})
    messages.append({"role": "user", "content": render(inp)})
    return system, messages


# ---------------------------------------------------------------- parsing
def parse_explanation(text: str) -> str:
    found = [m.group(1).strip() for m in re.finditer(r"(?im)^\W*explanation\W*:\s*(.+)$", text or "")]
    if not found or not found[-1]:
        raise ParseFailure("the reply has no 'Explanation: ...' line")
    return found[-1][:1000]


def _json_object(text: str) -> dict:
    text = re.sub(r"```(?:json)?", "", text or "")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ParseFailure("the reply holds no JSON object")
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ParseFailure(f"the reply's JSON does not parse ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ParseFailure("the reply's JSON is not an object")
    return obj


def parse_simulation(text: str, lengths: list[int]) -> list[list[float]]:
    obj = _json_object(text)
    out = []
    for i, n in enumerate(lengths, 1):
        vals = obj.get(str(i))
        if not isinstance(vals, list) or len(vals) != n:
            raise ParseFailure(f"example {i}: expected a list of {n} numbers, got {str(vals)[:60]}")
        # numbers 0-9 as JSON numbers: "7", true, NaN, -5 or 1e308 are refused (they used to be cast and clamped)
        out.append(check_predictions(vals, f"example {i}").tolist())
    return out


def parse_logit_labels(text: str, n: int) -> list[bool]:
    picks = _json_object(text).get("plausible")
    if not isinstance(picks, list) or not all(isinstance(p, int) and 1 <= p <= n for p in picks):
        raise ParseFailure(f"'plausible' must be a list of token numbers 1-{n}")
    chosen = set(picks)
    return [i in chosen for i in range(1, n + 1)]


# ---------------------------------------------------------------- cache
class DiskCache:
    """One JSON file per request, named by the request's sha256; writes are atomic."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self._path(key)
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
            return rec if rec.get("key") == key and isinstance(rec.get("text"), str) else None
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict) -> None:
        atomic_write_json(self._path(key), {"key": key, **record})

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


def default_cache_dir() -> Path:
    return default_root() / "autointerp-cache"


# ---------------------------------------------------------------- the backend
class LLMBackend:
    """An LLM explainer/simulator over the Anthropic or an OpenAI-compatible API."""

    def __init__(self, provider: str = "anthropic", model: str | None = None, *, base_url: str | None = None,
                 api_key_env: str | None = "default", cache_dir: str | Path | None = None, concurrency: int = 4,
                 max_retries: int = 4, timeout: float = 60.0, backoff: float = 1.0, max_backoff: float = 30.0,
                 max_tokens: int = 1024, temperature: float | None = None, seed: int = 0):
        if provider not in PROVIDERS:
            raise ValueError(f"unknown LLM provider {provider!r}: choose one of {sorted(PROVIDERS)}")
        default_model, default_env, default_url = PROVIDERS[provider]
        self.provider, self.name = provider, provider
        self.model = model or os.environ.get(MODEL_ENV) or default_model
        self.base_url = base_url or default_url
        self.api_key_env = default_env if api_key_env == "default" else api_key_env
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise MissingKeyError(
                f"the {provider} backend needs an API key in the environment variable {self.api_key_env}, "
                f"which is not set: `export {self.api_key_env}=...` before starting Python/Jupyter (keys are "
                f"never read from files or arguments), or use backend='offline'"
                + (" (a local server that needs no key: pass api_key_env=None)" if provider == "openai" else ""))
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, timeout
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_tokens, self.temperature = max_tokens, temperature
        self.cache = DiskCache(cache_dir if cache_dir is not None else default_cache_dir())
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._client = None
        self._ssl = None
        self.stats = {"calls": 0, "cache_hits": 0, "retries": 0, "parse_failures": 0,
                      "input_tokens": 0, "output_tokens": 0}

    # -- plumbing
    def _count(self, **kv):
        with self._lock:
            for k, v in kv.items():
                self.stats[k] += v

    def _make_client(self):
        key = os.environ.get(self.api_key_env) if self.api_key_env else "no-key-needed"
        if not key:
            raise MissingKeyError(f"{self.api_key_env} is not set (it was unset after the backend was made)")
        with self._lock:   # one TLS context for all clients: making one per client costs ~28 ms, sharing ~2 ms
            if self._ssl is None:
                import httpx  # lazy: only LLM runs need it
                self._ssl = httpx.create_ssl_context(trust_env=True)
        if self.provider == "anthropic":
            import anthropic as sdk  # lazy: the SDKs are heavy and only LLM runs need them
            cls = sdk.Anthropic
        else:
            import openai as sdk
            cls = sdk.OpenAI
        hooks = {"request": [_ask_uncompressed], "response": [_cap_reply]}   # bytes read are bounded
        return cls(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout,
                   http_client=sdk.DefaultHttpxClient(verify=self._ssl, event_hooks=hooks))

    def client(self):
        """A shared SDK client (each call of :meth:`complete` uses its own, so that it can be cut off)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def request_key(self, system: str, messages: list[dict], max_tokens: int) -> str:
        req = {"provider": self.provider, "model": self.model, "system": system, "messages": messages,
               "max_tokens": max_tokens, "temperature": self.temperature}
        if self.base_url:   # two servers never share replies (left out for the default URL: old keys stay valid)
            req["base_url"] = self.base_url
        return hashlib.sha256(canonical_json(req).encode()).hexdigest()

    def _bounded_request(self, system, messages, max_tokens) -> tuple[str, dict]:
        """:meth:`_request` on a fresh client in a worker thread, given up after ``timeout`` seconds in all.

        The SDKs' own timeout applies to each read, so a server that drips a byte a second
        would keep a call alive for minutes; here the call is abandoned at the deadline and its
        client closed (the worker thread then ends at its next read).
        """
        c = self._make_client()
        box: dict = {}

        def run():
            try:
                box["ok"] = self._request(system, messages, max_tokens, c)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["err"] = _too_large(e) or e
        t = threading.Thread(target=run, name="mono-llm-call", daemon=True)
        t.start()
        t.join(self.timeout)
        if t.is_alive():
            with contextlib.suppress(Exception):
                c.close()
            raise _WholeCallTimeout(f"no complete reply within {self.timeout:g}s")
        with contextlib.suppress(Exception):
            c.close()
        err = box.pop("err", None)
        if err is not None:
            raise err
        return box.pop("ok")

    def _request(self, system, messages, max_tokens, client=None) -> tuple[str, dict]:
        c = client if client is not None else self.client()
        if self.provider == "anthropic":
            extra = {"extra_body": {"temperature": self.temperature}} if self.temperature is not None else {}
            r = c.messages.create(model=self.model, max_tokens=max_tokens, system=system, messages=messages, **extra)
            text = "".join(getattr(b, "text", "") for b in (r.content or []))
            u = getattr(r, "usage", None)
            usage = {"input_tokens": getattr(u, "input_tokens", 0) or 0,
                     "output_tokens": getattr(u, "output_tokens", 0) or 0}
        else:
            extra = {"temperature": self.temperature} if self.temperature is not None else {}
            r = c.chat.completions.create(model=self.model, max_tokens=max_tokens,
                                          messages=[{"role": "system", "content": system}, *messages], **extra)
            if not getattr(r, "choices", None):
                raise ParseFailure("the reply has no choices")
            text = r.choices[0].message.content or ""
            u = getattr(r, "usage", None)
            usage = {"input_tokens": getattr(u, "prompt_tokens", 0) or 0,
                     "output_tokens": getattr(u, "completion_tokens", 0) or 0}
        if not isinstance(text, str):
            raise TypeError(f"the reply's text is {type(text).__name__}")
        return text, usage

    def _where(self) -> str:
        return f"{self.provider} endpoint {self.base_url or '(the provider default)'} (model {self.model!r})"

    def complete(self, system: str, messages: list[dict], max_tokens: int | None = None, parse=None):
        """The reply to a request, from the cache, else from the API with retries.

        With ``parse`` (a parser raising :class:`ParseFailure`) the parsed reply is returned, and
        a reply that does not parse is counted, raised and *not* cached (a cached entry that does
        not parse, left by an older version, is asked again). Without it, the reply text.
        """
        max_tokens = max_tokens or self.max_tokens
        key = self.request_key(system, messages, max_tokens)
        hit = self.cache.get(key)
        if hit is not None:
            try:
                value = parse(hit["text"]) if parse is not None else hit["text"]
            except ParseFailure:
                value = hit = None
            if hit is not None:
                self._count(cache_hits=1)
                return value
        import anthropic  # lazy: optional backend
        import openai  # lazy: optional backend
        status_errors = (anthropic.APIStatusError, openai.APIStatusError)
        conn_errors = (anthropic.APIConnectionError, openai.APIConnectionError)
        invalid = (anthropic.APIResponseValidationError, openai.APIResponseValidationError)
        # what a reply that is not the API's format raises inside the SDKs or _request
        not_the_format = (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, KeyError,
                          IndexError, ValueError, *invalid)
        last = None
        for attempt in range(self.max_retries + 1):
            self._count(calls=1)
            try:
                text, usage = self._bounded_request(system, messages, max_tokens)
            except MissingKeyError:
                raise
            except _WholeCallTimeout as e:
                last, retry_after = str(e), None
            except _ReplyTooLarge as e:
                self._count(parse_failures=1)
                raise ParseFailure(f"{self._where()}: {e}: counted as a failed unit, not cached (a reply "
                                   f"is at most {MAX_REPLY_CHARS} characters)") from None
            except status_errors as e:
                code = e.status_code
                if code not in RETRY_STATUS and code < 500:
                    hint = (f"check the key in {self.api_key_env}" if code in (401, 403) else
                            "check the model name and the request" if code in (400, 404, 422) else "")
                    raise BackendError(f"{self._where()} refused the request with HTTP {code}"
                                       f"{': ' + hint if hint else ''}") from None
                last, retry_after = f"HTTP {code}", _retry_after(e)
            except conn_errors as e:
                last, retry_after = type(e).__name__, None
            except not_the_format as e:
                self._count(parse_failures=1)
                raise ParseFailure(f"{self._where()} sent a reply that is not the API's format "
                                   f"({type(e).__name__}): counted as a failed unit; check that base_url "
                                   f"points at an {self.provider}-compatible API") from None
            else:
                self._count(input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"])
                if len(text) > MAX_REPLY_CHARS:
                    self._count(parse_failures=1)
                    raise ParseFailure(f"{self._where()}: the reply of {len(text)} characters is longer than the "
                                       f"{MAX_REPLY_CHARS}-character cap on a reply: counted as a failed unit, not "
                                       f"cached")
                value = text
                if parse is not None:
                    try:
                        value = parse(text)
                    except ParseFailure as e:
                        self._count(parse_failures=1)
                        raise ParseFailure(f"{e} (reply from {self._where()}; not cached)") from None
                self.cache.put(key, {"provider": self.provider, "model": self.model, "text": text,
                                     "usage": usage, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
                return value
            if attempt < self.max_retries:
                self._count(retries=1)
                with self._lock:
                    jitter = 0.5 + self._rng.random() / 2
                delay = min(self.max_backoff, retry_after if retry_after is not None
                            else self.backoff * 2 ** attempt * jitter)
                log.warning("%s: %s, retry %d/%d in %.2fs", self._where(), last, attempt + 1,
                            self.max_retries, delay)
                time.sleep(delay)
        raise BackendUnavailableError(
            f"{self._where()} did not answer after {self.max_retries + 1} attempts (last: {last}). Check that "
            f"the server is running and the URL is right (for a local server, base_url like "
            f"http://127.0.0.1:8000/v1), wait and rerun (finished calls are cached), or use backend='offline'")

    # -- the autointerp interface
    def _ask(self, task, inp, parse, max_tokens=None):
        system, messages = build_messages(task, inp)
        return self.complete(system, messages, max_tokens, parse=parse)

    def explain(self, inp: ExplainInput) -> str:
        return self._ask("explain", inp, parse_explanation)

    def explain_output(self, inp: OutputExplainInput) -> str:
        """An explanation of what the unit does (``autointerp.output_side``), from its logits and measured effects."""
        return self._ask("explain_output", inp, parse_explanation)

    def simulate(self, inp: SimulateInput) -> list[list[float]]:
        budget = max(self.max_tokens, 4 * sum(len(x) for x in inp.examples) + 200)
        lengths = [len(x) for x in inp.examples]
        return self._ask("simulate", inp, lambda text: parse_simulation(text, lengths), budget)

    def label_logits(self, inp: LogitInput) -> list[bool]:
        return self._ask("logits", inp, lambda text: parse_logit_labels(text, len(inp.tokens)))

    def estimate(self, n_units: int, samples: list[tuple] = ()) -> dict:
        """Calls and (rough, chars/4) tokens for ``n_units``, from sample (explain, sim, logit) inputs."""
        per_in, per_out, cached = [], [], 0
        for ex, sim, lg in samples:
            chars = 0
            for task, inp in (("explain", ex), ("simulate", sim), ("logits", lg)):
                system, messages = build_messages(task, inp)
                chars += len(system) + sum(len(m["content"]) for m in messages)
                if task == "explain" and self.request_key(system, messages, self.max_tokens) in self.cache:
                    cached += 1
            per_in.append(chars / 4)
            per_out.append(300 + 4 * sum(len(x) for x in sim.examples) + 200)
        k = max(1, len(samples))
        return {"backend": self.provider, "model": self.model, "units": n_units, "calls": 3 * n_units,
                "input_tokens": int(sum(per_in) / k * n_units), "output_tokens_max": int(sum(per_out) / k * n_units),
                "explain_prompts_cached_in_sample": f"{cached}/{len(samples)}",
                "note": "tokens are estimated as characters / 4; cached calls cost nothing"}


def _retry_after(e) -> float | None:
    try:
        v = e.response.headers.get("retry-after")
        return max(0.0, float(v)) if v is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


BACKENDS = ("offline", "anthropic", "openai")


def get_backend(name: str = "offline", **kwargs):
    """``"offline"`` (default, no network), ``"anthropic"`` or ``"openai"`` (any compatible base_url)."""
    if name == "offline":
        return OfflineBackend(**kwargs)
    if name in PROVIDERS:
        return LLMBackend(name, **kwargs)
    raise ValueError(f"unknown autointerp backend {name!r}: choose one of {', '.join(BACKENDS)} "
                     f"(an OpenAI-compatible local server such as vLLM, Ollama or llama.cpp is "
                     f"backend='openai' with base_url=...)")
