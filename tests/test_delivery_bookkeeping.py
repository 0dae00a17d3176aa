"""What each destination was told, kept in Redis: once per release whoever races, a killed sender
waited out, filters and alerts as configured (no worker: the tests run the queued tasks)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis

from app import create_app
from app import triggers
from app.keys import Keys
from app.manifest import changes
from app.manifest.store import ITEM_TABLE
from app.notify import announce
from app.notify import policy
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryFilter
from app.notify.destinations import DeliveryThrottled
from app.notify.destinations import ReleaseNews
from app.notify.wording import ChangeNotes
from config import ConfigurationError
from config import ProductionConfig
from devtools.demo.control import DemoAdmin
from tests.conftest import run_task
from tests.conftest import take_queued_tasks
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import fake_receiver
from tests.fake_slack import FakeSlack
from tests.fake_slack import fake_slack

CLASS_TABLE = "DestinyClassDefinition"

# -- filters ----------------------------------------------------------------------------------


def change(table: str, kind: str, number: int) -> dict[str, Any]:
    return {"table": table, "hash": number, "kind": kind, "name": f"#{number}", "fields": []}


def news() -> ReleaseNews:
    logged = [
        change(ITEM_TABLE, changes.ADDED, 1),
        change(ITEM_TABLE, changes.CHANGED, 2),
        change(CLASS_TABLE, changes.CHANGED, 3),
    ]
    diff = [
        {"table": ITEM_TABLE, "added": 1, "changed": 1, "removed": 0, "added_names": [[1, "A"]]},
        {"table": CLASS_TABLE, "added": 0, "changed": 1, "removed": 0},
    ]
    return ReleaseNews(
        entry={"id": "r1", "version": "2", "previous": "r0", "diff": diff},
        changes=logged,
        notes=ChangeNotes(logged, len(logged)),
        release_url="http://x/releases/r1",
        changes_api_url="http://x/api/v1/releases/r1/changes",
        page_url=lambda table, number: f"http://x/{table}/{number}",
    )


def test_a_filter_keeps_its_tables_and_kinds_in_counts_changes_and_words() -> None:
    only_new_items = DeliveryFilter(frozenset({ITEM_TABLE}), frozenset({changes.ADDED}))
    narrowed = only_new_items.narrow(news())
    assert narrowed is not None
    assert [d["table"] for d in narrowed.entry["diff"]] == [ITEM_TABLE]
    assert narrowed.entry["diff"][0] == {
        "table": ITEM_TABLE,
        **dict.fromkeys(changes.KINDS, 0),
        "added": 1,
        "added_names": [[1, "A"]],
    }
    assert [c["hash"] for c in narrowed.changes] == [1]
    assert [c["hash"] for c in narrowed.notes.listed] == [1]
    assert narrowed.notes.total == 1


def test_a_release_touching_none_of_its_tables_leaves_nothing() -> None:
    assert DeliveryFilter(frozenset({"DestinyRaceDefinition"})).narrow(news()) is None
    assert DeliveryFilter(kinds=frozenset({changes.REMOVED})).narrow(news()) is None
    unfiltered = news()
    assert DeliveryFilter().narrow(unfiltered) is unfiltered


def test_filters_and_alerts_are_read_from_the_settings() -> None:
    config = {"DISCORD_TABLES": ("A", "B"), "DISCORD_KINDS": "added, changed", "SLACK_TABLES": ()}
    assert DeliveryFilter.from_settings(config, "discord") == DeliveryFilter(
        frozenset({"A", "B"}), frozenset({"added", "changed"})
    )
    assert DeliveryFilter.from_settings(config, "slack").everything
    with pytest.raises(ValueError, match="DISCORD_KINDS names unknown kinds of change \\(new\\)"):
        DeliveryFilter.from_settings({"DISCORD_KINDS": "added,new"}, "discord")


def test_a_filter_naming_an_unknown_kind_stops_the_app_at_start(
    app_overrides: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError, match="SLACK_KINDS names unknown kinds"):
        create_app(
            "testing",
            {**app_overrides, "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x", "SLACK_KINDS": "nwe"},
        )


def test_alerts_to_naming_an_unknown_destination_stops_the_app_at_start(
    app_overrides: dict[str, Any],
) -> None:
    with pytest.raises(
        ConfigurationError, match=r"ALERTS_TO names unknown destinations \(discrod\)"
    ):
        create_app(
            "testing",
            {**app_overrides, "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x", "ALERTS_TO": "discrod"},
        )


def test_production_refuses_webhooks_without_a_real_secret() -> None:
    base = {
        "REDIS_URL": "redis://r",
        "SECRET_KEY": "k" * 40,
        "BUNGIE_API_KEY": "real-key",
        "API_TOKEN": "t" * 40,
        "ADMIN_PASSWORD_HASH": "scrypt:...",
        "SERVER_NAME": "syncer.example",
    }
    assert ProductionConfig.problems(base) == []
    hooks = {**base, "WEBHOOK_URLS": ("https://hooks.example/a",)}
    assert ProductionConfig.problems(hooks) == ["WEBHOOK_SECRET (with WEBHOOK_URLS)"]
    for public in ("test-webhook-secret-0123456789", "dev-webhook-secret", "change-me"):
        found = ProductionConfig.problems({**hooks, "WEBHOOK_SECRET": public})
        assert found == ["WEBHOOK_SECRET (not an example, development or test value)"]
    short = ProductionConfig.problems({**hooks, "WEBHOOK_SECRET": "s3cret"})
    assert short == ["WEBHOOK_SECRET (at least 24 characters)"]
    assert ProductionConfig.problems({**hooks, "WEBHOOK_SECRET": "x7" * 20}) == []
    # Never the value itself: the message ends up in logs.
    assert not any("s3cret" in problem for problem in short)


# -- the bookkeeping, against Redis -------------------------------------------------------------


@pytest.fixture
def bookkeeping(redis_client: redis.Redis, key_prefix: str) -> announce.Announcements:
    return announce.Announcements(redis_client, Keys(key_prefix))


def test_racing_senders_post_a_release_once(bookkeeping: announce.Announcements) -> None:
    posted: list[Any] = []
    outcomes: list[str] = []

    def send(payload: Any) -> None:
        time.sleep(0.2)  # long enough for every other sender to try meanwhile
        posted.append(payload)

    def sender() -> None:
        outcomes.append(bookkeeping.deliver("discord", "r1", {"n": 1}, send))

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert posted == [{"n": 1}]
    assert outcomes.count(announce.SENT) == 1
    assert set(outcomes) <= {announce.SENT, announce.SENDING_ELSEWHERE, announce.ALREADY}
    # Later copies of the task (a redelivery, a check) find it sent.
    assert bookkeeping.deliver("discord", "r1", {"n": 1}, send) == announce.ALREADY
    assert posted == [{"n": 1}]


def test_a_sender_killed_mid_send_is_waited_out_then_posted_once(
    bookkeeping: announce.Announcements,
) -> None:
    keys = bookkeeping.keys
    posted: list[Any] = []
    # What a worker killed during its post leaves: its right to send, lapsing.
    bookkeeping.redis.set(keys.delivery_sending("webhook:0a1b2c3d", "r1"), "dead", px=300)
    assert bookkeeping.claim(["webhook:0a1b2c3d"], "r1", time.time()) == ["webhook:0a1b2c3d"]
    outcome = bookkeeping.deliver("webhook:0a1b2c3d", "r1", "body", posted.append)
    assert outcome == announce.SENDING_ELSEWHERE
    assert posted == []
    while bookkeeping.redis.exists(keys.delivery_sending("webhook:0a1b2c3d", "r1")):
        time.sleep(0.05)
    assert bookkeeping.deliver("webhook:0a1b2c3d", "r1", "body", posted.append) == announce.SENT
    assert bookkeeping.deliver("webhook:0a1b2c3d", "r1", "body", posted.append) == announce.ALREADY
    assert posted == ["body"]
    state = bookkeeping.states(["webhook:0a1b2c3d"])["webhook:0a1b2c3d"]
    assert (state.last_release, state.pending, state.failing_since) == ("r1", 0, None)


def test_a_release_slack_got_before_the_upgrade_is_not_posted_again(
    bookkeeping: announce.Announcements,
) -> None:
    bookkeeping.redis.set(bookkeeping.keys.announced("r1"), int(time.time()))
    assert bookkeeping.claim(["slack", "discord"], "r1", time.time()) == ["discord"]
    assert bookkeeping.deliver("slack", "r1", {}, lambda _: None) == announce.ALREADY


def test_a_destination_whose_claim_fails_does_not_hold_the_others_back(
    bookkeeping: announce.Announcements, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord's owed releases are stored as something else (a hand edit gone wrong): every
    claim for it fails, yet Slack still gets each release, and the log names Discord."""
    keys = bookkeeping.keys
    bookkeeping.redis.set(keys.delivery_pending("discord"), "not a sorted set")
    assert bookkeeping.claim(["discord", "slack"], "r1", time.time()) == ["slack"]
    assert bookkeeping.claim(["discord", "slack"], "r2", time.time()) == ["slack"]
    assert bookkeeping.redis.exists(keys.delivery_queued("slack", "r1"))
    # Its script stopped after making the claim: dropped, no task is queued for it.
    assert not bookkeeping.redis.exists(keys.delivery_queued("discord", "r1"))
    failures = [r for r in caplog.records if "claim release r2 for discord" in r.getMessage()]
    assert [r.levelname for r in failures] == ["ERROR"], caplog.text
    assert "WRONGTYPE" in failures[0].getMessage()
    # Nothing else to claim for: the error is raised, as any other Redis error.
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        bookkeeping.claim(["discord"], "r3", time.time())


