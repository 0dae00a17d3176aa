"""The Redis layout of the cache: staging, commit, reads, search, history and garbage collection.

Each release lives under its own keys; `<prefix>:current` names the live one. A commit is one
MULTI/EXEC that flips the pointer and records the release, so readers see all of the old
release or all of the new one. The previous release is kept (rollback, readers mid-request).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import sys
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from functools import cached_property
from typing import Any
from typing import NamedTuple
from typing import cast

import msgspec
import redis
from redis.exceptions import LockError
from redis.exceptions import WatchError

from app.manifest.diff import TableDiff
from app.manifest.errors import ManifestError
from app.manifest.ingest import Batch
from app.manifest.live import UNKNOWN
from app.manifest.live import Unknown
from app.manifest.live import live_pointer
from app.manifest.release import Release
from app.manifest.settings import ManifestSettings

log = logging.getLogger(__name__)

ITEM_TABLE = "DestinyInventoryItemDefinition"
WRITE_BATCH = 500
CHECKS_KEPT = 50

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode

# A check's one round trip: the live release id, the last check and a release's counts; and,
# when that release is live and a record is given, the record as the new last check.
# KEYS: current, last_check, checks; ARGV: release id, its record key, check record, kept.
_GLANCE = """
local live = redis.call('GET', KEYS[1])
local before = redis.call('GET', KEYS[2])
local counts = redis.call('HGET', ARGV[2], 'counts')
if live == ARGV[1] and ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
end
return {live, before, counts}
"""
# Asks lookup() for every definition of a table.
WHOLE_TABLE = None
# How many times a read starts again when commits keep landing while it runs.
READ_ATTEMPTS = 3


class LockLost(ManifestError):
    """The sync lock expired or was taken over while this run worked; its work is dropped."""

    transient = True
    retry_after = 5.0


class SyncLock:
    """One sync at a time: a Redis lock whose value names the run holding it."""

    def __init__(self, client: redis.Redis, key: str, run_id: str, timeout: float) -> None:
        self._redis = client
        self.key = key
        self.run_id = run_id
        self.timeout = timeout
        self._lock = client.lock(key, timeout=timeout, blocking=False, thread_local=False)
        self._extended_at = 0.0

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; return whether this run holds it now."""
        taken = bool(self._lock.acquire(token=self.run_id))
        self._extended_at = time.monotonic()
        return taken

    def holder(self) -> str | None:
        """Return the id of the run holding the lock, if any."""
        value = self._redis.get(self.key)
        return value.decode() if value else None

    def keep_alive(self) -> None:
        """Push the expiry back while work goes on; raise LockLost if another run took over."""
        if time.monotonic() - self._extended_at < self.timeout / 3:
            return
        try:
            self._lock.reacquire()
        except LockError:
            raise LockLost("The sync lock expired while this run was working") from None
        self._extended_at = time.monotonic()

    def release(self) -> None:
        """Let go of the lock if this run still holds it.

        Never raises: a lock that cannot be released (Redis blinked) expires by itself, and
        the run it guarded is over either way.
        """
        try:
            self._lock.release()
        except LockError:
            pass
        except redis.RedisError as exc:
            log.warning(
                "Could not release the sync lock (%s); it expires in %.0fs", exc, self.timeout
            )


@dataclass
class ReleaseInfo:
    """A committed release with what the app knows about it."""

    release: Release
    counts: dict[str, dict[str, int]]
    synced_at: float
    duration: float
    diffs: list[TableDiff] = field(default_factory=list)
    change: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    trigger: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.release.id

    def to_record(self) -> dict[str, Any]:
        """Return plain data for JSON (pages, API, history)."""
        return {
            **self.release.to_record(),
            "counts": self.counts,
            "synced_at": self.synced_at,
            "duration": self.duration,
            "diff": [d.to_record() for d in self.diffs],
            "change": self.change,
            "base": self.base,
            "trigger": self.trigger,
        }


