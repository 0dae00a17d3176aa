"""Start and steer a demo origin from tests, benchmarks and `manage.py dev`.

`DemoOriginProcess` runs `manage.py demo-origin` in its own process; `DemoAdmin` talks to its
admin API under /_demo/.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO
from typing import Any

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"Demo origin listening on (http://\S+:\d+)")
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
STDERR_TAIL = 16_000


class DemoOriginError(RuntimeError):
    """The demo origin did not start, or its admin API refused a request."""


class DemoOriginProcess:
    """Run `manage.py demo-origin --port 0 ...` as a child process; a context manager.

    `url` is the origin's base URL once started. Leaving the context stops it: SIGTERM, then
    SIGKILL after a few seconds.
    """

    def __init__(
        self,
        *args: str,
        startup_timeout: float = STARTUP_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = tuple(args)
        self.startup_timeout = startup_timeout
        self.env = dict(env) if env is not None else None
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        # The exit status and the end of stderr, once stopped.
        self.returncode: int | None = None
        self.stderr = ""
        self._stderr: IO[str] | None = None

    @property
    def command(self) -> list[str]:
        """Return the command line that starts the origin."""
        return [sys.executable, "manage.py", "demo-origin", "--port", "0", *self.args]

    @property
    def admin(self) -> DemoAdmin:
        """Return an admin client for this origin."""
        return DemoAdmin(self.url)

    def start(self) -> DemoOriginProcess:
        """Start the origin and wait until it says it listens; raise DemoOriginError if not."""
        if self.process is not None:
            raise DemoOriginError("this demo origin is already started")
        # stderr goes to a file: a pipe nobody reads could fill up and stall the origin.
        self._stderr = tempfile.TemporaryFile(  # noqa: SIM115 - closed by stop()
            "w+", encoding="utf-8", errors="replace"
        )
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
            self.command,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(
            target=_pump, args=(self.process.stdout, lines), daemon=True, name="demo-origin-stdout"
        ).start()
        deadline = time.monotonic() + self.startup_timeout
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise DemoOriginError(
                    f"demo origin did not say it listens within {self.startup_timeout:.0f}s"
                    + self._output(seen, self.stderr)
                )
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait()
                self.stop()
                raise DemoOriginError(
                    f"demo origin exited with status {code} before it was ready"
                    + self._output(seen, self.stderr)
                )
            match = READY.search(line)
            if match:
                self.url = match.group(1)
                return self
            seen.append(line.rstrip("\n"))

    def stop(self) -> None:
        """Stop the origin: SIGTERM, then SIGKILL if it has not exited after 5 s."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self.returncode = process.returncode
        if self._stderr is not None:
            self.stderr = self._stderr_text()
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> DemoOriginProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-STDERR_TAIL:]

    @staticmethod
    def _output(stdout: list[str], stderr: str = "") -> str:
        parts = []
        if stdout:
            parts.append("stdout:\n" + "\n".join(stdout[-20:]))
        if stderr.strip():
            parts.append("stderr:\n" + stderr.rstrip())
        return ("\n" + "\n".join(parts)) if parts else ""


def _pump(stream: IO[str] | None, lines: queue.Queue[str | None]) -> None:
    """Forward the origin's stdout lines, then None at its end (keeps the pipe drained)."""
    if stream is not None:
        try:
            for line in stream:
                lines.put(line)
        except (OSError, ValueError):
            pass  # closed by stop()
    lines.put(None)


class DemoAdmin:
    """A client of the demo origin's admin API (/_demo/...)."""

    def __init__(self, url: str, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def state(self) -> dict[str, Any]:
        """Return the current generation, version, item count, content paths and faults."""
        return self._call("GET", "state")

    def publish(self, **changes: Any) -> dict[str, Any]:
        """Publish a new generation; options: added, removed, changed, renamed, restatted,
        revealed, redacted (item counts), tables, version, renumber.

        Item counts apply to the item table, each item getting one kind of change at most
        (DemoData.publish says what each does); added, removed and changed default to a share
        of the table, the others to 0. `renumber` (default true) gives every definition of the
        published tables a new top-level `index`, as Bungie's releases do; false keeps each
        definition's index. Returns the new state plus `published_tables` and what each item
        got, sorted by hash: `added`, `removed`, `changed`, `revealed` and `redacted` hashes,
        `renamed` as `{"hash", "old", "new"}` names and `restatted` as
        `{"hash", "path", "old", "new"}` with the stat's dotted path in the definition
        (e.g. "stats.stats.4284893193.value" or "investmentStats.2.value").
        """
        return self._call("POST", "publish", changes)

    def rollback(self) -> dict[str, Any]:
        """Make the previous generation current again; return the new state."""
        return self._call("POST", "rollback")

    def fault(self, name: str, **options: Any) -> dict[str, Any]:
        """Activate fault `name`; `count=N` fires it N times (default: until cleared)."""
        return self._call("POST", "fault", {"name": name, **options})

    def clear_faults(self) -> dict[str, Any]:
        """Clear every active fault."""
        return self._call("DELETE", "fault")

    def requests_log(self) -> list[dict[str, Any]]:
        """Return every non-admin request so far: method, path, query, api_key, status."""
        return self._call("GET", "requests")["requests"]

    def clear_requests_log(self) -> None:
        """Empty the request log."""
        self._call("DELETE", "requests")

    def reset(self) -> dict[str, Any]:
        """Go back to generation 1 with no faults and an empty request log."""
        return self._call("POST", "reset")

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.request(
            method, f"{self.url}/_demo/{route}", json=body, timeout=(5.0, self.timeout)
        )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200:
            detail = payload.get("error") if isinstance(payload, dict) else response.text[:200]
            raise DemoOriginError(
                f"{method} /_demo/{route} answered HTTP {response.status_code}: {detail}"
            )
        return payload
