"""The history and every change log as a file of JSON lines, and reading one back (a backup).

Release data is not in it: a sync downloads a release again, but what changed in past releases
cannot be fetched from anywhere. `manage.py history export|import` runs these.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import IO
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeGuard

import msgspec
from redis.exceptions import WatchError

from app.manifest import changes
from app.manifest.replies import optional_text
from app.manifest.store.lock import LockLost
from app.manifest.store.records import logged_release

if TYPE_CHECKING:
    from app.manifest.store import ManifestStore

ARCHIVE = "manifest-syncer history"
FORMAT = 1
# HSET field-value pairs per command while importing a change log.
WRITE_BATCH = 500

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


class ArchiveError(ValueError):
    """A line of a file that cannot be imported; nothing is written when one is found."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


class SyncRunning(Exception):
    """A sync holds the lock: an import would race its commit, so none starts."""

    def __init__(self, holder: str | None) -> None:
        super().__init__(f"a sync is running ({holder or 'unknown run'}); try again when it ends")
        self.holder = holder


@dataclass
class Exported:
    """What an export wrote."""

    entries: int
    logs: int
    records: int


@dataclass
class Archive:
    """A file read and checked: history entries oldest first, change records per release."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    # release id -> `<table>:<hash>` -> the record as the store keeps it (changes.encode_record)
    records: dict[str, dict[bytes, bytes]] = field(default_factory=dict)

    @property
    def record_count(self) -> int:
        """Return how many change records the file holds (one per release and definition)."""
        return sum(len(fields) for fields in self.records.values())


@dataclass
class Imported:
    """What an import changed."""

    entries: int  # history entries in the file
    added: int  # of those, new to the history and kept in it
    present: int  # of those, already in the history
    left_out: int  # entries (from the file or already there) beyond MANIFEST_HISTORY_LENGTH
    history: int  # entries the history holds now
    records: int  # change records in the file
    new_records: int  # records the store did not hold
    skipped_records: int  # records of releases no entry of the history names any more
    logs: int  # releases whose change log the file holds


def export_history(store: ManifestStore, out: IO[bytes]) -> Exported:
    """Write the history (oldest first) and every change log it names to `out` as JSON lines.

    The first line names the format and counts the lines after it, so that a file cut short
    is refused on import rather than restored in part.
    """
    entries, logs = _read_consistently(store)
    records = sum(len(stored) for stored in logs.values())
    header = {
        "type": "header",
        "archive": ARCHIVE,
        "format": FORMAT,
        "exported_at": time.time(),
        "entries": len(entries),
        "changes": records,
    }
    out.write(_encode(header) + b"\n")
    for entry in entries:
        out.write(_encode({"type": "history", "entry": entry}) + b"\n")
    for release_id, stored in logs.items():
        for name in sorted(stored):
            change = changes.decode_record(name, stored[name])
            line = {"type": "change", "release_id": release_id, "change": change}
            out.write(_encode(line) + b"\n")
    return Exported(entries=len(entries), logs=len(logs), records=records)


def _read_consistently(
    store: ManifestStore,
) -> tuple[list[dict[str, Any]], dict[str, dict[bytes, bytes]]]:
    """Return the history, oldest first, and the logs it names, as of one moment.

    The logs are read in a transaction watching the history: a commit in between (which may
    drop a log) makes it read both again.
    """
    keys = store.keys
    with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.history)
                entries = [_decode(value) for value in reversed(pipe.lrange(keys.history, 0, -1))]
                named = list(dict.fromkeys(_logged(entries)))
                if not named:
                    pipe.unwatch()
                    return entries, {}
                pipe.multi()
                for release_id in named:
                    pipe.hgetall(keys.changes(release_id))
                stored = pipe.execute()
            except WatchError:
                continue
            return entries, {r: log for r, log in zip(named, stored, strict=True) if log}


def read_archive(lines: Iterable[bytes]) -> Archive:
    """Read and check every line of an exported file; raise ArchiveError naming the first bad one.

    Nothing is written here: an import checks the whole file before it writes anything.
    """
    archive = Archive()
    header: Mapping[str, Any] | None = None
    first_change_of: dict[str, int] = {}
    counted = {"history": 0, "change": 0}
    expected: dict[str, int] = {}
    number = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = _json_object(number, line)
        if header is None:
            header = _header(number, item)
            expected = {"history": header["entries"], "change": header["changes"]}
            continue
        kind = item.get("type")
        if kind == "history":
            archive.entries.append(_entry(number, item.get("entry")))
        elif kind == "change":
            release_id = item.get("release_id")
            if not isinstance(release_id, str) or not release_id:
                raise ArchiveError(number, 'a change line needs "release_id" (text)')
            name, stored = _change(number, item.get("change"))
            archive.records.setdefault(release_id, {})[name] = stored
            first_change_of.setdefault(release_id, number)
        else:
            raise ArchiveError(number, f'"type" is {kind!r}; expected "history" or "change"')
        counted[kind] += 1
        if counted[kind] > expected[kind]:
            raise ArchiveError(
                number, f"more {kind} lines than its header counts ({expected[kind]})"
            )
    if header is None:
        raise ArchiveError(1, "the file is empty; expected what `history export` writes")
    if counted != expected:
        raise ArchiveError(
            number + 1,
            f"the file ends after {counted['history']} of {expected['history']} history lines "
            f"and {counted['change']} of {expected['change']} change lines: it was cut short",
        )
    named = set(_logged(archive.entries))
    for release_id, line_number in first_change_of.items():
        if release_id not in named:
            raise ArchiveError(
                line_number, f"a change of release {release_id}, which no history line names"
            )
    return archive


def _json_object(number: int, line: bytes) -> dict[str, Any]:
    try:
        item = _decode(line)
    except msgspec.DecodeError as exc:
        raise ArchiveError(number, f"not JSON ({exc})") from None
    if not isinstance(item, dict):
        raise ArchiveError(number, "not a JSON object")
    return item


def _header(number: int, item: Mapping[str, Any]) -> Mapping[str, Any]:
    if item.get("type") != "header" or item.get("archive") != ARCHIVE:
        raise ArchiveError(
            number,
            "not a history export: its first line must be the header `history export` writes",
        )
    if item.get("format") != FORMAT:
        raise ArchiveError(
            number, f"format {item.get('format')!r} is not one this version reads ({FORMAT})"
        )
    for name in ("entries", "changes"):
        if not _is_count(item.get(name)):
            raise ArchiveError(number, f'the header needs "{name}" (a count)')
    return item


def _entry(number: int, entry: Any) -> dict[str, Any]:
    """Check what the store reads of a history entry: id, time, and what a rollback undid."""
    if not isinstance(entry, dict):
        raise ArchiveError(number, 'a history line needs "entry" (an object)')
    if not isinstance(entry.get("id"), str) or not entry["id"]:
        raise ArchiveError(number, 'a history entry needs "id" (text)')
    if not _is_number(entry.get("at")):
        raise ArchiveError(number, 'a history entry needs "at" (unix seconds)')
    rollback = entry.get("rollback", False)
    if not isinstance(rollback, bool):
        raise ArchiveError(number, '"rollback" must be true or false')
    if rollback and (not isinstance(entry.get("previous"), str) or not entry["previous"]):
        raise ArchiveError(number, 'a rollback entry needs "previous" (the release it undid)')
    # What readers of the history take for granted (pages, the feed, messages, the commit).
    if "previous" not in entry or not isinstance(entry["previous"], str | None):
        raise ArchiveError(number, 'a history entry needs "previous" (text, or null)')
    if not isinstance(entry.get("version"), str):
        raise ArchiveError(number, 'a history entry needs "version" (text)')
    log = entry.get("log")
    if log is not None and not (
        isinstance(log, dict)
        and isinstance(log.get("release"), str)
        and isinstance(log.get("inverse"), bool)
    ):
        raise ArchiveError(number, '"log" must be null or {"release": text, "inverse": bool}')
    diff = entry.get("diff", [])
    if not isinstance(diff, list) or not all(
        isinstance(d, dict) and isinstance(d.get("table"), str) for d in diff
    ):
        raise ArchiveError(number, '"diff" must be a list of per-table counts with "table"')
    return entry


def _change(number: int, change: Any) -> tuple[bytes, bytes]:
    """Check a change record; return its field and value as the store keeps them."""
    if not isinstance(change, dict):
        raise ArchiveError(number, 'a change line needs "change" (an object)')
    table, number_in_table = change.get("table"), change.get("hash")
    if not isinstance(table, str) or not table:
        raise ArchiveError(number, 'a change needs "table" (text)')
    if not _is_count(number_in_table):
        raise ArchiveError(number, 'a change needs "hash" (a whole number)')
    if change.get("kind") not in changes.KINDS:
        kinds = ", ".join(changes.KINDS)
        raise ArchiveError(number, f'"kind" is {change.get("kind")!r}; expected one of {kinds}')
    if not isinstance(change.get("name"), str):
        raise ArchiveError(number, 'a change needs "name" (text, "" for none)')
    fields = change.get("fields")
    if not isinstance(fields, list) or not all(_is_field(f) for f in fields):
        raise ArchiveError(number, '"fields" must be a list of {"path", "old"?, "new"?} objects')
    record = changes.record(table, number_in_table, change["kind"], change["name"], fields)
    return f"{table}:{number_in_table}".encode(), changes.encode_record(record)


def _is_field(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("path"), str)
        and ("old" in item or "new" in item)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def import_history(store: ManifestStore, archive: Archive, run_id: str) -> Imported:
    """Merge a checked archive into the store's history and change logs, in one transaction.

    Idempotent: an entry already in the history is not added again, a record already in a log
    is written as it was. Entries are ordered by time, newest first, and capped at
    MANIFEST_HISTORY_LENGTH; a log no entry names any more is unlinked, as a commit does. The
    sync lock is held meanwhile (raises SyncRunning if a sync holds it).
    """
    lock = store.lock(run_id)
    if not lock.acquire():
        raise SyncRunning(lock.holder())
    try:
        return _merge(store, archive, run_id)
    finally:
        lock.release()


def _merge(store: ManifestStore, archive: Archive, run_id: str) -> Imported:
    keys = store.keys
    limit = store.settings.history_length
    with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.lock, keys.history)
                if optional_text(pipe.get(keys.lock)) != run_id:
                    raise LockLost("The sync lock was lost before the import wrote anything")
                stored = pipe.lrange(keys.history, 0, -1)
                merged = _merged(stored, archive.entries, limit)
                kept = set(_logged(entry for entry, _ in merged))
                gone = set(_logged(_decode(value) for value in stored)) - kept
                pipe.multi()
                if [value for _, value in merged] != stored:
                    pipe.delete(keys.history)
                    if merged:
                        pipe.rpush(keys.history, *(value for _, value in merged))
                first_write = len(pipe)
                skipped = 0
                for release_id, records in archive.records.items():
                    if release_id not in kept:
                        skipped += len(records)
                        continue
                    pairs = [part for pair in records.items() for part in pair]
                    for start in range(0, len(pairs), 2 * WRITE_BATCH):
                        batch = pairs[start : start + 2 * WRITE_BATCH]
                        pipe.hset(keys.changes(release_id), items=batch)
                writes = range(first_write, len(pipe))
                if gone:
                    pipe.unlink(*(keys.changes(release_id) for release_id in gone))
                replies = pipe.execute()
            except WatchError:
                continue
            break
    identities = {_identity(entry) for entry in archive.entries}
    before = {_identity(_decode(value)) for value in stored}
    after = {_identity(entry) for entry, _ in merged}
    return Imported(
        entries=len(archive.entries),
        added=len((identities - before) & after),
        present=len(identities & before),
        left_out=len((identities | before) - after),
        history=len(merged),
        records=archive.record_count,
        # HSET answers how many of its fields were new.
        new_records=sum(int(replies[n]) for n in writes),
        skipped_records=skipped,
        logs=len(archive.records),
    )


def _merged(
    stored: list[bytes | str], imported: list[dict[str, Any]], limit: int
) -> list[tuple[dict[str, Any], bytes | str]]:
    """Return the history after the import, newest first: each entry once, by time, capped.

    Entries already stored keep their bytes; an entry of the file and a stored one are the same
    when every field is equal. Equal times keep the stored entries first.
    """
    found: dict[bytes, tuple[dict[str, Any], bytes | str]] = {}
    for value in stored:
        entry = _decode(value)
        found.setdefault(_identity(entry), (entry, value))
    for entry in imported:
        found.setdefault(_identity(entry), (entry, _encode(entry)))
    ordered = sorted(found.values(), key=lambda pair: float(pair[0].get("at", 0)), reverse=True)
    return ordered[:limit]


def _identity(entry: Mapping[str, Any]) -> bytes:
    """Return an entry as JSON with its keys sorted: equal entries, equal bytes."""
    return msgspec.json.encode(entry, order="sorted")


def _logged(entries: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Yield the releases whose change logs these history entries show."""
    for entry in entries:
        release_id = logged_release(entry)
        if release_id is not None:
            yield release_id
