"""Local HTTP servers that stand in for a misbehaving LLM endpoint (shared by the reliability tests)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ReplyServer:
    """127.0.0.1 on a free port; every POST is answered by ``reply(handler)``, which writes by hand.

    ``url`` is its address, ``requests`` counts the POSTs; use it as a context manager or ``close()``.
    """

    def __init__(self, reply):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                server.requests += 1
                reply(self)
        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send(handler, body: bytes, ctype: str = "application/json", status: int = 200) -> None:
    """Answer with ``status``, a content type and ``body`` (any bytes, UTF-8 or not)."""
    handler.send_response(status)
    handler.send_header("content-type", ctype)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def chat_completion(text: str) -> bytes:
    """An OpenAI chat-completions reply whose message is ``text``."""
    return json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
