"""Redis is full. With `maxmemory-policy noeviction` (what the broker needs, see
docs/RELIABILITY.md) a release too big for Redis fails clearly, the live one stays whole, and
the staged part is deleted (outside MULTI: Redis refuses a whole MULTI while over maxmemory,
deletes included), so Redis is usable again. With an evicting policy Redis silently drops
whatever it likes, releases and the lock included.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from config import TestingConfig
from config import settings_dict
from devtools.demo.control import DemoOriginProcess
from tests.conftest import API_KEY
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import Expectation
from tests.reliability.helpers import Reader
from tests.reliability.helpers import leftovers
from tests.reliability.helpers import origin_release
from tests.reliability.servers import RedisServer
from tests.reliability.servers import wait_until

MAXMEMORY = "3mb"  # Redis itself takes about 1 MB of it
FIRST_ITEMS = 2_000  # whole definitions, compressed: ~0.7 MB in Redis: fits
ADDED = 14_000  # the next release: ~4.5 MB more: does not


class StagingLeft(AssertionError):
    """A failed sync left its staged data (or its outcome unrecorded)."""


@pytest.fixture(scope="module")
def small_origin() -> Iterator[DemoOriginProcess]:
    args = ("--items", str(FIRST_ITEMS), "--seed", "3", "--languages", "en", "--api-key", API_KEY)
    with DemoOriginProcess(*args) as proc:
        yield proc


@pytest.fixture
def full(small_origin: DemoOriginProcess) -> Iterator[dict[str, Any]]:
    """A cache on a 3 MB Redis holding the first release; the origin then publishes one
    far too big for it."""
    admin = small_origin.admin
    admin.reset()
    base = ManifestSettings.from_mapping(settings_dict(TestingConfig))
    settings = replace(base, base_url=small_origin.url, key_prefix=unique("full"))
    yield {"admin": admin, "settings": settings}
    admin.reset()
    admin.close()


def fill_then_overflow(server: RedisServer, full: dict[str, Any]) -> dict[str, Any]:
    """Sync the first release, publish a far bigger one and sync it with a reader watching."""
    admin, settings = full["admin"], full["settings"]
    store = ManifestStore(server.client(), settings)
    bungie = BungieClient.from_settings(settings)
    assert sync.run(store, bungie).outcome == sync.UPDATED
    old_id, old_items = origin_release(admin, settings)
    admin.publish(added=ADDED)
    new_id, new_items = origin_release(admin, settings)
    sample = random.Random(5).sample(sorted(old_items), 200)
    reader = Reader(
        ManifestStore(server.client(), settings),
        Expectation(sample, {old_id: old_items, new_id: new_items}),
    )
    reader.tolerate_errors = (redis.RedisError,)
    reader.start()
    started = time.monotonic()
    try:
        result = sync.run(store, bungie)
        seconds = time.monotonic() - started
        rounds = reader.stats.reads + reader.unavailable
        wait_until(
            lambda: reader.stats.reads + reader.unavailable >= rounds + 20,
            30,
            "readers to keep reading after the failure",
        )
    finally:
        stats = reader.stop()
    return {
        "store": store,
        "result": result,
        "seconds": seconds,
        "old_id": old_id,
        "old_count": len(old_items),
        "stats": stats,
        "refused_reads": reader.unavailable,
        "bungie": bungie,
    }


def whole(store: ManifestStore, release_id: str, count: int) -> bool:
    key = store.keys.table(release_id, "en", ITEM_TABLE)
    return store.live_id() == release_id and store.redis.hlen(key) == count


def test_a_release_too_big_for_redis_fails_clearly_and_the_live_one_stays_whole(
    full: dict[str, Any], figures: Figures
) -> None:
    with RedisServer("--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction") as server:
        run = fill_then_overflow(server, full)
        store, result = run["store"], run["result"]
        live_whole = whole(store, run["old_id"], run["old_count"])
        memory = server.client().info("memory")

    assert (result.outcome, result.error) == (sync.FAILED, "OutOfMemoryError"), result.summary()
    assert "maxmemory" in result.message
    assert live_whole
    assert run["stats"].error_count == 0, run["stats"].errors
    assert run["refused_reads"] == 0
    figures.scenario("redis-full")["summary"] = {
        "maxmemory / policy": f"{MAXMEMORY} / noeviction",
        "live release": f"{run['old_count']:,} items",
        "new release": f"{run['old_count'] + ADDED:,} items (does not fit)",
        "outcome": f"{result.outcome}: {result.error} after {run['seconds']:.2f} s",
        "marked transient (retried by the task)": result.transient,
        "live release after": "unchanged, whole" if live_whole else "DAMAGED",
        "reader rounds during the sync / wrong / refused": (
            f"{run['stats'].reads} / {run['stats'].error_count} / {run['refused_reads']}"
        ),
        "used memory after the failure": memory["used_memory_human"],
    }


def test_a_release_too_big_for_redis_leaves_no_staging_and_redis_usable(
    full: dict[str, Any], figures: Figures
) -> None:
    with RedisServer("--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction") as server:
        run = fill_then_overflow(server, full)
        store = run["store"]
        stray = leftovers(store.redis, store)
        recorded = (store.last_check() or {}).get("outcome")
        try:
            following: Any = sync.run(store, run["bungie"]).outcome
        except redis.RedisError as exc:
            following = f"raised {type(exc).__name__}"
        memory = server.client().info("memory")["used_memory_human"]

    figures.scenario("redis-full")["rows"].append(
        {
            "after the failed sync": "(noeviction)",
            "staging keys left": len(stray),
            "last check recorded as": recorded,
            "the next sync": following,
            "used memory": memory,
        }
    )
    if stray or recorded != sync.FAILED or following not in (sync.FAILED, sync.UNCHANGED):
        raise StagingLeft(
            f"left {stray[:3]}; last check says {recorded!r}; the next sync {following}"
        )


def test_with_an_evicting_policy_redis_drops_what_readers_and_the_lock_need(
    full: dict[str, Any], figures: Figures
) -> None:
    """Why the app's Redis (and the broker's) must be noeviction: the same overflow under
    allkeys-lru loses data silently. This test asserts the damage, to keep the claim honest."""
    with RedisServer("--maxmemory", MAXMEMORY, "--maxmemory-policy", "allkeys-lru") as server:
        run = fill_then_overflow(server, full)
        store, result = run["store"], run["result"]
        evicted = server.client().info("stats")["evicted_keys"]
        live = store.live_release()
        live_count = store.redis.hlen(store.keys.table(live.id, "en", ITEM_TABLE)) if live else 0
    damage = []
    if live is None:
        damage.append("the live release pointer or record was evicted: readers see no release")
    elif live_count != live.counts["en"][ITEM_TABLE]:
        damage.append(f"the live release has {live_count} of {live.counts['en'][ITEM_TABLE]}")
    if result.error == "LockLost":
        damage.append("the sync lock was evicted mid-run (two syncs could run at once)")
    if run["stats"].error_count:
        damage.append(f"{run['stats'].error_count} reader rounds saw a partial release")
    figures.scenario("redis-evicting")["summary"] = {
        "maxmemory / policy": f"{MAXMEMORY} / allkeys-lru",
        "keys evicted": evicted,
        "the sync": f"{result.outcome}: {result.error}",
        "damage": "; ".join(damage) or "none visible this time",
    }
    assert evicted > 0
    assert damage, "Redis evicted keys, yet nothing the app needs was hit"
