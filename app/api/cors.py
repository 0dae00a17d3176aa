"""CORS for the API: a page of any origin may read it; nothing that changes state may be asked for
from one (the sync trigger answers no CORS headers, and its preflight is refused)."""

from __future__ import annotations

import re

from flask import Response
from flask import request

from app.api.definitions import RELEASE_HEADER

# What a page of another origin may send to an endpoint: reads by GET and HEAD, and the batch
# lookup by POST. That one is a read too: it changes nothing and takes no credential, and its
# JSON body makes browsers ask a preflight first, which is answered.
READ_METHODS = ("GET", "HEAD")
POSTED_READS = frozenset({"api.definitions"})
# Changes state: no page of another origin may ask for it.
NOT_SHARED = frozenset({"api.trigger_sync"})
# Read from an answer by a page of another origin (past the headers CORS always lets it read).
EXPOSED = f"ETag, {RELEASE_HEADER}, Retry-After"
# What a preflight may name in Access-Control-Request-Headers to have it echoed back.
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")
# Allowed when a preflight names no headers that can be echoed.
_USUAL_HEADERS = "If-None-Match, Content-Type, Authorization"


def allow_reads(response: Response) -> Response:
    """Let any origin read the API: answer its preflights for reads, and no other.

    `*` is safe: an answer with `*` is never shown to a page that sent credentials (cookies),
    so what the admin's session may see stays the admin's; a bearer token is sent only by a
    page that holds it. A preflight for another method gets no CORS headers: browsers refuse.
    """
    endpoint = request.endpoint
    if endpoint is None or endpoint in NOT_SHARED:
        return response
    methods = ("POST",) if endpoint in POSTED_READS else READ_METHODS
    if request.method == "OPTIONS":
        wanted = request.headers.get("Access-Control-Request-Method", "")
        if wanted not in methods:
            return response
        asked = request.headers.get("Access-Control-Request-Headers", "").strip()
        response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        response.headers["Access-Control-Allow-Headers"] = (
            asked if _HEADER_LIST.fullmatch(asked) else _USUAL_HEADERS
        )
        response.headers["Access-Control-Max-Age"] = "86400"
    elif request.method in methods:
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
    else:
        return response
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