def test_the_state_says_throttled_failing_and_pending(bookkeeping: announce.Announcements) -> None:
    def throttled(_: Any) -> None:
        raise DeliveryThrottled(60.0, "HTTP 429")

    def down(_: Any) -> None:
        raise DeliveryFailed("HTTP 503", transient=True)

    now = time.time()
    assert bookkeeping.claim(["discord", "slack"], "r1", now) == ["discord", "slack"]
    assert bookkeeping.claim(["discord", "slack"], "r1", now) == []  # queued already
    with pytest.raises(DeliveryThrottled):
        bookkeeping.deliver("discord", "r1", {}, throttled)
    with pytest.raises(DeliveryFailed):
        bookkeeping.deliver("slack", "r1", {}, down)
    bookkeeping.unqueue("slack", "r1")  # its task gave up: still owed
    states = bookkeeping.states(["discord", "slack"])
    assert states["discord"].throttled_until is not None
    assert states["discord"].throttled_until >= now + 59
    assert states["discord"].pending == 1
    assert states["slack"].failing_since is not None
    assert (states["slack"].error, states["slack"].pending) == ("HTTP 503", 1)
    # The next check queues what was given up on, and its post clears the trouble.
    assert bookkeeping.claim(["discord", "slack"], "r1", now) == ["slack"]
    assert bookkeeping.deliver("slack", "r1", {}, lambda _: None) == announce.SENT
    slack = bookkeeping.states(["slack"])["slack"]
    assert (slack.pending, slack.failing_since, slack.error, slack.last_release) == (
        0,
        None,
        None,
        "r1",
    )


