"""The pages' views: read the cache, start or follow syncs, show players, sign the admin in and
out."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import msgspec
import redis
from flask import abort
from flask import current_app
from flask import flash
from flask import g
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import ServiceUnavailable

from app.auth import check_credentials
from app.auth import client_address
from app.auth import current_user
from app.auth import limit
from app.auth import login_required
from app.auth import rate_window
from app.auth import safe_next
from app.auth import sign_in
from app.auth import sign_out
from app.extensions import get_store
from app.main import bp
from app.manifest.errors import BungieError
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store import ShownItem
from app.player_pages import current_players
from app.player_pages import http_error
from app.player_pages import load_page
from app.player_pages import parse_bungie_name
from app.players import CharacterSheet
from app.players import ItemSlot
from app.players import PlayerError
from app.players import PlayerNotFound
from app.queries import CLASSES
from app.queries import FILTER_CHOICES
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
# Players' characters kept rendered per process: the last this many different ones.
CHARACTER_SECTIONS_KEPT = 64
# Filled in by progress.js with the id of the task it follows.
ID_PLACEHOLDER = "__id__"
MISSING = "\N{EN DASH}"
AGO_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"))


@bp.errorhandler(redis.RedisError)
def redis_unavailable(error: redis.RedisError) -> ResponseReturnValue:
    """Answer 503 with a page when Redis does not answer."""
    return handle_http_error(ServiceUnavailable("Redis is not answering. Retry in a moment."))


# The links every page shows: name -> (endpoint, values).
SITE_LINKS: dict[str, tuple[str, dict[str, str]]] = {
    "favicon": ("static", {"filename": "favicon.svg"}),
    "stylesheet": ("static", {"filename": "style.css"}),
    "dashboard": ("main.dashboard", {}),
    "items": ("main.items", {}),
    "players": ("main.players", {}),
    "history": ("main.history", {}),
    "check_now": ("main.update_manifest", {}),
    "logout": ("main.logout", {}),
    "progress_script": ("static", {"filename": "progress.js"}),
    # Patterns: ID_PLACEHOLDER is filled in (the `fill` filter, Links, progress.js).
    "item_page": ("main.item", {"item_hash": ID_PLACEHOLDER}),
    "release_page": ("main.release", {"release_id": ID_PLACEHOLDER}),
    "sync_page": ("main.update_manifest", {"task": ID_PLACEHOLDER}),
    "task_status": ("api.task_status", {"task_id": ID_PLACEHOLDER}),
}


@bp.app_context_processor
def page_globals() -> dict[str, Any]:
    """Give every template the signed-in user and the site's links."""
    return {"user": current_user(), "site": site_links()}


def site_links() -> SimpleNamespace:
    """Return the links every page shows: built once per process and mount point (the same
    on every page, they would otherwise be a good part of a page's url_for calls)."""
    made: dict[str, SimpleNamespace] = current_app.extensions.setdefault("site_links", {})
    links = made.get(request.script_root)
    if links is None:
        urls = {name: url_for(endpoint, **args) for name, (endpoint, args) in SITE_LINKS.items()}
        links = made[request.script_root] = SimpleNamespace(**urls)
    return links


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
def check_now() -> ResponseReturnValue:
    """Start a sync (or join the running one) and go to its progress page."""
    ticket = start_sync("dashboard")
    return redirect(url_for("main.update_manifest", task=ticket.task_id), code=303)


@bp.get("/updateManifest")
@login_required
def update_manifest() -> ResponseReturnValue:
    """Follow the sync named by ?task=, else start one (or join the running one) and follow it."""
    task_id = request.args.get("task", "")
    if task_id:
        joined, task = None, known_task(task_id)
    else:
        ticket = start_sync("web")
        task_id, joined, task = ticket.task_id, ticket.joined, ticket.record
    if task is None and joined is None:
        abort(404, description="No sync with this id was started here (or its record expired).")
    return render_template(
        "progress.html", task_id=task_id, task=task or {}, joined=joined, item_table=ITEM_TABLE
    )


