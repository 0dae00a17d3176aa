"""A table keyed by anything but hashes is refused whole: its sync fails, naming the table and the
key; the live release serves on, and nothing of the refused one stays. A bad row written into
Redis by hand still costs only that row of the search index."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from redis.typing import EncodableT

from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.errors import TableInvalid
from app.manifest.ingest import iter_json_table
from app.manifest.ingest import iter_sqlite_table
from app.manifest.release import Release
from app.manifest.settings import ManifestSettings
from app.manifest.sources import TableSources
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from devtools.demo.data import BAD_KEYS
from tests.conftest import API_KEY
from tests.conftest import DEMO_ITEMS
from tests.conftest import snapshot

GOOD_KEYS = ["0", "7", "999999999", "1000000000", "4294967295"]
# Not hashes: signs, leading zeros, fractions, spaces, words, past 2**32 - 1, past int()'s limit.
NOT_HASHES = ["-1", "+7", "007", "1.5", "1e3", " 7", "seven", "", "4294967296", "9" * 5000]
# Ids a SQLite table may hold that are no signed 32-bit hash.
NOT_SQLITE_HASHES: list[object] = [2**32, -(2**31) - 1, 2**40, "7", 1.5, None, b"7"]
# What a check records beside a release's data: the only keys a failed sync may change.
BOOKKEEPING = ("last_check", "checks", "lock", "staging")


def sync_in_app(app: Flask) -> sync.SyncResult:
    """Run the sync engine in-process, as a worker would."""
    with app.app_context():
        return sync.run(get_store(), get_bungie(), trigger="test")


def ingest(table: Mapping[str, object], slab_bytes: int = 64) -> list[str]:
    """Return the keys read from a JSON table (cut into slabs of `slab_bytes`)."""
    batches = iter_json_table([json.dumps(table).encode()], slab_bytes=slab_bytes)
    return [key.decode() for batch in batches for key in batch.keys]


def shown(key: str) -> str:
    """Return a bad key as a refusal quotes it (at most its first 40 characters)."""
    return repr(key[:40])


def sqlite_table(path: Path, ids: list[object]) -> str:
    """Write a SQLite item table with these ids; return the database path."""
    connection = sqlite3.connect(path)
    # Not Bungie's schema (`id INTEGER PRIMARY KEY`): here an id can be any SQLite value.
    connection.execute(f"CREATE TABLE {ITEM_TABLE} (id, json BLOB)")
    connection.executemany(
        f"INSERT INTO {ITEM_TABLE} VALUES (?, ?)",  # noqa: S608 - a constant
        [(row_id, b'{"hash": 1}') for row_id in ids],
    )
    connection.commit()
    connection.close()
    return str(path)


def data_keys(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every key under `prefix` but a check's records, with its content."""
    found = snapshot(client, prefix, skip=BOOKKEEPING)
    return {k: v for k, v in found.items() if not k.startswith(f"{prefix}:task:".encode())}


def what_readers_get(client: FlaskClient, item_hash: int) -> list[tuple[int, bytes]]:
    """What the pages and the API answer about the live release's items."""
    return [
        (found.status_code, found.get_data())
        for found in (
            client.get("/items"),
            client.get("/items", query_string={"q": "a", "page": 2}),
            client.get(f"/items/{item_hash}"),
            client.get("/api/v1/items", query_string={"per_page": 200}),
            client.get(f"/api/v1/items/{item_hash}"),
            client.get(f"/api/v1/definitions/{ITEM_TABLE}/{item_hash}"),
        )
    ]


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


# -- ingest: one bad key refuses the table, naming the key ----------------------------------------


def test_a_json_table_keyed_by_unsigned_32_bit_hashes_in_decimal_is_read_whole() -> None:
    definition = {"hash": 1, "displayProperties": {"name": "x"}}

    assert sorted(ingest(dict.fromkeys(GOOD_KEYS, definition))) == sorted(GOOD_KEYS)


@pytest.mark.parametrize("bad", NOT_HASHES, ids=lambda key: repr(key[:12]))
@pytest.mark.parametrize("slab_bytes", [64, 1024 * 1024], ids=["small slabs", "one slab"])
def test_one_key_that_is_not_a_hash_refuses_a_json_table(bad: str, slab_bytes: int) -> None:
    definition = {"hash": 1, "displayProperties": {"name": "x"}}
    # The bad key in the middle: good entries come before it, and after.
    keys = [*GOOD_KEYS[:2], bad, *GOOD_KEYS[2:]]

    with pytest.raises(TableInvalid) as refused:
        ingest(dict.fromkeys(keys, definition), slab_bytes=slab_bytes)

    message = str(refused.value)
    assert "not a definition hash" in message
    assert shown(bad) in message
    assert len(message) < 200  # a key of 5,000 digits is cut short


@pytest.mark.parametrize("bad", NOT_SQLITE_HASHES, ids=repr)
def test_one_id_that_is_not_a_32_bit_hash_refuses_a_sqlite_table(
    tmp_path: Path, bad: object
) -> None:
    path = sqlite_table(tmp_path / "world.content", [7, -1, bad, 2**31 - 1, -(2**31)])

    with pytest.raises(TableInvalid) as refused:
        list(iter_sqlite_table(path, ITEM_TABLE, batch=2))

    message = str(refused.value)
    assert "not a definition hash" in message
    assert repr(bad)[:40] in message


