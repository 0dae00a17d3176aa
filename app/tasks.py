"""Celery tasks: thin wrappers that run the sync engine and report its progress."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from flask import current_app
from kombu.exceptions import OperationalError

from app import tickets
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.25  # seconds between progress writes to the result backend


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
        if result.outcome == sync.UPDATED:
            _announce(result.release_id)
        max_retries = current_app.config["SYNC_MAX_RETRIES"]
        if result.transient and self.request.retries < max_retries:
            retrying = True
            countdown = result.retry_after or 2 ** (self.request.retries + 1)
            raise self.retry(
                exc=SyncRetry(result.summary()), countdown=countdown, max_retries=max_retries
            )
        return result.to_dict()
    finally:
        if not retrying:
            tickets.finished(task_id)


def _announce(release_id: str) -> None:
    # The release is committed whatever happens here: a broker hiccup must not fail the sync.
    try:
        notify_slack.delay(release_id)
    except OperationalError:
        log.exception("Could not queue the Slack message for release %s", release_id)


@shared_task(name="manifest.notify_slack", ignore_result=True)
def notify_slack(release_id: str) -> None:
    """Tell Slack about a committed release (Slack is not configured yet: nothing to send)."""
    log.debug("Release %s committed; Slack is not configured", release_id)


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
