"""Discord's message of a release: embeds within every one of Discord's limits (also for a release
of 1,000 changes with long hostile names), Bungie's names shown as text and never a mention, the
changes in words with links; posted with `?wait=true`, a 429 waited out as Discord says."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from app.manifest.store import ITEM_TABLE
from app.notify import discord
from app.notify.destinations import TROUBLE
from app.notify.destinations import AlertNews
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryThrottled
from app.notify.destinations import ReleaseNews
from app.notify.wording import ChangeNotes
from app.notify.wording import pick
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import fake_receiver

RELEASE_URL = "https://syncer.example/releases/abc"
API_URL = "https://syncer.example/api/v1/releases/abc/changes"
TOKEN = "s3cr3t-webhook-token"
HOSTILE = "@everyone <@123> [click](https://evil.example) **bold** `x` ||spoiler||\n# head\n> quote"
KINDS = ("added", "removed", "changed", "unclassified", "reclassified")
# Our own markup: links to our pages, and Discord's timestamps.
OURS = re.compile(r"\[(?:[^\[\]\\]|\\.)*\]\(https://s(?:yncer)?\.example/[^()\s]*\)|<t:\d+:f>")


def page_url(table: str, number: int) -> str:
    if table == ITEM_TABLE:
        return f"https://syncer.example/items/{number}"
    return f"https://syncer.example/definitions/{table}/{number}"


def counts(table: str = ITEM_TABLE, **kinds: int) -> dict[str, Any]:
    every = dict.fromkeys(KINDS, 0)
    return {"table": table, **every, **kinds, "total": 100, "added_names": [], "changed_names": []}


def change(table: str, number: int, kind: str, name: str, *fields: dict[str, Any]) -> dict:
    return {"table": table, "hash": number, "kind": kind, "name": name, "fields": list(fields)}


def news(
    diff: list[dict[str, Any]],
    logged: list[dict[str, Any]],
    notes: ChangeNotes | None = None,
    **entry: Any,
) -> ReleaseNews:
    record = {
        "id": "abc",
        "version": "2.0",
        "previous": "def",
        "previous_version": "1.0",
        "rollback": False,
        "at": 1_800_000_000.0,
        "diff": diff,
        **entry,
    }
    listed = pick(logged)
    return ReleaseNews(
        record, logged, notes or ChangeNotes(listed, len(logged)), RELEASE_URL, API_URL, page_url
    )


def huge_release() -> ReleaseNews:
    """1,000 changes over 40 tables, every name long and hostile, every change listed."""
    tables = [f"Destiny{HOSTILE * 5}{n}Definition" for n in range(40)]
    logged = []
    for n in range(1000):
        kind = KINDS[n % len(KINDS)]
        fields = [{"path": f"perks.{i}.perkHash", "old": HOSTILE * 3, "new": i} for i in range(9)]
        name = f"{HOSTILE * 20} {n}"
        logged.append(change(tables[n % 40] if n % 2 else ITEM_TABLE, n, kind, name, *fields))
    diff = [counts(t, added=5, changed=300, removed=1, unclassified=2) for t in tables]
    version = HOSTILE * 40
    return news(
        diff,
        logged,
        ChangeNotes(logged, len(logged)),
        version=version,
        previous_version=version,
        rollback=True,
        changes={"kept": 1000, "cut": 52_000},
    )


def texts(payload: dict[str, Any]) -> list[str]:
    """Return every text of the embeds Discord reads as markdown."""
    found = []
    for embed in payload["embeds"]:
        found += [embed.get("title", ""), embed.get("description", "")]
        for f in embed.get("fields", []):
            found += [f["name"], f["value"]]
    return found


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def assert_within_limits(payload: dict[str, Any]) -> None:
    embeds = payload["embeds"]
    assert 1 <= len(embeds) <= 10
    total = 0
    for embed in embeds:
        parts = [embed.get("title", ""), embed.get("description", "")]
        parts.append((embed.get("footer") or {}).get("text", ""))
        assert utf16(parts[0]) <= 256
        assert utf16(parts[1]) <= 4096
        assert utf16(parts[2]) <= 2048
        fields = embed.get("fields", [])
        assert len(fields) <= 25
        for f in fields:
            assert 1 <= utf16(f["name"]) <= 256
            assert 1 <= utf16(f["value"]) <= 1024
            parts += [f["name"], f["value"]]
        total += sum(utf16(part) for part in parts)
    assert total <= 6000
    # What goes through the broker and to Discord is plain JSON.
    assert msgspec.json.decode(msgspec.json.encode(payload)) == payload


def assert_no_markup_from_bungie(payload: dict[str, Any]) -> None:
    assert payload["allowed_mentions"] == {"parse": []}
    for text in texts(payload):
        outside = OURS.sub("", text)
        assert re.search(r"(?<!\\)[@<]", re.sub(r"<t:\d+:f>", "", text)) is None, text
        assert re.search(r"(?<!\\)\[click", outside) is None, text
        assert re.search(r"(?<!\\)\]\(https://evil", text) is None, text
        assert re.search(r"(?<!\\)`", outside) is None, text
        assert re.search(r"(?<!\\)\|\|", outside) is None, text
        for line in text.split("\n"):
            assert not line.startswith((">", "#")), line


# -- the message ------------------------------------------------------------------------------


def test_a_huge_release_stays_within_every_limit_and_says_what_it_left_out() -> None:
    payload = discord.release_message(huge_release())

    assert_within_limits(payload)
    assert_no_markup_from_bungie(payload)
    summary, listing = payload["embeds"]
    assert summary["title"].startswith("Destiny 2 manifest rolled back: ")
    assert summary["title"].endswith("…")
    assert summary["url"] == RELEASE_URL
    assert "52,000 changes not kept" in summary["description"]
    assert f"[See the whole release]({RELEASE_URL})" in summary["description"]
    shown_tables = [f for f in summary["fields"] if f["name"] != "More tables"]
    more_tables = summary["fields"][-1]
    assert more_tables["name"] == "More tables"
    assert more_tables["value"] == f"…and {40 - len(shown_tables)} more"
    assert shown_tables[0]["value"] == "300 changed, 2 revealed, 5 added, 1 removed"
    lines = listing["description"].split("\n")
    listed = [line for line in lines if line.startswith("• ")]
    assert listed
    assert lines[-1] == f"…and {1000 - len(listed):,} more."


def test_changes_read_as_words_with_links_to_their_pages() -> None:
    weapon = change(
        ITEM_TABLE,
        7,
        "changed",
        "Fatebringer (Adept)",
        {"path": "displayProperties.name", "old": "Fatebringer", "new": "Fatebringer (Adept)"},
        {"path": "stats.stats.4043523819.value", "old": 30, "new": 33},
    )
    bucket = change("DestinyInventoryBucketDefinition", 9, "added", "Pocket")
    notes = ChangeNotes([weapon, bucket], 2, {}, {4043523819: "Impact"})
    diff = [counts(changed=1), counts("DestinyInventoryBucketDefinition", added=1)]

    payload = discord.release_message(news(diff, [weapon, bucket], notes))

    assert_within_limits(payload)
    summary, listing = payload["embeds"]
    assert summary["title"] == "Destiny 2 manifest updated: 1.0 → 2.0"
    assert summary["description"].startswith("**1 changed, 1 added**")
    assert summary["fields"] == [
        {"name": "InventoryItem", "value": "1 changed", "inline": True},
        {"name": "InventoryBucket", "value": "1 added", "inline": True},
    ]
    assert summary["timestamp"] == "2027-01-15T08:00:00+00:00"
    assert listing["description"].split("\n") == [
        r"• **[Fatebringer \(Adept\)](https://syncer.example/items/7)**: "
        r"renamed Fatebringer → Fatebringer \(Adept\); Impact 30 → 33",
        "• new InventoryBucket "
        "**[Pocket](https://syncer.example/definitions/DestinyInventoryBucketDefinition/9)**",
    ]


def test_a_release_without_a_change_log_lists_the_names_it_has() -> None:
    diff = [
        {**counts(added=1, changed=1), "added_names": [[1, HOSTILE]], "changed_names": [[2, ""]]}
    ]

    payload = discord.release_message(news(diff, []))

    assert_no_markup_from_bungie(payload)
    lines = payload["embeds"][1]["description"].split("\n")
    assert lines[0].startswith(r"• new: [\@everyone \<\@123\> \[click\]\(https\://evil.example\)")
    assert lines[1] == "• changed: [\\#2](https://syncer.example/items/2)"


def test_alerts_are_one_short_embed_without_mentions() -> None:
    alert = AlertNews(TROUBLE, 1_800_000_000.0, f"Bungie said {HOSTILE}", {}, "https://s.example/")

    payload = discord.alert_message(alert)

    assert_within_limits(payload)
    assert_no_markup_from_bungie(payload)
    (embed,) = payload["embeds"]
    assert embed["title"] == "Manifest sync is failing"
    assert "Failing since <t:1800000000:f>." in embed["description"]
    assert embed["description"].endswith("[Open the dashboard](https://s.example/)")


# -- sending ----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    # Discord answers ?wait=true with the message it saved.
    with fake_receiver(200, b'{"id": "1", "embeds": []}') as fake:
        yield fake


def delivery_to(receiver: FakeReceiver) -> discord.DiscordDelivery:
    (delivery,) = discord.deliveries({"DISCORD_WEBHOOK_URL": receiver.url_for(f"/api/{TOKEN}")})
    assert isinstance(delivery, discord.DiscordDelivery)
    return delivery


def test_a_post_waits_for_discord_to_save_the_message(receiver: FakeReceiver) -> None:
    delivery = delivery_to(receiver)
    payload = delivery.release_payload(huge_release())

    delivery.send(payload)

    (post,) = receiver.received
    assert post.path == f"/api/{TOKEN}?wait=true"
    assert post.json == payload
    assert post.json["allowed_mentions"] == {"parse": []}
    assert delivery.name == "discord"
    assert TOKEN not in repr(delivery)


@pytest.mark.parametrize(
    ("answer", "waited"),
    [
        ({"retry_after": 2.5}, 2.5),  # the body's float wins over the rounded-up header
        ({"body": {"message": "slow down"}, "Retry_After": "7"}, 7.0),
    ],
    ids=["body", "header"],
)
def test_a_429_says_how_long_to_wait_and_nothing_is_posted(
    receiver: FakeReceiver, answer: dict[str, Any], waited: float
) -> None:
    delivery = delivery_to(receiver)
    payload = delivery.release_payload(news([counts(changed=1)], []))
    receiver.answer_next(429, **answer)

    with pytest.raises(DeliveryThrottled) as caught:
        delivery.send(payload)

    assert caught.value.retry_after == waited
    assert receiver.received == []
    delivery.send(payload)  # once the wait is over
    assert len(receiver.received) == 1


def test_discord_down_is_transient_and_a_refusal_is_not(receiver: FakeReceiver) -> None:
    delivery = delivery_to(receiver)
    payload = delivery.alert_payload(AlertNews("recovered", 0.0, "ok", {}, "https://s.example/"))

    receiver.answer_next(502)
    with pytest.raises(DeliveryFailed) as down:
        delivery.send(payload)
    receiver.answer_next(400, body={"code": 50035, "message": "Invalid Form Body"})
    with pytest.raises(DeliveryFailed) as refused:
        delivery.send(payload)
    receiver.down()
    with pytest.raises(DeliveryFailed) as unreachable:
        delivery.send(payload)

    assert down.value.transient
    assert not refused.value.transient
    assert (
        str(refused.value)
        == 'Discord answered HTTP 400: {"code": 50035, "message": "Invalid Form Body"}'
    )
    assert unreachable.value.transient
    for failure in (down, refused, unreachable):
        assert TOKEN not in str(failure.value)
        assert "127.0.0.1" not in str(failure.value)
    assert receiver.received == []


def test_discord_that_never_answers_is_transient() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api/{TOKEN}"
        delivery = discord.DiscordDelivery(url, timeout=(1.0, 0.2))

        with pytest.raises(DeliveryFailed) as caught:
            delivery.send({"embeds": [], "allowed_mentions": {"parse": []}})

    assert caught.value.transient
    assert str(caught.value) == "Discord did not answer in time"


def test_discord_is_off_without_its_url() -> None:
    assert discord.deliveries({}) == []
    assert discord.deliveries({"DISCORD_WEBHOOK_URL": "  "}) == []
