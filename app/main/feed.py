"""The Atom feed of releases (GET /feed.atom): one entry per entry of the history, saying what
changed in it, for feed readers; public, so it names nobody who asked for a sync."""

from __future__ import annotations

import hashlib
import heapq
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any
from urllib.parse import quote
from urllib.parse import urlsplit

import msgspec
from flask import Response
from flask import current_app
from flask import request
from flask import url_for
from markupsafe import escape

from app.main import bp
from app.main.presenters import ID_PLACEHOLDER
from app.main.presenters import TABLE_PLACEHOLDER
from app.main.presenters import Links
from app.main.presenters import fill
from app.manifest.changes import KIND_WORDS
from app.manifest.items import table_label
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store import shown_log
from app.queries import read_view
from app.queries import reader
from app.release_changes import KINDS

ATOM = "http://www.w3.org/2005/Atom"
FEED_TYPE = "application/atom+xml; charset=utf-8"
# Releases come a few a week: a reader that polls daily sees every one. Each entry reads its
# release's change log, so the feed is not the whole history.
FEED_ENTRIES = 20
# What an entry details: the first changed definitions, each with its first fields.
DEFINITIONS_LISTED = 10
FIELDS_LISTED = 5
VALUE_CHARS = 80
# Short: a new release shows within a minute; revalidating is a 304 of one Redis round trip.
CACHE_CONTROL = "public, max-age=60"
AUTHOR = "Manifest Syncer"
# Part of the ETag: a reader holding a feed of an older shape gets the new one.
FEED_FORMAT = "1"
# An entry's time when the history does not say (never, since the history records it).
EPOCH = 0.0

# The order an entry lists definitions in: changed fields first (what players notice), then
# reveals, additions, redactions, removals.
_LISTING_ORDER = {
    kind: n
    for n, kind in enumerate(("changed", "unclassified", "added", "reclassified", "removed"))
}

# Characters XML 1.0 cannot carry at all, escaped or not (control characters, lone surrogates):
# a definition's name is Bungie's text, and one such character would break the whole feed.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DNS_NAME = re.compile(r"[a-z0-9.-]+")
_encode = msgspec.json.Encoder().encode

# (prefix, ETag, URL root) -> the feed's bytes: a reader's first fetch after a release reads
# the change logs once per process, not once per reader.
FEEDS_KEPT = 4
_feeds: dict[tuple[str, str, str], bytes] = {}
_feeds_lock = threading.Lock()


@bp.get("/feed.atom")
@read_view
def feed() -> Response:
    """Answer the Atom feed of releases, newest first (304 when the reader has the newest)."""
    store = reader()
    newest = store.history(1)
    etag = feed_etag(newest[0] if newest else None)
    if request.if_none_match.contains_weak(etag):
        return _answer(Response(status=304), etag)
    cache_key = (store.keys.prefix, etag, request.url_root)
    body = _feeds.get(cache_key)
    if body is None:
        entries = store.history(FEED_ENTRIES)
        # A release committed between the two reads: answer the newer state, under its tag.
        etag = feed_etag(entries[0] if entries else None)
        cache_key = (store.keys.prefix, etag, request.url_root)
        body = render_feed(store, entries)
        with _feeds_lock:
            _feeds.pop(cache_key, None)
            _feeds[cache_key] = body
            while len(_feeds) > FEEDS_KEPT:
                del _feeds[next(iter(_feeds))]
    return _answer(Response(body, content_type=FEED_TYPE), etag)


def _answer(response: Response, etag: str) -> Response:
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


def feed_etag(newest: Mapping[str, Any] | None) -> str:
    """Return the feed's ETag: the newest history entry identifies what the feed holds."""
    if newest is None:
        return f"feed-{FEED_FORMAT}-empty"
    state = f"{FEED_FORMAT}:{newest['id']}:{newest.get('rollback')}:{newest.get('at')!r}"
    return "feed-" + hashlib.sha256(state.encode()).hexdigest()[:32]