@bp.get("/items")
def items() -> ResponseReturnValue:
    """Search the live release's items by name, type, tier and class."""
    query = parse_item_query(request.args)
    found = search_items(query, definitions=False)
    chosen = {"q": query.q, "type": query.item_type, "tier": query.tier, "class": query.class_type}
    filters: dict[str, Any] = {k: v for k, v in chosen.items() if v not in ("", None)}
    if query.per_page != PER_PAGE:
        filters["per_page"] = query.per_page
    return render_template("items.html", query=query, found=found, filters=filters)


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
    """Queue a sync for the signed-in user, or join the one queued or running; 503 if refused.

    Rate limited per client (429); the count is kept in the round trip that finds the sync.
    """
    request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    try:
        return request_sync(
            trigger,
            requested_by=f"{current_user()} from {client_address()}",
            request_id=request_id[:MAX_REQUEST_ID],
            rate=rate_window("trigger", current_app.config["TRIGGER_RATE_LIMIT"]),
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
@functools.cache
def choice_options(field: str, chosen: int | None) -> Markup:
    """Return the <option>s of an item filter with `chosen` selected.

    The same few fragments on every search page: made once per process, not once per page.
    """
    options = [Markup('<option value="">any</option>')]
    for number, name in FILTER_CHOICES[field].items():
        selected = Markup(" selected") if number == chosen else ""
        options.append(Markup('<option value="{}"{}>{}</option>').format(number, selected, name))
    return Markup("").join(options)


class _Display(msgspec.Struct, frozen=True):
    name: str | None = None
    description: str | None = None
    icon: str | None = None


class _Inventory(msgspec.Struct, frozen=True):
    tierTypeName: str | None = None
    tierType: int | None = None


class StoredItem(msgspec.Struct, frozen=True):
    """The fields of a stored item definition the pages show; the others are skipped unread."""

    hash: int | None = None
    displayProperties: _Display | None = None
    itemTypeDisplayName: str | None = None
    itemType: int | None = None
    classType: int | None = None
    inventory: _Inventory | None = None
    redacted: bool | None = None


def stored_item(definition: Mapping[str, Any]) -> StoredItem:
    """Read what the pages show of an item from its definition.

    A field of an unexpected type costs the item its details, never the page.
    """
    try:
        return msgspec.convert(definition, StoredItem)
    except msgspec.ValidationError:
        number = definition.get("hash")
        return StoredItem(hash=number if isinstance(number, int) else None)


class ItemFacts(msgspec.Struct, frozen=True):
    """What the pages show of an item (attributes: quick to read in a template's loop)."""

    url: str
    name: str
    description: str
    icon: str | None
    type: str | None
    tier: str | None
    tier_type: int | None
    class_name: str | None
    redacted: bool


@bp.app_template_global()
def item_facts(item: Mapping[str, Any]) -> ItemFacts:
    """Return what the pages show of an item; any of its fields may be missing."""
    stored = stored_item(item)
    display = stored.displayProperties or _NO_DISPLAY
    inventory = stored.inventory or _NO_INVENTORY
    shown = ShownItem(
        stored.hash,
        display.name or "",
        display.icon,
        stored.itemType,
        stored.itemTypeDisplayName,
        inventory.tierType,
        inventory.tierTypeName,
        stored.classType,
    )
    return _facts(shown, links(), display.description or "", bool(stored.redacted))


@bp.app_template_global()
def item_rows(shown: Iterable[ShownItem]) -> list[ItemFacts]:
    """Return what a list of search results shows, in one call for the list.

    Each call from a template costs several microseconds: a page of 50 items would spend more
    in them than in the rest of its rendering.
    """
    made = links()
    return [_facts(item, made) for item in shown]


def _facts(
    item: ShownItem, made: Links, description: str = "", redacted: bool = False
) -> ItemFacts:
    number = "" if item.hash is None else item.hash
    return ItemFacts(
        url=made.item(number),
        name=item.name or f"Unnamed item {number}".strip(),
        description=description,
        icon=made.image(item.icon),
        type=item.type_name or ITEM_TYPES.get(item.item_type),
        tier=item.tier_name or TIERS.get(item.tier_type),
        tier_type=item.tier_type,
        class_name=CLASSES.get(item.class_type),
        redacted=redacted,
    )


_NO_DISPLAY = _Display()
_NO_INVENTORY = _Inventory()


@dataclass(frozen=True, slots=True)
class EquipmentRow:
    """What a player's page shows of one equipped item."""

    slot: ItemSlot
    url: str | None
    icon: str | None
    details: str


@bp.app_template_global()
def equipment_rows(slots: Iterable[ItemSlot]) -> list[EquipmentRow]:
    """Return what a character's equipment shows: links, icons, and one line of details."""
    made = links()
    rows = []
    for slot in slots:
        # Type, damage type and slot, each once ("Hand Cannon · Solar · Kinetic Weapons").
        parts: dict[str, str] = {}
        for part in (slot.item_type, slot.damage_type, slot.bucket):
            if part:
                parts.setdefault(part.casefold(), part)
        rows.append(
            EquipmentRow(
                slot=slot,
                url=made.item(slot.item_hash) if slot.known else None,
                icon=made.image(slot.icon),
                details=" \N{MIDDLE DOT} ".join(parts.values()),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class Links:
    """Links a page builds many times over: worked out once per request, then filled in.

    A page listing 50 or 200 items would otherwise spend most of its rendering in url_for.
    """

    item_pattern: str
    image_base: str

    def item(self, item_hash: int | str) -> str:
        """Return an item page's URL."""
        return fill(self.item_pattern, item_hash)

    def image(self, path: str | None) -> str | None:
        """Return an image's URL on Bungie's host; None for anything but a plain path.

        Anything else is not shown (and the CSP would block it).
        """
        if not path or not path.startswith("/") or path.startswith("//"):
            return None
        return self.image_base + path


def links() -> Links:
    """Return this request's Links."""
    made = g.get("links")
    if made is None:
        made = g.links = Links(
            item_pattern=site_links().item_page,
            image_base=current_app.config["BUNGIE_BASE_URL"].rstrip("/"),
        )
    return made


@bp.app_template_filter("fill")
def fill(pattern: str, value: int | str) -> str:
    """Fill a link pattern of SITE_LINKS in with `value` (quoted as a path segment)."""
    filled = str(value) if isinstance(value, int) else quote(value, safe="")
    return pattern.replace(ID_PLACEHOLDER, filled)


@bp.app_template_global()
def item_url(item_hash: int | str) -> str:
    """Return an item page's URL."""
    return links().item(item_hash)


@bp.app_template_global()
def bungie_image(path: str | None) -> str | None:
    """Return an image's URL on Bungie's host; None for anything but a plain path."""
    return links().image(path)


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
        found = current_players().search(name)
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
    characters = rendered_characters(page.characters)
    return render_template("player.html", page=page, ticket=ticket, characters=characters)


def rendered_characters(characters: list[CharacterSheet]) -> Markup:
    """Return a player's characters as HTML, rendered once per process for the same ones.

    A kept profile is shown again and again while it is kept (reloads, everyone who looks the
    player up), and its equipment rows are most of what the page costs to render. The key is
    the characters themselves, encoded, and the links they are shown with: a changed profile or
    release renders anew, and the section shows nothing that depends on who asks. Where
    templates reload when edited (debug), every page renders it, so that an edit shows.
    """
    made = links()
    encoded = msgspec.json.encode(characters)
    if current_app.jinja_env.auto_reload:
        return _render_characters(encoded, made.item_pattern, made.image_base)
    render = current_app.extensions.get("characters_html")
    if render is None:
        render = functools.lru_cache(CHARACTER_SECTIONS_KEPT)(_render_characters)
        current_app.extensions["characters_html"] = render
    return render(encoded, made.item_pattern, made.image_base)


def _render_characters(encoded: bytes, item_pattern: str, image_base: str) -> Markup:
    # The links are part of the key only: the template gets them from links(), which gives
    # these for this request.
    characters = msgspec.json.decode(encoded, type=list[CharacterSheet])
    html = render_template("_characters.html", characters=characters)
    return Markup(html)  # noqa: S704 - Jinja's output, every value in it escaped


@bp.app_template_filter("played")
def format_played(moment: str) -> str:
    """Format one of Bungie's ISO 8601 times as "2026-11-21 19:30 UTC" (as is if not one)."""
    try:
        return format_datetime(datetime.fromisoformat(moment).timestamp())
    except ValueError:
        return moment
