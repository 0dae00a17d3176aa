"""Scenario 6: Slack is down for an "hour" (compressed: retries after 1, 2 and 4 s, then the
task gives up), across several releases. Every release is announced once Slack is back: none
lost, none repeated, and the syncs never wait for Slack."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from celery import Celery

from app import create_app
from app.extensions import get_keys
from app.extensions import get_store
from app.notify.announce import Announcements
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.fake_slack import FakeSlack
from tests.fake_slack import fake_slack
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.helpers import run_task
from tests.reliability.helpers import send_beat_sync
from tests.reliability.servers import RedisServer
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

RETRY_SECONDS = 1
MAX_RETRIES = 3
GIVE_UP_AFTER = RETRY_SECONDS * (2**MAX_RETRIES - 1)  # 1 + 2 + 4 s of retries


class ReleaseNeverAnnounced(AssertionError):
    """A committed release got no Slack message."""


class Outage:
    """Fake Slack answers 500 from `start` to `end`."""

    def __init__(self, slack: FakeSlack) -> None:
        self.slack = slack

    def start(self) -> None:
        self.slack.answer_next(500, times=100_000)

    def end(self) -> None:
        with self.slack.lock:
            self.slack.script.clear()


@pytest.fixture
def stack(origin: DemoOriginProcess, admin: DemoAdmin) -> Iterator[dict[str, Any]]:
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        slack = stack.enter_context(fake_slack())
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": origin.url,
            "MANIFEST_KEY_PREFIX": unique("slack"),
            "CELERY_QUEUE": unique("slack"),
            "SLACK_WEBHOOK_URL": slack.webhook_url,
            "SLACK_RETRY_SECONDS": RETRY_SECONDS,
            "SLACK_MAX_RETRIES": MAX_RETRIES,
            "SLACK_ALERT_AFTER_SECONDS": 3600,
            "SYNC_MAX_RETRIES": 0,
        }
        app = create_app("testing", overrides)
        process = stack.enter_context(worker(overrides, concurrency=2))
        celery: Celery = app.extensions["celery"]
        with app.app_context():
            store = get_store()
            keys = get_keys()
        announcements = Announcements(store.redis, keys)
        assert run_task(celery, send_beat_sync(celery)).info["outcome"] == "updated"
        yield {
            "celery": celery,
            "slack": slack,
            "worker": process,
            "announcements": announcements,
            "outage": Outage(slack),
        }


def check(stack: dict[str, Any]) -> dict[str, Any]:
    """One poll, as beat makes it."""
    return run_task(stack["celery"], send_beat_sync(stack["celery"])).info


def release(stack: dict[str, Any], admin: Any) -> str:
    """Publish a release and sync it; return its version."""
    version = admin.publish()["version"]
    assert check(stack)["outcome"] == "updated"
    return version


def given_up(stack: dict[str, Any], release_id: str) -> bool:
    """True once the message of `release_id` is neither sent nor queued (the task gave up)."""
    announcements: Announcements = stack["announcements"]
    client = announcements.redis
    keys = announcements.keys
    return not client.exists(
        keys.delivery_queued("slack", release_id), keys.delivered("slack", release_id)
    )


def keep_checking(stack: dict[str, Any], seconds: float) -> int:
    """Poll once a second for `seconds`, as beat would; return how many polls ran."""
    deadline = time.monotonic() + seconds
    polls = 0
    while time.monotonic() < deadline:
        check(stack)
        polls += 1
        time.sleep(1.0)
    return polls


def announced(slack: FakeSlack, versions: list[str]) -> dict[str, int]:
    headers = [m["payload"]["blocks"][0]["text"]["text"] for m in slack.received]
    return {v: sum(h.endswith(f"→ {v}") for h in headers) for v in versions}


def test_slack_down_longer_than_the_retries_each_release_is_announced_once(
    stack: dict[str, Any], admin: DemoAdmin, figures: Figures
) -> None:
    slack: FakeSlack = stack["slack"]
    outage: Outage = stack["outage"]
    versions = []
    started = time.monotonic()

    # A long outage: the message's retries run out, and later polls queue it again.
    outage.start()
    versions.append(release(stack, admin))
    polls = keep_checking(stack, GIVE_UP_AFTER + 5)
    assert slack.received == []
    outage.end()
    wait_until(lambda: len(slack.received) >= 1, 30, "the first release's message")
    # Slack is back: the next release is announced at once.
    versions.append(release(stack, admin))
    wait_until(lambda: len(slack.received) >= 2, 30, "the second release's message")
    # A short outage: the retries bridge it.
    outage.start()
    versions.append(release(stack, admin))
    time.sleep(2.5)  # the outage under test: shorter than the retries (GIVE_UP_AFTER)
    outage.end()
    wait_until(lambda: len(slack.received) >= 3, 30, "the third release's message")
    polls += keep_checking(stack, 3)  # these polls must not announce any release again
    stack["worker"].wait_until_idle(stack["celery"])

    counts = announced(slack, versions)
    figures.scenario("slack-outage")["summary"] = {
        "releases": len(versions),
        "outages (s)": f"{GIVE_UP_AFTER + 5:.0f} and 2.5 (retries give up after {GIVE_UP_AFTER}s)",
        "polls while and after": polls,
        "requests Slack refused": len(slack.attempts) - len(slack.received),
        "messages received / releases": f"{len(slack.received)} / {len(versions)}",
        "repeated messages": sum(n - 1 for n in counts.values() if n > 1),
        "lost messages": sum(n == 0 for n in counts.values()),
        "scenario took (s)": round(time.monotonic() - started, 1),
        "gave up, then queued again": stack["worker"].output().count("giving up"),
    }
    assert counts == dict.fromkeys(versions, 1)
    assert len(slack.received) == len(versions)


def test_two_releases_during_one_long_outage_are_both_announced(
    stack: dict[str, Any], admin: DemoAdmin, figures: Figures
) -> None:
    slack: FakeSlack = stack["slack"]
    outage: Outage = stack["outage"]
    outage.start()
    first = admin.publish()["version"]
    first_id = check(stack)["release_id"]
    second = release(stack, admin)
    # Slack stays down until the first release's message is given up on.
    wait_until(lambda: given_up(stack, first_id), 4 * GIVE_UP_AFTER, "the retries to end")
    outage.end()
    keep_checking(stack, GIVE_UP_AFTER)
    stack["worker"].wait_until_idle(stack["celery"])  # every message of those polls is sent

    counts = announced(slack, [first, second])
    figures.scenario("slack-outage")["rows"].append(
        {
            "case": "two releases in one long outage",
            "messages for the first / second": f"{counts[first]} / {counts[second]}",
        }
    )
    assert counts[second] == 1
    if counts[first] == 0:
        raise ReleaseNeverAnnounced(f"release {first} was never announced: {counts}")
    assert counts == {first: 1, second: 1}
