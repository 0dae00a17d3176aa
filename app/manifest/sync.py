"""run(): check Bungie, and when the release differs, ingest it beside the live one and flip.

The flow: lock -> manifest -> release id -> unchanged | pointer flip | ingest, diff, commit.
Progress goes to a callback; the outcome comes back as a SyncResult, never as an exception.
What a sync tells (outcomes, Progress, SyncResult: outcome.py) is part of this module's API.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from app.manifest import errors
from app.manifest.changes import ChangeLog
from app.manifest.client import BungieClient
from app.manifest.diff import TableDiff
from app.manifest.heartbeat import holding_lock
from app.manifest.ingest import Batch
from app.manifest.outcome import BUSY
from app.manifest.outcome import FAILED
from app.manifest.outcome import UNAVAILABLE
from app.manifest.outcome import UNCHANGED
from app.manifest.outcome import UPDATED
from app.manifest.outcome import IngestTracker
from app.manifest.outcome import Progress
from app.manifest.outcome import ProgressCallback
from app.manifest.outcome import SyncResult
from app.manifest.outcome import check_record
from app.manifest.packing import FORMAT
from app.manifest.release import Release
from app.manifest.release import compare
from app.manifest.sources import TableSources
from app.manifest.store import ManifestStore
from app.manifest.store import ReleaseInfo
from app.manifest.store import TableWriter
from app.manifest.store.lock import LockLost

__all__ = [
    "BUSY",
    "FAILED",
    "UNAVAILABLE",
    "UNCHANGED",
    "UPDATED",
    "Progress",
    "ProgressCallback",
    "SyncResult",
    "run",
]

log = logging.getLogger(__name__)


def run(
    store: ManifestStore,
    client: BungieClient,
    *,
    run_id: str | None = None,
    trigger: str = "manual",
    requested_by: str | None = None,
    request_id: str | None = None,
    progress: ProgressCallback | None = None,
    beating: bool = False,
) -> SyncResult:
    """Bring the cache in step with Bungie, one sync at a time across every process.

    A check that finds the live release costs one request to Bungie and one Redis round trip,
    and takes no lock; only a different release takes the lock, and looks again under it.
    While it holds the lock the run's heartbeat says it is alive, unless the caller keeps it
    already (`beating`: a task does, for its whole life).
    """
    run_id = run_id or uuid.uuid4().hex
    context = {
        "trigger": trigger,
        "requested_by": requested_by,
        "request_id": request_id,
        "run_id": run_id,
    }
    started = time.monotonic()
    flow = _Sync(store, client, run_id, context, progress or _ignore, beating=beating)
    try:
        result = flow.run()
    except errors.ManifestError as exc:
        result = _failure(run_id, exc)
    except redis.RedisError as exc:
        result = _redis_failure(run_id, exc)
    except Exception as exc:
        log.exception("Sync %s failed unexpectedly", run_id)
        result = SyncResult(FAILED, run_id, error=type(exc).__name__, message=str(exc)[:300])
    result.timings["total"] = round(time.monotonic() - started, 3)
    if result.outcome != BUSY and not flow.check_recorded:
        _record_check(store, result, context, flow.last_check)
    log.info("Sync %s (%s): %s", run_id, trigger, result.summary())
    return result


def _ignore(_: Progress) -> None:
    """Default progress callback: nobody is watching."""


def _redis_failure(run_id: str, exc: redis.RedisError) -> SyncResult:
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        # Retrying would fill Redis again: someone has to give it more room.
        message = f"Redis is full ({exc}); raise its maxmemory or cache fewer tables/languages"
        return SyncResult(FAILED, run_id, error=type(exc).__name__, message=message)
    return SyncResult(
        FAILED, run_id, error=type(exc).__name__, message=f"Redis: {exc}", transient=True
    )


def _failure(run_id: str, exc: errors.ManifestError) -> SyncResult:
    outcome = UNAVAILABLE if isinstance(exc, errors.BungieUnavailable) else FAILED
    return SyncResult(
        outcome,
        run_id,
        error=exc.kind,
        message=str(exc),
        retry_after=exc.retry_after,
        transient=exc.transient,
    )


def _record_check(
    store: ManifestStore, result: SyncResult, context: dict[str, Any], before: Any
) -> None:
    try:
        if before is _UNREAD:
            before = store.last_check()
        store.record_check(check_record(result, context, before or {}))
    except redis.RedisError:
        log.warning("Could not record the outcome of sync %s: Redis is unavailable", result.run_id)


_UNREAD = object()  # The last check, before this run has read it.


class _Sync:
    """One run of the flow: a check, and when the release differs, the rest under the lock."""

    def __init__(
        self,
        store: ManifestStore,
        client: BungieClient,
        run_id: str,
        context: dict[str, Any],
        progress: ProgressCallback,
        *,
        beating: bool,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = store.settings
        self.lock = store.lock(run_id)
        self.beating = beating
        self.last_check: Any = _UNREAD
        # Set when the check recorded itself (an unchanged release: in the glance's round trip).
        self.check_recorded = False
        self.started = time.monotonic()
        self.context = context
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.tracker = IngestTracker(self.progress)
        self.sources = TableSources(
            client,
            self.tracker,
            self.lock.keep_alive,
            blind_to_index="index" in self.settings.diff_ignore,
        )
        self.log: ChangeLog | None = None

    def run(self) -> SyncResult:
        self.progress(Progress("checking"))
        started = time.monotonic()
        release = Release.from_manifest(self.client.get_manifest(), self.settings)
        self.timings["check"] = round(time.monotonic() - started, 3)
        # Most checks find the live release: their record is written in the same round trip
        # that tells, if it does (it needs nothing from the last check: an unchanged check
        # succeeded).
        unchanged = self._unchanged(release, {})
        unchanged.timings = {**self.timings, "total": round(time.monotonic() - self.started, 3)}
        entry = check_record(unchanged, self.context, {})
        live_id, self.last_check, counts = self.store.glance(release.id, record_if_live=entry)
        if live_id == release.id:
            self.check_recorded = True
            return self._unchanged(release, counts or {})
        store = self.store
        with holding_lock(self.lock, store.redis, store.keys, beating=self.beating) as held:
            if not held:
                return SyncResult(BUSY, self.lock.run_id, running_id=self.lock.holder())
            # Under the lock, look again: another run may have committed it meanwhile.
            live = store.live_release()
            if live is not None and live.id == release.id:
                return self._unchanged(release, live.counts)
            if live is not None and release.id in store.kept_ids():
                return self._flip_back(release, live)
            return self._build(release, live)

    def _unchanged(self, release: Release, counts: dict[str, dict[str, int]]) -> SyncResult:
        return SyncResult(
            UNCHANGED,
            self.lock.run_id,
            release_id=release.id,
            version=release.version,
            counts=counts,
            timings=self.timings,
        )

    def _result(self, outcome: str, info: ReleaseInfo, **fields: Any) -> SyncResult:
        return SyncResult(
            outcome,
            self.lock.run_id,
            release_id=info.id,
            version=info.release.version,
            counts=info.counts,
            timings=self.timings,
            **fields,
        )

    def _flip_back(self, release: Release, live: ReleaseInfo) -> SyncResult:
        """The release is one we still keep (Bungie rolled back): flip, no download."""
        target = self.store.release_info(release.id)
        assert target is not None
        if target.base == live.id:
            diffs = target.diffs
        elif live.base == release.id:
            diffs = [d.inverse() for d in live.diffs]
        else:
            diffs = []
        self.progress(Progress("committing"))
        change = compare(live.release, release)
        history = self._history(target, live, diffs, change.to_record(), rollback=True)
        self.store.activate(target.release, history, self.lock)
        return self._result(
            UPDATED,
            target,
            previous_id=live.id,
            previous_version=live.release.version,
            rollback=True,
            change=change.to_record(),
            diffs=diffs,
        )

    def _build(self, release: Release, live: ReleaseInfo | None) -> SyncResult:
        started = time.monotonic()
        self.store.collect_garbage(self.lock)
        self.store.stage(release)
        try:
            counts, diffs = self._ingest(release, live)
            self.timings["ingest"] = round(time.monotonic() - started, 3)
            change = compare(live.release if live else None, release)
            info = ReleaseInfo(
                release=release,
                counts=counts,
                synced_at=time.time(),
                duration=round(time.monotonic() - started, 3),
                diffs=diffs,
                change=change.to_record(),
                base=live.id if live else None,
                trigger=self.context,
                changes=self.log.summary() if self.log else None,
            )
            self.progress(Progress("committing"))
            commit_started = time.monotonic()
            self.store.commit(info, self._history(info, live, diffs, info.change), self.lock)
            self.timings["commit"] = round(time.monotonic() - commit_started, 3)
        except LockLost:
            raise  # The lock's new holder may be staging this release: its data is not ours.
        except BaseException:
            self._discard(release.id)
            raise
        return self._result(
            UPDATED,
            info,
            previous_id=live.id if live else None,
            previous_version=live.release.version if live else None,
            change=info.change,
            diffs=diffs,
        )

    def _discard(self, release_id: str) -> None:
        try:
            self.store.discard(release_id, self.lock)
        except redis.RedisError:
            log.warning("Could not drop the staged data of %s; the next run will", release_id)

    def _history(
        self,
        info: ReleaseInfo,
        live: ReleaseInfo | None,
        diffs: list[TableDiff],
        change: dict[str, Any],
        *,
        rollback: bool = False,
    ) -> dict[str, Any]:
        return {
            "id": info.id,
            "version": info.release.version,
            "previous": live.id if live else None,
            "previous_version": live.release.version if live else None,
            "rollback": rollback,
            "at": time.time(),
            "duration": info.duration if not rollback else 0.0,
            "counts": info.counts,
            "diff": [d.to_record() for d in diffs],
            **_log_shown(info, live, rollback),
            "change": change,
            "trigger": self.context,
        }

    # -- ingest ----------------------------------------------------------------------------

    def _ingest(
        self, release: Release, live: ReleaseInfo | None
    ) -> tuple[dict[str, dict[str, int]], list[TableDiff]]:
        counts: dict[str, dict[str, int]] = {lang: {} for lang in release.languages}
        diffs: list[TableDiff] = []
        tracker = self.tracker
        tracker.tables_done, tracker.tables_total = 0, len(release.languages) * len(release.tables)
        # A live release stored before whole definitions has projections: nothing to compare.
        comparable = live is None or live.format == FORMAT
        if live is not None and comparable:
            self.log = ChangeLog(self.settings.diff_ignore, self.settings.changes_max_bytes)
        # One writer thread: Redis stores batch n while this thread decodes batch n + 1.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest-writer") as writes:
            for lang in release.languages:
                for table, batches in self.sources.tables(release, lang):
                    live_count = live.counts.get(lang, {}).get(table) if live else None
                    # A table (or language) the live release lacks is new, not changed: its
                    # diff would list every definition as added. Not compared.
                    held = live is not None and live_count is not None
                    live_id = live.id if held and live is not None else None
                    # The diff is counted for the first language; the others are translations.
                    first = lang == release.languages[0]
                    diff = TableDiff(table) if first and comparable and (held or not live) else None
                    writer = TableWriter(
                        self.store, release.id, lang, table, diff, live_id, self.log, lock=self.lock
                    )
                    started = time.monotonic()
                    self._write_all(writes, writer, batches, lang, table)
                    self._check_size(lang, table, writer.count, live_count)
                    counts[lang][table] = writer.count
                    writer.finish(live_count)
                    if diff is not None:
                        diffs.append(diff)
                    tracker.tables_done += 1
                    self.timings[f"{lang}:{table}"] = round(time.monotonic() - started, 3)
        return counts, diffs

    def _write_all(
        self,
        writes: ThreadPoolExecutor,
        writer: TableWriter,
        batches: Iterator[Batch],
        lang: str,
        table: str,
    ) -> None:
        in_flight: Future[None] | None = None
        for batch in batches:
            if in_flight is not None:
                in_flight.result()  # At most one batch waits for Redis: memory stays flat.
            in_flight = writes.submit(writer.write, batch)
            self.lock.keep_alive()
            self.tracker.entries = writer.count
            self.tracker.report("ingesting", lang, table)
        if in_flight is not None:
            in_flight.result()

    def _check_size(self, lang: str, table: str, count: int, live_count: int | None) -> None:
        minimum = (live_count or 0) * self.settings.min_table_ratio
        if count < minimum:
            raise errors.TableInvalid(
                f"{table} ({lang}) has {count:,} entries, fewer than "
                f"{self.settings.min_table_ratio:.0%} of the live release's {live_count:,}"
            )


def _log_shown(info: ReleaseInfo, live: ReleaseInfo | None, rollback: bool) -> dict[str, Any]:
    """Return which change log a history entry shows, and its summary.

    A build shows its own. A flip shows the log between the two releases, either way round:
    the inverse of the undone release's log when it was built from the target (a rollback), or
    the target's own when the target was built from the live one (forward again); neither
    when they are not next to each other.
    """
    if not rollback or (live is not None and info.base == live.id):
        return {"log": {"release": info.id, "inverse": False}, "changes": info.changes}
    if live is not None and live.base == info.id:
        return {"log": {"release": live.id, "inverse": True}, "changes": live.changes}
    return {"log": None, "changes": None}
