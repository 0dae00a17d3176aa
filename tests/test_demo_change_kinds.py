"""The demo origin's kinds of change: a publish renames, restats, reveals and redacts known items,
says exactly which, and changes nothing else but `index`."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import requests

from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginError
from devtools.demo.control import DemoOriginProcess
from devtools.demo.data import ITEM_TABLE
from tests.conftest import API_KEY
from tests.conftest import DEMO_ITEMS
from tests.test_demo_origin import OPENAPI
from tests.test_demo_origin import schema_validator

TIMEOUT = (5, 30)
# Leaves that differ, by dotted path (object keys and list positions, as the app reports them).
Differences = dict[str, tuple[Any, Any]]
ABSENT = object()
# Only the kinds asked for: no item is added, removed or changed besides.
NOTHING_ELSE = {"added": 0, "removed": 0, "changed": 0}
EVERY_KIND = {
    "added": 2,
    "removed": 2,
    "changed": 3,
    "renamed": 3,
    "restatted": 4,
    "revealed": 1,
    "redacted": 2,
}
HIDDEN_FIELDS = {"redacted", "displayProperties.name", "displayProperties.description"}


def item_table(url: str, state: dict[str, Any], lang: str = "en") -> dict[int, dict[str, Any]]:
    """Return the item table that `state` (an admin answer) advertises, parsed, by hash."""
    path = state["paths"]["jsonWorldComponentContentPaths"][lang][ITEM_TABLE]
    response = requests.get(url + path, timeout=TIMEOUT)
    assert response.status_code == 200
    return msgspec.json.decode(response.content, type=dict[int, dict[str, Any]])


def differences(old: Any, new: Any, path: str = "") -> Differences:
    """Return every leaf that differs between two parsed definitions, `index` left out."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: Differences = {}
        for key in [*old, *(k for k in new if k not in old)]:
            if key == "index" and not path:
                continue
            child = f"{path}.{key}" if path else key
            found |= differences(old.get(key, ABSENT), new.get(key, ABSENT), child)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = {}
        for position, (was, now) in enumerate(zip(old, new, strict=True)):
            found |= differences(was, now, f"{path}.{position}")
        return found
    return {} if old == new and type(old) is type(new) else {path: (old, new)}


def changed_items(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]
) -> dict[int, Differences]:
    """Return, for each item in both tables that differs in more than its index, what differs."""
    found = {h: differences(before[h], after[h]) for h in before.keys() & after.keys()}
    return {h: diff for h, diff in found.items() if diff}


@pytest.fixture
def before(origin: DemoOriginProcess, admin: DemoAdmin) -> dict[int, dict[str, Any]]:
    """The first release's item table."""
    return item_table(origin.url, admin.state())


