"""The item search index: substring matches per name, never across two names."""

from __future__ import annotations

from app.manifest.store import SearchIndex

ROWS = [
    ("ace of spades", 1, 3, 6, 3),
    ("fatebringer", 2, 3, 5, 3),
    ("gjallarhorn", 3, 3, 6, 3),
    ("spade", 4, 2, 5, 1),
]


def hashes(index: SearchIndex, rows) -> list[int]:
    return [index.hashes[row] for row in rows]


def test_substrings_match_by_name_in_order():
    index = SearchIndex(ROWS)
    assert hashes(index, index.matches("spade")) == [1, 4]
    assert hashes(index, index.matches("horn")) == [3]
    assert hashes(index, index.matches("")) == [1, 2, 3, 4]
    assert hashes(index, index.matches("zzz")) == []


def test_a_match_never_spans_two_names():
    index = SearchIndex(ROWS)
    assert index.matches("spadesfate") == []
    assert index.matches("spades\nfate") == ()
    assert hashes(index, index.matches("r")) == [2, 3]  # each name once, however many hits


def test_filters_apply_to_the_matches_only():
    index = SearchIndex(ROWS)
    assert hashes(index, index.filter(index.matches("spade"), 3, None, None)) == [1]
    assert hashes(index, index.filter(index.matches(""), None, 6, 3)) == [1, 3]
    assert hashes(index, index.filter(index.matches(""), None, None, 1)) == [4]


def test_an_empty_release():
    index = SearchIndex([])
    assert list(index.matches("")) == []
    assert index.matches("a") == []


def test_needles_of_every_length_find_exactly_the_names_that_hold_them():
    rows = [
        ("ace of spades", 1, 3, 6, 3),
        ("the lament", 2, 3, 5, 3),
        ("la lame", 3, 3, 5, 3),
        ("lamentable", 4, 3, 5, 3),
        ("ménagerie", 5, 3, 5, 3),
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
