"""Every destination once per release, through two real workers and fake receivers over HTTP:
Slack, Discord and two webhooks; one down or throttled never blocks or repeats another, and
catches up when it recovers; the dashboard shows where each stands.

Time is compressed by the settings: retries after 1 and 2 s, then the task gives up (the
defaults: 30 s doubling to 15 min, 12 retries, about two hours); the next check queues it again.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from flask import Flask

from app import create_app
from app.keys import Keys
from app.notify import policy
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import drop_keys
from tests.conftest import drop_queue
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import fake_receiver
from tests.fake_slack import FakeSlack
from tests.fake_slack import fake_slack
from tests.processes import CeleryWorker
from tests.processes import celery_worker
from tests.processes import sync_on_worker

SECRET = "a-webhook-secret-for-these-tests-only"
MAX_RETRIES = 2


@dataclass
class Receivers:
    slack: FakeSlack
    discord: FakeReceiver
    hook_a: FakeReceiver
    hook_b: FakeReceiver

    def reset(self) -> None:
        self.slack.reset()
        for receiver in (self.discord, self.hook_a, self.hook_b):
            receiver.reset()

    def accepted(self) -> dict[str, int]:
        """Count the posts each destination accepted."""
        return {
            "slack": len(self.slack.received),
            "discord": len(self.discord.received),
            "hook_a": len(self.hook_a.received),
            "hook_b": len(self.hook_b.received),
        }


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    with ExitStack() as stack:
        yield Receivers(
            stack.enter_context(fake_slack()),
            stack.enter_context(fake_receiver()),
            stack.enter_context(fake_receiver(200)),
            stack.enter_context(fake_receiver(202)),
        )


@pytest.fixture(scope="module")
def settings(origin: DemoOriginProcess, redis_url: str, receivers: Receivers) -> dict[str, Any]:
    hooks = f"{receivers.hook_a.url_for('/a')},{receivers.hook_b.url_for('/b')}"
    return {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
        "SLACK_WEBHOOK_URL": receivers.slack.webhook_url,
        "DISCORD_WEBHOOK_URL": receivers.discord.url_for("/api/webhooks/1/token"),
        "WEBHOOK_URLS": hooks,
        "WEBHOOK_SECRET": SECRET,
        **{f"{kind}_RETRY_SECONDS": 1 for kind in ("SLACK", "DISCORD", "WEBHOOK")},
        **{f"{kind}_MAX_RETRIES": MAX_RETRIES for kind in ("SLACK", "DISCORD", "WEBHOOK")},
        "SYNC_MAX_RETRIES": 0,
    }


@pytest.fixture(scope="module")
def workers(settings: dict[str, Any], redis_client: redis.Redis) -> Iterator[list[CeleryWorker]]:
    """Two workers on the same queue, two processes each."""
    with celery_worker(settings) as first, celery_worker(settings) as second:
        yield [first, second]
    drop_queue(redis_client, settings["CELERY_QUEUE"])
    drop_keys(redis_client, settings["MANIFEST_KEY_PREFIX"])


@pytest.fixture
def app(
    settings: dict[str, Any],
    workers: list[CeleryWorker],
    receivers: Receivers,
    admin: DemoAdmin,
    redis_client: redis.Redis,
) -> Flask:
    drop_keys(redis_client, settings["MANIFEST_KEY_PREFIX"])
    receivers.reset()
    return create_app("testing", settings)


def all_idle(app: Flask, workers: list[CeleryWorker]) -> None:
    """Wait until both workers have run everything, retries included: any duplicate post would
    have been made by then."""
    for _ in range(2):  # a task one worker retried may have gone to the other meanwhile
        for worker in workers:
            worker.wait_until_idle(app.extensions["celery"], timeout=60)


def signed(post: Any) -> bool:
    """Check a webhook post's signature as the README tells a receiver to."""
    stamp = post.header("X-Manifest-Timestamp") or ""
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + post.body, hashlib.sha256)
    return hmac.compare_digest(f"sha256={mac.hexdigest()}", post.header("X-Manifest-Signature-256"))


def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.05)


def destination_row(app: Flask, name: str) -> str:
    """Return the dashboard's row of a destination, as HTML."""
    page = app.test_client().get("/").get_data(as_text=True)
    return page.split(f"<code>{name}</code>", 1)[1].split("</tr>", 1)[0]


