"""The Atom feed of releases (GET /feed.atom): valid for a feed reader, one entry per entry of
the history with what changed in it, names escaped, 304 on revalidation, nobody named."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit

import feedparser
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import changes
from app.manifest import sync
from app.manifest.store import WHOLE_TABLE
from devtools.demo.control import DemoAdmin

ATOM = "{http://www.w3.org/2005/Atom}"
CLASS_TABLE = "DestinyClassDefinition"
PUBLISH = {"added": 2, "removed": 1, "changed": 1, "renamed": 1, "restatted": 1}
WHO = "Guardian Ikora from 203.0.113.7"
REQUEST_ID = "req-feed-5f3a9c"


def run_sync(app: Flask, **context: Any) -> sync.SyncResult:
    """Run the sync engine in-process, as a worker would."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test", **context)
    assert result.outcome == sync.UPDATED, result.summary()
    assert result.release_id is not None
    return result


def read_feed(client: FlaskClient) -> tuple[TestResponse, Any]:
    """Fetch the feed; return the response and what feedparser made of it (never bozo)."""
    response = client.get("/feed.atom")
    assert response.status_code == 200
    parsed = feedparser.parse(response.get_data())
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return response, parsed


def atom_entries(response: TestResponse) -> list[ET.Element]:
    """Check the document's shape against RFC 4287's required elements; return its entries."""
    root = ET.fromstring(response.get_data())  # noqa: S314 - the app's own output, no DTD
    assert root.tag == f"{ATOM}feed"
    for tag in ("id", "title", "updated"):
        assert len(root.findall(f"{ATOM}{tag}")) == 1, f"the feed has one <{tag}>"
    assert root.find(f"{ATOM}author/{ATOM}name") is not None
    assert root.find(f"{ATOM}link[@rel='self']") is not None
    entries = root.findall(f"{ATOM}entry")
    for entry in entries:
        for tag in ("id", "title", "updated", "content"):
            assert len(entry.findall(f"{ATOM}{tag}")) == 1, f"an entry has one <{tag}>"
        assert entry.find(f"{ATOM}link[@rel='alternate']") is not None
        assert entry.find(f"{ATOM}content[@type='html']") is not None
    return entries


def content_html(entry: ET.Element) -> str:
    """Return an entry's content as the HTML a reader renders (the XML's text, unescaped once)."""
    found = entry.find(f"{ATOM}content")
    assert found is not None
    return found.text or ""


def reader_text(markup: str) -> str:
    """Return HTML as a reader shows it: tags gone (paragraphs and list items apart), entities
    decoded, runs of spaces one."""
    apart = re.sub(r"</?(?:p|ul|li)>", " ", markup)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", apart)))


def local(url: str) -> str:
    """Return an absolute link of the feed as the test client asks for it."""
    parts = urlsplit(url)
    assert parts.scheme == "http"
    assert parts.netloc == "localhost"
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture
def first(app: Flask) -> sync.SyncResult:
    return run_sync(app)


@pytest.fixture
def published(app: Flask, admin: DemoAdmin, first: sync.SyncResult) -> dict[str, Any]:
    """Publish a release that changes known items, sync it; return what the origin did."""
    change = admin.publish(**PUBLISH)
    change["result"] = run_sync(app)
    return change


def test_an_empty_history_is_a_valid_feed_with_no_entries(client: FlaskClient) -> None:
    response, parsed = read_feed(client)

    assert response.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert parsed.entries == []
    assert parsed.feed.title == "Destiny 2 manifest releases"
    assert parsed.feed.link == "http://localhost/history"
    assert atom_entries(response) == []


def test_each_release_is_an_entry_that_says_what_changed(
    client: FlaskClient, first: sync.SyncResult, published: dict[str, Any]
) -> None:
    second = published["result"]
    (renamed,) = published["renamed"]
    (restatted,) = published["restatted"]

    response, parsed = read_feed(client)

    assert response.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert [e.title for e in parsed.entries] == [
        f"Destiny 2 manifest {second.version}",
        f"Destiny 2 manifest {first.version}",
    ]
    assert parsed.feed.updated == parsed.entries[0].updated
    assert parsed.entries[0].updated_parsed >= parsed.entries[1].updated_parsed
    newest = parsed.entries[0]
    assert newest.link == f"http://localhost/releases/{second.release_id}"
    assert client.get(local(newest.link)).status_code == 200
    assert newest.author == "Manifest Syncer"
    text = reader_text(content_html(atom_entries(response)[0]))
    assert f"Release {second.version}, after {first.version}." in text
    assert "InventoryItem: 2 added, 1 removed, 3 changed" in text
    assert (
        f'displayProperties.name: "{renamed["old"]}" \N{RIGHTWARDS ARROW} "{renamed["new"]}"'
        in (text)
    )
    assert (
        f"{restatted['path']}: {restatted['old']} \N{RIGHTWARDS ARROW} {restatted['new']}" in text
    )
    assert f"{renamed['new']} (InventoryItem, changed)" in text
    assert "(InventoryItem, added)" in text
    assert f"/items/{renamed['hash']}" in newest.content[0].value
    oldest = reader_text(content_html(atom_entries(response)[1]))
    assert "the first one cached, so nothing to compare it with" in oldest


