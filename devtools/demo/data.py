"""Deterministic Destiny 2 manifest content for the demo origin: releases, tables and their files.

Everything derives from a seed: the same seed, item count and publish history give the same
paths and the same bytes, in any process.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import operator
import random
import shutil
import sqlite3
import threading
import uuid
import zipfile
from array import array
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import Any
from typing import BinaryIO

import msgspec

ITEM_TABLE = "DestinyInventoryItemDefinition"
TABLES = (
    ITEM_TABLE,
    "DestinyClassDefinition",
    "DestinyDamageTypeDefinition",
    "DestinyInventoryBucketDefinition",
    "DestinyItemTierTypeDefinition",
    "DestinyStatDefinition",
    "DestinySandboxPerkDefinition",
)
CONTENT_PREFIX = "/common/destiny2_content/"

# Share of the item table a default publish adds, removes and changes.
ADDED_SHARE = 0.01
REMOVED_SHARE = 0.005
CHANGED_SHARE = 0.02
# Share of the first release's items that are redacted: Bungie ships upcoming items hidden,
# `redacted: true` with a blank name and description, and reveals them later.
REDACTED_SHARE = 0.005
# The options of a publish that pick items, each item getting at most one of them.
ITEM_CHANGES = ("added", "removed", "changed", "renamed", "restatted", "revealed", "redacted")
# The `shrunk` fault serves one definition in this many.
SHRINK_EVERY = 10
# The keys the `bad_key` fault adds to a table, each with a copy of a real definition: none is
# a hash (an unsigned 32-bit number in decimal), the last is too long for Python's int().
BAD_KEYS = ("not-a-hash", "-1", "4294967296", "0042", "12.5", "9" * 5000)
# The table of the `sqlite_view_bomb` fault: a view whose rows never end (a recursive CTE with
# no bound), none of which is ever returned: reading it, or counting it, never finishes.
ENDLESS_VIEW = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    "SELECT i AS id, '{}' AS json FROM n WHERE i < 0"
)
VARIANTS = ("shrunk", "bad_json", "bad_key")

_FLUSH_BYTES = 4 * 1024 * 1024
_COPY_BYTES = 1024 * 1024

# -- word lists: names that read like Destiny's --------------------------------------------------

_COMPOUND_HEADS = (
    "Fate", "Ash", "Dawn", "Dusk", "Grave", "Storm", "Night", "Star", "Sun", "Moon", "Frost",
    "Ember", "Thorn", "Iron", "Gloom", "Hope", "Oath", "Wraith", "Dread", "Doom", "Bone",
    "Blood", "Soul", "Sky", "Wolf", "Hawk", "Crow", "Raven", "Serpent", "Glass", "Steel",
    "Silver", "Hollow", "Wyrm", "Tide", "Cinder", "Rime", "Gale", "Lumen", "Nether",
)  # fmt: skip
_COMPOUND_TAILS = (
    "bringer", "breaker", "song", "fall", "wake", "fang", "caller", "strike", "ward", "bane",
    "keeper", "seeker", "spire", "blade", "fire", "thorn", "hammer", "cleaver", "reaper",
    "weaver", "born", "light", "shadow", "chaser", "whisper", "spite", "mourn", "crest",
)  # fmt: skip
_ADJECTIVES = (
    "Ashen", "Silent", "Eternal", "Broken", "Gilded", "Savage", "Wicked", "Hallowed", "Bitter",
    "Distant", "Astral", "Crimson", "Hollow", "Vigilant", "Forsaken", "Radiant", "Sunken",
    "Fallen", "Restless", "Shattered", "Ancient", "Midnight", "Solemn", "Dire", "Luminous",
    "Feral", "Errant", "Quiet", "Cold", "Burning", "Last", "First", "Lost", "Wandering",
    "Nameless", "Fabled", "Unyielding", "Relentless", "Patient", "Veiled", "Exalted", "Tarnished",
)  # fmt: skip
_NOUNS = (
    "Wake", "Oath", "Requiem", "Vigil", "Tempest", "Horizon", "Covenant", "Reverie", "Exile",
    "Harbinger", "Sentinel", "Lament", "Verdict", "Crown", "Herald", "Chorus", "Mercy", "Vow",
    "Ember", "Dirge", "Bastion", "Warden", "Omen", "Echo", "Nova", "Zenith", "Legacy", "Ruin",
    "Refrain", "Pilgrim", "Tide", "Veil", "Gambit", "Thunder", "Hymn", "Cipher", "Meridian",
    "Paragon", "Wayfarer", "Frontier", "Reckoning", "Solace", "Sovereign", "Remnant", "Aegis",
)  # fmt: skip
_PLACES = (
    "the Reef", "the Dreaming City", "Europa", "Neptune", "the Moon", "the Cosmodrome",
    "Nessus", "the European Dead Zone", "Savathûn's Throne World", "the Pale Heart", "Mars",
    "Titan", "Io", "Mercury", "the Last City", "the Tangled Shore", "the Derelict Leviathan",
)  # fmt: skip
_SPEAKERS = (
    "Ikora Rey", "Commander Zavala", "Cayde-6", "Saint-14", "Osiris", "Eris Morn", "Mara Sov",
    "Lord Shaxx", "Banshee-44", "the Drifter", "Ada-1", "Crow", "Savathûn", "Xûr",
    "Petra Venj", "Lakshmi-2", "Variks", "Mithrax",
)  # fmt: skip
_FLAVORS = (
    "Every {n} ends in {a} {n2}.",
    "Carry the {n} into the {a} dark.",
    "It was forged for a {n} that never came.",
    "What the {n} takes, the {n2} returns.",
    "No {n} is ever truly {a}.",
    "Let them hear the {n} before they see it.",
    "Built to outlast the {n}, and the {n2} after it.",
    "\"Stand where the {n} stood. Hold.\" —{s}",
    "\"I have seen the {n}. It is {a}.\" —{s}",
    "\"Some debts are paid in {n}.\" —{s}",
)  # fmt: skip
_DESCRIPTIONS = (
    "Recovered from {p}, where the {n} still lingers.",
    "A relic of the {a} {n}.",
    "Issued to Guardians who answered the call of the {n}.",
    "Its makers in {p} called it a {n}. Its targets called it worse.",
    "Tuned for {a} hands and {a2} nerves.",
    "Some say it hums when the {n} draws near.",
)  # fmt: skip
_SOURCES = (
    "Source: Complete activities and earn rank-up packages from {s}.",
    "Source: Found in {p}.",
    "Source: Raid \"{a} {n}\".",
    "Source: Dungeon \"{n} of {p}\".",
    "Source: Seasonal activities.",
    "Source: Exotic engrams.",
    "",
)  # fmt: skip
_TOOLTIPS = (
    "This item can be crafted.",
    "Deepsight Resonance: Extract its pattern at the Enclave.",
    "Enhanced: This weapon has additional perk options.",
    "This item is featured in current activities.",
)  # fmt: skip

# -- the small tables -----------------------------------------------------------------------------

CLASSES = (("Titan", 0), ("Hunter", 1), ("Warlock", 2))
# (name, Destiny.DamageType, description)
DAMAGE_TYPES = (
    ("Kinetic", 1, "Weapons of this damage type are effective against unshielded enemies."),
    ("Arc", 2, "Electric damage that blinds, jolts and chains between targets."),
    ("Solar", 3, "Burning damage that scorches and ignites targets."),
    ("Void", 4, "Damage from the darkness between stars that weakens and suppresses."),
    ("Stasis", 6, "Darkness-born damage that slows, freezes and shatters targets."),
    ("Strand", 7, "Darkness-born damage that suspends, unravels and severs targets."),
)
# (name, category, location, scope, itemCount, description)
BUCKETS = (
    ("Kinetic Weapons", 3, 1, 0, 10, "Weapons that deal kinetic damage."),
    ("Energy Weapons", 3, 1, 0, 10, "Weapons that deal elemental damage."),
    ("Power Weapons", 3, 1, 0, 10, "Weapons that deal heavy damage."),
    ("Helmet", 3, 1, 0, 10, "Head armor."),
    ("Gauntlets", 3, 1, 0, 10, "Arm armor."),
    ("Chest Armor", 3, 1, 0, 10, "Chest armor."),
    ("Leg Armor", 3, 1, 0, 10, "Leg armor."),
    ("Class Armor", 3, 1, 0, 10, "Class-specific armor."),
    ("Ghost", 3, 1, 0, 10, "Ghost shells."),
    ("Emblems", 3, 1, 0, 10, "Emblems."),
    ("Ships", 3, 1, 0, 10, "Jumpships."),
    ("Vehicle", 3, 1, 0, 10, "Sparrows."),
    ("Subclass", 3, 1, 0, 4, "Subclasses."),
    ("Finishers", 3, 1, 0, 10, "Finishing moves."),
    ("Emotes", 3, 1, 0, 10, "Emotes."),
    ("Shaders", 1, 1, 1, 999, "Shaders."),
    ("Consumables", 1, 1, 1, 50, "Consumable items."),
    ("Modifications", 1, 1, 1, 50, "Weapon and armor mods."),
    ("Materials", 2, 1, 1, 50, "Upgrade materials."),
    ("Quests", 1, 1, 0, 63, "Quests and bounties."),
    ("Engrams", 1, 1, 0, 10, "Engrams to be decrypted."),
    ("Lost Items", 1, 4, 0, 21, "Items waiting at the Postmaster."),
    ("Clan Banners", 3, 1, 1, 1, "Clan banners."),
    ("Seasonal Artifact", 3, 1, 1, 1, "The seasonal artifact."),
)  # fmt: skip
# Destiny.TierType -> name; Legendary is "Superior" (5) in the enum.
TIER_NAMES = {1: "Currency", 2: "Basic", 3: "Common", 4: "Rare", 5: "Legendary", 6: "Exotic"}
WEAPON_STATS = (
    "Attack", "Power", "Rounds Per Minute", "Impact", "Range", "Stability", "Handling",
    "Reload Speed", "Aim Assistance", "Airborne Effectiveness", "Zoom", "Recoil Direction",
    "Magazine", "Inventory Size", "Ammo Generation",
)  # fmt: skip
ARMOR_STATS = ("Defense", "Power", "Health", "Melee", "Grenade", "Super", "Class", "Weapons")
_OTHER_STATS = (
    "Swing Speed", "Charge Time", "Draw Time", "Blast Radius", "Velocity", "Accuracy",
    "Guard Resistance", "Charge Rate", "Guard Endurance", "Shield Duration", "Speed", "Boost",
    "Durability", "Heat Generated", "Any Energy Type Cost", "Persistence", "Mobility",
    "Resilience", "Recovery", "Discipline", "Intellect", "Strength",
)  # fmt: skip
_PERK_WORDS = (
    "Outlaw", "Rampage", "Kill Clip", "Zen Moment", "Rapid Hit", "Feeding Frenzy", "Snapshot",
    "Demolitionist", "Headstone", "Repulsor Brace", "Voltshot", "Incandescent", "Destabilizing",
    "Hatchling", "Frenzy", "Golden Tricorn", "Adrenaline Junkie", "Kinetic Tremors", "Surrounded",
    "Explosive Payload", "Firefly", "Dragonfly", "Moving Target", "Killing Wind", "Tap the Trigger",
    "Threat Detector", "Eye of the Storm", "Heating Up", "Dynamic Sway", "Pugilist", "Swashbuckler",
    "Elemental Capacitor", "Reconstruction", "Envious Assassin", "Bait and Switch", "Vorpal Weapon",
    "Box Breathing", "Precision Instrument", "Subsistence", "Unrelenting", "Overflow",
    "Auto-Loading Holster", "Opening Shot", "Multikill Clip", "Desperado", "Cascade Point",
    "Chill Clip", "Slice",
)  # fmt: skip

# (Destiny.DestinyItemSubType, display name, ammo type: 1 primary, 2 special, 3 heavy)
WEAPON_TYPES = (
    (6, "Auto Rifle", 1), (9, "Hand Cannon", 1), (13, "Pulse Rifle", 1), (14, "Scout Rifle", 1),
    (17, "Sidearm", 1), (24, "Submachine Gun", 1), (31, "Combat Bow", 1), (7, "Shotgun", 2),
    (12, "Sniper Rifle", 2), (11, "Fusion Rifle", 2), (23, "Grenade Launcher", 2),
    (25, "Trace Rifle", 2), (33, "Glaive", 2), (10, "Rocket Launcher", 3), (8, "Machine Gun", 3),
    (18, "Sword", 3), (22, "Linear Fusion Rifle", 3),
)  # fmt: skip
# (Destiny.DestinyItemSubType, bucket, display name, piece word per class Titan/Hunter/Warlock)
ARMOR_PIECES = (
    (26, "Helmet", "Helmet", ("Helm", "Mask", "Hood")),
    (27, "Gauntlets", "Gauntlets", ("Gauntlets", "Grips", "Gloves")),
    (28, "Chest Armor", "Chest Armor", ("Plate", "Vest", "Robes")),
    (29, "Leg Armor", "Leg Armor", ("Greaves", "Strides", "Boots")),
    (30, "Class Armor", "", ("Mark", "Cloak", "Bond")),
)
_CLASS_ITEM_NAMES = ("Titan Mark", "Hunter Cloak", "Warlock Bond")
_FOUNDRIES = ("hakke", "omolon", "suros", "veist", "daito", "tex_mechanica", "cassoid", "nadir")

# (kind, weight): the real table is mostly plugs and cosmetics, with weapons and armor the
# large definitions.
_KINDS = (
    ("weapon", 6), ("armor", 8), ("mod", 15), ("shader", 8), ("ornament", 10), ("emblem", 6),
    ("ghost", 2), ("ship", 1.5), ("vehicle", 1.5), ("emote", 2), ("consumable", 6),
    ("material", 4), ("quest", 4), ("bounty", 3), ("engram", 1), ("subclass", 0.3),
    ("finisher", 0.7), ("dummy", 21),
)  # fmt: skip
_KIND_NAMES = tuple(name for name, _ in _KINDS)
_KIND_CUMULATIVE = tuple(sum(weight for _, weight in _KINDS[: i + 1]) for i in range(len(_KINDS)))
# (Destiny.TierType, weight)
_GEAR_TIERS = ((5, 60), (6, 12), (4, 15), (3, 8), (2, 5))
_COSMETIC_TIERS = ((5, 45), (6, 5), (4, 30), (3, 20))
_MOD_TIERS = ((4, 40), (5, 30), (3, 30))
_PLAIN_TIERS = ((2, 60), (3, 30), (4, 10))
# kind -> (Destiny.DestinyItemType, sub type, display name, bucket, tiers, stack size)
_SIMPLE_KINDS: dict[str, tuple[int, int, str, str, tuple[tuple[int, int], ...], int]] = {
    "shader": (19, 20, "Shader", "Shaders", _COSMETIC_TIERS, 9999),
    "ornament": (19, 21, "Weapon Ornament", "Modifications", _COSMETIC_TIERS, 1),
    "emblem": (14, 0, "Emblem", "Emblems", _COSMETIC_TIERS, 1),
    "ghost": (24, 0, "Ghost Shell", "Ghost", _GEAR_TIERS, 1),
    "ship": (21, 0, "Ship", "Ships", _COSMETIC_TIERS, 1),
    "vehicle": (22, 0, "Vehicle", "Vehicle", _COSMETIC_TIERS, 1),
    "emote": (23, 0, "Emote", "Emotes", _COSMETIC_TIERS, 1),
    "consumable": (9, 0, "Consumable", "Consumables", _PLAIN_TIERS, 99),
    "material": (10, 0, "Material", "Materials", _PLAIN_TIERS, 9999),
    "quest": (12, 0, "Quest Step", "Quests", _PLAIN_TIERS, 1),
    "bounty": (26, 0, "Weekly Bounty", "Quests", _PLAIN_TIERS, 1),
    "engram": (8, 0, "Engram", "Engrams", _COSMETIC_TIERS, 1),
    "finisher": (29, 0, "Finisher", "Finishers", _COSMETIC_TIERS, 1),
    "dummy": (20, 0, "", "Consumables", _PLAIN_TIERS, 1),
}
_GEAR = frozenset(("weapon", "armor"))
_PLUGS = frozenset(("mod", "shader", "ornament"))
# Kinds with geometry: a screenshot, dyes and sockets.
_RENDERED = frozenset(("weapon", "armor", "ghost", "ship", "vehicle"))
_EQUIPPABLE = frozenset(("ghost", "ship", "vehicle", "emblem", "emote", "finisher", "subclass"))
_MOD_TYPES = (
    "General Armor Mod", "Helmet Armor Mod", "Arms Armor Mod", "Chest Armor Mod",
    "Leg Armor Mod", "Class Item Armor Mod", "Weapon Mod", "Ghost Shell Mod", "Artifact Perk",
)  # fmt: skip
_SUBCLASS_NAMES = ("Arcstrider", "Gunslinger", "Nightstalker", "Revenant", "Threadrunner")

# -- sample players -------------------------------------------------------------------------------

# (Bungie name, code, membership types, classes of each profile's characters, private, wears
# the items of the next release). Other names are not found.
SAMPLE_PLAYERS = (
    ("Guardian", 1, (3,), (0, 1, 2), False, False),
    ("Private", 2, (2,), (1,), True, False),
    ("Guardian", 3, (1,), (2, 0, 1), False, True),
    ("Wanderer", 4, (3, 2), (1,), False, False),
)
# What a character wears, slot by slot; the emblem is the one of the character's nameplate.
EQUIPMENT_BUCKETS = (
    "Kinetic Weapons", "Energy Weapons", "Power Weapons", "Helmet", "Gauntlets", "Chest Armor",
    "Leg Armor", "Class Armor", "Ghost", "Emblems",
)  # fmt: skip
# Ids start like Bungie's: membership ids 4611686018..., character 2305843009..., item 6917529...
MEMBERSHIP_ID_BASE = 4611686018400000000
CHARACTER_ID_BASE = 2305843009200000000
INSTANCE_ID_BASE = 6917529000000000000
_ID_SPREAD = 100_000_000
# Destiny.DestinyComponentType values the origin serves, with their names.
PROFILE_COMPONENTS = {"profiles": 100, "characters": 200, "characterequipment": 205}
_PLATFORM_ICONS = {
    1: "/img/theme/bungienet/icons/xboxLiveLogo.png",
    2: "/img/theme/bungienet/icons/psnLogo.png",
    3: "/img/theme/bungienet/icons/steamLogo.png",
}


# -- hashing helpers ------------------------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()


def _hash32(*parts: object) -> int:
    """Return a stable uint32 named by `parts` (for definitions the origin does not serve)."""
    return int.from_bytes(_digest(*parts)[:4], "big") or 1


def _guid(*parts: object) -> str:
    return str(uuid.UUID(bytes=_digest(*parts)[:16], version=4))


def _hex32(*parts: object) -> str:
    return _digest(*parts)[:16].hex()


def signed32(value: int) -> int:
    """Return a uint32 hash as the signed 32-bit integer Bungie's SQLite ids use."""
    return value - 2**32 if value >= 2**31 else value


