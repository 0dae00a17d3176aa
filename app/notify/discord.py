"""Discord (`DISCORD_WEBHOOK_URL`): execute-webhook messages with embeds, within Discord's limits,
built from the news (pure functions), and posted with `?wait=true` (a 2xx proves delivery).

What comes from Bungie (versions, table and definition names) is Discord-markdown escaped, and
no message lets Discord parse a mention (`allowed_mentions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import quote
from urllib.parse import urlencode
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import msgspec

from app.manifest import changes
from app.manifest.changes import KIND_WORDS
from app.manifest.items import table_label
from app.manifest.store import ITEM_TABLE
from app.notify import webhook
from app.notify.destinations import TROUBLE
from app.notify.destinations import AlertNews
from app.notify.destinations import Delivery
from app.notify.destinations import ReleaseNews
from app.notify.wording import KIND_ORDER
from app.notify.wording import ChangeNotes
from app.notify.wording import display_name
from app.notify.wording import field_words

NAME = "discord"
# Discord's limits (Message resource, "Embed Limits"); lengths are counted in UTF-16 units,
# which is never fewer than Python's characters, so a text within them is within Discord's.
MAX_EMBEDS = 10
MAX_TOTAL = 6000  # titles, descriptions, field names and values, footers, of all embeds
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
# Our own shares of them: the summary embed's parts, so the list of changes keeps room.
SUMMARY_DESCRIPTION = 1000
TABLE_NAME = 64
TABLE_FIELDS = 1500
FOOTER = 100
MAX_NAME = 80
MAX_WORDS = 300
MAX_LINK = 500  # a longer link is left out (a URL cannot be cut)
NAMES_LISTED = 10
COLORS = {"updated": 0x3498DB, "rollback": 0xE67E22, TROUBLE: 0xE74C3C, "recovered": 0x2ECC71}
LINE_WORDS = {**KIND_WORDS, changes.ADDED: "new"}
# What Discord's markdown reads: emphasis, code, spoilers, quotes, headings, lists, masked links,
# mentions and custom emoji (<@id>, <:name:id>). Each is shown as itself once backslashed.
_MARKDOWN = frozenset("\\*_~`|>#-[]()<@:")
# What a link's URL keeps as it is; anything else is percent-encoded ("%" itself is kept).
_URL_SAFE = "/:?=&%#.-_~+,;!$"

Payload = dict[str, Any]


# -- text ---------------------------------------------------------------------------------


def size(text: str) -> int:
    """Return the length of `text` as Discord counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Backslash what Discord's markdown would read in `text`, and flatten its line breaks."""
    return "".join(_escaped(c) for c in text)


def escape_within(text: str, limit: int) -> str:
    """Escape `text`, cut so that it stays within `limit` once escaped (an ellipsis marks a cut).

    Cutting after escaping could leave a lone backslash that escapes what follows.
    """
    whole = escape(text)
    if size(whole) <= limit:
        return whole
    kept, used = [], size("…")
    for c in text:
        piece = _escaped(c)
        if used + size(piece) > limit:
            break
        kept.append(piece)
        used += size(piece)
    return "".join(kept).rstrip() + "…"


def clip(text: str, limit: int) -> str:
    """Cut plain `text` (no markdown) to `limit`, marking the cut with an ellipsis."""
    if size(text) <= limit:
        return text
    text = text[: limit - 1]  # never fewer units than characters: at most a few more to cut
    while size(text) > limit - 1:
        text = text[:-1]
    return text.rstrip() + "…"


def lines_within(lines: Sequence[str], limit: int) -> str:
    """Join the whole lines that fit in `limit`, then "…" if some were left out (a line cut in
    two could leave half a link)."""
    whole = "\n".join(lines)
    if size(whole) <= limit:
        return whole
    kept: list[str] = []
    used = size("…")
    for line in lines:
        if used + size(line) + 1 > limit:
            break
        kept.append(line)
        used += size(line) + 1
    return "\n".join([*kept, "…"])


def listing_within(lines: Sequence[str], total: int, limit: int) -> str:
    """Join the whole lines that fit in `limit`, then "…and N more." for the `total` not shown."""
    whole = "\n".join(lines)
    if total <= len(lines) and size(whole) <= limit:
        return whole
    tail_room = size(f"…and {total:,} more.") + 1
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + size(line) + 1 + tail_room > limit:
            break
        kept.append(line)
        used += size(line) + 1
    return "\n".join([*kept, f"…and {total - len(kept):,} more."])


