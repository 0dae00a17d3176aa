"""Scenario 4: the demo origin's faults, as the worker handles them: each waits as long as the
error asks (ThrottleSeconds, Retry-After), transient ones are retried, and the live release
stays whole meanwhile. (How sync.run classifies each fault is tests/test_faults.py's part.)"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from app import create_app
from app.extensions import get_store
from app.manifest.client import MANIFEST_PATH
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import run_task
from tests.reliability.helpers import send_beat_sync
from tests.reliability.servers import RedisServer
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

SLACK = 1.5  # seconds a retry may come later than asked (scheduling, polling)


@pytest.fixture(scope="module")
def module_stack(origin: DemoOriginProcess) -> Iterator[dict[str, Any]]:
    """A worker and the app on a Redis of their own, for the whole module."""
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": origin.url,
            "MANIFEST_KEY_PREFIX": unique("backoff"),
            "CELERY_QUEUE": unique("backoff"),
        }
        app = create_app("testing", overrides)
        process = stack.enter_context(worker(overrides))
        with app.app_context():
            yield {
                "app": app,
                "celery": app.extensions["celery"],
                "store": get_store(),
                "worker": process,
            }


@pytest.fixture
def stack(module_stack: dict[str, Any], admin: DemoAdmin) -> dict[str, Any]:
    """The module's worker with a release live and a newer one published (a unique version, so
    that it is new to the cache whatever earlier tests published)."""
    celery: Celery = module_stack["celery"]
    admin.publish(version=f"reliability-{uuid.uuid4().hex[:8]}")
    assert run_task(celery, send_beat_sync(celery)).info["outcome"] == "updated"
    admin.publish(version=f"reliability-{uuid.uuid4().hex[:8]}")
    admin.clear_requests_log()
    return module_stack


def manifest_calls(admin: DemoAdmin) -> int:
    return sum(r["path"] == MANIFEST_PATH for r in admin.requests_log())


def live_is_whole(store: ManifestStore, release_id: str) -> bool:
    info = store.live_release()
    if info is None or info.id != release_id:
        return False
    key = store.keys.table(release_id, "en", ITEM_TABLE)
    return store.redis.hlen(key) == info.counts["en"][ITEM_TABLE]


# fault, its options, the wait it asks for (s)
SHORT_WAITS = [
    ("throttle", {"count": 1, "throttle_seconds": 3}, 3.0),
    ("http_429", {"count": 1, "retry_after": 1}, 1.0),
    ("http_429", {"count": 1, "retry_after": 3}, 3.0),
]


@pytest.mark.parametrize(("fault", "options", "asked"), SHORT_WAITS)
def test_a_throttled_sync_waits_as_long_as_asked_then_succeeds(
    stack: dict[str, Any],
    admin: DemoAdmin,
    figures: Figures,
    fault: str,
    options: dict[str, Any],
    asked: float,
) -> None:
    store: ManifestStore = stack["store"]
    old = store.live_id()
    assert old is not None
    admin.fault(fault, **options)
    task_id = send_beat_sync(stack["celery"])

    wait_until(lambda: manifest_calls(admin) >= 1, 30, "the first manifest request", 0.005)
    first = time.monotonic()
    whole_meanwhile = live_is_whole(store, old)
    wait_until(lambda: manifest_calls(admin) >= 2, asked + 30, "the second request", 0.005)
    gap = time.monotonic() - first
    result = run_task(stack["celery"], task_id).info

    assert result["outcome"] == "updated"
    assert whole_meanwhile
    assert asked - 0.05 <= gap <= asked + SLACK, gap
    figures.scenario("backoff")["rows"].append(
        {
            "fault": f"{fault} {options}",
            "asks to wait (s)": asked,
            "waited (s)": round(gap, 2),
            "who waited": "the client, in the request" if gap < 2 else "the task (Celery retry)",
            "live release meanwhile": "old, whole" if whole_meanwhile else "CHANGED",
            "outcome": result["outcome"],
        }
    )


# fault, its options, the retry countdown expected (None: no retry)
LONG_WAITS = [
    ("maintenance", {"throttle_seconds": 900}, 900.0),
    ("maintenance", {"throttle_seconds": 5}, 60.0),
    ("html_503", {}, 60.0),
    ("truncated", {"table": ITEM_TABLE}, 60.0),
    ("not_found_always", {"table": ITEM_TABLE}, 60.0),
    ("oversized", {"table": ITEM_TABLE}, None),
    ("bad_api_key", {}, None),
]


def scheduled_in(celery: Celery, task_id: str) -> float | None:
    """Return in how many seconds the worker will run task `task_id` again, if scheduled."""
    replies = celery.control.inspect(timeout=1.0).scheduled() or {}
    for entries in replies.values():
        for entry in entries:
            if entry["request"]["id"] == task_id:
                eta = dt.datetime.fromisoformat(entry["eta"])
                return (eta - dt.datetime.now(dt.UTC)).total_seconds()
    return None


@pytest.mark.parametrize(("fault", "options", "countdown"), LONG_WAITS)
def test_a_long_wait_is_scheduled_not_slept_and_permanent_errors_are_not_retried(
    stack: dict[str, Any],
    admin: DemoAdmin,
    figures: Figures,
    fault: str,
    options: dict[str, Any],
    countdown: float | None,
) -> None:
    store: ManifestStore = stack["store"]
    celery: Celery = stack["celery"]
    old = store.live_id()
    assert old is not None
    admin.fault(fault, **options)
    task_id = send_beat_sync(celery)
    task = AsyncResult(task_id, app=celery)

    wait_until(lambda: task.state in ("RETRY", "SUCCESS", "FAILURE"), 30, "the first attempt")
    try:
        if countdown is None:
            assert task.state == "SUCCESS"
            assert task.info["outcome"] == "failed"
            planned = None
            calls_before = manifest_calls(admin)
            stack["worker"].wait_until_idle(celery)  # a retry would be queued or scheduled
            assert manifest_calls(admin) == calls_before
        else:
            assert task.state == "RETRY"
            planned = wait_until(lambda: scheduled_in(celery, task_id), 10, "the retry's ETA")
            assert planned is not None
            assert countdown - 3 <= planned <= countdown, planned
        check = store.last_check()
        assert check is not None
        error = check["error"]
        assert live_is_whole(store, old)
    finally:
        celery.control.revoke(task_id)
    figures.scenario("backoff-scheduled")["rows"].append(
        {
            "fault": f"{fault} {options}",
            "classified as": error,
            "retry scheduled in (s)": round(planned) if planned else "not retried",
            "live release meanwhile": "old, whole",
        }
    )
