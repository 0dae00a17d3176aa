"""What the pages show of a stored definition: an item's summary, and any definition's name.

The one reader of these display fields, for the search index, the item pages and a player's
equipment: it decodes only the fields shown, straight from the stored JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

# Names from Bungie's enums (Destiny.DestinyItemType, Destiny.TierType, Destiny.DestinyClass).
ITEM_TYPES = {
    0: "None", 1: "Currency", 2: "Armor", 3: "Weapon", 7: "Message", 8: "Engram",
    9: "Consumable", 10: "Exchange Material", 11: "Mission Reward", 12: "Quest Step",
    13: "Quest Step Complete", 14: "Emblem", 15: "Quest", 16: "Subclass", 17: "Clan Banner",
    18: "Aura", 19: "Mod", 20: "Dummy", 21: "Ship", 22: "Vehicle", 23: "Emote", 24: "Ghost",
    25: "Package", 26: "Bounty", 27: "Wrapper", 28: "Seasonal Artifact", 29: "Finisher",
    30: "Pattern",
}  # fmt: skip
TIERS = {
    0: "Unknown",
    1: "Currency",
    2: "Basic",
    3: "Common",
    4: "Rare",
    5: "Legendary",
    6: "Exotic",
}
CLASSES = {0: "Titan", 1: "Hunter", 2: "Warlock", 3: "Any class"}


class ItemSummary(msgspec.Struct, frozen=True):
    """What a page shows of an item; None (or empty) where its definition lacks the field."""

    hash: int | None = None
    name: str = ""
    icon: str | None = None
    item_type: int | None = None
    type_name: str | None = None
    tier_type: int | None = None
    tier_name: str | None = None
    class_type: int | None = None
    description: str = ""
    damage_type_hash: int | None = None
    redacted: bool = False
    # False when a field was not of the type Bungie documents: then only the hash was read.
    readable: bool = True


class _Display(msgspec.Struct, frozen=True):
    name: str | None = None
    description: str | None = None
    icon: str | None = None


class _Inventory(msgspec.Struct, frozen=True):
    tierType: int | None = None
    tierTypeName: str | None = None


class _ItemDefinition(msgspec.Struct, frozen=True):
    """The fields of an item definition a summary reads; the others are skipped unread."""

    hash: int | None = None
    displayProperties: _Display | None = None
    itemTypeDisplayName: str | None = None
    itemType: int | None = None
    classType: int | None = None
    inventory: _Inventory | None = None
    defaultDamageTypeHash: int | None = None
    redacted: bool | None = None


class _OwnHash(msgspec.Struct, frozen=True):
    hash: int | None = None


class _Named(msgspec.Struct, frozen=True):
    displayProperties: dict[str, Any] | None = None


_decode_item = msgspec.json.Decoder(_ItemDefinition).decode
_decode_own_hash = msgspec.json.Decoder(_OwnHash).decode
_decode_named = msgspec.json.Decoder(_Named).decode
_NO_DISPLAY = _Display()
_NO_INVENTORY = _Inventory()


def decode_item(definition: bytes | Mapping[str, Any]) -> ItemSummary:
    """Read what the pages show of an item, from its stored JSON or its decoded definition.

    Stored fields keep whatever type Bungie gave them: a field of an unexpected type costs
    the item its details (`readable` is False), never the page.
    """
    try:
        if isinstance(definition, bytes):
            item = _decode_item(definition)
        else:
            item = msgspec.convert(definition, _ItemDefinition)
    except msgspec.ValidationError:
        return ItemSummary(hash=_own_hash(definition), readable=False)
    display = item.displayProperties or _NO_DISPLAY
    inventory = item.inventory or _NO_INVENTORY
    return ItemSummary(
        hash=item.hash,
        name=display.name or "",
        icon=display.icon,
        item_type=item.itemType,
        type_name=item.itemTypeDisplayName,
        tier_type=inventory.tierType,
        tier_name=inventory.tierTypeName,
        class_type=item.classType,
        description=display.description or "",
        damage_type_hash=item.defaultDamageTypeHash,
        redacted=bool(item.redacted),
    )


def _own_hash(definition: bytes | Mapping[str, Any]) -> int | None:
    """Return a definition's own `hash` if it is a number, else None."""
    if isinstance(definition, bytes):
        try:
            return _decode_own_hash(definition).hash
        except msgspec.ValidationError:
            return None
    number = definition.get("hash")
    return number if isinstance(number, int) else None


def definition_name(data: bytes) -> str:
    """Return the display name of a stored definition of any table, or "" if it has none."""
    try:
        properties = _decode_named(data).displayProperties or {}
    except msgspec.MsgspecError:
        return ""
    return str(properties.get("name") or "")


def table_label(table: str) -> str:
    """Return a table's short name: DestinyInventoryBucketDefinition -> InventoryBucket."""
    return table.removeprefix("Destiny").removesuffix("Definition") or table


def label(names: Mapping[int, str], number: int | None) -> str | None:
    """Return the name Bungie's enum `names` gives `number`, or None for none or unknown."""
    return names.get(number) if number is not None else None
