"""Slack messages: building them (Block Kit, pure functions) and sending them (slack_sdk).

Building takes plain records (a history entry, a check) and callables that make links, so it is
tested without Slack, Flask or Celery. Sending is either an incoming webhook or a bot token;
`SlackDelivery` is Slack as a destination (app/notify/destinations.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from app import dates
from app.manifest import changes
from app.manifest.changes import KIND_WORDS
from app.manifest.items import table_label
from app.manifest.store import ITEM_TABLE
from app.notify.destinations import RECOVERED
from app.notify.destinations import AlertNews
from app.notify.destinations import Delivery
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryThrottled
from app.notify.destinations import PageLink
from app.notify.destinations import ReleaseNews
from app.notify.wording import ChangeNotes
from app.notify.wording import display_name
from app.notify.wording import field_words

log = logging.getLogger(__name__)
# slack_sdk logs request URLs (and a webhook URL is a secret) unless its logger's own level is
# above DEBUG, some of them at INFO: give its clients a logger that stays at WARNING.
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.WARNING)

MAX_BLOCKS = 50
MAX_HEADER = 150  # Slack's limit for a header block's text
MAX_SECTION = 3000  # ... and for a section's text
MAX_NAME = 60
MAX_WORDS = 300  # what changed in one listed definition
ITEMS_LISTED = 10
COUNTED = changes.KINDS
# How a listed definition's kind reads before its name ("changed" ones say their fields).
LINE_WORDS = {**KIND_WORDS, changes.ADDED: "new"}

Message = dict[str, Any]
DefinitionLink = Callable[[str, int, str], str]  # (table, hash, kind) -> the page to open


# Slack sends Retry-After with every 429; without one, wait this long.
RETRY_AFTER_SECONDS = 30.0


class SlackUnavailable(DeliveryFailed):
    """Slack did not accept the message this time (outage, network); retry later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class SlackRejected(DeliveryFailed):
    """Slack refused the message for good (bad token, unknown channel): retrying will not help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class SlackThrottled(DeliveryThrottled):
    """Slack asked us to wait (HTTP 429) `retry_after` seconds; nothing was posted."""


# -- building -----------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape the three characters Slack reads as markup (mentions, links) in `text` and mrkdwn.

    Everything from the origin (versions, names, error messages) goes through it; a header's
    plain_text is shown as it is and needs none.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def escape_within(text: str, limit: int) -> str:
    """Escape `text`, cut so that it stays within `limit` characters once escaped.

    Cutting after escaping could leave half an entity ("&am"), which Slack would show as is.
    """
    escaped = escape(text)
    while len(escaped) > limit:
        text = clip(text, max(1, len(text) - (len(escaped) - limit)))
        escaped = escape(text)
    return escaped


def release_message(
    entry: Mapping[str, Any],
    page_link: PageLink,
    release_link: str,
    notes: ChangeNotes | None = None,
) -> Message:
    """Build the message for a committed release from its history entry and its change notes.

    Each definition links to its page (an item's page for an item, removed ones included: the
    page shows its history). Without notes (no change log), the entry's names are listed.
    """
    notes = notes or ChangeNotes()
    old, new = entry.get("previous_version"), entry["version"]
    verb = "rolled back" if entry.get("rollback") else "updated"
    header = clip(f"Destiny 2 manifest {verb}: {old or 'nothing'} → {new}", MAX_HEADER)
    changed = [d for d in entry["diff"] if any(d.get(kind) for kind in COUNTED)]
    lines = [_totals(changed)] if changed else []
    lines += [f"*{escape(d['table'])}*  {_table_counts(d)}" for d in changed] or [
        "No definition this app keeps changed (only the content files did)."
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
    ]
    if entry.get("rollback"):
        undone = escape(clip(str(old or "nothing"), MAX_NAME))
        note = (
            f"It undid release {undone}: Bungie went back to a release served before, "
            "and the cache flipped back to it."
        )
        blocks.append(_section(f":rewind: *This is a rollback.* {note}"))
    blocks.append(_section(_within("\n".join(lines), MAX_SECTION)))

    def link(table: str, number: int, kind: str) -> str:
        return page_link(table, number)

    if notes.listed:
        details = [_change_line(c, notes, link) for c in notes.listed]
        more = notes.total - len(notes.listed)
        tail = f"…and {more:,} more." if more > 0 else ""
        blocks.append(_section(_within("\n".join(details), MAX_SECTION, tail)))
    else:
        names = _item_lines(changed, link)
        if names:
            blocks.append(_section("\n".join(names)))
    cut = (entry.get("changes") or {}).get("cut") or 0
    if cut:
        blocks.append(_section(f"The change log of this release was full: {cut:,} not kept."))
    blocks.append(_section(f"<{release_link}|See the whole release>"))
    summary = ", ".join(f"{escape(d['table'])} {_table_counts(d, plain=True)}" for d in changed)
    versions = f"{escape(old or 'nothing')} -> {escape(new)}"
    text = f"Destiny 2 manifest {verb}: {versions}. {summary or 'No changes.'}"
    return {"text": clip(text, MAX_SECTION), "blocks": blocks[:MAX_BLOCKS]}


def _totals(diffs: list[Mapping[str, Any]]) -> str:
    """Return the count of each kind over every table (the kinds with none left out)."""
    counts = [(sum(d.get(kind) or 0 for d in diffs), kind) for kind in COUNTED]
    return "*" + ", ".join(f"{n:,} {KIND_WORDS[kind]}" for n, kind in counts if n) + "*"


def _table_counts(d: Mapping[str, Any], plain: bool = False) -> str:
    if plain:
        counts = f"+{d['added']} ~{d['changed']} -{d['removed']}"
    else:
        counts = f"+{d['added']:,}  ~{d['changed']:,}  −{d['removed']:,}"  # noqa: RUF001
    for kind in (changes.UNCLASSIFIED, changes.RECLASSIFIED):
        if d.get(kind):
            counts += f"{' ' if plain else '  '}{d[kind]:,} {KIND_WORDS[kind]}"
    return counts


def _change_line(change: Mapping[str, Any], notes: ChangeNotes, link: DefinitionLink) -> str:
    """Return one listed definition: its name linked, and what changed in it."""
    kind, table = change["kind"], change["table"]
    shown = escape_within(display_name(change), MAX_NAME)
    named = f"<{link(table, change['hash'], kind)}|{shown}>"
    where = "" if table == ITEM_TABLE else f"{escape(table_label(table))} "
    if kind != changes.CHANGED:
        return f"• {LINE_WORDS[kind]} {where}{named}"
    words = "; ".join(field_words(change, notes)) or "changed"
    return f"• {where}{named}: {escape_within(words, MAX_WORDS)}"


def _within(text: str, limit: int, tail: str = "") -> str:
    """Keep the whole lines of `text` that fit in `limit` with `tail` after them (a line cut
    in two could leave half a link, which is broken markup)."""
    whole = f"{text}\n{tail}" if tail else text
    if len(whole) <= limit:
        return whole
    tail = tail or "…"
    kept: list[str] = []
    size = len(tail)
    for line in text.split("\n"):
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join([*kept, tail])


def _item_lines(diffs: list[Mapping[str, Any]], link: DefinitionLink) -> list[str]:
    lines: list[str] = []
    for d in diffs:
        for kind, key in ((changes.ADDED, "added_names"), (changes.CHANGED, "changed_names")):
            for item_hash, name in d.get(key, []):
                if len(lines) == ITEMS_LISTED:
                    return lines
                shown = escape(clip(name or f"#{item_hash}", MAX_NAME))
                target = link(d["table"], int(item_hash), kind)
                lines.append(f"• {LINE_WORDS[kind]}: <{target}|{shown}>")
    return lines


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION)}}


def trouble_message(check: Mapping[str, Any], dashboard_link: str) -> Message:
    """Build the message that says syncing is broken, why, and since when."""
    started = check.get("failing_since")
    since = dates.instant(check["at"] if started is None else started)
    error, message = escape(str(check.get("error"))), escape(str(check.get("message")))
    text = f"Manifest sync is failing since {since}: {error}: {message}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Manifest sync is failing"}},
        _section(f"*{error}*: {message}"),
        _section(f"Failing since {since}. <{dashboard_link}|Open the dashboard>"),
    ]
    return {"text": clip(text, MAX_SECTION), "blocks": blocks}


def recovered_message(check: Mapping[str, Any], failing_since: float, link: str) -> Message:
    """Build the message that says syncing works again."""
    lasted = dates.duration_in_minutes(check["at"] - failing_since)
    text = f"Manifest sync recovered after {lasted}: the last check {escape(check['outcome'])}."
    return {"text": text, "blocks": [_section(f":white_check_mark: {text} <{link}|Dashboard>")]}


# -- sending ------------------------------------------------------------------------------


class Sender(Protocol):
    def send(self, message: Message) -> None:
        """Deliver `message`; raise SlackThrottled, SlackUnavailable or SlackRejected if Slack
        did not take it."""


def _retry_handlers() -> list[Any]:
    # Brief network blips are retried inside the call; a 429 and longer trouble go back to the
    # Celery task, which waits (Retry-After) or retries with backoff: a worker never sleeps.
    return [ConnectionErrorRetryHandler(max_retry_count=2)]


def _retry_after(headers: Mapping[str, Any] | None) -> float:
    """Return Slack's Retry-After (seconds), whatever the header's case."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            found = value[0] if isinstance(value, list) and value else value
            try:
                return float(found)
            except (TypeError, ValueError):
                break
    return RETRY_AFTER_SECONDS


