"""A definition keyed by anything but a hash costs that entry, never a release nor its search."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from redis.typing import EncodableT

from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.errors import TableInvalid
from app.manifest.ingest import EntryCodec
from app.manifest.ingest import Projection
from app.manifest.ingest import iter_json_table
from app.manifest.ingest import iter_sqlite_table
from app.manifest.store import ITEM_TABLE
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from devtools.demo.data import BAD_KEYS
from tests.conftest import API_KEY
from tests.conftest import DEMO_ITEMS

ITEM_FIELDS = ["hash", "displayProperties.name"]
GOOD_KEYS = ["0", "7", "999999999", "1000000000", "4294967295"]
# Not hashes: signs, leading zeros, fractions, spaces, words, past 2**32 - 1, past int()'s limit.
NOT_HASHES = ["-1", "+7", "007", "1.5", "1e3", " 7", "seven", "", "4294967296", "9" * 5000]


def sync_in_app(app: Flask) -> sync.SyncResult:
    """Run the sync engine in-process, as a worker would."""
    with app.app_context():
        return sync.run(get_store(), get_bungie(), trigger="test")


def ingest(table: Mapping[str, object], slab_bytes: int = 64) -> tuple[list[str], int]:
    """Return the keys kept of a JSON table, and how many entries were skipped."""
    codec = EntryCodec(Projection.of(ITEM_FIELDS))
    batches = list(iter_json_table([json.dumps(table).encode()], codec, slab_bytes=slab_bytes))
    return [key.decode() for batch in batches for key in batch.keys], sum(
        batch.skipped for batch in batches
    )


# -- the demo origin's `bad_key` fault, over HTTP -------------------------------------------------


def test_the_bad_key_fault_serves_a_table_with_keys_that_are_not_hashes(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    honest = admin.state()["paths"]["jsonWorldComponentContentPaths"]["en"][ITEM_TABLE]
    admin.fault("bad_key", count=1)

    manifest = requests.get(
        origin.url + "/Platform/Destiny2/Manifest/", headers={"X-API-Key": API_KEY}, timeout=30
    ).json()
    path = manifest["Response"]["jsonWorldComponentContentPaths"]["en"][ITEM_TABLE]

    assert path != honest
    served = requests.get(origin.url + path, timeout=30)
    assert served.status_code == 200
    table = json.loads(served.content)  # still JSON: only its keys are wrong
    assert len(table) == DEMO_ITEMS + len(BAD_KEYS)
    assert set(BAD_KEYS) <= set(table)


# -- ingest: a bad key is skipped and counted ----------------------------------------------------


def test_only_unsigned_32_bit_hashes_in_decimal_are_kept_from_a_json_table() -> None:
    definition = {"hash": 1, "displayProperties": {"name": "x"}}
    table = dict.fromkeys(GOOD_KEYS + NOT_HASHES, definition)

    kept, skipped = ingest(table)

    assert sorted(kept) == sorted(GOOD_KEYS)
    assert skipped == len(NOT_HASHES)


def test_a_json_table_of_bad_keys_only_is_refused() -> None:
    with pytest.raises(TableInvalid, match="hash"):
        ingest({"seven": {"hash": 7}, "-1": {"hash": 1}})


def test_only_32_bit_ids_are_kept_from_a_sqlite_table(tmp_path: Path) -> None:
    database = tmp_path / "world.content"
    connection = sqlite3.connect(database)
    # Not Bungie's schema (`id INTEGER PRIMARY KEY`): here an id can be any SQLite value.
    connection.execute("CREATE TABLE DestinyInventoryItemDefinition (id, json BLOB)")
    good = [7, -1, 2**31 - 1, -(2**31)]
    bad = [2**32, -(2**31) - 1, 2**40, "7", 1.5, None, b"7"]
    connection.executemany(
        "INSERT INTO DestinyInventoryItemDefinition VALUES (?, ?)",
        [(row_id, b'{"hash": 1}') for row_id in good + bad],
    )
    connection.commit()
    connection.close()

    codec = EntryCodec(Projection.of(ITEM_FIELDS))
    batches = list(iter_sqlite_table(str(database), "DestinyInventoryItemDefinition", codec, 3))

    kept = sorted(int(key) for batch in batches for key in batch.keys)
    assert kept == sorted(row_id & 0xFFFFFFFF for row_id in good)
    assert sum(batch.skipped for batch in batches) == len(bad)


# -- a sync over HTTP: the release is kept, the bad entries counted where users look ------------


def test_a_table_with_bad_keys_is_synced_without_them(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin.fault("bad_key")

    with caplog.at_level(logging.WARNING, logger="app.manifest"):
        result = sync_in_app(app)

    assert result.outcome == sync.UPDATED, result.summary()
    assert result.counts["en"][ITEM_TABLE] == DEMO_ITEMS
    assert result.skipped == {"en": {ITEM_TABLE: len(BAD_KEYS)}}
    assert f"skipped {len(BAD_KEYS)} entries with bad keys" in result.summary()
    assert any("bad key" in r.getMessage() for r in caplog.records)
    with app.app_context():
        store = get_store()
        stored = redis_client.hkeys(store.keys.table(result.release_id or "", "en", ITEM_TABLE))
    assert len(stored) == DEMO_ITEMS
    assert all(isinstance(key, bytes) and key.isdigit() for key in stored)
    # Search works, on the pages and in the API.
    assert client.get("/items").status_code == 200
    found = client.get("/api/v1/items", query_string={"per_page": 200})
    assert found.status_code == 200
    assert found.get_json()["total"] == DEMO_ITEMS
    # The release's page says what was left out.
    page = client.get(f"/releases/{result.release_id}").get_data(as_text=True)
    assert f"{len(BAD_KEYS)} entries with bad keys" in page
    assert client.get("/api/v1/manifest").get_json()["release"]["skipped"] == result.skipped


# -- search over a release an older version stored with bad rows --------------------------------


def test_search_leaves_out_stored_rows_that_are_not_items(
    app: Flask,
    client: FlaskClient,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = sync_in_app(app)
    assert result.outcome == sync.UPDATED, result.summary()
    with app.app_context():
        key = get_store().keys.table(result.release_id or "", "en", ITEM_TABLE)
    item = b'{"hash": 1, "displayProperties": {"name": "Stray"}}'
    bad_rows: dict[EncodableT, EncodableT] = {
        b"not-a-hash": item,
        b"-1": item,
        b"9" * 5000: item,
        b"17": b"[1, 2]",
        b"18": b'"a string"',
        b"19": b"\x00 not json {",
    }
    redis_client.hset(key, mapping=bad_rows)

    with caplog.at_level(logging.WARNING, logger="app.manifest"):
        page = client.get("/items")
        found = client.get("/api/v1/items", query_string={"q": "stray"})

    assert page.status_code == 200
    assert found.status_code == 200
    assert found.get_json()["total"] == 0
    everything = client.get("/api/v1/items", query_string={"per_page": 200})
    assert everything.get_json()["total"] == DEMO_ITEMS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{len(bad_rows)} stored rows" in message for message in warnings), warnings
    # Nor does the page of one of them: a row that is not a JSON object counts as absent.
    for number in (17, 18, 19):
        item_page = client.get(f"/items/{number}")
        assert item_page.status_code == 404
        assert f"There is no item {number}" in item_page.get_data(as_text=True)
        api_item = client.get(f"/api/v1/items/{number}")
        assert api_item.status_code == 404
        assert api_item.is_json
