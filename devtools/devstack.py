"""`manage.py dev`: the whole app in one terminal, on embedded defaults.

Redis is REDIS_URL if it answers, else an embedded Redis-compatible server (fakeredis with
Lua), which also stands in for a Celery broker or result backend on a Redis that does not
answer; Bungie is BUNGIE_BASE_URL if set, else the local demo origin. The worker, beat and the
web server run as supervised child processes whose output is prefixed; Ctrl+C stops them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import IO
from typing import Any

import kombu
import redis
import requests
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from config import DEVELOPMENT_SECRETS
from devtools.demo.control import DemoOriginProcess

WINDOWS = sys.platform == "win32"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"web": "36", "worker": "35", "beat": "33", "dev": "32"}
STOP_GRACE = 10.0


class DevError(RuntimeError):
    """`manage.py dev` cannot start; the message says why and what to do."""


@dataclass
class Child:
    """One supervised process and the thread that relays its output."""

    name: str
    process: subprocess.Popen[str]
    relay: threading.Thread = field(init=False)


def answers(url: str) -> bool:
    """Return whether the Redis at `url` answers a PING within a few seconds."""
    with contextlib.suppress(redis.RedisError, ValueError):
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=3)
        with client:
            return bool(client.ping())
    return False


def broker_answers(url: str) -> bool:
    """Return whether the broker at `url` (any kombu transport) accepts a connection."""
    with kombu.Connection(url, connect_timeout=3) as connection:
        try:
            connection.ensure_connection(max_retries=1, interval_start=0)
        except OperationalError:
            return False
    return True


def is_redis(url: str) -> bool:
    """Return whether `url` names a Redis server."""
    return url.startswith(("redis://", "rediss://", "unix://"))


def shown(url: str) -> str:
    """Return `url` fit to print: its password masked."""
    return str(maybe_sanitize_url(url, mask="***"))


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    """Serve a Redis-compatible server from this process (fakeredis with Lua); yield its URL."""
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    try:
        yield f"redis://{host}:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


class DevStack:
    """Start, watch and stop everything `make dev` runs."""

    def __init__(self, port: int, demo_items: int, out: IO[str] | None = None) -> None:
        self.port = port
        self.demo_items = demo_items
        self.out = out or sys.stdout
        self.colour = self.out.isatty() and not WINDOWS
        self.children: list[Child] = []
        self._print_lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self.workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory("-dev")))

    # -- output ----------------------------------------------------------------------------

    def say(self, name: str, line: str) -> None:
        """Print one line prefixed with the name of the process it comes from."""
        prefix = f"{name:>6} |"
        if self.colour:
            prefix = f"\033[{COLOURS.get(name, '0')}m{prefix}\033[0m"
        with self._print_lock:
            print(f"{prefix} {line}", file=self.out, flush=True)

    # -- the pieces ------------------------------------------------------------------------

    def check_port(self) -> None:
        """Refuse to start when the web port is taken (e.g. by another `make dev`)."""
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise DevError(
                    f"Port {self.port} is taken: is another `make dev` running? "
                    f"Stop it, or pick another port with `python manage.py dev --port N`."
                ) from None

    def redis_url(self, configured: str | None) -> str:
        """Return REDIS_URL if it answers, else the address of an embedded server."""
        if configured and answers(configured):
            self.say("dev", f"Redis: {shown(configured)}")
            return configured
        url = self._stack.enter_context(embedded_redis())
        why = f"{shown(configured)} does not answer" if configured else "REDIS_URL is not set"
        self.say("dev", f"Redis: {why}; using an embedded server at {url} (data is not kept)")
        return url

    def celery_url(self, name: str, configured: str | None, redis_url: str) -> str | None:
        """Return the URL the Celery setting `name` gets, None to leave it to REDIS_URL.

        A Redis that does not answer is replaced by the Redis in use; a broker of another kind
        that does not answer stops everything with one line naming the setting to fix.
        """
        if not configured:
            return None
        if is_redis(configured) and not answers(configured):
            self.say("dev", f"{name} ({shown(configured)}) does not answer; using the Redis above")
            return redis_url
        broker = name == "CELERY_BROKER_URL" and not is_redis(configured)
        if broker and not broker_answers(configured):
            raise DevError(
                f"{name} ({shown(configured)}) does not answer: start that broker, "
                f"or unset {name} to use Redis."
            )
        self.say("dev", f"{name}: {shown(configured)}")
        return configured

    def bungie_url(self, configured: str | None) -> str:
        """Return BUNGIE_BASE_URL if set, else start the demo origin and return its address."""
        if configured:
            self.say("dev", f"Bungie: {configured}")
            return configured
        origin = DemoOriginProcess("--items", str(self.demo_items))
        self._stack.enter_context(origin)
        self.say("dev", f"Bungie: the demo origin at {origin.url} ({self.demo_items} items)")
        return origin.url

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        """Start a child process whose output is relayed with its name in front."""
        options: dict[str, object] = {}
        if WINDOWS:
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            options["start_new_session"] = True  # Ctrl+C reaches us; we stop the children.
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and entry points
            args,
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            **options,  # type: ignore[call-overload]
        )
        child = Child(name, process)
        child.relay = threading.Thread(target=self._relay, args=(child,), daemon=True)
        child.relay.start()
        self.children.append(child)
        self.say("dev", f"started {name} (pid {process.pid})")
        return child

    def _relay(self, child: Child) -> None:
        assert child.process.stdout is not None
        for line in child.process.stdout:
            self.say(child.name, line.rstrip())

    def wait_for_web(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    return
            self.check_alive()
            time.sleep(0.2)
        raise DevError(f"The web server did not answer on port {self.port} within {timeout:.0f}s")

    def check_alive(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise DevError(f"{child.name} stopped (exit code {code}); see its lines above")

    def stop(self) -> None:
        """Stop every child (whole process groups), then the origin and embedded Redis."""
        for child in reversed(self.children):
            _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("dev", f"{child.name} did not stop in {STOP_GRACE:.0f}s: killing it")
            _signal(child.process, signal.SIGKILL if not WINDOWS else signal.SIGTERM)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
        self._stack.close()


def _signal(process: subprocess.Popen[str], sig: int) -> None:
    """Signal a child's whole process group (pool children, the reloader's child)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if WINDOWS:
            process.terminate()
        else:
            os.killpg(process.pid, sig)