def _escaped(c: str) -> str:
    if c in "\r\n\t\v\f\u2028\u2029":
        return " "
    return "\\" + c if c in _MARKDOWN else c


def _link(text: str, url: str) -> str:
    """Return a masked link, or `text` alone when the URL is too long or not http(s).

    Whatever markdown or a mention could read in the URL (a table name in a path) is
    percent-encoded, which leaves the URL the same to a server.
    """
    safe = quote(url, safe=_URL_SAFE)
    if size(safe) > MAX_LINK or not safe.startswith(("https://", "http://")):
        return text
    return f"[{text}]({safe})"


# -- building -----------------------------------------------------------------------------


def release_message(news: ReleaseNews) -> Payload:
    """Build the message of a committed release: a summary embed (versions, counts per table and
    kind, links) and, when the log has any, an embed of the first changes in words."""
    entry = news.entry
    rollback = bool(entry.get("rollback"))
    old, new = entry.get("previous_version"), entry.get("version")
    verb = "rolled back" if rollback else "updated"
    prefix = f"Destiny 2 manifest {verb}: "
    room = (MAX_TITLE - size(prefix) - size(" → ")) // 2
    versions = [escape_within(str(v), room) for v in (old or "nothing", new)]
    title = prefix + " → ".join(versions)
    counted = [d for d in entry.get("diff") or [] if any(d.get(k) for k in changes.KINDS)]
    lines = []
    if rollback:
        undone = escape_within(str(old or "nothing"), MAX_NAME)
        lines.append(
            f"⏪ **This is a rollback.** It undid release {undone}: Bungie went back to a "
            "release served before, and the cache flipped back to it."
        )
    lines.append(
        f"**{_kinds(counted)}**"
        if counted
        else "No definition this app keeps changed (only the content files did)."
    )
    cut = (entry.get("changes") or {}).get("cut") or 0
    if cut:
        lines.append(f"The change log of this release was full: {cut:,} changes not kept.")
    lines.append(_link("See the whole release", news.release_url))
    summary: dict[str, Any] = {
        "title": title,
        "description": lines_within(lines, SUMMARY_DESCRIPTION),
        "color": COLORS["rollback" if rollback else "updated"],
        "footer": {"text": clip(f"Release {entry.get('id')}", FOOTER)},
    }
    if news.release_url.startswith(("https://", "http://")):
        summary["url"] = news.release_url
    if isinstance(entry.get("at"), int | float):
        summary["timestamp"] = datetime.fromtimestamp(entry["at"], UTC).isoformat()
    if counted:
        summary["fields"] = _table_fields(counted, TABLE_FIELDS)
    embeds = [summary]
    listing = _change_lines(news)
    if listing:
        lines, total = listing
        head = "What changed"
        room = min(MAX_DESCRIPTION, MAX_TOTAL - embeds_size(embeds) - size(head))
        embeds.append(
            {
                "title": head,
                "description": listing_within(lines, total, room),
                "color": summary["color"],
            }
        )
    return {"embeds": embeds[:MAX_EMBEDS], "allowed_mentions": {"parse": []}}


def alert_message(alert: AlertNews) -> Payload:
    """Build the short message that says syncing is failing, or works again."""
    failing = alert.kind == TROUBLE
    title = "Manifest sync is failing" if failing else "Manifest sync recovered"
    lines = [escape_within(alert.message, 1500)]
    if failing:
        # Discord shows <t:unix:f> as a date in each reader's own time zone.
        lines.append(f"Failing since <t:{int(alert.since)}:f>.")
    lines.append(_link("Open the dashboard", alert.dashboard_url))
    embed = {"title": title, "description": "\n".join(lines), "color": COLORS[alert.kind]}
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


def embeds_size(embeds: Sequence[Mapping[str, Any]]) -> int:
    """Return what embeds count against Discord's total: titles, descriptions, field names and
    values, footers and authors."""
    total = 0
    for embed in embeds:
        total += size(embed.get("title", "")) + size(embed.get("description", ""))
        total += size((embed.get("footer") or {}).get("text", ""))
        total += size((embed.get("author") or {}).get("name", ""))
        for f in embed.get("fields") or []:
            total += size(f["name"]) + size(f["value"])
    return total


