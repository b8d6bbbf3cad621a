"""Run code in a student's kernel on the class server, through the server's REST and websocket API
(what JupyterLab does when a student presses Run), and measure what each student's processes use."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import psutil
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


def start_session(base: str, user: str, token: str, path: str) -> str:
    """Open a kernel for the notebook at ``path`` (relative to the student's home); returns its id."""
    r = requests.post(f"{base}/user/{user}/api/sessions", headers={"Authorization": f"token {token}"},
                      json={"path": path, "type": "notebook", "name": path.rsplit("/", 1)[-1],
                            "kernel": {"name": "python3"}}, timeout=120)
    r.raise_for_status()
    return r.json()["kernel"]["id"]


async def _run_cells(base: str, user: str, token: str, kernel_id: str, sources: list[str], timeout: float):
    url = base.replace("http", "ws", 1) + f"/user/{user}/api/kernels/{kernel_id}/channels"
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}),
                                 max_message_size=256 * 2**20)
    results = []
    try:
        for source in sources:
            msg_id = uuid.uuid4().hex
            await ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": source, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            cell = {"status": None, "stdout": "", "error": None}
            reply = idle = False
            deadline = time.time() + timeout
            while not (reply and idle):
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"{user}: a cell ran past {timeout:.0f} s:\n{source[:300]}")
                raw = await asyncio.wait_for(ws.read_message(), left)
                if raw is None:
                    raise ConnectionError(f"{user}: the kernel's websocket closed")
                if isinstance(raw, bytes):   # a binary frame (widget buffers): not a reply to wait for
                    continue
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "execute_reply":
                    reply, cell["status"] = True, msg["content"]["status"]
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
                elif kind == "stream":
                    cell["stdout"] += msg["content"]["text"]
                elif kind == "error":
                    cell["error"] = f"{msg['content']['ename']}: {msg['content']['evalue']}"
            results.append(cell)
            if cell["status"] != "ok":
                break
    finally:
        ws.close()
    return results


def run_cells(base: str, user: str, token: str, kernel_id: str, sources: list[str],
              timeout: float = 900) -> list[dict]:
    """Execute ``sources`` one after the other; stops at the first error (as Run All does)."""
    return asyncio.run(_run_cells(base, user, token, kernel_id, sources, timeout))


class UserSampler:
    """Every ``every`` seconds: the resident memory (RSS, and PSS, which splits shared pages fairly)
    of all processes of each user, their peaks, and each user's CPU seconds."""

    def __init__(self, users: list[str], every: float = 0.5):
        self.users, self.every = users, every
        self.peak_rss = dict.fromkeys(users, 0)
        self.peak_pss = dict.fromkeys(users, 0)
        self._cpu = {u: {} for u in users}       # user -> pid -> last CPU seconds seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> dict:
        now = {u: [0, 0] for u in self.users}
        for p in psutil.process_iter(["username"]):
            user = p.info["username"]
            if user not in now:
                continue
            try:
                mem = p.memory_full_info()
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            now[user][0] += mem.rss
            now[user][1] += getattr(mem, "pss", mem.rss)
            self._cpu[user][p.pid] = t.user + t.system + t.children_user + t.children_system
        for u, (rss, pss) in now.items():
            self.peak_rss[u] = max(self.peak_rss[u], rss)
            self.peak_pss[u] = max(self.peak_pss[u], pss)
        return now

    def cpu_seconds(self) -> dict:
        return {u: sum(v.values()) for u, v in self._cpu.items()}

    def _loop(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
