"""Scenario 1: the worker is SIGKILLed in the middle of ingesting a large table.

Readers must see the old release whole until the new one is whole; the next run completes
the sync and collects what the dead one staged; Slack hears of each release once.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from flask import Flask

from app import create_app
from app.extensions import get_settings
from app.extensions import get_store
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.fake_slack import FakeSlack
from tests.fake_slack import fake_slack
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import Expectation
from tests.reliability.helpers import Reader
from tests.reliability.helpers import leftovers
from tests.reliability.helpers import origin_release
from tests.reliability.helpers import run_task
from tests.reliability.helpers import send_beat_sync
from tests.reliability.servers import RedisServer
from tests.reliability.servers import TrackedWorker
from tests.reliability.servers import kill_group
from tests.reliability.servers import pool_children
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

LAST_TABLE = "DestinyItemTierTypeDefinition"
BEFORE_LAST = "DestinyInventoryBucketDefinition"
LOCK_TIMEOUT = 3  # seconds: how long the lock of a dead run blocks the next one
TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}

# Where the download stands when the worker dies: (entries staged, progress meta) -> reached?
Reached = Callable[[int, int, dict[str, Any], "Sync"], bool]


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: the fault that paces the sync there, and when it is reached."""

    name: str
    fault: dict[str, Any]
    reached: Reached
    share: float = 0.0


def downloading(staged: int, total: int, meta: dict[str, Any], sync: Sync) -> bool:
    return (
        meta.get("table") == ITEM_TABLE and meta.get("bytes_done", 0) >= 256 * 1024 and not staged
    )


def writing(share: float) -> Reached:
    def reached(staged: int, total: int, meta: dict[str, Any], sync: Sync) -> bool:
        return staged >= share * total

    return reached


def before_commit(staged: int, total: int, meta: dict[str, Any], sync: Sync) -> bool:
    return staged == total and sync.staged(BEFORE_LAST) > 0


DRIP_DOWNLOAD = {"table": ITEM_TABLE, "chunk": 16 * 1024, "delay": 0.05}
DRIP_WRITES = {"table": ITEM_TABLE, "chunk": 256 * 1024, "delay": 0.02}
DRIP_LAST = {"table": LAST_TABLE, "chunk": 64, "delay": 0.1}


def point(name: str) -> KillPoint:
    if name == "download":
        return KillPoint(name, DRIP_DOWNLOAD, downloading)
    if name.startswith("writes"):
        share = int(name.split()[1].rstrip("%")) / 100
        return KillPoint(name, DRIP_WRITES, writing(share), share)
    assert name == "before commit"
    return KillPoint(name, DRIP_LAST, before_commit)


# (what dies, where): 9 whole-worker kills, 3 pool-child kills.
RUNS = [
    ("worker", "download"),
    ("worker", "writes 10%"),
    ("worker", "writes 30%"),
    ("worker", "writes 50%"),
    ("worker", "writes 70%"),
    ("worker", "writes 90%"),
    ("worker", "before commit"),
    ("worker", "download"),
    ("worker", "before commit"),
    ("pool child", "download"),
    ("pool child", "writes 50%"),
    ("pool child", "before commit"),
]


@dataclass
class Sync:
    """The sync being killed: its task, the release it builds and how to read its staging."""

    store: ManifestStore
    release_id: str
    task_id: str
    started: float = field(default_factory=time.monotonic)

    def staged(self, table: str = ITEM_TABLE) -> int:
        return int(self.store.redis.hlen(self.store.keys.table(self.release_id, "en", table)))


@pytest.fixture
def setup(big_origin: DemoOriginProcess, big_admin: DemoAdmin) -> Iterator[dict[str, Any]]:
    """A Redis of this test's own, a fake Slack, and the app configured for both."""
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        slack = stack.enter_context(fake_slack())
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": big_origin.url,
            "MANIFEST_KEY_PREFIX": unique("killed"),
            "CELERY_QUEUE": unique("killed"),
            "MANIFEST_LOCK_TIMEOUT": LOCK_TIMEOUT,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            "SYNC_MAX_RETRIES": 0,
            "TRIGGER_RATE_LIMIT": 1000,
        }
        yield {
            "server": server,
            "slack": slack,
            "overrides": overrides,
            "app": create_app("testing", overrides),
            "stack": stack,
        }


def wait_for_point(sync: Sync, kill: KillPoint, celery: Celery, total: int) -> None:
    """Poll the staging keys and the task's progress until the kill point is reached."""
    progress = AsyncResult(sync.task_id, app=celery)

    def reached() -> bool:
        meta = progress.info if progress.state == "PROGRESS" else {}
        if progress.state in ("SUCCESS", "FAILURE"):
            raise AssertionError(f"the sync ended before {kill.name}: {progress.info}")
        return kill.reached(sync.staged(), total, meta or {}, sync)

    wait_until(reached, 60, kill.name, interval=0.005)


