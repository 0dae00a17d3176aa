"""`manage.py tasks --purge` forgets the queued sync it dropped, never one that runs: a sync
checking Bungie holds no lock yet, and its heartbeat says it runs."""

from __future__ import annotations

import uuid

import redis
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner

from app.extensions import get_celery
from app.extensions import get_keys
from app.manifest import sync
from app.triggers import remember_task
from app.triggers import request_sync
from config import TestingConfig
from tests.conftest import queued_task_ids

AUTH = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}


def test_purge_spares_a_sync_that_checks_bungie(
    app: Flask, runner: FlaskCliRunner, client: FlaskClient, redis_client: redis.Redis
) -> None:
    # A task a worker took from the queue: it runs, checks Bungie (no lock yet) and beats.
    task_id = uuid.uuid4().hex
    with app.app_context():
        remember_task(task_id, trigger="beat")
        get_celery().backend.store_result(task_id, sync.Progress("checking").to_dict(), "PROGRESS")
        keys = get_keys()
    redis_client.set(keys.queued_sync, task_id, ex=60)
    redis_client.set(keys.heartbeat(task_id), 1, ex=60)

    purged = runner.invoke(args=["tasks", "--purge"], input="y\n")

    assert purged.exit_code == 0, purged.output
    status = client.get(f"/api/v1/tasks/{task_id}")
    assert status.status_code == 200
    assert status.get_json()["state"] == "PROGRESS"
    joined = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()
    assert (joined["task_id"], joined["joined"]) == (task_id, True)


def test_purge_forgets_the_queued_sync_it_dropped(
    app: Flask,
    runner: FlaskCliRunner,
    client: FlaskClient,
    redis_client: redis.Redis,
    celery_queue: str,
) -> None:
    with app.app_context():
        dropped = request_sync("test").task_id
    assert queued_task_ids(redis_client, celery_queue) == [dropped]

    purged = runner.invoke(args=["tasks", "--purge"], input="y\n")

    assert purged.exit_code == 0, purged.output
    assert client.get(f"/api/v1/tasks/{dropped}").status_code == 404
    started = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()
    assert started["joined"] is False
    assert started["task_id"] != dropped
    assert queued_task_ids(redis_client, celery_queue) == [started["task_id"]]
