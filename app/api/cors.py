"""CORS for the API: a page of any origin may read it; nothing that changes state may be asked for
from one (the sync trigger answers no CORS headers, and its preflight is refused)."""

from __future__ import annotations

from flask import Response
from flask import request

from app import cors
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
# Allowed when a preflight names no headers that can be echoed.
_USUAL_HEADERS = "If-None-Match, Content-Type, Authorization"


def allow_reads(response: Response) -> Response:
    """Let any origin read the API (a read's methods: see above); never ask for a write."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in NOT_SHARED:
        return response
    methods = ("POST",) if endpoint in POSTED_READS else READ_METHODS
    return cors.share(response, methods, _USUAL_HEADERS, EXPOSED)
