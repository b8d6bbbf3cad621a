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