# -- the policy, tasks run here as a worker would -----------------------------------------------


@pytest.fixture
def receivers() -> Iterator[tuple[FakeSlack, FakeReceiver, FakeReceiver]]:
    with fake_slack() as slack, fake_receiver() as discord, fake_receiver(200) as hook:
        yield slack, discord, hook


def test_a_filtered_destination_hears_nothing_of_tables_it_did_not_ask_for(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    redis_client: redis.Redis,
    receivers: tuple[FakeSlack, FakeReceiver, FakeReceiver],
) -> None:
    slack, discord, hook = receivers
    app = create_app(
        "testing",
        {
            **app_overrides,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            "DISCORD_WEBHOOK_URL": discord.url_for("/api/webhooks/1/token"),
            "DISCORD_TABLES": CLASS_TABLE,  # a release of new items is nothing to it
            "WEBHOOK_URLS": hook.url_for("/hook"),
            "WEBHOOK_TABLES": ITEM_TABLE,
            "WEBHOOK_KINDS": "added",
        },
    )
    queue = app_overrides["CELERY_QUEUE"]
    keys = Keys(app_overrides["MANIFEST_KEY_PREFIX"])
    assert run_task(app, triggers.SYNC_TASK, trigger="beat")["outcome"] == "updated"
    published = admin.publish()
    update = run_task(app, triggers.SYNC_TASK, trigger="beat")
    release_id = update["release_id"]

    tasks = take_queued_tasks(redis_client, queue)
    queued = sorted(args[0] for task, args in tasks if task == policy.DELIVER_RELEASE_TASK)
    assert len(queued) == 2
    assert queued[0] == "slack"
    assert queued[1].startswith("webhook:")
    record = msgspec.json.decode(redis_client.get(keys.delivered("discord", release_id)) or b"")
    assert record["outcome"] == announce.FILTERED
    for task, args in tasks:
        assert run_task(app, task, *args) == announce.SENT

    assert discord.attempts == []
    (body,) = [post.json for post in hook.received]
    assert list(body["counts"]) == [ITEM_TABLE]
    assert body["counts"][ITEM_TABLE]["added"] == len(published["added"])
    assert body["counts"][ITEM_TABLE]["changed"] == body["counts"][ITEM_TABLE]["removed"] == 0
    assert body["changes"]
    assert {c["kind"] for c in body["changes"]} == {"added"}
    assert len(slack.received) == 1  # Slack hears of everything
    # Nothing is owed to the filtered one: the next check queues nothing for anyone.
    assert run_task(app, triggers.SYNC_TASK, trigger="beat")["outcome"] == "unchanged"
    assert take_queued_tasks(redis_client, queue) == []
    page = app.test_client().get("/").get_data(as_text=True)
    discord_row = page.split("<code>discord</code>", 1)[1].split("</tr>", 1)[0]
    assert "none yet" in discord_row
    assert ">0<" in discord_row


def test_alerts_go_to_the_destinations_alerts_to_names(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    redis_client: redis.Redis,
    receivers: tuple[FakeSlack, FakeReceiver, FakeReceiver],
) -> None:
    slack, discord, hook = receivers
    app = create_app(
        "testing",
        {
            **app_overrides,
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            "DISCORD_WEBHOOK_URL": discord.url_for("/api/webhooks/1/token"),
            "WEBHOOK_URLS": hook.url_for("/hook"),
            "ALERTS_TO": "discord,webhook",
        },
    )
    admin.fault("bad_api_key")
    assert run_task(app, triggers.SYNC_TASK, trigger="beat")["outcome"] == "failed"
    tasks = take_queued_tasks(redis_client, app_overrides["CELERY_QUEUE"])
    assert sorted(args[0][:7] for _, args in tasks) == ["discord", "webhook"]
    for task, args in tasks:
        assert task == policy.DELIVER_ALERT_TASK
        assert run_task(app, task, *args) == announce.SENT
    assert slack.attempts == []
    assert "BungieConfigError" in json.dumps(discord.received[0].json)
    assert hook.received[0].json["event"] == "trouble"
