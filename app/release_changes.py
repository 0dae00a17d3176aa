"""What changed, as the pages and the API read it: one parser of a change log's filters, the
release a log belongs to with its summary, one page of its changes, and clear 400s and 404s."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import NotFound

from app.extensions import get_settings
from app.manifest import changes
from app.manifest.changes import Change
from app.manifest.store import ManifestStore
from app.manifest.store import shown_log

KINDS = changes.KINDS
PER_PAGE = 50
MAX_PER_PAGE = 200
MAX_PAGE = 100_000
MAX_QUERY_LENGTH = 100
# How many of the newest history entries are read before the whole history.
RECENT_ENTRIES = 10
# What ?undone= takes: the view of a release's log as the rollback that undid it saw it.
_YES = ("1", "true", "yes", "on")
_NO = ("", "0", "false", "no", "off")

# (prefix, release id) -> (the store's cached log, its inverse): a rollback's view, made once
# per process and log (the store hands back the same list while it keeps the log cached).
_inverses: dict[tuple[str, str], tuple[list[Change], list[Change]]] = {}
_inverses_lock = threading.Lock()
INVERSES_KEPT = 4


@dataclass(frozen=True)
class ChangeQuery:
    """A validated look at a change log: table, kind, name substring, page, and the view."""

    table: str | None = None
    kind: str | None = None
    q: str = ""
    page: int = 1
    per_page: int = PER_PAGE
    # True: the log as undone by a rollback (each change inverted).
    undone: bool = False

    def filters(self) -> dict[str, Any]:
        """Return the query values that keep this look in a link, page apart (defaults left out)."""
        chosen = {"table": self.table, "kind": self.kind, "q": self.q}
        kept: dict[str, Any] = {k: v for k, v in chosen.items() if v}
        if self.per_page != PER_PAGE:
            kept["per_page"] = self.per_page
        if self.undone:
            kept["undone"] = 1
        return kept


def parse_change_query(args: Mapping[str, str]) -> ChangeQuery:
    """Read table, kind, q, page, per_page and undone; raise BadRequest naming the bad one."""
    table = args.get("table", "").strip()
    kind = args.get("kind", "").strip()
    if kind and kind not in KINDS:
        raise BadRequest(f"kind {kind[:40]!r} is not one of: {', '.join(KINDS)}")
    q = args.get("q", "").strip()
    if len(q) > MAX_QUERY_LENGTH:
        raise BadRequest(f"q is at most {MAX_QUERY_LENGTH} characters")
    undone = args.get("undone", "").strip().lower()
    if undone not in _YES + _NO:
        raise BadRequest("undone is 1 (the log as a rollback undid it) or 0")
    return ChangeQuery(
        table=parse_table(table) if table else None,
        kind=kind or None,
        q=q,
        page=_number(args, "page", 1, MAX_PAGE),
        per_page=_number(args, "per_page", PER_PAGE, MAX_PER_PAGE),
        undone=undone in _YES,
    )


def parse_table(name: str) -> str:
    """Return `name` if it is a cached table; raise BadRequest naming the cached tables."""
    tables = get_settings().tables
    if name not in tables:
        raise BadRequest(
            f"{name[:80]!r} is not a cached table; the cached tables are: {', '.join(tables)}"
        )
    return name


def _number(args: Mapping[str, str], name: str, default: int, most: int) -> int:
    raw = args.get(name, "").strip()
    if raw == "":
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
    if not 1 <= value <= most:
        raise BadRequest(f"{name} must be a whole number between 1 and {most:,}")
    return value


# -- a release's log ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseChanges:
    """A release's change log as one view shows it, with the history entry it is read with.

    `entry` is the commit that built the release (for an undone view: the rollback that undid
    it); None when only the release's record is kept. `summary` is what the API calls the
    release: id, version, base, when, the log's summary, per-table counts by kind, and the
    rollback that undid it (`undone`, in an undone view).
    """

    summary: dict[str, Any]
    entry: dict[str, Any] | None
    log: list[Change]

    def select(self, query: ChangeQuery) -> tuple[list[Change], int]:
        """Return the changes of `query`'s page, and how many match its filters in all."""
        start = (query.page - 1) * query.per_page
        end = start + query.per_page
        if query.table is None and query.kind is None and not query.q:
            return self.log[start:end], len(self.log)
        needle = query.q.casefold()
        matched = [
            change
            for change in self.log
            if (query.table is None or change["table"] == query.table)
            and (query.kind is None or change["kind"] == query.kind)
            and (not needle or needle in change["name"].casefold())
        ]
        return matched[start:end], len(matched)


