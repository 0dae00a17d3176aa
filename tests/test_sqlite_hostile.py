"""A hostile SQLite manifest fails its sync promptly and clearly; readers see no change."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.errors import TableInvalid
from app.manifest.ingest import count_sqlite_rows
from app.manifest.ingest import iter_sqlite_table
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin
from devtools.demo.data import ENDLESS_VIEW
from tests.conftest import snapshot

BOOKKEEPING = ("last_check", "checks", "lock", "staging")


@pytest.fixture
def sqlite_settings(settings: ManifestSettings) -> ManifestSettings:
    """The engine's settings, reading Bungie's zipped SQLite database."""
    return replace(settings, format="sqlite")


@pytest.fixture
def sqlite_store(redis_client: redis.Redis, sqlite_settings: ManifestSettings) -> ManifestStore:
    return ManifestStore(redis_client, sqlite_settings)


@pytest.fixture
def sqlite_bungie(sqlite_settings: ManifestSettings) -> Iterator[BungieClient]:
    client = BungieClient.from_settings(sqlite_settings)
    yield client
    client.close()


def readers_view(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Return what readers see under `prefix`: every key but the checks' and tasks' records."""
    keys = snapshot(client, prefix, skip=BOOKKEEPING)
    return {
        key: dump for key, dump in keys.items() if not key.startswith(f"{prefix}:task:".encode())
    }


def database(tmp_path: Path, *statements: str) -> str:
    """Build a SQLite file from `statements`; return its path."""
    path = tmp_path / "world.content"
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()
    return str(path)


# The backstop: before the fix this sync never ended (the test process is stopped after 60 s).
@pytest.mark.timeout(60, method="thread")
def test_a_view_named_like_a_table_fails_the_sync_and_changes_nothing(
    sqlite_store: ManifestStore,
    sqlite_bungie: BungieClient,
    admin: DemoAdmin,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    first = sync.run(sqlite_store, sqlite_bungie)
    assert first.outcome == sync.UPDATED, first.summary()
    before = readers_view(redis_client, key_prefix)
    admin.fault("sqlite_view_bomb")

    result = sync.run(sqlite_store, sqlite_bungie)

    assert (result.outcome, result.error) == (sync.FAILED, "TableInvalid"), result.summary()
    assert f"{ITEM_TABLE} in the SQLite manifest is a view, not a table" in (result.message or "")
    assert sqlite_store.live_id() == first.release_id
    assert readers_view(redis_client, key_prefix) == before
    check = sqlite_store.last_check()
    assert check is not None
    assert check["error"] == "TableInvalid"


def test_a_view_is_neither_counted_nor_read(tmp_path: Path) -> None:
    path = database(tmp_path, f"CREATE VIEW {ITEM_TABLE} AS {ENDLESS_VIEW}")

    assert count_sqlite_rows(path, ITEM_TABLE, deadline=5.0) is None
    with pytest.raises(TableInvalid, match="is a view, not a table"):
        list(iter_sqlite_table(path, ITEM_TABLE, deadline=5.0))


def test_a_computed_column_is_refused(tmp_path: Path) -> None:
    # Each row's json would be worked out on reading: 100 MB of it, for every row.
    path = database(
        tmp_path,
        "CREATE TABLE DestinyInventoryItemDefinition (id INTEGER PRIMARY KEY, "
        "json TEXT GENERATED ALWAYS AS (printf('%.*c', 100000000, 'x')) VIRTUAL)",
        "INSERT INTO DestinyInventoryItemDefinition (id) VALUES (1), (2), (3)",
    )

    with pytest.raises(TableInvalid, match="plain"):
        list(iter_sqlite_table(path, ITEM_TABLE, deadline=5.0))


def test_a_read_past_its_deadline_is_stopped(tmp_path: Path) -> None:
    path = database(
        tmp_path,
        "CREATE TABLE DestinyInventoryItemDefinition (id INTEGER PRIMARY KEY NOT NULL, json BLOB)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "INSERT INTO DestinyInventoryItemDefinition SELECT i, json_object('hash', i) FROM n",
    )
    # A deadline already past: the first check of the progress handler stops the read.
    with pytest.raises(TableInvalid, match="MANIFEST_DOWNLOAD_DEADLINE"):
        list(iter_sqlite_table(path, ITEM_TABLE, deadline=0.0))
    # With time enough, the same table reads whole.
    batches = iter_sqlite_table(path, ITEM_TABLE, deadline=60.0)
    rows = [
        (key, data) for batch in batches for key, data in zip(batch.keys, batch.data, strict=True)
    ]
    assert len(rows) == 20000
    assert [(int(key), json.loads(data)) for key, data in rows[:3]] == [
        (number, {"hash": number}) for number in (1, 2, 3)
    ]


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ("[1, 2]", "entry 2 is not a JSON object"),
        ('"a string"', "entry 2 is not a JSON object"),
        ('{"hash": 2', "does not parse"),
        (None, "does not parse"),
    ],
    ids=["a list", "a string", "cut short", "null"],
)
def test_a_definition_that_is_not_a_json_object_refuses_the_table(
    tmp_path: Path, definition: str | None, message: str
) -> None:
    path = database(
        tmp_path,
        "CREATE TABLE DestinyInventoryItemDefinition (id INTEGER PRIMARY KEY NOT NULL, json BLOB)",
        "INSERT INTO DestinyInventoryItemDefinition VALUES (1, '{\"hash\": 1}'), (3, '{}')",
    )
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO DestinyInventoryItemDefinition VALUES (2, ?)", (definition,))
    connection.commit()
    connection.close()

    with pytest.raises(TableInvalid, match=re.escape(message)):
        list(iter_sqlite_table(path, ITEM_TABLE, deadline=5.0))
