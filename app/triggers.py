"""Triggers of syncs: start one, or join the one already queued or running; and how a sync's
task stands (running, over, or lost with its worker).

A sync is asked for by beat, the pages, the API and the CLI. At most one is queued or running:
the queued-sync key names it (SET NX), and the sync lock names the one running, so every caller
gets the same task id back, and a trigger leaves nothing behind when the broker is down. A sync
that started runs while its heartbeat beats (app/manifest/heartbeat.py): one whose heartbeat
stopped died with its worker, and the next trigger starts a new sync.
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
from kombu.exceptions import OperationalError

from app.auth import RateLimited
from app.auth import RateWindow
from app.auth import client_address
from app.auth import rate_window
from app.extensions import get_celery
from app.extensions import get_keys
from app.extensions import get_redis
from app.extensions import get_store
from app.logs import current_request_id
from app.metrics import counters

SYNC_TASK = "manifest.sync"
# Celery's states of a task that ended, and the state this app gives a task that started and
# whose heartbeat stopped: its worker died (killed, restarted) before it could end it.
ENDED = ("SUCCESS", "FAILURE", "REVOKED")
LOST = "LOST"
LOST_MESSAGE = (
    "The worker running this sync stopped before it finished (killed or restarted). "
    "The live release is whole; the next check starts a new sync."
)

# What a trigger needs to know, read in one round trip: the sync running (the lock's holder,
# while its heartbeat beats: a dead holder's lock is taken over by the next sync), the one
# queued and whether it beats, and the record of whichever it would join; first, when a rate
# window is given (KEYS[3]), this request is counted in it. A record's key is ARGV[2] followed
# by its task id; a heartbeat's is ARGV[3], the task id, ARGV[4].
# KEYS: lock, queued sync[, rate window]; ARGV: window seconds, and the key parts above.
_COUNT_AND_FIND_SYNC = """
local count = 0
if #KEYS == 3 then
  count = redis.call('INCR', KEYS[3])
  if count == 1 then redis.call('EXPIRE', KEYS[3], ARGV[1]) end
end
local function beats(id) return redis.call('EXISTS', ARGV[3] .. id .. ARGV[4]) == 1 end
local holder = redis.call('GET', KEYS[1])
if holder and not beats(holder) then holder = false end
local queued = redis.call('GET', KEYS[2])
local queued_beats = 0
if queued and beats(queued) then queued_beats = 1 end
local record = false
if holder or queued then record = redis.call('GET', ARGV[2] .. (holder or queued)) end
return {count, holder, queued, queued_beats, record}
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


@dataclass(frozen=True)
class _Found:
    """What a trigger read: the sync running (beating), the one queued, and a record."""

    count: int
    running: str | None
    queued: str | None
    queued_beats: bool
    record: dict[str, Any] | None


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
        triggered = _request_sync(trigger, requested_by, request_id, rate)
    except RateLimited:
        counters.count_trigger(trigger, "rate_limited")
        raise
    except BrokerUnavailable:
        counters.count_trigger(trigger, "refused")
        raise
    except redis.RedisError as exc:
        counters.count_trigger(trigger, "refused")
        raise BrokerUnavailable(
            "Redis is not answering, so the sync was not started. Check REDIS_URL, then retry."
        ) from exc
    counters.count_trigger(trigger, "joined" if triggered.joined else "queued")
    return triggered


def _find_sync(rate: RateWindow | None = None) -> _Found:
    """Read the sync a trigger would join (counting this request in `rate`, if given)."""
    keys = get_keys()
    names = [keys.lock, keys.queued_sync]
    if rate is not None:
        names.append(rate.key)
    window = rate.expires if rate is not None else 0
    # The heartbeat's name around a task id, for the script to name those of the ids it reads.
    before_id, _, after_id = keys.heartbeat("\n").partition("\n")
    script = current_app.extensions.get("trigger_script")
    if script is None:
        script = current_app.extensions["trigger_script"] = get_redis().register_script(
            _COUNT_AND_FIND_SYNC
        )
    count, holder, queued, beats, record = script(
        keys=names, args=[window, keys.task(""), before_id, after_id]
    )
    return _Found(
        int(count),
        holder.decode() if holder else None,
        queued.decode() if queued else None,
        bool(beats),
        msgspec.json.decode(record) if record else None,
    )


