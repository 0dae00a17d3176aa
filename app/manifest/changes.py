"""What changed in a definition, field by field, and the kind of change it was.

A change is one record: `{"table", "hash", "kind", "name", "fields"}`, kind one of KINDS. A
changed field is `{"path": "stats.stats.4284893193.value", "old": 30, "new": 33}`; a field that
appeared has no "old", one that went has no "new". Paths join keys and list positions with dots.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Mapping
from typing import Any

import msgspec
import zstandard

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"
# A redacted definition revealed, and one redacted: what Bungie hides until it is announced.
UNCLASSIFIED = "unclassified"
RECLASSIFIED = "reclassified"
KINDS = (ADDED, REMOVED, CHANGED, UNCLASSIFIED, RECLASSIFIED)
# What each kind is when a change is undone (a rollback lists the inverse of what it undid).
INVERSE_KIND = {
    ADDED: REMOVED,
    REMOVED: ADDED,
    CHANGED: CHANGED,
    UNCLASSIFIED: RECLASSIFIED,
    RECLASSIFIED: UNCLASSIFIED,
}

# What each kind is called where people read it (pages, the feed, every message).
KIND_WORDS = {
    ADDED: "added",
    REMOVED: "removed",
    CHANGED: "changed",
    UNCLASSIFIED: "revealed",
    RECLASSIFIED: "redacted",
}

Change = dict[str, Any]
FieldChange = dict[str, Any]

_decode = msgspec.json.decode
# A definition's top-level fields, each as the JSON it is (not decoded).
_split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


def field_changes(
    old: Any, new: Any, ignore: Collection[str] = (), path: str = ""
) -> list[FieldChange]:
    """Return the fields that differ between two decoded definitions, leaves first to last.

    Objects are compared key by key and lists position by position; any other value, or two
    values of different kinds, is one field. Paths in `ignore` (dotted, from the top) are noise.
    """
    if path in ignore:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[FieldChange] = []
        for key in _keys(old, new):
            child = f"{path}.{key}" if path else str(key)
            if key not in new:
                if child not in ignore:
                    found.append({"path": child, "old": old[key]})
            elif key not in old:
                if child not in ignore:
                    found.append({"path": child, "new": new[key]})
            else:
                found += field_changes(old[key], new[key], ignore, child)
        return found
    if isinstance(old, list) and isinstance(new, list):
        found = []
        for position in range(max(len(old), len(new))):
            child = f"{path}.{position}" if path else str(position)
            if position >= len(new):
                found.append({"path": child, "old": old[position]})
            elif position >= len(old):
                found.append({"path": child, "new": new[position]})
            else:
                found += field_changes(old[position], new[position], ignore, child)
        return found
    if old == new and type(old) is type(new):
        return []
    return [{"path": path, "old": old, "new": new}]


def _keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Return the keys of both objects: the old one's in its order, then the new ones."""
    return [*old, *(key for key in new if key not in old)]


def compare(
    table: str, number: int, old_json: bytes, new_json: bytes, ignore: Collection[str]
) -> Change | None:
    """Return the change from one stored definition to another, or None if only noise moved.

    The top-level fields are compared as the JSON they are, and only those that differ are
    decoded and walked: a definition that changed one stat decodes one field, not thirty.
    """
    old, new = _split(old_json), _split(new_json)
    fields: list[FieldChange] = []
    for key in _keys(old, new):
        if key in ignore:
            continue
        if key not in new:
            fields.append({"path": key, "old": _decode(old[key])})
        elif key not in old:
            fields.append({"path": key, "new": _decode(new[key])})
        elif bytes(old[key]) != bytes(new[key]):
            fields += field_changes(_decode(old[key]), _decode(new[key]), ignore, key)
    if not fields:
        return None
    kind = CHANGED
    was, now = _redacted(old), _redacted(new)
    if was and not now:
        kind = UNCLASSIFIED
    elif now and not was:
        kind = RECLASSIFIED
    return record(table, number, kind, _name(new) or _name(old), fields)


