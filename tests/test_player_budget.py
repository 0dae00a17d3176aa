"""Player pages spend the Bungie API key within a budget: per client and in total, "no such
player" answers kept briefly, and Bungie throttling player calls pauses player calls only; past
any of these a visitor gets a clear 429 with one Retry-After, and syncs still run."""

from __future__ import annotations

import html
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.keys import Keys
from app.manifest import sync
from devtools.demo.control import DemoAdmin

GUARDIAN = "Guardian%230001"
PRIVATE = "Private%230002"
NOBODY = "Nobody%239999"
NAME = "nobody#9999"  # as the key names it: casefolded
UNKNOWN_ID = 4611686018400000001


def text(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


def unknown(n: int) -> str:
    """The path of a membership the origin does not know (one keyed call to find out)."""
    return f"/players/3/{UNKNOWN_ID + n}"


def visitor(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def keyed_calls(admin: DemoAdmin) -> list[str]:
    """The player calls the origin answered (searches and profiles), by path."""
    return [
        r["path"]
        for r in admin.requests_log()
        if "/Profile/" in r["path"] or "SearchDestinyPlayer" in r["path"]
    ]


def assert_429(response: TestResponse, within: int) -> str:
    """Check a 429 page or JSON answer: one Retry-After, no traceback; return its message."""
    assert response.status_code == 429, text(response)
    retry_after = response.headers.getlist("Retry-After")
    assert len(retry_after) == 1
    assert 0 < int(retry_after[0]) <= within
    assert "Traceback" not in text(response)
    if response.is_json:
        body = response.get_json()
        assert body["error"] == "too_many_requests"
        return str(body["message"])
    return text(response)


def budget_app(app_overrides: dict[str, Any], **settings: Any) -> Flask:
    """The app with these player settings and long windows (a test that fills one holds them
    still with steady_rate_windows)."""
    return create_app(
        "testing",
        {**app_overrides, "RATE_LIMIT_WINDOW": 3600, "PLAYER_BUDGET_WINDOW": 3600, **settings},
    )


@pytest.fixture
def synced(app: Flask) -> None:
    with app.app_context():
        assert sync.run(get_store(), get_bungie(), trigger="test").ok


@pytest.mark.usefixtures("steady_rate_windows")
def test_a_client_past_its_limit_gets_a_429_and_bungie_is_not_asked(
    app_overrides: dict[str, Any], admin: DemoAdmin, synced: None
) -> None:
    app = budget_app(app_overrides, PLAYER_RATE_LIMIT=3)
    one, other = visitor(app, "198.51.100.7"), visitor(app, "198.51.100.8")

    statuses = [one.get(unknown(n)).status_code for n in range(3)]
    page = one.get(unknown(3))
    api = one.get(f"/api/v1{unknown(4)}")
    search = one.get(f"/players?name={NOBODY}")

    assert statuses == [404, 404, 404]
    assert "Too many player lookups from your address" in assert_429(page, 3600)
    assert "Too many player lookups" in assert_429(api, 3600)
    assert_429(search, 3600)
    assert len(keyed_calls(admin)) == 3
    assert other.get(unknown(5)).status_code == 404


@pytest.mark.usefixtures("steady_rate_windows")
def test_a_kept_page_is_still_shown_past_the_limit(
    app_overrides: dict[str, Any], admin: DemoAdmin, synced: None
) -> None:
    app = budget_app(app_overrides, PLAYER_RATE_LIMIT=2)
    client = visitor(app, "198.51.100.7")
    search = client.get(f"/players?name={GUARDIAN}")
    path = search.headers["Location"]
    assert client.get(path).status_code == 200

    assert client.get(unknown(1)).status_code == 429
    assert client.get(path).status_code == 200
    assert client.get(f"/players?name={GUARDIAN}").status_code == 302


@pytest.mark.usefixtures("steady_rate_windows")
def test_all_clients_together_stay_within_the_budget_and_syncs_still_run(
    app: Flask, app_overrides: dict[str, Any], admin: DemoAdmin, synced: None
) -> None:
    budget = budget_app(app_overrides, PLAYER_BUDGET=4, PLAYER_RATE_LIMIT=100)
    statuses = [visitor(budget, f"198.51.100.{n}").get(unknown(n)).status_code for n in range(6)]
    refused = visitor(budget, "203.0.113.1").get(f"/api/v1{unknown(9)}")

    assert statuses == [404] * 4 + [429] * 2
    assert "player lookups" in assert_429(refused, 3600)
    assert len(keyed_calls(admin)) == 4
    admin.publish()
    with budget.app_context():
        assert sync.run(get_store(), get_bungie(), trigger="test").outcome == sync.UPDATED


def test_no_such_player_is_kept_briefly(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    synced: None,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    pages = [client.get(unknown(1)) for _ in range(3)]
    searches = [client.get(f"/players?name={NOBODY}") for _ in range(3)]
    api = client.get(f"/api/v1{unknown(1)}")

    assert [p.status_code for p in pages + searches] == [404] * 6
    assert len({text(p) for p in pages}) == 1
    assert "no Destiny profile 4611686018400000002 on Steam" in text(pages[-1])
    assert "No player is named Nobody#9999" in text(searches[-1])
    assert "4611686018400000002" in api.get_json()["message"]
    assert len(keyed_calls(admin)) == 2
    keys = Keys(key_prefix)
    kept = app.config["PLAYER_NOT_FOUND_SECONDS"]
    assert kept < app.config["PROFILE_CACHE_SECONDS"]
    for key in (
        keys.profile_not_shown(3, str(UNKNOWN_ID + 1)),
        keys.player_not_found("nobody#9999"),
    ):
        assert 0 < redis_client.ttl(key) <= kept


def test_a_private_profile_is_kept_briefly_too(
    client: FlaskClient, admin: DemoAdmin, synced: None
) -> None:
    path = client.get(f"/players?name={PRIVATE}").headers["Location"]
    admin.clear_requests_log()

    answers = [client.get(path) for _ in range(3)]

    assert [a.status_code for a in answers] == [403] * 3
    assert "keeps their Destiny profile private" in text(answers[-1])
    assert len(keyed_calls(admin)) == 1


def test_without_a_not_found_cache_every_lookup_asks_bungie(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    app = create_app("testing", {**app_overrides, "PLAYER_NOT_FOUND_SECONDS": 0})
    client = app.test_client()

    client.get(unknown(1))
    client.get(unknown(1))

    assert len(keyed_calls(admin)) == 2


def test_bungie_throttling_a_player_call_pauses_player_calls_not_syncs(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    synced: None,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    admin.fault("throttle", count=1, throttle_seconds=30)

    throttled = client.get(unknown(1))
    admin.clear_requests_log()
    paused_page = client.get(unknown(2))
    paused_api = visitor(app, "198.51.100.99").get(f"/api/v1/players?name={NOBODY}")

    assert "Bungie asks this site to slow down" in assert_429(throttled, 30)
    assert "Bungie asks this site to slow down" in assert_429(paused_page, 30)
    assert_429(paused_api, 30)
    assert keyed_calls(admin) == []
    assert 0 < redis_client.ttl(Keys(key_prefix).player_backoff) <= 30
    admin.publish()
    with app.app_context():
        assert sync.run(get_store(), get_bungie(), trigger="test").outcome == sync.UPDATED
