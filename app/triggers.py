"""Triggers of syncs: start one, or join the one already queued or running.

A sync is asked for by beat, the pages, the API and the CLI. At most one is queued or running:
the queued-sync key names it (SET NX), and the sync lock names the one running, so every caller
gets the same task id back, and a trigger leaves nothing behind when the broker is down.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from flask import abort
from flask import current_app
from flask import request
from kombu.exceptions import OperationalError

from app.auth import RateWindow
from app.auth import client_address
from app.auth import rate_window
from app.extensions import get_celery
from app.extensions import get_keys
from app.extensions import get_redis

SYNC_TASK = "manifest.sync"

# What a trigger needs to know, read in one round trip: the sync running (the lock's holder),
# the one queued, and the record of whichever it would join; first, when a rate window is given
# (KEYS[3]), this request is counted in it. A record's key is ARGV[2] followed by its task id.
# KEYS: lock, queued sync[, rate window]; ARGV: window seconds, task record key prefix.
_COUNT_AND_FIND_SYNC = """
local count = 0
if #KEYS == 3 then
  count = redis.call('INCR', KEYS[3])
  if count == 1 then redis.call('EXPIRE', KEYS[3], ARGV[1]) end
end
local holder = redis.call('GET', KEYS[1])
local queued = redis.call('GET', KEYS[2])
local record = false
if holder or queued then record = redis.call('GET', ARGV[2] .. (holder or queued)) end
return {count, holder, queued, record}
"""
# Delete a key only while it still names this task (another may have replaced it).
_DELETE_IF_STILL_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class BrokerUnavailable(RuntimeError):
    """The task queue did not take the sync: nothing was started."""


@dataclass(frozen=True)
class TriggeredSync:
    """The sync a trigger started or joined, and its record when the trigger read it."""

    task_id: str
    joined: bool
    record: dict[str, Any] | None = None


def started(task_id: str) -> None:
    """Say that a sync task runs; it lapses after MANIFEST_LOCK_TIMEOUT if the worker dies."""
    ttl = max(1, int(current_app.config["MANIFEST_LOCK_TIMEOUT"]))
    get_redis().set(get_keys().task_alive(task_id), 1, ex=ttl)


def request_sync(
    trigger: str,
    requested_by: str | None = None,
    request_id: str | None = None,
    *,
    rate: RateWindow | None = None,
) -> TriggeredSync:
    """Queue a sync unless one is queued or running; return the task id either way.

    With `rate`, the request is counted in that rate window first, in the same round trip that
    finds the sync to join: a trigger while a sync runs costs one round trip. Raises
    RateLimited past the window's limit, and BrokerUnavailable (leaving no trace) when the
    broker does not take the task.
    """
    try:
        return _request_sync(trigger, requested_by, request_id, rate)
    except redis.RedisError as exc:
        raise BrokerUnavailable(
            "Redis is not answering, so the sync was not started. Check REDIS_URL, then retry."
        ) from exc


def _count_and_find_sync(
    rate: RateWindow | None,
) -> tuple[int, str | None, str | None, dict[str, Any] | None]:
    """Return (this request's count in `rate`, running task, queued task, its record)."""
    keys = get_keys()
    names = [keys.lock, keys.queued_sync]
    if rate is not None:
        names.append(rate.key)
    window = rate.expires if rate is not None else 0
    script = current_app.extensions.get("trigger_script")
    if script is None:
        script = current_app.extensions["trigger_script"] = get_redis().register_script(
            _COUNT_AND_FIND_SYNC
        )
    count, holder, queued, record = script(keys=names, args=[window, keys.task("")])
    return (
        int(count),
        holder.decode() if holder else None,
        queued.decode() if queued else None,
        msgspec.json.decode(record) if record else None,
    )


def _request_sync(
    trigger: str, requested_by: str | None, request_id: str | None, rate: RateWindow | None
) -> TriggeredSync:
    client = get_redis()
    keys = get_keys()
    count, running, queued, record = _count_and_find_sync(rate)
    if rate is not None:
        rate.check(count)
    for _attempt in range(5):
        if running:
            return TriggeredSync(running, joined=True, record=record)
        if queued:
            if not _ran(queued):
                return TriggeredSync(queued, joined=True, record=record)
            # It ran. It still runs if it holds the lock (building) or is alive (checking,
            # which takes no lock); read after its state, these tell. Neither means it ended or
            # died without clearing its queued-sync key (a killed worker never reaches its
            # `finally`).
            _, running, _, record = _count_and_find_sync(None)
            if running:
                return TriggeredSync(running, joined=True, record=record)
            if client.exists(keys.task_alive(queued)):
                return TriggeredSync(queued, joined=True, record=known_task(queued))
            client.eval(_DELETE_IF_STILL_OURS, 1, keys.queued_sync, queued)
        task_id = uuid.uuid4().hex
        ttl = current_app.config["SYNC_TIME_LIMIT"] + 60
        if client.set(keys.queued_sync, task_id, nx=True, ex=ttl):
            break
        # Another trigger queued one meanwhile: join it (or clear it, if it already ended).
        _, running, queued, record = _count_and_find_sync(None)
    else:
        raise BrokerUnavailable("Syncs kept starting and ending under this request; retry.")
    record = remember_task(
        task_id, trigger=trigger, requested_by=requested_by, request_id=request_id
    )
    try:
        get_celery().send_task(
            SYNC_TASK,
            kwargs={"trigger": trigger, "requested_by": requested_by, "request_id": request_id},
            task_id=task_id,
        )
    except (OperationalError, redis.RedisError, OSError) as exc:
        with contextlib.suppress(redis.RedisError):
            forget(task_id)
        raise BrokerUnavailable(
            "The task queue is not answering, so the sync was not started. "
            "Check that the broker (CELERY_BROKER_URL or REDIS_URL) is up, then try again."
        ) from exc
    return TriggeredSync(task_id, joined=False, record=record)


def _ran(task_id: str) -> bool:
    """Whether a sync task has started (and so, with the lock free, is over or dead).

    Still queued (PENDING) or waiting for its retry (RETRY) stays the queued sync.
    """
    state = get_celery().backend.get_task_meta(task_id)["status"]
    return state in ("STARTED", "PROGRESS", "SUCCESS", "FAILURE", "REVOKED")


def remember_task(task_id: str, **info: Any) -> dict[str, Any]:
    """Record that `task_id` is a sync this app started, so its status can be looked up."""
    record = {"at": time.time(), **info}
    ttl = current_app.config["TASK_RESULT_SECONDS"]
    get_redis().set(get_keys().task(task_id), msgspec.json.encode(record), ex=ttl, nx=True)
    return record


def queued_task() -> str | None:
    """Return the id of the sync task that triggers join now (queued or running), if any."""
    value = get_redis().get(get_keys().queued_sync)
    return value.decode() if isinstance(value, bytes) else value


def known_task(task_id: str) -> dict[str, Any] | None:
    """Return what is known of a sync task this app started, or None for any other id."""
    value = get_redis().get(get_keys().task(task_id))
    return msgspec.json.decode(value) if value else None


def finished(task_id: str) -> None:
    """Let the next trigger start a new sync: this one is done (or gave up)."""
    client = get_redis()
    keys = get_keys()
    client.eval(_DELETE_IF_STILL_OURS, 1, keys.queued_sync, task_id)
    client.delete(keys.task_alive(task_id))


def forget(task_id: str) -> None:
    """Undo a trigger whose task never reached the queue."""
    client = get_redis()
    keys = get_keys()
    client.eval(_DELETE_IF_STILL_OURS, 1, keys.queued_sync, task_id)
    client.delete(keys.task(task_id))


# -- from a web request: the pages and the API ----------------------------------------------

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
