"""Players: find them by Bungie name, fetch their profiles (cached briefly in Redis), and resolve
what their characters wear through the manifest cache in one Redis round trip.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

import msgspec

from app.manifest import errors
from app.manifest.client import BungieClient
from app.manifest.store import ITEM_TABLE
from app.manifest.store import WHOLE_TABLE
from app.manifest.store import ManifestStore
from app.queries import CLASSES
from app.queries import ITEM_TYPES
from app.queries import TIERS

log = logging.getLogger(__name__)
T = TypeVar("T")

SEARCH_PATH = "/Platform/Destiny2/SearchDestinyPlayerByBungieName/-1/"
# Profiles, Characters, CharacterEquipment: the components Bungie serves without OAuth.
PROFILE_PATH = (
    "/Platform/Destiny2/{membership_type}/Profile/{membership_id}/?components=100,200,205"
)
PROFILE_PARTS = ("profile", "characters", "characterEquipment")
CLASS_TABLE = "DestinyClassDefinition"
BUCKET_TABLE = "DestinyInventoryBucketDefinition"
DAMAGE_TABLE = "DestinyDamageTypeDefinition"

# Names from Bungie's Exceptions.PlatformErrorCodes.
ACCOUNT_NOT_FOUND = 1601
PRIVACY_RESTRICTION = 1665
# Components.ComponentPrivacySetting: Private; any higher value is taken as private too.
PRIVATE = 2
PRIVATE_MESSAGE = "This player keeps their Destiny profile private."
# BungieMembershipType values a profile can have, with the platform's name.
MEMBERSHIP_TYPES = {
    1: "Xbox",
    2: "PlayStation",
    3: "Steam",
    4: "Battle.net",
    5: "Stadia",
    6: "Epic Games",
    10: "Demon",
    254: "Bungie.net",
}
MAX_NAME_LENGTH = 64
MAX_MEMBERSHIP_ID = 2**63 - 1


class PlayerError(Exception):
    """A player cannot be shown; the message says why, in words for the visitor."""


class PlayerNotFound(PlayerError):
    """No player has this Bungie name, or no Destiny profile has this membership."""


class ProfilePrivate(PlayerError):
    """The player keeps their Destiny profile private."""


# -- what Bungie tells about a player ---------------------------------------------------------


class Membership(msgspec.Struct, frozen=True):
    """One Destiny membership (a platform account) of a player."""

    membership_type: int
    membership_id: str
    display_name: str
    bungie_name: str

    @property
    def platform(self) -> str:
        return membership_type_name(self.membership_type)


class Equipped(msgspec.Struct, frozen=True):
    """An item a character has equipped, as the profile names it."""

    item_hash: int
    bucket_hash: int
    instance_id: str | None = None


class Character(msgspec.Struct, frozen=True):
    """A character of a profile and what it has equipped."""

    character_id: str
    class_type: int
    class_hash: int
    light: int
    emblem_path: str
    emblem_background_path: str
    last_played: str
    equipment: tuple[Equipped, ...]


class Profile(msgspec.Struct, frozen=True):
    """The parts of a Destiny profile this app shows (the form kept in the profile cache)."""

    membership: Membership
    last_played: str
    characters: tuple[Character, ...]


_decode_memberships = msgspec.json.Decoder(list[Membership]).decode


# -- what the pages show ----------------------------------------------------------------------


class ItemSlot(msgspec.Struct):
    """An equipped item resolved through the cache; `known` is False for a hash it lacks."""

    item_hash: int
    instance_id: str | None
    bucket_hash: int
    bucket: str
    known: bool
    name: str
    icon: str
    item_type: str
    tier: str
    tier_type: int | None
    damage_type: str


class CharacterSheet(msgspec.Struct):
    """A character with its class name and resolved items."""

    character_id: str
    class_type: int
    class_name: str
    light: int
    emblem_path: str
    emblem_background_path: str
    last_played: str
    items: list[ItemSlot]


class PlayerPage(msgspec.Struct):
    """A player's characters and items, read from release `release_id` of the cache."""

    player: Membership
    last_played: str
    release_id: str | None
    characters: list[CharacterSheet]
    unknown_items: list[int]

    def to_record(self) -> dict[str, Any]:
        """Return plain data for JSON."""
        return msgspec.to_builtins(self)


