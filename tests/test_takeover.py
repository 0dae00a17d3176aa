"""A sync taken over while it still works (it stopped beating, yet runs on) cannot spoil the
release of the run that took over: what that run commits is whole, whatever the first one does
once it wakes up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.release import Release
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import WHOLE_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess

# How long a step may take before the test gives up waiting on it (a bound, not a timing).
WAIT = 60.0
SECOND_TABLE = "DestinyClassDefinition"


class Gate:
    """Hold a run at the first progress `stop_at` accepts, until the test lets it go on."""

    def __init__(self, stop_at: Callable[[sync.Progress], bool]) -> None:
        self.stop_at = stop_at
        self.reached = threading.Event()
        self.go_on = threading.Event()

    def __call__(self, progress: sync.Progress) -> None:
        if not self.reached.is_set() and self.stop_at(progress):
            self.reached.set()
            self.go_on.wait(WAIT)


@pytest.fixture
def runs() -> Iterator[ThreadPoolExecutor]:
    """Two threads, one per sync run."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="takeover") as pool:
        yield pool


@pytest.fixture
def clients(settings: ManifestSettings) -> Iterator[tuple[BungieClient, BungieClient]]:
    """A Bungie client per run, as two workers have."""
    first = BungieClient.from_settings(settings)
    second = BungieClient.from_settings(settings)
    yield first, second
    first.close()
    second.close()


def origin_counts(
    admin: DemoAdmin, origin: DemoOriginProcess, store: ManifestStore
) -> dict[str, dict[str, int]]:
    """Return the entries of each table the origin serves, by language."""
    paths = admin.state()["paths"]["jsonWorldComponentContentPaths"]
    counts: dict[str, dict[str, int]] = {}
    for lang in store.settings.languages:
        for table in store.settings.tables:
            response = requests.get(origin.url + paths[lang][table], timeout=30)
            response.raise_for_status()
            counts.setdefault(lang, {})[table] = len(response.json())
    return counts


def take_over(
    runs: ThreadPoolExecutor,
    store: ManifestStore,
    clients: tuple[BungieClient, BungieClient],
    redis_client: redis.Redis,
    first_stops_at: Callable[[sync.Progress], bool],
) -> tuple[Gate, Future[sync.SyncResult], Gate, Future[sync.SyncResult]]:
    """Start run A and hold it at `first_stops_at`; let its heartbeat lapse; start run B, which
    takes the lock over as from a dead holder, and hold B just before its commit."""
    beat = store.keys.heartbeat("run-a")
    redis_client.set(beat, 1, ex=120)  # A beats: it is alive and holds the lock
    first = Gate(first_stops_at)
    run_a = runs.submit(sync.run, store, clients[0], run_id="run-a", beating=True, progress=first)
    assert first.reached.wait(WAIT), run_a.result(0) if run_a.done() else "A never got there"
    assert store.lock("observer").holder() == "run-a"

    redis_client.delete(beat)  # A is silent (a paused process, a stalled Redis): it lapses
    second = Gate(lambda progress: progress.phase == "committing")
    run_b = runs.submit(sync.run, store, clients[1], run_id="run-b", progress=second)
    assert second.reached.wait(WAIT), run_b.result(0) if run_b.done() else "B never got there"
    assert store.lock("observer").holder() == "run-b"  # B took the lock over
    return first, run_a, second, run_b


def assert_whole(
    store: ManifestStore, result: sync.SyncResult, counts: dict[str, dict[str, int]]
) -> None:
    """The live release is the one `result` committed, and every table of it is whole."""
    assert result.outcome == sync.UPDATED, result.summary()
    live = store.live_release()
    assert live is not None
    assert live.id == result.release_id
    held = {
        lang: {table: store.redis.hlen(store.keys.table(live.id, lang, table)) for table in tables}
        for lang, tables in counts.items()
    }
    assert held == counts
    # The item table is compressed with a dictionary of its own ...
    for lang in counts:
        assert store.redis.exists(store.keys.dictionary(live.id, lang, ITEM_TABLE))
    # ... and what a reader gets is every definition of every table, from that release, each
    # one read back whole (a dictionary of the other run's would leave none readable).
    for lang, tables in counts.items():
        read_from, found = store.lookup(dict.fromkeys(tables, WHOLE_TABLE), lang)
        assert read_from == live.id
        assert {table: len(found[table]) for table in tables} == tables
        unreadable = [h for table in tables for h, d in found[table].items() if d is None]
        assert unreadable == []
    assert store.redis.hlen(store.keys.staging) == 0


def test_a_run_taken_over_that_then_loses_its_commit_leaves_the_new_release_whole(
    runs: ThreadPoolExecutor,
    store: ManifestStore,
    clients: tuple[BungieClient, BungieClient],
    redis_client: redis.Redis,
    admin: DemoAdmin,
    origin: DemoOriginProcess,
) -> None:
    first, run_a, second, run_b = take_over(
        runs, store, clients, redis_client, lambda progress: progress.phase == "committing"
    )

    first.go_on.set()  # A wakes up and commits: the lock is no longer its own
    result_a = run_a.result(WAIT)
    second.go_on.set()
    result_b = run_b.result(WAIT)

    assert (result_a.outcome, result_a.error) == (sync.FAILED, "LockLost")
    assert_whole(store, result_b, origin_counts(admin, origin, store))


def test_a_run_taken_over_that_then_fails_otherwise_leaves_the_new_release_whole(
    runs: ThreadPoolExecutor,
    store: ManifestStore,
    clients: tuple[BungieClient, BungieClient],
    redis_client: redis.Redis,
    admin: DemoAdmin,
    origin: DemoOriginProcess,
) -> None:
    first, run_a, second, run_b = take_over(
        runs,
        store,
        clients,
        redis_client,
        lambda progress: progress.phase == "downloading" and progress.table == SECOND_TABLE,
    )
    counts = origin_counts(admin, origin, store)
    # A wakes up mid-build and fails before it learns it lost the lock (its next extension is
    # not due yet): the table it downloads next is gone.
    admin.fault("not_found_always", table=SECOND_TABLE)

    first.go_on.set()
    result_a = run_a.result(WAIT)
    admin.clear_faults()
    second.go_on.set()
    result_b = run_b.result(WAIT)

    assert (result_a.outcome, result_a.error) == (sync.FAILED, "ContentNotFound")
    assert_whole(store, result_b, counts)


def test_a_discard_leaves_what_another_run_stages(
    store: ManifestStore, bungie: BungieClient, redis_client: redis.Redis
) -> None:
    release = Release.from_manifest(bungie.get_manifest(), store.settings)
    staged = store.keys.table(release.id, "en", ITEM_TABLE)
    assert store.lock("run-b").acquire()
    store.stage(release)
    redis_client.hset(staged, "1", b"{}")

    store.discard(release.id, store.lock("run-a"))  # a run that lost the lock to run-b

    assert redis_client.hlen(staged) == 1
    assert redis_client.hexists(store.keys.staging, release.id)

    store.discard(release.id, store.lock("run-b"))

    assert not redis_client.exists(staged)
    assert not redis_client.hexists(store.keys.staging, release.id)
