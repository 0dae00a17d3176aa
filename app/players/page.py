"""A player's page: their characters, each equipped item resolved through the manifest cache in
one Redis round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from app.manifest.items import CLASSES
from app.manifest.items import ITEM_TYPES
from app.manifest.items import TIERS
from app.manifest.items import ItemSummary
from app.manifest.items import decode_item
from app.manifest.items import definition_name
from app.manifest.items import label
from app.manifest.store import ITEM_TABLE
from app.manifest.store import WHOLE_TABLE
from app.manifest.store import ManifestStore
from app.players.profiles import Equipped
from app.players.profiles import Membership
from app.players.profiles import Profile

CLASS_TABLE = "DestinyClassDefinition"
BUCKET_TABLE = "DestinyInventoryBucketDefinition"
DAMAGE_TABLE = "DestinyDamageTypeDefinition"
# What an item the cache does not know shows: nothing but its hash.
MISSING_ITEM = ItemSummary()


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
        record: dict[str, Any] = msgspec.to_builtins(self)
        return record


def resolve(store: ManifestStore, profile: Profile) -> PlayerPage:
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
    release_id, found = store.lookup_raw(wanted)
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


def item_slot(
    equipped: Equipped,
    stored: bytes | None,
    buckets: Mapping[int, bytes | None],
    damage_types: Mapping[int, bytes | None],
) -> ItemSlot:
    """Return what the page shows of an equipped item (its stored definition may be missing)."""
    if stored is None:
        item, name = MISSING_ITEM, f"unknown item {equipped.item_hash}"
    else:
        item = decode_item(stored)
        name = item.name or f"Unnamed item {equipped.item_hash}"
    damage = None if item.damage_type_hash is None else damage_types.get(item.damage_type_hash)
    return ItemSlot(
        item_hash=equipped.item_hash,
        instance_id=equipped.instance_id,
        bucket_hash=equipped.bucket_hash,
        bucket=_name(buckets.get(equipped.bucket_hash)),
        known=stored is not None,
        name=name,
        icon=item.icon or "",
        item_type=item.type_name or label(ITEM_TYPES, item.item_type) or "",
        # Items carry their tier's name and number; the projection keeps no tierTypeHash.
        tier=item.tier_name or label(TIERS, item.tier_type) or "",
        tier_type=item.tier_type,
        damage_type=_name(damage),
    )


def _name(stored: bytes | None) -> str:
    return definition_name(stored) if stored else ""
