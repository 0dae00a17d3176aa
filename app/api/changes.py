"""The API's change logs: what a release changed, one page at a time, and how one definition
changed across the history. Both change only when a commit lands (or the history is imported):
their ETag names the live release."""

from __future__ import annotations

from flask import jsonify
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue

from app.api import bp
from app.api.caching import REVALIDATE
from app.api.caching import live_release_id
from app.api.caching import not_modified
from app.api.caching import release_tag
from app.api.caching import tagged
from app.queries import parse_hash
from app.queries import read_view
from app.queries import reader
from app.release_changes import parse_change_query
from app.release_changes import parse_table
from app.release_changes import release_changes


@bp.get("/releases/<release_id>/changes")
@read_view
def release_changes_page(release_id: str) -> ResponseReturnValue:
    """List what the commit that built a release changed, by table, kind and name, a page at a
    time (?table=, ?kind=, ?q=: a name's substring, ?page=, ?per_page= up to 200).

    ?undone=1 lists what the rollback that undid the release changed: the inverse of its log.
    A release that was rolled back to shows, without it, the log of the commit that built it.
    """
    query = parse_change_query(request.args)
    # Read before the log: a commit landing meanwhile makes the answer newer than its tag.
    etag = release_tag(live_release_id())
    cached = not_modified(etag, REVALIDATE, star=False)
    if cached is not None:
        return cached
    shown = release_changes(reader(), release_id, undone=query.undone)
    found, total = shown.select(query)
    following = None
    if query.page * query.per_page < total:
        following = url_for(
            "api.release_changes_page",
            release_id=release_id,
            page=query.page + 1,
            _external=True,
            **query.filters(),
        )
    answer = jsonify(
        release=shown.summary,
        changes=found,
        total=total,
        page=query.page,
        per_page=query.per_page,
        next=following,
    )
    return tagged(answer, etag, REVALIDATE)


@bp.get("/definitions/<table>/<definition_hash>/history")
@read_view
def definition_history(table: str, definition_hash: str) -> ResponseReturnValue:
    """List how a definition changed in each release of the history, newest first (a
    rollback: as the inverse of what it undid); empty if it never changed there."""
    table = parse_table(table)
    number = parse_hash(definition_hash)
    etag = release_tag(live_release_id())
    cached = not_modified(etag, REVALIDATE)
    if cached is not None:
        return cached
    history = reader().definition_history(table, number)
    return tagged(jsonify(table=table, hash=number, history=history), etag, REVALIDATE)
