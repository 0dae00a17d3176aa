"""A release's change log, computed during its sync: exactly what the origin changed, nothing for
noise, kept after the release's tables are collected, and a rollback as the inverse."""

from __future__ import annotations

import json
from dataclasses import replace

import redis

from app.manifest import changes
from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin


def by_kind(log: list[changes.Change], table: str = ITEM_TABLE) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {kind: set() for kind in changes.KINDS}
    for change in log:
        if change["table"] == table:
            found[change["kind"]].add(change["hash"])
    return found


def test_a_first_release_has_no_change_log(store: ManifestStore, bungie: BungieClient) -> None:
    first = sync.run(store, bungie)
    assert first.release_id is not None
    assert store.change_log(first.release_id) == []
    info = store.release_info(first.release_id)
    assert info is not None
    assert info.changes is None


def test_the_log_lists_exactly_what_the_origin_changed(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    sync.run(store, bungie)
    published = admin.publish(added=3, removed=2, changed=4)  # every index moves too
    second = sync.run(store, bungie)
    assert second.release_id is not None

    log = store.change_log(second.release_id)

    found = by_kind(log)
    assert found[changes.ADDED] == set(published["added"])
    assert found[changes.REMOVED] == set(published["removed"])
    changed = found[changes.CHANGED] | found[changes.UNCLASSIFIED] | found[changes.RECLASSIFIED]
    assert changed == set(published["changed"])
    assert {c["table"] for c in log} == {ITEM_TABLE}, "a small table changed by its index alone"
    for change in log:
        paths = [field["path"] for field in change["fields"]]
        assert "index" not in paths
        assert bool(paths) == (change["kind"] not in (changes.ADDED, changes.REMOVED))
        assert change["name"], f"{change['hash']} is listed without a name"
    # The counts agree with the log, and the release says the log is whole.
    item_diff = next(d for d in second.diffs if d.table == ITEM_TABLE)
    assert (item_diff.added, item_diff.removed) == (3, 2)
    assert item_diff.changed + item_diff.unclassified + item_diff.reclassified == 4
    info = store.release_info(second.release_id)
    assert info is not None
    assert info.changes is not None
    assert (info.changes["kept"], info.changes["cut"]) == (len(log), 0)


def test_a_release_that_only_renumbers_has_an_empty_log(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    sync.run(store, bungie)
    admin.publish(added=0, removed=0, changed=0)
    second = sync.run(store, bungie)
    assert second.outcome == sync.UPDATED
    assert second.release_id is not None
    assert store.change_log(second.release_id) == []
    assert all((d.added, d.removed, d.changed) == (0, 0, 0) for d in second.diffs)


def test_a_definitions_history_outlives_its_releases_tables(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, redis_client: redis.Redis
) -> None:
    sync.run(store, bungie)
    published = admin.publish(added=0, removed=0, changed=1)
    changed_hash = published["changed"][0]
    changed_in = sync.run(store, bungie).release_id
    assert changed_in is not None
    for _ in range(2):  # two more releases: the one that changed it is no longer kept
        admin.publish(added=0, removed=0, changed=0)
        sync.run(store, bungie)
    assert changed_in not in store.kept_ids()
    assert not redis_client.exists(store.keys.table(changed_in, "en", ITEM_TABLE))

    history = store.definition_history(ITEM_TABLE, changed_hash)

    assert [(h["release_id"], h["kind"]) for h in history] == [(changed_in, "changed")]
    assert history[0]["fields"]
    assert store.change_log(changed_in)


def test_a_rollback_is_listed_as_the_inverse_of_what_it_undid(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    first = sync.run(store, bungie)
    published = admin.publish(added=1, removed=0, changed=1)
    second = sync.run(store, bungie)
    admin.rollback()
    back = sync.run(store, bungie)
    assert back.rollback
    assert back.release_id == first.release_id

    changed_history = store.definition_history(ITEM_TABLE, published["changed"][0])
    added_history = store.definition_history(ITEM_TABLE, published["added"][0])

    assert [(h["release_id"], h["rollback"]) for h in changed_history] == [
        (first.release_id, True),
        (second.release_id, False),
    ]
    undone, done = changed_history
    assert undone["fields"] == [changes.inverse_field(f) for f in done["fields"]]
    assert [h["kind"] for h in added_history] == ["removed", "added"]


def test_a_log_past_its_size_says_what_was_cut(
    redis_client: redis.Redis, settings: ManifestSettings, bungie: BungieClient, admin: DemoAdmin
) -> None:
    store = ManifestStore(redis_client, replace(settings, changes_max_bytes=2_000))
    sync.run(store, bungie)
    admin.publish(added=0, removed=0, changed=40)
    second = sync.run(store, bungie)
    assert second.release_id is not None

    info = store.release_info(second.release_id)

    assert info is not None
    assert info.changes is not None
    kept = store.change_log(second.release_id)
    assert info.changes["kept"] == len(kept) > 0
    assert info.changes["cut"] == 40 - len(kept) > 0
    assert info.changes["bytes"] <= 2_000
    # The counts stay whole: only the records were cut.
    assert next(d for d in second.diffs if d.table == ITEM_TABLE).changed == 40


def test_each_kind_of_change_is_logged_with_its_old_and_new_values(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    sync.run(store, bungie)
    truth = admin.publish(
        added=2, removed=2, changed=0, renamed=2, restatted=2, revealed=1, redacted=1
    )
    release_id = sync.run(store, bungie).release_id
    assert release_id is not None

    log = {change["hash"]: change for change in store.change_log(release_id)}

    expected_kinds = {
        **dict.fromkeys(truth["added"], changes.ADDED),
        **dict.fromkeys(truth["removed"], changes.REMOVED),
        **{r["hash"]: changes.CHANGED for r in truth["renamed"] + truth["restatted"]},
        **dict.fromkeys(truth["revealed"], changes.UNCLASSIFIED),
        **dict.fromkeys(truth["redacted"], changes.RECLASSIFIED),
    }
    assert {h: c["kind"] for h, c in log.items()} == expected_kinds
    for renamed in truth["renamed"]:
        assert log[renamed["hash"]]["fields"] == [
            {"path": "displayProperties.name", "old": renamed["old"], "new": renamed["new"]}
        ]
        assert log[renamed["hash"]]["name"] == renamed["new"]
    for restatted in truth["restatted"]:
        assert log[restatted["hash"]]["fields"] == [
            {"path": restatted["path"], "old": restatted["old"], "new": restatted["new"]}
        ]
    (revealed,) = truth["revealed"]
    assert {"path": "redacted", "old": True, "new": False} in log[revealed]["fields"]
    assert log[revealed]["name"]
    (redacted,) = truth["redacted"]
    assert {"path": "redacted", "old": False, "new": True} in log[redacted]["fields"]
    assert log[redacted]["name"], "a redacted definition keeps the name it had"


def test_a_flip_forward_shows_the_log_of_the_release_it_went_back_to(
    store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, redis_client: redis.Redis
) -> None:
    # A -> B (built), Bungie back to A (the inverse of B's log), then forward to B again: that
    # flip shows B's own log, the right way round.
    first = sync.run(store, bungie)
    published = admin.publish(added=0, removed=0, changed=0, renamed=1)
    second = sync.run(store, bungie)
    admin.rollback()
    sync.run(store, bungie)
    assert first.release_id is not None
    assert second.release_id is not None
    forward = store.history(1)[0] | {
        "id": second.release_id,
        "previous": first.release_id,
        "log": {"release": second.release_id, "inverse": False},
    }
    redis_client.lpush(store.keys.history, json.dumps(forward))
    renamed = published["renamed"][0]

    history = store.definition_history(ITEM_TABLE, renamed["hash"])

    names = [(h["rollback"], h["fields"][0]["old"], h["fields"][0]["new"]) for h in history]
    old, new = renamed["old"], renamed["new"]
    assert names == [(True, old, new), (True, new, old), (False, old, new)]
    assert store.changes_of(forward) == store.change_log(second.release_id)
