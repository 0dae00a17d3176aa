"""Run the project's own processes (a Celery worker, beat) for tests, and stop them for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from typing import Self

import redis
import requests
from celery import Celery
from celery.result import AsyncResult
from flask import Flask

from app import triggers
from app.extensions import get_celery

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ProjectProcess:
    """A child process in its own process group, its output in a file, waited for a line."""

    def __init__(self, args: list[str], env: Mapping[str, str], ready: str, timeout: float = 60):
        self.args = args
        self.env = {**os.environ, **env}
        self.ready = ready
        self.timeout = timeout
        self.log_path = Path(tempfile.mkstemp(prefix="manifest-test-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.timeout
        while self.ready not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.args[:6]} did not start:\n{self.output()[-4000:]}")
            time.sleep(0.1)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> None:
        """Ask the whole process group to stop; kill whatever is left after `grace` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        # Pool children outlive a killed parent only in a broken shutdown: make sure.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def http_ok(url: str) -> bool:
    """Say whether GET `url` answers 200 now (False while the server is not listening yet)."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def flask_env(overrides: Mapping[str, object]) -> dict[str, str]:
    """Environment for a child process: the testing config plus these settings (FLASK_ prefix)."""
    env = {"FLASK_CONFIG": "testing"}
    env.update({f"FLASK_{key}": str(value) for key, value in overrides.items()})
    return env


class CeleryWorker(ProjectProcess):
    """A real Celery worker (prefork pool) for the app configured by `overrides`, named so that
    it alone answers what is asked of it."""

    def __init__(
        self,
        overrides: Mapping[str, object],
        *,
        concurrency: int = 2,
        loglevel: str = "INFO",
        options: tuple[str, ...] = (),
        name: str = "test",
    ) -> None:
        self.node = f"{name}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_worker.celery",
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            *options,
            "-n",
            self.node,
        ]
        super().__init__(args, flask_env(overrides), ready=" ready.")

    def wait_until_idle(self, celery: Celery, timeout: float = 30) -> None:
        """Wait until this worker has run every task queued for it, and every task those queued.

        Idle is the queue empty, then the worker saying it has no task running, reserved or
        scheduled for later (a retry) but those revoked, twice running: a message the worker
        took off the queue just before the first question is in its hands by the second.
        """
        deadline = time.monotonic() + timeout
        answers = 0
        with redis.Redis.from_url(celery.conf.broker_url) as broker:
            while answers < 2:
                if time.monotonic() > deadline:
                    raise AssertionError(f"worker {self.node} was still busy after {timeout:.0f}s")
                answers = answers + 1 if self._idle(celery, broker) else 0
                time.sleep(0.05)

    def _idle(self, celery: Celery, broker: redis.Redis) -> bool:
        if broker.llen(celery.conf.task_default_queue):  # a Redis broker: a queue is a list
            return False
        inspect = celery.control.inspect(destination=[self.node], timeout=5)
        revoked = inspect.revoked()
        if revoked is None:
            return False
        will_not_run = set(revoked.get(self.node, []))
        for question in (inspect.active, inspect.reserved, inspect.scheduled):
            answer = question()
            if answer is None:
                return False
            for entry in answer.get(self.node, []):
                # A scheduled entry holds the request beside its ETA.
                if entry.get("request", entry)["id"] not in will_not_run:
                    return False
        return True


def celery_worker(overrides: Mapping[str, object], concurrency: int = 2) -> CeleryWorker:
    """A real Celery worker (prefork pool) for the app configured by `overrides`."""
    return CeleryWorker(overrides, concurrency=concurrency)


def sync_on_worker(app: Flask, timeout: float = 60) -> dict[str, Any]:
    """Trigger a sync as the pages do and wait for a worker process to finish it; its result."""
    with app.test_request_context():
        ticket = triggers.request_sync("test")
        result = AsyncResult(ticket.task_id, app=get_celery())
        deadline = time.monotonic() + timeout
        while result.state not in ("SUCCESS", "FAILURE"):
            assert time.monotonic() < deadline, f"sync {ticket.task_id} did not finish"
            time.sleep(0.05)
        return result.info