@pytest.mark.timeout(420)
def test_killed_workers_never_show_a_partial_release_and_the_next_run_completes(
    setup: dict[str, Any], big_admin: DemoAdmin, figures: Figures
) -> None:
    app: Flask = setup["app"]
    celery: Celery = app.extensions["celery"]
    slack: FakeSlack = setup["slack"]
    with app.app_context():
        store = get_store()
        settings = get_settings()
    reader_store = ManifestStore(redis.Redis.from_url(setup["server"].url), settings)
    rows: list[dict[str, Any]] = []
    announced: list[str] = []
    current: TrackedWorker = setup["stack"].enter_context(worker(setup["overrides"]))

    first = run_task(celery, send_beat_sync(celery)).info
    assert first["outcome"] == "updated", first
    live_id, live_items = origin_release(big_admin, settings)
    assert first["release_id"] == live_id
    sample = random.Random(8).sample(sorted(live_items), 150)
    reader = Reader(reader_store, Expectation(sample, {live_id: live_items}))
    reader.start()
    try:
        for number, (victim, where) in enumerate(RUNS, 1):
            kill = point(where)
            published = big_admin.publish()
            new_id, new_items = origin_release(big_admin, settings)
            picked = [h for key in ("added", "removed", "changed") for h in published[key][:40]]
            reader.expectation = Expectation(
                sample + picked, {live_id: live_items, new_id: new_items}
            )
            big_admin.fault("slow_drip", **kill.fault)
            sync = Sync(store, new_id, send_beat_sync(celery))

            wait_for_point(sync, kill, celery, len(new_items))
            if victim == "worker":
                kill_group(current)
            else:
                (child,) = pool_children(current)
                os.kill(child, signal.SIGKILL)
            killed_at = time.monotonic()
            big_admin.clear_faults()
            entries = sync.staged()
            assert store.live_id() == live_id, "an interrupted sync changed the live release"

            if victim == "worker":
                current.stop()
                current = setup["stack"].enter_context(worker(setup["overrides"]))
            else:
                dead = AsyncResult(sync.task_id, app=celery)

                def marked_failed(task: AsyncResult = dead) -> bool:
                    return task.state == "FAILURE"

                wait_until(marked_failed, 30, "the task marked failed")
                assert "WorkerLostError" in repr(dead.info)
            wait_until(lambda: not store.redis.exists(store.keys.lock), LOCK_TIMEOUT + 10, "lock")
            result = run_task(celery, send_beat_sync(celery)).info
            recovered = time.monotonic() - killed_at

            assert (result["outcome"], result["release_id"]) == ("updated", new_id), result
            assert store.live_id() == new_id
            stray = leftovers(store.redis, store)
            assert stray == [], f"run {number}: left behind {stray}"

            def announced_run(n: int = number) -> bool:
                return len(slack.received) >= n

            wait_until(announced_run, 30, f"message {number}")
            announced.append(published["version"])
            rows.append(
                {
                    "run": number,
                    "killed": victim,
                    "where": where,
                    "entries staged at kill": f"{entries:,} / {len(new_items):,}",
                    "to kill (s)": round(killed_at - sync.started, 2),
                    "kill to new release live (s)": round(recovered, 2),
                    "leftovers after next run": len(stray),
                }
            )
            live_id, live_items = new_id, new_items
    finally:
        stats = reader.stop()
        reader_store.redis.close()

    current.wait_until_idle(celery)  # A duplicate would have been sent by now.
    headers = [m["payload"]["blocks"][0]["text"]["text"] for m in slack.received]
    per_release = {v: sum(h.endswith(f"→ {v}") for h in headers) for v in announced}
    summary = figures.scenario("worker-killed")
    summary["rows"] = rows
    summary["summary"] = {
        "runs": len(rows),
        "whole-worker kills": sum(r["killed"] == "worker" for r in rows),
        "pool-child kills": sum(r["killed"] == "pool child" for r in rows),
        "reader rounds (lookup + definitions + count)": stats.reads,
        "wrong or partial reads": stats.error_count,
        "worst read round (ms)": round(stats.worst_seconds * 1000, 1),
        "releases seen by readers": len(stats.seen),
        "worst kill-to-live (s)": max(r["kill to new release live (s)"] for r in rows),
        "Slack messages / releases": f"{len(slack.received)} / {len(announced)}",
    }
    assert stats.error_count == 0, stats.errors
    assert stats.reads > 100
    assert per_release == dict.fromkeys(announced, 1), headers
    assert len(slack.received) == len(announced)
    # The kill points really were where they say.
    assert all(
        r["entries staged at kill"].startswith("0 ") for r in rows if r["where"] == "download"
    )
    assert all(
        r["entries staged at kill"].split(" / ")[0] == r["entries staged at kill"].split(" / ")[1]
        for r in rows
        if r["where"] == "before commit"
    )
