"""The pages' views: read the cache, start or follow syncs, show players, sign the admin in and
out."""

from __future__ import annotations

from typing import Any

from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from app.auth import check_credentials
from app.auth import client_address
from app.auth import current_user
from app.auth import limit_sign_in
from app.auth import login_required
from app.auth import safe_next
from app.auth import sign_in
from app.auth import sign_out
from app.main import bp
from app.main.changes import definition_page
from app.main.presenters import keep_lang
from app.main.presenters import rendered_characters
from app.manifest.store import ITEM_TABLE
from app.notify.policy import destination_states
from app.player_pages import current_players
from app.player_pages import load_page
from app.player_pages import parse_bungie_name
from app.players import PlayerNotFound
from app.queries import PER_PAGE
from app.queries import parse_hash
from app.queries import parse_item_query
from app.queries import parse_lang
from app.queries import read_view
from app.queries import reader
from app.queries import search_items
from app.triggers import current_sync
from app.triggers import known_task
from app.triggers import start_sync
from app.workers import worker_status

RECENT_RELEASES = 5
RECENT_CHECKS = 20


@bp.get("/")
@read_view
def dashboard() -> ResponseReturnValue:
    """Show the live release, the last check and change, recent releases, the sync running,
    the workers and each destination's deliveries (who asked for a sync, and why a destination
    fails: to the signed-in admin only)."""
    store = reader()
    recent = store.history(RECENT_RELEASES)
    return render_template(
        "dashboard.html",
        live=store.live_release(),
        check=store.last_check(),
        recent=recent,
        last_change=recent[0] if recent else None,
        sync=current_sync(),
        workers=worker_status(),
        destinations=destination_states(),
    )


@bp.post("/sync")
@login_required
def check_now() -> ResponseReturnValue:
    """Start a sync (or join the running one) and go to its progress page."""
    triggered = start_sync("dashboard", requested_by=str(current_user()))
    return redirect(url_for("main.update_manifest", task=triggered.task_id), code=303)


@bp.get("/updateManifest")
@login_required
def update_manifest() -> ResponseReturnValue:
    """Follow the sync named by ?task=, else start one (or join the running one) and follow it."""
    task_id = request.args.get("task", "")
    if task_id:
        joined, task = None, known_task(task_id)
    else:
        triggered = start_sync("web", requested_by=str(current_user()))
        task_id, joined, task = triggered.task_id, triggered.joined, triggered.record
    if task is None and joined is None:
        abort(404, description="No sync with this id was started here (or its record expired).")
    return render_template(
        "progress.html", task_id=task_id, task=task or {}, joined=joined, item_table=ITEM_TABLE
    )


@bp.get("/items")
@read_view
def items() -> ResponseReturnValue:
    """Search the live release's items by name, type, tier and class (?lang=: a cached
    language, default the first)."""
    query = parse_item_query(request.args)
    found = search_items(query, definitions=False)
    chosen = {"q": query.q, "type": query.item_type, "tier": query.tier, "class": query.class_type}
    filters: dict[str, Any] = {k: v for k, v in chosen.items() if v not in ("", None)}
    if query.per_page != PER_PAGE:
        filters["per_page"] = query.per_page
    filters.update(keep_lang(query.lang))
    return render_template("items.html", query=query, found=found, filters=filters)


@bp.get("/items/<item_hash>")
@read_view
def item(item_hash: str) -> ResponseReturnValue:
    """Show one item of the live release, its stored definition and how it changed across the
    history (?lang=: as `items`); an item gone from the live release shows its history."""
    number = parse_hash(item_hash)
    lang = parse_lang(request.args)
    missing = f"There is no item {number} in the live release."
    definition, shown = definition_page(ITEM_TABLE, number, lang, missing)
    return render_template(
        "item.html", item=definition, item_hash=number, kept=keep_lang(lang), **shown
    )


@bp.get("/history")
@read_view
def history() -> ResponseReturnValue:
    """List every recorded release change and the latest checks."""
    store = reader()
    return render_template(
        "history.html",
        entries=store.history(store.settings.history_length),
        checks=store.recent_checks(RECENT_CHECKS),
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign the admin in, then go on to where they were headed."""
    target = safe_next(request.values.get("next"))
    # Only a POST signs in: Flask answers HEAD with this view too, as a GET.
    if request.method != "POST":
        if current_user() is not None:
            return redirect(target)
        return render_template("login.html", next_url=target)
    username = request.form.get("username", "")
    limit_sign_in(username)
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
    """Sign out (every session of the admin ends) and go to the dashboard."""
    sign_out()
    flash("Signed out.")
    return redirect(url_for("main.dashboard"), code=303)


# -- players --------------------------------------------------------------------------------


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
    page, triggered = load_page(
        membership_type, membership_id, f"players page from {client_address()}"
    )
    characters = rendered_characters(page.characters)
    return render_template("player.html", page=page, sync=triggered, characters=characters)
