"""A sync whose heartbeat stopped is dead: its task reads LOST, the dashboard says so, the next
trigger starts a new sync, and the next sync takes the lock a dead holder left behind."""

from __future__ import annotations

import threading
import time
import uuid

import redis
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import get_bungie
from app.extensions import get_celery
from app.extensions import get_keys
from app.extensions import get_store
from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.heartbeat import Heartbeat
from app.manifest.store import ManifestStore
from app.triggers import remember_task
from config import TestingConfig
from tests.conftest import queued_task_ids

AUTH = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
CHECKING = sync.Progress("checking").to_dict()


def running_task(
    app: Flask, redis_client: redis.Redis, *, beating: bool, state: str = "PROGRESS"
) -> str:
    """A sync task that started (its state says it runs), queued for triggers to join; its
    heartbeat beats or has stopped."""
    task_id = uuid.uuid4().hex
    with app.app_context():
        remember_task(task_id, trigger="beat")
        # A task waiting for its retry holds the failure it retries.
        info = RuntimeError("Bungie throttled") if state == "RETRY" else CHECKING
        get_celery().backend.store_result(task_id, info, state)
        keys = get_keys()
    redis_client.set(keys.queued_sync, task_id, ex=60)
    if beating:
        redis_client.set(keys.heartbeat(task_id), 1, ex=60)
    return task_id


def test_a_running_task_whose_heartbeat_stopped_reads_lost(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    task_id = running_task(app, redis_client, beating=False)

    body = client.get(f"/api/v1/tasks/{task_id}").get_json()

    assert body["state"] == "LOST"
    assert body["progress"] is None
    assert body["result"] is None
    assert "stopped before it finished" in body["error"]


def test_a_running_task_that_beats_reads_its_progress(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    task_id = running_task(app, redis_client, beating=True)

    body = client.get(f"/api/v1/tasks/{task_id}").get_json()

    assert body["state"] == "PROGRESS"
    assert body["progress"] == CHECKING
    assert body["error"] is None


def test_a_task_waiting_for_its_retry_without_a_heartbeat_reads_lost(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    waiting = running_task(app, redis_client, beating=True, state="RETRY")
    lost = running_task(app, redis_client, beating=False, state="RETRY")

    assert client.get(f"/api/v1/tasks/{waiting}").get_json()["state"] == "RETRY"
    assert client.get(f"/api/v1/tasks/{lost}").get_json()["state"] == "LOST"


def test_a_trigger_after_a_lost_sync_starts_a_new_one(
    app: Flask,
    client: FlaskClient,
    redis_client: redis.Redis,
    key_prefix: str,
    celery_queue: str,
) -> None:
    dead = running_task(app, redis_client, beating=False)

    body = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()

    assert body["joined"] is False
    assert body["task_id"] != dead
    assert redis_client.get(f"{key_prefix}:task") == body["task_id"].encode()
    assert queued_task_ids(redis_client, celery_queue) == [body["task_id"]]


def test_a_trigger_joins_a_sync_that_checks_while_it_beats(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    checking = running_task(app, redis_client, beating=True)

    body = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()

    assert body["task_id"] == checking
    assert body["joined"] is True


def test_a_trigger_does_not_join_a_lock_holder_whose_heartbeat_stopped(
    app: Flask, client: FlaskClient, redis_client: redis.Redis, key_prefix: str
) -> None:
    with app.app_context():
        remember_task("dead-holder-0001", trigger="beat")
    redis_client.set(f"{key_prefix}:lock", "dead-holder-0001", ex=120)

    body = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()

    assert body["joined"] is False
    assert body["task_id"] != "dead-holder-0001"


def test_the_dashboard_says_a_lost_sync_stopped(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    running_task(app, redis_client, beating=False)

    page = client.get("/").get_data(as_text=True)

    assert "A sync is queued or running" not in page
    assert "The last sync stopped before it finished" in page


def test_the_dashboard_forgets_a_lost_sync_once_a_check_ran_after_it(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    running_task(app, redis_client, beating=False)
    with app.app_context():
        assert sync.run(get_store(), get_bungie(), trigger="beat").ok

    page = client.get("/").get_data(as_text=True)

    assert "The last sync stopped before it finished" not in page


def test_the_dashboard_shows_anonymous_visitors_what_a_beating_sync_does(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    running_task(app, redis_client, beating=True)

    page = client.get("/").get_data(as_text=True)

    assert "A sync is queued or running" in page
    assert "Checking Bungie for a new release" in page


def test_a_sync_takes_the_lock_a_dead_holder_left(
    redis_client: redis.Redis, store: ManifestStore, bungie: BungieClient
) -> None:
    redis_client.set(store.keys.lock, "dead-run", ex=120)

    result = sync.run(store, bungie)

    assert result.outcome == sync.UPDATED, result.summary()
    assert store.lock("observer").holder() is None


def test_a_sync_leaves_the_lock_to_a_holder_that_beats(
    redis_client: redis.Redis, store: ManifestStore, bungie: BungieClient
) -> None:
    redis_client.set(store.keys.lock, "live-run", ex=120)
    redis_client.set(store.keys.heartbeat("live-run"), 1, ex=120)

    result = sync.run(store, bungie)

    assert (result.outcome, result.running_id) == (sync.BUSY, "live-run")


def test_a_heartbeat_outlives_a_blocking_call_and_goes_with_the_run(
    redis_client: redis.Redis, store: ManifestStore
) -> None:
    key = store.keys.heartbeat("blocking-run")
    seen: list[bool] = []

    # A beat lives a second and comes every third of one: a stall of the beating thread up to
    # two thirds of a second (a loaded machine) still leaves the key alive.
    with Heartbeat(redis_client, store.keys, "blocking-run", lock_timeout=1.0):
        for _ in range(3):
            threading.Event().wait(1.1)  # a call that blocks for longer than a beat lives
            seen.append(bool(redis_client.exists(key)))

    assert seen == [True] * 3
    assert not redis_client.exists(key)


def test_a_task_heartbeat_lingers_then_lapses(
    redis_client: redis.Redis, store: ManifestStore
) -> None:
    key = store.keys.heartbeat("task-run")

    with Heartbeat(redis_client, store.keys, "task-run", lock_timeout=1.0, lingers=True):
        pass

    assert redis_client.exists(key)  # while the task stores its outcome
    deadline = time.monotonic() + 10
    while redis_client.exists(key) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert not redis_client.exists(key)
