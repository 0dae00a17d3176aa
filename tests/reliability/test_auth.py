"""Hostile visitors: tokens that are missing, wrong or short; secrets compared in constant
time; sign-in brute force cut off; CSRF on every form; session cookie flags; security headers
on every answer."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import auth
from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from config import TestingConfig
from tests.conftest import CSRF
from tests.conftest import admin_session
from tests.reliability.conftest import Figures
from tests.reliability.servers import closed_port_url

TOKEN = TestingConfig.API_TOKEN
WRONG_TOKENS = {
    "none": {},
    "empty": {"Authorization": ""},
    "scheme only": {"Authorization": "Bearer"},
    "scheme and space": {"Authorization": "Bearer "},
    "spaces": {"Authorization": "Bearer      "},
    "short (prefix)": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "one character": {"Authorization": f"Bearer {TOKEN[0]}"},
    "longer": {"Authorization": f"Bearer {TOKEN}x"},
    "same length, wrong": {"Authorization": "Bearer " + "x" * len(TOKEN)},
    "two tokens": {"Authorization": f"Bearer {TOKEN} {TOKEN}"},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
    "token as query": {"X-Token-In-Query": "1"},
    "non-ASCII": {"Authorization": "Bearer tést-api-token-0123456789"},
    "very long": {"Authorization": "Bearer " + "a" * 8000},
}


def signed_in_client(app: Flask) -> FlaskClient:
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(admin_session(app))
        session["csrf_token"] = CSRF
    return client


def form_token(client: FlaskClient) -> str:
    """Read the CSRF token from the sign-in form, as a browser would."""
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


# -- the API token ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", WRONG_TOKENS.values(), ids=WRONG_TOKENS.keys())
def test_the_api_refuses_missing_wrong_and_short_tokens(
    client: FlaskClient, redis_client: redis.Redis, key_prefix: str, headers: dict[str, str]
) -> None:
    query = {"token": TOKEN} if "X-Token-In-Query" in headers else None
    response = client.post("/api/v1/manifest/sync", headers=headers, query_string=query)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert set(response.get_json()) == {"error", "message"}
    sent = headers.get("Authorization", "").partition(" ")[2].strip()
    if len(sent) > 3:
        assert sent not in response.get_data(as_text=True)
    assert list(redis_client.scan_iter(match=f"{key_prefix}:task*")) == []


def test_the_right_token_gets_in_whatever_the_scheme_case(client: FlaskClient) -> None:
    response = client.post("/api/v1/manifest/sync", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 202


@pytest.mark.parametrize("configured", [None, ""])
def test_without_an_api_token_configured_nobody_gets_in(
    app_overrides: dict[str, Any], configured: str | None
) -> None:
    app = create_app("testing", {**app_overrides, "API_TOKEN": configured})
    client = app.test_client()
    for header in ("Bearer ", "Bearer None", "Bearer null"):
        response = client.post("/api/v1/manifest/sync", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_secrets_are_compared_in_constant_time() -> None:
    for function in (auth.has_api_token, auth.check_credentials, auth._check_csrf):
        source = inspect.getsource(function)
        assert "hmac.compare_digest" in source, function.__name__
        for line in source.splitlines():
            if re.search(r"==|!=", line):
                assert not re.search(r"password|token|expected|sent", line, re.I), line
    # A password hash is checked by werkzeug, itself in constant time.
    assert "check_password_hash" in inspect.getsource(auth.check_credentials)


# -- sign-in ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("steady_rate_windows")
def test_sign_in_brute_force_is_cut_off_even_for_the_right_password(
    app_overrides: dict[str, Any], figures: Figures
) -> None:
    app = create_app("testing", {**app_overrides, "RATE_LIMIT_WINDOW": 3600})
    client = app.test_client()
    token = form_token(client)
    limit = app.config["LOGIN_RATE_LIMIT"]
    wrong = {"username": "admin", "password": "guess", "csrf_token": token}
    attempts = [client.post("/login", data=wrong).status_code for _ in range(limit)]
    right = {**wrong, "password": TestingConfig.ADMIN_PASSWORD}
    # Neither the right password nor a forged client address gets past the limit.
    refused = client.post("/login", data=right)
    spoofed = client.post("/login", data=right, headers={"X-Forwarded-For": "203.0.113.9"})

    assert attempts == [401] * limit
    for response in (refused, spoofed):
        assert response.status_code == 429
        assert 0 < int(response.headers["Retry-After"]) <= 3600
    assert "Sign out" not in client.get("/").get_data(as_text=True)
    figures.scenario("auth")["summary"].update(
        {
            "sign-in attempts allowed per window": limit,
            "answer after that": f"429, Retry-After {refused.headers['Retry-After']} s",
            "right password after the limit": refused.status_code,
            "X-Forwarded-For spoofed (PROXY_FIX_HOPS=0)": spoofed.status_code,
        }
    )


# -- CSRF ------------------------------------------------------------------------------------


def form_routes(app: Flask) -> list[str]:
    """Every route outside the API that changes state (POST, PUT, PATCH, DELETE)."""
    unsafe = {"POST", "PUT", "PATCH", "DELETE"}
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if unsafe & (rule.methods or set())
        and not rule.rule.startswith("/api/")
        and not rule.arguments
    )


def test_every_form_refuses_a_post_without_its_token(
    app: Flask, redis_client: redis.Redis, key_prefix: str, figures: Figures
) -> None:
    routes = form_routes(app)
    assert {"/login", "/logout", "/sync"} <= set(routes)
    other = app.test_client()
    foreign = form_token(other)
    credentials = {"username": "admin", "password": TestingConfig.ADMIN_PASSWORD}
    # Signing out ends every session of the admin, the forged ones here too: last.
    for route in sorted(routes, key=lambda route: route == "/logout"):
        for token in (None, "", "forged-token", foreign, CSRF.upper()):
            client = signed_in_client(app)
            data = dict(credentials) if token is None else {**credentials, "csrf_token": token}
            response = client.post(route, data=data)
            assert response.status_code == 400, (route, token)
            assert "did not come from this site" in response.get_data(as_text=True)
            header = signed_in_client(app).post(route, headers={"X-CSRF-Token": token or ""})
            assert header.status_code == 400, (route, token)
        accepted = signed_in_client(app).post(route, data={**credentials, "csrf_token": CSRF})
        assert accepted.status_code != 400, route
    assert list(redis_client.scan_iter(match=f"{key_prefix}:task*")) != []  # only the accepted
    figures.scenario("auth")["summary"]["forms checked for CSRF"] = ", ".join(routes)


def test_a_refused_form_changes_nothing(
    app: Flask, redis_client: redis.Redis, key_prefix: str
) -> None:
    client = signed_in_client(app)
    assert client.post("/sync").status_code == 400
    assert client.post("/logout").status_code == 400
    assert list(redis_client.scan_iter(match=f"{key_prefix}:task*")) == []
    assert "Sign out" in client.get("/").get_data(as_text=True)


# -- cookies ---------------------------------------------------------------------------------


def production_app(app_overrides: dict[str, Any]) -> Flask:
    return create_app(
        "production",
        {
            **app_overrides,
            "SECRET_KEY": "production-secret-key-0123456789abcdef",
            "BUNGIE_API_KEY": "production-api-key",
            "API_TOKEN": "production-api-token-0123456789",
            "ADMIN_PASSWORD": "production-password",
        },
    )


def sign_in(app: Flask, password: str) -> str:
    """Sign in through the form; return the Set-Cookie header of the answer."""
    client = app.test_client()
    token = form_token(client)
    response = client.post(
        "/login", data={"username": "admin", "password": password, "csrf_token": token}
    )
    assert response.status_code == 303
    return response.headers["Set-Cookie"]


def test_the_session_cookie_is_httponly_lax_and_secure_in_production(
    app: Flask, app_overrides: dict[str, Any], figures: Figures
) -> None:
    testing = sign_in(app, TestingConfig.ADMIN_PASSWORD)
    production = sign_in(production_app(app_overrides), "production-password")

    for cookie in (testing, production):
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
    assert "Secure" in production
    figures.scenario("auth")["summary"]["session cookie in production"] = "; ".join(
        part.strip() for part in production.split(";")[1:]
    )


# -- security headers ------------------------------------------------------------------------


@pytest.fixture
def filled(app: Flask) -> Flask:
    with app.app_context():
        assert sync.run(get_store(), get_bungie()).outcome == sync.UPDATED
    return app


def every_kind_of_answer(app: Flask) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, options) for every page and API route, and for each kind of error."""
    with app.app_context():
        item = get_store().search(per_page=1).items[0]["hash"]
        release = get_store().live_id()
    return [
        ("GET", "/", {}),
        ("GET", "/items?q=a", {}),
        ("GET", f"/items/{item}", {}),
        ("GET", "/history", {}),
        ("GET", f"/releases/{release}", {}),
        ("GET", "/updateManifest", {}),
        ("GET", "/login", {}),
        ("GET", "/players", {}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/static/style.css", {}),
        ("GET", "/api/v1/manifest", {}),
        ("GET", "/api/v1/items?q=a", {}),
        ("GET", f"/api/v1/items/{item}", {}),
        ("GET", "/api/v1/history", {}),
        ("GET", "/api/v1/tasks/0123456789abcdef", {}),
        ("POST", "/api/v1/manifest/sync", {"headers": {"Authorization": f"Bearer {TOKEN}"}}),
        ("POST", "/sync", {"data": {"csrf_token": CSRF}}),
        ("GET", "/items/not-a-hash", {}),
        ("GET", "/api/v1/items/not-a-hash", {}),
        ("POST", "/api/v1/manifest/sync", {}),
        ("GET", "/no/such/page", {}),
        ("GET", "/api/v1/no/such/thing", {}),
        ("DELETE", "/", {}),
        ("PUT", "/api/v1/manifest", {}),
        ("POST", "/logout", {}),
        ("POST", "/api/v1/manifest/sync", {"data": b"x" * 70_000}),
        ("OPTIONS", "/api/v1/manifest", {}),
        ("HEAD", "/", {}),
        ("GET", "/login?next=/history", {}),
    ]


def assert_security_headers(response: Any, where: str) -> None:
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp, where
    assert "frame-ancestors 'none'" in csp, where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("X-Frame-Options") == "DENY", where


def test_every_answer_has_the_security_headers(
    filled: Flask, app_overrides: dict[str, Any], figures: Figures
) -> None:
    statuses = set()
    for config_name, app in (("testing", filled), ("production", production_app(app_overrides))):
        client = signed_in_client(app)
        for method, url, options in every_kind_of_answer(filled):
            response = client.open(url, method=method, **options)
            statuses.add(response.status_code)
            assert_security_headers(response, f"{config_name} {method} {url}")
    # And when Redis does not answer at all (503).
    down = create_app("testing", {**app_overrides, "REDIS_URL": closed_port_url()})
    for url in ("/", "/api/v1/manifest"):
        response = down.test_client().get(url)
        statuses.add(response.status_code)
        assert response.status_code == 503
        assert_security_headers(response, f"Redis down {url}")
    assert {200, 202, 303, 400, 401, 404, 405, 413, 503} <= statuses
    figures.scenario("auth")["summary"]["statuses checked for security headers"] = ", ".join(
        map(str, sorted(statuses))
    )
