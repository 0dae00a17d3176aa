"""Streaming ingest: slabs cut at entry boundaries give each entry's exact bytes, as one parse."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import msgspec
import pytest

from app.manifest.errors import TableInvalid
from app.manifest.ingest import iter_json_table
from app.manifest.ingest import iter_sqlite_table


def make_table(count: int, seed: int = 1) -> dict[str, dict]:
    """Definitions shaped like Bungie's, with the traps: nested objects keyed by hash, and
    strings holding the very bytes that separate entries."""
    rng = random.Random(seed)
    table = {}
    for index in range(count):
        item_hash = rng.getrandbits(32)
        table[str(item_hash)] = {
            "displayProperties": {
                "name": f'Item {index} }},"{rng.getrandbits(32)}":{{',
                "description": "x" * rng.randint(0, 3000),
                "icon": f"/common/destiny2_content/icons/{index}.jpg",
            },
            "stats": {
                "stats": {
                    str(rng.getrandbits(32)): {"statHash": 1, "value": rng.randint(0, 100)}
                    for _ in range(rng.randint(0, 8))
                }
            },
            "inventory": {"tierTypeName": "Legendary", "tierType": 5, "bucketTypeHash": 7},
            "itemType": 3,
            "classType": 3,
            "hash": item_hash,
            "index": index,
            "redacted": False,
        }
    return table


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def ingest(data: bytes, chunk: int = 4096, slab: int = 16 * 1024) -> dict[str, bytes]:
    """Return each key's entry, as the bytes the engine would store."""
    out: dict[str, bytes] = {}
    for batch in iter_json_table(chunked(data, chunk), slab_bytes=slab):
        for key, value in zip(batch.keys, batch.data, strict=True):
            assert key.decode() not in out
            out[key.decode()] = value
    return out


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize(("chunk", "slab"), [(1, 64), (997, 8 * 1024), (65536, 256 * 1024)])
def test_slabs_give_the_same_entries_as_one_parse(
    indent: int | None, chunk: int, slab: int
) -> None:
    table = make_table(400)
    separators = (",", ":") if indent is None else None
    data = json.dumps(table, indent=indent, separators=separators).encode()
    entries = ingest(data, chunk, slab)
    assert {k: json.loads(v) for k, v in entries.items()} == table
    # Each entry is exactly the bytes the file holds for it: every field, as sent.
    whole = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    assert entries == {k: bytes(v) for k, v in whole.items()}


def test_entries_keep_every_field_as_sent() -> None:
    table = make_table(3)
    key = next(iter(table))
    text = b'{"hash": 1,  "index":7 , "odd":"\\u00e9 }{", "n": 1.50}'
    table_bytes = b'{"%s": %s}' % (key.encode(), text)
    assert ingest(table_bytes) == {key: text}


def test_empty_table() -> None:
    assert ingest(b"  {}  ") == {}


@pytest.mark.parametrize(
    "data",
    [b"", b"[1, 2]", b'{"1": {"hash": 1}', b'{"1": {"hash": 1}} trailing', b'{"1": {"hash": 1},}'],
)
def test_bad_tables_are_refused(data: bytes) -> None:
    with pytest.raises(TableInvalid):
        ingest(data)


def test_garbage_in_the_middle_is_refused() -> None:
    data = json.dumps(make_table(200), separators=(",", ":")).encode()
    boundary = data.index(b'},"', len(data) // 2) + 1  # between two entries, not in a string
    with pytest.raises(TableInvalid):
        ingest(data[:boundary] + b"@@garbage@@" + data[boundary:])


def test_sqlite_rows_use_unsigned_hashes(tmp_path: Path) -> None:
    table = make_table(50)
    database = tmp_path / "world.content"
    connection = sqlite3.connect(database)
    connection.execute(
        "CREATE TABLE DestinyInventoryItemDefinition (id INTEGER PRIMARY KEY NOT NULL, json BLOB)"
    )
    rows = [
        (h - 2**32 if h >= 2**31 else h, json.dumps(d).encode())
        for h, d in ((int(k), v) for k, v in table.items())
    ]
    connection.executemany("INSERT INTO DestinyInventoryItemDefinition VALUES (?, ?)", rows)
    connection.commit()
    connection.close()

    batches = list(iter_sqlite_table(str(database), "DestinyInventoryItemDefinition", batch=7))
    entries = {k.decode(): v for b in batches for k, v in zip(b.keys, b.data, strict=True)}
    assert entries == {k: json.dumps(v).encode() for k, v in table.items()}
    with pytest.raises(TableInvalid):
        list(iter_sqlite_table(str(database), "NoSuchTable"))


@pytest.mark.parametrize("key", ["-1", "+7", "007", "1.5", " 7", "seven", "", "4294967296"])
def test_a_key_that_is_not_a_hash_refuses_the_table(key: str) -> None:
    table = make_table(300)
    table[key] = {"hash": 1}
    data = json.dumps(table, separators=(",", ":")).encode()
    with pytest.raises(TableInvalid, match="not a definition hash") as refused:
        ingest(data, slab=4096)
    assert repr(key) in str(refused.value)


def test_an_entry_that_is_not_an_object_refuses_the_table() -> None:
    data = json.dumps({**make_table(5), "12": [1, 2]}).encode()
    with pytest.raises(TableInvalid, match="12 is not a JSON object"):
        ingest(data)
