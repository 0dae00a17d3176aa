"""When to tell each destination, and what: after each check, queue one post per destination and
release, and the trouble or recovered alerts; the tasks of app/tasks.py post them.

A release's news is gathered once; each destination's filter narrows it, its Delivery builds the
payload, and the payload travels in the task, which retries it alone while its destination is
throttled or down (docs/RELIABILITY.md, "Every destination once").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from flask import current_app
from kombu.exceptions import OperationalError

from app.extensions import get_celery
from app.extensions import get_keys
from app.extensions import get_redis
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ManifestStore
from app.notify import announce
from app.notify import discord
from app.notify import slack
from app.notify import webhook
from app.notify.destinations import KIND_NAMES
from app.notify.destinations import AlertNews
from app.notify.destinations import Delivery
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryFilter
from app.notify.destinations import kind_of
from app.notify.destinations import setting_names
from app.notify.news import alert_news
from app.notify.news import release_news

log = logging.getLogger(__name__)

DELIVER_RELEASE_TASK = "manifest.deliver_release"
DELIVER_ALERT_TASK = "manifest.deliver_alert"
ANNOUNCE_RECENT = 10
NOTHING = "nothing to announce"
REJECTED = "rejected"
OFF = "off"


def configured_deliveries(config: Mapping[str, Any]) -> list[Delivery]:
    """Return every destination its settings turn on: Slack, Discord, each webhook."""
    return [*slack.deliveries(config), *discord.deliveries(config), *webhook.deliveries(config)]


@dataclass(frozen=True)
class Destination:
    """A configured destination: how it sends, what it hears about, whether it gets alerts."""

    delivery: Delivery
    filter: DeliveryFilter
    alerts: bool


def destinations(config: Mapping[str, Any]) -> dict[str, Destination]:
    """Return the configured destinations by name, in a stable order.

    Raises ValueError when a filter setting names a kind of change, or ALERTS_TO a kind of
    destination, that does not exist.
    """
    alerts_to = setting_names(config.get("ALERTS_TO")) or frozenset()
    unknown = sorted(name for name in alerts_to if kind_of(name) not in KIND_NAMES)
    if unknown:
        raise ValueError(
            f"ALERTS_TO names unknown destinations ({', '.join(unknown)}): choose from "
            "slack, discord, webhook (every webhook) or webhook:<id>"
        )
    found = {}
    for delivery in configured_deliveries(config):
        kind = kind_of(delivery.name)
        alerts = delivery.name in alerts_to or kind in alerts_to
        found[delivery.name] = Destination(
            delivery, DeliveryFilter.from_settings(config, kind), alerts
        )
    return found


def announcements() -> announce.Announcements:
    """Return the delivery bookkeeping of the current app's cache."""
    return announce.Announcements(get_redis(), get_keys())


def after_check(result: sync.SyncResult) -> None:
    """After a check: queue each destination's post of new releases, and any alert.

    Never raises for Redis being away (a restart, a failover): what this check would have
    queued stays owed and a later check queues it, while the sync task goes on to retry.
    """
    configured = destinations(current_app.config)
    if not configured or result.outcome == sync.BUSY:
        return
    try:
        _queue_news(result, configured)
    except redis.RedisError as exc:
        log.warning(
            "Could not queue this check's posts or alerts (Redis: %s); a later check will", exc
        )


def _queue_news(result: sync.SyncResult, configured: Mapping[str, Destination]) -> None:
    bookkeeping = announcements()
    store = get_store()
    if result.ok:
        # The latest release, and any recent one a destination is still owed (given up on while
        # it was down, also once a newer one is live), oldest first. Not older ones: turning a
        # destination on must not replay last month.
        since = time.time() - announce.OWED_SECONDS
        for entry in reversed(store.history(ANNOUNCE_RECENT)):
            if entry["previous"] and entry["at"] >= since:
                _queue_release(bookkeeping, store, entry, configured)
    alerted = {name: d for name, d in configured.items() if d.alerts}
    check = store.last_check()
    if not alerted or check is None:
        return  # nobody hears alerts, or Redis lost the check's record meanwhile
    alert = bookkeeping.alert_for(check, current_app.config["SLACK_ALERT_AFTER_SECONDS"])
    if alert is not None:
        news = alert_news(alert.kind, check, alert.since)
        for name, destination in alerted.items():
            _queue_alert(name, destination.delivery, news)