def release_changes(store: ManifestStore, release_id: str, undone: bool = False) -> ReleaseChanges:
    """Return what the commit that built `release_id` changed, or with `undone` what the
    rollback that undid it changed (the inverse), as `store` (the reading one) holds it; raise
    NotFound for a release the history does not name (nor the kept releases)."""
    # The newest entries first: pages are mostly asked about recent releases, and the whole
    # history is a hundred entries to read and decode.
    entries = store.history(RECENT_ENTRIES)
    built = _built(entries, release_id)
    rollback = _rollback(entries, release_id) if undone else None
    if len(entries) == RECENT_ENTRIES and (built is None or (undone and rollback is None)):
        entries = store.history(store.settings.history_length)
        built = _built(entries, release_id)
        rollback = _rollback(entries, release_id) if undone else None
    if undone:
        return _undone(store, release_id, rollback, built)
    if built is not None:
        return _shown(release_id, built, built, store.change_log(release_id))
    info = store.release_info(release_id)
    if info is not None:
        record = info.to_record()
        record.update(previous=info.base, previous_version=None, at=info.synced_at)
        return _shown(release_id, record, None, store.change_log(release_id))
    named = next((e for e in entries if e["id"] == release_id), None)
    if named is None:
        raise NotFound(f"There is no release {release_id[:40]} in the history.")
    # Only a rollback to it is left: the commit that built it, and its log, left the history.
    gone = {**named, "previous": None, "previous_version": None, "diff": [], "changes": None}
    return ReleaseChanges({**_summary(release_id, gone), "log": "gone"}, named, [])


def _built(entries: list[dict[str, Any]], release_id: str) -> dict[str, Any] | None:
    """Return the newest entry of the commit that built `release_id`, if the history has it."""
    return next((e for e in entries if e["id"] == release_id and not e.get("rollback")), None)


def _rollback(entries: list[dict[str, Any]], release_id: str) -> dict[str, Any] | None:
    """Return the newest entry of a rollback that undid `release_id` (one that shows its log
    inverted), if the history has one."""
    return next((e for e in entries if shown_log(e) == (release_id, True)), None)


def _undone(
    store: ManifestStore,
    release_id: str,
    rollback: dict[str, Any] | None,
    built: dict[str, Any] | None,
) -> ReleaseChanges:
    if rollback is None:
        raise NotFound(f"No rollback in the history undid release {release_id[:40]}.")
    if built is not None:
        shown = {**built, "diff": [_inverse_counts(d) for d in built.get("diff") or ()]}
    else:
        # The rollback's own counts are what it did; the undone release is named by it.
        shown = {**rollback, "id": release_id, "version": rollback["previous_version"]}
        shown.update(previous=None, previous_version=None)
    shown["changes"] = rollback.get("changes")
    made = _shown(release_id, shown, rollback, _inverse_log(store, release_id))
    made.summary["undone"] = {
        "by": rollback["id"],
        "version": rollback["version"],
        "at": rollback["at"],
    }
    return made


def _shown(
    release_id: str, record: Mapping[str, Any], entry: dict[str, Any] | None, log: list[Change]
) -> ReleaseChanges:
    summary = _summary(release_id, record)
    if summary["changes"] and summary["changes"].get("kept") and not log:
        summary["log"] = "gone"  # Its log left with the last entry of the history naming it.
    return ReleaseChanges(summary, entry, log)


def _inverse_log(store: ManifestStore, release_id: str) -> list[Change]:
    log = store.change_log(release_id)
    cache_key = (store.keys.prefix, release_id)
    made = _inverses.get(cache_key)
    if made is not None and made[0] is log:
        return made[1]
    inverse = [changes.inverse(change) for change in log]
    with _inverses_lock:
        _inverses.pop(cache_key, None)
        _inverses[cache_key] = (log, inverse)
        while len(_inverses) > INVERSES_KEPT:
            del _inverses[next(iter(_inverses))]
    return inverse


def _summary(release_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Return what the API says of a release whose log is shown (see ReleaseChanges)."""
    summary = entry.get("changes")
    return {
        "id": release_id,
        "version": entry.get("version"),
        "base": entry.get("previous"),
        "base_version": entry.get("previous_version"),
        "at": entry.get("at"),
        # kept: its change log is shown; none: it made none (a first release); gone: it left
        # the history (MANIFEST_HISTORY_LENGTH).
        "log": "none" if summary is None else "kept",
        "changes": summary,
        "tables": [_counts(diff) for diff in entry.get("diff") or ()],
        "undone": None,
    }


def _inverse_counts(diff: Mapping[str, Any]) -> dict[str, Any]:
    counted = {**diff}
    counted.update((changes.INVERSE_KIND[kind], diff.get(kind, 0)) for kind in KINDS)
    counted["total"] = diff["total"] - diff["added"] + diff["removed"]
    return counted


def _counts(diff: Mapping[str, Any]) -> dict[str, Any]:
    counted: dict[str, Any] = {"table": diff["table"]}
    counted.update((kind, int(diff.get(kind, 0))) for kind in KINDS)
    counted["total"] = diff.get("total")
    return counted
