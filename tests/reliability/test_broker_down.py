"""Scenario 3: the broker cannot be reached (refused, stopped, or hung). Triggers answer 503 in
seconds and leave nothing behind; the worker and beat reconnect by themselves when the broker
returns."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import get_store
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import CSRF
from tests.conftest import admin_session
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import run_task
from tests.reliability.servers import RedisServer
from tests.reliability.servers import beat
from tests.reliability.servers import closed_port_url
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
FAST = 10.0  # seconds: a trigger must answer within this, broker or not (generous)


class TriggerHung(AssertionError):
    """A trigger did not answer within FAST seconds."""


def signed_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(admin_session(app))
        session["csrf_token"] = CSRF
    return client


TRIGGERS = {
    "API POST /api/v1/manifest/sync": lambda c: c.post("/api/v1/manifest/sync", headers=TOKEN),
    "page GET /updateManifest": lambda c: c.get("/updateManifest"),
    "form POST /sync": lambda c: c.post("/sync", data={"csrf_token": CSRF}),
}


def timed(trigger: Any, client: FlaskClient) -> tuple[int | None, float]:
    """Run a trigger in a thread; return its status and time, or None if it hangs past FAST."""
    answer: list[int] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: answer.append(trigger(client).status_code))
    thread.daemon = True
    thread.start()
    thread.join(FAST)
    return (answer[0] if answer else None), time.monotonic() - started


@pytest.fixture
def tarpit() -> Iterator[str]:
    """A broker address that accepts TCP connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()


@pytest.mark.parametrize(
    "broker",
    [
        "closed port",
        "stopped redis-server",
        # Bounded by the broker's socket timeout (kombu's Redis transport has none by default,
        # and `broker_connection_timeout` bounds only the TCP connect).
        "hung (accepts, never answers)",
    ],
)
def test_triggers_answer_503_fast_and_leave_nothing_when_the_broker_is_down(
    app_overrides: dict[str, Any],
    redis_client: redis.Redis,
    tarpit: str,
    figures: Figures,
    broker: str,
) -> None:
    if broker == "closed port":
        url = closed_port_url()
    elif broker == "stopped redis-server":
        with RedisServer() as server:
            url = server.url
    else:
        url = tarpit
    app = create_app("testing", {**app_overrides, "CELERY_BROKER_URL": url})
    client = signed_in(app)
    prefix = app_overrides["MANIFEST_KEY_PREFIX"]
    row: dict[str, Any] = {"broker": broker}
    rows = figures.scenario("broker-down")["rows"]
    for name, trigger in TRIGGERS.items():
        status, seconds = timed(trigger, client)
        if status is None:
            row[f"{name} (s)"] = f"no answer in {FAST:.0f}"
            rows.append(row)
            # Its ticket now names a task that never reached the queue: the rest would join it.
            raise TriggerHung(f"{name} did not answer within {FAST:.0f}s")
        row[f"{name} (s)"] = round(seconds, 2)
        assert status == 503, name
        assert seconds < FAST
    rows.append(row)
    assert list(redis_client.scan_iter(match=f"{prefix}:task*")) == []
    assert not redis_client.exists(f"{prefix}:lock")


@pytest.fixture
def broker_stack(
    origin: DemoOriginProcess, admin: DemoAdmin, key_prefix: str, redis_url: str
) -> Iterator[dict[str, Any]]:
    """The cache and results on the shared Redis; the broker on a redis-server of our own."""
    with ExitStack() as stack:
        broker = stack.enter_context(RedisServer())
        schedule = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "beat-schedule"
        overrides = {
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": broker.url,
            "BUNGIE_BASE_URL": origin.url,
            "MANIFEST_KEY_PREFIX": key_prefix,
            "CELERY_QUEUE": unique("broker"),
            "MANIFEST_POLL_SECONDS": 2,
            "TRIGGER_RATE_LIMIT": 1000,
        }
        yield {"broker": broker, "overrides": overrides, "schedule": schedule, "stack": stack}


def test_worker_and_beat_reconnect_when_the_broker_returns(
    broker_stack: dict[str, Any], admin: DemoAdmin, figures: Figures
) -> None:
    broker: RedisServer = broker_stack["broker"]
    overrides = broker_stack["overrides"]
    stack: ExitStack = broker_stack["stack"]
    app = create_app("testing", overrides)
    celery: Celery = app.extensions["celery"]
    client = app.test_client()
    with app.app_context():
        store = get_store()
    work = stack.enter_context(worker(overrides))
    ticker = stack.enter_context(beat(overrides, broker_stack["schedule"]))
    wait_until(store.live_id, 30, "beat's first sync")

    broker.stop()
    down_at = time.time()
    refused = [timed(TRIGGERS["API POST /api/v1/manifest/sync"], client) for _ in range(3)]
    admin.publish()
    time.sleep(3)  # beat misses a tick or two
    broker.start()
    back = time.monotonic()
    back_at = time.time()

    def beat_checked() -> bool:
        check = store.last_check() or {}
        return check.get("trigger") == "beat" and check.get("at", 0) > back_at

    wait_until(beat_checked, 60, "a beat-triggered check after the broker returned")
    beat_back = time.monotonic() - back
    answer = client.post("/api/v1/manifest/sync", headers=TOKEN)
    assert answer.status_code == 202
    done = run_task(celery, answer.get_json()["task_id"], timeout=60)
    api_back = time.monotonic() - back
    assert done.state == "SUCCESS"
    # Updated, unchanged, or busy when a beat-queued sync had just taken the lock.
    assert done.info["outcome"] in ("updated", "unchanged", "busy"), done.info
    wait_until(lambda: (store.last_check() or {}).get("version") == admin.state()["version"], 30)

    ticker.stop()
    wait_until(lambda: not store.redis.exists(store.keys.lock), 30, "the lock to be let go")
    wait_until(lambda: not store.redis.exists(store.keys.queued_sync), 30, "the ticket to go")
    assert all(status == 503 for status, _ in refused)
    assert all(seconds < FAST for _, seconds in refused)
    reconnect_lines = [line for line in work.output().splitlines() if "Connected to" in line]
    assert len(reconnect_lines) >= 2, "the worker did not reconnect"
    checks = store.recent_checks(50)
    missed = [c for c in checks if down_at <= c["at"] <= back_at]
    figures.scenario("broker-down")["summary"] = {
        "triggers while the broker was down": len(refused),
        "their worst answer (s)": round(max(s for _, s in refused), 3),
        "first beat check after the broker returned (s)": round(beat_back, 2),
        "API trigger after the broker returned, done in (s)": round(api_back, 2),
        "checks recorded while the broker was down": len(missed),
        "lock / ticket left at the end": "none / none",
    }
