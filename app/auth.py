"""Who may do what: the admin sign-in, CSRF tokens, the API's bearer token and rate limits."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import TypeVar
from urllib.parse import urlsplit

import redis
from flask import Flask
from flask import abort
from flask import current_app
from flask import g
from flask import redirect
from flask import request
from flask import session
from flask import url_for
from werkzeug.exceptions import TooManyRequests
from werkzeug.exceptions import Unauthorized
from werkzeug.security import check_password_hash

from app.extensions import get_keys
from app.extensions import get_redis
from app.extensions import get_settings
from app.manifest.live import Unknown
from app.manifest.live import tracked_value
from app.manifest.replies import optional_text
from app.metrics import counters

View = TypeVar("View", bound=Callable[..., Any])

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_REFUSED = "The form expired or did not come from this site. Please retry."
# The admin's session version (a random token) a session was signed in under.
SESSION_VERSION = "session_version"
# Keep the credential's digest; when another was kept (the password changed), move the
# session version on to a new token. KEYS: credential, version; ARGV: the digest, the token.
_MOVE_ON_IF_CREDENTIAL_CHANGED = """
local kept = redis.call('GET', KEYS[1])
if kept == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if kept then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""


def init_app(app: Flask) -> None:
    """Check CSRF tokens on every state-changing form request and expose them to templates;
    check every signed-in session before its view."""
    app.before_request(_check_csrf)
    app.before_request(_check_session)
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
    """Start a fresh session for the admin (a new CSRF token, no state from before).

    Only a form whose CSRF token was checked signs anyone in (never a GET or a HEAD).
    """
    _require_checked_form()
    version = _session_version()
    session.clear()
    session["user"] = username
    session[SESSION_VERSION] = version
    session.permanent = True
    g.signed_in_user = username


def sign_out() -> None:
    """End the admin's session, and every other session of the admin with it.

    The admin's session version moves on to a new token, so a copy of the cookie replayed
    later is signed out too. Only a form whose CSRF token was checked signs anyone out.
    """
    _require_checked_form()
    if current_user() is not None:
        get_redis().set(get_keys().session_version, _new_version())
    session.clear()
    g.signed_in_user = None


def current_user() -> str | None:
    """Return the signed-in user's name, if any.

    A session signed in under another session version than the admin's current one (a
    sign-out or a password change came since) is signed out. Checked once per request.
    """
    if "signed_in_user" not in g:
        # Not checked before the view: the API, or an error page for a request refused
        # before the check, which must render even while Redis does not answer. While it
        # does not, nobody counts as signed in.
        try:
            g.signed_in_user = _checked_user()
        except redis.RedisError:
            g.signed_in_user = None
    user: str | None = g.signed_in_user
    return user


def _check_session() -> None:
    # Before a page's view, so that Redis not answering is a 503 (its error handler), not a
    # signed-out page; that error page then shows nobody signed in. The API, the probes and
    # static files check a session only if they ask who is signed in.
    if request.blueprint == "main":
        g.signed_in_user = None
        g.signed_in_user = _checked_user()


def _checked_user() -> str | None:
    user = session.get("user")
    if user is None:
        return None
    # A session from before session versions were tokens holds none, or a number: it ends.
    signed_under = str(session.get(SESSION_VERSION, ""))
    if not hmac.compare_digest(signed_under.encode(), _session_version().encode()):
        session.clear()
        return None
    return str(user)


def _session_version() -> str:
    """Return the admin's session version, moving it on first if the credential changed.

    With MANIFEST_TRACK_LIVE, the version is read through a tracked pointer: Redis tells this
    process when it moves, so a signed-in page costs no round trip for it.
    """
    client, key = get_redis(), get_keys().session_version
    if not current_app.extensions.get("session_credential_checked"):
        # Once per app: its configured credential does not change while it runs.
        script = client.register_script(_MOVE_ON_IF_CREDENTIAL_CHANGED)
        credential = get_keys().session_credential
        script(keys=[credential, key], args=[_credential_digest(), _new_version()])
        current_app.extensions["session_credential_checked"] = True
    version = tracked_value(client, key, get_settings().track_live)
    if isinstance(version, Unknown):
        version = optional_text(client.get(key))
    if version is None:
        # None kept (the first sign-in, or Redis lost it): a new one, which no session holds.
        new = _new_version()
        with client.pipeline(transaction=True) as pipe:
            pipe.set(key, new, nx=True)
            pipe.get(key)
            version = optional_text(pipe.execute()[1]) or new
    return version


def _new_version() -> str:
    """Return a new session version: a random token no session was signed in under."""
    return secrets.token_urlsafe(32)


