"""Per-table differences between two releases: added, removed and changed definitions.

The diff is counted while a table is ingested: each batch's digests are compared with the live
release's stored values for the same hashes (read in the same pipeline as the batch's writes;
a stored value starts with its digest), so no table is ever held twice in memory nor scanned
again.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from app.manifest.ingest import Batch
from app.manifest.items import definition_name
from app.manifest.packing import DIGEST_BYTES

NAMES_KEPT = 20


@dataclass
class TableDiff:
    """What changed in one table between the live release and a new one."""

    table: str
    added: int = 0
    removed: int = 0
    changed: int = 0
    total: int = 0
    added_names: list[tuple[int, str]] = field(default_factory=list)
    changed_names: list[tuple[int, str]] = field(default_factory=list)

    def count_batch(self, entries: Batch, old_values: Sequence[bytes | None]) -> None:
        """Count a batch of new entries against the live release's stored values, key by key."""
        self.total += len(entries)
        rows = zip(entries.keys, entries.data, entries.digests, old_values, strict=True)
        for key, data, digest, old in rows:
            if old is None:
                self.added += 1
                if len(self.added_names) < NAMES_KEPT:
                    self.added_names.append((int(key), definition_name(data)))
            elif old[:DIGEST_BYTES] != digest:
                self.changed += 1
                if len(self.changed_names) < NAMES_KEPT:
                    self.changed_names.append((int(key), definition_name(data)))

    def finish(self, old_total: int) -> TableDiff:
        """Derive the removed count once every new entry has been counted."""
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
            changed_names=list(self.changed_names),
        )

    def to_record(self) -> dict[str, Any]:
        """Return plain data for JSON (records, history, the API)."""
        return {
            "table": self.table,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "total": self.total,
            "added_names": [list(pair) for pair in self.added_names],
            "changed_names": [list(pair) for pair in self.changed_names],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TableDiff:
        """Rebuild a diff from `to_record()` data."""
        return cls(
            record["table"],
            added=record["added"],
            removed=record["removed"],
            changed=record["changed"],
            total=record["total"],
            added_names=[(int(h), str(n)) for h, n in record["added_names"]],
            changed_names=[(int(h), str(n)) for h, n in record["changed_names"]],
        )
