"""Slack: what the team reads, sent once per release, and only when syncing is really broken."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask import Flask

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from app.notify import slack
from app.notify.policy import after_check
from app.tasks import deliver_release
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import drop_keys
from tests.conftest import drop_queue
from tests.conftest import queued_task_ids
from tests.fake_slack import WEBHOOK_PATH
from tests.fake_slack import FakeSlack
from tests.fake_slack import fake_slack
from tests.processes import CeleryWorker
from tests.processes import celery_worker
from tests.processes import sync_on_worker

# -- building -----------------------------------------------------------------------------


def entry(**changes: Any) -> dict[str, Any]:
    diff = {
        "table": ITEM_TABLE,
        "added": 3,
        "changed": 2,
        "removed": 1,
        "total": 100,
        "added_names": [[1, "Fatebringer"], [2, "Ace <of> Spades & co"], [3, "x" * 500]],
        "changed_names": [[4, "Gjallarhorn"], [5, ""]],
    }
    quiet = {**diff, "table": "DestinyClassDefinition", "added": 0, "changed": 0, "removed": 0}
    return {
        "id": "abc",
        "version": "2.0",
        "previous": "def",
        "previous_version": "1.0",
        "rollback": False,
        "diff": [diff, quiet],
        **changes,
    }


def item_link(table: str, number: int) -> str:
    # As url_for builds them: an item's page, or any other definition's, its table quoted.
    if table == "DestinyInventoryItemDefinition":
        return f"https://syncer.example/items/{number}"
    return f"https://syncer.example/definitions/{quote(table, safe='')}/{number}"


def all_text(message: dict[str, Any]) -> str:
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in message["blocks"])


def test_release_message_says_what_changed() -> None:
    message = slack.release_message(entry(), item_link, "https://syncer.example/releases/abc")
    assert message["blocks"][0]["text"]["text"] == "Destiny 2 manifest updated: 1.0 → 2.0"
    text = all_text(message)
    assert f"*{ITEM_TABLE}*  +3  ~2  −1" in text  # noqa: RUF001 - the minus sign Slack shows
    assert "DestinyClassDefinition" not in text  # no line for a table that did not change
    assert "<https://syncer.example/items/1|Fatebringer>" in text
    assert "Ace &lt;of&gt; Spades &amp; co" in text
    assert "<https://syncer.example/items/5|#5>" in text  # an item without a name
    assert "<https://syncer.example/releases/abc|See the whole release>" in text
    assert "1.0 -> 2.0" in message["text"]


def test_long_names_and_lists_are_cut_cleanly() -> None:
    many = [[i, f"Item number {i} " * 20] for i in range(200)]
    big = entry()
    big["diff"] = [{**big["diff"][0], "table": f"Table{i}", "added_names": many} for i in range(80)]
    message = slack.release_message(big, item_link, "https://x")
    assert len(message["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in message["blocks"])
    assert len(message["blocks"][0]["text"]["text"]) <= 150
    assert all_text(message).count("• ") == 10
    assert "…" in all_text(message)


def test_a_rollback_says_so() -> None:
    message = slack.release_message(entry(rollback=True), item_link, "https://x")
    assert "rolled back: 1.0 → 2.0" in message["blocks"][0]["text"]["text"]
    assert "This is a rollback" in all_text(message)


def test_trouble_and_recovered_messages() -> None:
    check = {
        "at": 7200.0,
        "outcome": "unavailable",
        "error": "BungieMaintenance",
        "message": "down",
    }
    trouble = slack.trouble_message({**check, "failing_since": 0.0}, "https://x/")
    assert "BungieMaintenance" in trouble["text"]
    assert "1970-01-01 00:00 UTC" in trouble["text"]
    recovered = slack.recovered_message({"at": 7200.0, "outcome": "updated"}, 0.0, "https://x/")
    assert "recovered after 2h 0m" in recovered["text"]


# -- sending, through a real worker and a fake Slack on loopback --------------------------


@pytest.fixture(scope="module")
def slack_server() -> Iterator[FakeSlack]:
    with fake_slack() as server:
        yield server


@pytest.fixture(scope="module")
def slack_settings(
    origin: DemoOriginProcess, redis_url: str, slack_server: FakeSlack
) -> dict[str, Any]:
    return {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
        "SLACK_WEBHOOK_URL": slack_server.webhook_url,
        "SLACK_ALERT_AFTER_SECONDS": 2,
        "SLACK_RETRY_SECONDS": 1,
        "SLACK_MAX_RETRIES": 2,
        # Each trigger is one check here: how syncs retry is test_worker.py's business.
        "SYNC_MAX_RETRIES": 0,
    }


@pytest.fixture(scope="module")
def slack_worker(
    slack_settings: dict[str, Any], redis_client: redis.Redis
) -> Iterator[CeleryWorker]:
    with celery_worker(slack_settings) as process:
        yield process
    drop_queue(redis_client, slack_settings["CELERY_QUEUE"])
    drop_keys(redis_client, slack_settings["MANIFEST_KEY_PREFIX"])


@pytest.fixture
def app(
    slack_settings: dict[str, Any],
    slack_worker: CeleryWorker,
    slack_server: FakeSlack,
    admin: DemoAdmin,
    redis_client: redis.Redis,
) -> Flask:
    drop_keys(redis_client, slack_settings["MANIFEST_KEY_PREFIX"])
    slack_server.reset()
    return create_app("testing", slack_settings)


def all_sent(app: Flask, worker: CeleryWorker, slack_server: FakeSlack) -> list[dict[str, Any]]:
    """Return every message Slack received, once the worker has run all it was given: any
    duplicate would have been sent by then."""
    worker.wait_until_idle(app.extensions["celery"])
    return list(slack_server.received)


def test_a_new_release_is_announced_once_with_its_diff(
    app: Flask, admin: DemoAdmin, slack_server: FakeSlack, slack_worker: CeleryWorker
) -> None:
    first = sync_on_worker(app)
    assert first["outcome"] == "updated"
    assert all_sent(app, slack_worker, slack_server) == []  # filling an empty cache is no news
    published = admin.publish()

    second = sync_on_worker(app)
    assert sync_on_worker(app)["outcome"] == "unchanged"

    messages = all_sent(app, slack_worker, slack_server)
    assert len(messages) == 1
    payload = messages[0]["payload"]
    assert f"→ {published['version']}" in payload["blocks"][0]["text"]["text"]
    text = all_text(payload)
    table_line = (
        f"+{len(published['added'])}  ~{len(published['changed'])}  −{len(published['removed'])}"  # noqa: RUF001
    )
    assert table_line in text
    items = next(d for d in second["diffs"] if d["table"] == ITEM_TABLE)
    first_hash, first_name = items["added_names"][0]
    assert f"<http://localhost/items/{first_hash}|{slack.escape(first_name)}>" in text
    assert f"http://localhost/releases/{second['release_id']}" in text


def test_a_429_is_waited_out_and_sent_once(
    app: Flask, admin: DemoAdmin, slack_server: FakeSlack, slack_worker: CeleryWorker
) -> None:
    sync_on_worker(app)
    admin.publish()
    slack_server.answer_next(429, Retry_After="1")
    sync_on_worker(app)
    assert len(all_sent(app, slack_worker, slack_server)) == 1
    assert [a["path"] for a in slack_server.attempts] == [WEBHOOK_PATH] * 2


def test_slack_down_retries_then_gives_up_and_the_sync_stays(
    app: Flask, admin: DemoAdmin, slack_server: FakeSlack, slack_worker: CeleryWorker
) -> None:
    sync_on_worker(app)
    admin.publish()
    slack_server.answer_next(500, times=10)

    result = sync_on_worker(app)

    assert result["outcome"] == "updated"
    with app.app_context():
        assert get_store().live_id() == result["release_id"]
    slack_worker.wait_until_idle(app.extensions["celery"])
    assert len(slack_server.attempts) == 3  # the first try and SLACK_MAX_RETRIES retries
    assert slack_server.received == []
    assert "Slack stayed unavailable after 2 retries, giving up" in slack_worker.output()
    # The next check queues it again, and this time Slack takes it: none lost.
    slack_server.reset()
    assert sync_on_worker(app)["outcome"] == "unchanged"
    assert len(all_sent(app, slack_worker, slack_server)) == 1


def test_the_same_release_is_announced_once(
    app: Flask, admin: DemoAdmin, slack_server: FakeSlack, slack_worker: CeleryWorker
) -> None:
    sync_on_worker(app)
    admin.publish()
    release_id = sync_on_worker(app)["release_id"]
    assert len(all_sent(app, slack_worker, slack_server)) == 1
    with app.app_context():
        # Their results kept (the task ignores them otherwise), to know when each is done.
        again = [
            deliver_release.apply_async(("slack", release_id, {}), ignore_result=False)
            for _ in range(3)
        ]
    assert [result.get(timeout=30) for result in again] == ["already sent"] * 3
    assert len(slack_server.received) == 1


def test_a_manifest_flipping_between_two_releases_is_announced_once_each(
    app: Flask, admin: DemoAdmin, slack_server: FakeSlack, slack_worker: CeleryWorker
) -> None:
    sync_on_worker(app)  # A, the first fill: no message
    admin.publish()
    sync_on_worker(app)  # B: announced
    admin.rollback()
    assert sync_on_worker(app)["rollback"]  # back to A: announced once, as a rollback
    admin.reset()
    admin.publish()  # the very same B again
    assert sync_on_worker(app)["rollback"]  # forward to B: a pointer flip, B was announced
    admin.rollback()
    assert sync_on_worker(app)["rollback"]  # and back to A, announced already

    messages = all_sent(app, slack_worker, slack_server)
    assert len(messages) == 2
    assert "updated" in messages[0]["payload"]["blocks"][0]["text"]["text"]
    assert "rolled back" in messages[1]["payload"]["blocks"][0]["text"]["text"]


def test_a_long_maintenance_makes_one_trouble_and_one_recovered_message(
    app: Flask,
    admin: DemoAdmin,
    slack_server: FakeSlack,
    slack_worker: CeleryWorker,
    slack_settings: dict[str, Any],
) -> None:
    sync_on_worker(app)
    admin.fault("maintenance")
    assert sync_on_worker(app)["outcome"] == "unavailable"  # just started: not yet worth a message
    assert all_sent(app, slack_worker, slack_server) == []
    # The behaviour under test: a transient failure is worth a message once it has lasted
    # SLACK_ALERT_AFTER_SECONDS, and only time makes it last.
    time.sleep(slack_settings["SLACK_ALERT_AFTER_SECONDS"] + 0.1)
    for _ in range(3):
        sync_on_worker(app)
    admin.clear_faults()
    sync_on_worker(app)
    sync_on_worker(app)

    messages = all_sent(app, slack_worker, slack_server)
    assert len(messages) == 2
    assert "Manifest sync is failing" in messages[0]["payload"]["text"]
    assert "BungieMaintenance" in messages[0]["payload"]["text"]
    assert "recovered" in messages[1]["payload"]["text"]


def test_a_bad_api_key_is_reported_at_once(
    app: Flask, admin: DemoAdmin, slack_server: FakeSlack, slack_worker: CeleryWorker
) -> None:
    admin.fault("bad_api_key")
    assert sync_on_worker(app)["error"] == "BungieConfigError"
    messages = all_sent(app, slack_worker, slack_server)
    assert len(messages) == 1
    assert "BungieConfigError" in messages[0]["payload"]["text"]
    assert "test-api-key" not in str(messages[0]["payload"])


def test_slack_off_sends_nothing_and_says_nothing_wrong(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    queued = queued_task_ids(redis_client, app_overrides["CELERY_QUEUE"])
    with fake_slack() as server:
        app = create_app("testing", app_overrides)
        assert "Slack is off" in caplog.text
        assert slack.sender_from_config(app.config) is None
        with app.app_context():
            for _ in range(2):
                after_check(sync.run(get_store(), get_bungie()))
                admin.publish()
            prefix = app_overrides["MANIFEST_KEY_PREFIX"]
            # Nothing was queued: no pending-message marker, no alert, no task.
            assert list(redis_client.scan_iter(match=f"{prefix}:notif*")) == []
        assert queued_task_ids(redis_client, app_overrides["CELERY_QUEUE"]) == queued
        assert server.attempts == []
        assert "ERROR" not in caplog.text


def test_a_bot_token_posts_to_the_channel(slack_server: FakeSlack) -> None:
    slack_server.reset()
    sender = slack.BotSender("xoxb-test-token", "#manifest", base_url=slack_server.url + "/api/")
    sender.send({"text": "hello", "blocks": []})
    (request,) = slack_server.received
    assert request["path"] == "/api/chat.postMessage"
    assert request["payload"]["channel"] == "#manifest"
    assert request["headers"]["Authorization"] == "Bearer xoxb-test-token"
    slack_server.answer_next(500)
    with pytest.raises(slack.SlackUnavailable):
        sender.send({"text": "again", "blocks": []})
