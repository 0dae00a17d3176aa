"""Every fault the demo origin can inject: classified right, the live release left intact."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest
import redis

from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.release import Release
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from devtools.demo.control import DemoAdmin
from tests.conftest import API_KEY
from tests.conftest import snapshot
from tests.reliability.helpers import leftovers

LIVE_KEYS_SKIP = ("last_check", "checks", "lock", "staging")


# fault, options, outcome, error class, retry_after expected
MANIFEST_FAULTS = [
    ("maintenance", {}, sync.UNAVAILABLE, "BungieMaintenance", 60.0),
    ("maintenance", {"throttle_seconds": 900}, sync.UNAVAILABLE, "BungieMaintenance", 900.0),
    ("throttle", {"throttle_seconds": 7}, sync.UNAVAILABLE, "BungieThrottled", 7.0),
    ("html_503", {}, sync.UNAVAILABLE, "BungieOutage", 60.0),
    ("oauth_error", {}, sync.UNAVAILABLE, "BungieOutage", 60.0),
    ("http_500", {}, sync.UNAVAILABLE, "BungieOutage", 60.0),
    ("http_429", {"retry_after": 120}, sync.UNAVAILABLE, "BungieThrottled", 120.0),
    ("bad_api_key", {}, sync.FAILED, "BungieConfigError", None),
]

CONTENT_FAULTS = [
    ("not_found_always", sync.FAILED, "ContentNotFound"),
    ("truncated", sync.FAILED, "ContentTruncated"),
    ("slow_drip", sync.FAILED, "DownloadDeadlineExceeded"),
    ("oversized", sync.FAILED, "ContentTooLarge"),
    ("oversized_chunked", sync.FAILED, "ContentTooLarge"),
    ("redirect", sync.FAILED, "ContentRedirected"),
    ("absolute_path", sync.FAILED, "UnsafeContentPath"),
    ("protocol_relative_path", sync.FAILED, "UnsafeContentPath"),
    ("dotdot_path", sync.FAILED, "UnsafeContentPath"),
    ("encoded_dot_path", sync.FAILED, "UnsafeContentPath"),
    ("at_path", sync.FAILED, "UnsafeContentPath"),
    ("shrunk", sync.FAILED, "TableInvalid"),
    ("bad_json", sync.FAILED, "TableInvalid"),
]


@pytest.fixture
def synced(store: ManifestStore, bungie: BungieClient, admin: DemoAdmin) -> sync.SyncResult:
    """A cache holding the origin's first release."""
    result = sync.run(store, bungie)
    assert result.outcome == sync.UPDATED
    return result


