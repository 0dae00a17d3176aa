"""HTTP caching and CORS of /api/v1: what a cache or a browser gets from each read (ETag,
Cache-Control, 304 to If-None-Match), how a definition's ETag follows the definition across
releases, and that nothing which changes state may be asked for from another origin."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.api import definitions
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin

TOKEN = TestingConfig.API_TOKEN
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CLASS_TABLE = "DestinyClassDefinition"
ORIGIN = "https://tools.example"


def run_sync(app: Flask) -> sync.SyncResult:
    """Run the sync engine in-process, as a worker would."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    return result


@pytest.fixture
def synced(app: Flask) -> sync.SyncResult:
    return run_sync(app)


def first_item(client: FlaskClient) -> int:
    found = client.get("/api/v1/items?per_page=1").get_json()["items"]
    return int(found[0]["hash"])


def reads(client: FlaskClient, synced: sync.SyncResult) -> dict[str, str]:
    """Return a path of every read of the live release, by what it reads."""
    number = first_item(client)
    return {
        "manifest": "/api/v1/manifest",
        "items": "/api/v1/items?q=a&per_page=5",
        "item": f"/api/v1/items/{number}",
        "definition": f"/api/v1/definitions/{ITEM_TABLE}/{number}",
        "definition history": f"/api/v1/definitions/{ITEM_TABLE}/{number}/history",
        "history": "/api/v1/history?limit=5",
        "changes": f"/api/v1/releases/{synced.release_id}/changes",
        "player search": "/api/v1/players?name=Guardian%230001",
    }


def again(client: FlaskClient, path: str, etag: str, **headers: str) -> TestResponse:
    return client.get(path, headers={"If-None-Match": etag, **headers})


# -- ETag, Cache-Control, 304 --------------------------------------------------------------------


