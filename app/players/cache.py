"""Players through Bungie and Redis: searches and profiles kept briefly, a page per profile kept
while the release it was resolved against is live, "no such player" kept more briefly still,
and every call to Bungie made within the player pages' budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from app.manifest import errors
from app.manifest.client import BungieClient
from app.manifest.replies import raw
from app.manifest.store import ManifestStore
from app.players.budget import CallBudget
from app.players.page import PlayerPage
from app.players.page import resolve
from app.players.profiles import PRIVATE_MESSAGE
from app.players.profiles import PROFILE_PATH
from app.players.profiles import SEARCH_PATH
from app.players.profiles import BungieName
from app.players.profiles import Membership
from app.players.profiles import PlayerNotFound
from app.players.profiles import Profile
from app.players.profiles import ProfilePrivate
from app.players.profiles import membership
from app.players.profiles import membership_type_name
from app.players.profiles import parse_profile
from app.players.profiles import player_errors

T = TypeVar("T")

# What the not-shown key of a profile holds: Bungie's reason.
MISSING = b"missing"
PRIVATE = b"private"


class KeptProfile(msgspec.Struct, frozen=True):
    """What the profile cache keeps: a profile, and its page as resolved against a release."""

    profile: Profile
    page: PlayerPage


_decode_kept = msgspec.json.Decoder(KeptProfile).decode
_decode_memberships = msgspec.json.Decoder(list[Membership]).decode


def _decoded(value: bytes | None, decode: Callable[[bytes], T]) -> T | None:
    """Decode a kept value: None if nothing is kept, or if it was kept in another shape.

    (An older version of this app may have kept it otherwise: Bungie is then asked again.)
    """
    if value is None:
        return None
    try:
        return decode(value)
    except msgspec.DecodeError:
        return None


class Players:
    """Players through Bungie and the cache: search, profiles kept briefly, what they wear."""

    def __init__(
        self,
        store: ManifestStore,
        bungie: BungieClient,
        *,
        cache_seconds: int = 60,
        not_found_seconds: int = 30,
        sync_cooldown: int = 300,
        budget: CallBudget | None = None,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.redis = store.redis
        self.bungie = bungie
        self.cache_seconds = cache_seconds
        self.not_found_seconds = not_found_seconds
        self.sync_cooldown = sync_cooldown
        self.budget = budget

    def search(self, name: BungieName) -> list[Membership]:
        """Return the memberships of the player named `name`; raise PlayerNotFound if none."""
        folded = str(name).casefold()
        key, missing_key = self.keys.player_search(folded), self.keys.player_not_found(folded)
        missing = f"No player is named {name}."
        cached, refused = self._read_both(key, missing_key)
        if refused is not None:
            raise PlayerNotFound(missing)
        found = _decoded(cached, _decode_memberships) if self.cache_seconds > 0 else None
        if found:
            return found

        def ask() -> list[Membership]:
            cards = self.bungie.post_platform(
                SEARCH_PATH, {"displayName": name.name, "displayNameCode": name.code}
            )
            memberships = [membership(card) for card in cards or () if isinstance(card, dict)]
            if not memberships:
                raise PlayerNotFound(missing)
            return memberships

        memberships = self._ask_bungie(ask, missing, missing_key)
        self._keep(key, msgspec.json.encode(memberships))
        return memberships

    def page(self, membership_type: int, membership_id: str) -> PlayerPage:
        """Return a player's characters with every equipped item resolved through the cache.

        The cache keeps a profile with its page as resolved against a release: while that
        release is live, a load is one round trip (`ManifestStore.read_beside_live`) and
        resolves nothing. Once another release is live, the kept profile is resolved again,
        and kept for what is left of its time.
        """
        key = self.keys.profile(membership_type, membership_id)
        live, kept = self._read_kept(key)
        if kept is not None and kept.page.release_id == live:
            return kept.page
        if kept is not None:
            profile = kept.profile
        else:
            profile = self._fetch_profile(membership_type, membership_id)
        page = resolve(self.store, profile)
        self._keep(key, msgspec.json.encode(KeptProfile(profile, page)), again=kept is not None)
        return page

    def _fetch_profile(self, membership_type: int, membership_id: str) -> Profile:
        """Ask Bungie for a profile, unless it said lately that it shows none."""
        platform = membership_type_name(membership_type)
        missing = f"There is no Destiny profile {membership_id} on {platform}."
        not_shown_key = self.keys.profile_not_shown(membership_type, membership_id)
        if self.not_found_seconds > 0:
            reason = raw(self.redis.get(not_shown_key))
            if reason == PRIVATE:
                raise ProfilePrivate(PRIVATE_MESSAGE)
            if reason is not None:
                raise PlayerNotFound(missing)
        path = PROFILE_PATH.format(membership_type=membership_type, membership_id=membership_id)
        return self._ask_bungie(
            lambda: parse_profile(self.bungie.get_platform(path)), missing, not_shown_key
        )

    def _ask_bungie(self, call: Callable[[], T], missing: str, not_found_key: str) -> T:
        """Make one call to Bungie within the budget; keep its "no such player" briefly.

        Bungie throttling the call pauses the player pages' calls (never the syncs'), and the
        visitor is told when to come back (LookupsLimited).
        """
        if self.budget is not None:
            self.budget.spend()
        try:
            with player_errors(missing):
                return call()
        except ProfilePrivate:
            self._keep_refusal(not_found_key, PRIVATE)
            raise
        except PlayerNotFound:
            self._keep_refusal(not_found_key, MISSING)
            raise
        except errors.BungieThrottled as exc:
            if self.budget is None:
                raise
            raise self.budget.back_off(exc.retry_after or 1.0) from exc

    def claim_sync(self, release_id: str | None) -> bool:
        """Return whether to ask for a sync for unknown items: once per release and cool-down."""
        key = self.keys.player_sync_claim(release_id or "none")
        return bool(self.redis.set(key, 1, nx=True, ex=self.sync_cooldown))

    def release_sync_claim(self, release_id: str | None) -> None:
        """Let the next page ask again (the sync asked for did not reach the queue)."""
        self.redis.delete(self.keys.player_sync_claim(release_id or "none"))

    def _read_kept(self, key: str) -> tuple[str | None, KeptProfile | None]:
        """Return the live release id and the kept profile at `key` (if kept), in one trip."""
        if self.cache_seconds <= 0:
            return None, None
        live, value = self.store.read_beside_live(key)
        return live, _decoded(value, _decode_kept)

    def _read_both(self, key: str, missing_key: str) -> tuple[bytes | None, bytes | None]:
        """Return what is kept at `key` and at `missing_key`, in one round trip."""
        if self.cache_seconds <= 0 and self.not_found_seconds <= 0:
            return None, None
        kept, missing = self.redis.mget([key, missing_key])
        return raw(kept), (raw(missing) if self.not_found_seconds > 0 else None)

    def _keep_refusal(self, key: str, reason: bytes) -> None:
        """Keep Bungie's refusal to show a player for not_found_seconds."""
        if self.not_found_seconds > 0:
            self.redis.set(key, reason, ex=self.not_found_seconds)

    def _keep(self, key: str, value: bytes, *, again: bool = False) -> None:
        """Keep `value` for cache_seconds; `again` replaces a kept one, keeping its expiry."""
        if self.cache_seconds <= 0:
            return
        if again:
            self.redis.set(key, value, xx=True, keepttl=True)
        else:
            self.redis.set(key, value, ex=self.cache_seconds)
