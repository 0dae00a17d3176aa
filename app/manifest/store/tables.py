"""Whole tables of a kept release as Bungie's JSON files: read in slices (HSCAN), each definition
unpacked and written out as stored, so memory stays flat whatever the table's size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import zstandard

from app.manifest.errors import ManifestError
from app.manifest.packing import FORMAT
from app.manifest.packing import Unpacker
from app.manifest.release import Release
from app.manifest.store.records import ReleaseRecords

# How many fields one HSCAN asks for: Redis answers a slice at a time, never the whole table.
SLICE = 1000
# A file goes out in pieces of about this size: each one is sent while the next is read.
CHUNK_BYTES = 256 * 1024

log = logging.getLogger(__name__)


class ReleaseGone(ManifestError):
    """A release's data was dropped (two commits came after it) while one of its files was read.

    Raised from inside a file's stream, after some of it was sent: the server then drops the
    connection, so a client sees a body cut short, never one mixing two releases.
    """


@dataclass(frozen=True)
class KeptRelease:
    """A release whose data is kept: its record, and whether it holds whole definitions."""

    release: Release
    # False for a release stored before whole definitions (format 1): it keeps projections.
    whole: bool


@dataclass(frozen=True)
class _Slice:
    """One HSCAN answer, with what came beside it in the same round trip."""

    cursor: int
    values: dict[bytes, bytes]
    # The first slice only: how many fields the table holds, and its dictionary.
    length: int = 0
    dictionary: bytes | None = None


class TableFiles(ReleaseRecords):
    """Bungie's JSON files of a kept release: one per table, and the aggregate of them all."""

    def kept_release(self, release_id: str) -> KeptRelease | None:
        """Return a kept release (the live one or the previous one), or None if it is not."""
        found, stored_format = self.redis.hmget(self.keys.release(release_id), "release", "format")
        if found is None:
            return None
        # Records written before whole definitions have no format: theirs is 1.
        whole = stored_format is not None and msgspec.json.decode(stored_format) == FORMAT
        return KeptRelease(Release.from_record(msgspec.json.decode(found)), whole)

    def table_file(self, release_id: str, lang: str, table: str) -> Iterator[bytes] | None:
        """Return one table of a kept release as Bungie's file, in chunks; None if not kept.

        The first slice is read now (so a release not kept is None, not an empty stream); the
        rest while the chunks are taken. Raises ReleaseGone from the stream if the release is
        dropped meanwhile.
        """
        first = self._slice(release_id, lang, table, 0)
        if first is None:
            return None
        return self._table_chunks(release_id, lang, table, first, opening=b"")

    def aggregate_file(
        self, release_id: str, lang: str, tables: Sequence[str]
    ) -> Iterator[bytes] | None:
        """Return every table in `tables` as one object keyed by table name, as Bungie's
        aggregate file; None if the release is not kept (see `table_file`)."""
        first = self._slice(release_id, lang, tables[0], 0) if tables else None
        if first is None:
            return None
        return self._aggregate_chunks(release_id, lang, tables, first)

    def _aggregate_chunks(
        self, release_id: str, lang: str, tables: Sequence[str], first: _Slice
    ) -> Iterator[bytes]:
        for position, table in enumerate(tables):
            opening = b'%s"%s":' % (b"," if position else b"{", table.encode())
            scanned = first if position == 0 else self._slice(release_id, lang, table, 0)
            if scanned is None:
                raise self._gone(release_id, lang, table)
            yield from self._table_chunks(release_id, lang, table, scanned, opening)
        yield b"}"

    def _table_chunks(
        self, release_id: str, lang: str, table: str, scanned: _Slice, opening: bytes
    ) -> Iterator[bytes]:
        """Yield `opening`, then the table's object `{"<hash>": definition, ...}` in chunks."""
        unpacker = Unpacker(scanned.dictionary)
        expected = scanned.length
        # Fields seen: HSCAN may name one twice; a field is a hash, a few dozen bytes each.
        seen: set[bytes] = set()
        damaged = 0
        out = bytearray(opening)
        out += b"{"
        separator = b""
        while True:
            for field, stored in scanned.values.items():
                if field in seen:
                    continue
                seen.add(field)
                definition = _unpacked(unpacker, stored)
                if definition is None:
                    damaged += 1
                    continue
                out += separator
                out += b'"'
                out += field
                out += b'":'
                out += definition
                separator = b","
                if len(out) >= CHUNK_BYTES:
                    yield bytes(out)
                    out.clear()
            if scanned.cursor == 0:
                break
            following = self._slice(release_id, lang, table, scanned.cursor)
            if following is None:
                raise self._gone(release_id, lang, table)
            scanned = following
        if len(seen) != expected:
            # Fewer than the table held when the stream began: it went and came back meanwhile.
            raise self._gone(release_id, lang, table)
        if damaged:
            log.warning(
                "%s (%s) of %s: %d stored damaged, left out", table, lang, release_id, damaged
            )
        out += b"}"
        yield bytes(out)

    def _slice(self, release_id: str, lang: str, table: str, cursor: int) -> _Slice | None:
        """Read one slice of a table, and whether its release is still kept; None if it is not.

        One pipeline: HSCAN, then EXISTS on the release's record. The record and every table of
        a release are unlinked in one transaction, so a record there after the HSCAN means the
        HSCAN read the release's own table. The first slice also reads the table's length and
        its dictionary. A table with no definition has no key: it reads as empty.
        """
        key = self.keys.table(release_id, lang, table)
        # A pipeline, not a MULTI: reads go on while Redis is full (it refuses those).
        pipe = self.redis.pipeline(transaction=False)
        pipe.hscan(key, cursor, count=SLICE)
        pipe.exists(self.keys.release(release_id))
        if cursor == 0:
            pipe.hlen(key)
            pipe.get(self.keys.dictionary(release_id, lang, table))
        (next_cursor, values), kept, *first = pipe.execute()
        if not kept:
            return None
        if cursor == 0:
            return _Slice(int(next_cursor), values, length=first[0], dictionary=first[1])
        return _Slice(int(next_cursor), values)

    def _gone(self, release_id: str, lang: str, table: str) -> ReleaseGone:
        log.warning("Release %s was dropped while %s (%s) was streamed", release_id, table, lang)
        return ReleaseGone(f"Release {release_id} was dropped while {table} ({lang}) was read")


def _unpacked(unpacker: Unpacker, stored: bytes) -> bytes | None:
    """Return a stored definition's JSON; None if it is damaged or not a JSON object.

    Such a row comes only from by-hand edits; it is left out so the file stays valid JSON. A
    look at its ends is enough, nothing is decoded.
    """
    try:
        definition = unpacker.unpack(stored)
    except zstandard.ZstdError:
        return None
    if definition.lstrip()[:1] != b"{" or definition.rstrip()[-1:] != b"}":
        return None
    return definition
