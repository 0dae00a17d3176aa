"""A real Celery worker on a real broker: triggers, progress, coalescing, retries."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app import triggers
from app.extensions import get_celery
from app.extensions import get_keys
from app.extensions import get_store
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import DEMO_ITEMS
from tests.conftest import drop_keys
from tests.conftest import drop_queue
from tests.processes import CeleryWorker
from tests.processes import celery_worker

TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}


@pytest.fixture(scope="module")
def worker_settings(origin: DemoOriginProcess, redis_url: str) -> dict[str, Any]:
    """Settings shared by this module's worker and apps: their own key prefix and queue."""
    return {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
        "TRIGGER_RATE_LIMIT": 1000,
    }


@pytest.fixture(scope="module")
def worker(worker_settings: dict[str, Any], redis_client: redis.Redis) -> Iterator[CeleryWorker]:
    with celery_worker(worker_settings) as process:
        yield process
    prefix, queue = worker_settings["MANIFEST_KEY_PREFIX"], worker_settings["CELERY_QUEUE"]
    drop_queue(redis_client, queue)
    drop_keys(redis_client, prefix)


@pytest.fixture
def app(
    worker_settings: dict[str, Any],
    worker: CeleryWorker,
    admin: DemoAdmin,
    redis_client: redis.Redis,
) -> Flask:
    """The app as the worker sees it, with this module's cache emptied before each test."""
    drop_keys(redis_client, worker_settings["MANIFEST_KEY_PREFIX"])
    return create_app("testing", worker_settings)


def wait_for(app: Flask, client: FlaskClient, task_id: str, timeout: float = 60) -> list[dict]:
    """Poll the task API like the progress page does; return every distinct answer."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/api/v1/tasks/{task_id}").get_json()
        if not seen or answer != seen[-1]:
            seen.append(answer)
        if answer["state"] in ("SUCCESS", "FAILURE"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {seen[-3:]}")


def test_update_manifest_runs_a_sync_on_the_worker(
    app: Flask, signed_in: FlaskClient, admin: DemoAdmin
) -> None:
    # Slow the item table so the sync is long enough to be watched.
    admin.fault("slow_drip", table=ITEM_TABLE, chunk=65536, delay=0.15)
    page = signed_in.get("/updateManifest")
    assert page.status_code == 200
    with app.app_context():
        queued = get_store().redis.get(get_keys().queued_sync)
    assert isinstance(queued, bytes)
    task_id = queued.decode()
    assert task_id in page.get_data(as_text=True)

    answers = wait_for(app, signed_in, task_id)

    states = [a["state"] for a in answers]
    assert "PROGRESS" in states
    assert states[-1] == "SUCCESS"
    phases = {a["progress"]["phase"] for a in answers if a["state"] == "PROGRESS"}
    assert "ingesting" in phases or "downloading" in phases
    result = answers[-1]["result"]
    assert result["outcome"] == "updated"
    assert result["counts"]["en"][ITEM_TABLE] == DEMO_ITEMS
    # The cache is filled: the items page finds a known item.
    with app.app_context():
        known = get_store().search("", per_page=1).items[0]
    name = known["displayProperties"]["name"]
    found = signed_in.get("/items", query_string={"q": name})
    assert name in found.get_data(as_text=True)
    # The history entry records who asked.
    with app.app_context():
        entry = get_store().history()[0]
    assert entry["trigger"]["trigger"] == "web"
    assert entry["trigger"]["requested_by"].startswith(TestingConfig.ADMIN_USERNAME)
    assert entry["trigger"]["run_id"] == task_id


def test_fifty_concurrent_triggers_make_one_sync(app: Flask, admin: DemoAdmin) -> None:
    # The sync lasts seconds, so all fifty arrive while it is queued or running (one arriving
    # after it ended would rightly start the next).
    admin.fault("slow_drip", table=ITEM_TABLE, chunk=32768, delay=0.2)
    barrier = threading.Barrier(50)
    answers: list[tuple[int, dict]] = []

    def trigger() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post("/api/v1/manifest/sync", headers=TOKEN)
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=trigger) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {status for status, _ in answers} == {202}
    task_ids = {body["task_id"] for _, body in answers}
    assert len(task_ids) == 1
    assert sum(not body["joined"] for _, body in answers) == 1
    final = wait_for(app, app.test_client(), task_ids.pop())[-1]
    assert final["result"]["outcome"] == "updated"
    with app.app_context():
        assert len(get_store().history()) == 1
    downloads = [r for r in admin.requests_log() if ITEM_TABLE in r["path"]]
    assert len(downloads) == 1


def test_a_throttled_sync_is_retried_after_throttle_seconds(app: Flask, admin: DemoAdmin) -> None:
    admin.fault("throttle", count=1, throttle_seconds=1)
    with app.test_request_context():
        ticket = triggers.request_sync("test")

    answers = wait_for(app, app.test_client(), ticket.task_id)

    assert "RETRY" in [a["state"] for a in answers]
    assert answers[-1]["result"]["outcome"] == "updated"
    manifest_calls = [r for r in admin.requests_log() if r["path"].startswith("/Platform/")]
    assert len(manifest_calls) == 2


def test_a_configuration_error_is_not_retried(app: Flask, admin: DemoAdmin) -> None:
    admin.fault("bad_api_key")
    with app.test_request_context():
        ticket = triggers.request_sync("test")

    answers = wait_for(app, app.test_client(), ticket.task_id)

    assert "RETRY" not in [a["state"] for a in answers]
    result = answers[-1]["result"]
    assert (result["outcome"], result["error"]) == ("failed", "BungieConfigError")
    assert len([r for r in admin.requests_log() if r["path"].startswith("/Platform/")]) == 1
    # Nothing is left that would make the next trigger join a dead sync.
    with app.app_context():
        assert get_store().redis.get(get_keys().queued_sync) is None


def test_beat_schedule_runs_the_sync_task_with_expiry(app: Flask) -> None:
    with app.app_context():
        schedule = get_celery().conf.beat_schedule["sync-manifest"]
    assert schedule["task"] == "manifest.sync"
    assert schedule["schedule"] == TestingConfig.MANIFEST_POLL_SECONDS
    assert 0 < schedule["options"]["expires"] < TestingConfig.MANIFEST_POLL_SECONDS


@pytest.mark.skipif(
    not os.environ.get("TEST_AMQP_URL"),
    reason="TEST_AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672//); .ci/run sets it",
)
def test_the_same_sync_runs_with_rabbitmq_as_the_broker(
    worker_settings: dict[str, Any], admin: DemoAdmin, redis_client: redis.Redis
) -> None:
    settings = {
        **worker_settings,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_BROKER_URL": os.environ["TEST_AMQP_URL"],
    }
    app = create_app("testing", settings)
    try:
        with celery_worker(settings, concurrency=1):
            with app.test_request_context():
                ticket = triggers.request_sync("test")
            final = wait_for(app, app.test_client(), ticket.task_id)[-1]
        assert final["result"]["outcome"] == "updated"
    finally:
        with app.app_context():
            get_celery().control.purge()
        drop_keys(redis_client, settings["MANIFEST_KEY_PREFIX"])
