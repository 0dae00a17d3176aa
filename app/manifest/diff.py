"""Per-table differences between two releases: added, removed and changed definitions.

The diff is counted while a table is ingested: each batch's digests are compared with the live
release's stored values for the same hashes (read in the same pipeline as the batch's writes;
a stored value starts with its digest), so no table is ever held twice in memory nor scanned
again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import msgspec
import zstandard

from app.manifest import changes
from app.manifest.changes import ChangeLog
from app.manifest.ingest import Batch
from app.manifest.items import definition_name
from app.manifest.packing import DIGEST_BYTES

NAMES_KEPT = 20

logger = logging.getLogger(__name__)


@dataclass
class TableDiff:
    """What changed in one table between the live release and a new one.

    `changed` counts definitions changed in any field but the ignored ones; `unclassified` and
    `reclassified` count those that stopped or started being redacted (not in `changed`).
    """

    table: str
    added: int = 0
    removed: int = 0
    changed: int = 0
    total: int = 0
    unclassified: int = 0
    reclassified: int = 0
    added_names: list[tuple[int, str]] = field(default_factory=list)
    changed_names: list[tuple[int, str]] = field(default_factory=list)

    def count_batch(
        self,
        entries: Batch,
        old_values: Sequence[bytes | None],
        old_json: Callable[[bytes], bytes] | None = None,
        log: ChangeLog | None = None,
    ) -> None:
        """Count a batch of new entries against the live release's stored values, key by key.

        With a change `log` (and `old_json` to read a stored value), a definition whose digest
        moved is compared field by field: only a real change counts, and it is logged.
        """
        self.total += len(entries)
        rows = zip(entries.keys, entries.data, entries.digests, old_values, strict=True)
        for key, data, digest, old in rows:
            if old is None:
                self.added += 1
                # Names are read only where they are kept: a first release adds everything.
                if log is None and len(self.added_names) >= NAMES_KEPT:
                    continue
                name = definition_name(data)
                if len(self.added_names) < NAMES_KEPT:
                    self.added_names.append((int(key), name))
                if log is not None:
                    log.add(changes.record(self.table, int(key), changes.ADDED, name, []))
            elif old[:DIGEST_BYTES] != digest:
                if log is None or old_json is None:
                    self._count(changes.CHANGED, int(key), definition_name(data))
                    continue
                try:
                    change = changes.compare(self.table, int(key), old_json(old), data, log.ignore)
                except (zstandard.ZstdError, msgspec.DecodeError):
                    # The live value is damaged (by hand, or on disk): changed, fields unknown.
                    logger.warning("%s %s of the live release cannot be read", self.table, key)
                    name = definition_name(data)
                    change = changes.record(self.table, int(key), changes.CHANGED, name, [])
                if change is not None:
                    self._count(change["kind"], change["hash"], change["name"])
                    log.add(change)

    def _count(self, kind: str, number: int, name: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.changed_names) < NAMES_KEPT:
            self.changed_names.append((number, name))

    def count_removed(self, removed: Sequence[tuple[int, str]], log: ChangeLog | None) -> None:
        """Count the definitions of the live release the new one lacks (hash, name it had)."""
        self.removed = len(removed)
        if log is not None:
            for number, name in removed:
                log.add(changes.record(self.table, number, changes.REMOVED, name, []))

    def finish(self, old_total: int) -> TableDiff:
        """Derive the removed count once every new entry has been counted (without a log)."""
        self.removed = old_total - (self.total - self.added)
        return self

    def inverse(self) -> TableDiff:
        """Return the diff of going back: what was added is removed, and the other way round."""
        return TableDiff(
            self.table,
            added=self.removed,
            removed=self.added,
            changed=self.changed,
            total=self.total - self.added + self.removed,
            unclassified=self.reclassified,
            reclassified=self.unclassified,
            changed_names=list(self.changed_names),
        )

    def to_record(self) -> dict[str, Any]:
        """Return plain data for JSON (records, history, the API)."""
        return {
            "table": self.table,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unclassified": self.unclassified,
            "reclassified": self.reclassified,
            "total": self.total,
            "added_names": [list(pair) for pair in self.added_names],
            "changed_names": [list(pair) for pair in self.changed_names],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TableDiff:
        """Rebuild a diff from `to_record()` data (records from before kinds count none)."""
        return cls(
            record["table"],
            added=record["added"],
            removed=record["removed"],
            changed=record["changed"],
            total=record["total"],
            unclassified=record.get("unclassified", 0),
            reclassified=record.get("reclassified", 0),
            added_names=[(int(h), str(n)) for h, n in record["added_names"]],
            changed_names=[(int(h), str(n)) for h, n in record["changed_names"]],
        )