def publish(
    origin: DemoOriginProcess, admin: DemoAdmin, **options: Any
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """Publish with `options`; return the admin's answer and the new item table."""
    published = admin.publish(**options)
    return published, item_table(origin.url, published)


def test_the_first_release_has_a_few_redacted_items_with_blank_texts(
    before: dict[int, dict[str, Any]],
) -> None:
    hidden = [item for item in before.values() if item["redacted"]]

    assert 0 < len(hidden) <= DEMO_ITEMS // 100
    for item in hidden:
        assert item["displayProperties"]["name"] == item["displayProperties"]["description"] == ""
    assert all(
        item["displayProperties"]["name"] for item in before.values() if not item["redacted"]
    )


def test_renamed_items_change_their_name_and_nothing_else(
    origin: DemoOriginProcess, admin: DemoAdmin, before: dict[int, dict[str, Any]]
) -> None:
    published, after = publish(origin, admin, **NOTHING_ELSE, renamed=3)

    renamed = published["renamed"]
    assert len(renamed) == 3
    assert [r["hash"] for r in renamed] == sorted(r["hash"] for r in renamed)
    assert changed_items(before, after) == {
        r["hash"]: {"displayProperties.name": (r["old"], r["new"])} for r in renamed
    }
    for r in renamed:
        assert r["old"] == before[r["hash"]]["displayProperties"]["name"] != r["new"]
        assert r["new"]
    assert published["added"] == published["removed"] == published["changed"] == []
    assert published["restatted"] == published["revealed"] == published["redacted"] == []


def test_restatted_items_change_one_stat_value_and_nothing_else(
    origin: DemoOriginProcess, admin: DemoAdmin, before: dict[int, dict[str, Any]]
) -> None:
    published, after = publish(origin, admin, **NOTHING_ELSE, restatted=6)

    restatted = published["restatted"]
    assert len(restatted) == 6
    assert changed_items(before, after) == {
        r["hash"]: {r["path"]: (r["old"], r["new"])} for r in restatted
    }
    for r in restatted:
        assert before[r["hash"]]["itemType"] in (2, 3)  # armor or a weapon
        assert r["path"].startswith(("stats.stats.", "investmentStats."))
        assert r["path"].endswith(".value")
        assert isinstance(r["new"], int)
        assert r["new"] != r["old"]
        if r["path"].startswith("stats.stats."):
            stat = after[r["hash"]]["stats"]["stats"][r["path"].split(".")[2]]
            assert stat["minimum"] <= r["new"] <= stat["maximum"]


def test_revealed_items_show_their_name_and_description(
    origin: DemoOriginProcess, admin: DemoAdmin, before: dict[int, dict[str, Any]]
) -> None:
    hidden = {h for h, item in before.items() if item["redacted"]}

    published, after = publish(origin, admin, **NOTHING_ELSE, revealed=1)

    (revealed,) = published["revealed"]
    assert revealed in hidden
    diff = changed_items(before, after)
    assert list(diff) == [revealed]
    assert set(diff[revealed]) == HIDDEN_FIELDS
    assert diff[revealed]["redacted"] == (True, False)
    shown = after[revealed]["displayProperties"]
    assert shown["name"]
    assert shown["description"]
    french = item_table(origin.url, published, "fr")[revealed]["displayProperties"]
    assert french["name"] == f"[fr] {shown['name']}"


def test_redacted_items_hide_their_name_and_description(
    origin: DemoOriginProcess, admin: DemoAdmin, before: dict[int, dict[str, Any]]
) -> None:
    published, after = publish(origin, admin, **NOTHING_ELSE, redacted=2)

    redacted = published["redacted"]
    assert len(redacted) == 2
    diff = changed_items(before, after)
    assert sorted(diff) == redacted
    for item_hash in redacted:
        was = before[item_hash]["displayProperties"]
        assert diff[item_hash] == {
            "redacted": (False, True),
            "displayProperties.name": (was["name"], ""),
            "displayProperties.description": (was["description"], ""),
        }
    french = item_table(origin.url, published, "fr")
    assert all(french[h]["displayProperties"]["name"] == "" for h in redacted)


def test_every_kind_at_once_changes_exactly_what_the_report_says(
    origin: DemoOriginProcess,
    admin: DemoAdmin,
    before: dict[int, dict[str, Any]],
    openapi: dict[str, Any],
) -> None:
    published, after = publish(origin, admin, **EVERY_KIND)

    kinds = {
        kind: [r["hash"] if isinstance(r, dict) else r for r in published[kind]]
        for kind in EVERY_KIND
    }
    assert {kind: len(hashes) for kind, hashes in kinds.items()} == EVERY_KIND
    every = [h for hashes in kinds.values() for h in hashes]
    assert len(every) == len(set(every))  # one kind of change per item
    assert set(after) == (set(before) - set(kinds["removed"])) | set(kinds["added"])
    diff = changed_items(before, after)
    assert set(diff) == {
        h
        for kind in ("changed", "renamed", "restatted", "revealed", "redacted")
        for h in kinds[kind]
    }
    for r in published["renamed"]:
        assert diff[r["hash"]] == {"displayProperties.name": (r["old"], r["new"])}
    for r in published["restatted"]:
        assert diff[r["hash"]] == {r["path"]: (r["old"], r["new"])}
    for item_hash in kinds["revealed"] + kinds["redacted"]:
        assert set(diff[item_hash]) == HIDDEN_FIELDS
    # Every index moved, as in Bungie's releases.
    assert all(before[h]["index"] != after[h]["index"] for h in before.keys() & after.keys())
    validator = schema_validator(
        openapi, "/components/schemas/Destiny.Definitions.DestinyInventoryItemDefinition"
    )
    for item_hash in every:
        if item_hash in after:
            validator.validate(after[item_hash])


def test_kinds_accumulate_over_releases(
    origin: DemoOriginProcess, admin: DemoAdmin, before: dict[int, dict[str, Any]]
) -> None:
    hidden = sum(item["redacted"] for item in before.values())
    first, middle = publish(origin, admin, **NOTHING_ELSE, redacted=3, restatted=1)
    (restat,) = first["restatted"]

    second, after = publish(origin, admin, **NOTHING_ELSE, revealed=hidden + 3)

    # All redacted items can be revealed, those just redacted too; then none is left.
    assert set(first["redacted"]) <= set(second["revealed"])
    assert changed_items(middle, after).keys() == set(second["revealed"])
    assert not any(item["redacted"] for item in after.values())
    # A stat set by a release stays set in the next one.
    value = after[restat["hash"]]
    for part in restat["path"].split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    assert value == restat["new"]
    with pytest.raises(DemoOriginError, match="cannot reveal 1 item: none of those kept is"):
        admin.publish(**NOTHING_ELSE, revealed=1)


def test_same_seed_and_options_give_the_same_report_and_bytes(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    with DemoOriginProcess("--items", str(DEMO_ITEMS), "--seed", "7", "--api-key", API_KEY) as twin:
        published = admin.publish(**EVERY_KIND)
        twin_published = twin.admin.publish(**EVERY_KIND)
        path = published["paths"]["jsonWorldComponentContentPaths"]["en"][ITEM_TABLE]
        ours = requests.get(origin.url + path, timeout=TIMEOUT).content
        theirs = requests.get(twin.url + path, timeout=TIMEOUT).content

    for kind in ("paths", *EVERY_KIND):
        assert twin_published[kind] == published[kind]
    assert ours == theirs


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"renamed": -1}, "renamed must not be negative"),
        ({"restatted": "2"}, "restatted must be a whole number"),
        ({"revealed": 1.5}, "revealed must be a whole number"),
        ({"redacted": True}, "redacted must be a whole number"),
        ({"renamed": None}, "renamed must be a whole number"),
        ({"restatted": DEMO_ITEMS}, f"cannot restat {DEMO_ITEMS} items"),
        ({"revealed": DEMO_ITEMS}, f"cannot reveal {DEMO_ITEMS} items"),
        ({"renamed": DEMO_ITEMS // 2, "redacted": DEMO_ITEMS // 2}, "cannot change, rename"),
        ({"tables": ["DestinyClassDefinition"], "renamed": 1}, "which is not among tables"),
        ({"unredacted": 1}, "unknown publish options: unredacted"),
    ],
)
def test_bad_values_are_refused_with_a_400_saying_why(
    origin: DemoOriginProcess, admin: DemoAdmin, options: dict[str, Any], message: str
) -> None:
    response = requests.post(f"{origin.url}/_demo/publish", json=options, timeout=TIMEOUT)

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert admin.state()["generation"] == 1


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    if not OPENAPI.exists():
        pytest.skip(f"Bungie's OpenAPI description is not at {OPENAPI} (see DESIGN.md)")
    openapi: dict[str, Any] = msgspec.json.decode(OPENAPI.read_bytes())
    return openapi
