"""The pages of what changed: a release's change log, filtered and paged, and a definition's
page with its history; the rows they show, shaped once per page."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msgspec
from flask import abort
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from markupsafe import escape

from app.extensions import get_settings
from app.main import bp
from app.main.presenters import keep_lang
from app.main.presenters import links
from app.manifest.changes import name_of
from app.manifest.store import ITEM_TABLE
from app.manifest.store import shown_log
from app.queries import parse_hash
from app.queries import parse_lang
from app.queries import read_view
from app.queries import reader
from app.release_changes import KINDS
from app.release_changes import ChangeQuery
from app.release_changes import ReleaseChanges
from app.release_changes import parse_change_query
from app.release_changes import parse_table
from app.release_changes import release_changes

# A value longer than this shows its start; the whole of it is one click away.
SHORT_VALUE = 80
# The fields a page shows of one definition's change; the API has every one.
FIELDS_SHOWN = 200

# What each kind of change is, in words, and the sign its count shows with.
KIND_TITLES = {
    "added": "new in this release",
    "removed": "gone in this release",
    "changed": "changed in some field",
    "unclassified": "revealed: it was redacted",
    "reclassified": "redacted: Bungie hides it again",
}
KIND_SIGNS = {"added": "+", "removed": "\N{MINUS SIGN}", "changed": "~"}
KIND_SIGNS.update((kind, "") for kind in KINDS if kind not in KIND_SIGNS)

# Pages of changes kept rendered per process: the last this many different ones.
SECTIONS_KEPT = 32
# (prefix, page URL, query, link patterns) -> (the log it shows, its HTML).
_sections: dict[tuple[Any, ...], tuple[list[dict[str, Any]], Markup]] = {}
_sections_lock = threading.Lock()

_encode = msgspec.json.Encoder().encode
bp.record_once(lambda state: state.app.jinja_env.globals.update(KIND_TITLES=KIND_TITLES))


@bp.get("/releases/<release_id>")
@read_view
def release(release_id: str) -> ResponseReturnValue:
    """Show what changed with one release: counts per table and kind, and every change, a page
    at a time, filtered by table, kind and name, each expandable to its field diff.

    ?undone=1 shows what the rollback that undid the release changed (the inverse of its log).
    """
    query = parse_change_query(request.args)
    store = reader()
    shown = release_changes(store, release_id, undone=query.undone)
    here = url_for("main.release", release_id=release_id)
    return render_template(
        "release.html",
        summary=shown.summary,
        entry=shown.entry or {},
        is_live=store.fresh_live_id() == release_id,
        # Not `here`: base.html sets that name for its sign-in link.
        release_url=here,
        changes=changes_section(shown, query, here),
    )


@bp.app_template_global()
def undone_url(entry: Mapping[str, Any]) -> str | None:
    """Return the URL of what a rollback in the history changed (the inverse of the log of the
    release it undid); None for any other entry."""
    log = shown_log(entry)
    if not entry.get("rollback") or log is None or not log[1]:
        return None
    return url_for("main.release", release_id=log[0], undone=1)


def changes_section(shown: ReleaseChanges, query: ChangeQuery, here: str) -> Markup:
    """Return what a release changed as HTML: counts per table and kind, what its log says,
    then the page of changes `query` asks for (the filters, rows and pager).

    Rendered once per process for the same page of the same log (a committed log never
    changes; the store hands back the same list while it keeps it), with the same links:
    on a release's day, everyone asks for its first page. Where templates reload when edited
    (debug), every request renders it, so that an edit shows.
    """
    made = links()
    key = (get_settings().key_prefix, here, query, made.item_pattern, made.definition_pattern)
    cached = _sections.get(key)
    if cached is not None and cached[0] is shown.log:
        return cached[1]
    found, total = shown.select(query)
    kept = {"undone": 1} if query.undone else {}
    html = Markup(  # noqa: S704 - Jinja's output, every value in it escaped
        render_template(
            "_changes.html",
            summary=shown.summary,
            entry=shown.entry or {},
            counts=count_rows(shown.summary["tables"], here, kept),
            query=query,
            filters=query.filters(),
            here=here,
            rows=change_rows(found),
            total=total,
            pages=max(1, -(-total // query.per_page)),
            kinds=KINDS,
            tables=get_settings().tables,
        )
    )
    if not current_app.jinja_env.auto_reload:
        with _sections_lock:
            _sections.pop(key, None)
            _sections[key] = (shown.log, html)
            while len(_sections) > SECTIONS_KEPT:
                del _sections[next(iter(_sections))]
    return html


@bp.get("/definitions/<table>/<definition_hash>")
@read_view
def definition(table: str, definition_hash: str) -> ResponseReturnValue:
    """Show a definition of the live release as stored, and how it changed across the history
    (?lang=: a cached language). An item goes to its own page."""
    table = parse_table(table)
    number = parse_hash(definition_hash)
    lang = parse_lang(request.args)
    kept = keep_lang(lang)
    if table == ITEM_TABLE:
        values: dict[str, Any] = {"item_hash": number, **kept}
        return redirect(url_for("main.item", **values))
    missing = f"There is no {table} {number} in the live release or the history."
    _, shown = definition_page(table, number, lang, missing)
    return render_template(
        "definition.html", table=table, definition_hash=number, kept=kept, **shown
    )


def definition_page(
    table: str, number: int, lang: str, missing: str
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Read a definition of the live release and its history for its page (an item's or any
    table's): the definition (None when gone) and what both templates show of it (`name`,
    `stored` as pretty JSON, `history`, `history_url`). 404 with `missing` when neither is."""
    store = reader()
    stored = store.definitions(table, [number], lang)[number]
    history = store.definition_history(table, number)
    if stored is None and not history:
        abort(404, description=missing)
    history_url = url_for("api.definition_history", table=table, definition_hash=number)
    shown = {
        "name": name_of(stored) or next((h["name"] for h in history if h["name"]), ""),
        "stored": None
        if stored is None
        else json.dumps(stored, indent=2, sort_keys=True, ensure_ascii=False),
        "history": history_rows(history, history_url),
        "history_url": history_url,
    }
    return stored, shown


