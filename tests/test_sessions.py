"""Sessions end for real: a sign-out or a password change ends every session signed in before,
and an old cookie replayed afterwards is signed out; a HEAD never signs anyone in."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash
from werkzeug.test import TestResponse

from app import auth
from app import create_app
from app.keys import Keys
from app.manifest.live import LivePointer
from config import TestingConfig

ADMIN = TestingConfig.ADMIN_USERNAME
PASSWORD = TestingConfig.ADMIN_PASSWORD
COOKIE = "session"
HASH = "ADMIN_PASSWORD_HASH"


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def form_token(client: FlaskClient, page: str = "/login") -> str:
    """Open `page` like a browser and read the CSRF token from its form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', text(client.get(page)))
    assert match is not None
    return match.group(1)


def sign_in(client: FlaskClient, password: str = PASSWORD) -> str:
    """Sign in through the form; return the session cookie the browser now holds."""
    response = client.post(
        "/login",
        data={"username": ADMIN, "password": password, "csrf_token": form_token(client)},
    )
    assert response.status_code == 303, text(response)
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value


def replayed(app: Flask, cookie: str) -> FlaskClient:
    """Return a new browser that presents `cookie`, as someone who copied it would."""
    client = app.test_client()
    client.set_cookie(COOKIE, cookie)
    return client


def is_signed_in(client: FlaskClient) -> bool:
    """Say whether the admin-only progress page opens (a visitor is sent to sign in)."""
    response = client.get("/updateManifest?task=none")
    return response.status_code != 302


def sign_out(client: FlaskClient) -> None:
    """Sign out with the form every page shows a signed-in admin."""
    token = form_token(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303


def test_a_cookie_replayed_after_sign_out_is_signed_out(app: Flask) -> None:
    browser = app.test_client()
    cookie = sign_in(browser)
    assert is_signed_in(replayed(app, cookie))

    sign_out(browser)
    thief = replayed(app, cookie)

    assert not is_signed_in(thief)
    assert "Sign out" not in text(thief.get("/"))
    assert not is_signed_in(browser)


def test_signing_out_ends_every_session_of_the_admin(app: Flask) -> None:
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop)
    sign_in(phone)

    sign_out(laptop)

    assert not is_signed_in(phone)
    sign_in(phone)
    assert is_signed_in(phone)


def test_a_password_change_ends_the_sessions_signed_in_before(
    app: Flask, app_overrides: dict[str, Any]
) -> None:
    cookie = sign_in(app.test_client())
    same = create_app("testing", app_overrides)
    changed = create_app("testing", {**app_overrides, "ADMIN_PASSWORD": "a-new-password"})

    assert is_signed_in(replayed(same, cookie))
    assert not is_signed_in(replayed(changed, cookie))
    # Signed out for good: going back to the old password does not bring it back.
    assert not is_signed_in(replayed(same, cookie))
    fresh = app.test_client()
    sign_in(fresh)
    assert is_signed_in(fresh)


def test_a_new_password_hash_ends_the_sessions_signed_in_before(
    app_overrides: dict[str, Any],
) -> None:
    first = {**app_overrides, "ADMIN_PASSWORD": None}
    old = create_app("testing", {**first, HASH: generate_password_hash("old")})
    cookie = sign_in(old.test_client(), "old")
    same = create_app(
        "testing", {**first, "ADMIN_PASSWORD_HASH": old.config["ADMIN_PASSWORD_HASH"]}
    )
    new = create_app("testing", {**first, HASH: generate_password_hash("new")})

    assert is_signed_in(replayed(same, cookie))
    assert not is_signed_in(replayed(new, cookie))


def test_redis_keeps_no_password_of_the_admin(
    app: Flask, redis_client: redis.Redis, key_prefix: str
) -> None:
    browser = app.test_client()
    sign_in(browser)
    sign_out(browser)

    keys = Keys(key_prefix)
    kept = redis_client.mget(keys.session_credential, keys.session_version)
    assert all(kept), "the credential's digest and the session version are kept"
    assert not any(PASSWORD in str(value) for value in kept)


def test_a_head_request_never_signs_in(app: Flask, client: FlaskClient) -> None:
    token = form_token(client)
    credentials = {"username": ADMIN, "password": PASSWORD}

    for data in (credentials, {**credentials, "csrf_token": token}):
        response = client.head("/login", data=data)
        assert response.status_code == 200
        assert not is_signed_in(client)
        assert client.head("/login", query_string=data).status_code == 200
        assert not is_signed_in(client)


def test_nothing_signs_in_or_out_without_a_checked_form(app: Flask, client: FlaskClient) -> None:
    def careless_sign_in() -> str:
        assert ADMIN is not None
        auth.sign_in(ADMIN)
        return "signed in"

    def careless_sign_out() -> str:
        auth.sign_out()
        return "signed out"

    app.add_url_rule("/careless/in", view_func=careless_sign_in, methods=["GET"])
    app.add_url_rule("/careless/out", view_func=careless_sign_out, methods=["GET"])

    assert client.head("/careless/in").status_code == 400
    assert client.get("/careless/in").status_code == 400
    assert not is_signed_in(client)
    sign_in(client)
    assert client.get("/careless/out").status_code == 400
    assert is_signed_in(client)


def test_a_session_version_redis_lost_signs_out_every_session_not_revives_them(
    app: Flask, redis_client: redis.Redis, key_prefix: str
) -> None:
    browser = app.test_client()
    signed_out = sign_in(browser)
    sign_out(browser)
    signed_in = sign_in(browser)
    assert not is_signed_in(replayed(app, signed_out))

    redis_client.delete(Keys(key_prefix).session_version)  # as a flush would

    assert not is_signed_in(replayed(app, signed_out))
    assert not is_signed_in(replayed(app, signed_in))
    fresh = app.test_client()
    sign_in(fresh)
    assert is_signed_in(fresh)


def test_without_tracking_a_sign_out_in_one_process_is_seen_by_the_next_request_of_another(
    app_overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server whose invalidations never arrive (a proxy that drops pushes): what
    # MANIFEST_TRACK_LIVE=false is for.
    monkeypatch.setattr(LivePointer, "_invalidated", lambda self: False)
    untracked = {**app_overrides, "MANIFEST_TRACK_LIVE": False}
    one, other = create_app("testing", untracked), create_app("testing", untracked)
    browser = one.test_client()
    cookie = sign_in(browser)
    assert is_signed_in(replayed(other, cookie))

    sign_out(browser)

    assert not is_signed_in(replayed(other, cookie))
