"""The JSON API under /api/v1: triggers, task status, the cached manifest, and its errors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_celery
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from app.triggers import known_task
from app.triggers import remember_task
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from tests.conftest import DEMO_ITEMS
from tests.conftest import admin_session
from tests.conftest import queued_task_ids

TOKEN = TestingConfig.API_TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLOSED_PORT = "redis://127.0.0.1:1/0"


@pytest.fixture
def synced(app: Flask) -> sync.SyncResult:
    """Fill the cache from the demo origin, as a worker would."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    return result


def origin_items(admin: DemoAdmin) -> dict[str, dict[str, Any]]:
    """Return the item table the demo origin serves now, by hash."""
    path = admin.state()["paths"]["jsonWorldComponentContentPaths"]["en"][ITEM_TABLE]
    response = requests.get(admin.url + path, timeout=30)
    response.raise_for_status()
    return response.json()


def assert_json_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error
    assert body["message"]
    assert set(body) == {"error", "message"}
    return body


# -- POST /manifest/sync ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcd"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "short", "basic", "no-scheme"],
)
def test_trigger_without_the_token_is_refused(
    client: FlaskClient, redis_client: redis.Redis, key_prefix: str, headers: dict[str, str]
) -> None:
    response = client.post("/api/v1/manifest/sync", headers=headers)
    assert_json_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert not redis_client.exists(f"{key_prefix}:task")


def test_trigger_queues_one_sync_and_says_where_to_poll(
    app: Flask, client: FlaskClient, redis_client: redis.Redis, celery_queue: str, key_prefix: str
) -> None:
    response = client.post("/api/v1/manifest/sync", headers={**AUTH, "X-Request-ID": "req-42"})

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"task_id", "status_url", "joined"}
    task_id = body["task_id"]
    assert body["joined"] is False
    assert body["status_url"] == f"http://localhost/api/v1/tasks/{task_id}"
    assert response.headers["Location"] == body["status_url"]
    queued = redis_client.get(f"{key_prefix}:task")
    assert isinstance(queued, bytes)
    assert queued.decode() == task_id
    assert queued_task_ids(redis_client, celery_queue) == [task_id]
    with app.app_context():
        trigger = known_task(task_id)
    assert trigger is not None
    assert trigger["trigger"] == "api"
    assert trigger["requested_by"] == "api from 127.0.0.1"
    assert trigger["request_id"] == "req-42"


def test_a_second_trigger_joins_the_queued_sync(
    client: FlaskClient, redis_client: redis.Redis, celery_queue: str
) -> None:
    first = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()
    second = client.post("/api/v1/manifest/sync", headers=AUTH)

    assert second.status_code == 202
    assert second.get_json() == {**first, "joined": True}
    assert second.headers["Location"] == first["status_url"]
    assert queued_task_ids(redis_client, celery_queue) == [first["task_id"]]


def test_a_trigger_without_request_id_gets_one(app: Flask, client: FlaskClient) -> None:
    task_id = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()["task_id"]
    with app.app_context():
        trigger = known_task(task_id)
    assert trigger is not None
    request_id = trigger["request_id"]
    assert len(request_id) == 32
    int(request_id, 16)


