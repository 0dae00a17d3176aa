"""Turn a table (a streamed JSON object, or a table of the SQLite database) into whole entries.

Speed and flat memory together: the JSON stream is cut into slabs of whole entries, and msgspec
splits each slab into its entries' exact bytes without building Python objects for their
fields. Memory is bounded by the slab size, not the table size. A table with a key that is not a
definition's hash, or an entry that is not a JSON object, is refused (`TableInvalid`).
"""

from __future__ import annotations

import functools
import itertools
import re
import sqlite3
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from app.manifest.errors import TableInvalid
from app.manifest.packing import digest

SLAB_BYTES = 2 * 1024 * 1024
# One entry larger than this cannot be a manifest definition: refuse rather than buffer it.
MAX_ENTRY_BYTES = 64 * 1024 * 1024
SQLITE_BATCH = 2000
# SQLite asks whether to go on every this many steps of its virtual machine: often enough to
# stop soon after a deadline, seldom enough to cost nothing (docs/DECISIONS.md).
SQLITE_PROGRESS_STEPS = 10_000

# A key is a definition's hash: an unsigned 32-bit number (0 to 4294967295) in decimal, without
# sign, spaces or leading zeros. Of ten digits (most hashes, so tried first), each branch is
# 4294967295 up to some digit, then a smaller digit there; up to nine digits any number is one.
_HASH = re.compile(
    rb"[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}"
    rb"|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]"
    rb"|429496729[0-5]|[1-9][0-9]{0,8}|0"
)
# Bungie's SQLite ids are the same hashes as signed 32-bit integers.
_SIGNED_MIN, _SIGNED_MAX = -(2**31), 2**31 - 1

# Between two top-level entries of `{"123":{...},"456":{...}}` stands `},"456":{`. The same bytes
# can stand between nested objects keyed by hash (stats), never inside a string (a quote there is
# escaped). A cut at a nested boundary leaves braces open, so splitting the slab fails: the
# decoder itself proves each cut right.
_BOUNDARY = re.compile(rb'\}\s*(,)\s*"(\d+)"\s*:\s*\{')
_BOUNDARY_WINDOW = 512 * 1024
_MAX_CUT_ATTEMPTS = 8

# A slab split into its entries: each key with its value's exact JSON, not decoded.
_split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
# A SQLite row's definition, checked to be JSON, not decoded.
_check_json = msgspec.json.Decoder(msgspec.Raw).decode


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries side by side: keys, definitions' exact JSON and digests, each a list in one order.

    Columns rather than a tuple per entry: a batch's writes are built by slicing, with no loop
    in Python per entry. Digests are worked out here, in the thread that reads the table, while
    the writer thread compresses and stores the batch before (packing.py).
    """

    keys: list[bytes]
    data: list[bytes]
    digests: list[bytes]

    @classmethod
    def of(cls, keys: list[bytes], data: list[bytes], *, blind_to_index: bool = True) -> Batch:
        """Return the batch of these keys and definitions, with their digests (packing.py)."""
        if blind_to_index:
            return cls(keys, data, list(map(digest, data)))
        return cls(keys, data, [digest(d, blind_to_index=False) for d in data])

    def __len__(self) -> int:
        return len(self.keys)

    def pairs(self, values: list[bytes], start: int, stop: int) -> list[bytes]:
        """Return `key, value, key, value, ...` of entries start..stop: HSET's arguments."""
        keys = self.keys[start:stop]
        flat: list[bytes] = [b""] * (2 * len(keys))
        flat[0::2] = keys
        flat[1::2] = values[start:stop]
        return flat


def is_hash(key: bytes) -> bool:
    """Say whether `key` is a definition's hash: an unsigned 32-bit number in plain decimal."""
    return _HASH.fullmatch(key) is not None


def split_slab(slab: bytes | memoryview, *, blind_to_index: bool = True) -> Batch:
    """Split a slab (a JSON object keyed by hash) into entries; refuse a bad key or entry."""
    entries = _split(slab)
    keys = list(map(str.encode, entries))
    # Copied out of the slab: the buffer it was cut from is reused as soon as this returns.
    data = list(map(bytes, entries.values()))
    # Checked in C (no Python loop per entry); only a bad slab takes the long way, to say why.
    if not all(map(_HASH.fullmatch, keys)):
        bad = next(key for key in keys if not _HASH.fullmatch(key))
        raise TableInvalid(f"Table has a key that is not a definition hash: {_shown(bad)}")
    if not all(map(_is_object, data)):
        key = next(k for k, value in zip(keys, data, strict=True) if not _is_object(value))
        raise TableInvalid(f"Table's entry {key.decode()} is not a JSON object")
    return Batch.of(keys, data, blind_to_index=blind_to_index)


def _is_object(value: bytes) -> bool:
    return value[:1] == b"{"


def _shown(key: bytes) -> str:
    """Return a key as an error message quotes it: short, and never mistaken for text around."""
    return repr(key[:40].decode(errors="replace")) + ("..." if len(key) > 40 else "")


def split_rows(rows: Iterable[tuple[object, bytes | str]], *, blind_to_index: bool = True) -> Batch:
    """Return the entries of rows of the SQLite database (signed 32-bit id, JSON text)."""
    keys, data = [], []
    for row_id, definition in rows:
        if type(row_id) is not int or not _SIGNED_MIN <= row_id <= _SIGNED_MAX:
            raise TableInvalid(f"Table has an id that is not a definition hash: {row_id!r:.40}")
        value = definition.encode() if isinstance(definition, str) else bytes(definition)
        _check_json(value)
        if not _is_object(value.lstrip()):
            raise TableInvalid(f"Table's entry {row_id} is not a JSON object")
        keys.append(b"%d" % (row_id & 0xFFFFFFFF))
        data.append(value)
    return Batch.of(keys, data, blind_to_index=blind_to_index)


