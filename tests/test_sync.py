"""sync.run against the demo origin over real HTTP and a real Redis: what readers see."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import cast

import pytest
import redis
import requests

from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.packing import stored_digest
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import WHOLE_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import DEMO_ITEMS
from tests.conftest import snapshot
from tests.test_takeover import Gate

BOOKKEEPING = ("last_check", "checks", "lock")


def item_file(admin: DemoAdmin, origin_url: str, lang: str = "en") -> dict[str, dict]:
    path = admin.state()["paths"]["jsonWorldComponentContentPaths"][lang][ITEM_TABLE]
    response = requests.get(origin_url + path, timeout=30)
    response.raise_for_status()
    return response.json()


def content_requests(admin: DemoAdmin) -> list[dict]:
    return [r for r in admin.requests_log() if r["path"].startswith("/common/")]


def test_first_sync_fills_the_cache(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, origin: DemoOriginProcess
) -> None:
    progress: list[sync.Progress] = []
    result = sync.run(
        store, bungie, trigger="test", requested_by="tester", progress=progress.append
    )

    assert result.outcome == sync.UPDATED, result.summary()
    assert result.counts["en"][ITEM_TABLE] == DEMO_ITEMS
    assert store.live_id() == result.release_id
    # What a reader gets: the whole definition, every field as the origin serves it, by hash.
    items = item_file(admin, origin.url)
    some_hash, raw = next(iter(items.items()))
    stored = store.definition(ITEM_TABLE, int(some_hash))
    assert stored is not None
    assert stored == raw
    assert "stats" in stored
    assert "sockets" in stored
    assert store.definition(ITEM_TABLE, 12345) is None
    # The progress callback saw every phase and the item table's bytes.
    phases = [p.phase for p in progress]
    assert phases[0] == "checking"
    assert "ingesting" in phases
    assert phases[-1] == "committing"
    assert any(p.table == ITEM_TABLE and p.bytes_total for p in progress)
    # The release and its history entry remember the trigger.
    live = store.live_release()
    assert live is not None
    assert live.trigger["requested_by"] == "tester"
    assert store.history()[0]["id"] == result.release_id
    check = store.last_check()
    assert check is not None
    assert check["outcome"] == sync.UPDATED


def test_search_finds_items_by_name_any_case(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, origin: DemoOriginProcess
) -> None:
    sync.run(store, bungie)
    items = item_file(admin, origin.url)
    name = next(
        d["displayProperties"]["name"]
        for d in items.values()
        if len(d["displayProperties"]["name"]) > 6
    )
    word = name.split()[-1]

    page = store.search(word.upper(), per_page=500)
    expected = {
        h for h, d in items.items() if word.casefold() in d["displayProperties"]["name"].casefold()
    }
    assert page.total == len(expected)
    assert {str(i["hash"]) for i in page.items} == expected

    armor = store.search("", item_type=2, class_type=1, per_page=500)
    expected_armor = {h for h, d in items.items() if d["itemType"] == 2 and d["classType"] == 1}
    assert {str(i["hash"]) for i in armor.items} == expected_armor

    exotic = store.search("", tier=6, per_page=10, page=2)
    assert exotic.page == 2
    assert all(i["inventory"]["tierType"] == 6 for i in exotic.items)
    assert store.search("no such item name at all").total == 0


@pytest.mark.parametrize("track_live", [True, False], ids=["tracked", "untracked"])
def test_a_search_reads_the_release_live_now(
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    origin: DemoOriginProcess,
    track_live: bool,
) -> None:
    store = ManifestStore(store.redis, replace(store.settings, track_live=track_live))
    first = sync.run(store, bungie)
    assert store.search("", per_page=200).release_id == first.release_id
    old_items = item_file(admin, origin.url)
    admin.publish(changed=DEMO_ITEMS // 2, added=0, removed=0)
    second = sync.run(store, bungie)
    new_items = item_file(admin, origin.url)

    # This process last searched the first release: the search notices, and reads the live one.
    page = store.search("", per_page=200)
    assert page.release_id == second.release_id
    names = {str(i["hash"]): i["displayProperties"]["name"] for i in page.items}
    assert names == {h: new_items[h]["displayProperties"]["name"] for h in names}
    assert names != {h: old_items[h]["displayProperties"]["name"] for h in names}
    shown = store.search("", per_page=200, definitions=False).rows
    assert {str(row.hash): row.name for row in shown} == names


@pytest.mark.budget
@pytest.mark.parametrize("track_live", [True, False], ids=["tracked", "untracked"])
def test_budget_a_search_takes_one_round_trip_and_its_rows_none_once_tracked(
    store: ManifestStore,
    bungie: BungieClient,
    round_trips: list[list[tuple[str, ...]]],
    track_live: bool,
) -> None:
    store = ManifestStore(store.redis, replace(store.settings, track_live=track_live))
    live = sync.run(store, bungie)
    assert store.search("", per_page=200).release_id == live.release_id
    assert store.search("", per_page=200, definitions=False).rows
    round_trips.clear()

    assert store.search("a", per_page=50).items
    assert store.search("a", per_page=50, definitions=False).rows

    trips = [[command[0] for command in trip] for trip in round_trips]
    if track_live:
        # Redis vouches for the live release: definitions take one HMGET, the rows nothing.
        assert trips == [["HMGET"]]
    else:
        assert trips == [["GET", "HMGET", "GET"], ["GET", "GET"]]
    assert live.release_id is not None
    assert round_trips[0][trips[0].index("HMGET")][1] == store.keys.table(
        live.release_id, "en", ITEM_TABLE
    )


@pytest.mark.budget
@pytest.mark.parametrize("track_live", [True, False], ids=["tracked", "untracked"])
def test_budget_a_value_kept_per_release_is_read_beside_the_live_id_in_one_round_trip(
    store: ManifestStore,
    bungie: BungieClient,
    key_prefix: str,
    redis_client: redis.Redis,
    round_trips: list[list[tuple[str, ...]]],
    track_live: bool,
) -> None:
    store = ManifestStore(store.redis, replace(store.settings, track_live=track_live))
    first = sync.run(store, bungie)
    redis_client.set(f"{key_prefix}:kept", b"made against the first release")
    store.reader_live_id()  # the pointer is read (or known) once per release, not per value
    round_trips.clear()

    live, value = store.read_beside_live(f"{key_prefix}:kept")

    assert (live, value) == (first.release_id, b"made against the first release")
    trips = [[command[0] for command in trip] for trip in round_trips]
    assert trips == ([["GET"]] if track_live else [["GET", "GET"]])


def test_second_sync_is_unchanged_and_writes_nothing(
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    first = sync.run(store, bungie)
    before = snapshot(redis_client, key_prefix, skip=BOOKKEEPING)
    admin.clear_requests_log()

    second = sync.run(store, bungie)

    # One request to Bungie (the manifest), and no content.
    assert second.outcome == sync.UNCHANGED
    assert second.release_id == first.release_id
    assert content_requests(admin) == []
    assert len(admin.requests_log()) == 1
    assert snapshot(redis_client, key_prefix, skip=BOOKKEEPING) == before
    check = store.last_check()
    assert check is not None
    assert check["outcome"] == sync.UNCHANGED


@pytest.mark.budget
def test_budget_an_unchanged_check_takes_one_round_trip(
    store: ManifestStore, bungie: BungieClient, round_trips: list[list[tuple[str, ...]]]
) -> None:
    sync.run(store, bungie)
    round_trips.clear()

    assert sync.run(store, bungie).outcome == sync.UNCHANGED

    # One round trip that tells the check is unchanged and records it.
    assert [[command[0] for command in trip] for trip in round_trips] == [["EVALSHA"]]


def test_a_published_release_swaps_in_with_the_right_diff(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, origin: DemoOriginProcess
) -> None:
    first = sync.run(store, bungie)
    old_items = item_file(admin, origin.url)
    published = admin.publish()
    new_items = item_file(admin, origin.url)

    result = sync.run(store, bungie)

    assert result.outcome == sync.UPDATED
    assert result.previous_id == first.release_id
    items = next(d for d in result.diffs if d.table == ITEM_TABLE)
    added = set(new_items) - set(old_items)
    removed = set(old_items) - set(new_items)
    assert items.added == len(added) == len(published["added"])
    assert items.removed == len(removed) == len(published["removed"])
    assert items.changed == len(published["changed"])
    assert {str(h) for h, _ in items.added_names} <= added
    changed_hash, changed_name = items.changed_names[0]
    assert new_items[str(changed_hash)]["displayProperties"]["name"] == changed_name
    # Readers now get the new release; removed items are gone from it.
    assert store.definition(ITEM_TABLE, int(next(iter(removed)))) is None
    assert store.definition(ITEM_TABLE, int(next(iter(added)))) is not None
    assert result.change is not None
    assert result.change["old_version"] != result.change["new_version"]


def test_readers_never_see_a_mixed_release(
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    origin: DemoOriginProcess,
    redis_client: redis.Redis,
    settings: ManifestSettings,
) -> None:
    sync.run(store, bungie)
    old_items = item_file(admin, origin.url)
    admin.publish(changed=DEMO_ITEMS // 2, added=0, removed=0)
    new_items = item_file(admin, origin.url)
    hashes = [int(h) for h in old_items]
    names = {
        "old": tuple(old_items[str(h)]["displayProperties"]["name"] for h in hashes),
        "new": tuple(new_items[str(h)]["displayProperties"]["name"] for h in hashes),
    }
    reader_store = ManifestStore(
        redis.Redis(connection_pool=redis_client.connection_pool), settings
    )
    seen: list[tuple[str, ...]] = []
    reading, done = threading.Event(), threading.Event()

    def names_now() -> tuple[str, ...]:
        found = reader_store.definitions(ITEM_TABLE, hashes)
        read_names = []
        for h in hashes:
            definition = found[h]
            assert definition is not None
            read_names.append(definition["displayProperties"]["name"])
        return tuple(read_names)

    def read() -> None:
        while not done.is_set():
            seen.append(names_now())
            reading.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert reading.wait(10)
        result = sync.run(store, bungie)
    finally:
        done.set()
        reader.join()

    assert result.outcome == sync.UPDATED
    assert set(seen) <= {names["old"], names["new"]}, "a reader saw a mix of two releases"
    assert names_now() == names["new"]


def definitions_snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every kept release's definitions, dictionaries and records."""
    return snapshot(client, prefix, skip=(*BOOKKEEPING, "current", "history", "releases"))


