"""The API's views: trigger a sync, poll its task, read the cached manifest, items, history and
players, and the API's own description; each read with its ETag and Cache-Control (caching.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
import redis
from celery.exceptions import BackendError
from flask import Response
from flask import abort
from flask import current_app
from flask import jsonify
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import RequestEntityTooLarge

from app.api import bp
from app.api import openapi
from app.api.caching import NO_STORE
from app.api.caching import PRIVATE
from app.api.caching import REVALIDATE
from app.api.caching import body_tag
from app.api.caching import live_release_id
from app.api.caching import not_modified
from app.api.caching import release_tag
from app.api.caching import tagged
from app.api.caching import value_tag
from app.api.definitions import send_definition
from app.auth import client_address
from app.auth import is_authorised
from app.auth import token_required
from app.manifest.store import ITEM_TABLE
from app.player_pages import current_players
from app.player_pages import load_page
from app.player_pages import parse_bungie_name
from app.queries import parse_hash
from app.queries import parse_item_query
from app.queries import parse_lang
from app.queries import read_view
from app.queries import reader
from app.queries import search_items
from app.triggers import LOST
from app.triggers import known_task
from app.triggers import start_sync
from app.triggers import sync_status

TASK_ID = re.compile(r"[0-9a-fA-F-]{8,64}")
HISTORY_LIMIT = 20
MAX_HISTORY_LIMIT = 100
# Who asked for a sync and from where (a name, an address, a request id): the admin's to see.
WHO_ASKED = ("requested_by", "request_id")
# What the answers showing who asked vary with: the token, or the admin's session.
VARY_WITH_ADMIN = "Authorization, Cookie"
# The description changes with a deploy only.
DESCRIPTION_CACHE = "public, max-age=300"


@bp.before_request
def refuse_large_bodies() -> None:
    """Answer 413 to a body over MAX_CONTENT_LENGTH even where the view never reads it."""
    length = request.content_length
    if not length:
        return  # Most requests (reads) send no body: the limit is not even looked up.
    limit = request.max_content_length
    if limit is not None and length > limit:
        raise RequestEntityTooLarge(f"The request body may be at most {limit:,} bytes.")


@bp.post("/manifest/sync")
@token_required
def trigger_sync() -> ResponseReturnValue:
    """Queue a sync, or join the one queued or running; point to its status.

    Rate limited per client; the count is kept in the round trip that finds the sync to join.
    """
    triggered = start_sync("api", requested_by="api")
    status_url = url_for("api.task_status", task_id=triggered.task_id, _external=True)
    body = jsonify(task_id=triggered.task_id, status_url=status_url, joined=triggered.joined)
    return body, 202, {"Location": status_url}


@bp.get("/tasks/<task_id>")
def task_status(task_id: str) -> ResponseReturnValue:
    """Show a sync task's state (LOST: its worker died), with its progress, result or error.

    Who asked for it is shown with the API token (or to the signed-in admin) only.
    """
    if not TASK_ID.fullmatch(task_id):
        abort(400, description="A task id is 8 to 64 hexadecimal digits and dashes.")
    trigger = known_task(task_id)
    if trigger is None:
        abort(404, description=f"No sync task {task_id} was started here (or it expired).")
    try:
        status = sync_status(task_id)
    except (redis.RedisError, BackendError):
        abort(503, description="The result backend is not answering. Retry in a moment.")
    state, info = status.state, status.info
    answer = jsonify(
        task_id=task_id,
        state=state,
        progress=status.progress,
        result=info if state == "SUCCESS" else None,
        error=str(info) if state in ("FAILURE", "RETRY", LOST) else None,
        trigger=shown(trigger, is_authorised()),
    )
    # Changes by the second while the sync runs, and names who asked (to the admin).
    answer.headers["Cache-Control"] = NO_STORE
    return answer


def shown(record: Mapping[str, Any] | None, authorised: bool) -> dict[str, Any] | None:
    """Return what a request may see of a record that says who asked for a sync."""
    if record is None:
        return None
    return {k: v for k, v in record.items() if authorised or k not in WHO_ASKED}


@bp.get("/manifest")
@read_view
def manifest() -> ResponseReturnValue:
    """Show the live release and the latest check (who asked for them: with the token only).

    Its ETag names both; a client holding them gets a 304 for the price of reading the check.
    """
    store = reader()
    authorised = is_authorised()
    check = store.last_check()
    cache_control = PRIVATE if authorised else REVALIDATE
    cached = not_modified(state_tag(live_release_id(), check, authorised), cache_control)
    if cached is not None:
        return varied(cached)
    live = store.live_release()
    release = live.to_record() if live else None
    if release is not None:
        release["trigger"] = shown(release["trigger"], authorised)
    answer = jsonify(release=release, last_check=shown(check, authorised))
    etag = state_tag(live.id if live else None, check, authorised)
    return varied(tagged(answer, etag, cache_control))


def state_tag(release_id: str | None, check: Mapping[str, Any] | None, authorised: bool) -> str:
    """Return the ETag of an answer showing the live release and the latest check; the admin's
    (who asked for them) is another answer, with another tag."""
    parts = [value_tag(check)] + (["admin"] if authorised else [])
    return release_tag(release_id, *parts)


def varied(response: Response) -> Response:
    """Say that `response` varies with the admin's token and session."""
    response.vary.update(part.strip() for part in VARY_WITH_ADMIN.split(","))
    return response