def _redacted(definition: Mapping[str, msgspec.Raw]) -> bool:
    flag = definition.get("redacted")
    return flag is not None and bytes(flag) == b"true"


def _name(definition: Mapping[str, msgspec.Raw]) -> str:
    display = definition.get("displayProperties")
    return name_of({"displayProperties": _decode(display)}) if display is not None else ""


def record(table: str, number: int, kind: str, name: str, fields: list[FieldChange]) -> Change:
    """Return a change record."""
    return {"table": table, "hash": number, "kind": kind, "name": name, "fields": fields}


def inverse(change: Mapping[str, Any]) -> Change:
    """Return the change that undoes `change` (what a rollback did to the definition)."""
    fields = [inverse_field(field) for field in change["fields"]]
    kind = INVERSE_KIND[change["kind"]]
    return record(change["table"], change["hash"], kind, change["name"], fields)


def inverse_field(field: Mapping[str, Any]) -> FieldChange:
    """Return a changed field as undoing it changes it."""
    flipped: FieldChange = {"path": field["path"]}
    if "new" in field:
        flipped["old"] = field["new"]
    if "old" in field:
        flipped["new"] = field["old"]
    return flipped


def name_of(definition: Any) -> str:
    """Return a decoded definition's display name, or ""."""
    if not isinstance(definition, dict):
        return ""
    display = definition.get("displayProperties")
    name = display.get("name") if isinstance(display, dict) else None
    return name if isinstance(name, str) else ""


class ChangeLog:
    """The change records of one release, collected as its tables are ingested, up to a size.

    Each record is stored under `<table>:<hash>` as JSON (zstd when long); past `max_bytes`
    records are counted as cut, not kept: a release that changes everything must not fill Redis.
    """

    def __init__(self, ignore: Collection[str], max_bytes: int) -> None:
        self.ignore = frozenset(ignore)
        self.max_bytes = max_bytes
        self.kept = 0
        self.cut = 0
        self.size = 0
        self._pending: list[bytes] = []

    def add(self, change: Change) -> None:
        """Keep a change record, or count it as cut once the log is full."""
        field = b"%s:%d" % (change["table"].encode(), change["hash"])
        value = encode_record(change)
        if self.size + len(field) + len(value) > self.max_bytes:
            self.cut += 1
            return
        self._pending += (field, value)
        self.size += len(field) + len(value)
        self.kept += 1

    def take(self) -> list[bytes]:
        """Return the records added since the last call as HSET's `field, value, ...`."""
        pending, self._pending = self._pending, []
        return pending

    def summary(self) -> dict[str, int]:
        """Return what the log kept and cut, for the release's record."""
        return {"kept": self.kept, "cut": self.cut, "bytes": self.size}


# A record longer than this is stored compressed (zstd, no dictionary): shorter ones gain little.
_COMPRESS_OVER = 256
_compressor = zstandard.ZstdCompressor(level=3)
_encode = msgspec.json.Encoder().encode


def encode_record(change: Mapping[str, Any]) -> bytes:
    """Return a change record as stored: JSON of its kind, name and fields; zstd if long."""
    data = _encode({"kind": change["kind"], "name": change["name"], "fields": change["fields"]})
    if len(data) > _COMPRESS_OVER:
        return _compressor.compress(data)
    return data


def decode_record(field: bytes | str, stored: bytes | str) -> Change:
    """Return the change record stored under `field` (`<table>:<hash>`)."""
    table, _, number = (field.decode() if isinstance(field, bytes) else field).rpartition(":")
    if isinstance(stored, str):
        stored = stored.encode()
    if stored[:1] != b"{":
        stored = zstandard.ZstdDecompressor().decompress(stored)
    body = _decode(stored)
    return record(table, int(number), body["kind"], body["name"], body["fields"])