class KeptProfile(msgspec.Struct, frozen=True):
    """What the profile cache keeps: a profile, and its page as resolved against a release."""

    profile: Profile
    page: PlayerPage


_decode_kept = msgspec.json.Decoder(KeptProfile).decode


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


@dataclass(frozen=True)
class BungieName:
    """A Bungie name: the global display name and its numeric code (`Guardian#0001`)."""

    name: str
    code: int

    def __str__(self) -> str:
        return f"{self.name}#{self.code:04d}"


class Players:
    """Players through Bungie and the cache: search, profiles kept briefly, what they wear."""

    def __init__(
        self,
        store: ManifestStore,
        bungie: BungieClient,
        *,
        cache_seconds: int = 60,
        sync_cooldown: int = 300,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.bungie = bungie
        self.cache_seconds = cache_seconds
        self.sync_cooldown = sync_cooldown

    def profile_key(self, membership_type: int, membership_id: str) -> str:
        return f"{self.store.prefix}:profile:{membership_type}:{membership_id}"

    def search_key(self, name: BungieName) -> str:
        return f"{self.store.prefix}:player:search:{str(name).casefold()}"

    def search(self, name: BungieName) -> list[Membership]:
        """Return the memberships of the player named `name`; raise PlayerNotFound if none."""
        key = self.search_key(name)
        cached = self._cached(key, _decode_memberships)
        if cached:
            return cached
        with _player_errors(f"No player is named {name}."):
            cards = self.bungie.post_platform(
                SEARCH_PATH, {"displayName": name.name, "displayNameCode": name.code}
            )
        memberships = [membership(card) for card in cards or () if isinstance(card, dict)]
        if not memberships:
            raise PlayerNotFound(f"No player is named {name}.")
        self._keep(key, msgspec.json.encode(memberships))
        return memberships

    def profile(self, membership_type: int, membership_id: str) -> Profile:
        """Return a profile from the cache, else from Bungie (then kept for cache_seconds)."""
        return self._kept_page(membership_type, membership_id)[0]

    def page(self, membership_type: int, membership_id: str) -> PlayerPage:
        """Return a player's characters with every equipped item resolved through the cache."""
        return self._kept_page(membership_type, membership_id)[1]

    def _kept_page(self, membership_type: int, membership_id: str) -> tuple[Profile, PlayerPage]:
        """Return a profile and its page, from the profile cache when they are there.

        The cache keeps a profile with its page as resolved against a release: while that
        release is live, a load is one round trip (`ManifestStore.read_beside_live`) and
        resolves nothing. Once another release is live, the kept profile is resolved again,
        and kept for what is left of its time.
        """
        key = self.profile_key(membership_type, membership_id)
        live, kept = self._read_kept(key)
        if kept is not None and kept.page.release_id == live:
            return kept.profile, kept.page
        if kept is not None:
            profile = kept.profile
        else:
            path = PROFILE_PATH.format(membership_type=membership_type, membership_id=membership_id)
            platform = membership_type_name(membership_type)
            with _player_errors(f"There is no Destiny profile {membership_id} on {platform}."):
                profile = parse_profile(self.bungie.get_platform(path))
        page = self.resolve(profile)
        self._keep(key, msgspec.json.encode(KeptProfile(profile, page)), again=kept is not None)
        return profile, page

    def _read_kept(self, key: str) -> tuple[str | None, KeptProfile | None]:
        """Return the live release id and the kept profile at `key` (if kept), in one trip."""
        if self.cache_seconds <= 0:
            return None, None
        live, value = self.store.read_beside_live(key)
        return live, _decoded(value, _decode_kept)

    def resolve(self, profile: Profile) -> PlayerPage:
        """Resolve a profile's items, classes, buckets and damage types through the cache."""
        equipped = [e for c in profile.characters for e in c.equipment]
        # Items name their damage type by hash, known only once the item is read: the damage
        # type table (a handful of entries) comes whole, in the same one round trip.
        wanted = {
            ITEM_TABLE: sorted({e.item_hash for e in equipped}),
            CLASS_TABLE: sorted({c.class_hash for c in profile.characters}),
            BUCKET_TABLE: sorted({e.bucket_hash for e in equipped}),
            DAMAGE_TABLE: WHOLE_TABLE,
        }
        release_id, found = self.store.lookup(wanted)
        items, buckets, damage = found[ITEM_TABLE], found[BUCKET_TABLE], found[DAMAGE_TABLE]
        sheets = [
            CharacterSheet(
                character_id=c.character_id,
                class_type=c.class_type,
                class_name=_name(found[CLASS_TABLE].get(c.class_hash))
                or CLASSES.get(c.class_type, "Guardian"),
                light=c.light,
                emblem_path=c.emblem_path,
                emblem_background_path=c.emblem_background_path,
                last_played=c.last_played,
                items=[item_slot(e, items.get(e.item_hash), buckets, damage) for e in c.equipment],
            )
            for c in profile.characters
        ]
        unknown = sorted({e.item_hash for e in equipped if items.get(e.item_hash) is None})
        return PlayerPage(profile.membership, profile.last_played, release_id, sheets, unknown)

    def claim_sync(self, release_id: str | None) -> bool:
        """Return whether to ask for a sync for unknown items: once per release and cool-down."""
        return bool(self.redis.set(self._sync_key(release_id), 1, nx=True, ex=self.sync_cooldown))

    def release_sync_claim(self, release_id: str | None) -> None:
        """Let the next page ask again (the sync asked for did not reach the queue)."""
        self.redis.delete(self._sync_key(release_id))

    def _sync_key(self, release_id: str | None) -> str:
        return f"{self.store.prefix}:player:sync:{release_id or 'none'}"

    def _cached(self, key: str, decode: Callable[[bytes], T]) -> T | None:
        if self.cache_seconds <= 0:
            return None
        return _decoded(self.redis.get(key), decode)

    def _keep(self, key: str, value: bytes, *, again: bool = False) -> None:
        """Keep `value` for cache_seconds; `again` replaces a kept one, keeping its expiry."""
        if self.cache_seconds <= 0:
            return
        if again:
            self.redis.set(key, value, xx=True, keepttl=True)
        else:
            self.redis.set(key, value, ex=self.cache_seconds)


# -- reading Bungie's answers -----------------------------------------------------------------


def membership(card: Mapping[str, Any]) -> Membership:
    """Return the Membership of a User.UserInfoCard."""
    name = str(card.get("bungieGlobalDisplayName") or "")
    code = card.get("bungieGlobalDisplayNameCode")
    return Membership(
        membership_type=int(card.get("membershipType") or 0),
        membership_id=_int64(card.get("membershipId")),
        display_name=str(card.get("displayName") or name),
        bungie_name=str(BungieName(name, int(code))) if name and code is not None else "",
    )


def parse_profile(response: Mapping[str, Any]) -> Profile:
    """Return the Profile in a DestinyProfileResponse; raise ProfilePrivate if it is hidden."""
    parts = {key: response.get(key) for key in PROFILE_PARTS}
    if any(_hidden(part) for part in parts.values()):
        raise ProfilePrivate(PRIVATE_MESSAGE)
    data = parts["profile"]["data"]
    characters = parts["characters"]["data"] or {}
    equipment = parts["characterEquipment"]["data"] or {}
    roster = [
        character(key, value, (equipment.get(key) or {}).get("items") or ())
        for key, value in characters.items()
    ]
    roster.sort(key=lambda c: c.last_played, reverse=True)
    return Profile(
        membership=membership(data.get("userInfo") or {}),
        last_played=str(data.get("dateLastPlayed") or ""),
        characters=tuple(roster),
    )


def character(character_id: str, data: Mapping[str, Any], items: Any) -> Character:
    """Return a Character from a DestinyCharacterComponent and its equipped item components."""
    return Character(
        character_id=_int64(character_id),
        class_type=int(data.get("classType", 3)),
        class_hash=int(data.get("classHash") or 0),
        light=int(data.get("light") or 0),
        emblem_path=str(data.get("emblemPath") or ""),
        emblem_background_path=str(data.get("emblemBackgroundPath") or ""),
        last_played=str(data.get("dateLastPlayed") or ""),
        equipment=tuple(
            Equipped(
                item_hash=int(item["itemHash"]) & 0xFFFFFFFF,
                bucket_hash=int(item.get("bucketHash") or 0) & 0xFFFFFFFF,
                instance_id=_int64(item["itemInstanceId"]) if item.get("itemInstanceId") else None,
            )
            for item in items
            if isinstance(item, dict) and item.get("itemHash")
        ),
    )


def item_slot(
    equipped: Equipped,
    item: Mapping[str, Any] | None,
    buckets: Mapping[int, Mapping[str, Any] | None],
    damage_types: Mapping[int, Mapping[str, Any] | None],
) -> ItemSlot:
    """Return what the page shows of an equipped item (its definition may be missing)."""
    bucket = _name(buckets.get(equipped.bucket_hash))
    if item is None:
        return ItemSlot(
            item_hash=equipped.item_hash,
            instance_id=equipped.instance_id,
            bucket_hash=equipped.bucket_hash,
            bucket=bucket,
            known=False,
            name=f"unknown item {equipped.item_hash}",
            icon="",
            item_type="",
            tier="",
            tier_type=None,
            damage_type="",
        )
    display = item.get("displayProperties") or {}
    inventory = item.get("inventory") or {}
    tier_type = inventory.get("tierType")
    damage = damage_types.get(int(item.get("defaultDamageTypeHash") or 0))
    return ItemSlot(
        item_hash=equipped.item_hash,
        instance_id=equipped.instance_id,
        bucket_hash=equipped.bucket_hash,
        bucket=bucket,
        known=True,
        name=display.get("name") or f"Unnamed item {equipped.item_hash}",
        icon=display.get("icon") or "",
        item_type=item.get("itemTypeDisplayName") or ITEM_TYPES.get(item.get("itemType"), ""),
        # Items carry their tier's name and number; the projection keeps no tierTypeHash.
        tier=inventory.get("tierTypeName") or TIERS.get(tier_type, ""),
        tier_type=tier_type,
        damage_type=_name(damage),
    )


def membership_type_name(membership_type: int) -> str:
    """Return a platform's name ("Steam")."""
    return MEMBERSHIP_TYPES.get(membership_type, f"platform {membership_type}")


def _hidden(part: Any) -> bool:
    """Return whether a profile component came back without its data, or marked private."""
    if not isinstance(part, dict) or part.get("data") is None:
        return True
    privacy = part.get("privacy")
    return isinstance(privacy, int) and privacy >= PRIVATE


def _name(definition: Mapping[str, Any] | None) -> str:
    return str(((definition or {}).get("displayProperties") or {}).get("name") or "")


def _int64(value: Any) -> str:
    """Return a 64-bit id as decimal text: Bungie sends them as strings, its schema as numbers."""
    text = str(value)
    if not text.isascii() or not text.isdigit():
        raise errors.BungieError(f"Bungie sent {text[:40]!r} where an id was expected")
    return str(int(text))


@contextlib.contextmanager
def _player_errors(missing: str) -> Iterator[None]:
    """Turn Bungie's "no such account" and privacy errors into PlayerNotFound, ProfilePrivate."""
    try:
        yield
    except errors.BungieError as exc:
        if exc.error_code == ACCOUNT_NOT_FOUND:
            raise PlayerNotFound(missing) from exc
        if exc.error_code == PRIVACY_RESTRICTION:
            raise ProfilePrivate(PRIVATE_MESSAGE) from exc
        raise
