"""Scenario 2: Redis is restarted in the middle of a sync (with its data kept by the AOF).

The sync fails or retries cleanly, readers see the old release or the new one whole, and the
worker and the web app carry on without being restarted themselves.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from flask import Flask

from app import create_app
from app.extensions import get_settings
from app.extensions import get_store
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import Expectation
from tests.reliability.helpers import Reader
from tests.reliability.helpers import leftovers
from tests.reliability.helpers import origin_release
from tests.reliability.helpers import run_task
from tests.reliability.helpers import send_beat_sync
from tests.reliability.servers import RedisServer
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

DOWN_SECONDS = 2.0
DRIP = {"table": ITEM_TABLE, "chunk": 256 * 1024, "delay": 0.02}


@pytest.fixture
def stack(big_origin: DemoOriginProcess, big_admin: DemoAdmin) -> Iterator[dict[str, Any]]:
    """A Redis keeping its data across restarts (AOF, fsync always), a worker and the app on it."""
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer("--appendonly", "yes", "--appendfsync", "always"))
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": big_origin.url,
            "MANIFEST_KEY_PREFIX": unique("restart"),
            "CELERY_QUEUE": unique("restart"),
            "MANIFEST_LOCK_TIMEOUT": 3,
            "TRIGGER_RATE_LIMIT": 1000,
        }
        app = create_app("testing", overrides)
        process = stack.enter_context(worker(overrides))
        yield {"server": server, "app": app, "worker": process, "overrides": overrides}


def timed_get(client: Any, url: str) -> tuple[int, float]:
    started = time.monotonic()
    status = client.get(url).status_code
    return status, time.monotonic() - started


@pytest.mark.parametrize("how", ["crash (SIGKILL), down 2 s", "clean restart at once"])
def test_redis_restarted_mid_sync_changes_nothing_half_way_and_everyone_recovers(
    stack: dict[str, Any], big_admin: DemoAdmin, figures: Figures, how: str
) -> None:
    server: RedisServer = stack["server"]
    app: Flask = stack["app"]
    celery: Celery = app.extensions["celery"]
    client = app.test_client()
    with app.app_context():
        store = get_store()
        settings = get_settings()
    first = run_task(celery, send_beat_sync(celery)).info
    old_id, old_items = origin_release(big_admin, settings)
    assert (first["outcome"], first["release_id"]) == ("updated", old_id)

    big_admin.publish()
    new_id, new_items = origin_release(big_admin, settings)
    sample = random.Random(3).sample(sorted(set(old_items) | set(new_items)), 300)
    reader_store = ManifestStore(redis.Redis.from_url(server.url, socket_timeout=5), settings)
    reader = Reader(reader_store, Expectation(sample, {old_id: old_items, new_id: new_items}))
    reader.tolerate_errors = (redis.ConnectionError, redis.TimeoutError)
    reader.start()
    try:
        big_admin.fault("slow_drip", **DRIP)
        task_id = send_beat_sync(celery)
        staging = store.keys.table(new_id, "en", ITEM_TABLE)
        wait_until(lambda: store.redis.hlen(staging) > 0.3 * len(new_items), 60, "30% staged")
        api_down: int | None
        page_down: int | None
        if how.startswith("crash"):
            server.kill()
            down_at = time.monotonic()
            api_down, api_seconds = timed_get(client, "/api/v1/manifest")
            page_down, page_seconds = timed_get(client, "/")
            time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
        else:
            server.stop()
            down_at = time.monotonic()
            api_down = page_down = None
            api_seconds = page_seconds = 0.0
        server.start()
        restarted = time.monotonic()
        big_admin.clear_faults()

        # The web app answers again without being restarted.
        wait_until(lambda: client.get("/api/v1/manifest").status_code == 200, 30, "the API")
        api_back = time.monotonic() - restarted
        killed = AsyncResult(task_id, app=celery)
        wait_until(lambda: killed.state in ("SUCCESS", "FAILURE"), 90, "the interrupted task")
        outcome = killed.info.get("outcome") if isinstance(killed.info, dict) else None
        live_after = store.live_id()
        assert live_after in (old_id, new_id)
        assert client.get("/api/v1/manifest").get_json()["release"]["id"] == live_after

        # The worker takes the next run without being restarted; it collects the leftovers.
        wait_until(lambda: not store.redis.exists(store.keys.lock), 30, "the lock to go")
        following = run_task(celery, send_beat_sync(celery), timeout=60).info
        assert following["outcome"] in ("updated", "unchanged"), following
        assert store.live_id() == new_id
        assert leftovers(store.redis, store) == []
        worker_log = stack["worker"].output()
    finally:
        stats = reader.stop()
        reader_store.redis.close()

    assert stats.error_count == 0, stats.errors
    if api_down is not None:
        assert (api_down, page_down) == (503, 503)
    figures.scenario("redis-restart")["rows"].append(
        {
            "restart": how,
            "interrupted task": f"{killed.state} ({outcome or type(killed.result).__name__})",
            "API/page while down": f"{api_down}/{page_down}" if api_down else "-",
            "slowest answer while down (s)": round(max(api_seconds, page_seconds), 3),
            "API back after restart (s)": round(api_back, 2),
            "next run": following["outcome"],
            "reader rounds": stats.reads,
            "reads refused while down": reader.unavailable,
            "wrong or partial reads": stats.error_count,
            "worker reconnected": "Connected to redis" in worker_log.split("ready.")[-1],
        }
    )
