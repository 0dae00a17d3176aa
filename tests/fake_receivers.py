"""A fake receiver of posts on loopback (a Discord webhook, a team's webhook): answers 2xx, 429,
5xx or is down on demand, and records every request it got, raw body included (signatures)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    """One request the receiver got: its path (with query), headers, raw body, JSON (or None)."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float
    status: int  # what it was answered

    def header(self, name: str) -> str | None:
        """Return a header by its name, whatever its case."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str]


class FakeReceiver:
    """A receiver of posts. Ask it to answer differently (`answer_next`, `answer_always`), to be
    down (connections refused: `down`, then `up` on the same port), and read what it got:
    `received` (accepted: 2xx) and `attempts` (every request)."""

    def __init__(self, ok_status: int = 204, ok_body: bytes = b"") -> None:
        self.ok = _Answer(ok_status, ok_body, {})
        self.lock = threading.Lock()
        self.received: list[Post] = []
        self.attempts: list[Post] = []
        self._script: list[_Answer] = []
        self._always: _Answer | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()

    # -- where it listens ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return its base URL (http://127.0.0.1:<port>)."""
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str = "/hook") -> str:
        """Return the URL of `path` on it (any path is answered alike)."""
        return self.url + path

    def up(self) -> None:
        """Listen (again, on the same port after `down`)."""
        if self._server is not None:
            return
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused until `up`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def is_up(self) -> bool:
        """Say whether it listens."""
        return self._server is not None

    def close(self) -> None:
        """Stop for good."""
        self.down()

    # -- how it answers ------------------------------------------------------------------

    def answer_next(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: float | None = None,
        body: Any = None,
        **headers: str,
    ) -> None:
        """Answer the next `times` requests with `status` instead of success.

        A 429 with `retry_after` answers as Discord does: a `Retry-After` header (whole
        seconds, rounded up) and `{"retry_after": <seconds>, ...}` as its JSON body.
        Header names are given with underscores (Retry_After).
        """
        with self.lock:
            self._script += [self._answer(status, retry_after, body, headers)] * times

    def answer_always(
        self, status: int, *, retry_after: float | None = None, body: Any = None, **headers: str
    ) -> None:
        """Answer every request with `status` until `recover` (an outage that answers)."""
        with self.lock:
            self._always = self._answer(status, retry_after, body, headers)

    def recover(self) -> None:
        """Answer success again: forget the scripted and standing answers, listen if down."""
        with self.lock:
            self._script.clear()
            self._always = None
        self.up()

    def reset(self) -> None:
        """Forget every request and answer, and listen."""
        self.recover()
        with self.lock:
            self.received.clear()
            self.attempts.clear()

    # -- what it got ---------------------------------------------------------------------

    def wait_for(self, count: int, timeout: float = 30) -> list[Post]:
        """Wait until `count` posts were accepted; return all accepted (that no more come is
        the sender's part to prove: wait until its worker is idle)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} posts arrived")
            time.sleep(0.05)
        return list(self.received)

    def wait_for_attempts(self, count: int, timeout: float = 30) -> list[Post]:
        """Wait until `count` requests arrived, accepted or not; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.attempts) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.attempts)} of {count} requests arrived")
            time.sleep(0.05)
        return list(self.attempts)

    @staticmethod
    def _answer(
        status: int, retry_after: float | None, body: Any, headers: dict[str, str]
    ) -> _Answer:
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        if retry_after is not None:
            named.setdefault("Retry-After", str(max(1, int(-(-retry_after // 1)))))
            if body is None:
                body = {"message": "You are being rate limited.", "retry_after": retry_after}
        if body is None:
            body = {"message": f"HTTP {status}"}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return _Answer(status, raw, named)

    def _next_answer(self) -> _Answer:
        if self._script:
            return self._script.pop(0)
        return self._always or self.ok


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: FakeReceiver) -> None:
        super().__init__(address, _Handler)
        self.receiver = receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        with receiver.lock:
            answer = receiver._next_answer()
            post = Post(self.path, dict(self.headers), body, decoded, time.time(), answer.status)
            receiver.attempts.append(post)
            if 200 <= answer.status < 300:
                receiver.received.append(post)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.status == 204:
            self.end_headers()
            return
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)


@contextmanager
def fake_receiver(ok_status: int = 204, ok_body: bytes = b"") -> Iterator[FakeReceiver]:
    """Run a FakeReceiver for the block; it answers `ok_status` (204: Discord's) by default."""
    receiver = FakeReceiver(ok_status, ok_body)
    try:
        yield receiver
    finally:
        receiver.close()