@dataclass
class WebhookSender:
    """Post to an incoming webhook."""

    url: str
    timeout: int = 10

    def send(self, message: Message) -> None:
        client = WebhookClient(
            self.url, timeout=self.timeout, retry_handlers=_retry_handlers(), logger=_sdk_log
        )
        try:
            response = client.send(text=message["text"], blocks=message["blocks"])
        except (SlackClientError, OSError) as exc:
            raise SlackUnavailable(f"Slack webhook unreachable ({type(exc).__name__})") from None
        if response.status_code == 200:
            return
        detail = f"Slack webhook answered HTTP {response.status_code}: {response.body[:200]}"
        if response.status_code == 429:
            raise SlackThrottled(_retry_after(response.headers), detail)
        if response.status_code >= 500:
            raise SlackUnavailable(detail)
        raise SlackRejected(detail)


@dataclass
class BotSender:
    """Post as a bot user to a channel (chat.postMessage)."""

    token: str
    channel: str
    base_url: str = "https://slack.com/api/"
    timeout: int = 10

    def __repr__(self) -> str:
        return f"<BotSender #{self.channel}>"

    def send(self, message: Message) -> None:
        client = WebClient(
            token=self.token,
            base_url=self.base_url,
            timeout=self.timeout,
            retry_handlers=_retry_handlers(),
            logger=_sdk_log,
        )
        try:
            client.chat_postMessage(
                channel=self.channel, text=message["text"], blocks=message["blocks"]
            )
        except SlackApiError as exc:
            status = exc.response.status_code
            error = exc.response.get("error", "unknown_error")
            detail = f"Slack answered HTTP {status}: {error}"
            if status == 429 or error == "ratelimited":
                raise SlackThrottled(_retry_after(exc.response.headers), detail) from None
            if status >= 500 or error == "service_unavailable":
                raise SlackUnavailable(detail) from None
            raise SlackRejected(detail) from None
        except (SlackClientError, OSError) as exc:
            raise SlackUnavailable(f"Slack unreachable ({type(exc).__name__})") from None


