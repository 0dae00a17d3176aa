"""Turn a table (a streamed JSON object, or a table of the SQLite database) into projected entries.

Speed and flat memory together: the JSON stream is cut into slabs of whole entries, and each
slab is decoded by msgspec into structs holding only the projected fields (the rest is skipped
without building Python objects). Memory is bounded by the slab size, not the table size.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import sqlite3
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from types import GenericAlias
from typing import Any

import msgspec

from app.manifest.errors import TableInvalid

# An entry as stored: (decimal hash, projected JSON, digest of the projected JSON).
Entry = tuple[bytes, bytes, bytes]

SLAB_BYTES = 2 * 1024 * 1024
# One entry larger than this cannot be a manifest definition: refuse rather than buffer it.
MAX_ENTRY_BYTES = 64 * 1024 * 1024
SQLITE_BATCH = 2000

# Between two top-level entries of `{"123":{...},"456":{...}}` stands `},"456":{`. The same bytes
# can stand between nested objects keyed by hash (stats), never inside a string (a quote there is
# escaped). A cut at a nested boundary leaves braces open, so decoding the slab fails: the
# decoder itself proves each cut right.
_BOUNDARY = re.compile(rb'\}\s*(,)\s*"(\d+)"\s*:\s*\{')
_BOUNDARY_WINDOW = 512 * 1024
_MAX_CUT_ATTEMPTS = 8


@dataclass(frozen=True)
class Projection:
    """The fields of a table's definitions that the cache keeps, as a msgspec type to decode."""

    paths: tuple[str, ...]
    value_type: Any

    @classmethod
    def of(cls, paths: Iterable[str]) -> Projection:
        """Build the projection of dotted field paths; "*" keeps whole definitions."""
        paths = tuple(paths)
        if "*" in paths:
            return cls(paths, msgspec.Raw)
        tree: dict[str, Any] = {}
        for path in paths:
            node = tree
            parts = path.split(".")
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if child is None:  # "a" and "a.b" both asked for: "a" wins, whole.
                    break
                node = child
            else:
                node[parts[-1]] = None
        return cls(paths, _struct_for(tree, "Projected"))


def _struct_for(tree: dict[str, Any], name: str) -> Any:
    fields = []
    rename = {}
    for index, (key, child) in enumerate(tree.items()):
        attr = f"f{index}"
        rename[attr] = key
        if child is None:
            # Raw: the field's JSON text as it came, whatever its type, re-emitted unchanged.
            kind: Any = msgspec.Raw | msgspec.UnsetType
        else:
            kind = _struct_for(child, f"{name}_{key}") | None | msgspec.UnsetType
        fields.append((attr, kind, msgspec.UNSET))
    # gc=False: a projection holds only raw JSON and other projections (frozen: nothing else
    # can be put in), so it can never be in a reference cycle; not tracking the structs
    # decoded per slab spares the collector most of its passes (docs/DECISIONS.md).
    return msgspec.defstruct(name, fields, rename=rename, omit_defaults=True, frozen=True, gc=False)


class EntryCodec:
    """Decode definitions into a projection and encode them back, with a digest for diffs."""

    def __init__(self, projection: Projection) -> None:
        self._slab = msgspec.json.Decoder(GenericAlias(dict, (str, projection.value_type)))
        self._one = msgspec.json.Decoder(projection.value_type)
        self._encode = msgspec.json.Encoder().encode

    def entries(self, slab: bytes | memoryview) -> Batch:
        """Decode a slab (a JSON object keyed by hash) into stored entries."""
        decoded = self._slab.decode(slab)
        return Batch.of(list(map(str.encode, decoded)), list(map(self._encode, decoded.values())))

    def rows(self, rows: Iterable[tuple[int, bytes | str]]) -> Batch:
        """Project definitions keyed by hash, e.g. rows of the SQLite database."""
        keys, data = [], []
        for key, definition in rows:
            keys.append(str(key).encode())
            data.append(self._encode(self._one.decode(definition)))
        return Batch.of(keys, data)


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries side by side: their keys, stored JSON and digests, each a list in one order.

    Columns rather than a tuple per entry: a batch's writes are built by slicing, with no loop
    in Python per entry, and no object the garbage collector tracks is made per entry.
    """

    keys: list[bytes]
    data: list[bytes]
    digests: list[bytes]

    @classmethod
    def of(cls, keys: list[bytes], data: list[bytes]) -> Batch:
        """Return the batch of these keys and stored definitions, with their digests.

        A definition's digest (8 bytes of BLAKE2b of its stored JSON) is what diffs compare;
        this is the one place it is worked out.
        """
        blake2b = hashlib.blake2b
        return cls(keys, data, [blake2b(d, digest_size=8).digest() for d in data])

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Entry]:
        return zip(self.keys, self.data, self.digests, strict=True)

    def pairs(self, values: list[bytes], start: int, stop: int) -> list[bytes]:
        """Return `key, value, key, value, ...` of entries start..stop: HSET's arguments."""
        keys = self.keys[start:stop]
        flat: list[bytes] = [b""] * (2 * len(keys))
        flat[0::2] = keys
        flat[1::2] = values[start:stop]
        return flat


