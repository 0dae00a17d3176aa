"""The change log over the API: /api/v1/releases/<id>/changes and a definition's history,
checked against what the demo origin says each publish did."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from devtools.demo.control import DemoAdmin

CLASS_TABLE = "DestinyClassDefinition"
# What the demo origin is asked to do to the item table, each item getting one kind.
PUBLISH = {
    "added": 2,
    "removed": 1,
    "changed": 3,
    "renamed": 1,
    "restatted": 1,
    "revealed": 1,
    "redacted": 1,
}


def run_sync(app: Flask) -> sync.SyncResult:
    """Run the sync engine in-process, as a worker would."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    return result


def expected_kinds(published: dict[str, Any]) -> dict[int, str]:
    """Return, by item hash, the kind of change the log should list for what the origin did."""
    kinds = dict.fromkeys(published["added"], "added")
    kinds.update((h, "removed") for h in published["removed"])
    kinds.update((h, "changed") for h in published["changed"])
    kinds.update((r["hash"], "changed") for r in published["renamed"] + published["restatted"])
    kinds.update((h, "unclassified") for h in published["revealed"])
    kinds.update((h, "reclassified") for h in published["redacted"])
    return kinds


@pytest.fixture
def first(app: Flask) -> str:
    """Sync the origin's first release; return its id."""
    release_id = run_sync(app).release_id
    assert release_id is not None
    return release_id


@pytest.fixture
def published(app: Flask, admin: DemoAdmin, first: str) -> dict[str, Any]:
    """Publish a release that changes known items in every way, sync it; return what the
    origin says it did, with the new release's id."""
    change = admin.publish(**PUBLISH)
    change["release_id"] = run_sync(app).release_id
    return change


