"""The item search index: substring matches per name, never across two names."""

from __future__ import annotations

from collections.abc import Sequence

from app.manifest.items import ItemSummary
from app.manifest.packing import Packer
from app.manifest.packing import Unpacker
from app.manifest.packing import digest
from app.manifest.store.search import SearchIndex
from app.manifest.store.search import SearchRow
from app.manifest.store.search import search_row
from app.manifest.store.search import search_rows


def row(name: str, number: int, item_type: int, tier: int, class_type: int) -> SearchRow:
    return (name.casefold(), number, item_type, tier, class_type, name, None, None, None)


ROWS = [
    row("ace of spades", 1, 3, 6, 3),
    row("fatebringer", 2, 3, 5, 3),
    row("gjallarhorn", 3, 3, 6, 3),
    row("spade", 4, 2, 5, 1),
]


def hashes(index: SearchIndex, rows: Sequence[int]) -> list[int]:
    return [index.hashes[row] for row in rows]


def test_substrings_match_by_name_in_order() -> None:
    index = SearchIndex(ROWS)
    assert hashes(index, index.matches("spade")) == [1, 4]
    assert hashes(index, index.matches("horn")) == [3]
    assert hashes(index, index.matches("")) == [1, 2, 3, 4]
    assert hashes(index, index.matches("zzz")) == []


def test_a_match_never_spans_two_names() -> None:
    index = SearchIndex(ROWS)
    assert index.matches("spadesfate") == []
    assert index.matches("spades\nfate") == ()
    assert hashes(index, index.matches("r")) == [2, 3]  # each name once, however many hits


def test_filters_apply_to_the_matches_only() -> None:
    index = SearchIndex(ROWS)
    assert hashes(index, index.filter(index.matches("spade"), 3, None, None)) == [1]
    assert hashes(index, index.filter(index.matches(""), None, 6, 3)) == [1, 3]
    assert hashes(index, index.filter(index.matches(""), None, None, 1)) == [4]


def test_an_empty_release() -> None:
    index = SearchIndex([])
    assert list(index.matches("")) == []
    assert index.matches("a") == []


def test_needles_of_every_length_find_exactly_the_names_that_hold_them() -> None:
    rows = [
        row("ace of spades", 1, 3, 6, 3),
        row("the lament", 2, 3, 5, 3),
        row("la lame", 3, 3, 5, 3),
        row("lamentable", 4, 3, 5, 3),
        row("ménagerie", 5, 3, 5, 3),
    ]
    index = SearchIndex(rows)
    needles = ["la", "lam", "lame", "ament", "lamentable", "of sp", "ées", "ménag", "e", "zz"]
    needles += ["mentab", "lamentabl", "ce of spades", "lament"]
    for needle in needles:
        # In the rows' order (the store gives them sorted by name).
        expected = [row[1] for row in rows if needle in row[0]]
        assert hashes(index, index.matches(needle)) == expected, needle
    # Every trigram of the needle is held by some name, but no name holds the needle.
    assert index.matches("lamentables") == []


def test_the_index_keeps_what_a_list_of_results_shows() -> None:
    stored = (
        b'{"hash": 9, "displayProperties": {"name": "Ace of Spades", "icon": "/i/ace.jpg"},'
        b' "itemTypeDisplayName": "Hand Cannon", "itemType": 3, "classType": 3,'
        b' "inventory": {"tierType": 6, "tierTypeName": "Exotic"}}'
    )
    index = SearchIndex(sorted([search_row(b"9", stored), search_row(b"7", b'{"itemType": "x"}')]))
    assert [index.shown(row) for row in index.matches("spades")] == [
        ItemSummary(9, "Ace of Spades", "/i/ace.jpg", 3, "Hand Cannon", 6, "Exotic", 3)
    ]
    # An item whose fields have odd types is shown by its hash alone.
    assert index.shown(0) == ItemSummary(7, "", None, -1, None, -1, None, -1)


def test_stored_rows_that_are_no_item_are_left_out_and_counted() -> None:
    items = [
        b'{"hash": 9, "displayProperties": {"name": "Ace of Spades"}}',
        b'{"hash": 2, "displayProperties": {"name": "Fatebringer"}}',
    ]
    stored = Packer(None).pack(items, [digest(item) for item in items])
    rows = [
        (b"9", stored[0]),
        (b"2", stored[1]),
        (b"not-a-hash", stored[0]),  # a key that is not a hash
        (b"0042", stored[1]),
        (b"17", stored[0][:12]),  # cut short: no whole zstd frame
        (b"18", b"\x01" * 8 + b"not a frame of zstd"),
        (b"19", Packer(None).pack([b"[1, 2]"], [b"\x00" * 8])[0]),  # not a JSON object
    ]

    found, bad = search_rows(rows, Unpacker(None).unpack)

    assert [row[5] for row in found] == ["Ace of Spades", "Fatebringer"]
    assert bad == 5
