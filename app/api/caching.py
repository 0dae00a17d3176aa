"""HTTP caching of the API's reads: an ETag naming what an answer was made from (the live release,
or a definition's digest), its Cache-Control, and 304 to a client that holds it already."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from flask import Response
from flask import current_app
from flask import request

from app.api.openapi import REVISION
from app.queries import reader

# Follows the live release: any cache may keep it, and asks each time (If-None-Match); a 304
# costs little. Nothing in /api/v1 is immutable: even a release's change log changes when its
# log leaves the history or a rollback undoes it (the mirror's content files are immutable).
REVALIDATE = "no-cache"
# Shown to the admin only (who asked for a sync), or about a person (a player's profile): the
# asker's own cache may keep it, asking each time; no shared cache may.
PRIVATE = "private, no-cache"
# Kept by nobody: a task's progress, errors, what changes state.
NO_STORE = "no-store"
# What an ETag says in place of a release while none is live (release ids are hex digits).
NO_RELEASE = "none"
# What a 304 repeats of the answer it stands for, besides ETag and Cache-Control: caches update
# their stored headers from it (RFC 9111, 4.3.4). Werkzeug drops content headers from a 304.
_REPEATED = ("Vary", "X-Manifest-Release")

_encode = msgspec.json.Encoder().encode


def live_release_id() -> str | None:
    """Return the live release's id as Redis vouches for it (no round trip), else read now.

    Never the id this process last saw unless Redis vouches for it: a 304 must not rest on a
    guess.
    """
    return reader().fresh_live_id()


def release_tag(release_id: str | None, *more: str) -> str:
    """Return the ETag of an answer made from a release and `more` (what else it shows).

    It also names the revision of the API's description, so an answer whose shape a deploy
    changed is not kept as it was until the next release.
    """
    return ".".join((release_id or NO_RELEASE, *more, REVISION))


def value_tag(value: Any) -> str:
    """Return an ETag part naming a JSON value (a check's record)."""
    return hashlib.sha256(_encode(value)).hexdigest()[:16]


def body_tag(response: Response) -> str:
    """Return an ETag naming an answer by its bytes (what is made afresh each time: a player)."""
    return hashlib.sha256(response.get_data()).hexdigest()[:16]


def not_modified(
    etag: str, cache_control: str, *, star: bool = True, weak: bool = True
) -> Response | None:
    """Return a 304 if the request's If-None-Match names `etag` (weak comparison), else None.

    `*` names any current representation (RFC 9110, 13.1.2): pass `star=False` while it is not
    known yet whether there is one (the 304 is decided before the answer is read).
    """
    if request.method not in ("GET", "HEAD"):
        return None
    asked = request.if_none_match
    if not asked or (asked.star_tag and not star) or not asked.contains_weak(etag):
        return None
    answer = current_app.response_class(status=304)
    answer.set_etag(etag, weak=weak)
    answer.headers["Cache-Control"] = cache_control
    return answer


def tagged(response: Response, etag: str, cache_control: str, *, weak: bool = True) -> Response:
    """Return `response` with its ETag and Cache-Control, or a 304 in its place if the request's
    If-None-Match names it (or is `*`)."""
    if response.status_code == 200:
        cached = not_modified(etag, cache_control, weak=weak)
        if cached is not None:
            for name in _REPEATED:
                if name in response.headers:
                    cached.headers[name] = response.headers[name]
            return cached
    response.set_etag(etag, weak=weak)
    response.headers["Cache-Control"] = cache_control
    return response


def keep_nothing_unsaid(response: Response) -> Response:
    """Give an answer that set no Cache-Control of its own `no-store` (errors, writes, tasks)."""
    response.headers.setdefault("Cache-Control", NO_STORE)
    return response