@dataclass(frozen=True)
class SearchPage:
    """One page of item search results."""

    release_id: str | None
    total: int
    page: int
    per_page: int
    # The page's items as stored (JSON), in order; `items` decodes them when first asked.
    raw: list[bytes]
    # Or, for a search without definitions, what a list of results shows of each.
    rows: list[ShownItem] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @cached_property
    def items(self) -> list[dict[str, Any]]:
        return [_json_decode(value) for value in self.raw]


class ShownItem(NamedTuple):
    """What a list of items shows of one; the search index keeps it for every item.

    (Read from a stored definition instead, any field may be missing: hence the Nones.)
    """

    hash: int | None
    name: str
    icon: str | None
    item_type: int | None
    type_name: str | None
    tier_type: int | None
    tier_name: str | None
    class_type: int | None


class _Inventory(msgspec.Struct):
    tierType: int = 0
    tierTypeName: str | None = None


class _Display(msgspec.Struct):
    name: str = ""
    icon: str | None = None


class _SearchFields(msgspec.Struct):
    displayProperties: _Display | None = None
    itemTypeDisplayName: str | None = None
    itemType: int = 0
    classType: int = 3
    inventory: _Inventory | None = None


_decode_search_fields = msgspec.json.Decoder(_SearchFields).decode
_ODD_ITEM = _SearchFields(itemType=-1, classType=-1, inventory=_Inventory(tierType=-1))
_NO_DISPLAY = _Display()
_NO_INVENTORY = _Inventory()
SCAN_COUNT = 2000
# Names are indexed by their substrings of this length (trigrams).
GRAM = 3
_NO_ROWS: array[int] = array("I")
# (casefolded name, hash, itemType, tierType, classType, name, icon, type name, tier name)
SearchRow = tuple[str, int, int, int, int, str, str | None, str | None, str | None]


def search_row(item_hash: bytes, data: bytes) -> SearchRow:
    """Return what search filters on, and what a list of results shows, of one stored item.

    Stored fields keep whatever type Bungie gave them: an item whose fields are not of the
    usual types is indexed by hash alone (listed, not found by name or filters).
    """
    try:
        item = _decode_search_fields(data)
    except msgspec.ValidationError:
        item = _ODD_ITEM
    display = item.displayProperties or _NO_DISPLAY
    inventory = item.inventory or _NO_INVENTORY
    # Type and tier names repeat across thousands of items: one string each.
    type_name = item.itemTypeDisplayName and sys.intern(item.itemTypeDisplayName)
    tier_name = inventory.tierTypeName and sys.intern(inventory.tierTypeName)
    filtered = (int(item_hash), item.itemType, inventory.tierType, item.classType)
    return (display.name.casefold(), *filtered, display.name, display.icon, type_name, tier_name)


