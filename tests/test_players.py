"""Players: search, profiles and equipped items resolved through the cache, pages and JSON."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from tests.conftest import API_KEY
from tests.conftest import DEMO_ITEMS
from tests.conftest import queued_task_ids

GUARDIAN = "Guardian%230001"
NEW_ITEMS = "Guardian%230003"
PRIVATE = "Private%230002"
TWO_PLATFORMS = "Wanderer%230004"
NOBODY = "Nobody%239999"
CLOSED_PORT = "redis://127.0.0.1:1/0"


def text(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


def run_sync(app: Flask) -> None:
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.ok, result.summary()


@pytest.fixture
def synced(app: Flask) -> None:
    """The cache holding the origin's first release."""
    run_sync(app)


def origin_items(admin: DemoAdmin) -> dict[str, dict[str, Any]]:
    """Return the item table the demo origin serves now, by hash."""
    return origin_table(admin, ITEM_TABLE)


def origin_table(admin: DemoAdmin, table: str) -> dict[str, dict[str, Any]]:
    """Return a table the demo origin serves now, by hash."""
    path = admin.state()["paths"]["jsonWorldComponentContentPaths"]["en"][table]
    response = requests.get(admin.url + path, timeout=30)
    response.raise_for_status()
    return response.json()


def player_path(client: FlaskClient, name: str) -> str:
    """Search like a visitor and return the player page the search redirects to."""
    response = client.get(f"/players?name={name}")
    assert response.status_code == 302, text(response)
    return response.headers["Location"]


def origin_equipment(admin: DemoAdmin, path: str) -> dict[str, list[int]]:
    """Ask the origin itself what each character of the player at `path` has equipped."""
    _, _, membership_type, membership_id = path.split("/")
    response = requests.get(
        f"{admin.url}/Platform/Destiny2/{membership_type}/Profile/{membership_id}/",
        params={"components": "205"},
        headers={"X-API-Key": API_KEY},
        timeout=30,
    )
    equipment = response.json()["Response"]["characterEquipment"]["data"]
    return {cid: [item["itemHash"] for item in data["items"]] for cid, data in equipment.items()}


def profile_requests(admin: DemoAdmin) -> list[dict[str, Any]]:
    return [r for r in admin.requests_log() if "/Profile/" in r["path"]]


def search_requests(admin: DemoAdmin) -> list[dict[str, Any]]:
    return [r for r in admin.requests_log() if "SearchDestinyPlayer" in r["path"]]


def assert_json_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == error
    return body


# -- search and the player page ---------------------------------------------------------------