def _unique_hash(rng: random.Random, taken: set[int]) -> int:
    while True:
        value = rng.getrandbits(32)
        if value and value not in taken:
            taken.add(value)
            return value


def _icon(rng: random.Random, ext: str = "jpg") -> str:
    return f"/common/destiny2_content/icons/{rng.getrandbits(128):032x}.{ext}"


def _pick_weighted(rng: random.Random, choices: Sequence[tuple[int, int]]) -> int:
    total = sum(weight for _, weight in choices)
    point = rng.random() * total
    for value, weight in choices:
        point -= weight
        if point < 0:
            return value
    return choices[-1][0]


def _words(rng: random.Random) -> dict[str, str]:
    return {
        "a": rng.choice(_ADJECTIVES).lower(),
        "a2": rng.choice(_ADJECTIVES).lower(),
        "n": rng.choice(_NOUNS).lower(),
        "n2": rng.choice(_NOUNS).lower(),
        "p": rng.choice(_PLACES),
        "s": rng.choice(_SPEAKERS),
    }


def _sentence(rng: random.Random, templates: Sequence[str]) -> str:
    text = rng.choice(templates).format(**_words(rng))
    return text[:1].upper() + text[1:]


def translator(lang: str) -> Callable[[str], str]:
    """Return the function that makes an English string look translated into `lang`."""
    if lang == "en":
        return lambda text: text
    prefix = f"[{lang}] "
    return lambda text: prefix + text if text else text


