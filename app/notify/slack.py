"""Slack messages: building them (Block Kit, pure functions) and sending them (slack_sdk).

Building takes plain records (a history entry, a check) and callables that make links, so it is
tested without Slack, Flask or Celery. Sending is either an incoming webhook or a bot token.
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
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from app import dates

log = logging.getLogger(__name__)
# slack_sdk logs request URLs (and a webhook URL is a secret) unless its logger's own level is
# above DEBUG, some of them at INFO: give its clients a logger that stays at WARNING.
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.WARNING)

MAX_BLOCKS = 50
MAX_HEADER = 150  # Slack's limit for a header block's text
MAX_SECTION = 3000  # ... and for a section's text
MAX_NAME = 60
ITEMS_LISTED = 10

Message = dict[str, Any]
ItemLink = Callable[[int], str]


class SlackUnavailable(Exception):
    """Slack did not accept the message this time (outage, rate limit, network); retry later."""


class SlackRejected(Exception):
    """Slack refused the message for good (bad token, unknown channel): retrying will not help."""


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


def release_message(entry: Mapping[str, Any], item_link: ItemLink, release_link: str) -> Message:
    """Build the message for a committed release from its history entry."""
    old, new = entry.get("previous_version"), entry["version"]
    verb = "rolled back" if entry.get("rollback") else "updated"
    header = clip(f"Destiny 2 manifest {verb}: {old or 'nothing'} → {new}", MAX_HEADER)
    changed = [d for d in entry["diff"] if d["added"] or d["changed"] or d["removed"]]
    lines = [
        f"*{escape(d['table'])}*  +{d['added']:,}  ~{d['changed']:,}  −{d['removed']:,}"  # noqa: RUF001
        for d in changed
    ] or ["No definition this app keeps changed (only the content files did)."]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
    ]
    if entry.get("rollback"):
        note = "Bungie went back to a release served before; the cache flipped back to it."
        blocks.append(_section(f":rewind: *This is a rollback.* {note}"))
    blocks.append(_section("\n".join(lines)))
    names = _item_lines(changed, item_link)
    if names:
        blocks.append(_section("\n".join(names)))
    blocks.append(_section(f"<{release_link}|See the whole release>"))
    summary = ", ".join(
        f"{escape(d['table'])} +{d['added']} ~{d['changed']} -{d['removed']}" for d in changed
    )
    versions = f"{escape(old or 'nothing')} -> {escape(new)}"
    text = f"Destiny 2 manifest {verb}: {versions}. {summary or 'No changes.'}"
    return {"text": clip(text, MAX_SECTION), "blocks": blocks[:MAX_BLOCKS]}


def _item_lines(diffs: list[Mapping[str, Any]], item_link: ItemLink) -> list[str]:
    lines: list[str] = []
    for d in diffs:
        for label, key in (("new", "added_names"), ("changed", "changed_names")):
            for item_hash, name in d.get(key, []):
                if len(lines) == ITEMS_LISTED:
                    return lines
                shown = escape(clip(name or f"#{item_hash}", MAX_NAME))
                lines.append(f"• {label}: <{item_link(int(item_hash))}|{shown}>")
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
        """Deliver `message`; raise SlackUnavailable or SlackRejected if Slack did not take it."""


def _retry_handlers() -> list[Any]:
    # Brief network blips and a short 429 are retried inside the call; longer trouble goes
    # back to the Celery task, which retries with backoff.
    return [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(1)]


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
        if response.status_code == 429 or response.status_code >= 500:
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
            if status == 429 or status >= 500 or error in ("ratelimited", "service_unavailable"):
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