def _kinds(diffs: Sequence[Mapping[str, Any]]) -> str:
    """Return the count of each kind over every table (kinds with none left out)."""
    counts = [(sum(d.get(kind) or 0 for d in diffs), kind) for kind in KIND_ORDER]
    return ", ".join(f"{n:,} {KIND_WORDS[kind]}" for n, kind in counts if n)


def _table_fields(diffs: Sequence[Mapping[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Return a field per table with its counts, while they fit in `budget`, then "N more"."""
    fields: list[dict[str, Any]] = []
    used = 0
    reserve = 40  # the "more tables" field
    for n, d in enumerate(diffs):
        name = escape_within(table_label(str(d["table"])), TABLE_NAME)
        value = clip(_kinds([d]), MAX_FIELD_VALUE)
        cost = size(name) + size(value)
        last = n == len(diffs) - 1
        full = len(fields) == MAX_FIELDS - 1 and not last
        if full or used + cost + (0 if last else reserve) > budget:
            more = len(diffs) - n
            fields.append({"name": "More tables", "value": f"…and {more:,} more"})
            break
        fields.append({"name": name, "value": value, "inline": True})
        used += cost
    return fields


def _change_lines(news: ReleaseNews) -> tuple[list[str], int] | None:
    """Return a line per listed change (or, without a change log, per named definition) and how
    many there are in all; None when there is nothing to list."""
    notes: ChangeNotes = news.notes
    if notes.listed:
        lines = [_change_line(change, news) for change in notes.listed]
        return lines, max(notes.total, len(lines))
    lines = []
    for d in news.entry.get("diff") or []:
        for kind, key in ((changes.ADDED, "added_names"), (changes.CHANGED, "changed_names")):
            for number, name in d.get(key) or []:
                if len(lines) < NAMES_LISTED:
                    shown = escape_within(str(name or f"#{number}"), MAX_NAME)
                    target = news.page_url(str(d["table"]), int(number))
                    lines.append(f"• {LINE_WORDS[kind]}: {_link(shown, target)}")
    return (lines, len(lines)) if lines else None


def _change_line(change: Mapping[str, Any], news: ReleaseNews) -> str:
    """Return one listed definition: its name linked, and what changed in it, in words."""
    kind, table = change["kind"], str(change["table"])
    shown = _link(
        escape_within(display_name(change), MAX_NAME), news.page_url(table, change["hash"])
    )
    where = "" if table == ITEM_TABLE else f"{escape_within(table_label(table), TABLE_NAME)} "
    if kind != changes.CHANGED:
        return f"• {LINE_WORDS[kind]} {where}**{shown}**"
    words = "; ".join(field_words(change, news.notes)) or "changed"
    return f"• {where}**{shown}**: {escape_within(words, MAX_WORDS)}"


# -- the delivery -------------------------------------------------------------------------


def with_wait(url: str) -> str:
    """Return the webhook URL with `wait=true`, so Discord answers once the message is saved."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "wait"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("wait", "true")])))


@dataclass(frozen=True)
class DiscordDelivery:
    """The Discord channel of `DISCORD_WEBHOOK_URL` (the URL holds a token: never shown)."""

    url: str = field(repr=False)
    timeout: tuple[float, float] = (webhook.CONNECT_TIMEOUT, webhook.READ_TIMEOUT)

    @property
    def name(self) -> str:
        """Return "discord"."""
        return NAME

    def release_payload(self, release: ReleaseNews) -> Payload:
        """Return the message of a release."""
        return release_message(release)

    def alert_payload(self, alert: AlertNews) -> Payload:
        """Return the message of a trouble or recovered alert."""
        return alert_message(alert)

    def send(self, payload: Any) -> None:
        """Execute the webhook; raise DeliveryThrottled on a 429, DeliveryFailed otherwise.

        Discord's 429 gives `retry_after` (seconds, a float) in its body and `Retry-After`.
        """
        body = msgspec.json.encode(payload)
        webhook.post(with_wait(self.url), body, {}, "Discord", self.timeout)


def deliveries(config: Mapping[str, Any]) -> list[Delivery]:
    """Return the Discord delivery of `DISCORD_WEBHOOK_URL` (none when it is not set)."""
    url = str(config.get("DISCORD_WEBHOOK_URL") or "").strip()
    if not url:
        return []
    read = float(config.get("DISCORD_TIMEOUT") or webhook.READ_TIMEOUT)
    return [DiscordDelivery(url, (min(webhook.CONNECT_TIMEOUT, read), read))]