class SearchIndex:
    """The items of one release sorted by name, searchable by substring without a full scan.

    Each row's casefolded name is cut into trigrams; `postings` lists, per trigram, the rows
    whose name holds it, in name order. A needle of three characters or more is looked for
    only in the rows of its rarest trigram, so a search costs what it finds, not what the
    release holds. Shorter needles scan all names at once: they are joined into one string,
    `str.find` finds the needle in all of them and `bisect` on the names' offsets says whose
    name it is. The filters then only look at the matches.
    """

    def __init__(self, rows: list[SearchRow]) -> None:
        self.hashes = [row[1] for row in rows]
        self.types = [row[2] for row in rows]
        self.tiers = [row[3] for row in rows]
        self.classes = [row[4] for row in rows]
        # What a result row shows, one list a field (a tuple a row: 1.7 MB more at 40,000).
        self.shown_names = [row[5] for row in rows]
        self.icons = [row[6] for row in rows]
        self.type_names = [row[7] for row in rows]
        self.tier_names = [row[8] for row in rows]
        # A newline separates the names, so no match can span two of them.
        self.names = [row[0].replace("\n", " ") for row in rows]
        self.starts = list(itertools.accumulate((len(n) + 1 for n in self.names[:-1]), initial=0))
        self.text = "\n".join(self.names)
        postings: defaultdict[str, list[int]] = defaultdict(list)
        for row, name in enumerate(self.names):
            for gram in {name[i : i + GRAM] for i in range(len(name) - GRAM + 1)}:
                postings[gram].append(row)
        # Kept as arrays of 4-byte row numbers: a quarter of a list's memory, as fast to read.
        self.postings = {gram: array("I", found) for gram, found in postings.items()}

    def matches(self, needle: str) -> Sequence[int]:
        """Return the rows whose name contains `needle` (already casefolded), in name order."""
        if not needle:
            return range(len(self.hashes))
        if "\n" in needle:
            return ()
        if len(needle) < GRAM:
            return self._scan(needle)
        grams = {needle[i : i + GRAM] for i in range(len(needle) - GRAM + 1)}
        rarest = min((self.postings.get(gram, _NO_ROWS) for gram in grams), key=len)
        if len(needle) == GRAM:
            return rarest
        names = self.names
        return [row for row in rarest if needle in names[row]]

    def _scan(self, needle: str) -> list[int]:
        found = []
        find, starts, count = self.text.find, self.starts, len(self.starts)
        at = find(needle)
        while at != -1:
            row = bisect.bisect_right(starts, at) - 1
            found.append(row)
            at = find(needle, starts[row + 1]) if row + 1 < count else -1
        return found

    def shown(self, row: int) -> ShownItem:
        """Return what a list of results shows of the item in `row`."""
        return ShownItem(
            self.hashes[row],
            self.shown_names[row],
            self.icons[row],
            self.types[row],
            self.type_names[row],
            self.tiers[row],
            self.tier_names[row],
            self.classes[row],
        )

    def filter(
        self,
        rows: Sequence[int],
        item_type: int | None,
        tier: int | None,
        class_type: int | None,
    ) -> Sequence[int]:
        """Keep the rows that match every filter given."""
        for values, wanted in (
            (self.types, item_type),
            (self.tiers, tier),
            (self.classes, class_type),
        ):
            if wanted is not None:
                rows = [row for row in rows if values[row] == wanted]
        return rows


# (prefix, release id, language) -> its index; a release never changes once committed.
_search_indexes: dict[tuple[str, str, str], SearchIndex] = {}
_search_index_lock = threading.Lock()
# prefix -> the release this process last read as live. Reads start from it: a good guess (the
# pointer moves once a release) saves the round trip that reads the pointer; a stale one costs
# a second try. The transaction of each read says which it was.
_live_hints: dict[str, str] = {}


