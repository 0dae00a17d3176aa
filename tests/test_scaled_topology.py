"""The scaled topology, run for real: two web processes (gunicorn) and two Celery workers on one
Redis primary, exactly one beat, and a replica of the primary the web processes read from.

Each release is built by one sync whatever the number of processes asking (triggers at both
web processes at once join one sync; beat's polls too), each is told once to the receiver,
and the pages are answered from the replica (its command counters move, not only the
primary's)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
from celery.result import AsyncResult
from flask import Flask

from app import create_app
from app.extensions import get_celery
from app.extensions import get_store
from app.manifest.store import ITEM_TABLE
from app.triggers import ENDED
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import fake_receiver
from tests.processes import CeleryWorker
from tests.processes import ProjectProcess
from tests.processes import flask_env
from tests.reliability.servers import beat
from tests.reliability.servers import free_port
from tests.reliability.servers import replica_of
from tests.reliability.servers import replica_reads
from tests.reliability.servers import wait_until

TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
SECRET = "scaled-topology-webhook-secret-0123456789"
POLL_SECONDS = 4
# Read by the reading pages and the API; each must be answered from the live release.
PAGES = ("/items", "/api/v1/items", "/api/v1/manifest", "/Platform/Destiny2/Manifest/")


@dataclass
class Web:
    """One web process: where it answers, and the name of its connections to the replica."""

    process: ProjectProcess
    url: str
    client_name: str


@dataclass
class Release:
    """A release the origin published, and how the topology took it."""

    id: str
    published: dict[str, Any]
    trigger_answers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Scaled:
    """The running topology, and what it did with the releases published meanwhile."""

    app: Flask  # the primary, as a worker sees it
    webs: list[Web]
    workers: list[CeleryWorker]
    replica: redis.Redis
    receiver: FakeReceiver
    first_release: str
    releases: list[Release]


def primary_address(redis_url: str) -> tuple[str, int, int]:
    """Return the host, port and db of the primary the suite runs on."""
    parsed = urlsplit(redis_url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379, int(parsed.path.strip("/") or 0)


def start_together(stack: contextlib.ExitStack, processes: list[ProjectProcess]) -> None:
    """Start every process at once (each stopped with the stack, started or not), and wait
    until each says it is ready."""
    for process in processes:
        stack.callback(process.stop)
    with ThreadPoolExecutor(len(processes)) as pool:
        for started in [pool.submit(process.__enter__) for process in processes]:
            started.result()


def gunicorn(settings: dict[str, Any]) -> tuple[ProjectProcess, str]:
    """A gunicorn of the app with one worker, as compose and the Procfile run it."""
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    process = ProjectProcess([*args, "app:create_app()"], flask_env(settings), "Booting worker")
    return process, f"http://127.0.0.1:{port}"


def trigger_at_once(webs: list[Web]) -> list[dict[str, Any]]:
    """POST the sync trigger to every web process at the same moment; return the answers."""
    ready = threading.Barrier(len(webs))

    def trigger(web: Web) -> dict[str, Any]:
        ready.wait(10)
        answer = requests.post(f"{web.url}/api/v1/manifest/sync", headers=TOKEN, timeout=30)
        assert answer.status_code == 202, answer.text
        body: dict[str, Any] = answer.json()
        return body

    with ThreadPoolExecutor(len(webs)) as pool:
        return list(pool.map(trigger, webs))


def live_after(app: Flask, previous: str | None, timeout: float = 60) -> str:
    """Wait until the primary's live release is another than `previous`; return it."""
    with app.app_context():
        store = get_store()

        def moved() -> str | None:
            live = store.live_id()
            return live if live != previous else None

        return str(wait_until(moved, timeout, f"a sync after {previous}"))


def tasks_over(app: Flask, task_ids: set[str]) -> bool:
    """Say whether each task has ended, as its result backend says."""
    with app.app_context():
        celery = get_celery()
        return all(AsyncResult(task_id, app=celery).state in ENDED for task_id in task_ids)


def publish_and_trigger(scaled: Scaled, admin: DemoAdmin, live: str, triggered: bool) -> Release:
    """Publish a release; trigger its sync at both web processes at once, or leave it to beat.

    The item table drips slowly, so the sync runs while the triggers arrive: a trigger arriving
    after a sync ended would start a new one (that finds nothing new), which proves nothing.
    And the triggers go right after a poll of beat: one checking at that very moment would
    start a sync of its own, which the later trigger might join while the first queued one.
    """
    if triggered:
        admin.fault("slow_drip", table=ITEM_TABLE, chunk=32768, delay=0.1)
        beat_just_polled(scaled.app)
    release = Release("", admin.publish(added=2, removed=1, changed=3))
    if triggered:
        release.trigger_answers = trigger_at_once(scaled.webs)
    release.id = live_after(scaled.app, live)
    admin.clear_faults()
    task_ids = {answer["task_id"] for answer in release.trigger_answers}
    wait_until(lambda: tasks_over(scaled.app, task_ids), 60, "the triggered sync to end")
    return release