def changes(client: FlaskClient, release_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/releases/{release_id}/changes", query_string=params)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert isinstance(body, dict)
    return body


def every_page(client: FlaskClient, release_id: str, **params: Any) -> list[dict[str, Any]]:
    """Follow `next` from the first page to the last; return every change listed."""
    body = changes(client, release_id, **params)
    found = list(body["changes"])
    while body["next"] is not None:
        url = urlsplit(body["next"])
        response = client.get(f"{url.path}?{url.query}")
        assert response.status_code == 200
        body = response.get_json()
        found += body["changes"]
    return found


def test_the_log_lists_exactly_what_the_publish_did(
    client: FlaskClient, published: dict[str, Any], first: str
) -> None:
    body = changes(client, published["release_id"], per_page=200)

    listed = {(c["table"], c["hash"]): c["kind"] for c in body["changes"]}
    assert listed == {(ITEM_TABLE, h): kind for h, kind in expected_kinds(published).items()}
    assert body["total"] == len(listed)
    assert body["next"] is None
    release = body["release"]
    assert release["id"] == published["release_id"]
    assert release["version"] == published["version"]
    assert release["base"] == first
    assert release["log"] == "kept"
    assert release["changes"]["kept"] == len(listed)
    assert release["changes"]["cut"] == 0
    items = next(t for t in release["tables"] if t["table"] == ITEM_TABLE)
    counted = {kind: items[kind] for kind in PUBLISH if kind in items}
    assert counted == {"added": 2, "removed": 1, "changed": 5}
    assert (items["unclassified"], items["reclassified"]) == (1, 1)


def test_a_rename_and_a_stat_change_carry_their_old_and_new_values(
    client: FlaskClient, published: dict[str, Any]
) -> None:
    listed = {c["hash"]: c for c in every_page(client, published["release_id"])}
    (renamed,) = published["renamed"]
    (restatted,) = published["restatted"]

    assert listed[renamed["hash"]]["name"] == renamed["new"]
    assert listed[renamed["hash"]]["fields"] == [
        {"path": "displayProperties.name", "old": renamed["old"], "new": renamed["new"]}
    ]
    assert listed[restatted["hash"]]["fields"] == [
        {"path": restatted["path"], "old": restatted["old"], "new": restatted["new"]}
    ]
    (revealed,) = published["revealed"]
    assert {"path": "redacted", "old": True, "new": False} in listed[revealed]["fields"]
    for number in published["added"] + published["removed"]:
        assert listed[number]["fields"] == []
        assert listed[number]["name"]


def test_filters_by_table_kind_and_name(client: FlaskClient, published: dict[str, Any]) -> None:
    release_id = published["release_id"]
    (renamed,) = published["renamed"]
    part = renamed["new"].split()[-1].swapcase()

    added = changes(client, release_id, kind="added")
    by_name = changes(client, release_id, q=part)
    items = changes(client, release_id, table=ITEM_TABLE)
    classes = changes(client, release_id, table=CLASS_TABLE)
    both = changes(client, release_id, table=ITEM_TABLE, kind="removed")

    assert sorted(c["hash"] for c in added["changes"]) == sorted(published["added"])
    assert added["total"] == 2
    assert renamed["hash"] in {c["hash"] for c in by_name["changes"]}
    assert all(part.casefold() in c["name"].casefold() for c in by_name["changes"])
    assert items["total"] == len(expected_kinds(published))
    assert (classes["total"], classes["changes"]) == (0, [])
    assert [c["hash"] for c in both["changes"]] == published["removed"]


def test_pages_follow_next_with_the_same_filters(
    client: FlaskClient, published: dict[str, Any]
) -> None:
    release_id = published["release_id"]
    whole = changes(client, release_id, per_page=200)["changes"]

    first_page = changes(client, release_id, per_page=3, table=ITEM_TABLE)
    paged = every_page(client, release_id, per_page=3, table=ITEM_TABLE)

    assert len(first_page["changes"]) == 3
    url = urlsplit(first_page["next"])
    assert url.scheme in ("http", "https")
    assert url.netloc
    assert url.path == f"/api/v1/releases/{release_id}/changes"
    assert parse_qs(url.query) == {"page": ["2"], "per_page": ["3"], "table": [ITEM_TABLE]}
    assert paged == whole
    past = changes(client, release_id, per_page=3, page=99)
    assert (past["changes"], past["next"], past["total"]) == ([], None, len(whole))


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"table": "DestinyNopeDefinition"}, "DestinyNopeDefinition"),
        ({"kind": "renamed"}, "kind"),
        ({"page": "0"}, "page"),
        ({"page": "two"}, "page"),
        ({"per_page": "201"}, "per_page"),
        ({"per_page": "-1"}, "per_page"),
        ({"q": "x" * 101}, "q"),
        ({"undone": "maybe"}, "undone"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(
    client: FlaskClient, first: str, query: dict[str, str], named: str
) -> None:
    response = client.get(f"/api/v1/releases/{first}/changes", query_string=query)

    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "bad_request"
    assert named in body["message"]


def test_a_release_not_in_the_history_is_a_404(client: FlaskClient, first: str) -> None:
    response = client.get("/api/v1/releases/0123456789abcdef/changes")

    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert "0123456789abcdef" in response.get_json()["message"]


def test_a_first_release_has_no_log(client: FlaskClient, first: str) -> None:
    body = changes(client, first)

    assert body["release"]["log"] == "none"
    assert body["release"]["base"] is None
    assert (body["changes"], body["total"], body["next"]) == ([], 0, None)


def test_a_rollback_is_the_inverse_of_what_it_undid(
    app: Flask, client: FlaskClient, admin: DemoAdmin, published: dict[str, Any], first: str
) -> None:
    undone_id = published["release_id"]
    admin.rollback()
    assert run_sync(app).release_id == first

    undone = changes(client, undone_id, undone=1, per_page=200)
    built = changes(client, undone_id, per_page=200)
    rolled_back_to = changes(client, first)

    inverse = {
        "added": "removed",
        "removed": "added",
        "changed": "changed",
        "unclassified": "reclassified",
        "reclassified": "unclassified",
    }
    assert {c["hash"]: c["kind"] for c in undone["changes"]} == {
        h: inverse[kind] for h, kind in expected_kinds(published).items()
    }
    (renamed,) = published["renamed"]
    flipped = next(c for c in undone["changes"] if c["hash"] == renamed["hash"])
    assert flipped["fields"] == [
        {"path": "displayProperties.name", "old": renamed["new"], "new": renamed["old"]}
    ]
    assert undone["release"]["undone"]["by"] == first
    # Without ?undone=1, the release shows what built it; the release rolled back to, its own.
    assert {c["hash"]: c["kind"] for c in built["changes"]} == expected_kinds(published)
    assert built["release"]["undone"] is None
    assert rolled_back_to["release"]["log"] == "none"
    assert client.get(f"/api/v1/releases/{first}/changes?undone=1").status_code == 404


def test_a_definition_history_is_newest_first_across_releases(
    app: Flask, client: FlaskClient, admin: DemoAdmin, published: dict[str, Any], first: str
) -> None:
    (restatted,) = published["restatted"]
    added = published["added"][0]
    admin.rollback()
    run_sync(app)

    stat = client.get(f"/api/v1/definitions/{ITEM_TABLE}/{restatted['hash']}/history")
    new = client.get(f"/api/v1/definitions/{ITEM_TABLE}/{added}/history")
    never = client.get(f"/api/v1/definitions/{CLASS_TABLE}/1/history")

    assert stat.status_code == new.status_code == never.status_code == 200
    history = stat.get_json()["history"]
    assert [(h["release_id"], h["kind"], h["rollback"]) for h in history] == [
        (first, "changed", True),
        (published["release_id"], "changed", False),
    ]
    path, old, value = restatted["path"], restatted["old"], restatted["new"]
    assert history[0]["fields"] == [{"path": path, "old": value, "new": old}]
    assert history[1]["fields"] == [{"path": path, "old": old, "new": value}]
    assert history[1]["version"] == published["version"]
    assert history[0]["at"] >= history[1]["at"]
    assert [h["kind"] for h in new.get_json()["history"]] == ["removed", "added"]
    assert never.get_json() == {"table": CLASS_TABLE, "hash": 1, "history": []}


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("DestinyNopeDefinition/1", "DestinyNopeDefinition"),
        (f"{ITEM_TABLE}/abc", "abc"),
        (f"{ITEM_TABLE}/99999999999", "99999999999"),
    ],
)
def test_a_bad_table_or_hash_in_a_history_is_a_400(
    client: FlaskClient, first: str, path: str, named: str
) -> None:
    response = client.get(f"/api/v1/definitions/{path}/history")

    assert response.status_code == 400
    assert named in response.get_json()["message"]
