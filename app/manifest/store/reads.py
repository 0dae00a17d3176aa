"""Reading definitions of the live release, whole, while commits may land: lookups and reads beside
the live pointer, starting from the live release id this process last saw.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import TypeVar
from typing import cast

import msgspec
import zstandard

from app.manifest import packing
from app.manifest.errors import ManifestError
from app.manifest.live import UNKNOWN
from app.manifest.live import Unknown
from app.manifest.live import tracked_value
from app.manifest.packing import Unpacker
from app.manifest.replies import raw
from app.manifest.store.records import ReleaseRecords

# Asks lookup() for every definition of a table.
WHOLE_TABLE = None
# How many times a read starts again when commits keep landing while it runs.
READ_ATTEMPTS = 3
# How many fields a scan of a whole table asks for at a time: Redis never serves the whole
# table in one blocking reply.
SCAN_COUNT = 2000

_json_decode = msgspec.json.decode
log = logging.getLogger(__name__)
# What a lookup returns of each definition: its JSON (`lookup_raw`), or `Packed`.
Kept = TypeVar("Kept")

# prefix -> (release id, language, table) -> how that table's stored definitions are read back;
# a release's dictionaries never change once committed. Kept for the two newest releases seen.
_unpackers: dict[str, dict[tuple[str, str, str], Unpacker]] = {}
_unpackers_lock = threading.Lock()

# prefix -> the release this process last read as live. Reads start from it: a good guess (the
# pointer moves once a release) saves the round trip that reads the pointer; a stale one costs
# a second try. The transaction of each read says which it was.
_live_hints: dict[str, str] = {}


class LiveReads(ReleaseRecords):
    """Definitions of the live release by table and hash, never mixing two releases."""

    def lookup(
        self, wanted: Mapping[str, Iterable[int] | None], lang: str | None = None
    ) -> tuple[str | None, dict[str, dict[int, dict[str, Any] | None]]]:
        """Read definitions of several tables from the live release, atomically.

        `wanted` maps a table to the hashes to read, or to WHOLE_TABLE for all of a (small)
        table. Returns the release id read from and, per table, each hash's definition (None
        if absent). One round trip, once this process has seen the live release.
        """
        release_id, found = self.lookup_raw(wanted, lang)
        decoded = {
            table: {h: _definition(table, h, v) for h, v in values.items()}
            for table, values in found.items()
        }
        return release_id, decoded

    def lookup_raw(
        self, wanted: Mapping[str, Iterable[int] | None], lang: str | None = None
    ) -> tuple[str | None, dict[str, dict[int, bytes | None]]]:
        """Like `lookup`, with each definition as stored: JSON bytes, not decoded.

        What only passes the definitions on (the API's item pages) saves decoding and encoding
        them again; what reads a few fields decodes just those.
        """
        return self._lookup(wanted, lang, _unpacked)

    def lookup_packed(
        self, wanted: Mapping[str, Iterable[int] | None], lang: str | None = None
    ) -> tuple[str | None, dict[str, dict[int, Packed | None]]]:
        """Like `lookup_raw`, each definition as stored: its digest at hand without decompressing
        it (what answers a conditional GET), its JSON on demand. One round trip, as `lookup_raw`.
        """
        return self._lookup(wanted, lang, Packed.of)

    def _lookup(
        self,
        wanted: Mapping[str, Iterable[int] | None],
        lang: str | None,
        keep: Callable[[Unpacker, str, int, bytes | None], Kept | None],
    ) -> tuple[str | None, dict[str, dict[int, Kept | None]]]:
        """Read definitions of the live release; `keep` makes what is returned of each."""
        groups = [
            (table, None if hashes is None else [int(h) & 0xFFFFFFFF for h in hashes])
            for table, hashes in wanted.items()
        ]
        release_id, vouched = self.reader_live_id()
        for _attempt in range(READ_ATTEMPTS):
            if release_id is None:
                return None, {table: dict.fromkeys(hashes or ()) for table, hashes in groups}
            live, found = self._read_kept(release_id, groups, lang, vouched, keep)
            if found is not None:
                return release_id, found
            release_id = live
        raise ManifestError("The live release kept changing during the lookup")

    def definitions(
        self, table: str, hashes: Iterable[int], lang: str | None = None
    ) -> dict[int, dict[str, Any] | None]:
        """Return definitions of one table by hash (one HMGET on the live release)."""
        return self.lookup({table: hashes}, lang)[1][table]

    def definition(self, table: str, definition_hash: int) -> dict[str, Any] | None:
        """Return one definition of the live release, or None."""
        return self.definitions(table, [definition_hash])[definition_hash]

    def reader_live_id(self) -> tuple[str | None, bool]:
        """Return the live release id, and whether Redis vouches for it (see `live.py`).

        Not vouched for (a server that cannot track keys), it is the release this process last
        read as live here, else the pointer read now; `_read` then checks it with the data.
        """
        found = self._tracked_live_id()
        if found is not UNKNOWN:
            return cast("str | None", found), True
        return _live_hints.get(self.keys.prefix) or self.live_id(), False

    def fresh_live_id(self) -> str | None:
        """Return the live release id as Redis vouches for it (no round trip), else read from
        the pointer now: never a hint this process kept (what an ETag or "is live" rests on)."""
        found = self._tracked_live_id()
        return self.live_id() if found is UNKNOWN else cast("str | None", found)

    def _tracked_live_id(self) -> str | Unknown | None:
        """The live release id Redis vouches for, else UNKNOWN (see `live.py`)."""
        return tracked_value(self.redis, self.keys.current, self.settings.track_live)

    def read_beside_live(self, key: str) -> tuple[str | None, bytes | None]:
        """Return the live release id and the value at `key` (a string), in one round trip.

        For what is kept per release outside the release's keys (a player's resolved page):
        the id tells whether the value was made against the live release.
        """
        live = self._tracked_live_id()
        if live is not UNKNOWN:
            return cast("str | None", live), raw(self.redis.get(key))
        # A pipeline, not a MULTI: reads go on while Redis is full (it refuses those).
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.current)
        pipe.get(key)
        pointer, value = pipe.execute()
        return (pointer.decode() if pointer else None), value

    def _read(
        self,
        release_id: str,
        groups: Sequence[tuple[str, list[int] | None]],
        lang: str | None,
        vouched: bool,
    ) -> tuple[str | None, dict[str, dict[int, bytes | None]] | None]:
        """Read definitions of `release_id` if it is live, as JSON (see `_read_kept`)."""
        return self._read_kept(release_id, groups, lang, vouched, _unpacked)

    def _read_kept(
        self,
        release_id: str,
        groups: Sequence[tuple[str, list[int] | None]],
        lang: str | None,
        vouched: bool,
        keep: Callable[[Unpacker, str, int, bytes | None], Kept | None],
    ) -> tuple[str | None, dict[str, dict[int, Kept | None]] | None]:
        """Read definitions of `release_id` if it is live: one round trip, or none.

        A release's keys never change once committed, and are dropped only once two more
        releases have been committed after it. Vouched for by Redis, the release is read as it
        is: a commit landing meanwhile leaves it whole (and with nothing to read, nothing is
        sent). Otherwise one pipeline reads the live pointer, the tables, and the pointer
        again: when both reads name `release_id`, the tables read between them are that
        release's, whole (anything else takes three commits and a build within the pipeline's
        microseconds); if not, the answer is (live release, None) and the caller reads that
        one instead. Not a MULTI: Redis refuses a transaction while it is over maxmemory,
        reads included, and readers must go on reading then.
        """
        lang = lang or self.settings.languages[0]
        unpackers = _unpackers.setdefault(self.keys.prefix, {})
        chosen = {table: unpackers.get((release_id, lang, table)) for table, _ in groups}
        unknown = [table for table, unpacker in chosen.items() if unpacker is None]
        pipe = self.redis.pipeline(transaction=False)
        if not vouched:
            pipe.get(self.keys.current)
        for table in unknown:
            pipe.get(self.keys.dictionary(release_id, lang, table))
        for table, hashes in groups:
            key = self.keys.table(release_id, lang, table)
            if hashes is None:
                pipe.hgetall(key)
            elif hashes:
                pipe.hmget(key, hashes)
        if not vouched:
            pipe.get(self.keys.current)
        replies = pipe.execute() if pipe.command_stack else []
        if not vouched:
            before, *replies, after = replies
            live = after.decode() if after else None
            if before != after or live != release_id:
                return live, None
            _live_hints[self.keys.prefix] = release_id
        answers = iter(replies)
        for table in unknown:
            chosen[table] = _remember(unpackers, (release_id, lang, table), Unpacker(next(answers)))
        found: dict[str, dict[int, Kept | None]] = {}
        for table, hashes in groups:
            unpacker = chosen[table]
            assert unpacker is not None
            if hashes is None:
                stored = {int(k): v for k, v in next(answers).items()}
            else:
                values = next(answers) if hashes else []
                stored = dict(zip(hashes, values, strict=True))
            found[table] = {h: keep(unpacker, table, h, v) for h, v in stored.items()}
        return release_id, found

    def unpacker(self, release_id: str, lang: str, table: str) -> Unpacker:
        """Return how a table of a release is read back (its dictionary, fetched once)."""
        unpackers = _unpackers.setdefault(self.keys.prefix, {})
        found = unpackers.get((release_id, lang, table))
        if found is None:
            dictionary = raw(self.redis.get(self.keys.dictionary(release_id, lang, table)))
            found = _remember(unpackers, (release_id, lang, table), Unpacker(dictionary))
        return found


@dataclass(frozen=True, slots=True)
class Packed:
    """A definition as stored: its digest read without decompressing it, its JSON on demand."""

    table: str
    number: int
    stored: bytes
    unpacker: Unpacker

    @classmethod
    def of(cls, unpacker: Unpacker, table: str, number: int, stored: bytes | None) -> Packed | None:
        """Return what is stored of a definition, or None if nothing is."""
        return cls(table, number, stored, unpacker) if stored else None

    @property
    def digest(self) -> bytes:
        """Return the definition's digest (packing.digest: blind to `index`), as stored with it;
        computed for a value an older format stored as plain JSON."""
        if packing.is_packed(self.stored):
            return packing.stored_digest(self.stored)
        return packing.digest(self.stored)

    def json(self) -> bytes | None:
        """Return the definition's JSON; None if it is stored damaged (logged)."""
        return _unpacked(self.unpacker, self.table, self.number, self.stored)


