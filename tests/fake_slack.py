"""A fake Slack on loopback: answers like an incoming webhook and chat.postMessage, records all."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

WEBHOOK_PATH = "/services/T000/B000/XXXXXXXX"


class FakeSlack(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []  # accepted messages
        self.attempts: list[dict[str, Any]] = []  # every request, answered or not
        self.script: list[tuple[int, dict[str, str]]] = []  # answers to give first

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    def answer_next(self, status: int, times: int = 1, **headers: str) -> None:
        """Answer the next `times` requests with `status` (and headers) instead of success."""
        with self.lock:
            self.script += [(status, headers)] * times

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.attempts.clear()
            self.script.clear()

    def wait_for(self, count: int, timeout: float = 30) -> list[dict]:
        """Wait until `count` messages arrived; return all received (proving that no more come
        is the sender's part: wait until its worker is idle)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} Slack messages arrived")
            time.sleep(0.05)
        return list(self.received)


class _Handler(BaseHTTPRequestHandler):
    server: FakeSlack

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = _decode(body, self.headers.get("Content-Type", ""))
        request = {"path": self.path, "payload": payload, "headers": dict(self.headers)}
        with self.server.lock:
            self.server.attempts.append(request)
            status, headers = self.server.script.pop(0) if self.server.script else (200, {})
            if status == 200:
                self.server.received.append(request)
        api = self.path.startswith("/api/")
        if status == 200:
            answer = json.dumps({"ok": True, "ts": "1.0"}).encode() if api else b"ok"
        elif api:
            error = "ratelimited" if status == 429 else "fatal_error"
            answer = json.dumps({"ok": False, "error": error}).encode()
        else:
            answer = b"rate_limited" if status == 429 else b"internal_error"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Type", "application/json" if api else "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def _decode(body: bytes, content_type: str) -> dict[str, Any]:
    if "json" in content_type:
        return json.loads(body)
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


@contextmanager
def fake_slack() -> Iterator[FakeSlack]:
    server = FakeSlack()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
