"""A team's webhook gets a signed JSON body: the README's receiver (run from the README itself)
accepts it, and refuses a wrong secret, a changed body and a replay older than five minutes; the
body has the documented fields; a 429 is waited out, a 5xx retried, another 4xx not."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from app.manifest.store import ITEM_TABLE
from app.notify import webhook
from app.notify.destinations import TROUBLE
from app.notify.destinations import AlertNews
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryThrottled
from app.notify.destinations import ReleaseNews
from app.notify.wording import ChangeNotes
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import Post
from tests.fake_receivers import fake_receiver

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- The receiver's example: tests/test_webhook.py runs this code block. -->"
SECRET = "a-secret-only-the-receiver-knows"
TOKEN = "t0ken-in-the-url"
RELEASE_URL = "https://syncer.example/releases/abc"
API_URL = "https://syncer.example/api/v1/releases/abc/changes"
KINDS = ("added", "removed", "changed", "unclassified", "reclassified")
Verify = Callable[[bytes, Any, bytes], bool]


def readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Discord and webhooks")
    return text[start : text.index("\n#", start + 4)]


@pytest.fixture(scope="module")
def verify() -> Verify:
    """The README's receiver example, run as it is written there."""
    after = README.read_text(encoding="utf-8").split(MARKER, 1)[1]
    block = re.match(r"\s*```python\n(.*?)```", after, re.DOTALL)
    assert block is not None, "the README's receiver example is not right after its marker"
    code = block.group(1)
    # Ten lines of code (blank lines, which the formatter adds, not counted).
    assert len([line for line in code.strip().splitlines() if line.strip()]) <= 10
    namespace: dict[str, Any] = {}
    # The README's own code, so that what it tells receivers to run stays true.
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102
    found: Verify = namespace["verify"]
    return found


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    with fake_receiver(200, b"thanks") as fake:
        yield fake


def page_url(table: str, number: int) -> str:
    return f"https://syncer.example/definitions/{table}/{number}"


def release(count: int = 3, **entry: Any) -> ReleaseNews:
    logged = [
        {
            "table": ITEM_TABLE,
            "hash": n,
            "kind": "changed",
            "name": f"Item {n}",
            "fields": [{"path": "stats.stats.4043523819.value", "old": n, "new": n + 1}],
        }
        for n in range(count)
    ]
    diff = [
        {"table": ITEM_TABLE, **dict.fromkeys(KINDS, 0), "changed": count, "total": 9000},
        {"table": "DestinyStatDefinition", **dict.fromkeys(KINDS, 0), "added": 2, "total": 40},
    ]
    record = {
        "id": "abc",
        "version": "2.0",
        "previous": "def",
        "previous_version": "1.0",
        "rollback": False,
        "at": 1_800_000_000.5,
        "diff": diff,
        "changes": {"kept": count, "cut": 0, "bytes": 100},
        **entry,
    }
    return ReleaseNews(record, logged, ChangeNotes(), RELEASE_URL, API_URL, page_url)


def delivery_to(receiver: FakeReceiver, **config: Any) -> webhook.WebhookDelivery:
    settings = {"WEBHOOK_URLS": receiver.url_for(f"/hooks/{TOKEN}"), "WEBHOOK_SECRET": SECRET}
    (delivery,) = webhook.deliveries({**settings, **config})
    assert isinstance(delivery, webhook.WebhookDelivery)
    return delivery


def headers_of(post: Post) -> CaseInsensitiveDict[str]:
    return CaseInsensitiveDict(post.headers)


# -- the signature ----------------------------------------------------------------------------


