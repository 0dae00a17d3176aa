"""When to tell Slack, and what: after each check, queue the messages it calls for; send them.

A check queues the message of each new release and any trouble or recovered message; the
tasks of app/tasks.py send them, and retry while Slack is down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import current_app
from flask import url_for
from kombu.exceptions import OperationalError

from app.extensions import get_celery
from app.extensions import get_keys
from app.extensions import get_redis
from app.extensions import get_store
from app.manifest import changes
from app.manifest import sync
from app.manifest.errors import ManifestError
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store import shown_log
from app.notify import announce
from app.notify import slack
from app.notify import wording

log = logging.getLogger(__name__)

ANNOUNCE_RELEASE_TASK = "manifest.notify_slack"
ALERT_TASK = "manifest.notify_trouble"
ANNOUNCE_RECENT = 10
ANNOUNCE_WITHIN_SECONDS = 86400


def announcements() -> announce.Announcements:
    """Return the Slack bookkeeping of the current app's cache."""
    return announce.Announcements(get_redis(), get_keys())


def after_check(result: sync.SyncResult) -> None:
    """After a check: queue the release message and any trouble or recovered message."""
    if slack.sender_from_config(current_app.config) is None or result.outcome == sync.BUSY:
        return
    bookkeeping = announcements()
    store = get_store()
    if result.ok:
        # The latest release, and any recent one whose message was given up on while Slack was
        # down (also once a newer one is live), oldest first. Not older ones: turning Slack on
        # must not replay last month.
        since = time.time() - ANNOUNCE_WITHIN_SECONDS
        for entry in reversed(store.history(ANNOUNCE_RECENT)):
            if entry["previous"] and entry["at"] >= since and bookkeeping.should_queue(entry["id"]):
                _queue(ANNOUNCE_RELEASE_TASK, entry["id"])
    check = store.last_check()
    if check is None:
        return  # Redis lost the check's record meanwhile: nothing to judge
    alert = bookkeeping.alert_for(check, current_app.config["SLACK_ALERT_AFTER_SECONDS"])
    if alert is not None:
        _queue(ALERT_TASK, alert.kind, check, alert.since)


def announce_release(release_id: str) -> str:
    """Tell Slack what a committed release changed, unless it was told; return what happened.

    Raises SlackUnavailable while Slack is down: the message stays queued, for a retry.
    """
    sender = slack.sender_from_config(current_app.config)
    bookkeeping = announcements()
    if sender is None:
        bookkeeping.unqueue(release_id)
        return "Slack is off"
    store = get_store()

    def build() -> slack.Message | None:
        entry = store.history_entry(release_id)
        if entry is None or entry["previous"] is None:
            return None  # The first fill of the cache has no news to tell.
        return slack.release_message(
            entry, _page_url, _release_url(entry), change_notes(store, entry)
        )

    try:
        outcome = bookkeeping.announce(release_id, build, sender)
    except slack.SlackRejected:
        log.exception("Slack refused the message for release %s; not retrying", release_id)
        bookkeeping.unqueue(release_id)
        return "rejected"
    if outcome != announce.SENDING_ELSEWHERE:
        bookkeeping.unqueue(release_id)
    log.info("Slack message for release %s: %s", release_id, outcome)
    return outcome


def change_notes(store: ManifestStore, entry: Mapping[str, Any]) -> wording.ChangeNotes:
    """Gather what a message says of a history entry's changes: a few, and what their words need.

    The words name stats from the live release's DestinyStatDefinition (when cached); a stat
    given by its position (investmentStats.<n>) is found in the live definition.
    """
    logged = store.changes_of(entry)
    listed = wording.pick(logged)
    wanted: dict[str, list[int]] = {}
    for change in listed:
        if wording.needs_definition(change):
            wanted.setdefault(change["table"], []).append(change["hash"])
    definitions: dict[wording.DefinitionKey, dict[str, Any]] = {}
    names: dict[int, str] = {}
    try:
        if wanted:
            found = store.lookup(wanted)[1]
            definitions = {
                (table, number): definition
                for table, got in found.items()
                for number, definition in got.items()
                if definition is not None
            }
        stats = wording.stat_hashes(listed, definitions)
        if stats and wording.STAT_TABLE in store.settings.tables:
            got = store.lookup({wording.STAT_TABLE: sorted(stats)})[1][wording.STAT_TABLE]
            names = {n: changes.name_of(d) for n, d in got.items() if changes.name_of(d)}
    except ManifestError:
        # Commits kept landing during the reads: the words give paths instead of stat names.
        log.warning("Could not read stat names for release %s", entry["id"], exc_info=True)
    return wording.ChangeNotes(listed, len(logged), definitions, names)


def give_up_release(release_id: str) -> None:
    """Stop waiting for Slack to take the release's message (a later check queues it again)."""
    announcements().unqueue(release_id)


def send_alert(kind: str, check: dict[str, Any], since: float) -> str:
    """Tell Slack that syncing is failing (TROUBLE) or works again; return what happened.

    Raises SlackUnavailable while Slack is down.
    """
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
    except slack.SlackRejected:
        log.exception("Slack refused the %s message; not retrying", kind)
        return "rejected"
    return "sent"


def _queue(task: str, *args: Any) -> None:
    # The sync is committed whatever happens here: a broker hiccup must not fail it.
    try:
        get_celery().send_task(task, args=args, ignore_result=True)
    except OperationalError:
        log.exception("Could not queue %s", task)


def _url(endpoint: str, **values: Any) -> str:
    return url_for(endpoint, _external=True, **values)


def _page_url(table: str, number: int) -> str:
    if table == ITEM_TABLE:
        return _url("main.item", item_hash=number)
    return _url("main.definition", table=table, definition_hash=number)


def _release_url(entry: Mapping[str, Any]) -> str:
    """Return the page of what a history entry changed (a rollback: what it undid, inverted)."""
    log = shown_log(entry)
    if entry.get("rollback") and log is not None and log[1]:
        return _url("main.release", release_id=log[0], undone=1)
    return _url("main.release", release_id=entry["id"])