def _queue_release(
    bookkeeping: announce.Announcements,
    store: ManifestStore,
    entry: Mapping[str, Any],
    configured: Mapping[str, Destination],
) -> None:
    """Queue a release's post to each destination still owed it; its news is read once."""
    release_id = entry["id"]
    claimed = bookkeeping.claim(list(configured), release_id, entry["at"])
    if not claimed:
        return
    try:
        news = release_news(store, entry, [configured[name].filter for name in claimed])
    except Exception:
        for name in claimed:
            bookkeeping.unqueue(name, release_id)  # still owed: the next check tries again
        raise
    for name in claimed:
        destination = configured[name]
        try:
            narrowed = destination.filter.narrow(news)
            payload = None if narrowed is None else destination.delivery.release_payload(narrowed)
        except Exception:
            # One destination's builder must not keep the release from the others.
            log.exception("Could not build %s's post of release %s", name, release_id)
            bookkeeping.unqueue(name, release_id)
            continue
        if payload is None:
            bookkeeping.settle(name, release_id, announce.FILTERED)
        elif not _queue(DELIVER_RELEASE_TASK, name, release_id, payload):
            bookkeeping.unqueue(name, release_id)


def _queue_alert(name: str, delivery: Delivery, news: AlertNews) -> None:
    try:
        payload = delivery.alert_payload(news)
    except Exception:
        log.exception("Could not build %s's %s alert", name, news.kind)
        return
    if payload is not None:
        _queue(DELIVER_ALERT_TASK, name, payload)


def deliver_release(destination: str, release_id: str, payload: Any) -> str:
    """Post a release's payload to a destination unless it has it; return what happened.

    Raises DeliveryThrottled, or a transient DeliveryFailed, for the task to retry; a refusal
    for good is logged, and the next check queues the release again.
    """
    configured = destinations(current_app.config).get(destination)
    bookkeeping = announcements()
    if configured is None:
        bookkeeping.unqueue(destination, release_id)
        log.warning("%s is no longer configured: release %s not posted", destination, release_id)
        return OFF
    try:
        outcome = bookkeeping.deliver(destination, release_id, payload, configured.delivery.send)
    except DeliveryFailed as exc:
        if exc.transient:
            raise
        log.error("%s refused release %s; not retrying: %s", destination, release_id, exc)
        bookkeeping.unqueue(destination, release_id)
        return REJECTED
    log.info("%s, release %s: %s", destination, release_id, outcome)
    return outcome


def announce_release(release_id: str, destination: str = announce.SLACK) -> str:
    """Tell one destination what a committed release changed, now, unless it was told.

    Raises what deliver_release raises.
    """
    configured = destinations(current_app.config).get(destination)
    if configured is None:
        return OFF
    store = get_store()
    entry = store.history_entry(release_id)
    if entry is None or entry["previous"] is None:
        return NOTHING  # The first fill of the cache has no news to tell.
    narrowed = configured.filter.narrow(release_news(store, entry, [configured.filter]))
    payload = None if narrowed is None else configured.delivery.release_payload(narrowed)
    if payload is None:
        announcements().settle(destination, release_id, announce.FILTERED)
        return announce.FILTERED
    return deliver_release(destination, release_id, payload)


def give_up_release(destination: str, release_id: str) -> None:
    """Stop waiting for a destination to take a release (a later check queues it again)."""
    announcements().unqueue(destination, release_id)


def deliver_alert(destination: str, payload: Any) -> str:
    """Post a trouble or recovered alert to a destination; return what happened.

    Raises DeliveryThrottled, or a transient DeliveryFailed, for the task to retry.
    """
    configured = destinations(current_app.config).get(destination)
    if configured is None:
        return OFF
    try:
        announcements().attempt(destination, configured.delivery.send, payload)
    except DeliveryFailed as exc:
        if exc.transient:
            raise
        log.error("%s refused an alert; not retrying: %s", destination, exc)
        return REJECTED
    return announce.SENT


def destination_states() -> list[announce.DestinationState]:
    """Return each configured destination's state (last delivery, pending, trouble)."""
    names = list(destinations(current_app.config))
    return list(announcements().states(names).values())


def _queue(task: str, *args: Any) -> bool:
    # The sync is committed whatever happens here: a broker hiccup must not fail it.
    try:
        get_celery().send_task(task, args=args, ignore_result=True)
    except OperationalError:
        log.exception("Could not queue %s", task)
        return False
    return True
