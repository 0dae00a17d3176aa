"""What the player pages and the API share: reading parameters, HTTP errors, and asking for one
sync when a page meets items the cache does not know yet.
"""

from __future__ import annotations

import logging

from flask import current_app
from werkzeug.exceptions import BadGateway
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Forbidden
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import NotFound
from werkzeug.exceptions import ServiceUnavailable

from app.auth import RateLimited
from app.auth import rate_client
from app.extensions import get_shared_bungie
from app.extensions import get_store
from app.manifest import errors
from app.players import MAX_MEMBERSHIP_ID
from app.players import MAX_NAME_LENGTH
from app.players import BungieName
from app.players import CallBudget
from app.players import LookupsLimited
from app.players import PlayerNotFound
from app.players import PlayerPage
from app.players import Players
from app.players import ProfilePrivate
from app.triggers import BrokerUnavailable
from app.triggers import TriggeredSync
from app.triggers import request_sync

log = logging.getLogger(__name__)


def parse_bungie_name(value: str | None) -> BungieName:
    """Read a Bungie name `Name#1234`; raise BadRequest saying what a good one looks like."""
    name, hash_sign, code = (value or "").strip().rpartition("#")
    name = name.strip()
    if not hash_sign or not name or not (code.isascii() and code.isdigit() and len(code) <= 4):
        raise BadRequest("Give a Bungie name such as Guardian#0001: a name, '#' and its code.")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"A Bungie name is at most {MAX_NAME_LENGTH} characters before the '#'.")
    return BungieName(name, int(code))


def parse_membership_type(value: str) -> int:
    """Read a membership type: a platform number such as 3 (Steam); BadRequest otherwise."""
    if not (value.isascii() and value.isdigit() and len(value) <= 3) or not 1 <= int(value) <= 254:
        raise BadRequest(f"{value[:12]!r} is not a membership type (a platform number, 1 to 254).")
    return int(value)


def parse_membership_id(value: str) -> str:
    """Read a Destiny membership id: a decimal 64-bit number; BadRequest otherwise."""
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or not (
        0 < int(value) <= MAX_MEMBERSHIP_ID
    ):
        raise BadRequest(f"{value[:24]!r} is not a Destiny membership id (a decimal number).")
    return str(int(value))


def http_error(error: Exception) -> HTTPException:
    """Return the HTTP error a visitor gets for a PlayerError or a BungieError."""
    if isinstance(error, LookupsLimited):
        return RateLimited(error.retry_after, str(error))
    if isinstance(error, PlayerNotFound):
        return NotFound(str(error))
    if isinstance(error, ProfilePrivate):
        return Forbidden(
            f"{error} Bungie shares it only if they allow it in their privacy settings."
        )
    if not isinstance(error, errors.BungieError):
        raise TypeError(f"not a player or Bungie error: {error!r}")
    wait = round(error.retry_after or 0) or None
    if isinstance(error, errors.BungieMaintenance):
        log.info("Player page: Bungie is down for maintenance")
        return ServiceUnavailable(
            "Bungie's API is down for maintenance, so players cannot be looked up now. "
            "Please try again later.",
            retry_after=wait,
        )
    if isinstance(error, errors.BungieUnavailable):
        log.warning("Player page: Bungie unavailable: %s", error)
        return ServiceUnavailable(
            "Bungie's API is not answering or asks this site to slow down. "
            f"Please try again in {wait or 60} seconds.",
            retry_after=wait,
        )
    if isinstance(error, errors.BungieConfigError):
        log.error("Player page: Bungie refused the API key: %s", error)
        return ServiceUnavailable(
            "Bungie refused this site's API key; the administrator has to check BUNGIE_API_KEY."
        )
    log.warning("Player page: Bungie answered an error: %s", error)
    return BadGateway(f"Bungie answered an error ({error.error_status or error.error_code}).")


def current_players() -> Players:
    """Return the current app's Players (its store, this thread's Bungie client, its settings),
    spending Bungie calls from this request's client's budget."""
    config = current_app.config
    store = get_store()
    budget = CallBudget(
        store,
        rate_client(),
        per_client=config["PLAYER_RATE_LIMIT"],
        client_window=config["RATE_LIMIT_WINDOW"],
        for_all=config["PLAYER_BUDGET"],
        all_window=config["PLAYER_BUDGET_WINDOW"],
    )
    return Players(
        store,
        get_shared_bungie(),
        cache_seconds=config["PROFILE_CACHE_SECONDS"],
        not_found_seconds=config["PLAYER_NOT_FOUND_SECONDS"],
        sync_cooldown=config["MANIFEST_POLL_SECONDS"],
        budget=budget,
    )


def load_page(
    membership_type: str, membership_id: str, requested_by: str
) -> tuple[PlayerPage, TriggeredSync | None]:
    """Return a player's page and, when the cache lacks some items, the sync asked for them.

    Unknown items ask for one sync per page load at most (and per release and cool-down), which
    joins any sync queued or running; a broker that is down is logged, the page still shown.
    """
    kind, number = parse_membership_type(membership_type), parse_membership_id(membership_id)
    players = current_players()
    page = players.page(kind, number)
    if not page.unknown_items or not players.claim_sync(page.release_id):
        return page, None
    try:
        return page, request_sync("players", requested_by=requested_by)
    except BrokerUnavailable as exc:
        log.warning(
            "Could not ask for a sync for %d unknown items: %s", len(page.unknown_items), exc
        )
        players.release_sync_claim(page.release_id)
        return page, None