def _remember(
    unpackers: dict[tuple[str, str, str], Unpacker], key: tuple[str, str, str], found: Unpacker
) -> Unpacker:
    """Keep `found` for its table, and the unpackers of the two newest releases seen only."""
    with _unpackers_lock:
        releases = list(dict.fromkeys(release for release, _, _ in unpackers))
        if key[0] not in releases and len(releases) >= 2:
            for stale in [k for k in unpackers if k[0] in releases[:-1]]:
                del unpackers[stale]
        unpackers[key] = found
    return found


def _unpacked(unpacker: Unpacker, table: str, number: int, stored: bytes | None) -> bytes | None:
    """Return a stored definition's JSON; a damaged one counts as absent (logged).

    Damaged: it cannot be decompressed, or it is not a JSON object (a row written by hand, or by
    an older version): readers that pass definitions on as they are never send it.
    """
    if not stored:
        return None
    try:
        found = unpacker.unpack(stored)
    except zstandard.ZstdError:
        log.warning("%s %d is stored damaged: it cannot be decompressed", table, number)
        return None
    if found.lstrip()[:1] != b"{" or found.rstrip()[-1:] != b"}":
        log.warning("%s %d is stored as something other than a JSON object", table, number)
        return None
    return found


def _definition(table: str, definition_hash: int, stored: bytes | None) -> dict[str, Any] | None:
    """Decode a stored definition; one that is not a JSON object counts as absent (logged).

    Such a row can only come from by-hand edits or an older version's ingest; like the search
    index, a reader leaves it out rather than fail the page.
    """
    if not stored:
        return None
    try:
        definition = _json_decode(stored)
    except msgspec.DecodeError:
        definition = None
    if not isinstance(definition, dict):
        log.warning("%s %d is stored as something other than a JSON object", table, definition_hash)
        return None
    return definition
