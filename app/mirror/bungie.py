"""How the mirror answers like Bungie: the Platform envelope and its error codes, the content
CDN's bare 404, HTTP caching headers, and CORS for reads from any origin."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from flask import Response
from flask import request
from werkzeug.exceptions import HTTPException

from app import cors

log = logging.getLogger(__name__)

PLATFORM_PREFIX = "/Platform/"
CONTENT_PREFIX = "/common/destiny2_content/"
ENVELOPE_TYPE = "application/json; charset=utf-8"
# The header naming the release an answer was read from (as the API's).
RELEASE_HEADER = "X-Manifest-Release"
# A content path carries its release: its answer never changes, caches may keep it for good.
IMMUTABLE = "public, max-age=31536000, immutable"
# A Platform answer follows the live release: caches keep it, but ask (If-None-Match) each time.
REVALIDATE = "no-cache"
# What the mirror asks a client to wait before asking again while it has nothing to serve.
RETRY_SECONDS = 30
# Bungie's clients send these; allowed when a preflight names none we can echo.
_USUAL_HEADERS = "X-API-Key, If-None-Match, Cache-Control, Content-Type"
_READ_METHODS = ("GET", "HEAD")

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class PlatformError:
    """One of Bungie's error codes (Exceptions.PlatformErrorCodes) and the HTTP status it takes.

    The statuses follow the demo origin: Bungie answers "not found" with HTTP 200 and the
    error in the envelope, bad parameters with 400, maintenance with 503.
    """

    code: int
    status: str
    http_status: int


SUCCESS = PlatformError(1, "Success", 200)
UNHANDLED_EXCEPTION = PlatformError(3, "UnhandledException", 500)
SYSTEM_DISABLED = PlatformError(5, "SystemDisabled", 503)
PARAMETER_PARSE_FAILURE = PlatformError(7, "ParameterParseFailure", 400)
INVALID_PARAMETERS = PlatformError(18, "InvalidParameters", 400)
NOT_FOUND = PlatformError(21, "NotFound", 200)
# An unknown Platform route: Bungie's code, with the HTTP status a missing route has.
NO_SUCH_ROUTE = PlatformError(21, "NotFound", 404)


def envelope(response: Any = None, error: PlatformError = SUCCESS, message: str = "Ok") -> bytes:
    """Encode Bungie's envelope; `response` may be msgspec.Raw (passed through as it is)."""
    body: dict[str, Any] = {} if response is None else {"Response": response}
    body.update(
        ErrorCode=error.code,
        ThrottleSeconds=RETRY_SECONDS if error is SYSTEM_DISABLED else 0,
        ErrorStatus=error.status,
        Message=message,
        MessageData={},
    )
    return _encode(body)


def platform_ok(response: Any, release_id: str) -> Response:
    """Answer a Platform read: the envelope around `response`, with an ETag of its bytes
    (304 when the client holds them already) and the release it was read from."""
    body = envelope(response)
    answer = conditional(body, hashlib.sha256(body).hexdigest()[:32], REVALIDATE)
    answer.headers[RELEASE_HEADER] = release_id
    return answer


def platform_error(error: PlatformError, message: str) -> Response:
    """Answer a Platform request with Bungie's error envelope."""
    answer = Response(envelope(error=error, message=message), error.http_status)
    answer.content_type = ENVELOPE_TYPE
    answer.headers["Cache-Control"] = "no-store"
    if error is SYSTEM_DISABLED:
        answer.headers["Retry-After"] = str(RETRY_SECONDS)
    return answer


def conditional(body: bytes, etag: str, cache_control: str) -> Response:
    """Answer `body` as Bungie's JSON with `etag`, or 304 if the request's If-None-Match has it."""
    answer = not_modified(etag, cache_control)
    if answer is None:
        answer = Response(body, content_type=ENVELOPE_TYPE)
        answer.set_etag(etag)
        answer.headers["Cache-Control"] = cache_control
    return answer


def not_modified(etag: str, cache_control: str, *, weak: bool = False) -> Response | None:
    """Return a 304 if the request's If-None-Match names `etag`, else None."""
    if not request.if_none_match.contains_weak(etag):
        return None
    answer = Response(status=304)
    answer.set_etag(etag, weak=weak)
    answer.headers["Cache-Control"] = cache_control
    return answer


def content_not_found() -> Response:
    """Answer a content path with nothing behind it as Bungie's CDN does: a bare 404 page."""
    answer = Response(b"<h1>404 Not Found</h1>", 404, content_type="text/html")
    answer.headers["Cache-Control"] = "no-store"
    return answer


def content_unavailable() -> Response:
    """Answer a content path while Redis does not answer: a bare 503, to be retried."""
    answer = Response(b"<h1>503 Service Unavailable</h1>", 503, content_type="text/html")
    answer.headers["Cache-Control"] = "no-store"
    answer.headers["Retry-After"] = str(RETRY_SECONDS)
    return answer


def is_mirror_path() -> bool:
    """Say whether this request's path is one of the mirror's (a Platform route or content)."""
    return request.path.startswith((PLATFORM_PREFIX, CONTENT_PREFIX))


def is_platform() -> bool:
    """Say whether this request is for a Platform route (else a content path)."""
    return request.path.startswith(PLATFORM_PREFIX)


def redis_unavailable(error: redis.RedisError) -> Response:
    """Answer while Redis does not answer: SystemDisabled, or the CDN's 503."""
    log.warning("Redis did not answer %s: %s", request.path, error)
    if is_platform():
        return platform_error(SYSTEM_DISABLED, "The cache is not answering. Retry in a moment.")
    return content_unavailable()


def http_error(error: HTTPException) -> Response:
    """Answer an HTTP error raised by a mirror view in Bungie's shapes, never as a page."""
    if is_platform():
        shaped = PlatformError(UNHANDLED_EXCEPTION.code, error.name, error.code or 500)
        return platform_error(shaped, error.description or error.name)
    if error.code == 404:
        return content_not_found()
    code = error.code or 500
    return Response(f"<h1>{code} {error.name}</h1>", code, content_type="text/html")


def unexpected_error(error: Exception) -> Response:
    """Log the traceback; answer a Bungie-shaped 500 without any of it."""
    log.exception("Unhandled error on %s %s", request.method, request.path)
    if is_platform():
        return platform_error(UNHANDLED_EXCEPTION, "Something went wrong on our side.")
    return Response(b"<h1>500 Internal Server Error</h1>", 500, content_type="text/html")


def allow_any_origin(response: Response) -> Response:
    """Let any origin read the mirror (GET and HEAD); answer their preflights, and no other.

    Nothing the mirror serves depends on who asks, and it takes no credentials.
    """
    return cors.share(response, _READ_METHODS, _USUAL_HEADERS, f"ETag, {RELEASE_HEADER}")