@bp.get("/items")
@read_view
def items() -> ResponseReturnValue:
    """Search the live release's items by name, type, tier and class, one page at a time
    (?lang=: a cached language, default the first)."""
    query = parse_item_query(request.args)
    # The live release names the answer: a client holding it gets a 304 without a search.
    cached = not_modified(release_tag(live_release_id()), REVALIDATE)
    if cached is not None:
        return cached
    found = search_items(query)
    answer = jsonify(
        release_id=found.release_id,
        total=found.total,
        page=found.page,
        per_page=found.per_page,
        pages=found.pages,
        # As stored: JSON passed through as it is, never decoded and encoded again.
        items=[msgspec.Raw(value) for value in found.raw],
    )
    return tagged(answer, release_tag(found.release_id), REVALIDATE)


@bp.get("/items/<item_hash>")
@read_view
def item(item_hash: str) -> ResponseReturnValue:
    """Show one item definition of the live release as stored (?lang=: as `items`); its ETag is
    its digest, so an item a release left as it was keeps its ETag."""
    number = parse_hash(item_hash)
    lang = parse_lang(request.args)
    _, answer = send_definition(ITEM_TABLE, number, lang)
    if answer is None:
        abort(404, description=f"No item with hash {number} in the cached manifest ({lang}).")
    return answer


@bp.get("/history")
@read_view
def history() -> ResponseReturnValue:
    """Show the newest releases and check outcomes, newest first (who asked: as `manifest`)."""
    limit = parse_limit(request.args)
    store = reader()
    authorised = is_authorised()
    cache_control = PRIVATE if authorised else REVALIDATE
    # Read before what it names: a commit or a check landing meanwhile makes the answer newer
    # than its tag (one more 200 later), never older (a 304 to a stale copy).
    etag = state_tag(live_release_id(), store.last_check(), authorised)
    cached = not_modified(etag, cache_control)
    if cached is not None:
        return varied(cached)
    entries = [
        {**entry, "trigger": shown(entry.get("trigger"), authorised)}
        for entry in store.history(limit)
    ]
    checks = [shown(check, authorised) for check in store.recent_checks(limit)]
    return varied(tagged(jsonify(history=entries, checks=checks), etag, cache_control))


def parse_limit(args: Mapping[str, str]) -> int:
    """Read `limit` (1 to MAX_HISTORY_LIMIT, default HISTORY_LIMIT); raise BadRequest if bad."""
    raw = args.get("limit", "").strip()
    if raw == "":
        return HISTORY_LIMIT
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else 0
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise BadRequest(f"limit must be a whole number between 1 and {MAX_HISTORY_LIMIT}")
    return limit


# -- players --------------------------------------------------------------------------------


@bp.get("/players")
def players() -> ResponseReturnValue:
    """Find a player by Bungie name (?name=Guardian%230001): their memberships, one per platform."""
    name = parse_bungie_name(request.args.get("name"))
    found = current_players().search(name)
    answer = jsonify(
        name=str(name),
        players=[
            {
                **msgspec.to_builtins(membership),
                "platform": membership.platform,
                "url": url_for(
                    "api.player",
                    membership_type=membership.membership_type,
                    membership_id=membership.membership_id,
                    _external=True,
                ),
            }
            for membership in found
        ],
    )
    return personal(answer)


@bp.get("/players/<membership_type>/<membership_id>")
def player(membership_type: str, membership_id: str) -> ResponseReturnValue:
    """Show a player's characters and equipped items; unknown items ask for one sync."""
    page, triggered = load_page(membership_type, membership_id, f"api from {client_address()}")
    sync = None
    if triggered is not None:
        status_url = url_for("api.task_status", task_id=triggered.task_id, _external=True)
        sync = {"task_id": triggered.task_id, "joined": triggered.joined, "status_url": status_url}
    return personal(jsonify(**page.to_record(), sync=sync))


def personal(answer: Response) -> Response:
    """Tag an answer about a person by its bytes; only the asker's own cache may keep it."""
    return tagged(answer, body_tag(answer), PRIVATE)


# -- the API's description --------------------------------------------------------------------


@bp.get("/openapi.json")
def description() -> ResponseReturnValue:
    """Send the API's OpenAPI 3.1 description, as it is."""
    answer = current_app.response_class(openapi.DOCUMENT, mimetype="application/json")
    return tagged(answer, openapi.DIGEST, DESCRIPTION_CACHE, weak=False)
