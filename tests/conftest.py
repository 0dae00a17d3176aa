"""Shared fixtures: a real Redis, the demo origin over real HTTP, and per-test key prefixes."""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner

from app import auth
from app import create_app
from app.keys import Keys
from app.manifest.client import BungieClient
from app.manifest.replies import optional_text
from app.manifest.settings import ManifestSettings
from app.manifest.store import ManifestStore
from app.players import budget
from config import TestingConfig
from config import settings_dict
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess

DEMO_ITEMS = 300
API_KEY = TestingConfig.BUNGIE_API_KEY


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """TEST_REDIS_URL, else the local Redis if it answers, else an embedded fakeredis server."""
    url = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    if _answers(url):
        yield url
        return
    if os.environ.get("TEST_REDIS_URL"):
        pytest.exit(f"TEST_REDIS_URL={url} does not answer", returncode=2)
    from devtools.devstack import embedded_redis

    with embedded_redis() as embedded:
        yield embedded


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def origin() -> Iterator[DemoOriginProcess]:
    """One demo origin for the session; `admin` puts it back to its first release per test."""
    with DemoOriginProcess("--items", str(DEMO_ITEMS), "--seed", "7", "--api-key", API_KEY) as proc:
        yield proc


@pytest.fixture
def admin(origin: DemoOriginProcess) -> Iterator[DemoAdmin]:
    control = DemoAdmin(origin.url)
    control.reset()
    yield control
    control.reset()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    yield prefix
    drop_keys(redis_client, prefix)


def drop_keys(redis_client: redis.Redis, prefix: str) -> None:
    """Delete every key under `prefix` on the shared Redis (a test's own, when it ends)."""
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis_client.unlink(*keys)


def drop_queue(redis_client: redis.Redis, queue: str) -> None:
    """Delete a test's Celery queue and kombu's bindings for it, so no stray task outlives it."""
    redis_client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


@pytest.fixture
def settings(origin: DemoOriginProcess, key_prefix: str) -> ManifestSettings:
    """The engine's settings as the testing configuration gives them, on this test's prefix."""
    base = ManifestSettings.from_mapping(settings_dict(TestingConfig))
    return replace(base, base_url=origin.url, key_prefix=key_prefix, download_deadline=20.0)


@pytest.fixture
def store(redis_client: redis.Redis, settings: ManifestSettings) -> ManifestStore:
    return ManifestStore(redis_client, settings)


@pytest.fixture
def bungie(settings: ManifestSettings) -> Iterator[BungieClient]:
    client = BungieClient.from_settings(settings)
    yield client
    client.close()


@pytest.fixture(scope="session")
def celery_queue(redis_client: redis.Redis) -> Iterator[str]:
    """A Celery queue of this test session's own, so no stray task reaches another session."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    drop_queue(redis_client, name)


@pytest.fixture
def app_overrides(
    origin: DemoOriginProcess, key_prefix: str, redis_url: str, celery_queue: str
) -> dict[str, Any]:
    return {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": key_prefix,
        "CELERY_QUEUE": celery_queue,
    }


@pytest.fixture
def app(
    app_overrides: dict[str, Any], admin: DemoAdmin, redis_client: redis.Redis
) -> Iterator[Flask]:
    """The app on this test's key prefix; the tasks it queued are dropped afterwards (no
    worker runs them here, and none should run them later)."""
    yield create_app("testing", app_overrides)
    redis_client.delete(app_overrides["CELERY_QUEUE"])


def queued_task_ids(redis_client: redis.Redis, queue: str) -> list[str]:
    """Return the ids of the tasks waiting in `queue`, as the broker holds them."""
    return [json.loads(m)["headers"]["id"] for m in redis_client.lrange(queue, 0, -1)]


def take_queued_tasks(redis_client: redis.Redis, queue: str) -> list[tuple[str, list[Any]]]:
    """Take every task waiting in `queue` (name and arguments, oldest first), as a worker or a
    lost message would: the queue is empty afterwards."""
    found = []
    for raw in reversed(redis_client.lrange(queue, 0, -1)):  # LPUSHed: the oldest is last
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], args))
    redis_client.delete(queue)
    return found


def run_task(app: Flask, task: str, *args: Any, **kwargs: Any) -> Any:
    """Run one of `app`'s Celery tasks in this process, as a worker would, and return its result."""
    return app.extensions["celery"].tasks[task].apply(args=args, kwargs=kwargs).get()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


CSRF = "test-csrf-token"


def admin_session(app: Flask) -> dict[str, str]:
    """Return what signing in on `app` puts in a session: the admin's name and the admin's
    session version (made first, as the first sign-in would, if Redis keeps none)."""
    client: redis.Redis = app.extensions["redis"]
    key = Keys(app.config["MANIFEST_KEY_PREFIX"]).session_version
    client.set(key, secrets.token_urlsafe(32), nx=True)
    version = optional_text(client.get(key))
    assert version is not None
    assert TestingConfig.ADMIN_USERNAME is not None
    return {"user": TestingConfig.ADMIN_USERNAME, "session_version": version}