def commands(port: int, schedule: Path) -> dict[str, list[str]]:
    """The processes `make dev` supervises: the same entry points as Procfile and compose."""
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "celery_worker.celery"]
    # Celery refuses -B on Windows, and its prefork pool does not work there.
    pool = ["--pool=solo"] if WINDOWS else ["--concurrency=2"]
    return {
        "worker": [*celery, "worker", "--loglevel=INFO", *pool],
        "beat": [*celery, "beat", "--loglevel=INFO", f"--schedule={schedule}"],
        "web": [
            *[python, "-m", "flask", "--app", "app:create_app", "run", "--debug"],
            f"--port={port}",
        ],
    }


@contextlib.contextmanager
def running(stack: DevStack) -> Iterator[DevStack]:
    """Stop everything on the way out, also on Ctrl+C and SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield stack
    except KeyboardInterrupt:
        stack.say("dev", f"stopping (within {STOP_GRACE:.0f}s)...")
    finally:
        # A second Ctrl+C (or a SIGTERM after it) must not cut the stop short: that would
        # leave the worker and beat running with nobody watching them.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)
        stack.say("dev", "stopped")


def sign_in_password(config: Mapping[str, Any]) -> str:
    """Return how the sign-in line names the admin's password: the development default itself,
    else the setting that holds the one the user chose (never its value)."""
    if config.get("ADMIN_PASSWORD_HASH"):
        return "the password of the ADMIN_PASSWORD_HASH you set"
    if config.get("ADMIN_PASSWORD") == DEVELOPMENT_SECRETS["ADMIN_PASSWORD"]:
        return DEVELOPMENT_SECRETS["ADMIN_PASSWORD"]
    return "the ADMIN_PASSWORD you set"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(port: int, configured: Mapping[str, str | None], demo_items: int) -> None:
    """Run the whole app until Ctrl+C, on the `configured` settings where they answer.

    `configured` holds REDIS_URL, CELERY_BROKER_URL, CELERY_RESULT_BACKEND and BUNGIE_BASE_URL,
    each None when unset.
    """
    from app import create_app
    from app import triggers

    stack = DevStack(port, demo_items)
    stack.check_port()
    with running(stack):
        redis_url = stack.redis_url(configured["REDIS_URL"])
        celery_urls = {
            name: url
            for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
            if (url := stack.celery_url(name, configured[name], redis_url))
        }
        # Celery reads these two variables itself, over the app's configuration: this process
        # and its children must see the ones chosen here.
        os.environ.update(celery_urls)
        bungie_url = stack.bungie_url(configured["BUNGIE_BASE_URL"])
        settings = {
            "REDIS_URL": redis_url,
            **celery_urls,
            "BUNGIE_BASE_URL": bungie_url,
            "SERVER_NAME": f"127.0.0.1:{port}",
        }
        env = {"FLASK_CONFIG": "development", **{f"FLASK_{k}": v for k, v in settings.items()}}
        for name, args in commands(port, stack.workdir / "celerybeat-schedule").items():
            stack.start(name, args, env)
        stack.wait_for_web()
        app = create_app("development", settings)
        with app.test_request_context():
            sync = triggers.request_sync("dev", requested_by="make dev")
        # The app here reads the configuration as the children do (FLASK_ names included).
        user = app.config["ADMIN_USERNAME"]
        for line in (
            f"Dashboard:  http://127.0.0.1:{port}/",
            f"Sign in:    {user} / {sign_in_password(app.config)}",
            f"First sync: http://127.0.0.1:{port}/updateManifest?task={sync.task_id}",
            "Press Ctrl+C to stop everything.",
        ):
            stack.say("dev", line)
        while True:
            stack.check_alive()
            time.sleep(0.5)
