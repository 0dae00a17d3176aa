"""One real browser: sign in, press "Check now", watch the progress bar finish."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from app import create_app
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.processes import celery_worker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)",
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def settings(origin: DemoOriginProcess, redis_url: str) -> dict[str, Any]:
    return {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
    }


@pytest.fixture(scope="module")
def site(settings: dict[str, Any], redis_client: redis.Redis) -> Iterator[str]:
    """The app over real HTTP, with a real worker behind it."""
    app = create_app("testing", settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.config["SERVER_NAME"] = f"127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with celery_worker(settings):
            yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        queue = settings["CELERY_QUEUE"]
        redis_client.delete(queue, f"_kombu.binding.{queue}")
        keys = list(redis_client.scan_iter(match=f"{settings['MANIFEST_KEY_PREFIX']}:*"))
        if keys:
            redis_client.unlink(*keys)


def test_sign_in_check_now_and_watch_the_sync_finish(site: str, admin: DemoAdmin) -> None:
    # Slow enough to watch: the item table arrives in pieces.
    admin.fault("slow_drip", table=ITEM_TABLE, chunk=65536, delay=0.2)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            page.goto(f"{site}/login?next=/")
            page.fill("#username", TestingConfig.ADMIN_USERNAME)
            page.fill("#password", TestingConfig.ADMIN_PASSWORD)
            page.click("button:has-text('Sign in')")
            page.wait_for_url(f"{site}/")
            page.click("button:has-text('Check now')")
            page.wait_for_url("**/updateManifest?task=*")

            # The bar moves while the item table streams in (the first progress the page sees
            # may still be the check of Bungie's manifest, before any table)...
            page.wait_for_selector("#sync[data-state='PROGRESS']", timeout=30_000)
            detail = "document.getElementById('sync-detail').textContent"
            page.wait_for_function(f"() => {detail}.includes('InventoryItem')", timeout=30_000)
            # ...then the page tells the outcome with the diff.
            page.wait_for_selector("#sync[data-outcome='updated']", timeout=60_000)
            bar = page.locator("#sync-bar")
            assert bar.get_attribute("value") == bar.get_attribute("max")
            text = page.inner_text("#sync")
            assert "Updated to version" in text
            assert "InventoryItem" in text
            assert errors == []
        finally:
            browser.close()
