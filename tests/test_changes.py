"""What changed in a definition, field by field: paths, kinds, noise, the log's cap, inverses."""

from __future__ import annotations

import json

from app.manifest import changes


def weapon(**overrides: object) -> dict[str, object]:
    definition: dict[str, object] = {
        "displayProperties": {"name": "Ace of Spades", "description": "A hand cannon."},
        "stats": {"stats": {"4284893193": {"statHash": 4284893193, "value": 30}}},
        "investmentStats": [{"statTypeHash": 4043523819, "value": 12}],
        "hash": 347366834,
        "index": 10,
        "redacted": False,
    }
    definition.update(overrides)
    return definition


def compare(old: dict[str, object], new: dict[str, object]) -> changes.Change | None:
    return changes.compare(
        "DestinyInventoryItemDefinition",
        347366834,
        json.dumps(old).encode(),
        json.dumps(new).encode(),
        ("index",),
    )


def test_a_stat_change_is_one_field_with_its_path_and_values() -> None:
    new = weapon(stats={"stats": {"4284893193": {"statHash": 4284893193, "value": 33}}})
    change = compare(weapon(), new)
    assert change == {
        "table": "DestinyInventoryItemDefinition",
        "hash": 347366834,
        "kind": "changed",
        "name": "Ace of Spades",
        "fields": [{"path": "stats.stats.4284893193.value", "old": 30, "new": 33}],
    }


def test_list_positions_and_fields_that_come_and_go() -> None:
    new = weapon(investmentStats=[{"statTypeHash": 4043523819, "value": 12}, {"value": 1}])
    new["flavorText"] = "Fate"
    del new["redacted"]
    change = compare(weapon(), new)
    assert change is not None
    assert change["fields"] == [
        {"path": "investmentStats.1", "new": {"value": 1}},
        {"path": "redacted", "old": False},
        {"path": "flavorText", "new": "Fate"},
    ]


def test_noise_alone_is_no_change() -> None:
    assert compare(weapon(), weapon(index=99_999)) is None
    assert compare(weapon(), weapon()) is None


def test_a_value_of_another_type_is_a_change() -> None:
    change = compare(weapon(), weapon(redacted=0))
    assert change is not None
    assert change["fields"] == [{"path": "redacted", "old": False, "new": 0}]


def test_redaction_kinds() -> None:
    hidden = weapon(redacted=True, displayProperties={"name": "", "description": ""})
    revealed = compare(hidden, weapon())
    redacted = compare(weapon(), hidden)
    assert revealed is not None
    assert revealed["kind"] == changes.UNCLASSIFIED
    assert revealed["name"] == "Ace of Spades"
    assert redacted is not None
    assert redacted["kind"] == changes.RECLASSIFIED
    # A redacted definition has no name: the one it had is what people know it by.
    assert redacted["name"] == "Ace of Spades"


def test_the_inverse_undoes_a_change() -> None:
    new = weapon(stats={"stats": {"4284893193": {"statHash": 4284893193, "value": 33}}})
    new["flavorText"] = "Fate"
    change = compare(weapon(), new)
    assert change is not None
    undone = changes.inverse(change)
    assert undone["kind"] == changes.CHANGED
    assert undone["fields"] == [
        {"path": "stats.stats.4284893193.value", "old": 33, "new": 30},
        {"path": "flavorText", "old": "Fate"},
    ]
    assert changes.inverse(changes.record("T", 1, changes.ADDED, "A", []))["kind"] == "removed"
    assert changes.inverse(undone) == change


def test_records_read_back_as_stored_short_and_long() -> None:
    short = changes.record("DestinyClassDefinition", 1, changes.ADDED, "Titan", [])
    long = changes.record(
        "DestinyInventoryItemDefinition",
        2,
        changes.CHANGED,
        "Ace of Spades",
        [{"path": f"perks.{n}.perkHash", "old": n, "new": n + 1} for n in range(40)],
    )
    for change in (short, long):
        stored = changes.encode_record(change)
        field = f"{change['table']}:{change['hash']}".encode()
        assert changes.decode_record(field, stored) == change
    assert not changes.encode_record(long).startswith(b"{")  # compressed
    assert changes.encode_record(short).startswith(b"{")


def test_the_log_keeps_records_up_to_its_size_and_counts_the_rest() -> None:
    log = changes.ChangeLog(("index",), max_bytes=1000)
    for number in range(100):
        log.add(changes.record("DestinyClassDefinition", number, changes.ADDED, "Titan", []))
    pending = log.take()
    assert log.kept == len(pending) // 2
    assert 0 < log.kept < 100
    assert log.kept + log.cut == 100
    assert sum(map(len, pending)) <= 1000
    assert log.summary() == {"kept": log.kept, "cut": log.cut, "bytes": log.size}
    assert log.take() == []
