"""A release's Slack message says what changed: the counts of each kind, what changed in the first
few definitions in words ("Impact 30 → 33", "renamed A → B"), and links to pages that exist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from app.notify import policy
from app.notify import slack
from app.notify.wording import ChangeNotes
from app.notify.wording import pick
from devtools.demo.control import DemoAdmin
from tests.fake_slack import FakeSlack
from tests.fake_slack import fake_slack
from tests.test_slack_escaping import HOSTILE
from tests.test_slack_escaping import assert_escaped

STAT_TABLE = "DestinyStatDefinition"
CLASS_TABLE = "DestinyClassDefinition"
BUCKET_TABLE = "DestinyInventoryBucketDefinition"
RELEASE_LINK = "https://syncer.example/releases/abc"
LINK = re.compile(r"<([^<>|]+)\|([^<>]*)>")
# One item of each kind that has words, and nothing else but `index`.
EACH_KIND = {
    "added": 0,
    "removed": 0,
    "changed": 0,
    "renamed": 1,
    "restatted": 2,
    "revealed": 1,
    "redacted": 1,
}


# -- the message, built from records ----------------------------------------------------------


def item_link(table: str, number: int) -> str:
    # As url_for builds them: an item's page, or any other definition's, its table quoted.
    if table == "DestinyInventoryItemDefinition":
        return f"https://syncer.example/items/{number}"
    return f"https://syncer.example/definitions/{quote(table, safe='')}/{number}"


def entry(*diffs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "abc",
        "version": "2.0",
        "previous": "def",
        "previous_version": "1.0",
        "rollback": False,
        "diff": list(diffs),
        **fields,
    }


def counts(table: str = ITEM_TABLE, **kinds: int) -> dict[str, Any]:
    every = dict.fromkeys(("added", "removed", "changed", "unclassified", "reclassified"), 0)
    return {"table": table, **every, **kinds, "total": 100, "added_names": [], "changed_names": []}


def change(table: str, number: int, kind: str, name: str, *fields: dict[str, Any]) -> dict:
    return {"table": table, "hash": number, "kind": kind, "name": name, "fields": list(fields)}


def sections(message: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]


def line_of(message: dict[str, Any], name: str) -> str:
    """Return the one line of the message that links `name`."""
    found = [line for text in sections(message) for line in text.split("\n") if f"|{name}>" in line]
    assert len(found) == 1, (name, sections(message))
    return found[0]


def test_stats_and_names_read_as_words() -> None:
    weapon = change(
        ITEM_TABLE,
        7,
        "changed",
        "Fatebringer (Adept)",
        {"path": "displayProperties.name", "old": "Fatebringer", "new": "Fatebringer (Adept)"},
        {"path": "stats.stats.4043523819.value", "old": 30, "new": 33},
        {"path": "investmentStats.1.value", "old": 50, "new": 45},
        {"path": "stats.stats.4043523819.maximum", "old": 100, "new": 120},
        {"path": "investmentStats.2", "new": {"statTypeHash": 1240592695, "value": 20}},
    )
    definition = {"investmentStats": [{"statTypeHash": 1}, {"statTypeHash": 1240592695}]}
    names = {4043523819: "Impact", 1240592695: "Range"}
    notes = ChangeNotes([weapon], 1, {(ITEM_TABLE, 7): definition}, names)

    message = slack.release_message(entry(counts(changed=1)), item_link, RELEASE_LINK, notes)

    line = line_of(message, "Fatebringer (Adept)")
    assert line == (
        "• <https://syncer.example/items/7|Fatebringer (Adept)>: "
        "renamed Fatebringer → Fatebringer (Adept); Impact 30 → 33; Range 50 → 45; "
        "2 more fields"
    )
    # Past the first three, what the fields say (the release page shows each of them).
    notes = ChangeNotes([{**weapon, "fields": weapon["fields"][3:]}], 1, notes.definitions, names)
    message = slack.release_message(entry(counts(changed=1)), item_link, RELEASE_LINK, notes)
    assert line_of(message, "Fatebringer (Adept)").endswith(
        ": Impact maximum 100 → 120; Range added (20)"
    )
    assert "*1 changed*" in sections(message)[0]


def test_a_stat_not_cached_is_said_by_its_path_and_long_changes_are_cut() -> None:
    fields = [{"path": f"perks.{n}.perkHash", "old": n, "new": n + 1} for n in range(6)]
    long_text = {"path": "flavorText", "old": "", "new": "a story " * 40}
    armor = change(
        ITEM_TABLE,
        8,
        "changed",
        "Cuirass",
        {"path": "stats.stats.392767087.value", "old": 10, "new": 12},
        long_text,
        *fields,
    )

    message = slack.release_message(
        entry(counts(changed=1)), item_link, RELEASE_LINK, ChangeNotes([armor], 1)
    )

    line = line_of(message, "Cuirass")
    assert "stats.stats.392767087.value 10 → 12" in line
    assert "flavorText (empty) → a story a story" in line
    assert len(line) < 300  # the value cut short
    assert line.endswith("; 5 more fields")  # eight fields, three said


def test_each_kind_reads_as_a_word_and_links_to_a_page_that_exists() -> None:
    listed = [
        change(ITEM_TABLE, 1, "added", "Ace of Spades"),
        change(ITEM_TABLE, 2, "removed", "Old Sword"),
        change(ITEM_TABLE, 3, "unclassified", "Vex Mythoclast"),
        change(ITEM_TABLE, 4, "reclassified", "Secret Thing"),
        change(
            BUCKET_TABLE, 5, "changed", "Kinetic Weapons", {"path": "index", "old": 1, "new": 2}
        ),
        change(CLASS_TABLE, 6, "added", "Hunter"),
    ]
    diff = [counts(added=1, removed=1, unclassified=1, reclassified=1), counts(BUCKET_TABLE)]
    diff[1]["changed"] = 1

    message = slack.release_message(
        entry(*diff), item_link, RELEASE_LINK, ChangeNotes(pick(listed), len(listed))
    )

    text = "\n".join(sections(message))
    assert "*1 added, 1 removed, 1 changed, 1 revealed, 1 redacted*" in text
    assert f"*{ITEM_TABLE}*  +1  ~0  −1  1 revealed  1 redacted" in text  # noqa: RUF001
    assert f"*{BUCKET_TABLE}*  +0  ~1  −0" in text  # noqa: RUF001
    # Five listed, one kind at a time; the sixth is counted.
    assert (
        line_of(message, "Ace of Spades") == "• new <https://syncer.example/items/1|Ace of Spades>"
    )
    assert line_of(message, "Vex Mythoclast").startswith(
        "• revealed <https://syncer.example/items/3|"
    )
    assert line_of(message, "Secret Thing").startswith(
        "• redacted <https://syncer.example/items/4|"
    )
    # A removed item's page shows its history; a bucket has a definition page of its own.
    assert line_of(message, "Old Sword") == "• removed <https://syncer.example/items/2|Old Sword>"
    bucket = "https://syncer.example/definitions/DestinyInventoryBucketDefinition"
    assert line_of(message, "Kinetic Weapons").startswith(f"• InventoryBucket <{bucket}/")
    assert "…and 1 more." in text
    assert "Hunter" not in text


def test_without_a_change_log_names_link_by_table() -> None:
    items = {**counts(added=1), "added_names": [[1, "Ace of Spades"]]}
    classes = {**counts(CLASS_TABLE, changed=1), "changed_names": [[6, "Hunter"]]}

    message = slack.release_message(entry(items, classes), item_link, RELEASE_LINK)

    assert (
        line_of(message, "Ace of Spades") == "• new: <https://syncer.example/items/1|Ace of Spades>"
    )
    hunter = "https://syncer.example/definitions/DestinyClassDefinition/6"
    assert line_of(message, "Hunter") == f"• changed: <{hunter}|Hunter>"


def test_what_the_origin_sent_is_escaped_in_the_words() -> None:
    hostile = change(
        f"Destiny{HOSTILE}Definition",
        9,
        "changed",
        HOSTILE,
        {"path": "displayProperties.name", "old": HOSTILE, "new": f"{HOSTILE}!"},
        {"path": f"stats.stats.1.{HOSTILE}", "old": HOSTILE, "new": 1},
        {"path": HOSTILE, "new": HOSTILE},
    )
    notes = ChangeNotes([hostile], 1, {}, {1: HOSTILE})

    for rollback in (False, True):
        message = slack.release_message(
            entry(counts(changed=1), rollback=rollback), item_link, RELEASE_LINK, notes
        )
        assert_escaped(message)
        assert "renamed &lt;!channel&gt; &amp;" in str(message)


def test_many_long_changes_stay_within_slack_limits() -> None:
    fields = [{"path": f"a{'x' * 200}.{n}", "old": "&" * 100, "new": "<" * 100} for n in range(9)]
    listed = [change(ITEM_TABLE, n, "changed", "&" * 200, *fields) for n in range(40)]
    diffs = [counts(f"Table{n}{'&' * 80}", changed=1) for n in range(80)]

    message = slack.release_message(
        entry(*diffs), item_link, RELEASE_LINK, ChangeNotes(pick(listed), 40)
    )

    assert len(message["blocks"]) <= 50
    assert len(message["text"]) <= 3000
    for text in sections(message):
        assert len(text) <= 3000
        # Every link whole: a cut never leaves half of one.
        assert text.count("<") == text.count(">") == len(LINK.findall(text))
    assert "…and 35 more." in "\n".join(sections(message))


# -- the message Slack receives after a sync of the demo origin ------------------------------


@pytest.fixture(scope="module")
def slack_server() -> Iterator[FakeSlack]:
    with fake_slack() as server:
        yield server


@pytest.fixture
def app_overrides(app_overrides: dict[str, Any], slack_server: FakeSlack) -> dict[str, Any]:
    slack_server.reset()
    return {**app_overrides, "SLACK_WEBHOOK_URL": slack_server.webhook_url}


def synced_and_announced(app: Flask, slack_server: FakeSlack) -> dict[str, Any]:
    """Sync, then send the release's message as its task does; return the message received."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie())
        assert result.outcome == sync.UPDATED, result.summary()
        assert result.release_id is not None
        assert policy.announce_release(result.release_id) == "sent"
    return slack_server.received[-1]["payload"]


