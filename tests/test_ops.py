"""What operators rely on: /healthz, /readyz, `manage.py tasks` and `manage.py shell`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner

from app import create_app
from app.cli import shell_context
from app.extensions import get_bungie
from app.extensions import get_celery
from app.extensions import get_store
from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.store import ManifestStore
from app.triggers import request_sync
from devtools.demo.control import DemoAdmin
from tests.conftest import queued_task_ids


def test_healthz_answers(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_waits_for_a_successful_check(app: Flask, client: FlaskClient) -> None:
    before = client.get("/readyz")
    assert before.status_code == 503
    assert before.get_json() == {
        "status": "not ready",
        "failing": ["sync: no successful check yet"],
    }

    with app.app_context():
        sync.run(get_store(), get_bungie(), trigger="test")
    after = client.get("/readyz")

    assert after.status_code == 200
    assert after.get_json() == {"status": "ready", "failing": []}


def test_readyz_names_a_broker_that_does_not_answer(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    app = create_app("testing", {**app_overrides, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    failing = response.get_json()["failing"]
    assert any(reason.startswith("broker:") for reason in failing), failing


def test_tasks_without_a_worker_says_so(app: Flask, runner: FlaskCliRunner) -> None:
    # Control commands reach every worker on the broker; a control exchange of this test's own
    # keeps workers of other test runs on the same Redis from answering.
    with app.app_context():
        get_celery().conf.control_exchange = f"test-{uuid.uuid4().hex[:12]}"

    result = runner.invoke(args=["tasks", "--timeout", "0.5"])

    assert result.exit_code == 1
    assert "No worker answered within 0.5s" in result.output


@pytest.fixture
def empty_queue(redis_client: redis.Redis, celery_queue: str) -> Iterator[None]:
    """Drop what a test queued, even if it failed before purging: no worker should run it."""
    yield
    redis_client.delete(celery_queue)


@pytest.mark.usefixtures("empty_queue")
def test_tasks_purge_asks_first_then_drops_queued_tasks(
    app: Flask, runner: FlaskCliRunner, redis_client: redis.Redis, celery_queue: str
) -> None:
    with app.app_context():
        task_id = request_sync("test").task_id
    queued = queued_task_ids(redis_client, celery_queue)
    assert task_id in queued

    refused = runner.invoke(args=["tasks", "--purge"], input="n\n")

    assert refused.exit_code == 1
    assert "Drop every queued task?" in refused.output
    assert "Aborted" in refused.output
    assert task_id in queued_task_ids(redis_client, celery_queue)

    confirmed = runner.invoke(args=["tasks", "--purge"], input="y\n")

    assert confirmed.exit_code == 0, confirmed.output
    assert f"Dropped {len(queued)} queued task(s)." in confirmed.output
    assert queued_task_ids(redis_client, celery_queue) == []


def test_shell_context_has_the_tools_at_hand(app: Flask) -> None:
    with app.app_context():
        context = shell_context()
        try:
            assert context["app"] is app
            assert isinstance(context["store"], ManifestStore)
            assert context["store"].keys.prefix == app.config["MANIFEST_KEY_PREFIX"]
            assert isinstance(context["bungie"], BungieClient)
            assert isinstance(context["celery"], Celery)
            assert context["celery"] is get_celery()
            assert isinstance(context["redis"], redis.Redis)
            assert context["redis"].ping()
            assert context["sync"] is sync
        finally:
            context["bungie"].close()