def test_every_read_has_an_etag_and_answers_304_to_it(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    for name, path in reads(client, synced).items():
        first = client.get(path)
        assert first.status_code == 200, (name, first.get_json())
        etag = first.headers["ETag"]
        assert etag.startswith('W/"'), (name, etag)

        held = again(client, path, etag)
        assert held.status_code == 304, name
        assert held.get_data() == b""
        assert held.headers["ETag"] == etag
        assert held.headers["Cache-Control"] == first.headers["Cache-Control"]

        other = again(client, path, '"someone-elses"')
        assert other.status_code == 200, name
        assert other.get_data() == first.get_data()


def test_what_follows_the_live_release_is_revalidated_each_time(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    shown = reads(client, synced)
    for name in ("manifest", "items", "item", "definition", "history", "changes"):
        assert client.get(shown[name]).headers["Cache-Control"] == "no-cache", name
    # About a person: only the asker's own cache may keep it.
    assert client.get(shown["player search"]).headers["Cache-Control"] == "private, no-cache"


def test_release_wide_answers_are_tagged_with_the_live_release(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    shown = reads(client, synced)
    assert synced.release_id is not None
    for name in ("manifest", "items", "history", "changes", "definition history"):
        assert synced.release_id in client.get(shown[name]).headers["ETag"], name


def test_if_none_match_compares_weakly_and_takes_lists_and_star(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    path = f"/api/v1/items/{first_item(client)}"
    etag = client.get(path).headers["ETag"]
    opaque = etag.removeprefix("W/")

    assert again(client, path, opaque).status_code == 304  # the strong form names it too
    assert again(client, path, f'"other", {etag}').status_code == 304
    assert again(client, path, "*").status_code == 304
    assert again(client, path, f'"{opaque[1:-2]}"').status_code == 200
    # `*` names a representation only where there is one.
    missing = again(client, f"/api/v1/definitions/{CLASS_TABLE}/1", "*")
    assert missing.status_code == 404
    assert again(client, "/api/v1/releases/0123456789abcdef/changes", "*").status_code == 404


def test_a_304_carries_what_the_200_said_of_the_definition(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    path = f"/api/v1/definitions/{ITEM_TABLE}/{first_item(client)}?lang=en"
    first = client.get(path)
    held = again(client, path, first.headers["ETag"])

    assert held.status_code == 304
    assert held.headers["X-Manifest-Release"] == synced.release_id


def test_an_unchanged_definition_keeps_its_etag_across_a_release_a_changed_one_does_not(
    app: Flask, client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    before = {
        number: client.get(f"/api/v1/items/{number}")
        for number in (
            int(i["hash"]) for i in client.get("/api/v1/items?per_page=200").get_json()["items"]
        )
    }
    # Every definition gets a new `index`, as Bungie's releases do.
    published = admin.publish(added=1, removed=1, changed=3, renamed=1, renumber=True)
    newer = run_sync(app)
    changed = set(published["changed"]) | {r["hash"] for r in published["renamed"]}
    unchanged = [n for n in before if n not in changed and n not in published["removed"]]
    assert changed <= set(before)
    assert unchanged

    for number in unchanged[:20]:
        etag = before[number].headers["ETag"]
        now = client.get(f"/api/v1/items/{number}")
        assert now.headers["X-Manifest-Release"] == newer.release_id
        assert now.get_json()["index"] != before[number].get_json()["index"]
        assert now.headers["ETag"] == etag, number
        assert again(client, f"/api/v1/items/{number}", etag).status_code == 304
    for number in changed:
        etag = before[number].headers["ETag"]
        now = again(client, f"/api/v1/items/{number}", etag)
        assert now.status_code == 200, number
        assert now.headers["ETag"] != etag
        assert now.get_data() != before[number].get_data()
    # What shows the whole release moves on with it.
    items = client.get("/api/v1/items?per_page=5")
    assert newer.release_id is not None
    assert newer.release_id in items.headers["ETag"]


def test_the_manifest_is_not_held_past_a_new_check(
    app: Flask, client: FlaskClient, synced: sync.SyncResult
) -> None:
    first = client.get("/api/v1/manifest")
    with app.app_context():
        unchanged = sync.run(get_store(), get_bungie(), trigger="test")
    assert unchanged.outcome == sync.UNCHANGED

    now = again(client, "/api/v1/manifest", first.headers["ETag"])
    assert now.status_code == 200
    assert now.get_json()["last_check"]["at"] > first.get_json()["last_check"]["at"]
    assert again(client, "/api/v1/manifest", now.headers["ETag"]).status_code == 304


def test_what_the_admin_sees_is_private_and_tagged_apart(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    for path in ("/api/v1/manifest", "/api/v1/history"):
        public = client.get(path)
        private = client.get(path, headers=BEARER)
        assert private.headers["Cache-Control"] == "private, no-cache"
        assert private.headers["ETag"] != public.headers["ETag"]
        assert {"Authorization", "Cookie"} <= set(private.vary)
        assert {"Authorization", "Cookie"} <= set(public.vary)
        # A copy of the public answer is not the admin's: it is sent whole.
        assert again(client, path, public.headers["ETag"], **BEARER).status_code == 200
        assert again(client, path, private.headers["ETag"], **BEARER).status_code == 304


def test_tasks_triggers_and_errors_are_kept_by_no_cache(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    triggered = client.post("/api/v1/manifest/sync", headers=BEARER)
    assert triggered.status_code == 202
    task = client.get(f"/api/v1/tasks/{triggered.get_json()['task_id']}", headers=BEARER)
    answers = {
        "trigger": triggered,
        "task": task,
        "refused trigger": client.post("/api/v1/manifest/sync"),
        "bad parameter": client.get("/api/v1/items?page=x"),
        "unknown item": client.get("/api/v1/items/1"),
        "unknown route": client.get("/api/v1/nothing-here"),
        "batch": client.post("/api/v1/definitions", json={CLASS_TABLE: [1]}),
    }
    for name, answer in answers.items():
        assert answer.headers["Cache-Control"] == "no-store", name
        assert "ETag" not in answer.headers, name
    assert task.status_code == 200


# -- CORS -----------------------------------------------------------------------------------------


def preflight(client: FlaskClient, path: str, method: str, headers: str = "") -> TestResponse:
    asked = {"Origin": ORIGIN, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return client.options(path, headers=asked)


def test_any_origin_may_read_and_see_the_etag(client: FlaskClient, synced: sync.SyncResult) -> None:
    for name, path in reads(client, synced).items():
        answer = client.get(path, headers={"Origin": ORIGIN})
        assert answer.headers["Access-Control-Allow-Origin"] == "*", name
        assert "ETag" in answer.headers["Access-Control-Expose-Headers"], name
        held = again(client, path, answer.headers["ETag"], Origin=ORIGIN)
        assert held.headers["Access-Control-Allow-Origin"] == "*", name
    error = client.get("/api/v1/items?page=x", headers={"Origin": ORIGIN})
    assert error.headers["Access-Control-Allow-Origin"] == "*"  # a page can read why


@pytest.mark.parametrize(
    "path", ["/api/v1/items", "/api/v1/manifest", f"/api/v1/definitions/{CLASS_TABLE}/1"]
)
def test_a_preflight_for_a_read_is_answered(client: FlaskClient, path: str) -> None:
    answer = preflight(client, path, "GET", "If-None-Match")

    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in answer.headers["Access-Control-Allow-Methods"]
    assert answer.headers["Access-Control-Allow-Headers"] == "If-None-Match"


def test_the_sync_trigger_answers_no_cors_and_its_preflight_is_refused(
    client: FlaskClient,
) -> None:
    refused = preflight(client, "/api/v1/manifest/sync", "POST", "Authorization")
    triggered = client.post("/api/v1/manifest/sync", headers={"Origin": ORIGIN, **BEARER})
    unauthorised = client.post("/api/v1/manifest/sync", headers={"Origin": ORIGIN})

    assert triggered.status_code == 202
    assert unauthorised.status_code == 401
    for answer in (refused, triggered, unauthorised):
        assert not [k for k, _ in answer.headers if k.startswith("Access-Control-")]


def test_a_preflight_for_another_method_on_a_read_is_refused(client: FlaskClient) -> None:
    for method in ("POST", "DELETE", "PUT"):
        answer = preflight(client, "/api/v1/items", method)
        assert "Access-Control-Allow-Origin" not in answer.headers, method


def test_the_batch_lookup_may_be_posted_from_any_origin(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    asked = preflight(client, "/api/v1/definitions", "POST", "Content-Type")
    answer = client.post("/api/v1/definitions", json={CLASS_TABLE: [1]}, headers={"Origin": ORIGIN})

    assert asked.headers["Access-Control-Allow-Origin"] == "*"
    assert asked.headers["Access-Control-Allow-Methods"] == "POST"
    assert asked.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" not in preflight(client, "/api/v1/definitions", "GET").headers.get(
        "Access-Control-Allow-Methods", ""
    )


# -- what a 304 costs ----------------------------------------------------------------------------


@pytest.mark.budget
def test_budget_a_304_reads_no_definition(
    client: FlaskClient,
    synced: sync.SyncResult,
    round_trips: list[list[tuple[str, ...]]],
    app: Flask,
) -> None:
    number = first_item(client)
    path = f"/api/v1/definitions/{ITEM_TABLE}/{number}"
    items = client.get("/api/v1/items?q=a").headers["ETag"]
    definition = client.get(path).headers["ETag"]
    with app.app_context():
        tracked = get_store().reader_live_id()[1]
    if not tracked:
        pytest.skip("this Redis cannot vouch for the live release (CLIENT TRACKING)")

    def trips(etag: str, asked: str) -> list[list[tuple[str, ...]]]:
        round_trips.clear()
        assert again(client, asked, etag).status_code == 304
        return list(round_trips)

    # The live release, which Redis vouches for: no round trip.
    assert trips(items, "/api/v1/items?q=a") == []
    # A definition this process answered: its ETag is known for the live release.
    assert trips(definition, path) == []
    # One it did not (another process did): its stored digest, in the one round trip of a read.
    definitions._etags.clear()
    read = trips(definition, path)
    assert len(read) == 1
    assert [c[0] for c in read[0]] == ["HMGET"]
