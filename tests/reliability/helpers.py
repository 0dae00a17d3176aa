"""What several scenarios share: the truth from the origin's files, a hammering reader, checks."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import msgspec
import redis
import requests
from celery import Celery
from celery.result import AsyncResult

from app.manifest.release import release_id
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store.records import logged_release
from devtools.demo.control import DemoAdmin
from tests.reliability.servers import wait_until

# What a reader compares: the fields of an item that a publish can change.
Fingerprint = tuple[str, str, int]

# Key names under a prefix that are not release data (see docs/DECISIONS.md, app/notify).
FIXED_KEYS = {
    "current",
    "metrics",
    "releases",
    "staging",
    "history",
    "checks",
    "last_check",
    "lock",
    "release",
    "notified",
    "notify",
    "alert",
    "task",
    "workers",
    "delivery",
    "rate",
}


class _Display(msgspec.Struct):
    name: str = ""
    description: str = ""


class _Inventory(msgspec.Struct):
    tierType: int = 0


class _Item(msgspec.Struct):
    displayProperties: _Display | None = None
    inventory: _Inventory | None = None


def _fingerprint(item: _Item) -> Fingerprint:
    display = item.displayProperties or _Display()
    return display.name, display.description, (item.inventory or _Inventory()).tierType


def stored_fingerprint(definition: Mapping[str, Any]) -> Fingerprint:
    """Return the fingerprint of a definition as the cache holds it."""
    display = definition.get("displayProperties") or {}
    inventory = definition.get("inventory") or {}
    return display.get("name", ""), display.get("description", ""), inventory.get("tierType", 0)


def origin_release(admin: DemoAdmin, settings: ManifestSettings) -> tuple[str, dict[int, Any]]:
    """Return the id of the release the origin serves now and its items' fingerprints, read
    from the item file itself (the truth a reader is compared with)."""
    paths = admin.state()["paths"]["jsonWorldComponentContentPaths"]
    chosen = {lang: {t: paths[lang][t] for t in settings.tables} for lang in settings.languages}
    response = requests.get(admin.url + chosen["en"][ITEM_TABLE], timeout=60)
    response.raise_for_status()
    items = msgspec.json.decode(response.content, type=dict[str, _Item])
    return release_id(settings.format, chosen), {
        int(key): _fingerprint(item) for key, item in items.items()
    }


def leftovers(client: redis.Redis, store: ManifestStore) -> list[str]:
    """Return keys that should not survive a good run: staging records, data or records of
    releases that are neither live nor the kept previous one, and change logs no entry of the
    history names."""
    kept = set(store.kept_ids())
    logged = {logged_release(entry) for entry in store.history(store.settings.history_length)}
    stray = []
    for raw in client.scan_iter(match=f"{store.keys.prefix}:*", count=1000):
        key = raw.decode()
        parts = key[len(store.keys.prefix) + 1 :].split(":")
        if parts[0] == "changes":
            if parts[1] not in logged:
                stray.append(key)
        elif (parts[0] == "release" and parts[1] not in kept) or (
            parts[0] not in FIXED_KEYS and parts[0] not in kept
        ):
            stray.append(key)
    if client.exists(store.keys.staging):
        stray.append(f"{store.keys.staging} -> {client.hkeys(store.keys.staging)}")
    return stray


def run_task(celery: Celery, task_id: str, timeout: float = 60) -> AsyncResult:
    """Wait until a task reached SUCCESS or FAILURE; return its result."""
    result = AsyncResult(task_id, app=celery)
    wait_until(lambda: result.state in ("SUCCESS", "FAILURE"), timeout, f"task {task_id}")
    return result


def send_beat_sync(celery: Celery) -> str:
    """Queue a sync exactly as beat does (no ticket), returning its task id."""
    return celery.send_task("manifest.sync", kwargs={"trigger": "beat"}).id


_COUNT = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return {id, redis.call('HLEN', ARGV[1] .. id .. ARGV[2])}
"""


@dataclass
class Expectation:
    """What readers may see: the hashes they ask for and each acceptable release's items."""

    sample: list[int]
    releases: dict[str, dict[int, Fingerprint]]


@dataclass
class ReadStats:
    reads: int = 0
    worst_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    seen: Counter[str] = field(default_factory=Counter)


class Reader(threading.Thread):
    """Hammer the store as the web app does and check every answer against the origin's files.

    Each round asks `lookup` (release id + definitions), `definitions` and the live item count;
    every answer must be the whole of one acceptable release: never a mix, never a part.
    """

    def __init__(self, store: ManifestStore, expectation: Expectation) -> None:
        super().__init__(daemon=True, name="reliability-reader")
        self.store = store
        self.expectation = expectation
        self.stats = ReadStats()
        self.tolerate_errors: tuple[type[BaseException], ...] = ()
        self.unavailable = 0
        self._stop_event = threading.Event()
        self._count = store.redis.register_script(_COUNT)

    def stop(self) -> ReadStats:
        self._stop_event.set()
        self.join(30)
        return self.stats

    def run(self) -> None:
        while not self._stop_event.is_set():
            expected = self.expectation
            started = time.perf_counter()
            try:
                release, found = self.store.lookup({ITEM_TABLE: expected.sample})
                values = self.store.definitions(ITEM_TABLE, expected.sample)
                counted = self._count(
                    keys=[self.store.keys.current],
                    args=[f"{self.store.keys.prefix}:", f":en:{ITEM_TABLE}"],
                )
            except self.tolerate_errors:
                self.unavailable += 1
                time.sleep(0.01)
                continue
            except Exception as exc:  # noqa: BLE001 - any failure of a read is a finding
                self._fail(f"read raised {type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            self.stats.worst_seconds = max(self.stats.worst_seconds, elapsed)
            self.stats.reads += 1
            self._check(expected, release, found[ITEM_TABLE], values, counted)

    def _check(
        self,
        expected: Expectation,
        release: str | None,
        found: Mapping[int, Any],
        values: Mapping[int, Any],
        counted: list[Any] | None,
    ) -> None:
        if release is None:
            self._fail("no live release")
            return
        self.stats.seen[release] += 1
        items = expected.releases.get(release)
        if items is None:
            self._fail(f"release {release} is none of {sorted(expected.releases)}")
            return
        wrong = _differences(items, found, expected.sample)
        if wrong:
            self._fail(f"lookup of {release}: {len(wrong)} wrong, e.g. {wrong[:2]}")
        if not any(
            not _differences(other, values, expected.sample) for other in expected.releases.values()
        ):
            self._fail("definitions() matched no single release (a mix or a part)")
        if counted:
            live, count = counted[0].decode(), int(counted[1])
            wanted = expected.releases.get(live)
            if wanted is not None and count != len(wanted):
                self._fail(f"release {live} holds {count} items, its file {len(wanted)}")

    def _fail(self, message: str) -> None:
        self.stats.error_count += 1
        if len(self.stats.errors) < 20:
            self.stats.errors.append(message)


def _differences(
    items: Mapping[int, Fingerprint], found: Mapping[int, Any], sample: Iterable[int]
) -> list[tuple[int, Any, Any]]:
    wrong = []
    for item_hash in sample:
        value = found.get(item_hash)
        seen = stored_fingerprint(value) if value is not None else None
        if seen != items.get(item_hash):
            wrong.append((item_hash, items.get(item_hash), seen))
    return wrong