def sender_from_config(config: Mapping[str, Any]) -> Sender | None:
    """Return the configured sender, or None when Slack is off."""
    if config.get("SLACK_WEBHOOK_URL"):
        return WebhookSender(config["SLACK_WEBHOOK_URL"], timeout=config["SLACK_TIMEOUT"])
    if config.get("SLACK_BOT_TOKEN") and config.get("SLACK_CHANNEL"):
        return BotSender(
            config["SLACK_BOT_TOKEN"],
            config["SLACK_CHANNEL"],
            base_url=config["SLACK_API_URL"],
            timeout=config["SLACK_TIMEOUT"],
        )
    return None


@dataclass(frozen=True)
class SlackDelivery:
    """Slack as a destination: Block Kit messages through a webhook or a bot."""

    sender: Sender
    name: str = "slack"

    def release_payload(self, release: ReleaseNews) -> Message:
        """Build the message of a release."""
        entry, notes = release.entry, release.notes
        return release_message(entry, release.page_url, release.release_url, notes)

    def alert_payload(self, alert: AlertNews) -> Message:
        """Build the message saying syncing is failing, or works again."""
        if alert.kind == RECOVERED:
            return recovered_message(alert.check, alert.since, alert.dashboard_url)
        return trouble_message({**alert.check, "failing_since": alert.since}, alert.dashboard_url)

    def send(self, payload: Any) -> None:
        """Post a message built above."""
        self.sender.send(payload)


def deliveries(config: Mapping[str, Any]) -> list[Delivery]:
    """Return Slack as a destination when it is configured (else none)."""
    sender = sender_from_config(config)
    return [] if sender is None else [SlackDelivery(sender)]
