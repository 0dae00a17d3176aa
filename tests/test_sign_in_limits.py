"""Sign-in limits: per client (an IPv6 client counted by its /64) and per account, each 429 with
exactly one Retry-After."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from config import TestingConfig
from tests.conftest import CSRF

ADMIN = TestingConfig.ADMIN_USERNAME


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def browser(app: Flask, address: str) -> FlaskClient:
    """A client at `address` with a known CSRF token in its session."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    with client.session_transaction() as session:
        session["csrf_token"] = CSRF
    return client


def attempt(
    client: FlaskClient,
    username: str | None = ADMIN,
    password: str = "guess",  # noqa: S107
) -> TestResponse:
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": CSRF}
    )


@pytest.fixture
def limited(app_overrides: dict[str, Any], app: Flask, steady_rate_windows: None) -> Flask:
    """The app with a long window, held still for the test, and a small account limit (`app`
    drops the tasks it queues afterwards)."""
    return create_app(
        "testing",
        {**app_overrides, "RATE_LIMIT_WINDOW": 3600, "LOGIN_ACCOUNT_RATE_LIMIT": 8},
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe"),
        ("2001:db8:1:2::1", "2001:0db8:0001:0002:abcd::5"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64(limited: Flask, first: str, second: str) -> None:
    allowed = limited.config["LOGIN_RATE_LIMIT"]
    one, same_network = browser(limited, first), browser(limited, second)
    other_network = browser(limited, "2001:db8:1:3::1")

    statuses = [attempt(one).status_code for _ in range(allowed)]

    assert statuses == [401] * allowed
    assert attempt(same_network).status_code == 429
    assert attempt(other_network).status_code == 401


def test_an_ipv4_client_is_counted_by_its_own_address(limited: Flask) -> None:
    allowed = limited.config["LOGIN_RATE_LIMIT"]
    one = browser(limited, "198.51.100.7")
    for _ in range(allowed):
        attempt(one)

    assert attempt(one).status_code == 429
    assert attempt(browser(limited, "198.51.100.8")).status_code == 401
    assert attempt(browser(limited, "::ffff:198.51.100.7")).status_code == 429


def test_an_account_is_limited_whatever_the_clients(limited: Flask) -> None:
    per_client = limited.config["LOGIN_RATE_LIMIT"]
    per_account = limited.config["LOGIN_ACCOUNT_RATE_LIMIT"]
    clients = [browser(limited, f"198.51.100.{n}") for n in range(1, per_account + 2)]
    statuses = [attempt(client).status_code for client in clients]

    assert per_client < per_account
    assert statuses == [401] * per_account + [429]
    refused = attempt(browser(limited, "203.0.113.50"), password=TestingConfig.ADMIN_PASSWORD)
    assert refused.status_code == 429
    assert refused.headers.getlist("Retry-After")
    assert "Too many sign-in attempts for this account" in text(refused)
    assert "Sign out" not in text(clients[0].get("/"))
    # Another name is another account.
    assert attempt(browser(limited, "203.0.113.51"), username="someone").status_code == 401


def test_attempts_refused_for_the_client_do_not_spend_the_accounts(limited: Flask) -> None:
    per_client = limited.config["LOGIN_RATE_LIMIT"]
    per_account = limited.config["LOGIN_ACCOUNT_RATE_LIMIT"]
    eager = browser(limited, "198.51.100.1")
    statuses = [attempt(eager).status_code for _ in range(per_client + 10)]
    others = [browser(limited, f"198.51.100.{n}") for n in range(2, 2 + per_account - per_client)]

    assert statuses == [401] * per_client + [429] * 10
    assert [attempt(other).status_code for other in others] == [401] * len(others)
    assert attempt(browser(limited, "203.0.113.1")).status_code == 429


def test_a_very_long_account_name_is_counted_like_any_other(limited: Flask) -> None:
    long_name = "x" * 60_000
    for n in range(limited.config["LOGIN_ACCOUNT_RATE_LIMIT"]):
        assert attempt(browser(limited, f"198.51.100.{n}"), username=long_name).status_code == 401

    assert attempt(browser(limited, "203.0.113.9"), username=long_name).status_code == 429
    assert attempt(browser(limited, "203.0.113.10")).status_code == 401


def test_a_429_has_exactly_one_retry_after(limited: Flask) -> None:
    client = browser(limited, "198.51.100.20")
    for _ in range(limited.config["LOGIN_RATE_LIMIT"]):
        attempt(client)

    page = attempt(client)
    api = limited.test_client()
    api.environ_base["REMOTE_ADDR"] = "198.51.100.21"
    auth = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
    answers = [api.post("/api/v1/manifest/sync", headers=auth) for _ in range(12)]

    assert page.status_code == 429
    assert page.headers.getlist("Retry-After") == [page.headers["Retry-After"]]
    assert 0 < int(page.headers["Retry-After"]) <= 3600
    assert re.search(r"Too many", text(page))
    limited_answer = answers[-1]
    assert limited_answer.status_code == 429
    assert len(limited_answer.headers.getlist("Retry-After")) == 1