def beat_just_polled(app: Flask) -> None:
    """Wait for beat's next check to be recorded (its next one is POLL_SECONDS away)."""
    with app.app_context():
        store = get_store()
        since = time.time()
        wait_until(
            lambda: any(
                check["trigger"] == "beat" and check["at"] > since
                for check in store.recent_checks(5)
            ),
            POLL_SECONDS * 5,
            "a poll of beat",
        )


@pytest.fixture(scope="module")
def scaled(
    origin: DemoOriginProcess, redis_url: str, redis_client: redis.Redis, tmp_path_factory: Any
) -> Iterator[Scaled]:
    host, port, db = primary_address(redis_url)
    if "process_id" not in redis_client.info("server"):
        pytest.skip("a replica needs a real Redis server as the primary")
    prefix, queue = f"test:{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"
    admin = DemoAdmin(origin.url)
    admin.reset()
    with contextlib.ExitStack() as stack:
        stack.callback(cleanup, redis_client, prefix, queue)
        stack.callback(admin.reset)
        receiver = stack.enter_context(fake_receiver())
        # Never persisted: a replica of the shared server, for this test only, stopped by pid.
        replica_server = stack.enter_context(replica_of(port, primary_host=host))
        replica = replica_server.client()
        stack.callback(replica.close)
        settings = {
            "REDIS_URL": redis_url,
            "BUNGIE_BASE_URL": origin.url,
            "MANIFEST_KEY_PREFIX": prefix,
            "CELERY_QUEUE": queue,
            "MANIFEST_POLL_SECONDS": POLL_SECONDS,
            "TRIGGER_RATE_LIMIT": 1000,
            "WEBHOOK_URLS": receiver.url_for("/hook"),
            "WEBHOOK_SECRET": SECRET,
        }
        webs = []
        for number in (1, 2):
            name = f"scaled-web-{number}-{uuid.uuid4().hex[:6]}"
            replica_url = f"redis://127.0.0.1:{replica_server.port}/{db}?client_name={name}"
            process, url = gunicorn({**settings, "REDIS_REPLICA_URL": replica_url})
            webs.append(Web(process, url, name))
        workers = [CeleryWorker(settings, concurrency=1, name=f"scaled{n}") for n in (1, 2)]
        schedule = tmp_path_factory.mktemp("beat") / "celerybeat-schedule"
        start_together(stack, [*(web.process for web in webs), *workers, beat(settings, schedule)])

        app = create_app("testing", settings)
        scaled = Scaled(app, webs, workers, replica, receiver, live_after(app, None), [])
        # Two releases triggered at both web processes at once, the third found by beat.
        for triggered in (True, True, False):
            live = scaled.releases[-1].id if scaled.releases else scaled.first_release
            scaled.releases.append(publish_and_trigger(scaled, admin, live, triggered))
        yield scaled


def cleanup(redis_client: redis.Redis, prefix: str, queue: str) -> None:
    redis_client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis_client.unlink(*keys)


def test_each_release_is_built_by_one_sync_and_told_once(scaled: Scaled) -> None:
    releases = [release.id for release in scaled.releases]
    assert len(set(releases)) == 3
    with scaled.app.app_context():
        store = get_store()
        history = store.history()
        checks = store.recent_checks(50)
        celery = get_celery()
    # One history entry per release, each built by a run of its own.
    assert [entry["id"] for entry in reversed(history)] == [scaled.first_release, *releases]
    assert len({entry["trigger"]["run_id"] for entry in history}) == len(history)
    # Of all the checks (both web processes, beat every few seconds), one built each release.
    updated = [check["release_id"] for check in checks if check["outcome"] == "updated"]
    assert sorted(updated) == sorted([scaled.first_release, *releases])
    for release in scaled.releases[:2]:
        first, second = release.trigger_answers
        assert first["task_id"] == second["task_id"]  # the later trigger joined the sync
        assert first["joined"] or second["joined"]
    assert history[0]["trigger"]["trigger"] == "beat"  # the third release: beat's poll found it

    scaled.receiver.wait_for(3, timeout=60)
    for worker in scaled.workers:
        worker.wait_until_idle(celery, timeout=60)
    time.sleep(1)  # a duplicate would be on its way by now
    told = [post.json["release_id"] for post in scaled.receiver.received]
    assert sorted(told) == sorted(releases)  # the first fill is news to nobody


def named_clients(replica: redis.Redis) -> set[str]:
    return {client["name"] for client in replica.client_list() if client.get("name")}


def test_the_pages_of_both_web_processes_are_read_from_the_replica(scaled: Scaled) -> None:
    live = scaled.releases[-1].id
    for web in scaled.webs:
        before = replica_reads(scaled.replica)
        for page in PAGES:
            answer = requests.get(web.url + page, timeout=30)
            assert answer.status_code == 200, (page, answer.text[:300])
        manifest = requests.get(f"{web.url}/api/v1/manifest", timeout=30).json()
        assert manifest["release"]["id"] == live
        # Each page read at least once there, and this process is connected to it.
        assert replica_reads(scaled.replica) - before >= len(PAGES) + 1
        assert web.client_name in named_clients(scaled.replica)
