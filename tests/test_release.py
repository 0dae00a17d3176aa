"""Release detection: the id comes from the content paths, and "changed" means different."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.manifest.errors import ManifestConfigError
from app.manifest.release import Release
from app.manifest.release import compare
from app.manifest.settings import ManifestSettings
from config import TestingConfig
from config import settings_dict

SETTINGS = replace(
    ManifestSettings.from_mapping(settings_dict(TestingConfig)),
    tables=("DestinyInventoryItemDefinition", "DestinyClassDefinition"),
    languages=("en", "fr"),
)


def manifest(version: str, guid: str, *, class_guid: str | None = None) -> dict:
    root = "/common/destiny2_content"

    def paths(lang: str) -> dict[str, str]:
        return {
            "DestinyInventoryItemDefinition": f"{root}/json/{lang}/Item-{guid}.json",
            "DestinyClassDefinition": f"{root}/json/{lang}/Class-{class_guid or guid}.json",
            "DestinyStatDefinition": f"{root}/json/{lang}/Stat-{version}.json",
        }

    return {
        "version": version,
        "jsonWorldComponentContentPaths": {lang: paths(lang) for lang in ("en", "fr", "de")},
        "mobileWorldContentPaths": {
            lang: f"/common/destiny2_content/sqlite/{lang}/w_{guid}.content"
            for lang in ("en", "fr", "de")
        },
    }


def test_id_follows_the_paths_not_the_version() -> None:
    a = Release.from_manifest(manifest("100", "aaa"), SETTINGS)
    assert Release.from_manifest(manifest("100", "aaa"), SETTINGS).id == a.id
    # Bungie changes content without bumping the version...
    assert Release.from_manifest(manifest("100", "bbb"), SETTINGS).id != a.id
    # ...and a table this app does not use changing alone is no new release for it.
    assert Release.from_manifest(manifest("101", "aaa"), SETTINGS).id == a.id


def test_change_in_either_direction_is_a_change() -> None:
    new = Release.from_manifest(manifest("200", "bbb"), SETTINGS)
    old = Release.from_manifest(manifest("100", "aaa"), SETTINGS)
    back = compare(new, old)  # a rollback to a lower version
    assert (back.old_version, back.new_version) == ("200", "100")
    assert back.tables == SETTINGS.tables


def test_change_reports_which_tables_and_languages() -> None:
    old = Release.from_manifest(manifest("100", "aaa"), SETTINGS)
    new = Release.from_manifest(manifest("100", "aaa", class_guid="ccc"), SETTINGS)
    change = compare(old, new)
    assert change.old_version == change.new_version == "100"
    assert change.tables == ("DestinyClassDefinition",)
    assert change.languages == ("en", "fr")


def test_first_release_reports_everything() -> None:
    new = Release.from_manifest(manifest("100", "aaa"), SETTINGS)
    change = compare(None, new)
    assert change.old_version is None
    assert change.tables == SETTINGS.tables


def test_sqlite_release_uses_the_database_path() -> None:
    sqlite = replace(SETTINGS, format="sqlite")
    a = Release.from_manifest(manifest("100", "aaa"), sqlite)
    assert a.id != Release.from_manifest(manifest("100", "aaa"), SETTINGS).id
    assert Release.from_manifest(manifest("100", "aaa", class_guid="c"), sqlite).id == a.id
    assert Release.from_manifest(manifest("100", "bbb"), sqlite).id != a.id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"languages": ("en", "xx")}, "no language 'xx'"),
        ({"tables": ("NoSuchDefinition",)}, "no table 'NoSuchDefinition'"),
    ],
)
def test_asking_for_what_the_manifest_lacks_is_a_configuration_error(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestConfigError, match=message):
        Release.from_manifest(manifest("1", "a"), replace(SETTINGS, **change))


def test_record_round_trip() -> None:
    release = Release.from_manifest(manifest("100", "aaa"), SETTINGS)
    assert Release.from_record(release.to_record()) == release