class ManifestStore:
    """The manifest cache in Redis: write a release beside the live one, flip, read, search."""

    def __init__(self, client: redis.Redis, settings: ManifestSettings) -> None:
        self.redis = client
        self.settings = settings
        prefix = settings.key_prefix
        self.prefix = prefix
        self.current_key = f"{prefix}:current"
        self.releases_key = f"{prefix}:releases"
        self.staging_key = f"{prefix}:staging"
        self.history_key = f"{prefix}:history"
        self.checks_key = f"{prefix}:checks"
        self.last_check_key = f"{prefix}:last_check"
        self.lock_key = f"{prefix}:lock"

    # -- key names -------------------------------------------------------------------------

    def table_key(self, release_id: str, lang: str, table: str) -> str:
        return f"{self.prefix}:{release_id}:{lang}:{table}"

    def sums_key(self, release_id: str, lang: str, table: str) -> str:
        return f"{self.table_key(release_id, lang, table)}:sums"

    def release_key(self, release_id: str) -> str:
        return f"{self.prefix}:release:{release_id}"

    def data_keys(self, release: Release) -> list[str]:
        """Return every key holding a release's data."""
        return self._keys(release, self.table_key) + self.digest_keys(release)

    def digest_keys(self, release: Release) -> list[str]:
        """Return the keys of a release's digests (what a build compares with, while live)."""
        return self._keys(release, self.sums_key)

    @staticmethod
    def _keys(release: Release, key: Callable[[str, str, str], str]) -> list[str]:
        return [
            key(release.id, lang, table) for lang in release.languages for table in release.tables
        ]

    # -- the lock --------------------------------------------------------------------------

    def lock(self, run_id: str) -> SyncLock:
        """Return the sync lock as run `run_id` would hold it."""
        return SyncLock(self.redis, self.lock_key, run_id, self.settings.lock_timeout)

    # -- reading ---------------------------------------------------------------------------

    def live_id(self) -> str | None:
        """Return the id of the live release, if there is one."""
        value = self.redis.get(self.current_key)
        return value.decode() if value else None

    def glance(
        self, release_id: str, *, record_if_live: Mapping[str, Any] | None = None
    ) -> tuple[str | None, dict[str, Any] | None, dict[str, dict[str, int]] | None]:
        """Return the live release id, the last check, and `release_id`'s counts if it is kept.

        One round trip: what a check needs to tell "unchanged" without taking the lock. With
        `record_if_live`, that check record is also recorded (as `record_check` does) when
        `release_id` is the live release, in the same round trip; the last check returned is
        then the one from before.
        """
        record = _json_encode(record_if_live) if record_if_live is not None else b""
        keys = [self.current_key, self.last_check_key, self.checks_key]
        # Registered here, not in __init__: a store is made per request, a check once a sync.
        glance = self.redis.register_script(_GLANCE)
        live, check, counts = glance(
            keys=keys,
            args=[release_id, self.release_key(release_id), record, CHECKS_KEPT],
        )
        return (
            live.decode() if live else None,
            _json_decode(check) if check else None,
            _json_decode(counts) if counts else None,
        )

    def release_info(self, release_id: str) -> ReleaseInfo | None:
        """Return what is known of a kept release (the live one or the previous one)."""
        fields = self.redis.hgetall(self.release_key(release_id))
        if not fields:
            return None
        record = {key.decode(): _json_decode(value) for key, value in fields.items()}
        return ReleaseInfo(
            release=Release.from_record(record["release"]),
            counts=record["counts"],
            synced_at=record["synced_at"],
            duration=record["duration"],
            diffs=[TableDiff.from_record(d) for d in record["diff"]],
            change=record["change"],
            base=record["base"],
            trigger=record["trigger"],
        )

    def live_release(self) -> ReleaseInfo | None:
        """Return the live release, if there is one."""
        live = self.live_id()
        return self.release_info(live) if live else None

    def kept_ids(self) -> list[str]:
        """Return the ids of releases whose data is kept, newest commit first."""
        return [m.decode() for m in self.redis.zrevrange(self.releases_key, 0, -1)]

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
            table: {h: _json_decode(v) if v else None for h, v in values.items()}
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
        groups = [
            (table, None if hashes is None else [int(h) & 0xFFFFFFFF for h in hashes])
            for table, hashes in wanted.items()
        ]
        release_id, vouched = self.reader_live_id()
        for _attempt in range(READ_ATTEMPTS):
            if release_id is None:
                return None, {table: dict.fromkeys(hashes or ()) for table, hashes in groups}
            live, found = self._read(release_id, groups, lang, vouched)
            if found is not None:
                return release_id, found
            release_id = live
        raise ManifestError("The live release kept changing during the lookup")

    def reader_live_id(self) -> tuple[str | None, bool]:
        """Return the live release id, and whether Redis vouches for it (see `live.py`).

        Not vouched for (a server that cannot track keys), it is the release this process last
        read as live here, else the pointer read now; `_read` then checks it with the data.
        """
        found = self._tracked_live_id()
        if found is not UNKNOWN:
            return cast("str | None", found), True
        return _live_hints.get(self.prefix) or self.live_id(), False

    def _tracked_live_id(self) -> str | Unknown | None:
        """The live release id Redis vouches for, else UNKNOWN (see `live.py`)."""
        if not self.settings.track_live:
            return UNKNOWN
        return live_pointer(self.redis, self.current_key).get()

    def read_beside_live(self, key: str) -> tuple[str | None, bytes | None]:
        """Return the live release id and the value at `key` (a string), in one round trip.

        For what is kept per release outside the release's keys (a player's resolved page):
        the id tells whether the value was made against the live release.
        """
        live = self._tracked_live_id()
        if live is not UNKNOWN:
            return cast("str | None", live), self.redis.get(key)
        # A pipeline, not a MULTI: reads go on while Redis is full (it refuses those).
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.current_key)
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
        pipe = self.redis.pipeline(transaction=False)
        if not vouched:
            pipe.get(self.current_key)
        for table, hashes in groups:
            key = self.table_key(release_id, lang, table)
            if hashes is None:
                pipe.hgetall(key)
            elif hashes:
                pipe.hmget(key, hashes)
        if not vouched:
            pipe.get(self.current_key)
        replies = pipe.execute() if pipe.command_stack else []
        if not vouched:
            before, *replies, after = replies
            live = after.decode() if after else None
            if before != after or live != release_id:
                return live, None
            _live_hints[self.prefix] = release_id
        answers = iter(replies)
        found: dict[str, dict[int, bytes | None]] = {}
        for table, hashes in groups:
            if hashes is None:
                found[table] = {int(k): v for k, v in next(answers).items()}
            else:
                values = next(answers) if hashes else []
                found[table] = {h: v or None for h, v in zip(hashes, values, strict=True)}
        return release_id, found

    def definitions(
        self, table: str, hashes: Iterable[int], lang: str | None = None
    ) -> dict[int, dict[str, Any] | None]:
        """Return definitions of one table by hash (one HMGET on the live release)."""
        return self.lookup({table: hashes}, lang)[1][table]

    def definition(self, table: str, definition_hash: int) -> dict[str, Any] | None:
        """Return one definition of the live release, or None."""
        return self.definitions(table, [definition_hash])[definition_hash]

    def search(
        self,
        query: str = "",
        *,
        item_type: int | None = None,
        tier: int | None = None,
        class_type: int | None = None,
        page: int = 1,
        per_page: int = 50,
        lang: str | None = None,
        definitions: bool = True,
    ) -> SearchPage:
        """Find items whose name contains `query` (any case), filtered, one page at a time.

        With `definitions`, the page holds each item's stored definition (`raw`, `items`);
        without, what a list of results shows (`rows`), from the index alone: no Redis read
        but the live pointer's, and none at all while Redis vouches for it.
        """
        lang = lang or self.settings.languages[0]
        page, per_page = max(1, page), max(1, min(per_page, 200))
        needle = query.strip().casefold()
        release_id, vouched = self.reader_live_id()
        for _attempt in range(READ_ATTEMPTS):
            if release_id is None:
                return SearchPage(None, 0, page, per_page, [], [])
            index = self._search_index(release_id, lang)
            matches = index.filter(index.matches(needle), item_type, tier, class_type)
            rows = matches[(page - 1) * per_page : page * per_page]
            chosen = [index.hashes[row] for row in rows] if definitions else []
            live, found = self._read(release_id, [(ITEM_TABLE, chosen)], lang, vouched)
            if found is not None:
                values = found[ITEM_TABLE]
                raw = [value for value in map(values.get, chosen) if value]
                shown = [] if definitions else [index.shown(row) for row in rows]
                return SearchPage(release_id, len(matches), page, per_page, raw, shown)
            # A commit landed since this process last looked: search the release now live.
            release_id = live
        raise ManifestError("The live release kept changing during the search")

    def _search_index(self, release_id: str, lang: str) -> SearchIndex:
        cache_key = (self.prefix, release_id, lang)
        index = _search_indexes.get(cache_key)
        if index is None:
            # Built once per process and release from the items themselves, in slices, so that
            # Redis never serves the whole table in one blocking reply.
            key = self.table_key(release_id, lang, ITEM_TABLE)
            items = self.redis.hscan_iter(key, count=SCAN_COUNT)
            index = SearchIndex(sorted({search_row(item_hash, data) for item_hash, data in items}))
            with _search_index_lock:
                # Keep the two newest releases per prefix: the live one and the one before.
                same = [k for k in _search_indexes if k[0] == self.prefix]
                for stale in same[:-1]:
                    del _search_indexes[stale]
                _search_indexes[cache_key] = index
        return index

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the newest release records (updates and rollbacks), newest first."""
        return [_json_decode(v) for v in self.redis.lrange(self.history_key, 0, limit - 1)]

    def history_entry(self, release_id: str) -> dict[str, Any] | None:
        """Return the newest history record of a release, also one whose data is gone."""
        for entry in self.history(self.settings.history_length):
            if entry["id"] == release_id:
                return entry
        return None

    def last_check(self) -> dict[str, Any] | None:
        """Return the outcome of the latest check, if any."""
        value = self.redis.get(self.last_check_key)
        return _json_decode(value) if value else None

    def recent_checks(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the latest check outcomes, newest first."""
        return [_json_decode(v) for v in self.redis.lrange(self.checks_key, 0, limit - 1)]

    # -- writing ---------------------------------------------------------------------------

    def record_check(self, check: Mapping[str, Any]) -> None:
        """Remember the outcome of a check (the dashboard's "last check")."""
        data = _json_encode(check)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.last_check_key, data)
            pipe.lpush(self.checks_key, data)
            pipe.ltrim(self.checks_key, 0, CHECKS_KEPT - 1)
            pipe.execute()

    def stage(self, release: Release) -> None:
        """Prepare to write `release`, dropping leftovers of a run that died building it."""
        keys = self.data_keys(release)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.unlink(*keys)
            pipe.hset(self.staging_key, release.id, _json_encode(keys))
            pipe.execute()

    def table_writer(
        self, release: Release, lang: str, table: str, diff: TableDiff | None, live_id: str | None
    ) -> TableWriter:
        """Return a writer of one table of a staged release."""
        return TableWriter(self, release.id, lang, table, diff, live_id)

    def discard(self, release_id: str) -> None:
        """Delete the data of a staged release that will not be committed."""
        keys = self.redis.hget(self.staging_key, release_id)
        # Not a transaction: over maxmemory Redis refuses a whole MULTI, deletes included, and
        # this is when they are needed. Data first: a crash in between leaves the record, and
        # the next run collects the keys again.
        with self.redis.pipeline(transaction=False) as pipe:
            if keys:
                pipe.unlink(*_json_decode(keys))
            pipe.hdel(self.staging_key, release_id)
            pipe.execute()

    def collect_garbage(self) -> int:
        """Delete staged data of runs that died; call only while holding the sync lock."""
        staged = self.redis.hgetall(self.staging_key)
        for release_id in staged:
            self.discard(release_id.decode())
        return len(staged)

    def commit(self, info: ReleaseInfo, history: Mapping[str, Any], lock: SyncLock) -> None:
        """Make `info` the live release in one transaction; drop releases older than the previous.

        Raises LockLost if another run took the lock meanwhile: then nothing changes.
        """
        self._flip(info.id, history, lock, record=info)

    def activate(self, release: Release, history: Mapping[str, Any], lock: SyncLock) -> None:
        """Make a kept release live again without downloading it (a rollback).

        Its digests were dropped when it stopped being live: they are worked out again from
        its stored definitions first (the next build compares with them).
        """
        for lang in release.languages:
            for table in release.tables:
                self._restore_digests(release.id, lang, table, lock)
        self._flip(release.id, history, lock, record=None)

    def _restore_digests(self, release_id: str, lang: str, table: str, lock: SyncLock) -> None:
        key = self.sums_key(release_id, lang, table)
        self.redis.unlink(key)
        items = self.redis.hscan_iter(self.table_key(release_id, lang, table), count=SCAN_COUNT)
        while stored := list(itertools.islice(items, WRITE_BATCH)):
            fields, data = zip(*stored, strict=True)
            batch = Batch.of(list(fields), list(data))
            self.redis.hset(key, items=batch.pairs(batch.digests, 0, len(batch)))
            lock.keep_alive()

    def _flip(
        self,
        release_id: str,
        history: Mapping[str, Any],
        lock: SyncLock,
        record: ReleaseInfo | None,
    ) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.lock_key, self.current_key, self.releases_key)
                    holder = pipe.get(self.lock_key)
                    if holder is None or holder.decode() != lock.run_id:
                        raise LockLost("The sync lock was lost before the commit")
                    live = pipe.get(self.current_key)
                    keep = {release_id, live.decode()} if live else {release_id}
                    old = [m.decode() for m in pipe.zrange(self.releases_key, 0, -1)]
                    drop = [r for r in old if r not in keep]
                    drop_keys = [self.release_key(r) for r in drop]
                    for r in drop:
                        info = self.release_info(r)
                        if info is not None:
                            drop_keys += self.data_keys(info.release)
                    # The release that stops being live keeps its definitions (readers, a
                    # rollback), not its digests: only the live release's are compared with.
                    previous = self.release_info(live.decode()) if live else None
                    if previous is not None and previous.id != release_id:
                        drop_keys += self.digest_keys(previous.release)
                    pipe.multi()
                    if record is not None:
                        pipe.hset(
                            self.release_key(release_id),
                            mapping={
                                "release": _json_encode(record.release.to_record()),
                                "counts": _json_encode(record.counts),
                                "synced_at": _json_encode(record.synced_at),
                                "duration": _json_encode(record.duration),
                                "diff": _json_encode([d.to_record() for d in record.diffs]),
                                "change": _json_encode(record.change),
                                "base": _json_encode(record.base),
                                "trigger": _json_encode(record.trigger),
                            },
                        )
                        pipe.hdel(self.staging_key, release_id)
                    pipe.set(self.current_key, release_id)
                    pipe.zadd(self.releases_key, {release_id: time.time()})
                    if drop:
                        pipe.zrem(self.releases_key, *drop)
                    if drop_keys:
                        pipe.unlink(*drop_keys)
                    pipe.lpush(self.history_key, _json_encode(history))
                    pipe.ltrim(self.history_key, 0, self.settings.history_length - 1)
                    pipe.execute()
                    return
                except WatchError:
                    continue


class TableWriter:
    """Write one table of a staged release in pipelined batches, counting its diff as it goes."""

    def __init__(
        self,
        store: ManifestStore,
        release_id: str,
        lang: str,
        table: str,
        diff: TableDiff | None,
        live_id: str | None,
    ) -> None:
        self._redis = store.redis
        self._data_key = store.table_key(release_id, lang, table)
        self._sums_key = store.sums_key(release_id, lang, table)
        self._old_sums_key = store.sums_key(live_id, lang, table) if live_id and diff else None
        self.diff = diff
        self.count = 0

    def write(self, batch: Batch) -> None:
        """Write a batch of entries; with a diff, compare them with the live release's digests."""
        if not batch:
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(batch), WRITE_BATCH):
                stop = start + WRITE_BATCH
                pipe.hset(self._data_key, items=batch.pairs(batch.data, start, stop))
                pipe.hset(self._sums_key, items=batch.pairs(batch.digests, start, stop))
            if self._old_sums_key:
                pipe.hmget(self._old_sums_key, batch.keys)
            replies = pipe.execute()
        if self.diff is not None:
            old = replies[-1] if self._old_sums_key else [None] * len(batch)
            self.diff.count_batch(batch, old)
        self.count += len(batch)
