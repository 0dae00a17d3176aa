"""The pages' views: read the cache, start or follow syncs, show players, sign the admin in and
out."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from typing import Any

import redis
from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import ServiceUnavailable

from app.auth import check_credentials
from app.auth import client_address
from app.auth import current_user
from app.auth import limit
from app.auth import login_required
from app.auth import rate_limited
from app.auth import safe_next
from app.auth import sign_in
from app.auth import sign_out
from app.extensions import get_store
from app.main import bp
from app.manifest.errors import BungieError
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.player_pages import http_error
from app.player_pages import load_page
from app.player_pages import open_players
from app.player_pages import parse_bungie_name
from app.players import PlayerError
from app.players import PlayerNotFound
from app.queries import CLASSES
from app.queries import ITEM_TYPES
from app.queries import PER_PAGE
from app.queries import TIERS
from app.queries import parse_hash
from app.queries import parse_item_query
from app.queries import search_items
from app.tickets import BrokerUnavailable
from app.tickets import Ticket
from app.tickets import known_task
from app.tickets import pending_key
from app.tickets import request_sync
from app.web import handle_http_error
from app.workers import worker_status

RECENT_RELEASES = 5
RECENT_CHECKS = 20
MAX_REQUEST_ID = 128
# Filled in by progress.js with the id of the task it follows.
ID_PLACEHOLDER = "__id__"
MISSING = "\N{EN DASH}"
AGO_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"))


@bp.errorhandler(redis.RedisError)
def redis_unavailable(error: redis.RedisError) -> ResponseReturnValue:
    """Answer 503 with a page when Redis does not answer."""
    return handle_http_error(ServiceUnavailable("Redis is not answering. Retry in a moment."))


@bp.app_context_processor
def page_globals() -> dict[str, Any]:
    """Give every template the signed-in user."""
    return {"user": current_user()}


# -- pages ----------------------------------------------------------------------------------


@bp.get("/")
def dashboard() -> ResponseReturnValue:
    """Show the live release, the last check and change, recent releases and the workers."""
    store = get_store()
    recent = store.history(RECENT_RELEASES)
    return render_template(
        "dashboard.html",
        live=store.live_release(),
        check=store.last_check(),
        recent=recent,
        last_change=recent[0] if recent else None,
        active_task=active_task(store),
        workers=worker_status(),
    )


@bp.post("/sync")
@login_required
@rate_limited("trigger", "TRIGGER_RATE_LIMIT")
def check_now() -> ResponseReturnValue:
    """Start a sync (or join the running one) and go to its progress page."""
    ticket = start_sync("dashboard")
    return redirect(url_for("main.update_manifest", task=ticket.task_id), code=303)


@bp.get("/updateManifest")
@login_required
def update_manifest() -> ResponseReturnValue:
    """Follow the sync named by ?task=, else start one (or join the running one) and follow it."""
    task_id = request.args.get("task", "")
    joined: bool | None = None
    if not task_id:
        limit("trigger", current_app.config["TRIGGER_RATE_LIMIT"])
        ticket = start_sync("web")
        task_id, joined = ticket.task_id, ticket.joined
    task = known_task(task_id)
    if task is None and joined is None:
        abort(404, description="No sync with this id was started here (or its record expired).")
    return render_template(
        "progress.html",
        task_id=task_id,
        task=task or {},
        joined=joined,
        status_url=url_for("api.task_status", task_id=ID_PLACEHOLDER),
        page_url=url_for("main.update_manifest", task=ID_PLACEHOLDER),
        item_url=url_for("main.item", item_hash=ID_PLACEHOLDER),
        release_url=url_for("main.release", release_id=ID_PLACEHOLDER),
        item_table=ITEM_TABLE,
    )


@bp.get("/items")
def items() -> ResponseReturnValue:
    """Search the live release's items by name, type, tier and class."""
    query = parse_item_query(request.args)
    found = search_items(query)
    chosen = {"q": query.q, "type": query.item_type, "tier": query.tier, "class": query.class_type}
    filters: dict[str, Any] = {k: v for k, v in chosen.items() if v not in ("", None)}
    if query.per_page != PER_PAGE:
        filters["per_page"] = query.per_page
    return render_template(
        "items.html",
        query=query,
        found=found,
        filters=filters,
        item_types=ITEM_TYPES,
        tiers=TIERS,
        classes=CLASSES,
    )


@bp.get("/items/<item_hash>")
def item(item_hash: str) -> ResponseReturnValue:
    """Show one item of the live release and its stored definition."""
    number = parse_hash(item_hash)
    definition = get_store().definition(ITEM_TABLE, number)
    if definition is None:
        abort(404, description=f"There is no item {number} in the live release.")
    stored = json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False)
    return render_template("item.html", item=definition, item_hash=number, stored=stored)


@bp.get("/history")
def history() -> ResponseReturnValue:
    """List every recorded release change and the latest checks."""
    store = get_store()
    return render_template(
        "history.html",
        entries=store.history(store.settings.history_length),
        checks=store.recent_checks(RECENT_CHECKS),
    )


@bp.get("/releases/<release_id>")
def release(release_id: str) -> ResponseReturnValue:
    """Show what changed with one release."""
    store = get_store()
    entry = store.history_entry(release_id)
    if entry is None:
        abort(404, description=f"There is no release {release_id[:40]} in the history.")
    return render_template("release.html", entry=entry, is_live=store.live_id() == release_id)


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign the admin in, then go on to where they were headed."""
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user() is not None:
            return redirect(target)
        return render_template("login.html", next_url=target)
    limit("login", current_app.config["LOGIN_RATE_LIMIT"])
    username = request.form.get("username", "")
    if not check_credentials(username, request.form.get("password", "")):
        page = render_template(
            "login.html", next_url=target, username=username, error="Wrong username or password."
        )
        return page, 401
    sign_in(username)
    flash(f"Signed in as {username}.")
    return redirect(target, code=303)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Sign out and go to the dashboard."""
    sign_out()
    flash("Signed out.")
    return redirect(url_for("main.dashboard"), code=303)


