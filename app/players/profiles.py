"""What Bungie tells about a player: their memberships and profile, read from Bungie's answers,
and Bungie's "no such account" and privacy errors as errors a visitor can read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from app.manifest import errors

SEARCH_PATH = "/Platform/Destiny2/SearchDestinyPlayerByBungieName/-1/"
# Profiles, Characters, CharacterEquipment: the components Bungie serves without OAuth.
PROFILE_PATH = (
    "/Platform/Destiny2/{membership_type}/Profile/{membership_id}/?components=100,200,205"
)
PROFILE_PARTS = ("profile", "characters", "characterEquipment")

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


@dataclass(frozen=True)
class BungieName:
    """A Bungie name: the global display name and its numeric code (`Guardian#0001`)."""

    name: str
    code: int

    def __str__(self) -> str:
        return f"{self.name}#{self.code:04d}"


class Membership(msgspec.Struct, frozen=True):
    """One Destiny membership (a platform account) of a player."""

    membership_type: int
    membership_id: str
    display_name: str
    bungie_name: str

    @property
    def platform(self) -> str:
        """Return the platform's name ("Steam")."""
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
    parts: dict[str, Any] = {key: response.get(key) for key in PROFILE_PARTS}
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


def membership_type_name(membership_type: int) -> str:
    """Return a platform's name ("Steam")."""
    return MEMBERSHIP_TYPES.get(membership_type, f"platform {membership_type}")


@contextlib.contextmanager
def player_errors(missing: str) -> Iterator[None]:
    """Turn Bungie's "no such account" and privacy errors into PlayerNotFound, ProfilePrivate."""
    try:
        yield
    except errors.BungieError as exc:
        if exc.error_code == ACCOUNT_NOT_FOUND:
            raise PlayerNotFound(missing) from exc
        if exc.error_code == PRIVACY_RESTRICTION:
            raise ProfilePrivate(PRIVATE_MESSAGE) from exc
        raise


def _hidden(part: Any) -> bool:
    """Return whether a profile component came back without its data, or marked private."""
    if not isinstance(part, dict) or part.get("data") is None:
        return True
    privacy = part.get("privacy")
    return isinstance(privacy, int) and privacy >= PRIVATE


def _int64(value: Any) -> str:
    """Return a 64-bit id as decimal text: Bungie sends them as strings, its schema as numbers."""
    text = str(value)
    if not text.isascii() or not text.isdigit():
        raise errors.BungieError(f"Bungie sent {text[:40]!r} where an id was expected")
    return str(int(text))