# -- releases -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """The compact description of one item; its full definition is derived from it."""

    hash: int
    kind: str
    item_type: int
    sub_type: int
    type_name: str
    bucket: str
    tier: int
    class_type: int
    damage: int
    ammo: int
    name: str
    description: str
    flavor: str
    source: str
    seed: int
    # Hidden by Bungie: the definition shows a blank name and description, and says so.
    redacted: bool = False
    # Stat values set by a release, as (dotted path in the definition, value), in path order.
    stat_values: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Generation:
    """One release of the manifest: its version, its items, their indexes and the key of each
    table's files."""

    number: int
    key: str
    version: str
    build: int
    changelist: int
    stamp: datetime.datetime
    items: tuple[ItemRecord, ...]
    # table -> the top-level `index` of each definition, in the table's order (for the item
    # table, the order of `items`). An array: a release of 40k items keeps 160 kB of them.
    indexes: Mapping[str, array[int]]
    # The index an item added without renumbering gets (past every index of the item table).
    next_index: int
    # table -> key of the generation that last gave it a new path
    table_keys: Mapping[str, str]


@dataclass(frozen=True)
class Renamed:
    """An item whose `displayProperties.name` changed, and nothing else."""

    hash: int
    old: str
    new: str


@dataclass(frozen=True)
class Restatted:
    """An item whose one stat value (at `path`, dotted as the app reports it) changed."""

    hash: int
    path: str
    old: int
    new: int


@dataclass(frozen=True)
class PublishResult:
    """A new generation and what changed in its item table, each item in one list at most."""

    generation: Generation
    tables: tuple[str, ...]
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    changed: tuple[int, ...] = ()
    renamed: tuple[Renamed, ...] = ()
    restatted: tuple[Restatted, ...] = ()
    revealed: tuple[int, ...] = ()
    redacted: tuple[int, ...] = ()

    def report(self) -> dict[str, Any]:
        """Return which item hashes got which kind of change, as JSON-ready lists by hash."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
            "renamed": [{"hash": r.hash, "old": r.old, "new": r.new} for r in self.renamed],
            "restatted": [
                {"hash": r.hash, "path": r.path, "old": r.old, "new": r.new} for r in self.restatted
            ],
            "revealed": list(self.revealed),
            "redacted": list(self.redacted),
        }


@dataclass
class _ItemChanges:
    """What a publish did to the item table, as it is worked out."""

    # The item table's `index` of each item, in the new release's order (before renumbering).
    indexes: array[int]
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    renamed: list[Renamed] = field(default_factory=list)
    restatted: list[Restatted] = field(default_factory=list)
    revealed: list[int] = field(default_factory=list)
    redacted: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SampleCharacter:
    """One character of a sample player and what it has equipped."""

    character_id: int
    class_type: int
    light: int
    equipment: tuple[ItemRecord, ...]

    @property
    def emblem(self) -> ItemRecord | None:
        """Return the equipped emblem, if any."""
        return next((r for r in self.equipment if r.bucket == "Emblems"), None)


@dataclass(frozen=True)
class SampleProfile:
    """One Destiny membership of a sample player (a platform account) and its characters."""

    membership_type: int
    membership_id: int
    characters: tuple[SampleCharacter, ...]


@dataclass(frozen=True)
class SamplePlayer:
    """A player the origin knows by Bungie name: one or more profiles, maybe private."""

    name: str
    code: int
    private: bool
    profiles: tuple[SampleProfile, ...]

    @property
    def bungie_name(self) -> str:
        return f"{self.name}#{self.code:04d}"


# -- content files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentFile:
    """A file the origin serves: where its bytes are on disk and which table it holds."""

    file: Path
    size: int
    table: str | None


@dataclass
class _Entry:
    table: str | None
    build: Callable[[Path], None] | None = None
    done: ContentFile | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ContentFiles:
    """The content paths the origin knows, each backed by a file written once (maybe lazily)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def __contains__(self, path: str) -> bool:
        with self._lock:
            return path in self._entries

    def _new_file(self) -> Path:
        with self._lock:
            self._counter += 1
            return self.directory / f"content-{self._counter:06d}"

    def add(self, path: str, table: str | None, file: Path) -> ContentFile:
        """Register a written `file` as the bytes of `path`."""
        done = ContentFile(file, file.stat().st_size, table)
        with self._lock:
            self._entries[path] = _Entry(table, done=done)
        return done

    def add_lazy(self, path: str, table: str | None, build: Callable[[Path], None]) -> None:
        """Register `path`, to be written by `build(file)` when first asked for."""
        with self._lock:
            self._entries.setdefault(path, _Entry(table, build=build))

    def get(self, path: str) -> ContentFile | None:
        """Return the file behind `path`, building it now if it is lazy; None if unknown."""
        with self._lock:
            entry = self._entries.get(path)
        if entry is None:
            return None
        with entry.lock:
            if entry.done is None:
                assert entry.build is not None
                file = self._new_file()
                entry.build(file)
                entry.done = ContentFile(file, file.stat().st_size, entry.table)
            return entry.done

    def table(self, path: str) -> str | None:
        """Return the table a known `path` holds (None: several); KeyError if unknown."""
        with self._lock:
            return self._entries[path].table

    def read(self, path: str) -> bytes:
        """Return the bytes of a known `path`."""
        found = self.get(path)
        if found is None:
            raise KeyError(path)
        return found.file.read_bytes()

    def writer(self) -> tuple[Path, BinaryIO]:
        """Return a new file and an open binary handle to write it."""
        file = self._new_file()
        return file, file.open("wb")

    def remove_all(self) -> None:
        """Delete every file (the origin is shutting down)."""
        shutil.rmtree(self.directory, ignore_errors=True)


# -- the generator --------------------------------------------------------------------------------


