"""What a release changed, in words people read ("Impact 30 → 33", "renamed A → B").

Plain text from change records (app/manifest/changes.py), for every channel: each escapes the
words for its own markup. The sender gathers what the words need (`ChangeNotes`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import msgspec

from app.manifest import changes
from app.manifest.changes import Change
from app.manifest.changes import FieldChange
from app.manifest.store import ITEM_TABLE

STAT_TABLE = "DestinyStatDefinition"
CHANGES_LISTED = 5
FIELDS_SHOWN = 3
VALUE_CHARS = 40
# The order a message lists kinds in, and the word each is said with.
KIND_ORDER = (
    changes.CHANGED,
    changes.UNCLASSIFIED,
    changes.ADDED,
    changes.RECLASSIFIED,
    changes.REMOVED,
)
# Fields said first: a new name, stat values, other stat fields, the tier; then the rest in the
# definition's order.
_STATS = ("stats.stats.", "investmentStats.")

DefinitionKey = tuple[str, int]


@dataclass(frozen=True)
class ChangeNotes:
    """What a message says of a release's changed definitions, gathered by the sender.

    `listed` are the few definitions it details (`pick`), `total` how many the change log
    holds; `definitions` are the live definitions of the listed ones whose words need them,
    `stat_names` the stat names of DestinyStatDefinition the words use.
    """

    listed: Sequence[Change] = ()
    total: int = 0
    definitions: Mapping[DefinitionKey, Mapping[str, Any]] = field(default_factory=dict)
    stat_names: Mapping[int, str] = field(default_factory=dict)


def pick(log: Sequence[Change], limit: int = CHANGES_LISTED) -> list[Change]:
    """Return the few changes a message details: each kind in turn, items first within a kind.

    Taking kinds in turn shows a release that adds 400 items and rebalances 3 with both.
    """
    queues: dict[str, list[Change]] = {kind: [] for kind in KIND_ORDER}
    for change in log:
        queues[change["kind"]].append(change)
    waiting = [
        deque(sorted(found, key=lambda c: c["table"] != ITEM_TABLE))
        for found in queues.values()
        if found
    ]
    picked: list[Change] = []
    while len(picked) < limit and any(waiting):
        for queue in waiting:
            if queue and len(picked) < limit:
                picked.append(queue.popleft())
    order = {kind: n for n, kind in enumerate(KIND_ORDER)}
    return sorted(picked, key=lambda c: order[c["kind"]])


def needs_definition(change: Mapping[str, Any]) -> bool:
    """Say whether the words for `change` need its live definition (which stat a position is)."""
    return change["kind"] == changes.CHANGED and any(
        f["path"].startswith("investmentStats.") for f in change["fields"]
    )


def stat_hashes(
    listed: Sequence[Change], definitions: Mapping[DefinitionKey, Mapping[str, Any]]
) -> set[int]:
    """Return the stat hashes the words for `listed` name."""
    found = set()
    for change in listed:
        if change["kind"] != changes.CHANGED:
            continue
        definition = definitions.get((change["table"], change["hash"]))
        for f in change["fields"]:
            stat = _stat_of(f, definition)
            if stat is not None:
                found.add(stat)
    return found


def display_name(change: Mapping[str, Any]) -> str:
    """Return the name a definition goes by after the change ("#hash" without one)."""
    for f in change["fields"]:
        if f["path"] == "displayProperties.name" and isinstance(f.get("new"), str) and f["new"]:
            return str(f["new"])
    return str(change["name"] or f"#{change['hash']}")


def field_words(change: Mapping[str, Any], notes: ChangeNotes) -> list[str]:
    """Return what changed in a definition, a phrase per field, the first few, then "N more"."""
    definition = notes.definitions.get((change["table"], change["hash"]))
    ordered = sorted(change["fields"], key=_said_first)
    said: list[str] = []
    for f in ordered:
        phrase = _phrase(f, definition, notes.stat_names)
        if phrase not in said:
            said.append(phrase)
    if len(said) > FIELDS_SHOWN:
        more = len(said) - FIELDS_SHOWN
        said = [*said[:FIELDS_SHOWN], f"{more} more field{'s' if more > 1 else ''}"]
    return said


def short(value: Any) -> str:
    """Return a field's value as a reader sees it, cut to a few words."""
    if isinstance(value, bool) or value is None:
        text = msgspec.json.encode(value).decode()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value or "(empty)"
    else:
        text = msgspec.json.encode(value).decode()
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1].rstrip() + "…"


def _said_first(f: FieldChange) -> int:
    path: str = f["path"]
    if path == "displayProperties.name":
        return 0
    if path.startswith(_STATS):
        return 1 if path.endswith(".value") else 2
    return 3 if path == "inventory.tierTypeName" else 4


def _phrase(f: FieldChange, definition: Mapping[str, Any] | None, names: Mapping[int, str]) -> str:
    path: str = f["path"]
    parts = path.split(".")
    if path == "displayProperties.name" and "old" in f and "new" in f:
        return f"renamed {short(f['old'])} → {short(f['new'])}"
    if path == "displayProperties.description":
        return "new description"
    if path == "displayProperties.icon":
        return "new icon"
    if path == "inventory.tierTypeName" and "old" in f and "new" in f:
        return f"tier {short(f['old'])} → {short(f['new'])}"
    stat = _stat_of(f, definition)
    label = names.get(stat) if stat is not None else None
    whole = len(parts) == (3 if parts[0] == "stats" else 2)
    if label and whole:  # a stat that appeared or went: its block
        return _moved(label, {k: _value_in(v) for k, v in f.items() if k != "path"})
    if label and parts[-1] == "value":
        return _moved(label, f)
    if label:
        return _moved(f"{label} {parts[-1]}", f)
    return _moved(path, f)


def _moved(label: str, f: Mapping[str, Any]) -> str:
    if "old" in f and "new" in f:
        return f"{label} {short(f['old'])} → {short(f['new'])}"
    if "new" in f:
        return f"{label} added ({short(f['new'])})"
    return f"{label} removed (was {short(f.get('old'))})"


def _value_in(stat: Any) -> Any:
    """Return a whole stat block's value (a stat that appeared or went), else the block."""
    return stat.get("value", stat) if isinstance(stat, dict) else stat


def _stat_of(f: FieldChange, definition: Mapping[str, Any] | None) -> int | None:
    """Return the stat a field is about: stats.stats.<hash>[.<key>], or investmentStats.<n>[.<key>]
    (the stat at that position: in the field's own block, else in the live definition)."""
    parts = f["path"].split(".")
    if len(parts) in (3, 4) and parts[:2] == ["stats", "stats"] and parts[2].isdigit():
        return int(parts[2])
    if len(parts) not in (2, 3) or parts[0] != "investmentStats" or not parts[1].isdigit():
        return None
    if len(parts) == 2:
        block = f.get("new", f.get("old"))
    else:
        stats = definition.get("investmentStats") if definition else None
        position = int(parts[1])
        ok = isinstance(stats, list) and position < len(stats)
        block = stats[position] if ok and stats is not None else None
    stat = block.get("statTypeHash") if isinstance(block, dict) else None
    return stat if isinstance(stat, int) and not isinstance(stat, bool) else None