def origin_table(admin: DemoAdmin, table: str) -> dict[int, dict[str, Any]]:
    """Return a table the demo origin serves now, by hash."""
    path = admin.state()["paths"]["jsonWorldComponentContentPaths"]["en"][table]
    response = requests.get(admin.url + path, timeout=30)
    response.raise_for_status()
    return {int(key): value for key, value in response.json().items()}


def assert_links_open(client: FlaskClient, message: dict[str, Any]) -> list[str]:
    """Open every link of the message as a visitor would; return them."""
    links = [url for text in sections(message) for url, _ in LINK.findall(text)]
    assert links
    for url in links:
        parts = urlsplit(url)
        assert parts.netloc == "localhost", url
        path = f"{parts.path}?{parts.query}" if parts.query else parts.path
        response = client.get(path)
        assert response.status_code == 200, (url, response.status_code)
    return links


def stat_words(admin: DemoAdmin, restatted: list[dict[str, Any]]) -> dict[int, str]:
    """Return, per restatted item, what the message should say: "<stat name> <old> → <new>"."""
    items, stats = origin_table(admin, ITEM_TABLE), origin_table(admin, STAT_TABLE)
    said = {}
    for moved in restatted:
        parts = moved["path"].split(".")
        if parts[0] == "stats":
            stat = int(parts[2])
        else:
            stat = items[moved["hash"]]["investmentStats"][int(parts[1])]["statTypeHash"]
        name = stats[stat]["displayProperties"]["name"]
        said[moved["hash"]] = f"{name} {moved['old']} → {moved['new']}"
    return said


