"""Liveness and readiness: /healthz says the process answers, /readyz that it can do its job
(and how the read replica stands, when there is one)."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask.typing import ResponseReturnValue

from app.extensions import get_celery
from app.extensions import get_read_redis
from app.extensions import get_redis
from app.extensions import get_store
from app.queries import replica_standing

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up and answering."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Redis and the broker answer, and a check succeeded lately (3x the poll interval).

    With a read replica, the answer also says how it stands (`replica`: how this process last
    found it, the verdict reads follow, and `reads_on_replica`; see `queries.replica_standing`).
    It reports the last look the pages took, never takes one: a hung replica costs a probe
    nothing.
    A replica that fails does not make the process unready: the pages then read from the
    primary, and a replica shared by every web process would otherwise take them all out.
    """
    failing: list[str] = []
    store = get_store()
    try:
        store.redis.ping()
        check = store.last_check()
    except redis.RedisError as exc:
        failing.append(f"redis: {type(exc).__name__}")
        check = None
    try:
        with get_celery().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "broker not answering"
        failing.append(f"broker: {type(exc).__name__}")
    horizon = 3 * current_app.config["MANIFEST_POLL_SECONDS"]
    last_ok = _last_success(check)
    if last_ok is None:
        failing.append("sync: no successful check yet")
    elif time.time() - last_ok > horizon:
        failing.append(f"sync: no successful check in the last {horizon}s")
    status = 503 if failing else 200
    answer: dict[str, Any] = {"status": "ready" if not failing else "not ready", "failing": failing}
    if get_read_redis() is not get_redis():
        answer["replica"] = replica_standing(get_read_redis())
    return jsonify(answer), status


def _last_success(check: dict | None) -> float | None:
    return check.get("last_success") if check else None
