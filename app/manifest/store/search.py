"""Item search: an index of the live release's items by name, built once per process and release.

The index keeps what a list of results shows of each item, so a page of results needs no read
but the live pointer's (and none while Redis vouches for it). A stored row that is no item (its
key not a hash, its definition not a JSON object) is left out, counted and logged.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import sys
import threading
from array import array
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from functools import cached_property
from typing import Any

import msgspec
import zstandard

from app.manifest.errors import ManifestError
from app.manifest.ingest import is_hash
from app.manifest.items import ItemSummary
from app.manifest.items import decode_item
from app.manifest.store.reads import READ_ATTEMPTS
from app.manifest.store.reads import SCAN_COUNT
from app.manifest.store.reads import LiveReads

ITEM_TABLE = "DestinyInventoryItemDefinition"
# Names are indexed by their substrings of this length (trigrams).
GRAM = 3
# What the filters see of an item whose definition lacks the field: Bungie's own "none"
# values (DestinyItemType.None, TierType.Unknown, DestinyClass.Unknown).
_NO_ITEM_TYPE = 0
_NO_TIER = 0
_NO_CLASS = 3
# ... and of an item whose fields are not of the usual types: matched by no filter.
_ODD = -1
_NO_ROWS: array[int] = array("I")
# (casefolded name, hash, itemType, tierType, classType, name, icon, type name, tier name)
SearchRow = tuple[str, int, int, int, int, str, str | None, str | None, str | None]

_json_decode = msgspec.json.decode

log = logging.getLogger(__name__)


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
    rows: list[ItemSummary] = field(default_factory=list)

    @property
    def pages(self) -> int:
        """Return how many pages the results fill (at least one)."""
        return max(1, -(-self.total // self.per_page))

    @cached_property
    def items(self) -> list[dict[str, Any]]:
        """Return the page's items, decoded."""
        return [_json_decode(value) for value in self.raw]


def search_row(item_hash: bytes, data: bytes) -> SearchRow:
    """Return what search filters on, and what a list of results shows, of one stored item.

    An item whose fields are not of the usual types is indexed by hash alone (listed, not
    found by name or filters). Raise ValueError for a row that is no item: its key is not a
    hash, or its definition is not a JSON object.
    """
    if not is_hash(item_hash):
        raise ValueError(f"{item_hash[:40]!r} is not a hash")
    item = decode_item(data)  # msgspec.DecodeError, a ValueError, if `data` is not JSON
    if not item.readable:
        if not data.lstrip().startswith(b"{"):
            raise ValueError(f"item {item_hash.decode()} is not a JSON object")
        return ("", int(item_hash), _ODD, _ODD, _ODD, "", None, None, None)
    # Type and tier names repeat across thousands of items: one string each.
    type_name = item.type_name and sys.intern(item.type_name)
    tier_name = item.tier_name and sys.intern(item.tier_name)
    filtered = (
        int(item_hash),
        _NO_ITEM_TYPE if item.item_type is None else item.item_type,
        _NO_TIER if item.tier_type is None else item.tier_type,
        _NO_CLASS if item.class_type is None else item.class_type,
    )
    return (item.name.casefold(), *filtered, item.name, item.icon, type_name, tier_name)


def search_rows(
    items: Iterable[tuple[bytes, bytes]], unpack: Callable[[bytes], bytes]
) -> tuple[list[SearchRow], int]:
    """Return the search rows of stored items sorted by name, and how many rows are no item.

    `unpack` turns a stored value into the item's JSON; a value it cannot read is no item.
    """
    rows: set[SearchRow] = set()
    add = rows.add
    bad = 0
    for item_hash, stored in items:
        try:
            add(search_row(item_hash, unpack(stored)))
        except (ValueError, zstandard.ZstdError):
            bad += 1
    # By name; items without one (redacted: Bungie blanks their names) last.
    return sorted(rows, key=lambda row: (row[0] == "", row)), bad


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
        # What a result row shows, one list a field: lighter than a tuple a row.
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
        # Kept as arrays of 4-byte row numbers: lighter than lists, as fast to read.
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

    def shown(self, row: int) -> ItemSummary:
        """Return what a list of results shows of the item in `row`."""
        return ItemSummary(
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


class ItemSearch(LiveReads):
    """Items of the live release found by name and filters, a page at a time."""

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
        prefix = self.keys.prefix
        cache_key = (prefix, release_id, lang)
        index = _search_indexes.get(cache_key)
        if index is None:
            # Built once per process and release from the items themselves, in slices.
            key = self.keys.table(release_id, lang, ITEM_TABLE)
            unpack = self.unpacker(release_id, lang, ITEM_TABLE).unpack
            stored = self.redis.hscan_iter(key, count=SCAN_COUNT)
            rows, bad = search_rows(stored, unpack)
            if bad:
                # Written by an older version, or by hand: not worth failing every search.
                log.warning(
                    "Item search of release %s (%s) leaves out %d stored rows that are not items"
                    " (a key that is not a hash, or a definition that is not a JSON object or"
                    " cannot be decompressed)",
                    release_id,
                    lang,
                    bad,
                )
            index = SearchIndex(rows)
            with _search_index_lock:
                # Keep the two newest releases per prefix: the live one and the one before.
                same = [k for k in _search_indexes if k[0] == prefix]
                for stale in same[:-1]:
                    del _search_indexes[stale]
                _search_indexes[cache_key] = index
        return index