def test_a_sqlite_table_of_32_bit_ids_is_read_whole_as_unsigned_hashes(tmp_path: Path) -> None:
    good = [7, -1, 2**31 - 1, -(2**31)]
    path = sqlite_table(tmp_path / "world.content", list(good))

    batches = list(iter_sqlite_table(path, ITEM_TABLE, batch=3))

    kept = sorted(int(key) for batch in batches for key in batch.keys)
    assert kept == sorted(row_id & 0xFFFFFFFF for row_id in good)


# -- a sync over HTTP: refused whole, the live release serves on ----------------------------------


def test_a_table_with_bad_keys_fails_its_sync_and_the_live_release_serves_on(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    redis_client: redis.Redis,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.extensions["celery"].control, "ping", lambda **_: [])
    first = sync_in_app(app)
    assert first.outcome == sync.UPDATED, first.summary()
    some_hash = int(next(iter(client.get("/api/v1/items").get_json()["items"]))["hash"])
    pages_before = what_readers_get(client, some_hash)
    assert [status for status, _ in pages_before] == [200] * len(pages_before)
    keys_before = data_keys(redis_client, key_prefix)
    admin.publish()  # a new release, whose item table comes with bad keys
    admin.fault("bad_key")
    with app.app_context():
        refused_id = Release.from_manifest(get_bungie().get_manifest(), get_store().settings).id
    assert refused_id != first.release_id

    result = sync_in_app(app)

    assert (result.outcome, result.error) == (sync.FAILED, "TableInvalid"), result.summary()
    message = result.message or ""
    assert message.startswith(f"{ITEM_TABLE} (en): ")
    assert "not a definition hash" in message
    assert any(shown(key) in message for key in BAD_KEYS), message
    # Nothing of the refused release is left: no key of its own, nothing staged.
    assert data_keys(redis_client, key_prefix) == keys_before
    assert not list(redis_client.scan_iter(match=f"{key_prefix}:*{refused_id}*"))
    with app.app_context():
        assert redis_client.hlen(get_store().keys.staging) == 0
    # Readers see the release they saw: the same pages, the same answers.
    with app.app_context():
        assert get_store().live_id() == first.release_id
    assert what_readers_get(client, some_hash) == pages_before
    # The dashboard says why, in words.
    dashboard = client.get("/").get_data(as_text=True)
    assert str(escape(message)) in dashboard

    # Once Bungie serves the table right again, the next sync takes the release.
    admin.clear_faults()
    assert sync_in_app(app).outcome == sync.UPDATED


def test_a_sqlite_table_with_an_id_that_is_no_hash_fails_its_sync_and_changes_nothing(
    redis_client: redis.Redis,
    settings: ManifestSettings,
    admin: DemoAdmin,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqlite_settings = replace(settings, format="sqlite")
    store = ManifestStore(redis_client, sqlite_settings)
    bungie = BungieClient.from_settings(sqlite_settings)
    first = sync.run(store, bungie)
    assert first.outcome == sync.UPDATED, first.summary()
    live_items = store.lookup_raw({ITEM_TABLE: None})[1][ITEM_TABLE]
    keys_before = data_keys(redis_client, key_prefix)
    admin.publish()
    # The new release's database, as downloaded, gets a row whose id is past 32 bits (Bungie's
    # schema makes `id` an INTEGER PRIMARY KEY: a 64-bit number fits).
    fetch: Callable[..., str] = TableSources._fetch_sqlite

    def fetch_tampered(self: TableSources, *args: Any) -> str:
        database = fetch(self, *args)
        connection = sqlite3.connect(database)
        connection.execute(
            f"INSERT INTO {ITEM_TABLE} (id, json) VALUES (?, ?)",  # noqa: S608 - a constant
            (2**32 + 5, '{"hash": 5}'),
        )
        connection.commit()
        connection.close()
        return database

    monkeypatch.setattr(TableSources, "_fetch_sqlite", fetch_tampered)

    result = sync.run(store, bungie)

    assert (result.outcome, result.error) == (sync.FAILED, "TableInvalid"), result.summary()
    message = result.message or ""
    assert message.startswith(f"{ITEM_TABLE} (en): ")
    assert "not a definition hash" in message
    assert str(2**32 + 5) in message
    assert store.live_id() == first.release_id
    assert store.lookup_raw({ITEM_TABLE: None})[1][ITEM_TABLE] == live_items
    assert data_keys(redis_client, key_prefix) == keys_before
    assert redis_client.hlen(store.keys.staging) == 0
    bungie.close()


# -- search over a release with rows written into Redis by hand -----------------------------------


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
    stored_item = redis_client.hget(key, next(iter(redis_client.hkeys(key))))
    assert isinstance(stored_item, bytes)
    bad_rows: dict[EncodableT, EncodableT] = {
        b"not-a-hash": item,
        b"-1": item,
        b"9" * 5000: item,
        # A real stored item under a key that is not a hash.
        b"0042": stored_item,
        b"17": b"[1, 2]",
        b"18": b'"a string"',
        b"19": b"\x00 not json {",
        # A digest, then bytes that are no zstd frame.
        b"20": b"\x01" * 8 + b"not a frame of zstd",
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
    # Nor does the page of one of them: a row that cannot be read counts as absent.
    for number in (17, 18, 19, 20):
        item_page = client.get(f"/items/{number}")
        assert item_page.status_code == 404
        assert f"There is no item {number}" in item_page.get_data(as_text=True)
        api_item = client.get(f"/api/v1/items/{number}")
        assert api_item.status_code == 404
        assert api_item.is_json
        definition = client.get(f"/api/v1/definitions/{ITEM_TABLE}/{number}")
        assert definition.status_code == 404
        assert definition.is_json