def iter_json_table(
    chunks: Iterable[bytes], slab_bytes: int = SLAB_BYTES, *, blind_to_index: bool = True
) -> Iterator[Batch]:
    """Yield the entries of a streamed JSON table, one slab at a time.

    Digests ignore each definition's top-level `index` unless not `blind_to_index`.
    """
    split = functools.partial(split_slab, blind_to_index=blind_to_index)
    buf = bytearray()
    started = False
    cut_at = slab_bytes  # Try a cut once the buffer holds this much.
    try:
        for chunk in chunks:
            buf += chunk
            if not started:
                started = _check_start(buf)
            while started and len(buf) >= cut_at:
                slab = _cut_slab(buf, split, whole=cut_at > slab_bytes)
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
        yield split(bytes(buf))
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


def _cut_slab(buf: bytearray, split: Callable[[memoryview], Batch], whole: bool) -> Batch | None:
    """Decode and remove the whole entries at the front of `buf`; None if none is whole yet."""
    start = 0 if whole else max(0, len(buf) - _BOUNDARY_WINDOW)
    candidates = list(_BOUNDARY.finditer(buf, start))
    candidates.reverse()
    for match in itertools.islice(_likely_first(buf, candidates), _MAX_CUT_ATTEMPTS):
        comma = match.start(1)
        buf[comma] = ord("}")
        try:
            # Split in place; every entry is copied out, so nothing refers to `buf` after.
            with memoryview(buf) as view:
                entries = split(view[: comma + 1])
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
    database: str,
    table: str,
    batch: int = SQLITE_BATCH,
    *,
    deadline: float | None = None,
    blind_to_index: bool = True,
) -> Iterator[Batch]:
    """Yield the entries of one table of a manifest SQLite database, a batch at a time.

    The database is the sender's: only a plain table is read, and with a `deadline`, for no
    longer than that many seconds from the first batch asked for to the last.
    """
    return _sqlite_rows(database, table, batch, deadline, blind_to_index)


def _sqlite_rows(
    database: str, table: str, batch: int, deadline: float | None, blind_to_index: bool
) -> Iterator[Batch]:
    connection, ends = _open_sqlite(database, deadline)
    try:
        _check_plain_table(connection, table)
        cursor = connection.execute(f'SELECT id, json FROM "{table}"')  # noqa: S608 - checked
        while rows := cursor.fetchmany(batch):
            yield split_rows(rows, blind_to_index=blind_to_index)
    except sqlite3.DatabaseError as exc:
        if time.monotonic() > ends:
            raise TableInvalid(
                f"{table} took over {deadline:.0f}s to read from the SQLite manifest "
                "(MANIFEST_DOWNLOAD_DEADLINE)"
            ) from None
        raise TableInvalid(f"{table} of the SQLite manifest is unreadable: {exc}") from None
    except (msgspec.DecodeError, TypeError) as exc:
        raise TableInvalid(f"{table} has a definition that does not parse: {exc}") from None
    finally:
        connection.close()


def count_sqlite_rows(database: str, table: str, *, deadline: float | None = None) -> int | None:
    """Return how many rows a table of the SQLite database has, or None if it cannot tell."""
    connection, _ = _open_sqlite(database, deadline)
    try:
        _check_plain_table(connection, table)
        return connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # noqa: S608
    except (sqlite3.DatabaseError, TableInvalid):
        return None
    finally:
        connection.close()


def _open_sqlite(database: str, deadline: float | None) -> tuple[sqlite3.Connection, float]:
    """Open a SQLite file read-only and distrustful; return it and when its deadline is."""
    ends = time.monotonic() + deadline if deadline is not None else float("inf")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    # Functions in the file's own schema (views, triggers, defaults) run only if harmless...
    connection.execute("PRAGMA trusted_schema = OFF")
    # ... no value grows past what a definition may weigh ...
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_ENTRY_BYTES)
    # ... and a statement still running at the deadline is interrupted (OperationalError).
    if deadline is not None:
        connection.set_progress_handler(lambda: time.monotonic() > ends, SQLITE_PROGRESS_STEPS)
    return connection, ends


def _check_plain_table(connection: sqlite3.Connection, table: str) -> None:
    """Refuse anything but a stored table with stored `id` and `json` columns.

    A view, a virtual table or a computed column runs the sender's code at each read: a
    view over an endless recursive query would hold the sync until its hard time limit.
    """
    if not table.isidentifier():
        raise TableInvalid(f"Refusing table name {table!r}")
    found = connection.execute(
        "SELECT type, sql FROM sqlite_master WHERE name = ? COLLATE NOCASE"
        " AND type IN ('table', 'view')",
        (table,),
    ).fetchone()
    if found is None:
        raise TableInvalid(f"The SQLite manifest has no table {table}")
    kind, sql = found
    if kind != "table":
        raise TableInvalid(f"{table} in the SQLite manifest is a {kind}, not a table")
    # table_xinfo's last field, `hidden`, is 0 for a column stored as it is.
    columns = {
        column[1].lower(): column[-1]
        for column in connection.execute(f'PRAGMA table_xinfo("{table}")')
    }
    virtual = str(sql or "").lstrip().upper().startswith("CREATE VIRTUAL")
    if virtual or columns.get("id") != 0 or columns.get("json") != 0:
        raise TableInvalid(f"{table} in the SQLite manifest is not a plain table (id, json)")
