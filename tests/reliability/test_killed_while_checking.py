"""Scenario: the worker dies at any moment of a sync, while it checks Bungie (before it takes the
lock) as well as while it builds under the lock.

Within 15 s of the kill the dead sync must read as over (`LOST`, or `FAILURE` when the worker's
main process saw its child die) on the task API and the dashboard, and the next trigger must
start a new sync that completes the new release. The lock keeps its production timeout (120 s):
a dead holder is known by its stopped heartbeat, not by waiting for its lock to lapse. A sync
that checks for longer than a heartbeat lives (a blocking wait on Bungie) must stay alive.

`KILLED_WHILE_CHECKING_RUNS` sets how many kills (cycling through the kill points); the default
is one per kill point.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import get_settings
from app.extensions import get_store
from app.manifest.heartbeat import HEARTBEAT_SECONDS
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import origin_release
from tests.reliability.helpers import run_task
from tests.reliability.servers import RedisServer
from tests.reliability.servers import TrackedWorker
from tests.reliability.servers import kill_group
from tests.reliability.servers import pool_children
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
TARGET = 15.0  # seconds from a kill to a trigger that starts the sync which completes
RUNNING_NOTICE = "A sync is queued or running"
LAST_TABLE = "DestinyItemTierTypeDefinition"
BEFORE_LAST = "DestinyInventoryBucketDefinition"
# Bungie asks to wait 30 s before the manifest is answered: the sync spends it checking.
LONG_CHECK = ("http_429", {"count": 1, "retry_after": 30})
DRIP_DOWNLOAD = ("slow_drip", {"table": ITEM_TABLE, "chunk": 16 * 1024, "delay": 0.05})
DRIP_WRITES = ("slow_drip", {"table": ITEM_TABLE, "chunk": 256 * 1024, "delay": 0.02})
DRIP_LAST = ("slow_drip", {"table": LAST_TABLE, "chunk": 64, "delay": 0.1})


class JoinedDeadSync(AssertionError):
    """The trigger after the kill handed back the dead sync instead of starting a new one."""


class LostWhileAlive(AssertionError):
    """A sync that was alive (checking Bungie) was reported lost, or a trigger left it."""


@dataclass
class Sync:
    """The sync about to be killed: its task, the release it builds, what a user can read."""

    task_id: str
    release_id: str
    items: int
    store: ManifestStore
    client: FlaskClient
    started: float

    def status(self) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/tasks/{self.task_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        body: dict[str, Any] = response.get_json()
        return body

    def phase(self) -> str | None:
        body = self.status()
        if body["state"] in ("SUCCESS", "FAILURE"):
            raise AssertionError(f"the sync ended before the kill point: {body}")
        return (body["progress"] or {}).get("phase") if body["state"] == "PROGRESS" else None

    def staged(self, table: str = ITEM_TABLE) -> int:
        key = self.store.keys.table(self.release_id, "en", table)
        return int(self.store.redis.hlen(key))


def checking_at_once(sync: Sync, admin: DemoAdmin) -> bool:
    return sync.phase() == "checking" and any(r["status"] == 429 for r in admin.requests_log())


def checking_past_a_heartbeat(sync: Sync, admin: DemoAdmin) -> bool:
    """Checking (a blocking wait on Bungie) for longer than a heartbeat lives, and alive."""
    if sync.status()["state"] == "LOST":
        raise LostWhileAlive(f"{sync.task_id} was checking Bungie and was reported lost")
    if not checking_at_once(sync, admin):
        return False
    return time.monotonic() - sync.started > HEARTBEAT_SECONDS * 1.5


def downloading(sync: Sync, admin: DemoAdmin) -> bool:
    progress = sync.status()["progress"] or {}
    return progress.get("table") == ITEM_TABLE and progress.get("bytes_done", 0) >= 256 * 1024


def writing_half(sync: Sync, admin: DemoAdmin) -> bool:
    return sync.staged() * 2 >= sync.items


def before_commit(sync: Sync, admin: DemoAdmin) -> bool:
    return sync.staged() == sync.items and sync.staged(BEFORE_LAST) > 0


@dataclass(frozen=True)
class KillPoint:
    """Where a sync dies: what paces it there, when it is there, and what is killed."""

    name: str
    fault: tuple[str, dict[str, Any]]
    reached: Callable[[Sync, DemoAdmin], bool]
    victim: str = "worker"


KILL_POINTS = [
    KillPoint("checking, at once", LONG_CHECK, checking_at_once),
    KillPoint("checking, past a heartbeat", LONG_CHECK, checking_past_a_heartbeat),
    KillPoint("checking, past a heartbeat", LONG_CHECK, checking_past_a_heartbeat, "pool child"),
    KillPoint("downloading (lock held)", DRIP_DOWNLOAD, downloading),
    KillPoint("writing, 50%", DRIP_WRITES, writing_half),
    KillPoint("writing, 50%", DRIP_WRITES, writing_half, "pool child"),
    KillPoint("before commit", DRIP_LAST, before_commit),
]
RUNS = int(os.environ.get("KILLED_WHILE_CHECKING_RUNS", len(KILL_POINTS)))


@pytest.fixture
def setup(big_origin: DemoOriginProcess) -> Iterator[dict[str, Any]]:
    """A Redis of this test's own and the app on it, with the lock's production timeout."""
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": big_origin.url,
            "MANIFEST_KEY_PREFIX": unique("checking"),
            "CELERY_QUEUE": unique("checking"),
            "BUNGIE_MAX_RETRY_WAIT": 60,
            "SYNC_MAX_RETRIES": 0,
            "TRIGGER_RATE_LIMIT": 10_000,
        }
        yield {"overrides": overrides, "app": create_app("testing", overrides), "stack": stack}


def sync_shown_over(sync: Sync, anonymous: FlaskClient) -> bool:
    """The dead sync reads as over: on its task status, and on the dashboard."""
    if sync.status()["state"] not in ("LOST", "FAILURE"):
        return False
    return RUNNING_NOTICE not in anonymous.get("/").get_data(as_text=True)


@pytest.mark.timeout(120 + 40 * RUNS)
def test_a_sync_killed_at_any_point_is_lost_within_seconds_and_the_next_trigger_completes(
    setup: dict[str, Any], big_admin: DemoAdmin, figures: Figures
) -> None:
    app: Flask = setup["app"]
    celery: Celery = app.extensions["celery"]
    api = app.test_client()
    anonymous = app.test_client()
    with app.app_context():
        store = get_store()
        settings = get_settings()
    assert app.config["MANIFEST_LOCK_TIMEOUT"] == 120
    current: TrackedWorker = setup["stack"].enter_context(worker(setup["overrides"]))
    first = api.post("/api/v1/manifest/sync", headers=TOKEN).get_json()
    assert run_task(celery, first["task_id"]).info["outcome"] == "updated"
    rows: list[dict[str, Any]] = []

    for number in range(1, RUNS + 1):
        kill = KILL_POINTS[(number - 1) % len(KILL_POINTS)]
        big_admin.publish()
        new_id, new_items = origin_release(big_admin, settings)
        big_admin.clear_requests_log()
        name, options = kill.fault
        big_admin.fault(name, **options)
        started = time.monotonic()
        task_id = api.post("/api/v1/manifest/sync", headers=TOKEN).get_json()["task_id"]
        sync = Sync(task_id, new_id, len(new_items), store, api, started)
        wait_until(functools.partial(kill.reached, sync, big_admin), 60, kill.name, interval=0.01)
        if kill.name.startswith("checking"):
            # Alive, so far: a trigger now joins it.
            joined = api.post("/api/v1/manifest/sync", headers=TOKEN).get_json()
            if joined["task_id"] != task_id:
                raise LostWhileAlive(f"{task_id} was checking; the trigger queued {joined}")

        if kill.victim == "worker":
            kill_group(current)
        else:
            (child,) = pool_children(current)
            os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        big_admin.clear_faults()
        if kill.victim == "worker":
            current.stop()
            current = setup["stack"].enter_context(worker(setup["overrides"]))

        wait_until(
            functools.partial(sync_shown_over, sync, anonymous),
            max(0.0, killed_at + TARGET - time.monotonic()),
            f"the sync killed at {kill.name!r} to read as over within {TARGET:.0f}s",
        )
        shown_over = time.monotonic() - killed_at
        shown = sync.status()["state"]
        retrigger = api.post("/api/v1/manifest/sync", headers=TOKEN).get_json()
        if retrigger["joined"] or retrigger["task_id"] == task_id:
            raise JoinedDeadSync(f"run {number} ({kill.name}): the trigger joined {retrigger}")
        result = run_task(celery, retrigger["task_id"]).info
        recovered = time.monotonic() - killed_at

        assert (result["outcome"], result["release_id"]) == ("updated", new_id), result
        assert store.live_id() == new_id
        rows.append(
            {
                "run": number,
                "killed": kill.victim,
                "where": kill.name,
                "sync's age at kill (s)": round(killed_at - started, 2),
                "dead sync reads": shown,
                "kill to shown over (s)": round(shown_over, 2),
                "kill to new release live (s)": round(recovered, 2),
            }
        )

    summary = figures.scenario("killed-while-checking")
    summary["rows"] = rows
    summary["summary"] = {
        "runs": len(rows),
        "kill points": len({(r["killed"], r["where"]) for r in rows}),
        "kills while checking": sum(r["where"].startswith("checking") for r in rows),
        "triggers that joined a dead sync": 0,
        "worst kill to shown over (s)": max(r["kill to shown over (s)"] for r in rows),
        "worst kill to new release live (s)": max(r["kill to new release live (s)"] for r in rows),
        "lock timeout (s)": app.config["MANIFEST_LOCK_TIMEOUT"],
        "heartbeat lives (s)": HEARTBEAT_SECONDS,
    }