@pytest.mark.parametrize(("fault", "options", "outcome", "error", "retry_after"), MANIFEST_FAULTS)
def test_manifest_faults_are_classified_and_change_nothing(
    fault: str,
    options: dict[str, Any],
    outcome: str,
    error: str,
    retry_after: float | None,
    synced: sync.SyncResult,
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    admin.publish()
    before = snapshot(redis_client, key_prefix, skip=LIVE_KEYS_SKIP)
    admin.fault(fault, **options)

    result = sync.run(store, bungie)

    assert (result.outcome, result.error) == (outcome, error), result.summary()
    assert result.retry_after == retry_after
    assert result.transient == (outcome == sync.UNAVAILABLE)
    assert store.live_id() == synced.release_id
    assert snapshot(redis_client, key_prefix, skip=LIVE_KEYS_SKIP) == before
    check = store.last_check()
    assert check is not None
    assert (check["outcome"], check["error"]) == (outcome, error)
    assert check["failing_since"] is not None

    admin.clear_faults()
    recovered = sync.run(store, bungie)
    assert recovered.outcome == sync.UPDATED
    check = store.last_check()
    assert check is not None
    assert check["failing_since"] is None


@pytest.mark.parametrize(("fault", "outcome", "error"), CONTENT_FAULTS)
def test_content_faults_leave_the_live_release_and_no_staging(
    fault: str,
    outcome: str,
    error: str,
    synced: sync.SyncResult,
    store: ManifestStore,
    settings: ManifestSettings,
    admin: DemoAdmin,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    # The demo's item file is under 1 MiB: a 4 MiB cap is reached quickly, well inside the
    # deadline the slow faults need, also on a busy machine (16 MiB sometimes was not).
    tight = replace(settings, download_deadline=1.5, max_bytes=4 * 1024 * 1024)
    bungie = BungieClient.from_settings(tight)
    admin.publish()
    admin.fault(fault, table=ITEM_TABLE)
    live_data = snapshot(redis_client, key_prefix, skip=LIVE_KEYS_SKIP)

    result = sync.run(store, bungie)

    assert (result.outcome, result.error) == (outcome, error), result.summary()
    assert store.live_id() == synced.release_id
    assert snapshot(redis_client, key_prefix, skip=LIVE_KEYS_SKIP) == live_data
    elsewhere = [r for r in admin.requests_log() if r["path"].startswith("/elsewhere")]
    assert elsewhere == [], "a redirect was followed"

    admin.clear_faults()
    assert sync.run(store, bungie).outcome == sync.UPDATED
    assert leftovers(redis_client, store) == []


def test_a_404_is_retried_with_a_cache_buster(
    synced: sync.SyncResult, store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    admin.publish()
    admin.clear_requests_log()
    admin.fault("not_found", count=1, table=ITEM_TABLE)

    path = admin.state()["paths"]["jsonWorldComponentContentPaths"]["en"][ITEM_TABLE]

    result = sync.run(store, bungie)

    assert result.outcome == sync.UPDATED
    # This release's item file only: an aborted download of an earlier test's may still be
    # logged when its connection finally closes.
    item_requests = [r for r in admin.requests_log() if r["path"] == path]
    assert [(r["status"], bool(r["query"])) for r in item_requests] == [(404, False), (200, True)]


def test_a_short_429_is_waited_out(
    synced: sync.SyncResult, store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    admin.publish()
    admin.fault("http_429", count=1, retry_after=1)
    assert sync.run(store, bungie).outcome == sync.UPDATED


def test_a_run_that_died_mid_ingest_is_cleaned_up_by_the_next(
    synced: sync.SyncResult,
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    # What a killed worker leaves: a staged release half written, never committed.
    admin.publish()
    release_id = "deadbeefdeadbeef"
    dead = replace(synced_release(store), id=release_id)
    store.stage(dead)
    redis_client.hset(store.keys.table(release_id, "en", ITEM_TABLE), "1", b"{}")
    assert store.live_id() == synced.release_id

    assert sync.run(store, bungie).outcome == sync.UPDATED
    assert leftovers(redis_client, store) == []


def synced_release(store: ManifestStore) -> Release:
    info = store.live_release()
    assert info is not None
    return info.release


def test_the_api_key_never_reaches_content_or_logs(
    store: ManifestStore,
    settings: ManifestSettings,
    admin: DemoAdmin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bungie = BungieClient.from_settings(settings)
    assert sync.run(store, bungie).outcome == sync.UPDATED
    admin.publish()
    admin.fault("truncated", table=ITEM_TABLE)
    failed = sync.run(store, bungie)

    log = admin.requests_log()
    assert [r["api_key"] for r in log if r["path"].startswith("/Platform/")] == [True, True]
    assert {r["api_key"] for r in log if r["path"].startswith("/common/")} == {False}
    assert API_KEY not in caplog.text
    assert API_KEY not in repr(bungie)
    assert API_KEY not in str(failed.to_dict())


def test_a_wrong_api_key_is_a_configuration_error_without_the_key(
    store: ManifestStore, settings: ManifestSettings, admin: DemoAdmin
) -> None:
    wrong = "wrong-key-0123456789"
    result = sync.run(store, BungieClient.from_settings(replace(settings, api_key=wrong)))
    assert (result.outcome, result.error) == (sync.FAILED, "BungieConfigError")
    assert not result.transient
    assert wrong not in str(result.to_dict())


def test_a_missing_api_key_fails_without_calling_bungie(
    store: ManifestStore, settings: ManifestSettings, admin: DemoAdmin
) -> None:
    result = sync.run(store, BungieClient.from_settings(replace(settings, api_key=None)))
    assert (result.outcome, result.error) == (sync.FAILED, "BungieConfigError")
    assert result.message is not None
    assert "BUNGIE_API_KEY" in result.message
    assert admin.requests_log() == []


def test_an_unreachable_bungie_is_an_outage(
    store: ManifestStore, settings: ManifestSettings
) -> None:
    nowhere = replace(settings, base_url="http://127.0.0.1:9", retries=1)
    result = sync.run(store, BungieClient.from_settings(nowhere))
    assert (result.outcome, result.error) == (sync.UNAVAILABLE, "BungieOutage")
    assert result.message is not None
    assert "127.0.0.1:9" in result.message
