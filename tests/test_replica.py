"""Reads on a replica (REDIS_REPLICA_URL): the reading pages, the API and the mirror read from a
real replica of the test Redis (its command counters move) while triggers and rate limits write
on the primary; a reader on the replica never sees a mixed release across swaps, and its live
pointer moves on the commit's invalidation; a replica that falls behind or dies leaves the
pages answering from the primary, said once in the log."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app import queries
from app.extensions import ReplicaConnectionError
from app.extensions import get_bungie
from app.extensions import get_reader
from app.extensions import get_settings
from app.extensions import get_store
from app.keys import Keys
from app.manifest import live
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from tests.conftest import queued_task_ids
from tests.reliability.helpers import Expectation
from tests.reliability.helpers import Reader
from tests.reliability.helpers import origin_release
from tests.reliability.helpers import stored_fingerprint
from tests.reliability.servers import RedisServer
from tests.reliability.servers import ReplicaServer
from tests.reliability.servers import free_port
from tests.reliability.servers import link_up
from tests.reliability.servers import replica_of
from tests.reliability.servers import replica_reads
from tests.reliability.servers import wait_until

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")

TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}


def replica_of_test_redis(redis_url: str, *args: str) -> ReplicaServer:
    """Return a redis-server of this test's own that replicates the test Redis (not started)."""
    primary = urlsplit(redis_url)
    return replica_of(
        primary.port or 6379,
        *args,
        primary_host=primary.hostname or "127.0.0.1",
        primary_password=primary.password,
    )


@pytest.fixture(scope="module")
def replica(redis_url: str) -> Iterator[ReplicaServer]:
    """A real replica of the test Redis, in sync, for the module."""
    with replica_of_test_redis(redis_url) as server:
        yield server


@pytest.fixture
def app_overrides(app_overrides: dict[str, Any], replica: ReplicaServer) -> dict[str, Any]:
    """The test app, reading from the module's replica."""
    return {**app_overrides, "REDIS_REPLICA_URL": replica.url}


def run_sync(app: Flask) -> sync.SyncResult:
    """Sync the origin's release on the primary, as a worker would."""
    with app.app_context():
        bungie = get_bungie()
        try:
            return sync.run(get_store(), bungie, trigger="test")
        finally:
            bungie.close()


def caught_up(server: redis.Redis, prefix: str, release_id: str | None) -> None:
    """Wait until `server` names `release_id` as the live release."""
    assert release_id is not None
    current = Keys(prefix).current

    def named() -> bool:
        return server.get(current) == release_id.encode()

    wait_until(named, 30, f"{release_id} on the replica")


def test_the_pages_the_api_and_the_mirror_read_from_the_replica(
    app: Flask, client: FlaskClient, admin: DemoAdmin, replica: ReplicaServer, key_prefix: str
) -> None:
    server = replica.client()
    run_sync(app)
    admin.publish(added=2, removed=1, changed=3)
    second = run_sync(app)
    caught_up(server, key_prefix, second.release_id)
    with app.app_context():
        _, items = origin_release(admin, get_settings())
    number = sorted(items)[0]
    files = client.get("/Platform/Destiny2/Manifest/").get_json()["Response"]
    item_file = files["jsonWorldComponentContentPaths"]["en"][ITEM_TABLE]
    pages = [
        "/",
        "/items?q=a",
        f"/items/{number}",
        f"/releases/{second.release_id}",
        "/history",
        "/feed.atom",
        "/api/v1/manifest",
        "/api/v1/items",
        f"/api/v1/items/{number}",
        f"/api/v1/definitions/{ITEM_TABLE}/{number}",
        f"/api/v1/definitions/{ITEM_TABLE}/{number}/history",
        f"/api/v1/releases/{second.release_id}/changes",
        "/Platform/Destiny2/Manifest/",
        f"/Platform/Destiny2/Manifest/{ITEM_TABLE}/{number}/",
        item_file,
    ]

    moved = {}
    for page in pages:
        before = replica_reads(server)
        response = client.get(page)
        assert response.status_code == 200, (page, response.get_data(as_text=True)[:300])
        moved[page] = replica_reads(server) - before

    assert [page for page, count in moved.items() if count < 1] == [], moved
    assert sum(moved.values()) >= len(pages)
    assert client.get("/api/v1/manifest").get_json()["release"]["id"] == second.release_id
    shown = client.get("/readyz").get_json()["replica"]
    assert shown["role"] == "replica"
    assert shown["link"] == "up"
    assert shown["replicates_primary"] is True
    assert shown["problem"] is None
    assert shown["reads_on_replica"] is True


