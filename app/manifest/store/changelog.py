"""Reading what changed: a release's change log, and one definition's changes across the history.

A change log is written while its release is staged (store/writer.py) and outlives the
release's data: it is kept while an entry of the history names it. A rollback's entry shows
the inverse of the log of the release it undid.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from app.manifest import changes
from app.manifest.changes import Change
from app.manifest.store.records import ReleaseRecords
from app.manifest.store.records import shown_log

# How many releases' decoded change logs a process keeps (a committed log never changes).
LOGS_KEPT = 4
_KIND_ORDER = {kind: n for n, kind in enumerate(changes.KINDS)}

# (prefix, release id) -> its change log, sorted; the most recently read last.
_logs: dict[tuple[str, str], list[Change]] = {}
_logs_lock = threading.Lock()


class ChangeLogs(ReleaseRecords):
    """Change logs of the releases in the history, and the history of one definition."""

    def change_log(self, release_id: str) -> list[Change]:
        """Return what the commit that built `release_id` changed, by table, kind and name.

        Empty when it kept no log (a first release) or its log has left the history.
        """
        cache_key = (self.keys.prefix, release_id)
        found = _logs.get(cache_key)
        if found is None:
            stored = self.redis.hgetall(self.keys.changes(release_id))
            found = sorted(
                (changes.decode_record(field, value) for field, value in stored.items()),
                key=_change_order,
            )
            if not found:
                return found  # Nothing to keep: a log may yet be imported (`history import`).
            with _logs_lock:
                _logs.pop(cache_key, None)
                _logs[cache_key] = found
                while len(_logs) > LOGS_KEPT:
                    del _logs[next(iter(_logs))]
        return found

    def changes_of(self, entry: Mapping[str, Any]) -> list[Change]:
        """Return what a history entry changed: its release's log, a flip's either way round."""
        log = shown_log(entry)
        if log is None:
            return []
        release_id, inverted = log
        found = self.change_log(release_id)
        return [changes.inverse(change) for change in found] if inverted else found

    def definition_history(self, table: str, number: int) -> list[dict[str, Any]]:
        """Return how a definition changed in each entry of the history, newest first.

        Two round trips: the history, then the definition's record in every log it names.
        """
        entries = self.history(self.settings.history_length)
        shown = [(entry, log) for entry in entries if (log := shown_log(entry)) is not None]
        field = f"{table}:{number}"
        with self.redis.pipeline(transaction=False) as pipe:
            for _, (release_id, _inverted) in shown:
                pipe.hget(self.keys.changes(release_id), field)
            stored = pipe.execute()
        found = []
        for (entry, (_release, inverted)), value in zip(shown, stored, strict=True):
            if not value:
                continue
            change = changes.decode_record(field, value)
            found.append(_history_item(entry, changes.inverse(change) if inverted else change))
        return found


def _change_order(change: Mapping[str, Any]) -> tuple[str, int, str, int]:
    return (change["table"], _KIND_ORDER[change["kind"]], change["name"].casefold(), change["hash"])


def _history_item(entry: Mapping[str, Any], change: Change) -> dict[str, Any]:
    return {
        "release_id": entry["id"],
        "version": entry.get("version"),
        "at": entry.get("at"),
        "rollback": bool(entry.get("rollback")),
        "log": entry.get("log"),
        "kind": change["kind"],
        "name": change["name"],
        "fields": change["fields"],
    }