def test_a_rollback_is_a_pointer_flip(
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    first = sync.run(store, bungie)
    first_items = store.lookup_raw({ITEM_TABLE: WHOLE_TABLE})[1][ITEM_TABLE]
    admin.publish()
    second = sync.run(store, bungie)
    assert second.release_id is not None
    admin.rollback()
    admin.clear_requests_log()
    data_before = definitions_snapshot(redis_client, key_prefix)

    back = sync.run(store, bungie)

    assert back.outcome == sync.UPDATED
    assert back.rollback
    assert back.release_id == first.release_id
    assert store.live_id() == first.release_id
    assert content_requests(admin) == []
    # Nothing of either release is written again, nor any key added: the pointer moved.
    assert definitions_snapshot(redis_client, key_prefix) == data_before
    assert store.lookup_raw({ITEM_TABLE: WHOLE_TABLE})[1][ITEM_TABLE] == first_items
    forward = next(d for d in second.diffs if d.table == ITEM_TABLE)
    backward = next(d for d in back.diffs if d.table == ITEM_TABLE)
    assert (backward.added, backward.removed, backward.changed) == (
        forward.removed,
        forward.added,
        forward.changed,
    )
    assert store.history()[0]["rollback"] is True

    # The next build after the rollback compares with the digests its definitions start with.
    published = admin.publish(changed=7, added=3, removed=2)
    after = sync.run(store, bungie)
    items = next(d for d in after.diffs if d.table == ITEM_TABLE)
    assert (items.added, items.removed, items.changed) == (3, 2, 7)
    assert len(published["changed"]) == 7


def test_only_two_releases_are_kept(
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    ids: list[str] = []
    for _ in range(3):
        release_id = sync.run(store, bungie).release_id
        assert release_id is not None
        ids.append(release_id)
        admin.publish()
    assert store.kept_ids() == [ids[2], ids[1]]
    assert not list(redis_client.scan_iter(match=f"{key_prefix}:{ids[0]}:*"))
    assert redis_client.exists(store.keys.release(ids[0])) == 0
    entry = store.history_entry(ids[0])
    assert entry is not None
    assert entry["version"]  # the record of what happened stays


def test_sqlite_format_gives_the_same_cache_as_json(
    redis_client: redis.Redis, settings: ManifestSettings, admin: DemoAdmin, key_prefix: str
) -> None:
    json_store = ManifestStore(redis_client, settings)
    sqlite_settings = replace(settings, format="sqlite", key_prefix=f"{key_prefix}:sqlite")
    sqlite_store = ManifestStore(redis_client, sqlite_settings)

    from_json = sync.run(json_store, BungieClient.from_settings(settings))
    from_sqlite = sync.run(sqlite_store, BungieClient.from_settings(sqlite_settings))

    assert from_sqlite.outcome == sync.UPDATED, from_sqlite.summary()
    assert from_sqlite.counts == from_json.counts
    assert from_json.release_id is not None
    assert from_sqlite.release_id is not None
    # The same definitions with the same digests (how each compresses depends on the order
    # its dictionary's sample came in, which differs between the two formats).
    for table in settings.tables:
        json_key = json_store.keys.table(from_json.release_id, "en", table)
        sqlite_key = sqlite_store.keys.table(from_sqlite.release_id, "en", table)
        digests = [
            {key: stored_digest(cast(bytes, v)) for key, v in redis_client.hgetall(k).items()}
            for k in (json_key, sqlite_key)
        ]
        assert digests[0] == digests[1], table
        whole = {table: WHOLE_TABLE}
        json_read = json_store.lookup_raw(whole)[1][table]
        sqlite_read = sqlite_store.lookup_raw(whole)[1][table]
        assert len(json_read) == from_json.counts["en"][table]
        assert sqlite_read == json_read, table
    assert sqlite_store.search("a").total == json_store.search("a").total


def test_every_configured_language_is_cached(
    redis_client: redis.Redis, settings: ManifestSettings, admin: DemoAdmin
) -> None:
    multi = replace(settings, languages=("en", "fr"))
    store = ManifestStore(redis_client, multi)
    result = sync.run(store, BungieClient.from_settings(multi))
    assert result.counts["fr"][ITEM_TABLE] == DEMO_ITEMS
    some_hash = int(next(iter(store.search("", per_page=1, lang="fr").items))["hash"])
    english = store.definitions(ITEM_TABLE, [some_hash], lang="en")[some_hash]
    french = store.definitions(ITEM_TABLE, [some_hash], lang="fr")[some_hash]
    assert english is not None
    assert french is not None
    assert english["displayProperties"]["name"] != french["displayProperties"]["name"]


def test_concurrent_runs_make_one_sync(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, settings: ManifestSettings
) -> None:
    # Hold the first run, lock in hand, as it starts on the item table, until the others have
    # had their answer: however slow the machine, they arrive while it works.
    first = Gate(lambda p: p.phase == "downloading" and p.table == ITEM_TABLE)
    results: list[sync.SyncResult] = []

    def run_first() -> None:
        results.append(sync.run(store, bungie, progress=first))

    runner = threading.Thread(target=run_first)
    runner.start()
    try:
        assert first.reached.wait(30), results
        others = [
            sync.run(ManifestStore(store.redis, settings), BungieClient.from_settings(settings))
            for _ in range(3)
        ]
    finally:
        first.go_on.set()
        runner.join()

    assert results[0].outcome == sync.UPDATED
    assert {o.outcome for o in others} == {sync.BUSY}
    assert {o.running_id for o in others} == {results[0].run_id}
    item_requests = [r for r in content_requests(admin) if ITEM_TABLE in r["path"]]
    assert len(item_requests) == 1


def test_the_lock_is_extended_while_work_goes_on(
    redis_client: redis.Redis, settings: ManifestSettings, admin: DemoAdmin
) -> None:
    # A lock timeout far shorter than the sync: without extension another run could start.
    short = replace(settings, lock_timeout=2.0)
    store = ManifestStore(redis_client, short)
    admin.fault("slow_drip", table=ITEM_TABLE, chunk=8192, delay=0.05)
    holders: list[str | None] = []

    def watch(progress: sync.Progress) -> None:
        if progress.phase != "checking":  # a check takes no lock; what follows holds it
            holders.append(store.lock("observer").holder())

    result = sync.run(store, BungieClient.from_settings(short), progress=watch)

    assert result.outcome == sync.UPDATED
    assert result.timings["total"] > 1.5 * short.lock_timeout
    assert set(holders) == {result.run_id}
    assert store.lock("observer").holder() is None


def test_a_lock_left_by_a_crashed_run_expires(
    redis_client: redis.Redis, store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    # Long enough for the first run to reach the lock however slow the machine (it asks the
    # origin for the manifest first).
    redis_client.set(store.keys.lock, "crashed-run", px=3000)
    redis_client.set(store.keys.heartbeat("crashed-run"), 1, px=3000)  # it beat until it died
    assert sync.run(store, bungie).outcome == sync.BUSY
    deadline = time.monotonic() + 10
    while redis_client.exists(store.keys.lock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_client.exists(store.keys.lock)
    assert sync.run(store, bungie).outcome == sync.UPDATED


def test_lookup_reads_several_tables_and_whole_small_ones_at_once(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, origin: DemoOriginProcess
) -> None:
    sync.run(store, bungie)
    some_hash = int(next(iter(item_file(admin, origin.url))))
    release_id, found = store.lookup(
        {ITEM_TABLE: [some_hash, 1], "DestinyDamageTypeDefinition": WHOLE_TABLE}
    )
    assert release_id == store.live_id()
    item = found[ITEM_TABLE][some_hash]
    assert item is not None
    assert item["hash"] == some_hash
    assert found[ITEM_TABLE][1] is None
    damage = found["DestinyDamageTypeDefinition"]
    live = store.live_release()
    assert live is not None
    assert len(damage) == live.counts["en"]["DestinyDamageTypeDefinition"]
    assert all(
        definition is not None and definition["hash"] == h for h, definition in damage.items()
    )
