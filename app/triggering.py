"""Starting a sync from a web request, for the pages and the API alike: who asked, the request
id, the client's rate window, and 503 when the broker does not take it."""

from __future__ import annotations

import uuid

from flask import abort
from flask import current_app
from flask import request

from app.auth import client_address
from app.auth import rate_window
from app.triggers import BrokerUnavailable
from app.triggers import TriggeredSync
from app.triggers import request_sync

MAX_REQUEST_ID = 128


def start_sync(trigger: str, requested_by: str) -> TriggeredSync:
    """Queue a sync, or join the one queued or running; 503 if the broker refuses it.

    The sync records `requested_by` and the client's address, and the request's X-Request-ID
    (else a new id). Rate limited per client (429); the count is kept in the round trip that
    finds the sync to join.
    """
    request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    try:
        return request_sync(
            trigger,
            requested_by=f"{requested_by} from {client_address()}",
            request_id=request_id[:MAX_REQUEST_ID],
            rate=rate_window("trigger", current_app.config["TRIGGER_RATE_LIMIT"]),
        )
    except BrokerUnavailable as exc:
        abort(503, description=str(exc))
