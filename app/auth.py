"""Who may do what: the admin sign-in, CSRF tokens, the API's bearer token and rate limits."""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import TypeVar
from urllib.parse import urlsplit

from flask import Flask
from flask import abort
from flask import current_app
from flask import redirect
from flask import request
from flask import session
from flask import url_for
from werkzeug.exceptions import TooManyRequests
from werkzeug.exceptions import Unauthorized
from werkzeug.security import check_password_hash

from app.extensions import get_keys
from app.extensions import get_redis

View = TypeVar("View", bound=Callable[..., Any])

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def init_app(app: Flask) -> None:
    """Check CSRF tokens on every state-changing form request and expose them to templates."""
    app.before_request(_check_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token


# -- the admin account -------------------------------------------------------------------


def check_credentials(username: str, password: str) -> bool:
    """Return whether `username` and `password` are the admin's (in constant time)."""
    config = current_app.config
    name_ok = hmac.compare_digest(username.encode(), (config["ADMIN_USERNAME"] or "").encode())
    if config.get("ADMIN_PASSWORD_HASH"):
        password_ok = check_password_hash(config["ADMIN_PASSWORD_HASH"], password)
    elif config.get("ADMIN_PASSWORD"):
        password_ok = hmac.compare_digest(password.encode(), config["ADMIN_PASSWORD"].encode())
    else:
        password_ok = False
    return name_ok and password_ok


def sign_in(username: str) -> None:
    """Start a fresh session for the admin (a new CSRF token, no state from before)."""
    session.clear()
    session["user"] = username
    session["signed_in_at"] = time.time()
    session.permanent = True


def sign_out() -> None:
    """End the admin's session."""
    session.clear()


def current_user() -> str | None:
    """Return the signed-in user's name, if any."""
    return session.get("user")


def login_required(view: View) -> View:
    """Send visitors who are not signed in to the sign-in page, then back here."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            # A form post cannot be replayed by a redirect: come back to the dashboard then.
            back = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("main.login", next=back or url_for("main.dashboard")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def safe_next(target: str | None) -> str:
    """Return `target` if it is a path on this site, else the dashboard (no open redirects)."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not any(ch < " " or ch == "\x7f" for ch in target)
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("main.dashboard")


# -- CSRF ---------------------------------------------------------------------------------


def csrf_token() -> str:
    """Return this session's CSRF token, creating it on first use."""
    token = session.get(CSRF_FIELD)
    if token is None:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def _check_csrf() -> None:
    # The JSON API authenticates with a bearer token, which a browser never sends by itself;
    # a request that matched no route gets its 404 or 405, not a CSRF error.
    if (
        request.method in ("GET", "HEAD", "OPTIONS")
        or request.blueprint == "api"
        or request.routing_exception is not None
    ):
        return
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, description="The form expired or did not come from this site. Please retry.")


# -- the API token ------------------------------------------------------------------------


class TokenRequired(Unauthorized):
    """401 with the challenge that says how to authenticate."""

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [*super().get_headers(*args, **kwargs), ("WWW-Authenticate", "Bearer")]


def token_required(view: View) -> View:
    """Let through only requests carrying `Authorization: Bearer <API_TOKEN>`."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        expected = current_app.config.get("API_TOKEN") or ""
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        valid = (
            bool(expected)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(sent.strip().encode(), expected.encode())
        )
        if not valid:
            raise TokenRequired("Send Authorization: Bearer <API_TOKEN>.")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


# -- rate limits --------------------------------------------------------------------------


class RateLimited(TooManyRequests):
    """429 with a Retry-After header."""

    def __init__(self, retry_after: int, description: str) -> None:
        super().__init__(description)
        self.retry_after = retry_after

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [*super().get_headers(*args, **kwargs), ("Retry-After", str(self.retry_after))]


def client_address() -> str:
    """Return the client's address (ProxyFix has applied X-Forwarded-For where configured)."""
    return request.remote_addr or "unknown"


@dataclass(frozen=True)
class RateWindow:
    """A client's count of one kind of request in the current window, and what it may reach."""

    key: str
    allowed: int
    seconds: int
    retry_after: int

    @property
    def expires(self) -> int:
        """Seconds a window's count is kept: past the window's end, never less."""
        return self.seconds + 1

    def check(self, count: int) -> None:
        """Raise RateLimited (429) when `count` requests are more than allowed."""
        if count > self.allowed:
            raise RateLimited(
                self.retry_after,
                f"Too many requests: at most {self.allowed} per {self.seconds}s. Retry later.",
            )


def rate_window(bucket: str, allowed: int) -> RateWindow:
    """Return this request's client's window for `bucket` (RATE_LIMIT_WINDOW seconds long)."""
    seconds = current_app.config["RATE_LIMIT_WINDOW"]
    now = int(time.time())
    start = now - now % seconds
    key = get_keys().rate_window(bucket, client_address(), start)
    return RateWindow(key, allowed, seconds, max(1, start + seconds - now))


def limit(bucket: str, allowed: int) -> None:
    """Count this request against `allowed` per RATE_LIMIT_WINDOW for its client; 429 past it."""
    window = rate_window(bucket, allowed)
    with get_redis().pipeline(transaction=True) as pipe:
        pipe.incr(window.key)
        pipe.expire(window.key, window.expires)
        count = pipe.execute()[0]
    window.check(count)