def test_a_publish_is_announced_with_its_changes_in_words(
    app: Flask, admin: DemoAdmin, client: FlaskClient, slack_server: FakeSlack
) -> None:
    with app.app_context():
        sync.run(get_store(), get_bungie())
    before = origin_table(admin, ITEM_TABLE)
    published = admin.publish(**EACH_KIND)
    after = origin_table(admin, ITEM_TABLE)

    message = synced_and_announced(app, slack_server)

    text = "\n".join(sections(message))
    assert "*3 changed, 1 revealed, 1 redacted*" in text
    assert f"*{ITEM_TABLE}*  +0  ~3  −0  1 revealed  1 redacted" in text  # noqa: RUF001
    (renamed,) = published["renamed"]
    new_name, old_name = slack.escape(renamed["new"]), slack.escape(renamed["old"])
    assert line_of(message, new_name) == (
        f"• <http://localhost/items/{renamed['hash']}|{new_name}>: renamed {old_name} → {new_name}"
    )
    for number, words in stat_words(admin, published["restatted"]).items():
        name = slack.escape(after[number]["displayProperties"]["name"])
        assert line_of(message, name) == (
            f"• <http://localhost/items/{number}|{name}>: {slack.escape(words)}"
        )
    (revealed,) = published["revealed"]
    name = slack.escape(after[revealed]["displayProperties"]["name"])
    assert line_of(message, name) == f"• revealed <http://localhost/items/{revealed}|{name}>"
    (redacted,) = published["redacted"]
    name = slack.escape(before[redacted]["displayProperties"]["name"])
    assert line_of(message, name) == f"• redacted <http://localhost/items/{redacted}|{name}>"
    assert_links_open(client, message)