@pytest.mark.usefixtures("steady_rate_windows")
def test_triggers_and_rate_limits_still_write_on_the_primary(
    app: Flask,
    signed_in: FlaskClient,
    redis_client: redis.Redis,
    replica: ReplicaServer,
    key_prefix: str,
    celery_queue: str,
) -> None:
    with pytest.raises(redis.ReadOnlyError):
        replica.client().set(f"{key_prefix}:probe", 1)

    triggered = signed_in.post("/api/v1/manifest/sync", headers=TOKEN)
    limit = TestingConfig.TRIGGER_RATE_LIMIT
    joined = [signed_in.get("/updateManifest").status_code for _ in range(limit)]

    assert triggered.status_code == 202
    task_id = triggered.get_json()["task_id"]
    assert joined == [200] * (limit - 1) + [429]
    keys = Keys(key_prefix)
    assert redis_client.get(keys.queued_sync) == task_id.encode()
    assert queued_task_ids(redis_client, celery_queue) == [task_id]
    assert list(redis_client.scan_iter(match=f"{key_prefix}:rate*")) != []


def test_a_reader_on_the_replica_never_sees_a_mixed_release_across_three_swaps(
    app: Flask, client: FlaskClient, admin: DemoAdmin, replica: ReplicaServer, key_prefix: str
) -> None:
    with app.app_context():
        settings = get_settings()
        reading = get_reader()
    assert reading.redis.connection_pool.connection_kwargs["port"] == replica.port
    first = run_sync(app)
    live_id, live_items = origin_release(admin, settings)
    assert first.release_id == live_id
    caught_up(replica.client(), key_prefix, live_id)
    sample = random.Random(19).sample(sorted(live_items), 60)
    reader = Reader(reading, Expectation(sample, {live_id: live_items}))
    pages: list[str] = []
    reader.start()
    try:
        for _swap in range(3):
            published = admin.publish()
            new_id, new_items = origin_release(admin, settings)
            picked = [h for key in ("added", "removed", "changed") for h in published[key][:20]]
            expected = Expectation(sample + picked, {live_id: live_items, new_id: new_items})
            reader.expectation = expected
            assert run_sync(app).release_id == new_id

            # Meanwhile the API reads the same definitions: each answer one release, whole.
            def seen(release: str = new_id, expectation: Expectation = expected) -> bool:
                pages.append(batch_release(client, expectation))
                return reader.stats.seen[release] >= 5 or not reader.is_alive()

            wait_until(seen, 60, f"the reader on the replica reading {new_id}")
            live_id, live_items = new_id, new_items
    finally:
        stats = reader.stop()

    assert stats.errors == []
    assert len(stats.seen) == 4, stats.seen
    assert [page for page in pages if page.startswith("mixed")] == []
    assert len(pages) >= 3, pages
    assert live_id in pages, pages


def batch_release(client: FlaskClient, expectation: Expectation) -> str:
    """Ask the API for the expected definitions in one batch; return the release it answered
    from, or "mixed ..." if they are not that release's, exactly."""
    response = client.post("/api/v1/definitions", json={ITEM_TABLE: expectation.sample})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    answer = response.get_json()
    release = answer["release_id"]
    items = expectation.releases.get(release)
    if items is None:
        return f"mixed: release {release} is none of {sorted(expectation.releases)}"
    found = answer["definitions"].get(ITEM_TABLE, {})
    for number in expectation.sample:
        value = found.get(str(number))
        if (stored_fingerprint(value) if value else None) != items.get(number):
            return f"mixed: {number} is not as release {release} holds it"
    return release