def iter_json_table(
    chunks: Iterable[bytes], codec: EntryCodec, slab_bytes: int = SLAB_BYTES
) -> Iterator[Batch]:
    """Yield the entries of a streamed JSON table, one slab at a time."""
    buf = bytearray()
    started = False
    cut_at = slab_bytes  # Try a cut once the buffer holds this much.
    try:
        for chunk in chunks:
            buf += chunk
            if not started:
                started = _check_start(buf)
            while started and len(buf) >= cut_at:
                slab = _cut_slab(buf, codec, whole=cut_at > slab_bytes)
                if slab is None:
                    if len(buf) > MAX_ENTRY_BYTES:
                        raise TableInvalid("Table has an entry over 64 MiB or is not a table")
                    # No whole entry yet (a huge one): look again once a slab more has come.
                    cut_at = len(buf) + slab_bytes
                    break
                cut_at = slab_bytes
                yield slab
        if not started and not _check_start(buf):
            raise TableInvalid("Table is empty")
        yield codec.entries(bytes(buf))
    except msgspec.DecodeError as exc:
        raise TableInvalid(f"Table does not parse: {exc}") from None
    except msgspec.ValidationError as exc:
        raise TableInvalid(f"Table has an unexpected shape: {exc}") from None


def _check_start(buf: bytearray) -> bool:
    stripped = buf.lstrip()
    if not stripped:
        return False
    if stripped[:1] != b"{":
        raise TableInvalid("Table is not a JSON object keyed by hash")
    return True


def _cut_slab(buf: bytearray, codec: EntryCodec, whole: bool) -> Batch | None:
    """Decode and remove the whole entries at the front of `buf`; None if none is whole yet."""
    start = 0 if whole else max(0, len(buf) - _BOUNDARY_WINDOW)
    candidates = list(_BOUNDARY.finditer(buf, start))
    candidates.reverse()
    for match in itertools.islice(_likely_first(buf, candidates), _MAX_CUT_ATTEMPTS):
        comma = match.start(1)
        buf[comma] = ord("}")
        try:
            # Decoded in place; every value is re-encoded, so nothing refers to `buf` after.
            with memoryview(buf) as view:
                entries = codec.entries(view[: comma + 1])
        except msgspec.DecodeError:
            buf[comma] = ord(",")
            continue
        buf[comma] = ord("{")
        del buf[:comma]
        return entries
    return None


def _likely_first(buf: bytearray, candidates: list[re.Match[bytes]]) -> Iterator[re.Match[bytes]]:
    # Top-level entries carry their own key as "hash"; objects nested in them and keyed by a
    # stat or plug hash do not. Trying those first saves decodes that would fail.
    unlikely = []
    for match in candidates:
        if _has_own_hash(buf, match.end(), match.group(2)):
            yield match
        else:
            unlikely.append(match)
    yield from unlikely


def _has_own_hash(buf: bytearray, start: int, key: bytes) -> bool:
    found = re.compile(rb'"hash"\s*:\s*' + key + rb"(?!\d)").search(buf, start)
    return found is not None


def iter_sqlite_table(
    database: str, table: str, codec: EntryCodec, batch: int = SQLITE_BATCH
) -> Iterator[Batch]:
    """Yield the entries of one table of a manifest SQLite database, a batch at a time."""
    if not table.isidentifier():
        raise TableInvalid(f"Refusing table name {table!r}")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        try:
            cursor = connection.execute(f'SELECT id, json FROM "{table}"')  # noqa: S608 - checked above
        except sqlite3.DatabaseError as exc:
            raise TableInvalid(
                f"The SQLite manifest has no readable table {table}: {exc}"
            ) from None
        while rows := cursor.fetchmany(batch):
            try:
                # Bungie stores the hash as a signed 32-bit integer.
                yield codec.rows((row_id & 0xFFFFFFFF, data) for row_id, data in rows)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise TableInvalid(f"{table} has a definition that does not parse: {exc}") from None
    finally:
        connection.close()


def count_sqlite_rows(database: str, table: str) -> int | None:
    """Return how many rows a table of the SQLite database has, or None if it cannot tell."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # noqa: S608
    except sqlite3.DatabaseError:
        return None
    finally:
        connection.close()
