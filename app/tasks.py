"""Celery tasks: thin wrappers that run the sync engine, report progress and tell Slack."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any
from typing import NoReturn

import redis
from celery import shared_task
from celery.exceptions import Retry
from flask import current_app
from flask import url_for
from kombu.exceptions import OperationalError

from app import tickets
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.notify import announce
from app.notify import slack

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.25  # seconds between progress writes to the result backend
ANNOUNCE_RECENT = 10
ANNOUNCE_WITHIN_SECONDS = 86400


class SyncRetry(Exception):
    """The sync met a transient failure and will be tried again."""


@shared_task(name="manifest.sync", bind=True, ignore_result=False, acks_late=True)
def sync_manifest(
    self: Any,
    trigger: str = "manual",
    requested_by: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Bring the cache in step with Bungie; retry transient failures; announce new releases.

    Soft time limits end up as a failed result: sync.run drops the staged data and the
    live release stays as it was.
    """
    task_id = self.request.id
    tickets.remember_task(task_id, trigger=trigger, requested_by=requested_by)
    tickets.started(task_id)
    retrying = False
    try:
        result = sync.run(
            get_store(),
            get_bungie(),
            run_id=task_id,
            trigger=trigger,
            requested_by=requested_by,
            request_id=request_id,
            progress=_ProgressReporter(self),
        )
        after_check(result)
        max_retries = current_app.config["SYNC_MAX_RETRIES"]
        if result.transient and self.request.retries < max_retries:
            countdown = result.retry_after or 2 ** (self.request.retries + 1)
            try:
                raise self.retry(
                    exc=SyncRetry(result.summary()), countdown=countdown, max_retries=max_retries
                )
            except Retry:
                retrying = True  # Queued again: the ticket stays with it.
                raise
        return result.to_dict()
    finally:
        if not retrying:
            with contextlib.suppress(redis.RedisError):
                tickets.finished(task_id)


@shared_task(name="manifest.notify_slack", bind=True, ignore_result=True, acks_late=True)
def notify_slack(self: Any, release_id: str) -> str:
    """Tell Slack what a committed release changed, exactly once; retry while Slack is down."""
    sender = slack.sender_from_config(current_app.config)
    announcements = _announcements()
    if sender is None:
        announcements.unqueue(release_id)
        return "Slack is off"
    store = get_store()

    def build() -> slack.Message | None:
        entry = store.history_entry(release_id)
        if entry is None or entry["previous"] is None:
            return None  # The first fill of the cache has no news to tell.
        return slack.release_message(entry, _item_url, _url("main.release", release_id=release_id))

    try:
        outcome = announcements.announce(release_id, build, sender)
    except slack.SlackUnavailable as exc:
        _retry_or_give_up(self, exc, lambda: announcements.unqueue(release_id))
    except slack.SlackRejected:
        log.exception("Slack refused the message for release %s; not retrying", release_id)
        announcements.unqueue(release_id)
        return "rejected"
    if outcome != announce.BUSY:
        announcements.unqueue(release_id)
    log.info("Slack message for release %s: %s", release_id, outcome)
    return outcome


@shared_task(name="manifest.notify_trouble", bind=True, ignore_result=True, acks_late=True)
def notify_trouble(self: Any, kind: str, check: dict[str, Any], since: float) -> str:
    """Tell Slack that syncing is failing, or works again."""
    sender = slack.sender_from_config(current_app.config)
    if sender is None:
        return "Slack is off"
    link = _url("main.dashboard")
    if kind == announce.TROUBLE:
        message = slack.trouble_message({**check, "failing_since": since}, link)
    else:
        message = slack.recovered_message(check, since, link)
    try:
        sender.send(message)
    except slack.SlackUnavailable as exc:
        _retry_or_give_up(self, exc, lambda: None)
    except slack.SlackRejected:
        log.exception("Slack refused the %s message; not retrying", kind)
        return "rejected"
    return "sent"


def _retry_or_give_up(task: Any, exc: Exception, give_up: Callable[[], None]) -> NoReturn:
    max_retries = current_app.config["SLACK_MAX_RETRIES"]
    if task.request.retries >= max_retries:
        log.error("Slack stayed unavailable after %d retries, giving up: %s", max_retries, exc)
        give_up()
        raise exc
    countdown = min(900, current_app.config["SLACK_RETRY_SECONDS"] * 2**task.request.retries)
    log.warning("Slack unavailable (%s); retrying in %ss", exc, countdown)
    raise task.retry(exc=exc, countdown=countdown, max_retries=max_retries)


def after_check(result: sync.SyncResult) -> None:
    """After a check: queue the release message and any trouble or recovered message."""
    if slack.sender_from_config(current_app.config) is None or result.outcome == sync.BUSY:
        return
    announcements = _announcements()
    store = get_store()
    if result.ok:
        # The latest release, and any recent one whose message was given up on while Slack was
        # down (also once a newer one is live), oldest first. Not older ones: turning Slack on
        # must not replay last month.
        since = time.time() - ANNOUNCE_WITHIN_SECONDS
        for entry in reversed(store.history(ANNOUNCE_RECENT)):
            if (
                entry["previous"]
                and entry["at"] >= since
                and announcements.should_queue(entry["id"])
            ):
                _send(notify_slack, entry["id"])
    check = store.last_check()
    alert = announcements.after_check(check, current_app.config["SLACK_ALERT_AFTER_SECONDS"])
    if alert is not None:
        _send(notify_trouble, alert.kind, check, alert.since)


def _send(task: Any, *args: Any) -> None:
    # The sync is committed whatever happens here: a broker hiccup must not fail it.
    try:
        task.delay(*args)
    except OperationalError:
        log.exception("Could not queue %s", task.name)


def _announcements() -> announce.Announcements:
    store = get_store()
    return announce.Announcements(store.redis, store.prefix)


def _url(endpoint: str, **values: Any) -> str:
    return url_for(endpoint, _external=True, **values)


def _item_url(item_hash: int) -> str:
    return _url("main.item", item_hash=item_hash)


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
