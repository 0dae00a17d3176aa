"""Processes the reliability tests start and kill: Redis servers, workers, beat; and waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Self
from typing import TypeVar

import redis

from tests.processes import CeleryWorker
from tests.processes import ProjectProcess
from tests.processes import flask_env

T = TypeVar("T")

# The process groups this suite started, to prove none outlives it.
STARTED_GROUPS: set[int] = set()


def wait_until(
    check: Callable[[], T], timeout: float, message: str = "condition", interval: float = 0.02
) -> T:
    """Poll `check` until it returns something truthy; return it, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_port_url() -> str:
    """Return a redis:// URL of a port where nothing listens (connections are refused)."""
    return f"redis://127.0.0.1:{free_port()}/0"


class RedisServer:
    """A redis-server of a test's own on a free port; `stop`, `kill` and `start` it at will.

    Never the shared server on 6379: this one can be restarted, filled up and killed.
    """

    def __init__(self, *args: str, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="reliability-redis-"))
        self.password = password
        self.args = (*args, "--requirepass", password) if password else args
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10)

    def start(self) -> RedisServer:
        """Start the server (again, after a stop or kill: same port, same data directory)."""
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            *self.args,
        ]
        self.process = subprocess.Popen(command, start_new_session=True)
        STARTED_GROUPS.add(self.process.pid)
        probe = self.client()
        try:
            wait_until(lambda: self._answers(probe), 20, f"redis-server on {self.port}")
        except BaseException:
            self.kill()
            raise
        finally:
            probe.close()
        return self

    def _answers(self, probe: redis.Redis) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM) and wait for it."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self._remove_dir()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        self._remove_dir()

    def _remove_dir(self) -> None:
        for path in sorted(self.dir.rglob("*"), reverse=True):
            with contextlib.suppress(OSError):
                path.unlink() if path.is_file() else path.rmdir()
        with contextlib.suppress(OSError):
            self.dir.rmdir()


class TrackedProcess(ProjectProcess):
    """A ProjectProcess whose process group is remembered for the orphan check."""

    def __enter__(self) -> Self:
        super().__enter__()
        assert self.process is not None
        STARTED_GROUPS.add(self.process.pid)
        return self


class TrackedWorker(TrackedProcess, CeleryWorker):
    """A CeleryWorker whose process group is remembered for the orphan check."""


def live_groups() -> list[int]:
    """Return the process groups started here that still have a process in them."""
    alive = []
    for group in sorted(STARTED_GROUPS):
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(group)
    return alive


def worker(
    overrides: Mapping[str, object], *, concurrency: int = 1, loglevel: str = "INFO"
) -> TrackedWorker:
    """A real Celery worker (prefork) for the app configured by `overrides`."""
    return TrackedWorker(
        overrides,
        concurrency=concurrency,
        loglevel=loglevel,
        options=("--without-heartbeat",),
        name="reliability",
    )


def beat(overrides: Mapping[str, object], schedule_file: Path) -> ProjectProcess:
    """A real Celery beat for the app configured by `overrides`, with its own schedule file."""
    args = [sys.executable, "-m", "celery", "-A", "celery_worker.celery", "beat", "--loglevel=INFO"]
    env = flask_env({**overrides, "CELERY_BEAT_SCHEDULE_FILE": str(schedule_file)})
    return TrackedProcess(args, env, ready="beat: Starting...")


def pool_children(process: ProjectProcess) -> list[int]:
    """Return the pids of a prefork worker's pool processes (its direct children)."""
    assert process.process is not None
    listing = subprocess.run(
        ["ps", "--ppid", str(process.process.pid), "-o", "pid="],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in listing.stdout.split()]


def kill_group(process: ProjectProcess) -> None:
    """SIGKILL a process and every child in its group at once, as the OOM killer or a dyno
    restart would; then reap it."""
    assert process.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.process.pid, signal.SIGKILL)
    process.process.wait(10)
