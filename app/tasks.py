"""Celery tasks: thin wrappers that run a sync, report its progress and post to destinations."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NoReturn

import redis
from celery import shared_task
from celery.exceptions import Retry
from flask import current_app

from app import triggers
from app.extensions import get_bungie
from app.extensions import get_keys
from app.extensions import get_redis
from app.extensions import get_store
from app.manifest import sync
from app.manifest.client import RequestKind
from app.manifest.heartbeat import Heartbeat
from app.manifest.outcome import FAILED
from app.manifest.store import ManifestStore
from app.metrics import ledger
from app.notify import announce
from app.notify import policy
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryThrottled
from app.notify.destinations import kind_of

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.25  # seconds between progress writes to the result backend
# A task waiting for its retry stays alive this long past its countdown: a worker picks a due
# retry up by then, unless the worker holding it died.
RETRY_GRACE_SECONDS = 30
# The longest a post waits before its next try: a retry's countdown must stay well inside the
# broker's visibility timeout, or a second copy of the task would run.
DELIVERY_RETRY_CAP_SECONDS = 900
# What a delivery task posts, as /metrics counts it.
RELEASE = "release"
ALERT = "alert"


class SyncRetry(Exception):
    """The sync met a transient failure and will be tried again."""


@shared_task(name=triggers.SYNC_TASK, bind=True, ignore_result=False, acks_late=True)
def sync_manifest(
    self: Any,
    trigger: str = "manual",
    requested_by: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Bring the cache in step with Bungie; retry transient failures; announce new releases.

    Its heartbeat says it is alive from its first line to its last (a killed task's lapses
    within seconds: triggers and the task status see that it died). Soft time limits end up as
    a failed result: sync.run drops the staged data and the live release stays as it was.
    """
    task_id = self.request.id
    store = get_store()
    retrying = False
    heartbeat = Heartbeat(
        store.redis, store.keys, task_id, lock_timeout=store.settings.lock_timeout, lingers=True
    )
    with heartbeat:
        triggers.remember_task(task_id, trigger=trigger, requested_by=requested_by)
        try:
            result = _run_counted(self, store, trigger, requested_by, request_id)
            policy.after_check(result)
            max_retries = current_app.config["SYNC_MAX_RETRIES"]
            if result.transient and self.request.retries < max_retries:
                countdown = result.retry_after or 2 ** (self.request.retries + 1)
                try:
                    raise self.retry(
                        exc=SyncRetry(result.summary()),
                        countdown=countdown,
                        max_retries=max_retries,
                    )
                except Retry:
                    # Queued again: it stays the sync that triggers join, alive until it is due.
                    retrying = True
                    heartbeat.stop(lasting=countdown + RETRY_GRACE_SECONDS)
                    raise
            return result.to_dict()
        finally:
            if not retrying:
                with contextlib.suppress(redis.RedisError):
                    triggers.finished(task_id)


@shared_task(name=policy.DELIVER_RELEASE_TASK, bind=True, ignore_result=True, acks_late=True)
def deliver_release(self: Any, destination: str, release_id: str, payload: Any) -> str:
    """Post a release to one destination, exactly once: wait out its throttling, retry its
    outages with backoff; other destinations have tasks of their own."""
    try:
        outcome = policy.deliver_release(destination, release_id, payload)
    except (DeliveryThrottled, DeliveryFailed) as exc:
        _retry_or_give_up(
            self,
            destination,
            exc,
            lambda: policy.give_up_release(destination, release_id),
            message=RELEASE,
        )
    _count_delivery(destination, RELEASE, outcome)
    if outcome == announce.SENDING_ELSEWHERE:
        # Another worker holds the right to post it, or held it when it was killed: look again
        # once that right has lapsed (it will read "already sent" if the other one posted).
        _retry_or_give_up(
            self,
            destination,
            RuntimeError("being sent elsewhere"),
            lambda: policy.give_up_release(destination, release_id),
            countdown=announce.SENDING_SECONDS,
        )
    return outcome


