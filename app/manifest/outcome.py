"""What a sync tells its caller: how far it has come while it runs, and how it ended."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from app.manifest.client import ContentDownload
from app.manifest.diff import TableDiff

UNCHANGED = "unchanged"
UPDATED = "updated"
UNAVAILABLE = "unavailable"
FAILED = "failed"
BUSY = "busy"


@dataclass(frozen=True)
class Progress:
    """Where a sync is: its phase, and within the phase, the table and how far along."""

    phase: str
    language: str | None = None
    table: str | None = None
    tables_done: int = 0
    tables_total: int = 0
    entries_done: int = 0
    entries_total: int | None = None
    bytes_done: int = 0
    bytes_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return plain data for JSON (a task's state)."""
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


@dataclass
class IngestTracker:
    """Where an ingest is: tables done, entries written, the file downloading; told as Progress."""

    callback: ProgressCallback
    tables_done: int = 0
    tables_total: int = 0
    entries: int = 0
    entries_total: int | None = None
    download: ContentDownload | None = None

    def report(self, phase: str, lang: str, table: str | None) -> None:
        """Tell the callback where the ingest is, in `phase`, at `table` of `lang`."""
        download = self.download
        self.callback(
            Progress(
                phase,
                language=lang,
                table=table,
                tables_done=self.tables_done,
                tables_total=self.tables_total,
                entries_done=self.entries,
                entries_total=self.entries_total,
                bytes_done=download.received if download else 0,
                bytes_total=download.size if download else None,
            )
        )


@dataclass
class SyncResult:
    """How a sync ended: unchanged, updated (maybe a rollback), unavailable, failed or busy."""

    outcome: str
    run_id: str
    release_id: str | None = None
    version: str | None = None
    previous_id: str | None = None
    previous_version: str | None = None
    rollback: bool = False
    change: dict[str, Any] | None = None
    diffs: list[TableDiff] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    message: str | None = None
    retry_after: float | None = None
    transient: bool = False
    running_id: str | None = None

    @property
    def ok(self) -> bool:
        """True when the cache holds what Bungie serves (updated or unchanged)."""
        return self.outcome in (UPDATED, UNCHANGED)

    def to_dict(self) -> dict[str, Any]:
        """Return plain data for JSON (task results, the API, the CLI)."""
        data = asdict(self)
        data["diffs"] = [d.to_record() for d in self.diffs]
        return data

    def summary(self) -> str:
        """Return one line a person can read."""
        if self.outcome == UPDATED:
            verb = "rolled back to" if self.rollback else "updated to"
            return f"{verb} {self.version} (release {self.release_id})"
        if self.outcome == UNCHANGED:
            return f"unchanged: {self.version} (release {self.release_id})"
        if self.outcome == BUSY:
            return f"a sync is already running ({self.running_id})"
        retry = f"; retry after {self.retry_after:.0f}s" if self.retry_after else ""
        return f"{self.outcome}: {self.error}: {self.message}{retry}"


def check_record(
    result: SyncResult, context: dict[str, Any], before: dict[str, Any]
) -> dict[str, Any]:
    """Return the record of a check (the dashboard's "last check"); `before` is the last one."""
    now = time.time()
    failing_since: float | None
    last_success: float | None
    if result.ok:
        failing_since, last_success = None, now
    else:
        failing_since = before.get("failing_since") or now
        last_success = before.get("last_success")
    return {
        "at": now,
        "outcome": result.outcome,
        "release_id": result.release_id,
        "version": result.version,
        "error": result.error,
        "message": result.message,
        "retry_after": result.retry_after,
        "transient": result.transient,
        "failing_since": failing_since,
        "last_success": last_success,
        "duration": result.timings.get("total"),
        **context,
    }
