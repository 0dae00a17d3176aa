"""Who asked for a sync, and from where, is shown to the signed-in admin and to API clients with
the token only: anonymous visitors see that a sync runs, and how far it is, not who started it."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app import triggers
from app.extensions import get_bungie
from app.extensions import get_celery
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from tests.conftest import CSRF
from tests.conftest import admin_session

AUTH = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
WHO = f"{TestingConfig.ADMIN_USERNAME} from 127.0.0.1"
ADDRESS = "from 127.0.0.1"


def text(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, path
    return response.get_data(as_text=True)


def queue_from_the_dashboard(client: FlaskClient) -> str:
    """Press "Check now" as the admin; return the task id of the sync it queued."""
    with client.session_transaction() as session:
        session.update(admin_session(client.application))
        session["csrf_token"] = CSRF
    response = client.post("/sync", data={"csrf_token": CSRF})
    assert response.status_code == 303
    task_id: str = response.location.rsplit("=", 1)[1]
    return task_id


def sync_as_the_admin(app: Flask) -> None:
    """Run a sync that the admin asked for from this machine, as a worker would."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="dashboard", requested_by=WHO)
    assert result.ok, result.summary()


def test_the_dashboard_tells_anonymous_visitors_a_sync_runs_but_not_its_id(
    app: Flask, client: FlaskClient
) -> None:
    task_id = queue_from_the_dashboard(app.test_client())

    page = text(client, "/")

    assert "A sync is queued or running" in page
    assert task_id not in page
    assert "/updateManifest?task=" not in page


def test_the_dashboard_shows_the_admin_the_running_task(app: Flask, signed_in: FlaskClient) -> None:
    task_id = queue_from_the_dashboard(signed_in)

    page = text(signed_in, "/")

    assert f"/updateManifest?task={task_id}" in page


def test_the_task_api_tells_who_asked_only_with_the_token(app: Flask, client: FlaskClient) -> None:
    task_id = queue_from_the_dashboard(app.test_client())

    anonymous = client.get(f"/api/v1/tasks/{task_id}").get_json()
    with_token = client.get(f"/api/v1/tasks/{task_id}", headers=AUTH).get_json()
    wrong_token = client.get(
        f"/api/v1/tasks/{task_id}", headers={"Authorization": "Bearer nope"}
    ).get_json()

    assert anonymous["state"] == "PENDING"
    assert anonymous["trigger"]["trigger"] == "dashboard"
    assert "requested_by" not in anonymous["trigger"]
    assert "request_id" not in anonymous["trigger"]
    assert wrong_token == anonymous
    assert with_token["trigger"]["requested_by"] == WHO
    assert with_token["trigger"]["request_id"]


def test_the_task_api_shows_anonymous_callers_the_progress(app: Flask, client: FlaskClient) -> None:
    task_id = queue_from_the_dashboard(app.test_client())
    progress = sync.Progress("downloading", "en", ITEM_TABLE, 1, 5, 0, None, 1024, 4096)
    with app.app_context():
        get_store().redis.set(get_store().keys.heartbeat(task_id), 1, ex=60)
        get_celery().backend.store_result(task_id, progress.to_dict(), "PROGRESS")

    body = client.get(f"/api/v1/tasks/{task_id}").get_json()

    assert body["state"] == "PROGRESS"
    assert body["progress"] == progress.to_dict()
    assert ADDRESS not in str(body)


def test_the_pages_name_who_asked_only_to_the_admin(app: Flask, client: FlaskClient) -> None:
    admin_client = app.test_client()
    with admin_client.session_transaction() as session:
        session.update(admin_session(app))
    sync_as_the_admin(app)
    with app.app_context():
        release_id = get_store().live_id()
    pages = ["/", "/history", f"/releases/{release_id}"]

    for path in pages:
        assert ADDRESS not in text(client, path), path
        assert "dashboard" in text(client, path), path  # how it was started stays public
        assert WHO in text(admin_client, path), path


def test_the_api_names_who_asked_only_with_the_token(app: Flask, client: FlaskClient) -> None:
    sync_as_the_admin(app)

    for path in ["/api/v1/manifest", "/api/v1/history"]:
        anonymous: Any = client.get(path).get_json()
        assert ADDRESS not in str(anonymous), path
        assert "requested_by" not in str(anonymous), path
        assert WHO in str(client.get(path, headers=AUTH).get_json()), path
    check = client.get("/api/v1/manifest").get_json()["last_check"]
    assert check["trigger"] == "dashboard"
    assert check["outcome"] == "updated"


def test_a_signed_in_session_counts_for_the_api_too(app: Flask, signed_in: FlaskClient) -> None:
    sync_as_the_admin(app)

    body = signed_in.get("/api/v1/history").get_json()

    assert body["history"][0]["trigger"]["requested_by"] == WHO


def test_the_record_itself_still_says_who_asked(app: Flask, admin: DemoAdmin) -> None:
    task_id = queue_from_the_dashboard(app.test_client())

    with app.app_context():
        record = triggers.known_task(task_id)

    assert record is not None
    assert record["requested_by"] == WHO
