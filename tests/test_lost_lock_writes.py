"""A run that lost the sync lock writes nothing more: not a batch, not a dictionary (a run paused
past its heartbeat must not write into keys another run rebuilds; change records go through the
same guarded script)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis

from app.manifest.diff import TableDiff
from app.manifest.ingest import iter_json_table
from app.manifest.release import Release
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store import TableWriter
from app.manifest.store.lock import LockLost

ITEMS = {
    str(n): {"displayProperties": {"name": f"Item {n} " + "x" * 400}, "hash": n, "index": n}
    for n in range(1, 1500)
}


def release(store: ManifestStore) -> Release:
    settings = replace(store.settings, tables=(ITEM_TABLE,), languages=("en",))
    paths = {"en": {ITEM_TABLE: "/common/destiny2_content/json/en/items.json"}}
    return Release.from_manifest(
        {"version": "1", "jsonWorldComponentContentPaths": paths}, settings
    )


def test_a_run_that_lost_the_lock_writes_nothing(
    store: ManifestStore, redis_client: redis.Redis
) -> None:
    lost = store.lock("run-that-paused")
    assert lost.acquire()
    target = release(store)
    store.stage(target)
    writer = TableWriter(store, target.id, "en", ITEM_TABLE, TableDiff(ITEM_TABLE), None, lock=lost)
    batches = list(iter_json_table([json.dumps(ITEMS).encode()]))
    # Another run takes the lock over while this one is paused.
    redis_client.set(store.keys.lock, "run-that-took-over")

    with pytest.raises(LockLost):
        writer.write(batches[0])

    assert not redis_client.exists(store.keys.table(target.id, "en", ITEM_TABLE))
    assert not redis_client.exists(store.keys.dictionary(target.id, "en", ITEM_TABLE))