def _credential_digest() -> str:
    """Return a digest of the configured admin credential, keyed with SECRET_KEY.

    It changes with the username, the password or its hash; without SECRET_KEY it tells
    nothing about the password.
    """
    config = current_app.config
    secret = config["SECRET_KEY"] or ""
    key = secret if isinstance(secret, bytes) else str(secret).encode()
    parts = (
        config["ADMIN_USERNAME"] or "",
        config.get("ADMIN_PASSWORD_HASH") or "",
        config.get("ADMIN_PASSWORD") or "",
    )
    material = "\0".join(("admin credential", *parts)).encode()
    return hmac.new(key, material, hashlib.sha256).hexdigest()


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
        abort(400, description=CSRF_REFUSED)
    g.csrf_checked = True


def _require_checked_form() -> None:
    """Refuse (400) unless this request is a form whose CSRF token was checked.

    The check passes GET, HEAD and OPTIONS through unchecked: a view that would change who
    is signed in on one of them is refused here rather than trusted.
    """
    if not g.get("csrf_checked"):
        abort(400, description=CSRF_REFUSED)


# -- the API token ------------------------------------------------------------------------


class TokenRequired(Unauthorized):
    """401 with the challenge that says how to authenticate."""

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [*super().get_headers(*args, **kwargs), ("WWW-Authenticate", "Bearer")]


def has_api_token() -> bool:
    """Say whether this request carries `Authorization: Bearer <API_TOKEN>` (in constant time)."""
    expected = current_app.config.get("API_TOKEN") or ""
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(sent.strip().encode(), expected.encode())
    )


def is_authorised() -> bool:
    """Say whether this request is the admin's: a signed-in session, or the API token."""
    return has_api_token() or current_user() is not None


def token_required(view: View) -> View:
    """Let through only requests carrying `Authorization: Bearer <API_TOKEN>`."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not has_api_token():
            raise TokenRequired("Send Authorization: Bearer <API_TOKEN>.")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


# -- rate limits --------------------------------------------------------------------------


class RateLimited(TooManyRequests):
    """429; werkzeug adds its one Retry-After header. Counted for /metrics by the limit `what`:
    a bucket of rate_window, login_account, or players (app/player_pages.py's lookups)."""

    def __init__(self, retry_after: int, description: str, what: str = "players") -> None:
        super().__init__(description, retry_after=retry_after)
        counters.count_rate_limited(what)


def client_address() -> str:
    """Return the client's address (ProxyFix has applied X-Forwarded-For where configured)."""
    return request.remote_addr or "unknown"


def rate_client() -> str:
    """Return who a per-client rate limit counts: the client's address, or its /64 for IPv6.

    One IPv6 subscriber is usually given a whole /64, so counting single addresses would let
    one client count as many. An IPv4 address mapped into IPv6 counts as that IPv4 address.
    """
    address = client_address()
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # In hex, without colons: key names are split at colons.
        return f"{ip.packed[:8].hex()}/64"
    return str(ip)


@dataclass(frozen=True)
class RateWindow:
    """A count of one kind of request in the current window, and what it may reach."""

    key: str
    allowed: int
    seconds: int
    retry_after: int
    counted: str = "requests"
    what: str = "other"

    @property
    def expires(self) -> int:
        """Seconds a window's count is kept: past the window's end, never less."""
        return self.seconds + 1

    def check(self, count: int) -> None:
        """Raise RateLimited (429) when `count` requests are more than allowed."""
        if count > self.allowed:
            raise RateLimited(
                self.retry_after,
                f"Too many {self.counted}: at most {self.allowed} per {self.seconds}s. "
                "Retry later.",
                self.what,
            )


def window_start(seconds: int) -> tuple[int, int]:
    """Return the start of the current window of `seconds`, and the seconds left in it."""
    now = int(time.time())
    start = now - now % seconds
    return start, max(1, start + seconds - now)


def rate_window(bucket: str, allowed: int) -> RateWindow:
    """Return this request's client's window for `bucket` (RATE_LIMIT_WINDOW seconds long)."""
    seconds = current_app.config["RATE_LIMIT_WINDOW"]
    start, left = window_start(seconds)
    key = get_keys().rate_window(bucket, rate_client(), start)
    return RateWindow(key, allowed, seconds, left, what=bucket)


def count(window: RateWindow) -> None:
    """Count this request in `window`; 429 past what it allows."""
    with get_redis().pipeline(transaction=True) as pipe:
        pipe.incr(window.key)
        pipe.expire(window.key, window.expires)
        counted = pipe.execute()[0]
    window.check(counted)


def limit_sign_in(username: str) -> None:
    """Count a sign-in attempt for its client, then for the account it names; 429 past either.

    An attempt refused for its client is not counted for the account, so one client cannot
    use up the account's attempts by itself.
    """
    config = current_app.config
    count(rate_window("login", config["LOGIN_RATE_LIMIT"]))
    seconds = config["RATE_LIMIT_WINDOW"]
    start, left = window_start(seconds)
    account = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:32]
    key = get_keys().sign_in_attempts(account, start)
    allowed = config["LOGIN_ACCOUNT_RATE_LIMIT"]
    counted = "sign-in attempts for this account"
    count(RateWindow(key, allowed, seconds, left, counted, "login_account"))