@pytest.mark.usefixtures("steady_rate_windows")
def test_triggers_past_the_rate_limit_get_429(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    app = create_app("testing", {**app_overrides, "RATE_LIMIT_WINDOW": 3600})
    client = app.test_client()
    allowed = app.config["TRIGGER_RATE_LIMIT"]
    for _ in range(allowed):
        assert client.post("/api/v1/manifest/sync", headers=AUTH).status_code == 202

    response = client.post("/api/v1/manifest/sync", headers=AUTH)

    body = assert_json_error(response, 429, "too_many_requests")
    assert f"at most {allowed}" in body["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 3600


def test_trigger_with_the_broker_down_is_503_and_leaves_nothing(
    app_overrides: dict[str, Any], admin: DemoAdmin, redis_client: redis.Redis, key_prefix: str
) -> None:
    app = create_app("testing", {**app_overrides, "CELERY_BROKER_URL": CLOSED_PORT})

    response = app.test_client().post("/api/v1/manifest/sync", headers=AUTH)

    body = assert_json_error(response, 503, "service_unavailable")
    assert "task queue is not answering" in body["message"]
    assert "CELERY_BROKER_URL" in body["message"]
    assert not redis_client.exists(f"{key_prefix}:task")
    assert not list(redis_client.scan_iter(match=f"{key_prefix}:task:*"))


def test_a_body_over_the_limit_is_413(
    client: FlaskClient, redis_client: redis.Redis, key_prefix: str
) -> None:
    response = client.post(
        "/api/v1/manifest/sync",
        headers=AUTH,
        data=b"x" * (TestingConfig.MAX_CONTENT_LENGTH + 1),
        content_type="application/octet-stream",
    )
    assert_json_error(response, 413, "request_entity_too_large")
    assert not redis_client.exists(f"{key_prefix}:task")


# -- GET /tasks/<task_id> -----------------------------------------------------------------


def test_a_queued_task_is_pending_with_its_trigger(client: FlaskClient) -> None:
    status_url = client.post("/api/v1/manifest/sync", headers=AUTH).get_json()["status_url"]

    response = client.get(status_url, headers=AUTH)  # who asked: with the token only

    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "task_id": status_url.rsplit("/", 1)[1],
        "state": "PENDING",
        "progress": None,
        "result": None,
        "error": None,
        "trigger": body["trigger"],
    }
    assert body["trigger"]["trigger"] == "api"
    assert body["trigger"]["requested_by"] == "api from 127.0.0.1"


def test_task_progress_success_and_failure_shapes(app: Flask, client: FlaskClient) -> None:
    task_id = uuid.uuid4().hex
    progress = sync.Progress("downloading", "en", ITEM_TABLE, 1, 5, 0, None, 1024, 4096)
    done = sync.SyncResult(sync.UPDATED, task_id, release_id="abc", version="1.2.3")
    with app.app_context():
        remember_task(task_id, trigger="test", requested_by="tester")
        backend = get_celery().backend
        backend.store_result(task_id, progress.to_dict(), "PROGRESS")
        get_store().redis.set(get_store().keys.heartbeat(task_id), 1, ex=60)  # it runs
        running = client.get(f"/api/v1/tasks/{task_id}", headers=AUTH).get_json()
        backend.store_result(task_id, done.to_dict(), "SUCCESS")
        finished = client.get(f"/api/v1/tasks/{task_id}").get_json()
        failed_id = uuid.uuid4().hex
        remember_task(failed_id, trigger="test")
        backend.store_result(failed_id, RuntimeError("Bungie said no"), "FAILURE")
        failed = client.get(f"/api/v1/tasks/{failed_id}").get_json()

    assert running["state"] == "PROGRESS"
    assert running["progress"] == progress.to_dict()
    assert running["result"] is None
    assert running["error"] is None
    assert running["trigger"]["requested_by"] == "tester"
    assert finished["state"] == "SUCCESS"
    assert finished["progress"] is None
    assert finished["result"] == done.to_dict()
    assert finished["error"] is None
    assert failed["state"] == "FAILURE"
    assert failed["error"] == "Bungie said no"
    assert failed["progress"] is None
    assert failed["result"] is None


def test_a_task_this_app_never_started_is_404(client: FlaskClient) -> None:
    response = client.get(f"/api/v1/tasks/{uuid.uuid4()}")
    assert_json_error(response, 404, "not_found")


@pytest.mark.parametrize("task_id", ["abc", "not-a-task-id", "0" * 65, "0123456789abcdeg"])
def test_a_malformed_task_id_is_400(client: FlaskClient, task_id: str) -> None:
    assert_json_error(client.get(f"/api/v1/tasks/{task_id}"), 400, "bad_request")


def test_task_status_with_the_result_backend_down_is_503(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    app = create_app("testing", {**app_overrides, "CELERY_RESULT_BACKEND": CLOSED_PORT})
    task_id = uuid.uuid4().hex
    with app.app_context():
        remember_task(task_id, trigger="test")

    response = app.test_client().get(f"/api/v1/tasks/{task_id}")

    body = assert_json_error(response, 503, "service_unavailable")
    assert "result backend" in body["message"]


# -- GET /manifest, /items, /items/<hash>, /history ---------------------------------------


def test_manifest_before_any_sync(client: FlaskClient) -> None:
    response = client.get("/api/v1/manifest")
    assert response.status_code == 200
    assert response.get_json() == {"release": None, "last_check": None}


def test_manifest_shows_the_live_release_and_last_check(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    body = client.get("/api/v1/manifest").get_json()

    release = body["release"]
    assert release["id"] == synced.release_id
    assert release["version"] == admin.state()["version"]
    assert release["counts"]["en"][ITEM_TABLE] == DEMO_ITEMS
    assert release["trigger"]["trigger"] == "test"
    assert body["last_check"]["outcome"] == sync.UPDATED


def test_items_pages_through_every_item(client: FlaskClient, synced: sync.SyncResult) -> None:
    first = client.get("/api/v1/items").get_json()
    last = client.get("/api/v1/items?page=6&per_page=50").get_json()

    assert first["release_id"] == synced.release_id
    assert first["total"] == DEMO_ITEMS
    assert (first["page"], first["per_page"], first["pages"]) == (1, 50, 6)
    assert len(first["items"]) == 50
    assert len(last["items"]) == DEMO_ITEMS - 5 * 50
    hashes = {i["hash"] for i in first["items"]} | {i["hash"] for i in last["items"]}
    assert len(hashes) == len(first["items"]) + len(last["items"])


def test_an_items_page_passes_the_stored_definitions_through_as_compact_json(
    app: Flask, client: FlaskClient, synced: sync.SyncResult, redis_client: redis.Redis
) -> None:
    response = client.get("/api/v1/items?per_page=20")

    body = response.get_data()
    assert response.mimetype == "application/json"
    assert body.endswith(b"}\n")
    assert body.count(b"\n") == 1
    assert synced.release_id is not None
    with app.app_context():
        store = get_store()
        table = store.keys.table(synced.release_id, "en", ITEM_TABLE)
        unpack = store.unpacker(synced.release_id, "en", ITEM_TABLE).unpack
    hashes = [item["hash"] for item in response.get_json()["items"]]
    stored = redis_client.hmget(table, hashes)
    assert len(hashes) == 20
    # Each whole definition as Bungie sent it, decompressed once, never decoded and re-encoded.
    assert all(isinstance(value, bytes) and unpack(value) in body for value in stored)


def test_items_match_the_origins_data(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    served = origin_items(admin)
    name = next(iter(served.values()))["displayProperties"]["name"]
    named = {
        int(h)
        for h, item in served.items()
        if name.casefold() in item["displayProperties"]["name"].casefold()
    }
    exotic_weapons = {
        int(h)
        for h, item in served.items()
        if item["itemType"] == 3 and item["inventory"]["tierType"] == 6
    }
    assert exotic_weapons

    by_name = client.get("/api/v1/items", query_string={"q": name.upper(), "per_page": 200})
    filtered = client.get("/api/v1/items", query_string={"type": 3, "tier": 6, "per_page": 200})

    assert by_name.get_json()["total"] == len(named)
    assert {i["hash"] for i in by_name.get_json()["items"]} == named
    assert filtered.get_json()["total"] == len(exotic_weapons)
    assert {i["hash"] for i in filtered.get_json()["items"]} == exotic_weapons


def test_items_by_class(client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult) -> None:
    served = origin_items(admin)
    warlock = {int(h) for h, item in served.items() if item["classType"] == 2}
    assert warlock

    body = client.get("/api/v1/items?class=2&per_page=200").get_json()

    assert body["total"] == len(warlock)
    assert {i["hash"] for i in body["items"]} == warlock


def test_items_before_any_sync_are_empty(client: FlaskClient) -> None:
    assert client.get("/api/v1/items").get_json() == {
        "release_id": None,
        "total": 0,
        "page": 1,
        "per_page": 50,
        "pages": 1,
        "items": [],
    }


def test_one_item_by_hash(client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult) -> None:
    served = origin_items(admin)
    item_hash, raw = next(iter(served.items()))

    response = client.get(f"/api/v1/items/{item_hash}")

    assert response.status_code == 200
    item = response.get_json()
    assert item["hash"] == int(item_hash)
    assert item["displayProperties"]["name"] == raw["displayProperties"]["name"]
    assert item["inventory"]["tierType"] == raw["inventory"]["tierType"]


def test_one_item_by_its_signed_hash(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    big = next(int(h) for h in origin_items(admin) if int(h) >= 2**31)
    response = client.get(f"/api/v1/items/{big - 2**32}")
    assert response.status_code == 200
    assert response.get_json()["hash"] == big


def test_an_unknown_item_is_404_naming_the_hash(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    body = assert_json_error(client.get("/api/v1/items/12345"), 404, "not_found")
    assert "12345" in body["message"]


def test_history_lists_releases_and_checks(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult, app: Flask
) -> None:
    admin.publish()
    with app.app_context():
        second = sync.run(get_store(), get_bungie(), trigger="test")

    everything = client.get("/api/v1/history").get_json()
    newest = client.get("/api/v1/history?limit=1").get_json()

    assert set(everything) == {"history", "checks"}
    assert [entry["id"] for entry in everything["history"]] == [
        second.release_id,
        synced.release_id,
    ]
    assert [check["outcome"] for check in everything["checks"]] == [sync.UPDATED] * 2
    assert [entry["id"] for entry in newest["history"]] == [second.release_id]
    assert len(newest["checks"]) == 1


def test_history_before_any_sync_is_empty(client: FlaskClient) -> None:
    assert client.get("/api/v1/history").get_json() == {"history": [], "checks": []}


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/items", {"type": "abc"}),
        ("/api/v1/items", {"type": "4"}),
        ("/api/v1/items", {"tier": "9"}),
        ("/api/v1/items", {"class": "-1"}),
        ("/api/v1/items", {"page": "0"}),
        ("/api/v1/items", {"per_page": "1000"}),
        ("/api/v1/items", {"q": "x" * 500}),
        ("/api/v1/items/abc", {}),
        ("/api/v1/items/99999999999", {}),
        ("/api/v1/history", {"limit": "0"}),
        ("/api/v1/history", {"limit": "101"}),
        ("/api/v1/history", {"limit": "abc"}),
        ("/api/v1/history", {"limit": "9" * 5000}),
    ],
)
def test_bad_parameters_are_400_with_a_reason(
    client: FlaskClient, path: str, query: dict[str, str]
) -> None:
    assert_json_error(client.get(path, query_string=query), 400, "bad_request")


# -- errors are JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unknown_path_is_json_404(client: FlaskClient, method: str) -> None:
    response = client.open("/api/v1/nothing-here", method=method, headers=AUTH)
    assert_json_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v1/manifest/sync", "POST"),
        ("DELETE", "/api/v1/items", "GET"),
        ("POST", "/api/v1/history", "GET"),
    ],
)
def test_a_wrong_method_is_json_405(
    client: FlaskClient, method: str, path: str, allowed: str
) -> None:
    response = client.open(path, method=method, headers=AUTH)
    assert_json_error(response, 405, "method_not_allowed")
    assert allowed in response.headers["Allow"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/manifest/sync"),
        ("GET", f"/api/v1/tasks/{uuid.uuid4().hex}"),
        ("GET", "/api/v1/manifest"),
        ("GET", "/api/v1/items"),
        ("GET", "/api/v1/items/1"),
        ("GET", "/api/v1/history"),
    ],
)
def test_redis_down_is_json_503(
    app_overrides: dict[str, Any], admin: DemoAdmin, method: str, path: str
) -> None:
    app = create_app("testing", {**app_overrides, "REDIS_URL": CLOSED_PORT})
    response = app.test_client().open(path, method=method, headers=AUTH)
    body = assert_json_error(response, 503, "service_unavailable")
    assert "Redis is not answering" in body["message"]


def test_an_unexpected_error_is_json_500_without_traceback(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("app.manifest.store.ManifestStore.live_release", explode)

    body = assert_json_error(client.get("/api/v1/manifest"), 500, "internal_server_error")
    assert "secret internals" not in body["message"]
    assert "Traceback" not in body["message"]


def test_no_api_answer_is_html(client: FlaskClient, synced: sync.SyncResult) -> None:
    answers = [
        client.get("/api/v1/manifest"),
        client.get("/api/v1/items?q=a"),
        client.get("/api/v1/items/1"),
        client.get("/api/v1/items/abc"),
        client.get("/api/v1/history"),
        client.get("/api/v1/tasks/abc"),
        client.get("/api/v1/"),
        client.get("/api/v1/items/1/extra"),
        client.put("/api/v1/manifest"),
        client.post("/api/v1/manifest/sync"),
        client.post("/api/v1/manifest/sync", headers=AUTH),
    ]
    for response in answers:
        assert response.mimetype == "application/json", response.request.path
        assert not response.get_data(as_text=True).lstrip().startswith("<")


@pytest.mark.budget
def test_budget_a_trigger_while_a_sync_runs_joins_it_in_one_round_trip(
    app: Flask,
    client: FlaskClient,
    redis_client: redis.Redis,
    key_prefix: str,
    round_trips: list[list[tuple[str, ...]]],
) -> None:
    with app.app_context():
        remember_task("running-task-0001", trigger="beat")
    redis_client.set(f"{key_prefix}:lock", "running-task-0001", ex=60)
    redis_client.set(f"{key_prefix}:task:running-task-0001:alive", 1, ex=60)  # its heartbeat
    with client.session_transaction() as session:
        session.update(admin_session(app))
    round_trips.clear()

    api = client.post("/api/v1/manifest/sync", headers=AUTH)
    api_trips = list(round_trips)
    client.get("/updateManifest")  # a process's first page also checks the credential once
    round_trips.clear()
    page = client.get("/updateManifest")

    assert api.status_code == 202
    assert api.get_json()["task_id"] == "running-task-0001"
    assert api.get_json()["joined"] is True
    assert page.status_code == 200
    assert "running-task-0001" in page.get_data(as_text=True)
    # Counted in the rate window, and the sync to join (with its record) found: one trip each.
    assert [[command[0] for command in trip] for trip in api_trips] == [["EVALSHA"]]
    # The page's session check reads the admin's session version from the tracked pointer:
    # no round trip while nobody signs out.
    assert [[command[0] for command in trip] for trip in round_trips] == [["EVALSHA"]]
    assert redis_client.keys(f"{key_prefix}:rate:trigger:*")