@pytest.fixture
def signed_in(client: FlaskClient) -> FlaskClient:
    """The test client with the admin signed in and a known CSRF token in its session."""
    with client.session_transaction() as session:
        session.update(admin_session(client.application))
        session["csrf_token"] = CSRF
    return client


class StillClock:
    """The time module, but for `time()`: the moment the clock was made, for as long as it lives."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        """Return the moment the clock was made."""
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def steady_rate_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold the rate windows (sign-in, triggers, player lookups) where they are for the test.

    A window starts at a multiple of its length, not at the first request: without this, a
    test that fills one can see its count start over midway, however long the window.
    """
    clock = StillClock()
    monkeypatch.setattr(auth, "time", clock)
    monkeypatch.setattr(budget, "time", clock)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, ...]]]:
    """Record each Redis round trip this process makes while the test runs, as redis-py's
    connections put them on the wire (the live pointer's own connection too).

    A round trip is what a connection sends before it waits for a reply: one command, or a
    pipeline (a MULTI/EXEC transaction too) with every command queued in it. Each command is
    recorded as its name and first argument. A new connection's handshake (HELLO, AUTH,
    SELECT, CLIENT SETINFO ...) is left out: it is paid once per connection, not per read.
    """
    trips: list[list[tuple[str, ...]]] = []
    unanswered: weakref.WeakKeyDictionary[redis.Connection, list[tuple[str, ...]]] = (
        weakref.WeakKeyDictionary()
    )
    lock = threading.Lock()
    send = redis.Connection.send_packed_command
    read = redis.Connection.read_response

    def send_packed_command(
        connection: redis.Connection, command: Any, check_health: bool = True
    ) -> None:
        # Recorded once sent: sending may connect first, and the handshake is a trip of its own.
        send(connection, command, check_health)
        with lock:
            unanswered.setdefault(connection, []).extend(_commands(command))

    def read_response(connection: redis.Connection, *args: Any, **options: Any) -> Any:
        with lock:
            trip = unanswered.pop(connection, None)
        if trip and not all(_handshake(command) for command in trip):
            trips.append(trip)
        return read(connection, *args, **options)

    monkeypatch.setattr(redis.Connection, "send_packed_command", send_packed_command)
    monkeypatch.setattr(redis.Connection, "read_response", read_response)
    return trips


def _commands(packed: str | list[bytes | memoryview]) -> list[tuple[str, ...]]:
    """Return each command of a packed request (RESP arrays) as its name and first argument."""
    data = packed.encode() if isinstance(packed, str) else b"".join(packed)
    commands = []
    at = 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        count, at = int(data[at + 1 : end]), end + 2
        named: list[str] = []
        for _ in range(count):
            end = data.index(b"\r\n", at)
            start = end + 2
            at = start + int(data[at + 1 : end]) + 2
            if len(named) < 2:
                named.append(data[start : at - 2].decode(errors="replace"))
        commands.append(tuple(named))
    return commands


def _handshake(command: tuple[str, ...]) -> bool:
    """Say whether redis-py sends `command` to set up a new connection."""
    return command[0] in ("HELLO", "AUTH", "SELECT") or command[:2] in (
        ("CLIENT", "SETINFO"),
        ("CLIENT", "SETNAME"),
        ("CLIENT", "MAINT_NOTIFICATIONS"),
    )


def snapshot(
    client: redis.Redis, prefix: str, skip: tuple[str, ...] = ()
) -> dict[bytes, bytes | None]:
    """Return every key under `prefix` with its type and content, to prove that nothing was
    written."""
    skipped = tuple(f"{prefix}:{name}".encode() for name in skip)
    keys = sorted(k for k in client.scan_iter(match=f"{prefix}:*") if k not in skipped)
    return {key: _content(client, key) for key in keys}


def _content(client: redis.Redis, key: bytes) -> bytes | None:
    """Return a key's type and content as bytes that only a write changes.

    Not DUMP: a hash kept as a hash table is dumped in its table's order, which a mere read
    changes while the table is being resized (HGET moves it on a step).
    """
    kind = optional_text(client.type(key))
    value: object
    if kind == "hash":
        value = sorted(client.hgetall(key).items())
    elif kind == "set":
        value = sorted(client.smembers(key))
    elif kind == "zset":
        value = client.zrange(key, 0, -1, withscores=True)
    elif kind == "list":
        value = client.lrange(key, 0, -1)
    elif kind == "string":
        value = client.get(key)
    else:
        value = client.dump(key)
    return None if value is None else f"{kind} {value!r}".encode()
