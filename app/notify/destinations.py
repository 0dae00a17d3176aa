"""What every destination (Slack, Discord, webhooks) is given and how it answers: the interface.

Pure: no Flask, no Celery, no Redis. The policy gathers a release's news once, narrows it per
destination (DeliveryFilter), asks each Delivery for its payload and queues one task per
destination; the task calls `send` and keeps the bookkeeping (app/notify/announce.py).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any
from typing import Protocol

from app.manifest import changes
from app.manifest.changes import Change
from app.notify import wording

TROUBLE = "trouble"
RECOVERED = "recovered"
# The names of the destinations' kinds: the first part of a Delivery's name ("webhook:2"), and,
# upper-cased, the prefix of its settings (WEBHOOK_TABLES, WEBHOOK_KINDS).
KIND_NAMES = ("slack", "discord", "webhook")
# Which names of a diff entry list the definitions of each kind (not every kind has a list).
_NAMES_OF_KIND = {changes.ADDED: "added_names", changes.CHANGED: "changed_names"}

# The URL of a definition's page: (table, hash) -> URL (an item's page for an item).
PageLink = Callable[[str, int], str]


class DeliveryThrottled(Exception):
    """The destination asked us to wait (HTTP 429, a rate limit): try again after `retry_after`.

    Nothing was posted: the same payload is sent again later, never twice.
    """

    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(message)
        self.retry_after = max(0.0, float(retry_after))


class DeliveryFailed(Exception):
    """The destination did not take the payload.

    `transient` (5xx, timeouts, a refused connection): retried with backoff. Not transient (a
    4xx other than 429: a bad token, a payload refused): not retried by its task, logged; the
    next check queues the release again. The message must never hold a URL, token or secret
    (it is logged and shown on the dashboard).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class ReleaseNews:
    """Everything a release message may say, gathered once after a commit.

    `entry` is the history entry (id, version, previous_version, rollback, diff: counts per
    table, changes: the log's summary); `changes` what store.changes_of(entry) returned
    (narrowed per destination); `notes` the words for the first few of them.
    """

    entry: Mapping[str, Any]
    changes: list[Change]
    notes: wording.ChangeNotes
    release_url: str
    changes_api_url: str
    page_url: PageLink


@dataclass(frozen=True)
class AlertNews:
    """Syncing is failing (TROUBLE) since `since`, or works again (RECOVERED) after failing
    since `since`; `check` is the last check's record, `message` one plain line saying it."""

    kind: str
    since: float
    message: str
    check: Mapping[str, Any]
    dashboard_url: str


class Delivery(Protocol):
    """One destination's way to send: build its payload from the news, post it.

    A payload travels through the broker to the task that sends it: it must be JSON-able
    (dicts, lists, strings, numbers), and the same payload may be sent again after a failure.
    """

    @property
    def name(self) -> str:
        """Return the destination's name: "slack", "discord", "webhook:<n>" (stable)."""
        ...

    def release_payload(self, release: ReleaseNews) -> Any | None:
        """Return what to post about a release (None: nothing for this destination)."""
        ...

    def alert_payload(self, alert: AlertNews) -> Any | None:
        """Return what to post about trouble or recovery (None: nothing for it)."""
        ...

    def send(self, payload: Any) -> None:
        """Post `payload`; raise DeliveryThrottled or DeliveryFailed if it was not taken."""
        ...


def kind_of(name: str) -> str:
    """Return the kind of a destination's name: "webhook:2" -> "webhook"."""
    return name.partition(":")[0]


@dataclass(frozen=True)
class DeliveryFilter:
    """Which tables and kinds of change a destination hears about (None: all of them)."""

    tables: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    everything: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "everything", self.tables is None and self.kinds is None)

    @classmethod
    def from_settings(cls, config: Mapping[str, Any], kind: str) -> DeliveryFilter:
        """Read `<KIND>_TABLES` and `<KIND>_KINDS` (comma-separated; empty: all).

        Raises ValueError naming the setting when it names a kind of change that does not exist.
        """
        prefix = kind.upper()
        tables = setting_names(config.get(f"{prefix}_TABLES"))
        kinds = setting_names(config.get(f"{prefix}_KINDS"))
        unknown = sorted((kinds or frozenset()) - set(changes.KINDS))
        if unknown:
            raise ValueError(
                f"{prefix}_KINDS names unknown kinds of change ({', '.join(unknown)}): "
                f"choose from {', '.join(changes.KINDS)}"
            )
        return cls(tables, kinds)

    def admits(self, table: str, kind: str) -> bool:
        """Say whether a change of `kind` to a definition of `table` is for this destination."""
        return (self.tables is None or table in self.tables) and (
            self.kinds is None or kind in self.kinds
        )

    def narrow(self, news: ReleaseNews) -> ReleaseNews | None:
        """Return the news of what this destination hears about (None: nothing left).

        The counts per table keep the admitted tables and kinds (others read 0), the change log
        its admitted records, and the notes are picked again from them (the words' definitions
        and stat names were gathered for every destination at once).
        """
        if self.everything:
            return news
        diff = [self._counts(d) for d in news.entry.get("diff") or [] if self._table(d["table"])]
        kept = [c for c in news.changes if self.admits(c["table"], c["kind"])]
        if not kept and not any(d.get(kind) for d in diff for kind in changes.KINDS):
            return None
        listed = wording.pick(kept)
        notes = replace(news.notes, listed=listed, total=len(kept))
        return replace(news, entry={**news.entry, "diff": diff}, changes=kept, notes=notes)

    def _table(self, table: str) -> bool:
        return self.tables is None or table in self.tables

    def _counts(self, d: Mapping[str, Any]) -> dict[str, Any]:
        if self.kinds is None:
            return dict(d)
        counts = {**d}
        for kind in changes.KINDS:
            if kind not in self.kinds:
                counts[kind] = 0
                counts.pop(_NAMES_OF_KIND.get(kind, ""), None)
        return counts


def setting_names(value: Any) -> frozenset[str] | None:
    """Read a setting of names: text separated by commas, or a list (None when empty)."""
    if value is None:
        return None
    parts: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    names = frozenset(str(part).strip() for part in parts if str(part).strip())
    return names or None