@shared_task(name=policy.DELIVER_ALERT_TASK, bind=True, ignore_result=True, acks_late=True)
def deliver_alert(self: Any, destination: str, payload: Any) -> str:
    """Tell one destination that syncing is failing, or works again; retry while it is down."""
    try:
        outcome = policy.deliver_alert(destination, payload)
    except (DeliveryThrottled, DeliveryFailed) as exc:
        _retry_or_give_up(self, destination, exc, lambda: None, message=ALERT)
    _count_delivery(destination, ALERT, outcome)
    return outcome


def _retry_or_give_up(
    task: Any,
    destination: str,
    exc: Exception,
    give_up: Callable[[], None],
    countdown: float | None = None,
    message: str | None = None,
) -> NoReturn:
    """Retry the task later (a throttle: when asked; trouble: with backoff) or give up.

    With `message` (release or alert), this try is counted for /metrics: throttled, failed or
    gave_up.
    """
    kind = kind_of(destination).upper()
    max_retries = current_app.config[f"{kind}_MAX_RETRIES"]
    shown = destination[:1].upper() + destination[1:]
    if task.request.retries >= max_retries:
        log.error("%s stayed unavailable after %d retries, giving up: %s", shown, max_retries, exc)
        if message:
            _count_delivery(destination, message, "gave_up")
        give_up()
        raise exc
    if message:
        trouble = "throttled" if isinstance(exc, DeliveryThrottled) else "failed"
        _count_delivery(destination, message, trouble)
    if countdown is None and isinstance(exc, DeliveryThrottled):
        countdown = exc.retry_after
    if countdown is None:
        countdown = current_app.config[f"{kind}_RETRY_SECONDS"] * 2**task.request.retries
    countdown = min(DELIVERY_RETRY_CAP_SECONDS, countdown)
    log.warning("%s unavailable (%s); retrying in %ss", shown, exc, countdown)
    raise task.retry(exc=exc, countdown=countdown, max_retries=max_retries)


def _run_counted(
    task: Any,
    store: ManifestStore,
    trigger: str,
    requested_by: str | None,
    request_id: str | None,
) -> sync.SyncResult:
    """Run the sync with a Bungie client of its own, and count it for /metrics however it ends.

    sync.run turns what goes wrong in the flow into a failed result; what still escapes it (a
    soft time limit landing after the flow, while the check is recorded; a BaseException) is
    counted as a failed sync with no durations, and the requests it made to Bungie all the same.
    """
    bungie = get_bungie()
    result: sync.SyncResult | None = None
    try:
        result = sync.run(
            store,
            bungie,
            run_id=task.request.id,
            trigger=trigger,
            requested_by=requested_by,
            request_id=request_id,
            progress=_ProgressReporter(task),
            beating=True,
        )
        return result
    finally:
        try:
            _count_sync(store, trigger, task.request.id, result, bungie.take_requests())
        finally:
            bungie.close()


def _count_sync(
    store: ManifestStore,
    trigger: str,
    run_id: str,
    result: sync.SyncResult | None,
    requests: Mapping[RequestKind, int],
) -> None:
    """Count a sync's outcome (None: it raised, so failed), durations and Bungie requests for
    /metrics, in one round trip; Redis not answering loses the count, never the sync."""
    try:
        ledger.record_sync(
            store.redis,
            store.keys,
            trigger=trigger,
            outcome=result.outcome if result is not None else FAILED,
            timings=result.timings if result is not None else {},
            requests=requests,
        )
    except redis.RedisError:
        log.warning("Could not count sync %s for /metrics: Redis is unavailable", run_id)


def _count_delivery(destination: str, message: str, outcome: str) -> None:
    """Count one try of a delivery task for /metrics (never failing the task)."""
    try:
        ledger.record_delivery(get_redis(), get_keys(), destination, message, outcome)
    except redis.RedisError:
        log.warning("Could not count a post to %s for /metrics: Redis is unavailable", destination)


class _ProgressReporter:
    """Publish sync progress as the task's PROGRESS state, at most a few times a second."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self._last_phase: str | None = None
        self._last_at = 0.0

    def __call__(self, progress: sync.Progress) -> None:
        now = time.monotonic()
        if progress.phase == self._last_phase and now - self._last_at < PROGRESS_EVERY:
            return
        self._last_phase, self._last_at = progress.phase, now
        self.task.update_state(state="PROGRESS", meta=progress.to_dict())