def test_one_release_is_posted_once_to_each_destination_by_two_workers(
    app: Flask, admin: DemoAdmin, receivers: Receivers, workers: list[CeleryWorker]
) -> None:
    assert sync_on_worker(app)["outcome"] == "updated"
    all_idle(app, workers)
    assert receivers.accepted() == {"slack": 0, "discord": 0, "hook_a": 0, "hook_b": 0}

    published = admin.publish()
    release_id = sync_on_worker(app)["release_id"]
    for _ in range(3):  # later checks find every post sent or queued: none again
        assert sync_on_worker(app)["outcome"] == "unchanged"
    all_idle(app, workers)

    assert receivers.accepted() == {"slack": 1, "discord": 1, "hook_a": 1, "hook_b": 1}
    header = receivers.slack.received[0]["payload"]["blocks"][0]["text"]["text"]
    assert header.endswith(f"→ {published['version']}")
    (embed, *_) = receivers.discord.received[0].json["embeds"]
    assert embed["title"].startswith("Destiny 2 manifest updated")
    for hook in (receivers.hook_a, receivers.hook_b):
        (post,) = hook.received
        assert post.json["release_id"] == release_id
        assert signed(post)
    # Each post was made once, by whichever worker took its task.
    logs = "".join(worker.output() for worker in workers)
    assert logs.count(f"release {release_id}: sent") == 4
    for name in ("slack", "discord"):
        assert release_id in destination_row(app, name)


def test_a_receiver_down_for_long_gets_the_release_once_when_it_recovers(
    app: Flask,
    admin: DemoAdmin,
    receivers: Receivers,
    workers: list[CeleryWorker],
    settings: dict[str, Any],
    redis_client: redis.Redis,
) -> None:
    keys = Keys(settings["MANIFEST_KEY_PREFIX"])
    sync_on_worker(app)
    receivers.discord.down()  # connections refused: longer than every retry
    receivers.hook_a.answer_always(503)  # answers, but fails: as long
    receivers.hook_b.answer_next(500, times=MAX_RETRIES)  # back within its retries
    admin.publish()
    release_id = sync_on_worker(app)["release_id"]

    # Slack has it at once: the others' trouble holds nothing up.
    receivers.slack.wait_for(1)
    receivers.hook_b.wait_for(1)
    _slack, discord, hook_a, _hook_b = policy.destinations(app.config)
    wait_until(
        lambda: (
            not redis_client.exists(
                keys.delivery_queued(discord, release_id), keys.delivery_queued(hook_a, release_id)
            )
        ),
        "the posts to the receivers that stayed down to be given up on",
    )
    assert receivers.accepted() == {"slack": 1, "discord": 0, "hook_a": 0, "hook_b": 1}
    assert len(receivers.hook_a.attempts) == 1 + MAX_RETRIES
    assert len(receivers.hook_b.attempts) == 1 + MAX_RETRIES
    discord_row = destination_row(app, "discord")
    assert "failing since" in discord_row
    assert "none yet" in discord_row
    assert '<td class="num">1</td>' in discord_row  # still owed
    assert "<td>ok</td>" in destination_row(app, "slack")

    # Checks while they stay down queue the release again, and it is given up on again.
    sync_on_worker(app)
    all_idle(app, workers)
    assert receivers.accepted() == {"slack": 1, "discord": 0, "hook_a": 0, "hook_b": 1}

    receivers.discord.up()
    receivers.hook_a.recover()
    assert sync_on_worker(app)["outcome"] == "unchanged"  # the next poll: it catches up
    all_idle(app, workers)
    sync_on_worker(app)
    all_idle(app, workers)
    assert receivers.accepted() == {"slack": 1, "discord": 1, "hook_a": 1, "hook_b": 1}
    discord_row = destination_row(app, "discord")
    assert release_id in discord_row
    assert "failing" not in discord_row
    assert '<td class="num">0</td>' in discord_row


def test_a_throttled_destination_waits_and_posts_once_while_the_others_do_not_wait(
    app: Flask, admin: DemoAdmin, receivers: Receivers, workers: list[CeleryWorker]
) -> None:
    sync_on_worker(app)
    receivers.discord.answer_next(429, retry_after=1.5)
    receivers.hook_a.answer_next(429, retry_after=1)
    admin.publish()
    sync_on_worker(app)
    all_idle(app, workers)

    assert receivers.accepted() == {"slack": 1, "discord": 1, "hook_a": 1, "hook_b": 1}
    assert [post.status for post in receivers.discord.attempts] == [429, 204]
    assert [post.status for post in receivers.hook_a.attempts] == [429, 200]
    # Webhook B did not wait for A's throttle: it had its post before A's retry.
    assert receivers.hook_b.received[0].at < receivers.hook_a.received[0].at
