"""A player lookup asks Bungie once and never waits in the request: Bungie's HTTP 429 pauses
every player lookup for the time it asked (the next one within it does not reach Bungie), and
a 5xx answers 503 at once, even with the sync's retries and Retry-After waits configured."""

from __future__ import annotations

import html
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_shared_bungie
from config import Config
from devtools.demo.control import DemoAdmin

UNKNOWN_ID = 4611686018400000001
NOBODY = "Nobody%239999"
# Bungie's Retry-After: within the sync's BUNGIE_MAX_RETRY_WAIT, so a client configured like
# the sync would sleep it out inside the request, and long enough that the pause it starts
# outlasts the test.
RETRY_AFTER = 20


def text(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


def unknown(n: int) -> str:
    """The path of a membership the origin does not know (one keyed call to find out)."""
    return f"/players/3/{UNKNOWN_ID + n}"


def player_calls(admin: DemoAdmin) -> list[str]:
    """The player calls that reached the origin (searches and profiles), by path."""
    return [
        r["path"]
        for r in admin.requests_log()
        if "/Profile/" in r["path"] or "SearchDestinyPlayer" in r["path"]
    ]


def one_retry_after(response: TestResponse) -> int:
    """Return the answer's one Retry-After, in seconds."""
    values = response.headers.getlist("Retry-After")
    assert len(values) == 1, values
    return int(values[0])


@pytest.fixture
def sync_retries_app(app_overrides: dict[str, Any], admin: DemoAdmin) -> Flask:
    """The app with the sync's production retries: 3 of them, Retry-After slept up to 30 s."""
    assert Config.BUNGIE_RETRIES >= 1
    assert Config.BUNGIE_MAX_RETRY_WAIT >= RETRY_AFTER
    return create_app(
        "testing",
        {
            **app_overrides,
            "BUNGIE_RETRIES": Config.BUNGIE_RETRIES,
            "BUNGIE_MAX_RETRY_WAIT": Config.BUNGIE_MAX_RETRY_WAIT,
            "BUNGIE_BACKOFF_SECONDS": Config.BUNGIE_BACKOFF_SECONDS,
        },
    )


def test_bungie_429_pauses_player_lookups_without_retrying_or_waiting(
    sync_retries_app: Flask, admin: DemoAdmin
) -> None:
    admin.fault("http_429", retry_after=RETRY_AFTER)  # every call, until reset
    client = sync_retries_app.test_client()

    throttled = client.get(unknown(1))
    calls_then = player_calls(admin)
    paused_page = client.get(unknown(2))
    paused_api = client.get(f"/api/v1/players?name={NOBODY}")

    assert throttled.status_code == 429, text(throttled)
    assert "Bungie asks this site to slow down" in text(throttled)
    assert "Traceback" not in text(throttled)
    assert 0 < one_retry_after(throttled) <= RETRY_AFTER
    assert len(calls_then) == 1  # asked once: no retry inside the request
    assert paused_page.status_code == 429
    assert 0 < one_retry_after(paused_page) <= RETRY_AFTER
    assert paused_api.status_code == 429
    assert paused_api.get_json()["error"] == "too_many_requests"
    assert player_calls(admin) == calls_then  # the pause kept both from Bungie


def test_bungie_5xx_answers_503_at_once(sync_retries_app: Flask, admin: DemoAdmin) -> None:
    admin.fault("http_500")  # every call, until reset
    client = sync_retries_app.test_client()

    page = client.get(unknown(1))
    calls_then = player_calls(admin)
    api = client.get(f"/api/v1/players?name={NOBODY}")

    assert page.status_code == 503, text(page)
    assert "Bungie's API is not answering" in text(page)
    assert "Traceback" not in text(page)
    assert len(page.headers.getlist("Retry-After")) == 1
    assert len(calls_then) == 1
    assert api.status_code == 503
    assert api.get_json()["error"] == "service_unavailable"
    assert "Bungie's API is not answering" in api.get_json()["message"]
    assert len(player_calls(admin)) == 2  # an outage is not a throttle: no pause


def test_the_pages_wait_for_bungie_no_longer_than_player_read_timeout(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    app = create_app("testing", {**app_overrides, "PLAYER_READ_TIMEOUT": 2.5})
    with app.app_context():
        assert get_shared_bungie().timeout[1] == 2.5
        sync_client = get_bungie()
        assert sync_client.timeout[1] == app.config["BUNGIE_READ_TIMEOUT"]
        sync_client.close()