def test_a_rollback_says_what_it_undid(
    app: Flask, admin: DemoAdmin, client: FlaskClient, slack_server: FakeSlack
) -> None:
    with app.app_context():
        sync.run(get_store(), get_bungie())
    published = admin.publish(**EACH_KIND)
    synced_and_announced(app, slack_server)
    admin.rollback()

    message = synced_and_announced(app, slack_server)

    assert "rolled back" in message["blocks"][0]["text"]["text"]
    text = "\n".join(sections(message))
    assert f"It undid release {slack.escape(published['version'])}" in text
    assert "*3 changed, 1 revealed, 1 redacted*" in text
    (renamed,) = published["renamed"]
    old_name, new_name = slack.escape(renamed["old"]), slack.escape(renamed["new"])
    assert line_of(message, old_name).endswith(f": renamed {new_name} → {old_name}")
    for moved in published["restatted"]:
        undone = {**moved, "old": moved["new"], "new": moved["old"]}
        (words,) = stat_words(admin, [undone]).values()
        assert f"/items/{moved['hash']}|" in text
        assert f": {slack.escape(words)}" in text
    (was_revealed,) = published["revealed"]
    (was_redacted,) = published["redacted"]
    assert f"• redacted <http://localhost/items/{was_revealed}|" in text
    assert f"• revealed <http://localhost/items/{was_redacted}|" in text
    assert_links_open(client, message)


def test_definitions_of_other_tables_link_to_the_release_page(
    app_overrides: dict[str, Any],
    admin: DemoAdmin,
    slack_server: FakeSlack,
) -> None:
    # With nothing ignored, a renumbered `index` is a change: classes and buckets change.
    app = create_app("testing", {**app_overrides, "MANIFEST_DIFF_IGNORE": ()})
    client = app.test_client()
    with app.app_context():
        sync.run(get_store(), get_bungie())
    admin.publish(tables=[CLASS_TABLE, BUCKET_TABLE])

    message = synced_and_announced(app, slack_server)

    text = "\n".join(sections(message))
    classes, buckets = origin_table(admin, CLASS_TABLE), origin_table(admin, BUCKET_TABLE)
    lines = [line for line in text.split("\n") if line.startswith("• ")]
    assert lines
    for line in lines:
        assert line.startswith(("• Class <", "• InventoryBucket <")), line
        assert "/items/" not in line
        assert ": index " in line
    names = {d["displayProperties"]["name"] for d in [*classes.values(), *buckets.values()]}
    assert {name for _, name in LINK.findall("\n".join(lines))} <= {slack.escape(n) for n in names}
    links = assert_links_open(client, message)
    assert all("/items/" not in url for url in links)