def render_feed(store: ManifestStore, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """Return the Atom document of `entries` (newest first) as UTF-8."""
    root = ET.Element("feed", {"xmlns": ATOM})
    _text(root, "title", "Destiny 2 manifest releases")
    _text(root, "subtitle", "Each release of the Destiny 2 manifest this server cached.")
    self_url = url_for("main.feed", _external=True)
    _text(root, "id", self_url)
    _text(root, "updated", rfc3339(entries[0].get("at") if entries else None))
    ET.SubElement(root, "link", rel="self", type="application/atom+xml", href=self_url)
    history_url = url_for("main.history", _external=True)
    ET.SubElement(root, "link", rel="alternate", type="text/html", href=history_url)
    ET.SubElement(ET.SubElement(root, "author"), "name").text = AUTHOR
    _text(root, "generator", AUTHOR)
    made = _links()
    authority = _tag_authority()
    for entry in entries:
        root.append(feed_entry(entry, store.changes_of(entry), made, authority))
    document = '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", document).encode()


def feed_entry(
    entry: Mapping[str, Any], log: Sequence[Mapping[str, Any]], made: FeedLinks, authority: str
) -> ET.Element:
    """Return the <entry> of one history entry: what it released and what changed in it.

    Nothing of the entry's trigger is shown: who asked for a sync is for the admin only.
    """
    at = entry.get("at")
    element = ET.Element("entry")
    _text(element, "id", entry_id(entry, authority))
    _text(element, "title", entry_title(entry))
    _text(element, "updated", rfc3339(at))
    ET.SubElement(element, "link", rel="alternate", type="text/html", href=entry_url(entry, made))
    ET.SubElement(ET.SubElement(element, "author"), "name").text = AUTHOR
    content = ET.SubElement(element, "content", type="html")
    content.text = entry_html(entry, log, made)
    return element


def entry_id(entry: Mapping[str, Any], authority: str) -> str:
    """Return an entry's id: a tag: URI of its release, its kind and its time.

    The time tells apart entries of one release (built, rolled back to, built again).
    """
    at = _time(entry.get("at"))
    day = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
    kind = "rollback" if entry.get("rollback") else "build"
    release_id = quote(str(entry["id"]), safe="")
    return f"tag:{authority},{day}:manifest/{release_id}/{kind}/{round(at * 1000)}"


def entry_title(entry: Mapping[str, Any]) -> str:
    """Return an entry's title: "Destiny 2 manifest <version>" or "... rolled back to <version>"."""
    version = entry.get("version") or entry["id"]
    if entry.get("rollback"):
        return f"Destiny 2 manifest rolled back to {version}"
    return f"Destiny 2 manifest {version}"


def entry_url(entry: Mapping[str, Any], made: FeedLinks) -> str:
    """Return the page of an entry: its release's, or what a rollback undid."""
    log = shown_log(entry)
    if log is not None and log[1]:
        return made.release(log[0]) + "?undone=1"
    return made.release(str(entry["id"]))


def entry_html(entry: Mapping[str, Any], log: Sequence[Mapping[str, Any]], made: FeedLinks) -> str:
    """Return what an entry says, as HTML: the release, counts per table and kind, and the
    first changed definitions with their changed fields (old -> new)."""
    parts = [f"<p>{escape(_headline(entry))}</p>"]
    counted = [line for diff in entry.get("diff") or () if (line := _count_line(diff))]
    if counted:
        parts.append("<p>Changed definitions, by table:</p><ul>")
        parts += (f"<li>{escape(line)}</li>" for line in counted)
        parts.append("</ul>")
    elif entry.get("previous"):
        parts.append("<p>No definition changed.</p>")
    if log:
        listed = heapq.nsmallest(DEFINITIONS_LISTED, log, key=_listing_key)
        parts.append("<p>First changed definitions:</p><ul>")
        parts += (_definition_html(change, made) for change in listed)
        parts.append("</ul>")
    parts.append(_more_html(entry, log, made))
    return "".join(parts)


def _headline(entry: Mapping[str, Any]) -> str:
    version = entry.get("version") or entry["id"]
    previous = entry.get("previous_version") or entry.get("previous")
    if entry.get("rollback"):
        return f"Bungie went back to release {version}" + (
            f" from {previous}." if previous else "."
        )
    if previous:
        return f"Release {version}, after {previous}."
    return f"Release {version}: the first one cached, so nothing to compare it with."


def _count_line(diff: Mapping[str, Any]) -> str:
    counts = [f"{diff[kind]:,} {KIND_WORDS[kind]}" for kind in KINDS if diff.get(kind)]
    return f"{table_label(str(diff['table']))}: {', '.join(counts)}" if counts else ""


def _listing_key(change: Mapping[str, Any]) -> tuple[int, bool, str, int]:
    return (
        _LISTING_ORDER[change["kind"]],
        change["table"] != ITEM_TABLE,
        str(change["name"]).casefold(),
        int(change["hash"]),
    )


def _definition_html(change: Mapping[str, Any], made: FeedLinks) -> str:
    name = change["name"] or f"#{change['hash']}"
    url = made.definition(change["table"], change["hash"])
    what = f"{table_label(change['table'])}, {KIND_WORDS[change['kind']]}"
    fields = change["fields"]
    html = f'<li><a href="{escape(url)}">{escape(name)}</a> ({escape(what)})'
    if fields:
        html += "<ul>" + "".join(_field_html(f) for f in fields[:FIELDS_LISTED])
        if len(fields) > FIELDS_LISTED:
            html += f"<li>and {len(fields) - FIELDS_LISTED:,} more fields</li>"
        html += "</ul>"
    return html + "</li>"


def _field_html(field: Mapping[str, Any]) -> str:
    old = _value(field["old"]) if "old" in field else "(absent)"
    new = _value(field["new"]) if "new" in field else "(gone)"
    return f"<li><code>{escape(field['path'])}</code>: {old} \N{RIGHTWARDS ARROW} {new}</li>"


def _value(value: Any) -> str:
    shown = _encode(value).decode()
    if len(shown) > VALUE_CHARS:
        shown = shown[: VALUE_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return f"<code>{escape(shown)}</code>"


def _more_html(entry: Mapping[str, Any], log: Sequence[Mapping[str, Any]], made: FeedLinks) -> str:
    """Return the closing line: how many changes are not listed, and where every one is."""
    url = escape(entry_url(entry, made))
    summary = entry.get("changes") or {}
    unlisted = max(len(log) - DEFINITIONS_LISTED, 0) + int(summary.get("cut") or 0)
    if not log and summary.get("kept"):
        return f'<p>Its change log has left the history; <a href="{url}">the release</a>.</p>'
    if unlisted:
        return f'<p>{unlisted:,} more changes: <a href="{url}">every change</a>.</p>'
    return f'<p><a href="{url}">The release</a>.</p>'


def rfc3339(at: float | None) -> str:
    """Format a Unix time as RFC 3339 in UTC ("2026-11-21T19:30:05Z")."""
    return datetime.fromtimestamp(_time(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(at: Any) -> float:
    return float(at) if isinstance(at, int | float) else EPOCH


def _text(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


@dataclass(frozen=True, slots=True)
class FeedLinks:
    """Absolute links (a feed is read away from the site), worked out once per feed."""

    pages: Links
    release_pattern: str

    def release(self, release_id: str) -> str:
        """Return a release page's URL."""
        return fill(self.release_pattern, release_id)

    def definition(self, table: str, definition_hash: int) -> str:
        """Return a definition's page (an item's page for an item)."""
        return self.pages.definition(table, definition_hash)


def _links() -> FeedLinks:
    pages = Links(
        item_pattern=url_for("main.item", item_hash=ID_PLACEHOLDER, _external=True),
        image_base="",
        definition_pattern=url_for(
            "main.definition",
            table=TABLE_PLACEHOLDER,
            definition_hash=ID_PLACEHOLDER,
            _external=True,
        ),
    )
    return FeedLinks(pages, url_for("main.release", release_id=ID_PLACEHOLDER, _external=True))


def _tag_authority() -> str:
    """Return the name tag: ids are minted under: the configured host, else this request's."""
    host = current_app.config.get("SERVER_NAME") or request.host
    name = (urlsplit(f"//{host}").hostname or "").lower()
    # An IP v6 address (or anything odd) is not a name a tag: URI can carry.
    return name if _DNS_NAME.fullmatch(name) else "manifest-syncer.invalid"