class DemoData:
    """Manifest generations for one seed, item count and language list, and their files."""

    def __init__(
        self,
        directory: Path,
        *,
        seed: int = 1,
        items: int = 2000,
        languages: Sequence[str] = ("en",),
    ) -> None:
        if items < 1:
            raise ValueError("items must be at least 1")
        if not languages:
            raise ValueError("at least one language is needed")
        self.seed = seed
        self.item_count = items
        self.languages = tuple(languages)
        self.files = ContentFiles(directory)
        self._build_world()
        # A few hundred small definitions in all: kept whole, encoded with each release's indexes.
        self._small_rows = {
            (table, lang): self._small_table(table, translator(lang))
            for table in TABLES[1:]
            for lang in self.languages
        }

    # -- the world: small tables and the hashes items point at ------------------------------------

    def _build_world(self) -> None:
        rng = random.Random(f"demo-origin/world/{self.seed}")
        taken: dict[str, set[int]] = {table: set() for table in TABLES}

        def hashes(table: str, names: Iterable[Any]) -> dict[Any, int]:
            return {name: _unique_hash(rng, taken[table]) for name in names}

        self.class_hash = hashes("DestinyClassDefinition", (ct for _, ct in CLASSES))
        self.damage_hash = hashes("DestinyDamageTypeDefinition", (e for _, e, _ in DAMAGE_TYPES))
        self.bucket_hash = hashes("DestinyInventoryBucketDefinition", (b[0] for b in BUCKETS))
        self.tier_hash = hashes("DestinyItemTierTypeDefinition", TIER_NAMES)
        stat_names = dict.fromkeys((*WEAPON_STATS, *ARMOR_STATS, *_OTHER_STATS))
        self.stat_hash = hashes("DestinyStatDefinition", stat_names)
        self.perk_hash = hashes("DestinySandboxPerkDefinition", _PERK_WORDS)
        self.perk_hashes = tuple(self.perk_hash.values())
        # Definitions of tables the origin does not serve: referenced, as in Bungie's data.
        self.plug_hashes = tuple(rng.getrandbits(32) | 1 for _ in range(600))
        self.plug_set_hashes = tuple(rng.getrandbits(32) | 1 for _ in range(120))
        self.socket_type_hashes = tuple(rng.getrandbits(32) | 1 for _ in range(40))
        self.socket_category_hashes = tuple(rng.getrandbits(32) | 1 for _ in range(8))
        self.power_cap_hashes = tuple(rng.getrandbits(32) | 1 for _ in range(6))
        self.season_hashes = tuple(rng.getrandbits(32) | 1 for _ in range(20))
        self.watermarks = tuple(_icon(rng, "png") for _ in range(20))
        self.small_icons = {name: _icon(rng, "png") for name in TIER_NAMES.values()}

    def _small_table(self, table: str, tr: Callable[[str], str]) -> dict[str, Any]:
        rng = random.Random(f"demo-origin/{table}/{self.seed}")
        rows: list[dict[str, Any]] = []
        if table == "DestinyClassDefinition":
            for name, class_type in CLASSES:
                rows.append(
                    {
                        "classType": class_type,
                        "displayProperties": _display("", tr(name), _icon(rng, "png")),
                        "genderedClassNames": {"Male": tr(name), "Female": tr(name)},
                        "genderedClassNamesByGenderHash": {
                            str(_hash32("gender", "male")): tr(name),
                            str(_hash32("gender", "female")): tr(name),
                        },
                        "hash": self.class_hash[class_type],
                    }
                )
        elif table == "DestinyDamageTypeDefinition":
            for name, enum, description in DAMAGE_TYPES:
                icon = _icon(rng, "png")
                rows.append(
                    {
                        "displayProperties": _display(tr(description), tr(name), icon),
                        "transparentIconPath": _icon(rng, "png"),
                        "showIcon": True,
                        "enumValue": enum,
                        "hash": self.damage_hash[enum],
                    }
                )
        elif table == "DestinyInventoryBucketDefinition":
            for order, (name, category, location, scope, count, description) in enumerate(BUCKETS):
                rows.append(
                    {
                        "displayProperties": _display(tr(description), tr(name), _icon(rng, "png")),
                        "scope": scope,
                        "category": category,
                        "bucketOrder": order * 10,
                        "itemCount": count,
                        "location": location,
                        "hasTransferDestination": category == 3,
                        "enabled": True,
                        "fifo": category != 3,
                        "hash": self.bucket_hash[name],
                    }
                )
        elif table == "DestinyItemTierTypeDefinition":
            for tier, name in TIER_NAMES.items():
                rows.append(
                    {
                        "displayProperties": _display("", tr(name), self.small_icons[name]),
                        "infusionProcess": {
                            "baseQualityTransferRatio": round(0.1 * tier, 1),
                            "minimumQualityIncrement": 1,
                        },
                        "hash": self.tier_hash[tier],
                    }
                )
        elif table == "DestinyStatDefinition":
            weapon, armor = set(WEAPON_STATS), set(ARMOR_STATS)
            for name, stat_hash in self.stat_hash.items():
                category = 1 if name in weapon else 2 if name in armor else 0
                rows.append(
                    {
                        "displayProperties": _display(
                            tr(f"How {name.lower()} this gear is."), tr(name), _icon(rng, "png")
                        ),
                        "aggregationType": 2 if category else 1,
                        "hasComputedBlock": False,
                        "statCategory": category,
                        "interpolate": True,
                        "hash": stat_hash,
                    }
                )
        elif table == "DestinySandboxPerkDefinition":
            for name, perk_hash in self.perk_hash.items():
                damage = rng.choice((0, 0, 0, 2, 3, 4, 6, 7))
                row: dict[str, Any] = {
                    "displayProperties": _display(
                        tr(_sentence(rng, _DESCRIPTIONS)), tr(name), _icon(rng, "png")
                    ),
                    "perkIdentifier": name.lower().replace(" ", "_"),
                    "isDisplayable": True,
                    "damageType": damage,
                }
                if damage:
                    row["damageTypeHash"] = self.damage_hash[damage]
                row["hash"] = perk_hash
                rows.append(row)
        else:
            raise ValueError(f"unknown table {table!r}")
        table_rows = {}
        for index, row in enumerate(rows):
            row["index"] = index
            row["redacted"] = False
            row["blacklisted"] = False
            table_rows[str(row["hash"])] = row
        return table_rows

    # -- items: records --------------------------------------------------------------------------

    def _new_record(self, rng: random.Random, taken: set[int]) -> ItemRecord:
        item_hash = _unique_hash(rng, taken)
        kind = rng.choices(_KIND_NAMES, cum_weights=_KIND_CUMULATIVE)[0]
        class_type, damage, ammo, sub_type = 3, 0, 0, 0
        if kind == "weapon":
            sub_type, type_name, ammo = rng.choice(WEAPON_TYPES)
            item_type, tier = 3, _pick_weighted(rng, _GEAR_TIERS)
            if ammo == 3:
                bucket, damage = "Power Weapons", rng.choice((2, 3, 4, 6, 7))
            elif rng.random() < 0.5:
                bucket, damage = "Kinetic Weapons", rng.choice((1, 1, 1, 1, 6, 7))
            else:
                bucket, damage = "Energy Weapons", rng.choice((2, 3, 4))
            name = self._weapon_name(rng)
        elif kind == "armor":
            sub_type, bucket, type_name, words = rng.choice(ARMOR_PIECES)
            class_type = rng.randrange(3)
            type_name = type_name or _CLASS_ITEM_NAMES[class_type]
            item_type, tier = 2, _pick_weighted(rng, _GEAR_TIERS)
            name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {words[class_type]}"
        elif kind == "mod":
            item_type, bucket, type_name = 19, "Modifications", rng.choice(_MOD_TYPES)
            tier = _pick_weighted(rng, _MOD_TIERS)
            name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_PERK_WORDS)}"
        elif kind == "subclass":
            item_type, bucket, tier = 16, "Subclass", 3
            class_type = rng.randrange(3)
            type_name = f"{CLASSES[class_type][0]} Subclass"
            damage = rng.choice((2, 3, 4, 6, 7))
            name = rng.choice(_SUBCLASS_NAMES)
        else:
            item_type, sub_type, type_name, bucket, tiers, _ = _SIMPLE_KINDS[kind]
            tier = _pick_weighted(rng, tiers)
            name = self._simple_name(rng, kind)
        return ItemRecord(
            hash=item_hash,
            kind=kind,
            item_type=item_type,
            sub_type=sub_type,
            type_name=type_name,
            bucket=bucket,
            tier=tier,
            class_type=class_type,
            damage=damage,
            ammo=ammo,
            name=name,
            description=_sentence(rng, _DESCRIPTIONS),
            flavor=_sentence(rng, _FLAVORS),
            source=_sentence(rng, _SOURCES),
            seed=rng.getrandbits(64),
        )

    @staticmethod
    def _weapon_name(rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.45:
            return rng.choice(_COMPOUND_HEADS) + rng.choice(_COMPOUND_TAILS)
        if roll < 0.85:
            return f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        return f"The {rng.choice(_NOUNS)}"

    @staticmethod
    def _simple_name(rng: random.Random, kind: str) -> str:
        adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
        if kind == "ghost":
            return f"{adjective} {noun} Shell"
        if kind == "vehicle":
            return f"{noun} S-{rng.randrange(10, 99)}"
        if kind in ("quest", "bounty"):
            return f"{noun} of {rng.choice(_PLACES)}"
        if kind == "engram":
            return f"{adjective} Engram"
        if kind in ("consumable", "material"):
            return f"{adjective} {rng.choice(('Core', 'Shard', 'Cipher', 'Alloy', 'Prism'))}"
        return f"{adjective} {noun}"

    def _changed_record(self, record: ItemRecord, rng: random.Random) -> ItemRecord:
        """Return `record` with its name, description and/or tier changed (never identical)."""
        mode = rng.randrange(4)
        changes: dict[str, Any] = {}
        if mode in (0, 3):
            changes["name"] = self._other_name(record, rng)
        if mode in (1, 3):
            description = record.description
            while description == record.description:
                description = _sentence(rng, _DESCRIPTIONS)
            changes["description"] = description
        if mode == 2:
            changes["tier"] = rng.choice([t for t in (2, 3, 4, 5, 6) if t != record.tier])
        return replace(record, **changes)

    def _other_name(self, record: ItemRecord, rng: random.Random) -> str:
        """Return a name for `record` that is not the one it has."""
        name = record.name
        while name == record.name:
            if record.kind == "weapon":
                name = self._weapon_name(rng)
            elif record.kind == "armor":
                # The piece stays what it is: a helm is still a Helm.
                piece = record.name.rsplit(" ", 1)[-1]
                name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {piece}"
            elif record.kind == "mod":
                name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_PERK_WORDS)}"
            elif record.kind == "subclass":
                name = rng.choice(_SUBCLASS_NAMES)
            else:
                name = self._simple_name(rng, record.kind)
        return name

    def _restatted_record(self, record: ItemRecord, rng: random.Random) -> Restatted:
        """Return a new value for one stat of `record` (a weapon or armor), within its bounds."""
        fields = self._stat_fields(record)
        path, old, low, high = fields[rng.randrange(len(fields))]
        # A balance pass nudges a stat; the other way when the nudge would leave it where it was.
        step = rng.randint(1, 10) * rng.choice((-1, 1))
        new = min(high, max(low, old + step))
        if new == old:
            new = min(high, max(low, old - step))
        return Restatted(record.hash, path, old, new)

    def _stat_fields(self, record: ItemRecord) -> list[tuple[str, int, int, int]]:
        """Return (path, value, lowest, highest) of each stat value of `record`'s definition."""
        definition = self.item_definition(record, 0)
        fields = [
            (f"stats.stats.{key}.value", stat["value"], stat["minimum"], stat["maximum"])
            for key, stat in definition["stats"]["stats"].items()
        ]
        fields += [
            (f"investmentStats.{position}.value", stat["value"], 1, 100)
            for position, stat in enumerate(definition["investmentStats"])
        ]
        return fields

    # -- items: definitions ----------------------------------------------------------------------

    def item_definition(self, record: ItemRecord, index: int) -> dict[str, Any]:
        """Return the English DestinyInventoryItemDefinition of `record`, numbered `index`."""
        rng = random.Random(record.seed)
        kind = record.kind
        tier_name = TIER_NAMES[record.tier]
        gear = kind in _GEAR
        plug = kind in _PLUGS
        rendered = kind in _RENDERED
        shown = not record.redacted
        definition: dict[str, Any] = {
            "displayProperties": _display(
                record.description if shown else "", record.name if shown else "", _icon(rng)
            ),
            "tooltipNotifications": (
                [{"displayString": rng.choice(_TOOLTIPS), "displayStyle": "ui_display_style_info"}]
                if kind == "weapon" and rng.random() < 0.4
                else []
            ),
        }
        if rendered or kind in ("emblem", "shader", "emote"):
            definition["collectibleHash"] = rng.getrandbits(32)
        if gear or plug:
            definition["iconWatermark"] = rng.choice(self.watermarks)
        if gear:
            definition["iconWatermarkShelved"] = rng.choice(self.watermarks)
        if kind == "emblem":
            definition["secondaryIcon"] = _icon(rng)
            definition["secondaryOverlay"] = _icon(rng)
            definition["secondarySpecial"] = _icon(rng)
        definition["isFeaturedItem"] = False
        definition["isHolofoil"] = gear and rng.random() < 0.03
        definition["isAdept"] = kind == "weapon" and rng.random() < 0.05
        if rendered:
            definition["screenshot"] = f"/common/destiny2_content/screenshots/{record.hash}.jpg"
        definition["itemTypeDisplayName"] = record.type_name
        definition["flavorText"] = record.flavor if kind != "dummy" else ""
        definition["uiItemDisplayStyle"] = "ui_display_style_energy_mod" if kind == "mod" else ""
        definition["itemTypeAndTierDisplayName"] = (
            f"{tier_name} {record.type_name}" if record.type_name else ""
        )
        definition["displaySource"] = record.source if gear else ""
        definition["tooltipStyle"] = "build" if gear else ""
        if gear or plug or kind in _EQUIPPABLE:
            definition["action"] = _action("Dismantle" if gear or plug else "Delete")
        definition["inventory"] = self._inventory(record, tier_name)
        definition["stats"] = self._stats(rng, record)
        if gear or kind in _EQUIPPABLE:
            definition["equippingBlock"] = self._equipping(record)
        if rendered:
            definition["translationBlock"] = self._translation(rng, record)
        if gear or kind == "engram":
            definition["preview"] = {
                "screenStyle": "screen_style_sockets" if gear else "",
                "previewVendorHash": 0,
                "previewActionString": "",
            }
        if gear or kind == "mod":
            definition["quality"] = self._quality(rng, record)
        if kind in ("quest", "bounty"):
            definition["objectives"] = {
                "objectiveHashes": [rng.getrandbits(32) for _ in range(rng.randint(1, 3))],
                "displayActivityHashes": [],
                "requireFullObjectiveCompletion": True,
                "questlineItemHash": 0,
                "narrative": "",
                "objectiveVerbName": "",
                "questTypeIdentifier": "",
                "questTypeHash": 0,
                "perObjectiveDisplayProperties": [],
                "displayAsStatTracker": False,
            }
        if plug:
            definition["plug"] = _plug_block(rng, record)
        if rendered or kind == "subclass":
            definition["sockets"] = self._sockets(rng, record)
        definition["summary"] = {"sortPriority": 0}
        definition["investmentStats"] = self._investment(rng, record)
        definition["perks"] = [
            {
                "requirementDisplayString": "",
                "perkHash": rng.choice(self.perk_hashes),
                "perkVisibility": rng.choice((0, 0, 2)),
            }
            for _ in range(1 if kind == "mod" or (gear and record.tier == 6) else 0)
        ]
        if gear and rng.random() < 0.6:
            definition["loreHash"] = rng.getrandbits(32)
        definition["animations"] = []
        definition["allowActions"] = True
        definition["doesPostmasterPullHaveSideEffects"] = False
        definition["nonTransferrable"] = kind in ("quest", "bounty", "subclass")
        definition["itemCategoryHashes"] = self._categories(record)
        definition["specialItemType"] = 0
        definition["itemType"] = record.item_type
        definition["itemSubType"] = record.sub_type
        definition["classType"] = record.class_type
        breaker = rng.randint(1, 3) if kind == "weapon" and record.tier == 6 else 0
        definition["breakerType"] = breaker
        if breaker:
            definition["breakerTypeHash"] = _hash32("breaker", breaker)
        definition["equippable"] = gear or kind in _EQUIPPABLE
        definition["damageTypeHashes"] = [self.damage_hash[record.damage]] if record.damage else []
        definition["damageTypes"] = [record.damage] if record.damage else []
        definition["defaultDamageType"] = record.damage
        if record.damage:
            definition["defaultDamageTypeHash"] = self.damage_hash[record.damage]
        if gear:
            definition["seasonHash"] = rng.choice(self.season_hashes)
        traits = self._traits(record)
        definition["isWrapper"] = False
        definition["traitIds"] = traits
        definition["traitHashes"] = [_hash32("trait", trait) for trait in traits]
        definition["hash"] = record.hash
        definition["index"] = index
        definition["redacted"] = record.redacted
        definition["blacklisted"] = False
        for path, value in record.stat_values:
            _set_path(definition, path, value)
        return definition

    def _inventory(self, record: ItemRecord, tier_name: str) -> dict[str, Any]:
        stack = _SIMPLE_KINDS[record.kind][5] if record.kind in _SIMPLE_KINDS else 1
        return {
            "stackUniqueLabel": "" if stack == 1 else f"{record.kind}.{record.hash}",
            "maxStackSize": stack,
            "bucketTypeHash": self.bucket_hash[record.bucket],
            "recoveryBucketTypeHash": self.bucket_hash["Lost Items"],
            "tierTypeHash": self.tier_hash[record.tier],
            "isInstanceItem": stack == 1 and record.kind not in ("emote", "finisher", "dummy"),
            "nonTransferrableOriginal": False,
            "tierTypeName": tier_name,
            "tierType": record.tier,
            "expirationTooltip": "",
            "expiredInActivityMessage": "",
            "expiredInOrbitMessage": "",
            "suppressExpirationWhenObjectivesComplete": True,
        }

    def _stats(self, rng: random.Random, record: ItemRecord) -> dict[str, Any]:
        if record.kind == "weapon":
            names: Sequence[str] = WEAPON_STATS[:12]
        elif record.kind == "armor":
            names = ARMOR_STATS[:1] + ARMOR_STATS[2:]
        else:
            names = ()
        stats = {}
        for name in names:
            stat_hash = self.stat_hash[name]
            maximum = 1000 if name == "Rounds Per Minute" else 100
            stats[str(stat_hash)] = {
                "statHash": stat_hash,
                "value": rng.randrange(maximum + 1),
                "minimum": 0,
                "maximum": maximum,
                "displayMaximum": maximum,
            }
        block: dict[str, Any] = {"disablePrimaryStatDisplay": not names}
        if names:
            block["statGroupHash"] = _hash32("stat-group", record.kind, record.sub_type)
        block["stats"] = stats
        block["hasDisplayableStats"] = bool(names)
        block["primaryBaseStatHash"] = self.stat_hash[names[0]] if names else 0
        return block

    def _equipping(self, record: ItemRecord) -> dict[str, Any]:
        block: dict[str, Any] = {}
        exotic = record.tier == 6 and record.kind in ("weapon", "armor")
        block["uniqueLabel"] = f"exotic_{record.kind}" if exotic else ""
        block["uniqueLabelHash"] = _hash32("label", record.kind) if exotic else 0
        block["equipmentSlotTypeHash"] = _hash32("slot", record.bucket)
        block["attributes"] = 0
        block["equippingSoundHash"] = 0
        block["hornSoundHash"] = 0
        block["ammoType"] = record.ammo
        block["displayStrings"] = [""]
        return block

    def _translation(self, rng: random.Random, record: ItemRecord) -> dict[str, Any]:
        return {
            "weaponPatternIdentifier": "",
            "weaponPatternHash": rng.getrandbits(32) if record.kind == "weapon" else 0,
            "defaultDyes": [
                {"channelHash": _hash32("channel", channel), "dyeHash": rng.getrandbits(32)}
                for channel in range(3)
            ],
            "lockedDyes": [],
            "customDyes": [],
            "arrangements": [{"classHash": 0, "artArrangementHash": rng.getrandbits(32)}],
            "hasGeometry": True,
        }

    def _quality(self, rng: random.Random, record: ItemRecord) -> dict[str, Any]:
        gear = record.kind in _GEAR
        watermark = rng.choice(self.watermarks)
        infusion = _hash32("infusion", record.kind, record.sub_type)
        return {
            "itemLevels": [],
            "qualityLevel": 0,
            "infusionCategoryName": f"v400.{record.kind}.{record.sub_type}" if gear else "",
            "infusionCategoryHash": infusion if gear else 0,
            "infusionCategoryHashes": [infusion] if gear else [],
            "progressionLevelRequirementHash": _hash32("level-requirement", record.kind),
            "currentVersion": 0,
            "versions": [{"powerCapHash": rng.choice(self.power_cap_hashes)}],
            "displayVersionWatermarkIcons": [watermark] if gear else [""],
        }

    def _sockets(self, rng: random.Random, record: ItemRecord) -> dict[str, Any]:
        count = {"weapon": 7, "armor": 4, "subclass": 5}.get(record.kind, 3)
        entries = []
        for position in range(count):
            random_roll = record.kind == "weapon" and 1 <= position <= 4
            plugs = rng.randint(2, 5) if random_roll else 0
            entry: dict[str, Any] = {
                "socketTypeHash": rng.choice(self.socket_type_hashes),
                "singleInitialItemHash": rng.choice(self.plug_hashes),
                "reusablePlugItems": [
                    {"plugItemHash": rng.choice(self.plug_hashes)} for _ in range(plugs)
                ],
                "preventInitializationOnVendorPurchase": False,
                "hidePerksInItemTooltip": position > 4,
                "plugSources": 2 if plugs else 1,
            }
            if rng.random() < 0.5:
                entry["reusablePlugSetHash"] = rng.choice(self.plug_set_hashes)
            if random_roll:
                entry["randomizedPlugSetHash"] = rng.choice(self.plug_set_hashes)
            entry["overridesUiAppearance"] = False
            entry["defaultVisible"] = True
            entries.append(entry)
        split = count // 2
        return {
            "detail": "Sockets",
            "socketEntries": entries,
            "intrinsicSockets": [],
            "socketCategories": [
                {
                    "socketCategoryHash": self.socket_category_hashes[0],
                    "socketIndexes": list(range(split)),
                },
                {
                    "socketCategoryHash": self.socket_category_hashes[1],
                    "socketIndexes": list(range(split, count)),
                },
            ],
        }

    def _investment(self, rng: random.Random, record: ItemRecord) -> list[dict[str, Any]]:
        if record.kind == "weapon":
            names: Sequence[str] = WEAPON_STATS[2:10]
        elif record.kind == "armor":
            names = ARMOR_STATS[2:]
        elif record.kind == "mod":
            names = (rng.choice(ARMOR_STATS[2:]),)
        else:
            return []
        return [
            {
                "statTypeHash": self.stat_hash[name],
                "value": rng.randrange(1, 80),
                "isConditionallyActive": False,
            }
            for name in names
        ]

    def _categories(self, record: ItemRecord) -> list[int]:
        keys: list[str] = [record.kind]
        if record.kind == "weapon":
            keys += [record.bucket, f"weapon/{record.sub_type}"]
        elif record.kind == "armor":
            keys += [f"armor/{record.sub_type}", f"class/{record.class_type}"]
        elif record.kind in ("mod", "shader", "ornament"):
            keys.append(f"plug/{record.type_name}")
        return [_hash32("category", key) for key in keys]

    def _traits(self, record: ItemRecord) -> list[str]:
        if record.kind == "weapon":
            slug = record.type_name.lower().replace(" ", "_")
            foundry = _FOUNDRIES[record.hash % len(_FOUNDRIES)]
            return ["item_type.weapon", f"weapon_type.{slug}", f"foundry.{foundry}"]
        if record.kind == "armor":
            slot = ARMOR_PIECES[record.sub_type - 26][1].lower().replace(" ", "_")
            return ["item_type.armor", f"item.armor.{slot}"]
        return [f"item_type.{record.kind}"]

    def localized_item(self, english: dict[str, Any], tr: Callable[[str], str]) -> dict[str, Any]:
        """Return a copy of an English item definition with its texts in another language."""
        definition = dict(english)
        display = dict(english["displayProperties"])
        # The English texts, not the record's: a redacted item's are blank in every language.
        display["name"] = tr(display["name"])
        display["description"] = tr(display["description"])
        definition["displayProperties"] = display
        definition["tooltipNotifications"] = [
            {**note, "displayString": tr(note["displayString"])}
            for note in english["tooltipNotifications"]
        ]
        for key in ("itemTypeDisplayName", "flavorText", "itemTypeAndTierDisplayName"):
            definition[key] = tr(english[key])
        definition["displaySource"] = tr(english["displaySource"])
        if "action" in english:
            action = english["action"]
            definition["action"] = {**action, "verbName": tr(action["verbName"])}
        inventory = english["inventory"]
        definition["inventory"] = {**inventory, "tierTypeName": tr(inventory["tierTypeName"])}
        return definition

    # -- generations -----------------------------------------------------------------------------

    def initial(self) -> Generation:
        """Return generation 1 (its files are written by `materialize`)."""
        rng = random.Random(f"demo-origin/items/{self.seed}")
        taken: set[int] = set()
        items = [self._new_record(rng, taken) for _ in range(self.item_count)]
        # Their own random stream: which items are hidden does not change the items. Never the
        # first: readers take the table's first definition as a known, named one.
        hidden = random.Random(f"demo-origin/redacted/{self.seed}")
        count = min(len(items) - 1, max(1, round(len(items) * REDACTED_SHARE)))
        for position in hidden.sample(range(1, len(items)), count):
            items[position] = replace(items[position], redacted=True)
        key = _digest("generation", self.seed, self.item_count).hex()
        versions = random.Random(f"demo-origin/version/{self.seed}")
        stamp = datetime.datetime(2025, 1, 1) + datetime.timedelta(
            minutes=versions.randrange(300 * 24 * 60)
        )
        build = versions.randint(200_000, 240_000)
        changelist = versions.randint(40_000, 70_000)
        return Generation(
            number=1,
            key=key,
            version=_version(build, stamp, changelist),
            build=build,
            changelist=changelist,
            stamp=stamp,
            items=tuple(items),
            indexes={table: array("i", range(self._size(table, items))) for table in TABLES},
            next_index=len(items),
            table_keys=dict.fromkeys(TABLES, key),
        )

    def _size(self, table: str, items: Sequence[ItemRecord]) -> int:
        """Return how many definitions `table` holds in a release of `items`."""
        if table == ITEM_TABLE:
            return len(items)
        return len(self._small_rows[(table, self.languages[0])])

    def publish(
        self,
        current: Generation,
        number: int,
        *,
        added: int | None = None,
        removed: int | None = None,
        changed: int | None = None,
        renamed: int = 0,
        restatted: int = 0,
        revealed: int = 0,
        redacted: int = 0,
        tables: Sequence[str] | None = None,
        version: str | None = None,
        renumber: bool = True,
    ) -> PublishResult:
        """Derive generation `number` from `current`: new paths, some items changed.

        In the item table, `added` items are new and `removed` ones go; `changed` ones get
        another name, description and/or tier; `renamed` ones another name and nothing else;
        `restatted` ones (weapons and armor) another value of one stat, in `stats` or
        `investmentStats`, which no page shows; `revealed` ones (redacted) show their name and
        description again; `redacted` ones are hidden as Bungie hides them (`redacted: true`, a
        blank name and description). An item gets one kind of change at most. added, removed
        and changed default to a share of the item table, the others to 0; all apply to the
        item table only, and only when it is among `tables` (default: all). With `renumber`,
        every definition of the published tables gets a new top-level `index`, as Bungie's
        releases do; without it, a definition keeps its index. Raise ValueError on options
        that cannot apply.
        """
        chosen = _check_tables(tables)
        counts = {
            "added": added,
            "removed": removed,
            "changed": changed,
            "renamed": renamed,
            "restatted": restatted,
            "revealed": revealed,
            "redacted": redacted,
        }
        for name, count in counts.items():
            if count is None and name in ("added", "removed", "changed"):
                continue  # the default share
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError(f"{name} must be a whole number")
            if count < 0:
                raise ValueError(f"{name} must not be negative")
        if version is not None and (not isinstance(version, str) or not version.strip()):
            raise ValueError("version must be a non-empty string")
        if not isinstance(renumber, bool):
            raise ValueError("renumber must be true or false")
        options = json.dumps(
            {**counts, "tables": list(chosen), "version": version, "renumber": renumber},
            sort_keys=True,
        )
        key = _digest(current.key, number, options).hex()
        rng = random.Random(key)
        indexes = dict(current.indexes)
        if ITEM_TABLE in chosen:
            items, result = self._change_items(current, counts, rng)
            indexes[ITEM_TABLE] = result.indexes
        elif any(counts.values()):
            raise ValueError(
                f"{', '.join(ITEM_CHANGES)} apply to {ITEM_TABLE}, which is not among tables"
            )
        else:
            items, result = list(current.items), _ItemChanges(current.indexes[ITEM_TABLE])
        next_index = current.next_index + len(result.added)
        if renumber:
            # Its own random stream: which items change does not depend on the renumbering.
            shuffler = random.Random(f"{key}/indexes")
            for table in chosen:
                indexes[table] = _renumbered(indexes[table], shuffler)
            if ITEM_TABLE in chosen:
                next_index = len(items)
        build = current.build + rng.randint(1, 900)
        changelist = current.changelist + rng.randint(1, 400)
        stamp = current.stamp + datetime.timedelta(minutes=rng.randint(30, 72 * 60))
        generation = Generation(
            number=number,
            key=key,
            version=version if version is not None else _version(build, stamp, changelist),
            build=build,
            changelist=changelist,
            stamp=stamp,
            items=tuple(items),
            indexes=indexes,
            next_index=next_index,
            table_keys={t: key if t in chosen else current.table_keys[t] for t in TABLES},
        )
        by_hash = operator.attrgetter("hash")
        return PublishResult(
            generation,
            chosen,
            added=tuple(sorted(result.added)),
            removed=tuple(sorted(result.removed)),
            changed=tuple(sorted(result.changed)),
            renamed=tuple(sorted(result.renamed, key=by_hash)),
            restatted=tuple(sorted(result.restatted, key=by_hash)),
            revealed=tuple(sorted(result.revealed)),
            redacted=tuple(sorted(result.redacted)),
        )

    def _change_items(
        self, current: Generation, counts: Mapping[str, int | None], rng: random.Random
    ) -> tuple[list[ItemRecord], _ItemChanges]:
        """Return the items of the next release and what changed, for checked `counts`."""
        items = list(current.items)
        total = len(items)
        # Defaults leave at least one item in place, even in a tiny table.
        n_added = _default_count(counts["added"], total, ADDED_SHARE, total)
        n_removed = _default_count(counts["removed"], total, REMOVED_SHARE, total - 1)
        if n_removed >= total:
            raise ValueError(f"cannot remove {n_removed} of {total} items: one must remain")
        renamed, restatted = counts["renamed"] or 0, counts["restatted"] or 0
        revealed, redacted = counts["revealed"] or 0, counts["redacted"] or 0
        removed_at = set(rng.sample(range(total), n_removed))
        keep = [i for i in range(total) if i not in removed_at]
        hidden = [i for i in keep if items[i].redacted]
        shown = [i for i in keep if not items[i].redacted]
        gear = [i for i in shown if items[i].kind in _GEAR]
        explicit = renamed + restatted + redacted
        n_changed = _default_count(
            counts["changed"], total, CHANGED_SHARE, max(0, len(shown) - explicit)
        )
        if revealed > len(hidden):
            raise ValueError(f"cannot reveal {_items(revealed)}: {_kept(len(hidden))} redacted")
        if restatted > len(gear):
            raise ValueError(
                f"cannot restat {_items(restatted)}: {_kept(len(gear))} a weapon or armor"
                " not redacted"
            )
        if n_changed + explicit > len(shown):
            raise ValueError(
                f"cannot change, rename, restat and redact {_items(n_changed + explicit)}"
                f" in all: {_kept(len(shown))} not redacted"
            )
        revealed_at = rng.sample(hidden, revealed)
        restatted_at = rng.sample(gear, restatted)
        spared = set(restatted_at)
        others = rng.sample([i for i in shown if i not in spared], n_changed + renamed + redacted)
        result = _ItemChanges(array("i"))
        for i in others[:n_changed]:
            items[i] = self._changed_record(items[i], rng)
            result.changed.append(items[i].hash)
        for i in others[n_changed : n_changed + renamed]:
            name = self._other_name(items[i], rng)
            result.renamed.append(Renamed(items[i].hash, items[i].name, name))
            items[i] = replace(items[i], name=name)
        for i in restatted_at:
            change = self._restatted_record(items[i], rng)
            result.restatted.append(change)
            values = {**dict(items[i].stat_values), change.path: change.new}
            items[i] = replace(items[i], stat_values=tuple(sorted(values.items())))
        for i in revealed_at:
            items[i] = replace(items[i], redacted=False)
            result.revealed.append(items[i].hash)
        for i in others[n_changed + renamed :]:
            items[i] = replace(items[i], redacted=True)
            result.redacted.append(items[i].hash)
        result.removed.extend(items[i].hash for i in sorted(removed_at))
        items = [items[i] for i in keep]
        old = current.indexes[ITEM_TABLE]
        result.indexes.extend(old[i] for i in keep)
        result.indexes.extend(range(current.next_index, current.next_index + n_added))
        taken = {record.hash for record in current.items}
        for _ in range(n_added):
            record = self._new_record(rng, taken)
            items.append(record)
            result.added.append(record.hash)
        return items, result

    # -- paths -----------------------------------------------------------------------------------

    def table_path(self, generation: Generation, lang: str, table: str) -> str:
        """Return the JSON component path of `table` in `lang` for `generation`."""
        guid = _guid("table", generation.table_keys[table], table)
        return f"/common/destiny2_content/json/{lang}/{table}-{guid}.json"

    def sqlite_path(self, generation: Generation, lang: str) -> str:
        """Return the path of the SQLite zip of `lang` for `generation`."""
        digest = _hex32("sqlite", generation.key, lang)
        return f"/common/destiny2_content/sqlite/{lang}/world_sql_content_{digest}.content"

    def aggregate_path(self, generation: Generation, lang: str) -> str:
        """Return the path of the all-tables JSON file of `lang` for `generation`."""
        guid = _guid("aggregate", generation.key)
        return f"/common/destiny2_content/json/{lang}/aggregate-{guid}.json"

    def content_paths(self, generation: Generation) -> dict[str, Any]:
        """Return the content path fields of the manifest for `generation`."""
        return {
            "mobileWorldContentPaths": {
                lang: self.sqlite_path(generation, lang) for lang in self.languages
            },
            "jsonWorldContentPaths": {
                lang: self.aggregate_path(generation, lang) for lang in self.languages
            },
            "jsonWorldComponentContentPaths": {
                lang: {table: self.table_path(generation, lang, table) for table in TABLES}
                for lang in self.languages
            },
        }

    def manifest(self, generation: Generation) -> dict[str, Any]:
        """Return the DestinyManifest (the envelope's Response) of `generation`."""
        paths = self.content_paths(generation)
        asset = _hex32("asset", self.seed, generation.build)
        return {
            "version": generation.version,
            "mobileAssetContentPath": (
                f"/common/destiny2_content/sqlite/asset/asset_sql_content_{asset}.content"
            ),
            "mobileGearAssetDataBases": [
                {
                    "version": n,
                    "path": "/common/destiny2_content/sqlite/asset/asset_sql_content_"
                    f"{_hex32('gear', self.seed, generation.build, n)}.content",
                }
                for n in range(3)
            ],
            "mobileWorldContentPaths": paths["mobileWorldContentPaths"],
            "jsonWorldContentPaths": paths["jsonWorldContentPaths"],
            "jsonWorldComponentContentPaths": paths["jsonWorldComponentContentPaths"],
            "mobileClanBannerDatabasePath": "/common/destiny2_content/clanbanner/"
            f"clanbanner_sql_content_{_hex32('clanbanner', self.seed)}.content",
            "mobileGearCDN": {
                "Geometry": "/common/destiny2_content/geometry/platform/mobile/geometry",
                "Texture": "/common/destiny2_content/geometry/platform/mobile/textures",
                "PlateRegion": "/common/destiny2_content/geometry/platform/mobile/plated_textures",
                "Gear": "/common/destiny2_content/geometry/gear",
                "Shader": "/common/destiny2_content/geometry/platform/mobile/shaders",
            },
            "iconImagePyramidInfo": [],
        }

    # -- files -----------------------------------------------------------------------------------

    def materialize(self, generation: Generation) -> None:
        """Write the table files of `generation` not written yet; register its lazy files."""
        for table in TABLES:
            paths = {lang: self.table_path(generation, lang, table) for lang in self.languages}
            missing = {lang: path for lang, path in paths.items() if path not in self.files}
            if not missing:
                continue
            indexes = generation.indexes[table]
            if table == ITEM_TABLE:
                self._write_items(generation.items, indexes, missing)
            else:
                for lang, path in missing.items():
                    rows = self._small_rows[(table, lang)]
                    # "index" is already a key of each row: replacing it keeps its place.
                    numbered = {
                        key: {**row, "index": index}
                        for (key, row), index in zip(rows.items(), indexes, strict=True)
                    }
                    file, handle = self.files.writer()
                    with handle:
                        handle.write(msgspec.json.encode(numbered))
                    self.files.add(path, table, file)
        for lang in self.languages:
            tables = {table: self.table_path(generation, lang, table) for table in TABLES}
            self._add_sqlite(self.sqlite_path(generation, lang), tables)
            self.files.add_lazy(
                self.aggregate_path(generation, lang), None, self._aggregate_builder(tables)
            )

    def _write_items(
        self, items: Sequence[ItemRecord], indexes: Sequence[int], paths: Mapping[str, str]
    ) -> None:
        encoder = msgspec.json.Encoder()
        outputs = {lang: self.files.writer() for lang in paths}
        translators = {lang: translator(lang) for lang in paths}
        buffers = {lang: bytearray(b"{") for lang in paths}
        try:
            for position, (record, index) in enumerate(zip(items, indexes, strict=True)):
                english = self.item_definition(record, index)
                key = b'"%d":' % record.hash if not position else b',"%d":' % record.hash
                for lang, buffer in buffers.items():
                    definition = (
                        english if lang == "en" else self.localized_item(english, translators[lang])
                    )
                    buffer += key
                    encoder.encode_into(definition, buffer, -1)
                    if len(buffer) >= _FLUSH_BYTES:
                        outputs[lang][1].write(buffer)
                        buffer.clear()
            for lang, buffer in buffers.items():
                buffer += b"}"
                outputs[lang][1].write(buffer)
        finally:
            for _, handle in outputs.values():
                handle.close()
        for lang, path in paths.items():
            self.files.add(path, ITEM_TABLE, outputs[lang][0])

    def _add_sqlite(self, path: str, tables: Mapping[str, str], bomb: str | None = None) -> None:
        """Register the SQLite zip of `tables`; `bomb` names a table served as ENDLESS_VIEW."""
        inner = path.rsplit("/", 1)[1]

        def build(file: Path) -> None:
            database = file.with_name(file.name + ".sqlite")
            connection = sqlite3.connect(database)
            try:
                connection.execute("PRAGMA journal_mode=OFF")
                connection.execute("PRAGMA synchronous=OFF")
                for table, table_path in tables.items():
                    if table == bomb:
                        connection.execute(f"CREATE VIEW {table} AS {ENDLESS_VIEW}")
                        continue
                    # Table names come from TABLES, never from a request.
                    connection.execute(
                        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY NOT NULL, json BLOB)"
                    )
                    entries = msgspec.json.decode(
                        self.files.read(table_path), type=dict[str, msgspec.Raw]
                    )
                    # Stored as text, as in Bungie's databases: the definition's exact JSON.
                    connection.executemany(
                        f"INSERT INTO {table} (id, json) VALUES (?, ?)",  # noqa: S608
                        ((signed32(int(key)), bytes(raw).decode()) for key, raw in entries.items()),
                    )
                connection.commit()
            finally:
                connection.close()
            # A fixed timestamp keeps the zip byte-identical from run to run.
            entry = zipfile.ZipInfo(inner, date_time=(2025, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with (
                zipfile.ZipFile(file, "w", compresslevel=1) as archive,
                archive.open(entry, "w") as out,
                database.open("rb") as handle,
            ):
                shutil.copyfileobj(handle, out, _COPY_BYTES)
            database.unlink()

        self.files.add_lazy(path, None, build)

    def _aggregate_builder(self, tables: Mapping[str, str]) -> Callable[[Path], None]:
        def build(file: Path) -> None:
            with file.open("wb") as out:
                out.write(b"{")
                for position, (table, path) in enumerate(tables.items()):
                    out.write(b'%s"%s":' % (b"," if position else b"", table.encode()))
                    source = self.files.get(path)
                    assert source is not None
                    with source.file.open("rb") as handle:
                        shutil.copyfileobj(handle, out, _COPY_BYTES)
                out.write(b"}")

        return build

    # -- files for the `shrunk`, `bad_json`, `bad_key` and `sqlite_view_bomb` faults -------------

    def variant_paths(self, generation: Generation, table: str, variant: str) -> dict[str, str]:
        """Return (and register) per-language paths of a VARIANTS copy of `table`.

        `shrunk` keeps one definition in SHRINK_EVERY; `bad_json` is the table with garbage
        spliced into its middle; `bad_key` has entries keyed by BAD_KEYS in its middle. Each
        lives at a new GUID, as a new release would.
        """
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        guid = _guid(variant, generation.key, table)
        builders = {
            "shrunk": _shrink_builder,
            "bad_json": _corrupt_builder,
            "bad_key": _bad_keys_builder,
        }
        paths = {}
        for lang in self.languages:
            source = self.table_path(generation, lang, table)
            path = f"/common/destiny2_content/json/{lang}/{table}-{guid}.json"
            self.files.add_lazy(path, table, builders[variant](self.files, source))
            paths[lang] = path
        return paths

    def shrunk_sqlite_path(self, generation: Generation, lang: str, table: str) -> str:
        """Return (and register) the SQLite zip path of `lang` whose `table` is shrunk."""
        shrunk = self.variant_paths(generation, table, "shrunk")
        tables = {t: self.table_path(generation, lang, t) for t in TABLES}
        tables[table] = shrunk[lang]
        path = (
            f"/common/destiny2_content/sqlite/{lang}/world_sql_content_"
            f"{_hex32('sqlite-shrunk', generation.key, lang, table)}.content"
        )
        if path not in self.files:
            self._add_sqlite(path, tables)
        return path

    def view_bomb_sqlite_path(self, generation: Generation, lang: str, table: str) -> str:
        """Return (and register) the SQLite zip path of `lang` whose `table` is ENDLESS_VIEW."""
        tables = {t: self.table_path(generation, lang, t) for t in TABLES}
        path = (
            f"/common/destiny2_content/sqlite/{lang}/world_sql_content_"
            f"{_hex32('sqlite-view-bomb', generation.key, lang, table)}.content"
        )
        if path not in self.files:
            self._add_sqlite(path, tables, bomb=table)
        return path

    # -- sample players --------------------------------------------------------------------------

    def sample_players(self, current: Generation) -> tuple[SamplePlayer, ...]:
        """Return the players of SAMPLE_PLAYERS, dressed in items of `current`.

        They wear only items that the next default publish keeps; the one player
        marked for it also wears items that publish adds (one per character), so those are
        unknown to a cache of `current` and known once the next release is synced.
        """
        following = self.publish(current, current.number + 1)
        removed = set(following.removed)
        pools: dict[str, list[ItemRecord]] = {}
        for record in current.items:
            # A player wears what has a name: a redacted item would show a blank one.
            if record.hash not in removed and not record.redacted:
                pools.setdefault(record.bucket, []).append(record)
        added = set(following.added)
        novel = [record for record in following.generation.items if record.hash in added]
        rng = random.Random(f"demo-origin/players/{self.seed}")
        players = []
        for name, code, types, classes, private, wears_next in SAMPLE_PLAYERS:
            profiles = []
            for membership_type in types:
                membership_id = MEMBERSHIP_ID_BASE + (
                    _hash32("membership", self.seed, name, code, membership_type) % _ID_SPREAD
                )
                characters = [
                    self._sample_character(rng, pools, class_type, membership_id, position)
                    for position, class_type in enumerate(classes)
                ]
                if wears_next:
                    characters = [
                        _wearing(character, novel[i]) if i < len(novel) else character
                        for i, character in enumerate(characters)
                    ]
                profiles.append(SampleProfile(membership_type, membership_id, tuple(characters)))
            players.append(SamplePlayer(name, code, private, tuple(profiles)))
        return tuple(players)

    @staticmethod
    def _sample_character(
        rng: random.Random,
        pools: Mapping[str, Sequence[ItemRecord]],
        class_type: int,
        membership_id: int,
        position: int,
    ) -> SampleCharacter:
        equipment = []
        for bucket in EQUIPMENT_BUCKETS:
            pool = pools.get(bucket, ())
            # Armor of the character's class where the table has some, else any in the slot.
            fitting = [r for r in pool if r.class_type in (class_type, 3)] or pool
            if fitting:
                equipment.append(rng.choice(fitting))
        spread = _hash32("character", membership_id, position) % _ID_SPREAD
        return SampleCharacter(
            CHARACTER_ID_BASE + spread, class_type, rng.randint(1900, 2010), tuple(equipment)
        )

    def user_info(self, player: SamplePlayer, profile: SampleProfile) -> dict[str, Any]:
        """Return the User.UserInfoCard of one of a player's profiles."""
        return {
            "iconPath": _PLATFORM_ICONS.get(profile.membership_type, ""),
            "crossSaveOverride": 0,
            "applicableMembershipTypes": [profile.membership_type],
            "isPublic": not player.private,
            "membershipType": profile.membership_type,
            "membershipId": profile.membership_id,
            "displayName": player.name,
            "bungieGlobalDisplayName": player.name,
            "bungieGlobalDisplayNameCode": player.code,
        }

    def profile_response(
        self,
        player: SamplePlayer,
        profile: SampleProfile,
        components: Iterable[int],
        minted: datetime.datetime,
    ) -> dict[str, Any]:
        """Return the Destiny.Responses.DestinyProfileResponse with the asked-for components."""
        wanted = set(components)
        hours = range(1, 5 * len(profile.characters), 5)
        played = [minted - datetime.timedelta(hours=h) for h in hours]
        response: dict[str, Any] = {
            "responseMintedTimestamp": _timestamp(minted),
            "secondaryComponentsMintedTimestamp": _timestamp(minted),
        }
        if PROFILE_COMPONENTS["profiles"] in wanted:
            response["profile"] = {
                "data": {
                    "userInfo": self.user_info(player, profile),
                    "dateLastPlayed": _timestamp(played[0] if played else minted),
                    "versionsOwned": 255,
                    "characterIds": [c.character_id for c in profile.characters],
                    "seasonHashes": list(self.season_hashes[:3]),
                    "seasonPassHashes": [],
                    "eventCardHashesOwned": [],
                    "currentSeasonHash": self.season_hashes[0],
                    "currentGuardianRank": 6,
                    "lifetimeHighestGuardianRank": 8,
                    "renewedGuardianRank": 3,
                },
                "privacy": 1,
            }
        if PROFILE_COMPONENTS["characters"] in wanted:
            response["characters"] = {
                "data": {
                    str(c.character_id): self._character(profile, c, when)
                    for c, when in zip(profile.characters, played, strict=True)
                },
                "privacy": 1,
            }
        if PROFILE_COMPONENTS["characterequipment"] in wanted:
            response["characterEquipment"] = {
                "data": {
                    str(c.character_id): {
                        "items": [self._equipped(c, record) for record in c.equipment]
                    }
                    for c in profile.characters
                },
                "privacy": 1,
            }
        return response

    def _character(
        self, profile: SampleProfile, character: SampleCharacter, played: datetime.datetime
    ) -> dict[str, Any]:
        emblem = character.emblem
        # Only the emblem's art is shown: its index (which changes by release) is not.
        display = self.item_definition(emblem, 0) if emblem else None
        rng = random.Random(f"demo-origin/character/{character.character_id}")
        race, gender = rng.randrange(3), rng.randrange(2)
        return {
            "membershipId": profile.membership_id,
            "membershipType": profile.membership_type,
            "characterId": character.character_id,
            "dateLastPlayed": _timestamp(played),
            "minutesPlayedThisSession": rng.randrange(0, 180),
            "minutesPlayedTotal": rng.randrange(1_000, 200_000),
            "light": character.light,
            "stats": {str(self.stat_hash["Power"]): character.light},
            "raceHash": _hash32("race", race),
            "genderHash": _hash32("gender", ("male", "female")[gender]),
            "classHash": self.class_hash[character.class_type],
            "raceType": race,
            "classType": character.class_type,
            "genderType": gender,
            "emblemPath": display["displayProperties"]["icon"] if display else "",
            "emblemBackgroundPath": display["secondaryIcon"] if display else "",
            "emblemHash": emblem.hash if emblem else 0,
            # No emblemColor: Bungie sends its channels as numbers, its OpenAPI as strings.
            "baseCharacterLevel": 50,
            "percentToNextLevel": 0.0,
        }

    def _equipped(self, character: SampleCharacter, record: ItemRecord) -> dict[str, Any]:
        return {
            "itemHash": record.hash,
            "itemInstanceId": INSTANCE_ID_BASE
            + _hash32("instance", character.character_id, record.hash) % _ID_SPREAD,
            "quantity": 1,
            "bindStatus": 0,
            "location": 1,
            "bucketHash": self.bucket_hash[record.bucket],
            "transferStatus": 1,
            "lockable": record.kind in _GEAR,
            "state": 0,
            "dismantlePermission": 0,
            "isWrapper": False,
            "tooltipNotificationIndexes": [],
            "versionNumber": 0,
        }


def _wearing(character: SampleCharacter, record: ItemRecord) -> SampleCharacter:
    """Return `character` with `record` equipped in its slot (added if it has none there)."""
    equipment = [record if r.bucket == record.bucket else r for r in character.equipment]
    if record not in equipment:
        equipment.append(record)
    return replace(character, equipment=tuple(equipment))


def _timestamp(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def _shrink_builder(files: ContentFiles, source: str) -> Callable[[Path], None]:
    def build(file: Path) -> None:
        entries = msgspec.json.decode(files.read(source), type=dict[str, msgspec.Raw])
        kept = [b'"%s":%s' % (key.encode(), bytes(raw)) for key, raw in entries.items()]
        file.write_bytes(b"{" + b",".join(kept[::SHRINK_EVERY]) + b"}")

    return build


def _corrupt_builder(files: ContentFiles, source: str) -> Callable[[Path], None]:
    def build(file: Path) -> None:
        data = files.read(source)
        # Splice between two definitions so the start parses; a NUL is invalid anywhere in JSON.
        middle = data.find(b',"', len(data) // 2)
        if middle < 0:
            middle = len(data) // 2
        file.write_bytes(data[: middle + 1] + b'\x00}}]]"garbage{{' + data[middle + 1 :])

    return build


def _bad_keys_builder(files: ContentFiles, source: str) -> Callable[[Path], None]:
    def build(file: Path) -> None:
        entries = msgspec.json.decode(files.read(source), type=dict[str, msgspec.Raw])
        kept = [b'"%s":%s' % (key.encode(), bytes(raw)) for key, raw in entries.items()]
        middle = len(kept) // 2
        copied = bytes(next(iter(entries.values())))
        bad = [b'"%s":%s' % (key.encode(), copied) for key in BAD_KEYS]
        file.write_bytes(b"{" + b",".join(kept[:middle] + bad + kept[middle:]) + b"}")

    return build


def _display(description: str, name: str, icon: str) -> dict[str, Any]:
    return {"description": description, "name": name, "icon": icon, "hasIcon": True}


def _action(verb: str) -> dict[str, Any]:
    return {
        "verbName": verb,
        "verbDescription": "",
        "isPositive": False,
        "requiredCooldownSeconds": 0,
        "requiredItems": [],
        "progressionRewards": [],
        "actionTypeLabel": "shard" if verb == "Dismantle" else "",
        "rewardSheetHash": 0,
        "rewardItemHash": 0,
        "rewardSiteHash": 0,
        "requiredCooldownHash": 0,
        "deleteOnAction": True,
        "consumeEntireStack": False,
        "useOnAcquire": False,
    }


def _plug_block(rng: random.Random, record: ItemRecord) -> dict[str, Any]:
    category = {
        "mod": "enhancements.v2_general",
        "shader": "shader",
        "ornament": "armor_skins_empty",
    }[record.kind]
    return {
        "insertionRules": [],
        "plugCategoryIdentifier": category,
        "plugCategoryHash": _hash32("plug-category", category),
        "onActionRecreateSelf": False,
        "insertionMaterialRequirementHash": rng.getrandbits(32) if record.kind == "mod" else 0,
        "previewItemOverrideHash": 0,
        "enabledMaterialRequirementHash": 0,
        "enabledRules": [],
        "uiPlugLabel": "",
        "plugStyle": 0,
        "plugAvailability": 0,
        "isDummyPlug": False,
        "applyStatsToSocketOwnerItem": False,
    }


def _version(build: int, stamp: datetime.datetime, changelist: int) -> str:
    return f"{build}.{stamp:%y.%m.%d.%H%M}-1-bnet.{changelist}"


def _renumbered(old: Sequence[int], rng: random.Random) -> array[int]:
    """Return new indexes for definitions indexed `old`: 0 to n-1 in a random order, where no
    definition keeps its old index (unless it is the only one)."""
    new = array("i", range(len(old)))
    rng.shuffle(new)
    if len(new) > 1:
        for position, index in enumerate(old):
            if new[position] == index:
                # Swapping with any other position moves both: old indexes are unique, and
                # positions already seen stay moved.
                other = rng.randrange(len(new) - 1)
                other += other >= position
                new[position], new[other] = new[other], new[position]
    return new


def _set_path(definition: dict[str, Any], path: str, value: int) -> None:
    """Set the value at a dotted path (object keys and list positions) of `definition`."""
    *parents, last = path.split(".")
    node: Any = definition
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _kept(count: int) -> str:
    """Say how many of the items a publish keeps are of a kind (the sentence goes on)."""
    if count == 0:
        return "none of those kept is"
    return "only 1 of those kept is" if count == 1 else f"only {count} of those kept are"


def _default_count(count: int | None, total: int, share: float, cap: int) -> int:
    return min(cap, max(1, round(total * share))) if count is None else count


def _check_tables(tables: Sequence[str] | None) -> tuple[str, ...]:
    if tables is None:
        return TABLES
    if isinstance(tables, str) or not isinstance(tables, Sequence) or not tables:
        raise ValueError("tables must be a non-empty list of table names")
    unknown = [table for table in tables if table not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables: {', '.join(map(str, unknown))}")
    return tuple(table for table in TABLES if table in tables)