def test_ids_are_unique_stable_and_a_rollback_has_its_own_entry(
    app: Flask,
    client: FlaskClient,
    admin: DemoAdmin,
    first: sync.SyncResult,
    published: dict[str, Any],
) -> None:
    second = published["result"]
    (renamed,) = published["renamed"]
    admin.rollback()
    back = run_sync(app)
    assert back.rollback

    response, parsed = read_feed(client)
    _, again = read_feed(client)

    ids = [e.id for e in parsed.entries]
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert [e.id for e in again.entries] == ids
    assert all(i.startswith("tag:localhost,") for i in ids)
    rollback = parsed.entries[0]
    assert rollback.title == f"Destiny 2 manifest rolled back to {first.version}"
    assert rollback.link == f"http://localhost/releases/{second.release_id}?undone=1"
    assert client.get(local(rollback.link)).status_code == 200
    undone = reader_text(content_html(atom_entries(response)[0]))
    assert f"Bungie went back to release {first.version} from {second.version}." in undone
    # What the rollback did: the rename undone, new name back to old.
    assert f'"{renamed["new"]}" \N{RIGHTWARDS ARROW} "{renamed["old"]}"' in undone
    assert "InventoryItem: 1 added, 2 removed, 3 changed" in undone

    admin.publish(added=1, removed=0, changed=0)
    run_sync(app)
    _, later = read_feed(client)

    assert [e.id for e in later.entries][1:] == ids, "older entries keep their ids"


def add_hostile_changes(app: Flask, release_id: str) -> list[str]:
    """Log changes of class definitions under hostile names in `release_id`, by hand; return
    the names."""
    names = [
        '<script>alert("feed")</script>',
        "]]><evil>&amp; \x0b",
    ]
    with app.app_context():
        store = get_store()
        _, found = store.lookup({CLASS_TABLE: WHOLE_TABLE})
        numbers = list(found[CLASS_TABLE])[: len(names)]
        for number, name in zip(numbers, names, strict=True):
            fields = [{"path": "displayProperties.<b>name</b>", "old": "</code>]]>", "new": name}]
            record = changes.record(CLASS_TABLE, number, changes.CHANGED, name, fields)
            store.redis.hset(
                store.keys.changes(release_id),
                f"{CLASS_TABLE}:{number}",
                changes.encode_record(record),
            )
    return names


def test_hostile_names_are_escaped(
    app: Flask, client: FlaskClient, admin: DemoAdmin, first: sync.SyncResult
) -> None:
    admin.publish(added=1, removed=0, changed=0)
    release_id = run_sync(app).release_id
    assert release_id is not None
    add_hostile_changes(app, release_id)

    response, parsed = read_feed(client)

    body = response.get_data(as_text=True)
    assert "<script>" not in body
    assert "<evil>" not in body
    assert "]]>" not in body
    markup = content_html(atom_entries(response)[0])
    # The HTML a reader renders shows the names as text: no element of theirs in it.
    assert "<script>" not in markup
    assert "<evil>" not in markup
    assert "<b>" not in markup
    assert "&lt;script&gt;alert(&#34;feed&#34;)&lt;/script&gt;" in markup
    text = reader_text(markup)
    assert '<script>alert("feed")</script> (Class, changed)' in text
    # A character XML cannot carry is replaced, the rest of the name kept.
    assert "]]><evil>&amp; \N{REPLACEMENT CHARACTER} (Class, changed)" in text
    assert 'displayProperties.<b>name</b>: "</code>]]>" \N{RIGHTWARDS ARROW}' in text
    assert "&lt;script&gt;" in parsed.entries[0].content[0].value


def test_a_reader_holding_the_newest_gets_a_304_until_a_release(
    app: Flask, client: FlaskClient, admin: DemoAdmin, first: sync.SyncResult
) -> None:
    response = client.get("/feed.atom")
    etag = response.headers["ETag"]

    unchanged = client.get("/feed.atom", headers={"If-None-Match": etag})
    admin.publish(added=1, removed=0, changed=0)
    run_sync(app)
    released = client.get("/feed.atom", headers={"If-None-Match": etag})

    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert unchanged.status_code == 304
    assert unchanged.get_data() == b""
    assert unchanged.headers["ETag"] == etag
    assert unchanged.headers["Cache-Control"] == "public, max-age=60"
    assert released.status_code == 200
    assert released.headers["ETag"] != etag
    assert len(feedparser.parse(released.get_data()).entries) == 2


def test_nobody_who_asked_for_a_sync_is_named(
    app: Flask, signed_in: FlaskClient, admin: DemoAdmin
) -> None:
    first = run_sync(app, requested_by=WHO, request_id=REQUEST_ID)
    admin.publish(added=1, removed=1, changed=1)
    second = run_sync(app, requested_by=WHO, request_id=REQUEST_ID, run_id="run-feed-77")

    # Signed in, too: the feed is the same for everyone (and caches keep it).
    body = signed_in.get("/feed.atom").get_data(as_text=True)

    assert second.release_id is not None
    assert second.release_id in body, "the feed does list the releases"
    for personal in ("Ikora", "203.0.113.7", REQUEST_ID, "run-feed-77", first.run_id):
        assert personal not in body
