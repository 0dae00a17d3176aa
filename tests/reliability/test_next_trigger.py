"""After a sync dies (worker killed, pool child killed, its retry refused by a broker that is
down), the next trigger from the pages or the API must start a new sync, not join the dead one.

`<prefix>:task` names the queued-or-running sync; only the task itself deletes it, in a
`finally` that a killed process never reaches (and that is skipped when a retry could not be
queued). Until its TTL (SYNC_TIME_LIMIT + 60 s, 21 minutes by default) every trigger joins the
dead task and nothing runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from app import create_app
from app.extensions import get_settings
from app.extensions import get_store
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.reliability.conftest import unique
from tests.reliability.helpers import origin_release
from tests.reliability.helpers import run_task
from tests.reliability.helpers import send_beat_sync
from tests.reliability.servers import RedisServer
from tests.reliability.servers import kill_group
from tests.reliability.servers import pool_children
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
DRIP = {"table": ITEM_TABLE, "chunk": 256 * 1024, "delay": 0.02}
LOCK_TIMEOUT = 3


class JoinedDeadSync(AssertionError):
    """The trigger handed back the dead sync's task id instead of starting a new sync."""


@pytest.fixture
def stack(big_origin: DemoOriginProcess, big_admin: DemoAdmin) -> Iterator[dict[str, Any]]:
    """The cache and the broker on two Redis servers of the test's own."""
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        broker = stack.enter_context(RedisServer())
        overrides = {
            "REDIS_URL": server.url,
            "CELERY_BROKER_URL": broker.url,
            "BUNGIE_BASE_URL": big_origin.url,
            "MANIFEST_KEY_PREFIX": unique("next"),
            "CELERY_QUEUE": unique("next"),
            "MANIFEST_LOCK_TIMEOUT": LOCK_TIMEOUT,
            "TRIGGER_RATE_LIMIT": 1000,
            "SYNC_MAX_RETRIES": 1,
        }
        yield {"broker": broker, "overrides": overrides, "stack": stack}


@pytest.mark.parametrize(
    "crash", ["worker SIGKILLed", "pool child SIGKILLed", "retry refused: broker down"]
)
def test_the_next_trigger_after_a_crashed_sync_starts_a_new_one(
    stack: dict[str, Any], big_admin: DemoAdmin, crash: str
) -> None:
    overrides = stack["overrides"]
    if crash.startswith("retry"):
        # The download outlives its deadline (transient: retried) while the broker is down.
        overrides = {**overrides, "MANIFEST_DOWNLOAD_DEADLINE": 2}
    app = create_app("testing", overrides)
    celery: Celery = app.extensions["celery"]
    client = app.test_client()
    with app.app_context():
        store = get_store()
        settings = get_settings()
    current = stack["stack"].enter_context(worker(overrides))
    assert run_task(celery, send_beat_sync(celery)).info["outcome"] == "updated"
    big_admin.publish()
    new_id, _ = origin_release(big_admin, settings)
    big_admin.fault("slow_drip", **DRIP)

    first = client.post("/api/v1/manifest/sync", headers=TOKEN).get_json()
    staging = store.keys.table(new_id, "en", ITEM_TABLE)
    wait_until(lambda: store.redis.hlen(staging) > 0, 30, "the sync to write")
    if crash == "worker SIGKILLed":
        kill_group(current)
        current.stop()
        stack["stack"].enter_context(worker(overrides))
    elif crash == "pool child SIGKILLed":
        (child,) = pool_children(current)
        os.kill(child, signal.SIGKILL)
        dead = AsyncResult(first["task_id"], app=celery)
        wait_until(lambda: dead.state == "FAILURE", 30, "the task marked failed")
    else:
        stack["broker"].stop()
        # Celery rejects the task when its retry cannot be queued; its state stays PROGRESS.
        wait_until(lambda: "reject requeue=False" in current.output(), 30, "the retry refused")
        stack["broker"].start()
        wait_until(lambda: current.output().count("Connected to") >= 2, 60, "reconnection")
    big_admin.clear_faults()
    wait_until(lambda: not store.redis.exists(store.keys.lock), LOCK_TIMEOUT + 10, "the lock")

    second = client.post("/api/v1/manifest/sync", headers=TOKEN)

    assert second.status_code == 202
    body = second.get_json()
    if body["joined"] or body["task_id"] == first["task_id"]:
        raise JoinedDeadSync(f"the next trigger joined {body['task_id']} ({first=})")
    assert run_task(celery, body["task_id"]).info["outcome"] == "updated"
    assert store.live_id() == new_id


class TicketDropped(AssertionError):
    """A trigger dropped the ticket of a sync that was still running and started another."""


def test_a_trigger_while_the_sync_still_asks_bungie_joins_it(
    stack: dict[str, Any], big_admin: DemoAdmin
) -> None:
    """A sync that has started but not yet taken the lock is alive: later triggers join it."""
    overrides = stack["overrides"]
    app = create_app("testing", overrides)
    celery: Celery = app.extensions["celery"]
    client = app.test_client()
    stack["stack"].enter_context(worker(overrides))
    # Bungie asks to wait a second: the sync spends it in "checking", before taking the lock.
    big_admin.fault("http_429", count=1, retry_after=1)
    big_admin.clear_requests_log()
    first = client.post("/api/v1/manifest/sync", headers=TOKEN).get_json()
    wait_until(lambda: big_admin.requests_log(), 10, "the sync to ask Bungie", interval=0.005)

    second = client.post("/api/v1/manifest/sync", headers=TOKEN).get_json()

    if second["task_id"] != first["task_id"]:
        raise TicketDropped(f"{first['task_id']} was running; the trigger queued {second}")
    assert second["joined"]
    assert run_task(celery, first["task_id"]).info["outcome"] == "updated"