def test_the_live_pointer_on_the_replica_moves_when_a_commit_lands(
    app: Flask, client: FlaskClient, admin: DemoAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trusted for an hour: only the replica's invalidation can move the pointer.
    monkeypatch.setattr(live, "TRUST_SECONDS", 3600.0)
    first = run_sync(app)
    with app.app_context():
        reading = get_reader()

        def vouched(release: str | None) -> bool:
            return reading.reader_live_id() == (release, True)

        wait_until(lambda: vouched(first.release_id), 30, "the replica's pointer on release 1")
        admin.publish()
        second = run_sync(app)
        wait_until(lambda: vouched(second.release_id), 30, "the replica's pointer on release 2")

    assert client.get("/api/v1/manifest").get_json()["release"]["id"] == second.release_id


def test_pages_answer_from_the_primary_while_the_replica_is_behind_hung_or_down(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    redis_url: str,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.queries")
    # Each request looks at the replica: no waiting out REPLICA_CHECK_SECONDS and _REST_SECONDS.
    monkeypatch.setattr(queries, "REPLICA_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(queries, "REPLICA_REST_SECONDS", 0.0)
    primary = urlsplit(redis_url)
    with replica_of_test_redis(redis_url) as spare:
        server = spare.client()
        # Given up on after 2 s (the app's own wait is far longer): the hung replica below.
        url = f"{spare.url}?socket_timeout=2"
        app = create_app("testing", {**app_overrides, "REDIS_REPLICA_URL": url})
        client = app.test_client()
        first = run_sync(app)
        assert first.release_id is not None
        caught_up(server, key_prefix, first.release_id)

        # Cut off from the primary, the replica keeps what it had: the pages read the primary.
        server.replicaof("127.0.0.1", free_port())
        wait_until(lambda: not link_up(server), 30, "the replica's link down")
        admin.publish()
        second = run_sync(app)
        assert server.get(Keys(key_prefix).current) == first.release_id.encode()
        assert release_shown(client) == second.release_id
        assert moved_by_warnings(caplog) == 1
        shown = client.get("/readyz").get_json()["replica"]
        assert shown["link"] != "up"
        assert shown["problem"].startswith("its link to the primary is")
        assert shown["reads_on_replica"] is False

        # Back in step, reads go back to it.
        server.replicaof(primary.hostname or "127.0.0.1", primary.port or 6379)
        wait_until(lambda: link_up(server), 60, "the replica in sync again", 0.1)
        caught_up(server, key_prefix, second.release_id)
        before = replica_reads(server)
        assert release_shown(client) == second.release_id
        assert replica_reads(server) > before
        assert "serves again" in caplog.text

        # /readyz shows the last look and never takes one itself: hung, the replica costs a
        # probe nothing (a look would have timed out and said so).
        assert spare.process is not None
        os.kill(spare.process.pid, signal.SIGSTOP)
        try:
            shown = client.get("/readyz").get_json()["replica"]
        finally:
            os.kill(spare.process.pid, signal.SIGCONT)
        assert (shown["answers"], shown["problem"], shown["reads_on_replica"]) == (True, None, True)

        # Hung: the read that times out runs again on the primary at once. Nothing more goes
        # to the replica in that request (a second wait): no new connection to it.
        monkeypatch.setattr(queries, "REPLICA_CHECK_SECONDS", 3600.0)
        release_shown(client)  # looks at the replica once more, then trusts it for an hour
        reads_before = replica_reads(server)
        connected = connections_made(server)
        assert spare.process is not None
        os.kill(spare.process.pid, signal.SIGSTOP)
        try:
            assert release_shown(client) == second.release_id
        finally:
            os.kill(spare.process.pid, signal.SIGCONT)
        assert moved_by_warnings(caplog) == 2
        assert "a read on it failed (TimeoutError)" in caplog.text
        # Resumed, the server takes what came meanwhile: the read that timed out on the
        # connection it had, and any connection made to ask it more.
        wait_until(lambda: replica_reads(server) > reads_before, 10, "the read, run at last")
        assert connections_made(server) == connected
        assert release_shown(client) == second.release_id  # rested 0 s: looked, serves again
        assert caplog.text.count("serves again") == 2

        # Dead: the read that fails runs again on the primary; no page fails.
        monkeypatch.setattr(queries, "REPLICA_REST_SECONDS", 3600.0)
        spare.kill()
        for page in ("/", "/items", "/history", "/api/v1/items", "/Platform/Destiny2/Manifest/"):
            assert client.get(page).status_code == 200, page
        assert release_shown(client) == second.release_id
        assert moved_by_warnings(caplog) == 3
        assert "a read on it failed (ConnectionError)" in caplog.text
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.get_json()
        shown = ready.get_json()["replica"]
        assert shown.pop("seen_seconds_ago") >= 0
        assert shown == {
            "answers": False,
            "problem": "a read on it failed (ConnectionError)",
            "error": "ConnectionError",
            "role": None,
            "link": None,
            "last_heard_seconds": None,
            "replicates_primary": None,
            "behind_bytes": None,
            "reads_on_replica": False,
        }
        # A process that has not looked yet says so (/readyz never looks); its first read
        # looks, and then /readyz says why.
        fresh = create_app("testing", {**app_overrides, "REDIS_REPLICA_URL": url}).test_client()
        shown = fresh.get("/readyz").get_json()["replica"]
        assert (shown["seen_seconds_ago"], shown["answers"], shown["problem"]) == (None,) * 3
        assert release_shown(fresh) == second.release_id
        shown = fresh.get("/readyz").get_json()["replica"]
        assert shown["problem"] == "it does not answer (ConnectionError)"
        assert shown["reads_on_replica"] is False


def test_a_server_that_follows_no_primary_of_ours_is_refused_and_readyz_says_so(
    app_overrides: dict[str, Any], admin: DemoAdmin
) -> None:
    # A primary of its own, not a replica of the test Redis: what a wrong REDIS_REPLICA_URL
    # or a replica promoted away from ours looks like.
    with RedisServer() as stranger:
        app = create_app("testing", {**app_overrides, "REDIS_REPLICA_URL": stranger.url})
        client = app.test_client()
        synced = run_sync(app)

        assert release_shown(client) == synced.release_id
        shown = client.get("/readyz").get_json()["replica"]
        with stranger.client() as probe:
            assert replica_reads(probe) == 0

    assert shown["role"] == "primary"
    assert shown["replicates_primary"] is False
    assert shown["problem"] == "it does not replicate the primary (another replication id)"
    assert shown["reads_on_replica"] is False


def test_a_failing_primary_is_not_blamed_on_the_replica(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    redis_url: str,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.queries")
    # A primary of this test's own, to kill; the broker stays on the test Redis.
    with (
        RedisServer("--repl-diskless-sync-delay", "0") as primary,
        replica_of(primary.port) as copy,
    ):
        broker = {"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}
        overrides = {"REDIS_URL": primary.url, "REDIS_REPLICA_URL": copy.url, **broker}
        app = create_app("testing", {**app_overrides, **overrides})
        client = app.test_client()
        synced = run_sync(app)
        caught_up(copy.client(), key_prefix, synced.release_id)
        primary.kill()

        # The dashboard reads the primary too (the sync running): that failure is its 503.
        dashboard = client.get("/")
        # The replica, all there is now, still serves what reads only the release.
        shown = release_shown(client)
        ready = client.get("/readyz").get_json()

    assert dashboard.status_code == 503
    assert shown == synced.release_id
    assert moved_by_warnings(caplog) == 0
    assert ready["replica"]["problem"] is None
    assert ready["replica"]["reads_on_replica"] is True


def connections_made(server: redis.Redis) -> int:
    """Return how many connections `server` has accepted since it started."""
    return int(server.info("stats")["total_connections_received"])


def release_shown(client: FlaskClient) -> str:
    """Return the live release the API shows."""
    response = client.get("/api/v1/manifest")
    assert response.status_code == 200
    return response.get_json()["release"]["id"]


def moved_by_warnings(caplog: pytest.LogCaptureFixture) -> int:
    """Return how many times the log said reads moved to the primary."""
    return sum(
        "Reads go to the primary" in record.getMessage()
        for record in caplog.records
        if record.name == "app.queries" and record.levelno == logging.WARNING
    )


def test_a_replica_that_fails_mid_stream_sends_the_next_reads_to_the_primary(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    redis_url: str,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.queries")
    # Trusted for an hour once looked at: only the failed read can move the reads.
    monkeypatch.setattr(queries, "REPLICA_CHECK_SECONDS", 3600.0)
    with replica_of_test_redis(redis_url) as spare:
        app = create_app("testing", {**app_overrides, "REDIS_REPLICA_URL": spare.url})
        client = app.test_client()
        synced = run_sync(app)
        caught_up(spare.client(), key_prefix, synced.release_id)
        files = client.get("/Platform/Destiny2/Manifest/").get_json()["Response"]
        # The aggregate reads each table as it gets to it: reads while it streams.
        aggregate = files["jsonWorldContentPaths"]["en"]
        assert len(files["jsonWorldComponentContentPaths"]["en"]) > 1
        streamed = client.get(aggregate, buffered=False)
        assert streamed.status_code == 200
        chunks = streamed.iter_encoded()
        assert next(chunks).startswith(b"{")
        spare.kill()
        with pytest.raises(redis.ConnectionError):
            for _chunk in chunks:
                pass
        streamed.close()
        shown = client.get("/readyz").get_json()["replica"]
        assert release_shown(client) == synced.release_id

    assert shown["problem"] == "a read on it failed (ConnectionError)"
    assert shown["reads_on_replica"] is False
    assert moved_by_warnings(caplog) == 1


def test_a_look_that_began_before_a_read_failed_does_not_undo_its_verdict(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "REPLICA_CHECK_SECONDS", 0.0)
    real_look = queries.look_at_replica

    def look_while_a_read_fails(primary: redis.Redis, replica: redis.Redis) -> queries.ReplicaLook:
        seen = real_look(primary, replica)  # a real look: the replica answers, it may serve
        # Another request's read on the replica failed while this look waited for answers.
        queries.replica_failed(ReplicaConnectionError("Connection reset by peer"))
        return seen

    monkeypatch.setattr(queries, "look_at_replica", look_while_a_read_fails)
    run_sync(app)
    assert client.get("/api/v1/manifest").status_code == 200

    shown = client.get("/readyz").get_json()["replica"]
    assert shown["problem"] == "a read on it failed (ConnectionError)"
    assert shown["reads_on_replica"] is False
