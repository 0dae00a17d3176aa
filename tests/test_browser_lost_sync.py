"""One real browser on the progress page of a sync whose worker died: it ends, saying so."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from werkzeug.serving import make_server

from app import create_app
from app.extensions import get_celery
from app.manifest import sync
from app.triggers import remember_task
from config import TestingConfig
from devtools.demo.control import DemoOriginProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)",
)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


@pytest.fixture
def site(
    origin: DemoOriginProcess, redis_url: str, redis_client: redis.Redis
) -> Iterator[tuple[str, Flask]]:
    """The app over real HTTP; no worker (the sync it shows died with its worker)."""
    settings: dict[str, Any] = {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
    }
    app = create_app("testing", settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.config["SERVER_NAME"] = f"127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        keys = list(redis_client.scan_iter(match=f"{settings['MANIFEST_KEY_PREFIX']}:*"))
        if keys:
            redis_client.unlink(*keys)


def test_the_progress_page_of_a_lost_sync_stops_and_says_why(site: tuple[str, Flask]) -> None:
    url, app = site
    task_id = uuid.uuid4().hex
    with app.app_context():
        # It was checking Bungie when its worker was killed: no heartbeat since.
        remember_task(task_id, trigger="beat")
        get_celery().backend.store_result(task_id, sync.Progress("checking").to_dict(), "PROGRESS")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}/login?next=/updateManifest?task={task_id}")
            page.fill("#username", TestingConfig.ADMIN_USERNAME)
            page.fill("#password", TestingConfig.ADMIN_PASSWORD)
            page.click("button:has-text('Sign in')")

            page.wait_for_selector("#sync[data-state='LOST']", timeout=30_000)
            text = page.inner_text("#sync")
            assert "stopped before it finished" in text
            assert "next check starts a new sync" in text
            assert errors == []
        finally:
            browser.close()
