"""What every response gets: security headers, and errors (any HTTP error, Redis or Bungie not
answering, a player not shown) as a page or as the API's JSON, never a traceback."""

from __future__ import annotations

import logging

import redis
from flask import Flask
from flask import Response
from flask import current_app
from flask import jsonify
from flask import render_template
from flask import request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import InternalServerError
from werkzeug.exceptions import ServiceUnavailable

from app.manifest.errors import BungieError
from app.mirror import bungie
from app.player_pages import http_error
from app.players import PlayerError

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Register the error handlers and the security headers on `app`."""
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(redis.RedisError, redis_unavailable)
    app.register_error_handler(PlayerError, player_unavailable)
    app.register_error_handler(BungieError, player_unavailable)
    app.register_error_handler(Exception, handle_unexpected_error)
    app.after_request(add_security_headers)


def wants_json() -> bool:
    """Return whether this request should get JSON errors (the API, or a client asking)."""
    return request.blueprint == "api" or request.path.startswith("/api/")


def handle_http_error(error: HTTPException) -> Response | tuple[str, int]:
    """Answer an HTTP error as JSON `{error, message}` for the API, else as a page."""
    if bungie.is_mirror_path():
        # No mirror route matched (a 404, a 405): still Bungie's shapes, never a page.
        return bungie.http_error(error)
    code = error.code or 500
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    if wants_json():
        response = jsonify(error=_slug(error.name), message=error.description)
        response.status_code = code
        response.headers.extend(headers)
        # An error says how things are now (a 503 until Redis answers): no cache keeps it,
        # also where no route matched (the API's own hook sees only its routes).
        response.headers.setdefault("Cache-Control", "no-store")
        return response
    page = render_template("error.html", code=code, name=error.name, description=error.description)
    response = current_app.make_response((page, code))
    response.headers.extend(headers)
    return response


def redis_unavailable(error: redis.RedisError) -> Response | tuple[str, int]:
    """Answer 503 when Redis does not answer."""
    return handle_http_error(ServiceUnavailable("Redis is not answering. Retry in a moment."))


def player_unavailable(error: Exception) -> Response | tuple[str, int]:
    """Say why a player cannot be shown: not found, private, or Bungie not answering."""
    return handle_http_error(http_error(error))


def handle_unexpected_error(error: Exception) -> Response | tuple[str, int]:
    """Log the traceback; show the visitor a plain 500 without any of it."""
    log.exception("Unhandled error on %s %s", request.method, request.path)
    return handle_http_error(InternalServerError("Something went wrong on our side."))


def add_security_headers(response: Response) -> Response:
    """Set CSP, frame denial and friends on every response, and HSTS where configured."""
    icons = current_app.config["BUNGIE_BASE_URL"].rstrip("/")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; "
        f"img-src 'self' data: {icons}; "
        "style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    # Production only by default: browsers ignore it over plain HTTP, and behind a router
    # that ends TLS (Heroku) the app cannot tell the scheme the browser used.
    if max_age := current_app.config["HSTS_MAX_AGE"]:
        response.headers.setdefault("Strict-Transport-Security", f"max-age={max_age}")
    return response


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_").replace("'", "")
