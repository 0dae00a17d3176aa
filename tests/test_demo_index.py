"""The demo origin renumbers definitions' top-level `index` on a release, as Bungie does."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import requests

from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from devtools.demo.data import ITEM_TABLE
from devtools.demo.data import TABLES
from tests.conftest import API_KEY
from tests.conftest import DEMO_ITEMS

TIMEOUT = (5, 30)
LANGUAGES = ("en", "fr", "de")
CLASSES = "DestinyClassDefinition"


def manifest(url: str) -> dict[str, Any]:
    response = requests.get(
        f"{url}/Platform/Destiny2/Manifest/", headers={"X-API-Key": API_KEY}, timeout=TIMEOUT
    )
    assert response.status_code == 200
    return response.json()["Response"]


def table_bytes(url: str, man: dict[str, Any], table: str, lang: str = "en") -> bytes:
    response = requests.get(
        url + man["jsonWorldComponentContentPaths"][lang][table], timeout=TIMEOUT
    )
    assert response.status_code == 200
    return response.content


def entries(data: bytes) -> dict[str, bytes]:
    """Return each definition's exact bytes, keyed by hash."""
    decoded = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    return {key: bytes(raw) for key, raw in decoded.items()}


def definitions(data: bytes) -> dict[str, dict[str, Any]]:
    return msgspec.json.decode(data, type=dict[str, dict[str, Any]])


def without_index(definition: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in definition.items() if key != "index"}


def test_a_release_can_change_nothing_but_the_indexes(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    before = manifest(origin.url)

    result = admin.publish(added=0, removed=0, changed=0)

    after = manifest(origin.url)
    assert (result["added"], result["removed"], result["changed"]) == ([], [], [])
    assert result["items"] == DEMO_ITEMS
    assert after["version"] != before["version"]
    for lang in LANGUAGES:
        assert after["mobileWorldContentPaths"][lang] != before["mobileWorldContentPaths"][lang]
        for table in TABLES:
            old_path = before["jsonWorldComponentContentPaths"][lang][table]
            assert after["jsonWorldComponentContentPaths"][lang][table] != old_path
            old = definitions(table_bytes(origin.url, before, table, lang))
            new = definitions(table_bytes(origin.url, after, table, lang))
            assert list(new) == list(old), (lang, table)
            for key, definition in new.items():
                assert without_index(definition) == without_index(old[key]), (lang, table, key)
            moved = [key for key in new if new[key]["index"] != old[key]["index"]]
            assert len(moved) > len(new) // 2, (lang, table, len(moved), len(new))
            # Still one index per definition, as in Bungie's tables.
            assert len({d["index"] for d in new.values()}) == len(new), (lang, table)


def test_the_languages_of_a_release_share_its_indexes(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    admin.publish()
    man = manifest(origin.url)

    for table in TABLES:
        english = definitions(table_bytes(origin.url, man, table, "en"))
        for lang in LANGUAGES[1:]:
            other = definitions(table_bytes(origin.url, man, table, lang))
            assert {k: d["index"] for k, d in other.items()} == {
                k: d["index"] for k, d in english.items()
            }, (lang, table)


def test_without_renumber_unchanged_definitions_keep_their_bytes(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    admin.publish()  # a renumbered release first: not renumbering keeps *its* indexes
    before = manifest(origin.url)

    result = admin.publish(renumber=False)

    after = manifest(origin.url)
    assert result["added"]
    assert result["removed"]
    assert result["changed"]
    for lang in LANGUAGES:
        old = entries(table_bytes(origin.url, before, ITEM_TABLE, lang))
        new = entries(table_bytes(origin.url, after, ITEM_TABLE, lang))
        changed = {str(h) for h in result["changed"]}
        kept = [key for key in new if key in old and key not in changed]
        assert len(kept) == len(old) - len(result["removed"]) - len(changed) > 0
        for key in kept:
            assert new[key] == old[key], (lang, key)
        for table in TABLES[1:]:
            path = after["jsonWorldComponentContentPaths"][lang][table]
            assert path != before["jsonWorldComponentContentPaths"][lang][table]
            assert table_bytes(origin.url, after, table, lang) == table_bytes(
                origin.url, before, table, lang
            )


def test_only_the_published_tables_are_renumbered(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    before = manifest(origin.url)

    admin.publish(tables=[CLASSES])

    after = manifest(origin.url)
    old = definitions(table_bytes(origin.url, before, CLASSES))
    new = definitions(table_bytes(origin.url, after, CLASSES))
    assert {k: without_index(d) for k, d in new.items()} == {
        k: without_index(d) for k, d in old.items()
    }
    assert all(new[key]["index"] != old[key]["index"] for key in new)
    for table in TABLES:
        if table != CLASSES:
            path = before["jsonWorldComponentContentPaths"]["en"][table]
            assert after["jsonWorldComponentContentPaths"]["en"][table] == path


def test_the_same_publish_renumbers_the_same_way_in_another_process(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    with DemoOriginProcess("--items", str(DEMO_ITEMS), "--seed", "7", "--api-key", API_KEY) as twin:
        admin.publish(added=0, removed=0, changed=0)
        twin.admin.publish(added=0, removed=0, changed=0)
        ours, theirs = manifest(origin.url), manifest(twin.url)

        assert theirs == ours
        for table in TABLES:
            assert table_bytes(twin.url, theirs, table, "fr") == table_bytes(
                origin.url, ours, table, "fr"
            )


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [], {}])
def test_a_renumber_that_is_not_a_boolean_is_refused(
    origin: DemoOriginProcess, admin: DemoAdmin, value: Any
) -> None:
    response = requests.post(
        f"{origin.url}/_demo/publish", json={"renumber": value}, timeout=TIMEOUT
    )

    assert response.status_code == 400
    assert response.json() == {"error": "renumber must be true or false"}
    assert admin.state()["generation"] == 1
