"""A post whose task the broker lost (a Redis failover that had not passed the task on, a purged
queue) is queued again by a later check, and posted once; a task that is still trying is left
alone (no tasks run here but those the tests take from the queue, as a worker would)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app import create_app
from app import triggers
from app.keys import Keys
from app.notify import announce
from app.notify import policy
from app.notify.destinations import DeliveryThrottled
from devtools.demo.control import DemoAdmin
from tests.conftest import run_task
from tests.conftest import take_queued_tasks
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import fake_receiver

# What a claim holds after this long without a sign of life from its task.
LONG_AGO = announce.QUEUED_STALE_SECONDS + 60


def silent_for(redis_client: redis.Redis, key: str, seconds: float) -> None:
    """Make a queued claim say its task was last heard of `seconds` ago (its life kept)."""
    redis_client.set(key, time.time() - seconds, keepttl=True)


@pytest.fixture
def hook() -> Iterator[FakeReceiver]:
    with fake_receiver(200) as receiver:
        yield receiver


def test_a_post_whose_task_was_lost_is_queued_again_and_posted_once(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    redis_client: redis.Redis,
    hook: FakeReceiver,
) -> None:
    app = create_app("testing", {**app_overrides, "WEBHOOK_URLS": hook.url_for("/hook")})
    queue = app_overrides["CELERY_QUEUE"]
    keys = Keys(app_overrides["MANIFEST_KEY_PREFIX"])
    assert run_task(app, triggers.SYNC_TASK, trigger="beat")["outcome"] == "updated"
    admin.publish()
    release_id = run_task(app, triggers.SYNC_TASK, trigger="beat")["release_id"]
    (lost,) = take_queued_tasks(redis_client, queue)  # the broker loses it: nobody runs it
    destination = lost[1][0]
    queued = keys.delivery_queued(destination, release_id)

    # While the task may still be on its way, checks leave the release to it.
    assert run_task(app, triggers.SYNC_TASK, trigger="beat")["outcome"] == "unchanged"
    assert take_queued_tasks(redis_client, queue) == []
    # Half an hour without a sign of life: the next check queues the release again.
    silent_for(redis_client, queued, LONG_AGO)
    assert run_task(app, triggers.SYNC_TASK, trigger="beat")["outcome"] == "unchanged"
    (again,) = take_queued_tasks(redis_client, queue)
    assert again == lost
    assert run_task(app, again[0], *again[1]) == announce.SENT

    assert [post.json["release_id"] for post in hook.received] == [release_id]
    assert run_task(app, triggers.SYNC_TASK, trigger="beat")["outcome"] == "unchanged"
    assert take_queued_tasks(redis_client, queue) == []
    # The lost task turning up after all posts nothing more.
    assert run_task(app, lost[0], *lost[1]) == announce.ALREADY
    assert len(hook.received) == 1
    with app.app_context():
        (state,) = policy.destination_states()
    assert (state.pending, state.last_release) == (0, release_id)


def test_a_task_still_trying_keeps_its_claim(redis_client: redis.Redis, key_prefix: str) -> None:
    bookkeeping = announce.Announcements(redis_client, Keys(key_prefix))
    queued = bookkeeping.keys.delivery_queued("discord", "r1")

    def throttled(_: Any) -> None:
        raise DeliveryThrottled(600.0, "HTTP 429")

    assert bookkeeping.claim(["discord"], "r1", time.time()) == ["discord"]
    silent_for(redis_client, queued, LONG_AGO)
    # The task tries (throttled: it will retry): a sign of life.
    with pytest.raises(DeliveryThrottled):
        bookkeeping.deliver("discord", "r1", {}, throttled)
    assert bookkeeping.claim(["discord"], "r1", time.time()) == []
    # Silent for long after that, it is taken for lost.
    silent_for(redis_client, queued, LONG_AGO)
    assert bookkeeping.claim(["discord"], "r1", time.time()) == ["discord"]
    assert redis_client.ttl(queued) > announce.QUEUED_STALE_SECONDS


def test_a_claim_left_by_an_older_release_of_the_app_can_be_taken_again(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    bookkeeping = announce.Announcements(redis_client, Keys(key_prefix))
    queued = bookkeeping.keys.delivery_queued("slack", "r1")
    redis_client.set(queued, "1", ex=announce.QUEUED_SECONDS)  # what it held before
    assert bookkeeping.claim(["slack"], "r1", time.time()) == ["slack"]
    assert bookkeeping.claim(["slack"], "r1", time.time()) == []
