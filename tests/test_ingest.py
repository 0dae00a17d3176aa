"""Streaming ingest: slabs cut at entry boundaries give what a whole-document parse gives."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from app.manifest.errors import TableInvalid
from app.manifest.ingest import EntryCodec
from app.manifest.ingest import Projection
from app.manifest.ingest import iter_json_table
from app.manifest.ingest import iter_sqlite_table
from config import PROJECTIONS

ITEM_FIELDS = PROJECTIONS["DestinyInventoryItemDefinition"]


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


def projected(definition: dict) -> dict:
    """The projection computed the plain way, to compare with the engine's."""
    out: dict = {}
    for path in ITEM_FIELDS:
        source, target = definition, out
        parts = path.split(".")
        for part in parts[:-1]:
            source = source.get(part) or {}
            target = target.setdefault(part, {})
        if parts[-1] in source:
            target[parts[-1]] = source[parts[-1]]
    return {k: v for k, v in out.items() if v != {}}


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def ingest(data: bytes, chunk: int = 4096, slab: int = 16 * 1024) -> dict[str, dict]:
    codec = EntryCodec(Projection.of(ITEM_FIELDS))
    out: dict[str, dict] = {}
    for entries in iter_json_table(chunked(data, chunk), codec, slab_bytes=slab):
        for key, value, digest in entries:
            assert key.decode() not in out
            assert len(digest) == 8
            out[key.decode()] = json.loads(value)
    return out


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize(("chunk", "slab"), [(1, 64), (997, 8 * 1024), (65536, 256 * 1024)])
def test_slabs_give_the_same_entries_as_one_parse(
    indent: int | None, chunk: int, slab: int
) -> None:
    table = make_table(400)
    separators = (",", ":") if indent is None else None
    data = json.dumps(table, indent=indent, separators=separators).encode()
    assert ingest(data, chunk, slab) == {k: projected(v) for k, v in table.items()}


def test_projection_keeps_only_the_configured_fields() -> None:
    table = make_table(3)
    entries = ingest(json.dumps(table).encode())
    key = next(iter(table))
    assert "stats" not in entries[key]
    assert "index" not in entries[key]
    assert entries[key]["inventory"] == {
        "tierTypeName": "Legendary",
        "tierType": 5,
        "bucketTypeHash": 7,
    }
    assert entries[key]["displayProperties"]["name"] == table[key]["displayProperties"]["name"]


def test_star_projection_keeps_the_whole_definition() -> None:
    table = make_table(5)
    codec = EntryCodec(Projection.of(["*"]))
    data = json.dumps(table).encode()
    entries = [e for batch in iter_json_table([data], codec) for e in batch]
    assert {k.decode(): json.loads(v) for k, v, _ in entries} == table


def test_digest_changes_only_when_kept_fields_change() -> None:
    table = make_table(2)
    key = next(iter(table))
    codec = EntryCodec(Projection.of(ITEM_FIELDS))

    def digest(definition: dict) -> bytes:
        return codec.rows([(1, json.dumps(definition))]).digests[0]

    before = digest(table[key])
    table[key]["stats"] = {"stats": {}}  # not projected: not a change users can see
    assert digest(table[key]) == before
    table[key]["displayProperties"]["name"] = "Renamed"
    assert digest(table[key]) != before


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

    codec = EntryCodec(Projection.of(ITEM_FIELDS))
    entries = [
        e
        for batch in iter_sqlite_table(str(database), "DestinyInventoryItemDefinition", codec, 7)
        for e in batch
    ]
    assert {k.decode(): json.loads(v) for k, v, _ in entries} == {
        k: projected(v) for k, v in table.items()
    }
    with pytest.raises(TableInvalid):
        list(iter_sqlite_table(str(database), "NoSuchTable", codec))