# -- helpers --------------------------------------------------------------------------------


def start_sync(trigger: str) -> Ticket:
    """Queue a sync for the signed-in user, or join the one queued or running; 503 if refused."""
    request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    try:
        return request_sync(
            trigger,
            requested_by=f"{current_user()} from {client_address()}",
            request_id=request_id[:MAX_REQUEST_ID],
        )
    except BrokerUnavailable as exc:
        abort(503, description=str(exc))


def active_task(store: ManifestStore) -> str | None:
    """Return the id of the sync running or queued now, if any."""
    running = store.lock("dashboard").holder()
    if running:
        return running
    queued = store.redis.get(pending_key())
    return queued.decode() if queued else None


# -- template helpers -----------------------------------------------------------------------


@bp.app_template_filter("datetime")
def format_datetime(epoch: float | None) -> str:
    """Format a Unix time as "2026-11-21 19:30 UTC"."""
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("clock")
def format_clock(epoch: float) -> str:
    """Format a Unix time as "19:30:05 UTC"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


@bp.app_template_filter("ago")
def format_ago(epoch: float) -> str:
    """Say how long ago a Unix time was: "just now", "1 minute ago", "3 days ago"."""
    seconds = time.time() - epoch
    for size, unit in AGO_UNITS:
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"


@bp.app_template_filter("seconds")
def format_seconds(seconds: float | None) -> str:
    """Format a duration: "0.4 s", "2 min 5 s"."""
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


@bp.app_template_filter("number")
def format_number(value: int | None) -> str:
    """Format a count with thousands separators."""
    return MISSING if value is None else f"{value:,}"


@bp.app_template_global()
def item_facts(item: Mapping[str, Any]) -> dict[str, Any]:
    """Return what the pages show of an item; any of its fields may be missing."""
    display = item.get("displayProperties") or {}
    inventory = item.get("inventory") or {}
    tier = inventory.get("tierType")
    icon = display.get("icon") or ""
    base = current_app.config["BUNGIE_BASE_URL"].rstrip("/")
    return {
        "name": display.get("name") or f"Unnamed item {item.get('hash', '')}".strip(),
        "description": display.get("description") or "",
        # Icons are paths on Bungie's host; anything else is not shown (and CSP would block it).
        "icon": base + icon if icon.startswith("/") and not icon.startswith("//") else None,
        "type": item.get("itemTypeDisplayName") or ITEM_TYPES.get(item.get("itemType")),
        "tier": inventory.get("tierTypeName") or TIERS.get(tier),
        "tier_type": tier,
        "class_name": CLASSES.get(item.get("classType")),
        "redacted": bool(item.get("redacted")),
    }


@bp.app_template_global()
def item_names(
    diffs: Iterable[Mapping[str, Any]], kind: str, most: int | None = None
) -> list[list[Any]]:
    """Return [hash, name] of the items a diff names as "added" or "changed"."""
    named = [pair for d in diffs if d["table"] == ITEM_TABLE for pair in d[f"{kind}_names"]]
    return named[:most]


# -- players --------------------------------------------------------------------------------


@bp.errorhandler(PlayerError)
@bp.errorhandler(BungieError)
def player_unavailable(error: Exception) -> ResponseReturnValue:
    """Say why a player cannot be shown: not found, private, or Bungie not answering."""
    return handle_http_error(http_error(error))


@bp.get("/players")
def players() -> ResponseReturnValue:
    """Find a player by Bungie name: go to their page, or list their memberships to choose."""
    raw = request.args.get("name", "")
    if not raw.strip():
        return render_template("players.html", name="")
    try:
        name = parse_bungie_name(raw)
        with open_players() as directory:
            found = directory.search(name)
    except BadRequest as exc:
        return render_template("players.html", name=raw, error=exc.description), 400
    except PlayerNotFound as exc:
        return render_template("players.html", name=raw, error=str(exc)), 404
    if len(found) == 1:
        only = found[0]
        return redirect(
            url_for(
                "main.player",
                membership_type=only.membership_type,
                membership_id=only.membership_id,
            )
        )
    return render_template("players.html", name=str(name), memberships=found)


@bp.get("/players/<membership_type>/<membership_id>")
def player(membership_type: str, membership_id: str) -> ResponseReturnValue:
    """Show a player's characters and what each has equipped, resolved through the cache."""
    page, ticket = load_page(
        membership_type, membership_id, f"players page from {client_address()}"
    )
    return render_template("player.html", page=page, ticket=ticket)


@bp.app_template_global()
def bungie_image(path: str | None) -> str | None:
    """Return the URL of an image path on Bungie's host; None for anything but a plain path."""
    if not path or not path.startswith("/") or path.startswith("//"):
        return None
    return current_app.config["BUNGIE_BASE_URL"].rstrip("/") + path


@bp.app_template_filter("played")
def format_played(moment: str) -> str:
    """Format one of Bungie's ISO 8601 times as "2026-11-21 19:30 UTC" (as is if not one)."""
    try:
        return format_datetime(datetime.fromisoformat(moment).timestamp())
    except ValueError:
        return moment