def _request_sync(
    trigger: str, requested_by: str | None, request_id: str | None, rate: RateWindow | None
) -> TriggeredSync:
    client = get_redis()
    keys = get_keys()
    found = _find_sync(rate)
    if rate is not None:
        rate.check(found.count)
    for _attempt in range(5):
        if found.running:
            return TriggeredSync(found.running, joined=True, record=found.record)
        queued = found.queued
        if queued:
            state = _state(queued)
            if state == "PENDING":  # still in the queue
                return TriggeredSync(queued, joined=True, record=found.record)
            if state not in ENDED:
                # It started. Read after its state, the lock and its heartbeat tell whether it
                # still runs (checking takes no lock); neither means it died without clearing
                # its queued-sync key (a killed worker never reaches its `finally`).
                found = _find_sync()
                if found.running:
                    return TriggeredSync(found.running, joined=True, record=found.record)
                if found.queued == queued and found.queued_beats:
                    return TriggeredSync(queued, joined=True, record=found.record)
            finished(queued)
        task_id = uuid.uuid4().hex
        ttl = current_app.config["SYNC_TIME_LIMIT"] + 60
        if client.set(keys.queued_sync, task_id, nx=True, ex=ttl):
            break
        # Another trigger queued one meanwhile: join it (or clear it, if it already ended).
        found = _find_sync()
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


def _state(task_id: str) -> str:
    """Return a task's state as its result backend holds it."""
    state: str = get_celery().backend.get_task_meta(task_id)["status"]
    return state


@dataclass(frozen=True)
class TaskStatus:
    """How a sync task stands: its state (Celery's, or LOST), and its progress or outcome."""

    task_id: str
    state: str
    info: Any = None

    @property
    def progress(self) -> dict[str, Any] | None:
        """Where the sync is, while it runs."""
        return self.info if self.state == "PROGRESS" else None


def sync_status(task_id: str) -> TaskStatus:
    """Return how a sync task stands; LOST if it started and its heartbeat stopped.

    A task that started and has not ended (STARTED, PROGRESS, or RETRY: waiting for its
    retry) beats; read after its state, a heartbeat that lapsed says its worker died.
    """
    meta = get_celery().backend.get_task_meta(task_id)
    state = meta["status"]
    started = state not in ENDED and state != "PENDING"
    if started and not get_redis().exists(get_keys().heartbeat(task_id)):
        return TaskStatus(task_id, LOST, LOST_MESSAGE)
    return TaskStatus(task_id, state, meta["result"])


def current_sync() -> TaskStatus | None:
    """Return the sync a trigger would join now (running or queued), else a lost one, if any.

    Reads only: the next trigger clears a lost sync's queued-sync key. A lost sync is news
    until a check (beat's) ran after it was asked for.
    """
    found = _find_sync()
    task_id = found.running or found.queued
    if task_id is None:
        return None
    status = sync_status(task_id)
    if found.running is None and status.state in ENDED:
        return None  # it ended a moment ago (its `finally` clears the key)
    if status.state == LOST:
        last = get_store().last_check() or {}
        if last.get("at", 0) > (found.record or {}).get("at", 0):
            return None
    return status


def remember_task(task_id: str, **info: Any) -> dict[str, Any]:
    """Record that `task_id` is a sync this app started, so its status can be looked up."""
    record = {"at": time.time(), **info}
    ttl = current_app.config["TASK_RESULT_SECONDS"]
    get_redis().set(get_keys().task(task_id), msgspec.json.encode(record), ex=ttl, nx=True)
    return record


def forget_purged() -> None:
    """Forget the queued sync whose message was just purged, so no trigger joins it.

    One a worker runs was not in the queue: it beats (checking Bungie it holds no lock yet).
    """
    found = _find_sync()
    if found.queued and not found.queued_beats and found.running != found.queued:
        forget(found.queued)


def known_task(task_id: str) -> dict[str, Any] | None:
    """Return what is known of a sync task this app started, or None for any other id."""
    value = get_redis().get(get_keys().task(task_id))
    return msgspec.json.decode(value) if value else None


def finished(task_id: str) -> None:
    """Let the next trigger start a new sync: this one is done (or gave up)."""
    get_redis().eval(_DELETE_IF_STILL_OURS, 1, get_keys().queued_sync, task_id)


def forget(task_id: str) -> None:
    """Undo a trigger whose task never reached the queue."""
    finished(task_id)
    get_redis().delete(get_keys().task(task_id))


# -- from a web request: the pages and the API ----------------------------------------------


def start_sync(trigger: str, requested_by: str) -> TriggeredSync:
    """Queue a sync, or join the one queued or running; 503 if the broker refuses it.

    The sync records `requested_by` and the client's address, and the request's id (its
    X-Request-ID when sane, else a new one: the id its log lines carry). Rate limited per
    client (429); the count is kept in the round trip that finds the sync to join.
    """
    try:
        return request_sync(
            trigger,
            requested_by=f"{requested_by} from {client_address()}",
            request_id=current_request_id(),
            rate=rate_window("trigger", current_app.config["TRIGGER_RATE_LIMIT"]),
        )
    except BrokerUnavailable as exc:
        abort(503, description=str(exc))