def test_the_readme_receiver_accepts_a_post_and_refuses_a_forgery(
    receiver: FakeReceiver, verify: Verify
) -> None:
    delivery = delivery_to(receiver)

    delivery.send(delivery.release_payload(release()))

    (post,) = receiver.received
    headers = headers_of(post)
    assert verify(SECRET.encode(), headers, post.body)
    assert headers["X-Manifest-Signature-256"].startswith("sha256=")
    assert not verify(b"another secret", headers, post.body)
    assert not verify(SECRET.encode(), headers, post.body.replace(b'"2.0"', b'"2.1"'))
    unsigned = CaseInsensitiveDict({**headers, "X-Manifest-Signature-256": "sha256=00"})
    assert not verify(SECRET.encode(), unsigned, post.body)
    del unsigned["X-Manifest-Timestamp"]
    assert not verify(SECRET.encode(), unsigned, post.body)


def test_the_readme_receiver_refuses_a_replay_older_than_five_minutes(
    receiver: FakeReceiver, verify: Verify, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery = delivery_to(receiver)
    delivery.send(delivery.release_payload(release()))
    (post,) = receiver.received
    sent = int(headers_of(post)["X-Manifest-Timestamp"])
    assert abs(sent - time.time()) < 60

    monkeypatch.setattr(time, "time", lambda: sent + 301.0)  # the same post, replayed later
    assert not verify(SECRET.encode(), headers_of(post), post.body)
    monkeypatch.setattr(time, "time", lambda: sent + 299.0)
    assert verify(SECRET.encode(), headers_of(post), post.body)


def test_a_retry_is_signed_anew_and_keeps_its_delivery_id(
    receiver: FakeReceiver, verify: Verify, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery = delivery_to(receiver)
    payload = delivery.release_payload(release())
    real = time.time
    monkeypatch.setattr(webhook.time, "time", lambda: real() - 3600)
    delivery.send(payload)  # sent an hour ago, say, and its answer lost
    monkeypatch.undo()

    delivery.send(payload)
    delivery.send(delivery.release_payload(release()))  # built again by a later check

    old, retried, rebuilt = (headers_of(post) for post in receiver.received)
    assert not verify(SECRET.encode(), old, receiver.received[0].body)
    assert verify(SECRET.encode(), retried, receiver.received[1].body)
    ids = {h["X-Manifest-Delivery"] for h in (old, retried, rebuilt)}
    assert len(ids) == 1
    other = delivery.release_payload(release(id="xyz", at=1_800_000_900.0))
    assert other["delivery"] not in ids


# -- the body and headers ---------------------------------------------------------------------


def test_the_body_has_the_documented_fields(receiver: FakeReceiver) -> None:
    delivery = delivery_to(receiver)

    delivery.send(delivery.release_payload(release(count=1000, rollback=True)))

    (post,) = receiver.received
    body = post.json
    headers = headers_of(post)
    assert headers["X-Manifest-Event"] == "release"
    assert headers["X-Manifest-Delivery"] == body["delivery"]
    assert headers["Content-Type"] == "application/json"
    assert body["event"] == "release"
    assert (body["release_id"], body["version"], body["previous_version"]) == ("abc", "2.0", "1.0")
    assert body["previous_release_id"] == "def"
    assert body["rollback"] is True
    assert body["at"] == 1_800_000_000.5
    assert body["counts"][ITEM_TABLE] == {**dict.fromkeys(KINDS, 0), "changed": 1000}
    assert body["counts"]["DestinyStatDefinition"]["added"] == 2
    assert body["totals"] == {**dict.fromkeys(KINDS, 0), "changed": 1000, "added": 2}
    assert len(body["changes"]) == 20
    assert body["changes_total"] == 1000
    assert body["changes_cut"] == 0
    assert body["changes"][3] == {
        "table": ITEM_TABLE,
        "hash": 3,
        "kind": "changed",
        "name": "Item 3",
        "fields": [{"path": "stats.stats.4043523819.value", "old": 3, "new": 4}],
        "url": f"https://syncer.example/definitions/{ITEM_TABLE}/3",
    }
    assert body["links"] == {"release": RELEASE_URL, "changes": API_URL}
    # The README names every field of the body, and no other.
    documented = readme_section()
    for key in body:
        assert f'"{key}"' in documented, key
    for key in body["changes"][0]:
        assert f'"{key}"' in documented, key


def test_an_alert_says_what_happened(receiver: FakeReceiver) -> None:
    delivery = delivery_to(receiver)
    check = {"at": 1_800_000_000.0, "outcome": "failed", "error": "BungieConfigError", "x": 1}
    alert = AlertNews(TROUBLE, 1_799_990_000.0, "Manifest sync is failing", check, "https://s/")

    delivery.send(delivery.alert_payload(alert))

    (post,) = receiver.received
    assert headers_of(post)["X-Manifest-Event"] == "trouble"
    body = post.json
    assert body["event"] == "trouble"
    assert body["since"] == 1_799_990_000.0
    assert body["message"] == "Manifest sync is failing"
    assert body["check"] == {
        "at": 1_800_000_000.0,
        "outcome": "failed",
        "error": "BungieConfigError",
    }
    assert body["links"] == {"dashboard": "https://s/"}
    for key in body:
        assert f'"{key}"' in readme_section(), key


# -- how answers are taken --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "waited"),
    [
        ({"Retry_After": "7"}, 7.0),
        # An hour from when the test runs (not from when it was collected): see below.
        ({"Retry_After": "in an hour"}, 3600.0),
        ({}, webhook.DEFAULT_RETRY_AFTER),
    ],
    ids=["seconds", "http-date", "none"],
)
def test_a_429_says_how_long_to_wait(
    receiver: FakeReceiver, headers: dict[str, str], waited: float
) -> None:
    delivery = delivery_to(receiver)
    if headers.get("Retry_After") == "in an hour":
        headers = {"Retry_After": formatdate(time.time() + 3600, usegmt=True)}
    receiver.answer_next(429, 1, retry_after=None, body={"error": "slow down"}, **headers)

    with pytest.raises(DeliveryThrottled) as caught:
        delivery.send(delivery.release_payload(release()))

    assert caught.value.retry_after == pytest.approx(waited, abs=5)
    assert receiver.received == []


@pytest.mark.parametrize(("status", "transient"), [(500, True), (503, True), (400, False)])
def test_errors_are_transient_or_not_and_never_name_the_url(
    receiver: FakeReceiver, status: int, transient: bool
) -> None:
    delivery = delivery_to(receiver)
    receiver.answer_next(status, body={"echo": receiver.url_for(f"/hooks/{TOKEN}")})

    with pytest.raises(DeliveryFailed) as caught:
        delivery.send(delivery.release_payload(release()))

    assert caught.value.transient is transient
    assert str(caught.value).startswith(f"{delivery.name} answered HTTP {status}: ")
    assert TOKEN not in str(caught.value)


def test_a_receiver_down_is_transient(receiver: FakeReceiver) -> None:
    delivery = delivery_to(receiver)
    receiver.down()

    with pytest.raises(DeliveryFailed) as caught:
        delivery.send(delivery.release_payload(release()))

    assert caught.value.transient
    assert str(caught.value) == f"{delivery.name} could not be reached"


# -- settings ---------------------------------------------------------------------------------


def test_each_url_is_a_delivery_named_without_its_url() -> None:
    urls = [f"https://a.example/{TOKEN}", f"https://b.example/{TOKEN}"]
    config = {"WEBHOOK_URLS": f" {urls[0]} ,{urls[1]},{urls[0]},", "WEBHOOK_SECRET": SECRET}

    found = webhook.deliveries(config)
    again = webhook.deliveries({**config, "WEBHOOK_URLS": f"{urls[1]},{urls[0]}"})

    names = [d.name for d in found]
    assert len(names) == 2
    assert all(re.fullmatch(r"webhook:[0-9a-f]{8}", name) for name in names)
    assert sorted(d.name for d in again) == sorted(names)  # reordering keeps the names
    for delivery in found:
        assert TOKEN not in repr(delivery)
        assert SECRET not in repr(delivery)
    assert webhook.deliveries({"WEBHOOK_SECRET": SECRET}) == []


def test_urls_without_a_secret_are_refused() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        webhook.deliveries({"WEBHOOK_URLS": "https://a.example/hook"})