# -- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One changed definition as a release's page lists it; `diff`: its fields, as HTML."""

    table: str
    hash: int
    kind: str
    name: str
    url: str
    diff: Markup


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One release in which a definition changed, as its page lists it."""

    release_id: str
    release_url: str
    version: str | None
    at: float | None
    rollback: bool
    kind: str
    name: str
    diff: Markup


@dataclass(frozen=True, slots=True)
class CountCell:
    """How many changes of one kind a table had, linked to them when there are some."""

    kind: str
    shown: str
    url: str | None


@dataclass(frozen=True, slots=True)
class CountRow:
    """One table's counts by kind, in KINDS' order."""

    table: str
    cells: list[CountCell]
    total: int | None


def change_rows(found: Iterable[Mapping[str, Any]]) -> list[ChangeRow]:
    """Return a page of changes as the release page lists them, links and diffs made once."""
    made = links()
    return [
        ChangeRow(
            table=change["table"],
            hash=change["hash"],
            kind=change["kind"],
            name=change["name"],
            url=made.definition(change["table"], change["hash"]),
            diff=field_diff(change["fields"]),
        )
        for change in found
    ]


def count_rows(
    tables: Iterable[Mapping[str, Any]], here: str, kept: Mapping[str, Any]
) -> list[CountRow]:
    """Return a release's counts per table and kind, each count linking to its changes when
    `here` (the release page, `kept`: the query values its links keep) is given."""
    rows = []
    for counted in tables:
        cells = []
        for kind in KINDS:
            count = counted.get(kind) or 0
            url = None
            if here and count:
                url = f"{here}?{urlencode({**kept, 'table': counted['table'], 'kind': kind})}"
            cells.append(CountCell(kind, f"{KIND_SIGNS[kind]}{count:,}", url))
        rows.append(CountRow(counted["table"], cells, counted.get("total")))
    return rows


def history_rows(history: Iterable[Mapping[str, Any]], more_url: str) -> list[HistoryRow]:
    """Return a definition's history as its page lists it, newest first.

    A rollback's row links to the view of what it undid, when the store names that release
    (`log`: {"release", "inverse"}, as history entries have it).
    """
    pattern = url_for("main.release", release_id="__release__")
    rows = []
    for item in history:
        # A rollback's row goes to what it undid, where the store says which log it shows.
        log = item.get("log")
        target = str(log["release"]) if log else item["release_id"]
        url = pattern.replace("__release__", target)
        if log and log["inverse"]:
            url += "?undone=1"
        rows.append(
            HistoryRow(
                release_id=item["release_id"],
                release_url=url,
                version=item.get("version"),
                at=item.get("at"),
                rollback=bool(item["rollback"]),
                kind=item["kind"],
                name=item["name"],
                diff=field_diff(item["fields"], more_url),
            )
        )
    return rows


# One changed field: its path, old -> new side by side (HTML made here: a page of a thousand
# fields renders in a fraction of what as many template calls take).
_FIELDS = (
    '<details class="fields"><summary>{count}</summary><table class="field-diff"><thead><tr>'
    "<th>Field</th><th>Old</th><th></th><th>New</th></tr></thead><tbody>{rows}</tbody></table>"
    "{more}</details>"
)
_FIELD = (
    '<tr><td><code>{}</code></td><td class="old">{}</td><td class="arrow">\N{RIGHTWARDS ARROW}'
    '</td><td class="new">{}</td></tr>'
)
_LONG = (
    '<details class="long"><summary><code>{}</code></summary><pre class="value">{}</pre></details>'
)


def field_diff(fields: list[Mapping[str, Any]], more_url: str | None = None) -> Markup:
    """Return a change's fields as HTML: old and new side by side, folded in a <details>.

    Values are compact JSON; a long one shows its start, the whole of it one click away. Past
    FIELDS_SHOWN fields, the rest are counted (and linked to, with `more_url`).
    """
    if not fields:
        return Markup("")
    rows = "".join(
        _FIELD.format(
            escape(field["path"]),
            _value(field["old"]) if "old" in field else _ABSENT,
            _value(field["new"]) if "new" in field else _GONE,
        )
        for field in fields[:FIELDS_SHOWN]
    )
    count = len(fields)
    more = ""
    if count > FIELDS_SHOWN:
        link = f': <a href="{escape(more_url)}">all of them (JSON)</a>' if more_url else ""
        more = f'<p class="muted">{count - FIELDS_SHOWN:,} more fields{link}.</p>'
    summary = f"{count:,} field{'' if count == 1 else 's'}"
    html = _FIELDS.format(count=summary, rows=rows, more=more)
    return Markup(html)  # noqa: S704 - every value in it escaped above


_ABSENT = '<span class="muted">absent</span>'
_GONE = '<span class="muted">gone</span>'


def _value(value: Any) -> str:
    shown = _encode(value).decode()
    if len(shown) <= SHORT_VALUE:
        return f"<code>{escape(shown)}</code>"
    start = shown[: SHORT_VALUE - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return _LONG.format(escape(start), escape(shown))