def test_search_leads_to_the_page_with_the_players_items_and_tiers(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    items = origin_items(admin)
    damage_types = origin_table(admin, "DestinyDamageTypeDefinition")
    path = player_path(client, GUARDIAN)
    equipment = origin_equipment(admin, path)

    response = client.get(path)
    page = text(response)

    assert response.status_code == 200
    assert "Guardian#0001" in page
    for class_name in ("Titan", "Hunter", "Warlock"):
        assert f"<h2>{class_name}</h2>" in page
    worn = [str(h) for hashes in equipment.values() for h in hashes]
    assert len(worn) >= 3 * 8
    for item_hash in worn:
        item = items[item_hash]
        inventory = item["inventory"]
        assert f'href="/items/{item_hash}">{item["displayProperties"]["name"]}</a>' in page
        assert f'tier-{inventory["tierType"]}">{inventory["tierTypeName"]}<' in page
        assert item["displayProperties"]["icon"] in page
        if item.get("defaultDamageTypeHash"):
            damage = damage_types[str(item["defaultDamageTypeHash"])]["displayProperties"]["name"]
            assert f"{item['itemTypeDisplayName']} · {damage} · " in page
    assert "unknown item" not in page


def test_each_player_page_shows_its_own_equipment_when_pages_are_shown_again(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    # A process keeps players' characters rendered: pages shown in turn, and again, must each
    # show the equipment of their own player.
    items = origin_items(admin)
    listing = text(client.get(f"/players?name={TWO_PLATFORMS}"))
    paths = [player_path(client, GUARDIAN), *re.findall(r'href="(/players/\d+/\d+)"', listing)]
    worn = {
        path: {str(h) for hashes in origin_equipment(admin, path).values() for h in hashes}
        for path in paths
    }
    assert len(paths) == 3
    assert len({frozenset(hashes) for hashes in worn.values()}) == 3

    for path in [*paths, *paths]:
        page = text(client.get(path))
        shown = {h for h in items if f'href="/items/{h}">' in page}
        assert shown == worn[path]


def test_search_ignores_case_and_lists_several_memberships(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    assert player_path(client, "gUARDIAN%230001") == player_path(client, GUARDIAN)

    response = client.get(f"/players?name={TWO_PLATFORMS}")
    page = text(response)

    assert response.status_code == 200
    assert "more than one platform" in page
    assert "Wanderer#0004 on Steam" in page
    assert "Wanderer#0004 on PlayStation" in page
    assert page.count('href="/players/') == 2


def test_the_players_page_without_a_name_shows_the_form(client: FlaskClient) -> None:
    response = client.get("/players")

    assert response.status_code == 200
    assert 'name="name"' in text(response)
    assert 'href="/players">Players</a>' in text(client.get("/"))


# -- unknown items and the sync they ask for --------------------------------------------------


def test_unknown_items_show_ask_for_one_sync_and_resolve_after_it(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    synced: None,
    redis_client: redis.Redis,
    celery_queue: str,
) -> None:
    path = player_path(client, NEW_ITEMS)

    first = client.get(path)

    assert first.status_code == 200
    assert len(queued_task_ids(redis_client, celery_queue)) == 1
    assert "A sync has been asked for" in text(first)
    again = client.get(path)
    unknown = client.get(f"/api/v1{path}").get_json()["unknown_items"]
    assert again.status_code == 200
    assert len(unknown) >= 2
    for item_hash in unknown:
        assert f"unknown item {item_hash}" in text(first)
    assert len(queued_task_ids(redis_client, celery_queue)) == 1

    published = admin.publish()
    run_sync(app)
    items = origin_items(admin)
    page = text(client.get(path))

    assert set(unknown) <= set(published["added"])
    assert "unknown item" not in page
    for item_hash in unknown:
        assert items[str(item_hash)]["displayProperties"]["name"] in page
    assert len(queued_task_ids(redis_client, celery_queue)) == 1


def test_unknown_items_before_any_sync_ask_for_one(
    client: FlaskClient, admin: DemoAdmin, redis_client: redis.Redis, celery_queue: str
) -> None:
    page = text(client.get(player_path(client, GUARDIAN)))

    assert "Nothing synced yet" in page
    assert "unknown item" in page
    assert len(queued_task_ids(redis_client, celery_queue)) == 1


def test_a_broker_down_is_logged_and_the_page_still_shown(
    app_overrides: dict[str, Any], admin: DemoAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app("testing", {**app_overrides, "CELERY_BROKER_URL": CLOSED_PORT})
    run_sync(app)
    client = app.test_client()
    path = player_path(client, NEW_ITEMS)

    with caplog.at_level(logging.WARNING, logger="app.players"):
        first = client.get(path)
        second = client.get(path)

    assert first.status_code == second.status_code == 200
    assert "unknown item" in text(first)
    # Each load tried: a sync that never reached the queue does not hold back the next.
    asked = [r for r in caplog.records if "Could not ask for a sync" in r.getMessage()]
    assert len(asked) == 2


# -- errors -----------------------------------------------------------------------------------


def test_a_private_profile_is_a_clear_403(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    path = player_path(client, PRIVATE)

    response = client.get(path)
    body = assert_json_error(client.get(f"/api/v1{path}"), 403, "forbidden")

    assert response.status_code == 403
    assert "keeps their Destiny profile private" in text(response)
    assert "keeps their Destiny profile private" in body["message"]


def test_a_profile_without_its_components_counts_as_private(
    app: Flask, monkeypatch: pytest.MonkeyPatch, admin: DemoAdmin
) -> None:
    hidden = {"profile": {"privacy": 2}, "characters": {"privacy": 2}}
    monkeypatch.setattr("app.manifest.client.BungieClient.get_platform", lambda self, path: hidden)

    response = app.test_client().get("/players/3/4611686018400000001")

    assert response.status_code == 403
    assert "private" in text(response)


def test_a_name_nobody_has_is_404(client: FlaskClient, admin: DemoAdmin, synced: None) -> None:
    page = client.get(f"/players?name={NOBODY}")
    body = assert_json_error(client.get(f"/api/v1/players?name={NOBODY}"), 404, "not_found")

    assert page.status_code == 404
    assert "No player is named Nobody#9999" in text(page)
    assert 'name="name"' in text(page)
    assert "Nobody#9999" in body["message"]


def test_a_membership_bungie_does_not_know_is_404(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    page = client.get("/players/3/4611686018400000001")
    body = assert_json_error(client.get("/api/v1/players/3/4611686018400000001"), 404, "not_found")

    assert page.status_code == 404
    assert "no Destiny profile 4611686018400000001 on Steam" in text(page)
    assert "4611686018400000001" in body["message"]


def test_bungie_in_maintenance_is_a_clear_503(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    path = player_path(client, GUARDIAN)
    admin.fault("maintenance")

    page = client.get(path)
    # A name not searched before: a cached search would not ask Bungie.
    search = client.get(f"/players?name={TWO_PLATFORMS}")
    body = assert_json_error(client.get(f"/api/v1{path}"), 503, "service_unavailable")
    api_search = client.get(f"/api/v1/players?name={TWO_PLATFORMS}")

    for response in (page, search):
        assert response.status_code == 503
        assert "down for maintenance" in text(response)
        assert "Traceback" not in text(response)
    assert "down for maintenance" in body["message"]
    assert api_search.status_code == 503
    assert int(page.headers["Retry-After"]) >= 30


def test_bungie_refusing_the_key_says_so_without_the_key(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    app = create_app("testing", {**app_overrides, "BUNGIE_API_KEY": "wrong-key-for-this-test"})

    response = app.test_client().get(f"/api/v1/players?name={GUARDIAN}")

    body = assert_json_error(response, 503, "service_unavailable")
    assert "BUNGIE_API_KEY" in body["message"]
    assert "wrong-key-for-this-test" not in body["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/players/abc/4611686018400000001",
        "/players/0/4611686018400000001",
        "/players/-1/4611686018400000001",
        "/players/1000/4611686018400000001",
        "/players/3/abc",
        "/players/3/0",
        "/players/3/-5",
        "/players/3/99999999999999999999",
        "/players/3/9223372036854775808",
        "/players/3/1e5",
        "/players/3/%EF%BC%91",
    ],
)
def test_bad_membership_parameters_are_400(
    client: FlaskClient, admin: DemoAdmin, path: str
) -> None:
    page = client.get(path)
    body = assert_json_error(client.get(f"/api/v1{path}"), 400, "bad_request")

    assert page.status_code == 400
    assert "membership" in body["message"]
    assert admin.requests_log() == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Guardian",
        "Guardian%23",
        "%230001",
        "Guardian%2312345",
        "Guardian%23abcd",
        "x" * 65 + "%231",
    ],
)
def test_bad_bungie_names_are_400(client: FlaskClient, admin: DemoAdmin, name: str) -> None:
    body = assert_json_error(client.get(f"/api/v1/players?name={name}"), 400, "bad_request")
    assert "Bungie name" in body["message"]
    if name:
        page = client.get(f"/players?name={name}")
        assert page.status_code == 400
        assert 'name="name"' in text(page)
    assert admin.requests_log() == []


# -- caching and Redis round trips ------------------------------------------------------------


def test_profiles_and_searches_are_cached_for_a_while(
    client: FlaskClient, admin: DemoAdmin, synced: None, redis_client: redis.Redis, key_prefix: str
) -> None:
    path = player_path(client, GUARDIAN)
    _, _, membership_type, membership_id = path.split("/")
    client.get(path)
    admin.clear_requests_log()

    assert player_path(client, GUARDIAN) == path
    assert client.get(path).status_code == 200
    assert client.get(f"/api/v1{path}").status_code == 200

    assert search_requests(admin) == profile_requests(admin) == []
    key = f"{key_prefix}:profile:{membership_type}:{membership_id}"
    assert 0 < redis_client.ttl(key) <= TestingConfig.PROFILE_CACHE_SECONDS


def test_without_a_profile_cache_every_load_asks_bungie(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    app = create_app("testing", {**app_overrides, "PROFILE_CACHE_SECONDS": 0})
    run_sync(app)
    client = app.test_client()
    path = player_path(client, GUARDIAN)

    client.get(path)
    client.get(path)

    assert len(profile_requests(admin)) == 2


def test_a_kept_profile_is_resolved_against_the_release_live_now(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    synced: None,
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    path = player_path(client, GUARDIAN)
    client.get(path)
    profile_key = key_prefix + path.replace("/players/", ":profile:").replace("/", ":")

    kept = client.get(path)

    assert kept.status_code == 200
    assert "Kinetic" in text(kept) or "Arc" in text(kept) or "Void" in text(kept)

    # Another release: the kept profile is resolved against it, without asking Bungie, and
    # kept no longer than it was to be.
    admin.publish(changed=DEMO_ITEMS // 2, added=0, removed=0)
    run_sync(app)
    items = origin_items(admin)
    ttl = redis_client.pttl(profile_key)
    admin.clear_requests_log()

    fresh = text(client.get(path))

    assert profile_requests(admin) == []
    assert 0 < redis_client.pttl(profile_key) <= ttl
    worn = client.get(f"/api/v1{path}").get_json()["characters"][0]["items"]
    assert [slot["name"] for slot in worn] == [
        items[str(slot["item_hash"])]["displayProperties"]["name"] for slot in worn
    ]
    assert all(html.unescape(slot["name"]) in fresh for slot in worn)


@pytest.mark.budget
def test_budget_a_kept_page_takes_one_round_trip_until_another_release_is_live(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    synced: None,
    round_trips: list[list[tuple[str, ...]]],
    key_prefix: str,
) -> None:
    path = player_path(client, GUARDIAN)
    client.get(path)
    profile_key = key_prefix + path.replace("/players/", ":profile:").replace("/", ":")
    round_trips.clear()

    assert client.get(path).status_code == 200

    # The kept profile, and nothing else (Redis vouches for the live release).
    assert round_trips == [[("GET", profile_key)]]

    admin.publish(changed=DEMO_ITEMS // 2, added=0, removed=0)
    run_sync(app)
    round_trips.clear()

    assert client.get(path).status_code == 200

    # The pointer again (Redis said it moved), the kept profile, then, in one round trip, the
    # four tables' dictionaries (first read of this release here), items, classes and buckets
    # by hash and damage types whole.
    names = [[command[0] for command in trip] for trip in round_trips[:3]]
    assert names == [["GET"], ["GET"], ["GET"] * 4 + ["HMGET", "HMGET", "HMGET", "HGETALL"]]
    assert round_trips[0] == [("GET", f"{key_prefix}:current")]


# -- the JSON twin ----------------------------------------------------------------------------


def test_json_search_and_player_match_the_page(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    found = client.get(f"/api/v1/players?name={GUARDIAN}").get_json()
    (membership,) = found["players"]
    path = f"/players/{membership['membership_type']}/{membership['membership_id']}"

    body = client.get(f"/api/v1{path}").get_json()
    page = text(client.get(path))

    assert found["name"] == "Guardian#0001"
    assert membership["platform"] == "Steam"
    assert membership["url"].endswith(f"/api/v1{path}")
    assert body["player"]["bungie_name"] == "Guardian#0001"
    assert body["unknown_items"] == []
    assert body["sync"] is None
    assert [c["class_name"] for c in body["characters"]] == ["Titan", "Hunter", "Warlock"]
    for character in body["characters"]:
        assert str(character["light"]) in page
        for item in character["items"]:
            assert item["known"]
            assert item["name"] in page
            assert item["bucket"]
            assert item["tier"]


def test_json_player_with_unknown_items_names_its_sync(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    path = player_path(client.application.test_client(), NEW_ITEMS)

    body = client.get(f"/api/v1{path}").get_json()

    assert body["unknown_items"]
    unknown = [i for c in body["characters"] for i in c["items"] if not i["known"]]
    assert sorted(i["item_hash"] for i in unknown) == body["unknown_items"]
    assert all(i["name"] == f"unknown item {i['item_hash']}" for i in unknown)
    assert body["sync"]["joined"] is False
    assert body["sync"]["status_url"].endswith(f"/api/v1/tasks/{body['sync']['task_id']}")
