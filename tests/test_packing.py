"""How a definition is stored: its digest ignores only the top-level `index`, and it reads back
exactly, with a dictionary trained on its table or without one."""

from __future__ import annotations

import json
import random

import pytest
import zstandard

from app.manifest import packing


def definition(index: int, **fields: object) -> bytes:
    """A definition laid out as Bungie writes them: `hash`, `index` and flags last."""
    body: dict[str, object] = {
        "displayProperties": {"name": "Ace of Spades", "description": "A hand cannon."},
        "displayCategories": [{"index": 0, "identifier": "guns"}],
        "stats": {"stats": {"4284893193": {"statHash": 4284893193, "value": 90}}},
        **fields,
        "hash": 347366834,
        "index": index,
        "redacted": False,
        "blacklisted": False,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def test_a_new_index_is_no_change() -> None:
    assert packing.digest(definition(7)) == packing.digest(definition(29_001))


def test_any_other_field_is_a_change() -> None:
    before = packing.digest(definition(7))
    assert packing.digest(definition(7, itemType=3)) != before
    nested = definition(7).replace(b'"value":90', b'"value":91')
    assert packing.digest(nested) != before


def test_a_nested_index_is_a_change() -> None:
    moved = definition(7).replace(b'[{"index":0', b'[{"index":1')
    assert moved != definition(7)
    assert packing.digest(moved) != packing.digest(definition(7))


@pytest.mark.parametrize(
    "layout",
    [
        # `index` first, before nested objects: the exact scan finds the top-level one.
        '{{"index":{i},"a":{{"index":5}},"s":"}}{{[","hash":1}}',
        # Spaces around the colon, and a string after it holding brackets.
        '{{"a":[{{"index":5}}],"index" : {i} ,"note":"]}}"}}',
    ],
)
def test_index_anywhere_at_the_top_is_ignored(layout: str) -> None:
    first = layout.format(i=3).encode()
    second = layout.format(i=4000).encode()
    assert json.loads(first) != json.loads(second)
    assert packing.digest(first) == packing.digest(second)
    nested = first.replace(b'"index":5', b'"index":6')
    assert packing.digest(nested) != packing.digest(first)


def test_a_definition_without_index_has_a_digest() -> None:
    assert len(packing.digest(b'{"hash":1}')) == packing.DIGEST_BYTES
    assert packing.digest(b'{"hash":1}') != packing.digest(b'{"hash":2}')


def realistic_table(count: int) -> list[bytes]:
    rng = random.Random(5)
    words = ["Hand Cannon", "Auto Rifle", "Legendary", "Exotic", "Kinetic", "Solar", "Void"]
    return [
        definition(
            n,
            itemTypeDisplayName=rng.choice(words),
            flavorText=" ".join(rng.choice(words) for _ in range(12)),
            investmentStats=[
                {"statTypeHash": rng.getrandbits(32), "value": rng.randrange(100)}
                for _ in range(rng.randrange(8))
            ],
        )
        for n in range(count)
    ]


def test_packed_definitions_read_back_exactly_with_a_dictionary() -> None:
    table = realistic_table(1500)
    dictionary = packing.train(table)
    assert dictionary is not None
    digests = [packing.digest(d) for d in table]
    values = packing.Packer(dictionary).pack(table, digests)
    assert [packing.stored_digest(v) for v in values] == digests
    unpacker = packing.Unpacker(dictionary)
    assert [unpacker.unpack(v) for v in values] == table
    # The dictionary is what makes each definition small on its own.
    plain = packing.Packer(None).pack(table, digests)
    assert sum(map(len, values)) < 0.6 * sum(map(len, plain))


def test_a_small_table_goes_without_a_dictionary() -> None:
    table = realistic_table(20)
    assert packing.train(table) is None
    values = packing.Packer(None).pack(table, list(map(packing.digest, table)))
    assert [packing.Unpacker(None).unpack(v) for v in values] == table


def test_a_value_packed_with_another_dictionary_is_refused_not_misread() -> None:
    table = realistic_table(1500)
    values = packing.Packer(packing.train(table)).pack(table[:3], [b"\0" * 8] * 3)
    other = packing.train(realistic_table(1600)[100:])
    with pytest.raises(zstandard.ZstdError):
        packing.Unpacker(other).unpack(values[0])


def test_format_1_values_read_as_they_are() -> None:
    projected = b'{"displayProperties":{"name":"Ace of Spades"},"hash":347366834}'
    assert packing.Unpacker(None).unpack(projected) == projected
