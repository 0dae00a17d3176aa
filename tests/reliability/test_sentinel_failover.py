"""Scenario: the Redis primary is killed (SIGKILL) in the middle of a sync, and Sentinel fails
over to its replica.

Three sentinels, a primary and one replica, each a real redis-server on a port of its own; the
app and a Celery worker configured with REDIS_SENTINEL_URLS and REDIS_SENTINEL_MASTER only (the
broker and the result backend are Celery's sentinel:// ones). Readers reading through the app's
reader never see a mixed release; the interrupted sync fails cleanly; the sentinels promote the
replica; the next sync, triggered through the API, completes on it; every release that went
live gets one message at each destination, none lost, none twice.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import create_app
from app.extensions import get_reader
from app.extensions import get_redis
from app.extensions import get_settings
from app.extensions import get_store
from app.keys import Keys
from app.manifest.ingest import Batch
from app.manifest.ingest import iter_json_table
from app.manifest.live import UNKNOWN
from app.manifest.live import tracked_value
from app.manifest.release import Release
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store import ReleaseInfo
from app.manifest.store import TableWriter
from app.manifest.store.lock import PrimaryChanged
from app.manifest.store.lock import SyncLock
from app.notify import announce
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import fake_receiver
from tests.fake_slack import FakeSlack
from tests.fake_slack import fake_slack
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import Expectation
from tests.reliability.helpers import Reader
from tests.reliability.helpers import leftovers
from tests.reliability.helpers import origin_release
from tests.reliability.helpers import run_task
from tests.reliability.helpers import send_beat_sync
from tests.reliability.servers import RedisServer
from tests.reliability.servers import SentinelCluster
from tests.reliability.servers import link_up
from tests.reliability.servers import replica_of
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed: this scenario runs a primary, a replica and three "
    "sentinels of its own (apt-get install redis-server)",
)

MASTER = "manifest-primary"
TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
# Paces the item table's download so that the primary dies with part of it staged.
DRIP = {"table": ITEM_TABLE, "chunk": 256 * 1024, "delay": 0.02}


@pytest.fixture
def stack(big_origin: DemoOriginProcess, big_admin: DemoAdmin) -> Iterator[dict[str, Any]]:
    """A Sentinel-watched primary and replica, Slack and a webhook, the app and a worker."""
    with ExitStack() as stack:
        cluster = stack.enter_context(SentinelCluster(MASTER))
        slack = stack.enter_context(fake_slack())
        hook = stack.enter_context(fake_receiver(200))
        overrides = {
            "REDIS_SENTINEL_URLS": cluster.sentinel_urls,
            "REDIS_SENTINEL_MASTER": MASTER,
            "BUNGIE_BASE_URL": big_origin.url,
            "MANIFEST_KEY_PREFIX": unique("sentinel"),
            "CELERY_QUEUE": unique("sentinel"),
            "MANIFEST_LOCK_TIMEOUT": 5,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            "WEBHOOK_URLS": hook.url_for("/hook"),
            # The interrupted sync ends with the failover; the next one is the API's.
            "SYNC_MAX_RETRIES": 0,
            "TRIGGER_RATE_LIMIT": 1000,
        }
        app = create_app("testing", overrides)
        process = stack.enter_context(worker(overrides))
        yield {
            "cluster": cluster,
            "slack": slack,
            "hook": hook,
            "app": app,
            "worker": process,
        }


def announced_releases(slack: FakeSlack, hook: FakeReceiver) -> tuple[list[str], list[str]]:
    """Return the release each Slack message names (its version, as the header ends) and the
    release each webhook post is about (its id)."""
    headers = [m["payload"]["blocks"][0]["text"]["text"] for m in slack.received]
    return [h.rsplit("→ ", 1)[-1].strip() for h in headers], [
        post.json["release_id"] for post in hook.received
    ]


def wait_until_idle(celery: Celery, broker: redis.Redis, node: str, timeout: float = 60) -> None:
    """Wait until the queue is empty and the worker has no task running, reserved or waiting
    for a retry, twice running (CeleryWorker.wait_until_idle, with the broker's client given:
    a sentinel:// URL is not one redis-py opens)."""
    inspect = celery.control.inspect(destination=[node], timeout=5)

    def idle() -> bool:
        if broker.llen(celery.conf.task_default_queue):
            return False
        for question in (inspect.active, inspect.reserved, inspect.scheduled):
            answer = question()
            if answer is None or answer.get(node):
                return False
        return True

    deadline = time.monotonic() + timeout
    answers = 0
    while answers < 2:
        assert time.monotonic() < deadline, f"worker {node} was still busy after {timeout:.0f}s"
        answers = answers + 1 if idle() else 0
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_a_failover_mid_sync_shows_no_mixed_release_and_loses_no_message(
    stack: dict[str, Any], big_admin: DemoAdmin, figures: Figures
) -> None:
    cluster: SentinelCluster = stack["cluster"]
    app: Flask = stack["app"]
    celery: Celery = app.extensions["celery"]
    slack: FakeSlack = stack["slack"]
    hook: FakeReceiver = stack["hook"]
    client = app.test_client()
    with app.app_context():
        store = get_store()
        settings = get_settings()
        reader_store = get_reader()
        primary = get_redis()

    # Before: a first fill (no message), then a release announced once everywhere.
    first = run_task(celery, send_beat_sync(celery), timeout=120).info
    assert first["outcome"] == "updated", first
    first_id, first_items = origin_release(big_admin, settings)
    versions = [big_admin.publish()["version"]]
    second = run_task(celery, send_beat_sync(celery), timeout=120).info
    second_id, second_items = origin_release(big_admin, settings)
    assert (second["outcome"], second["release_id"]) == ("updated", second_id), second
    slack.wait_for(1, 60)
    hook.wait_for(1, 60)
    # The app's live pointer on the primary: Redis vouches for the live release there. Not on
    # the replicas: a read may land on another one than the pointer's, which could still lack
    # the end of the release the pointer names; reads there check the pointer with their data.
    assert tracked_value(primary, store.keys.current, True) == second_id
    assert tracked_value(reader_store.redis, store.keys.current, True) is UNKNOWN

    published = big_admin.publish()
    versions.append(published["version"])
    third_id, third_items = origin_release(big_admin, settings)
    picked = [h for key in ("added", "removed", "changed") for h in published[key][:40]]
    sample = random.Random(19).sample(sorted(second_items), 150) + picked
    reader = Reader(reader_store, Expectation(sample, {second_id: second_items}))
    reader.tolerate_errors = (redis.ConnectionError, redis.TimeoutError)
    reader.start()
    try:
        wait_until(lambda: reader.stats.reads > 20, 30, "the reader to read")
        reader.expectation = Expectation(sample, {second_id: second_items, third_id: third_items})
        big_admin.fault("slow_drip", **DRIP)
        task_id = send_beat_sync(celery)
        staging = store.keys.table(third_id, "en", ITEM_TABLE)
        wait_until(lambda: primary.hlen(staging) > 0.3 * len(third_items), 90, "30% staged")
        staged = int(primary.hlen(staging))

        cluster.primary.kill()
        killed_at = time.monotonic()
        reads_at_kill = reader.stats.reads
        wait_until(cluster.failed_over, 60, "the sentinels to promote the replica", 0.05)
        failover_seconds = time.monotonic() - killed_at
        reads_in_failover = reader.stats.reads - reads_at_kill
        big_admin.clear_faults()

        # The interrupted sync ends, having changed nothing readers see.
        interrupted = AsyncResult(task_id, app=celery)
        wait_until(lambda: interrupted.state in ("SUCCESS", "FAILURE"), 90, "the killed sync")
        outcome = interrupted.info if isinstance(interrupted.info, dict) else {}
        # It failed, and says so in its result (stored once the backend found the new primary).
        assert (interrupted.state, outcome.get("outcome")) == ("SUCCESS", "failed"), outcome
        assert store.live_id() == second_id

        # The next sync, asked for through the API, completes on the promoted replica.
        wait_until(lambda: not primary.exists(store.keys.lock), 30, "the dead run's lock to go")
        answer = client.post("/api/v1/manifest/sync", headers=TOKEN)
        assert answer.status_code == 202, answer.get_data(as_text=True)
        following = run_task(celery, answer.get_json()["task_id"], timeout=120).info
        assert following["outcome"] in ("updated", "unchanged"), following
        live_at = time.monotonic()
        assert store.live_id() == third_id
        assert client.get("/api/v1/manifest").get_json()["release"]["id"] == third_id
        stray = leftovers(primary, store)
        assert stray == []
        # Every release that went live got one message at each destination.
        slack.wait_for(2, 60)
        hook.wait_for(2, 60)
        # The app's live pointer left the dead server: Redis vouches for the new release again,
        # the only server alive being the promoted one.
        wait_until(
            lambda: tracked_value(primary, store.keys.current, True) == third_id,
            60,
            "the live pointer on the new primary",
        )
        wait_until_idle(celery, primary, stack["worker"].node)  # a duplicate is sent by now
    finally:
        stats = reader.stop()

    slack_versions, hook_releases = announced_releases(slack, hook)
    figures.scenario("sentinel-failover")["summary"] = {
        "topology": "1 primary, 1 replica, 3 sentinels (down-after 1 s)",
        "item entries staged when the primary died": f"{staged:,} / {len(third_items):,}",
        "kill to replica promoted (s)": round(failover_seconds, 2),
        "kill to next release live (s)": round(live_at - killed_at, 2),
        "interrupted sync": outcome.get("outcome") or interrupted.state,
        "its error": outcome.get("error") or type(interrupted.result).__name__,
        "next sync (API trigger)": following["outcome"],
        "reader rounds (replica, lookup + definitions + count)": stats.reads,
        "reader rounds between kill and promotion": reads_in_failover,
        "reads refused (connection errors)": reader.unavailable,
        "wrong or partial reads": stats.error_count,
        "releases seen by readers": len(stats.seen),
        "Slack messages / releases": f"{len(slack_versions)} / 2",
        "webhook posts / releases": f"{len(hook_releases)} / 2",
        "leftovers after the next sync": 0,
    }
    assert stats.error_count == 0, stats.errors
    assert stats.reads > 20
    assert sorted(slack_versions) == sorted(versions), slack_versions
    assert sorted(hook_releases) == sorted([second_id, third_id]), hook_releases
    assert first_id != second_id != third_id
    assert len(first_items) > 0


ITEMS = {
    str(n): {"displayProperties": {"name": f"Item {n} " + "x" * 400}, "hash": n, "index": n}
    for n in range(1, 1500)
}


def item_release(settings: ManifestSettings) -> Release:
    """A release of one item table, ITEMS (three write batches)."""
    one_table = replace(settings, tables=(ITEM_TABLE,), languages=("en",))
    paths = {"en": {ITEM_TABLE: "/common/destiny2_content/json/en/items.json"}}
    return Release.from_manifest(
        {"version": "1", "jsonWorldComponentContentPaths": paths}, one_table
    )


def test_a_run_that_writes_on_through_a_failover_commits_nothing() -> None:
    """Replication is asynchronous: what the old primary took last may never have reached the
    replica. A run that goes on writing on the promoted one must not commit a release that may
    lack those writes."""
    with SentinelCluster(MASTER) as cluster:
        overrides = {
            "REDIS_SENTINEL_URLS": cluster.sentinel_urls,
            "REDIS_SENTINEL_MASTER": MASTER,
            "MANIFEST_KEY_PREFIX": unique("fence"),
            "MANIFEST_LOCK_TIMEOUT": 120,
        }
        with create_app("testing", overrides).app_context():
            store = get_store()
        target = item_release(store.settings)
        lock = store.lock("run-across-a-failover")
        assert lock.acquire()
        store.stage(target)
        writer = TableWriter(store, target.id, "en", ITEM_TABLE, None, None, lock=lock)
        first, *rest = list(iter_json_table([json.dumps(ITEMS).encode()], 64 * 1024))
        writer.write(first)

        cluster.primary.kill()
        wait_until(cluster.failed_over, 60, "the sentinels to promote the replica", 0.05)
        for batch in rest:  # the lock came over with the data: the run writes on
            writer.write(batch)
        info = ReleaseInfo(target, {"en": {ITEM_TABLE: writer.count}}, time.time(), 1.0)
        history = {"id": target.id, "previous": None, "at": time.time(), "log": None}
        with pytest.raises(PrimaryChanged):
            store.commit(info, history, lock)

        with cluster.replica.client() as promoted:  # where the run wrote on
            assert promoted.hlen(store.keys.table(target.id, "en", ITEM_TABLE)) >= len(rest[0])
        assert store.live_id() is None
        assert store.history(10) == []
        # The next run (a lock taken on this server) commits the same work.
        lock.release()
        again = store.lock("next-run")
        assert again.acquire()
        store.commit(info, history, again)
        assert store.live_id() == target.id


def store_on(server: RedisServer) -> ManifestStore:
    """A manifest store on `server` alone, under a key prefix of its own."""
    overrides = {
        "REDIS_URL": server.url,
        "MANIFEST_KEY_PREFIX": unique("grantor"),
        "MANIFEST_LOCK_TIMEOUT": 120,
    }
    with create_app("testing", overrides).app_context():
        return get_store()


def staged_run(store: ManifestStore, run_id: str) -> tuple[SyncLock, TableWriter, list[Batch]]:
    """Take the lock as run `run_id`, stage the item release and return its writer and batches."""
    target = item_release(store.settings)
    lock = store.lock(run_id)
    assert lock.acquire()
    store.stage(target)
    writer = TableWriter(store, target.id, "en", ITEM_TABLE, None, None, lock=lock)
    return lock, writer, list(iter_json_table([json.dumps(ITEMS).encode()], 64 * 1024))


def commit_items(store: ManifestStore, writer: TableWriter, lock: SyncLock) -> Release:
    """Commit the item release `writer` wrote; return it."""
    target = item_release(store.settings)
    info = ReleaseInfo(target, {"en": {ITEM_TABLE: writer.count}}, time.time(), 1.0)
    history = {"id": target.id, "previous": None, "at": time.time(), "log": None}
    store.commit(info, history, lock)
    return target


def replication_id(client: redis.Redis) -> str:
    return str(client.info("replication")["master_replid"])


def test_a_replica_coming_and_going_mid_sync_does_not_fail_it() -> None:
    """A primary that keeps running takes a new replication id when its first replica attaches,
    and again once it has had none for repl-backlog-ttl: it lost no write, the run commits."""
    with (
        RedisServer("--repl-diskless-sync-delay", "0", "--repl-backlog-ttl", "1") as server,
        server.client() as primary,
    ):
        store = store_on(server)
        lock, writer, (first, second, *rest) = staged_run(store, "run-seeing-a-replica")
        writer.write(first)
        granted = replication_id(primary)
        with (
            RedisServer("--replicaof", "127.0.0.1", str(server.port)) as replica_server,
            replica_server.client() as replica,
        ):
            wait_until(
                lambda: replica.info("replication")["master_link_status"] == "up",
                30,
                "the replica to attach",
            )
            writer.write(second)
        attached = replication_id(primary)
        wait_until(lambda: replication_id(primary) != attached, 30, "the backlog to be freed")
        for batch in rest:
            writer.write(batch)
        assert len({granted, attached, replication_id(primary)}) == 3  # what the run lived through

        target = commit_items(store, writer, lock)
        assert store.live_id() == target.id
        assert primary.hlen(store.keys.table(target.id, "en", ITEM_TABLE)) == len(ITEMS)


def test_a_primary_that_was_a_replica_meanwhile_commits_nothing() -> None:
    """The same server process, a primary again, but it followed another server meanwhile: what
    it holds came from that one, which may lack what the run wrote (not here: it had it all)."""
    with (
        RedisServer("--repl-diskless-sync-delay", "0") as first_server,
        RedisServer(
            "--replicaof", "127.0.0.1", str(first_server.port), "--repl-diskless-sync-delay", "0"
        ) as second_server,
        first_server.client() as first,
        second_server.client() as second,
    ):
        wait_until(
            lambda: second.info("replication")["master_link_status"] == "up",
            30,
            "the replica to sync",
        )
        store = store_on(first_server)
        lock, writer, (batch, *rest) = staged_run(store, "run-on-a-demoted-primary")
        writer.write(batch)
        wait_until(
            lambda: (
                second.info("replication")["slave_repl_offset"]
                >= first.info("replication")["master_repl_offset"]
            ),
            30,
            "the replica to hold the lock and the batch",
        )
        # A failover and back, by hand: the other server leads for a while, this one follows it.
        second.replicaof("no", "one")
        first.replicaof("127.0.0.1", second_server.port)
        wait_until(
            lambda: first.info("replication")["master_link_status"] == "up",
            30,
            "the old primary to follow the new one",
        )
        first.replicaof("no", "one")
        for more in rest:
            writer.write(more)

        with pytest.raises(PrimaryChanged):
            commit_items(store, writer, lock)
        assert store.live_id() is None


class LostBeforeInfo(redis.Redis):
    """A client whose connection is lost right after the lock is taken, before the INFO that
    names its grantor (as when the primary fails then)."""

    def info(self, section: str | None = None, *args: str, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")


def test_a_lock_whose_grantor_cannot_be_read_is_let_go() -> None:
    """Taking the lock raises when the connection is lost before the grantor is read: the
    lock is let go (the caller will not), so the next run takes it at once."""
    with RedisServer() as server, server.client() as client:
        key = unique("lock")
        with LostBeforeInfo.from_url(server.url) as failing, pytest.raises(redis.ConnectionError):
            SyncLock(failing, key, "run-that-lost-its-connection", 60).acquire()
        assert not client.exists(key)
        assert SyncLock(client, key, "next-run", 60).acquire()
        assert client.get(key) == b"next-run"


def test_a_release_is_announced_only_once_a_replica_holds_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A check queues a release's posts only once a replica holds the release (WAIT): a
    failover then cannot take back a release people were told about."""
    monkeypatch.setattr(announce, "REPLICATED_WAIT_MS", 500)
    with (
        RedisServer("--repl-diskless-sync-delay", "0") as primary_server,
        RedisServer(
            "--replicaof",
            "127.0.0.1",
            str(primary_server.port),
            "--enable-debug-command",
            "yes",
        ) as replica_server,
        primary_server.client() as primary,
        replica_server.client() as replica,
    ):
        wait_until(lambda: in_sync(primary, replica), 30, "the replica to sync")
        bookkeeping = announce.Announcements(primary, Keys(unique("wait")))
        queued = bookkeeping.keys.delivery_queued("slack", "r1")

        # The replica stalls (as one far behind would): no release is announced meanwhile.
        stall = stalled(replica_server, replica, 5)
        assert bookkeeping.claim(["slack"], "r1", time.time()) == []
        assert not primary.exists(queued)
        assert bookkeeping.states(["slack"])["slack"].pending == 1  # still owed
        assert "Release r1 is on no replica yet (1 in sync)" in caplog.text
        stall.join(30)
        wait_until(
            lambda: (
                replica.info("replication")["slave_repl_offset"]
                >= primary.info("replication")["master_repl_offset"]
            ),
            30,
            "the replica to catch up",
        )

        # Caught up: the next check announces it, its claim on the replica before any post.
        assert bookkeeping.claim(["slack"], "r1", time.time()) == ["slack"]
        assert replica.exists(queued)


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.TimeoutError:
        return False


def stalled(server: RedisServer, client: redis.Redis, seconds: int) -> threading.Thread:
    """Make `server` stop answering for `seconds` (DEBUG SLEEP sent on `client`, from a thread
    of its own); return once it no longer answers. Join the thread to wait the stall out."""
    stall = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", seconds))
    stall.start()
    with server.client() as probe:
        probe.connection_pool.connection_kwargs["socket_timeout"] = 0.2
        wait_until(lambda: not answers(probe), 10, "the replica to stall")
    return stall


def test_a_replica_still_in_full_resync_does_not_hold_releases_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica whose full resync has not finished (or keeps restarting) cannot acknowledge
    anything: only replicas in sync are waited for, and with none a release is announced as
    on a server without replicas (the next check would find it the same)."""
    # Generous: a loaded machine must not fail the WAIT on the replica in sync.
    monkeypatch.setattr(announce, "REPLICATED_WAIT_MS", 5000)
    with (
        RedisServer("--repl-diskless-sync-delay", "0") as primary_server,
        replica_of(primary_server.port) as in_sync,
        primary_server.client() as primary,
        in_sync.client() as in_sync_client,
    ):
        # After a diskless sync the primary streams nothing until the replica's first ACK
        # (up to a second after its link is up).
        primary.set("warm-up", 1)
        wait_until(lambda: primary.wait(1, 1000) == 1, 30, "the replica to acknowledge")
        # From now on a new replica waits a minute for its full resync (wait_bgsave).
        primary.config_set("repl-diskless-sync-delay", 60)
        with RedisServer("--replicaof", "127.0.0.1", str(primary_server.port)):
            wait_until(
                lambda: resyncing(primary) == 1, 30, "the second replica to wait for its resync"
            )
            bookkeeping = announce.Announcements(primary, Keys(unique("resync")))
            # One replica in sync beside it: the release is announced once that one holds it.
            assert bookkeeping.claim(["slack"], "r1", time.time()) == ["slack"]
            assert in_sync_client.exists(bookkeeping.keys.delivery_queued("slack", "r1"))
            in_sync.kill()
            wait_until(
                lambda: primary.info("replication")["connected_slaves"] == 1,
                30,
                "the primary to see the replica in sync gone",
            )
            # Only the resyncing one left: nothing can hold the release sooner; announced.
            assert resyncing(primary) == 1
            assert bookkeeping.claim(["slack"], "r2", time.time()) == ["slack"]
            assert primary.exists(bookkeeping.keys.delivery_queued("slack", "r2"))


def replica_states(primary: redis.Redis) -> list[str]:
    """Return the state `primary` names each of its replicas in: online (in sync), or in a
    full resync (wait_bgsave, send_bulk)."""
    info = primary.info("replication")
    return [info[f"slave{n}"]["state"] for n in range(info["connected_slaves"])]


def resyncing(primary: redis.Redis) -> int:
    """Count the replicas `primary` names that are not in sync yet (a full resync)."""
    return sum(1 for state in replica_states(primary) if state != "online")


def in_sync(primary: redis.Redis, replica: redis.Redis) -> bool:
    """Say whether both ends see the replica in sync: its link up, and the primary naming it
    online (it does so only once it has seen the end of the transfer, a moment later)."""
    return link_up(replica) and replica_states(primary) == ["online"]


def test_a_primary_that_refuses_wait_still_announces_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy or managed Redis may name its replicas yet refuse WAIT: whether one holds the
    release cannot be told, so it is announced (as without replicas), with one warning."""
    announce._warn_wait_refused.cache_clear()
    with (
        RedisServer(
            "--repl-diskless-sync-delay", "0", "--rename-command", "WAIT", ""
        ) as primary_server,
        RedisServer("--replicaof", "127.0.0.1", str(primary_server.port)) as replica_server,
        primary_server.client() as primary,
        replica_server.client() as replica,
    ):
        wait_until(lambda: in_sync(primary, replica), 30, "the replica to sync")
        bookkeeping = announce.Announcements(primary, Keys(unique("nowait")))
        assert bookkeeping.claim(["slack", "discord"], "r1", time.time()) == ["slack", "discord"]
        assert bookkeeping.claim(["slack"], "r2", time.time()) == ["slack"]
        for release_id in ("r1", "r2"):
            assert primary.exists(bookkeeping.keys.delivery_queued("slack", release_id))
        refusals = [r for r in caplog.records if "refuses WAIT" in r.getMessage()]
        assert len(refusals) == 1, caplog.text
        assert refusals[0].levelname == "WARNING"


def test_a_wait_that_fails_leaves_no_claim_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAIT outlasts the client's patience (a replica stalled, a primary going away): the
    claims are dropped, so the next check queues the release, not one half an hour later."""
    # Long, so that only the client's patience ends the first WAIT, and the second one waits
    # out a loaded machine (a WAIT answers as soon as the replica has acknowledged).
    monkeypatch.setattr(announce, "REPLICATED_WAIT_MS", 20_000)
    with (
        RedisServer("--repl-diskless-sync-delay", "0") as primary_server,
        RedisServer(
            "--replicaof", "127.0.0.1", str(primary_server.port), "--enable-debug-command", "yes"
        ) as replica_server,
        primary_server.client() as primary,
        replica_server.client() as replica,
        redis.Redis.from_url(
            primary_server.url, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        ) as impatient,
    ):
        wait_until(lambda: in_sync(primary, replica), 30, "the replica to sync")
        bookkeeping = announce.Announcements(impatient, Keys(unique("waitfails")))
        queued = bookkeeping.keys.delivery_queued("slack", "r1")
        stall = stalled(replica_server, replica, 3)
        with pytest.raises(redis.TimeoutError):
            bookkeeping.claim(["slack"], "r1", time.time())
        assert not primary.exists(queued)
        assert bookkeeping.states(["slack"])["slack"].pending == 1  # still owed
        stall.join(30)

        # The next check (its client patient) queues the release at once.
        patient = announce.Announcements(primary, bookkeeping.keys)
        assert patient.claim(["slack"], "r1", time.time()) == ["slack"]
        assert primary.exists(queued)


READS_NAME = "reads-under-test"


def test_reads_keep_to_one_replica_while_it_answers() -> None:
    """With two replicas, every connection a process reads through goes to the same one (two
    round trips of one request never read two replicas at different points of the stream);
    once it stops answering, they all go to the other."""
    with (
        SentinelCluster(MASTER) as cluster,
        RedisServer("--replicaof", "127.0.0.1", str(cluster.primary.port)) as other,
    ):
        replicas = {cluster.replica.port: cluster.replica, other.port: other}
        wait_until(lambda: sentinels_see(cluster, set(replicas)), 60, "the second replica")
        overrides = {"REDIS_SENTINEL_URLS": cluster.sentinel_urls, "REDIS_SENTINEL_MASTER": MASTER}
        pool = create_app("testing", overrides).extensions["redis_reads"].connection_pool
        # Named, to tell the app's read connections apart from the sentinels' in CLIENT LIST.
        pool.connection_kwargs["client_name"] = READS_NAME

        kept = read_connections(pool, replicas)
        assert sorted(kept.values()) == [0, 6], kept
        (first,) = [port for port, count in kept.items() if count]
        replicas.pop(first).kill()
        assert read_connections(pool, replicas) == {next(iter(replicas)): 6}


def sentinels_see(cluster: SentinelCluster, ports: set[int]) -> bool:
    """Say whether every sentinel names exactly `ports` as the primary's live replicas."""
    for sentinel in cluster.sentinels:
        with sentinel.client() as client:
            seen = {
                int(replica["port"])
                for replica in client.sentinel_slaves(MASTER)
                if not (replica["is_sdown"] or replica["is_odown"])
            }
        if seen != ports:
            return False
    return True


def read_connections(
    pool: redis.ConnectionPool, replicas: dict[int, RedisServer]
) -> dict[int, int]:
    """Hold six connections of the read pool at once (as six threads of a web process would)
    and return how many of them each replica sees, by its CLIENT LIST."""
    held = [pool.get_connection() for _ in range(6)]
    try:
        counts = {}
        for port, server in replicas.items():
            with server.client() as client:
                named = [c for c in client.client_list() if c.get("name") == READS_NAME]
            counts[port] = len(named)
        return counts
    finally:
        for connection in held:
            pool.release(connection)
