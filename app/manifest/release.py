"""What a release is: the content paths this app uses, an id derived from them, and what changed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.manifest import errors
from app.manifest.settings import ManifestSettings

# In the SQLite format one file per language holds every table.
SQLITE_FILE = "*"


@dataclass(frozen=True)
class Release:
    """One manifest release as this app sees it: the files of the configured tables and languages.

    The id is a digest of those paths: Bungie puts a GUID or an md5 in every content path and
    changes content without bumping `version`, so the paths, not the version, say what changed.
    """

    id: str
    version: str
    format: str
    languages: tuple[str, ...]
    tables: tuple[str, ...]
    paths: Mapping[str, Mapping[str, str]]

    @classmethod
    def from_manifest(cls, manifest: Any, settings: ManifestSettings) -> Release:
        """Pick the configured languages' and tables' paths out of Bungie's manifest response."""
        if not isinstance(manifest, dict):
            raise errors.BungieError("Bungie's manifest response is not an object")
        version = str(manifest.get("version") or "")
        if settings.format == "sqlite":
            offered = _mapping(manifest, "mobileWorldContentPaths")
            paths = {
                lang: {SQLITE_FILE: _pick(offered, lang, "language")} for lang in settings.languages
            }
        else:
            offered = _mapping(manifest, "jsonWorldComponentContentPaths")
            paths = {}
            for lang in settings.languages:
                tables = _pick(offered, lang, "language")
                if not isinstance(tables, dict):
                    raise errors.BungieError(f"Bungie's table list for {lang!r} is not an object")
                paths[lang] = {table: _pick(tables, table, "table") for table in settings.tables}
        return cls(
            id=release_id(settings.format, paths),
            version=version,
            format=settings.format,
            languages=tuple(settings.languages),
            tables=tuple(settings.tables),
            paths=paths,
        )

    def to_record(self) -> dict[str, Any]:
        """Return the release as plain data (for Redis and JSON)."""
        return {
            "id": self.id,
            "version": self.version,
            "format": self.format,
            "languages": list(self.languages),
            "tables": list(self.tables),
            "paths": {lang: dict(tables) for lang, tables in self.paths.items()},
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Release:
        """Rebuild a release from `to_record()` data."""
        return cls(
            id=record["id"],
            version=record["version"],
            format=record["format"],
            languages=tuple(record["languages"]),
            tables=tuple(record["tables"]),
            paths=record["paths"],
        )


@dataclass(frozen=True)
class ReleaseChange:
    """Why a release differs from the live one: its version, languages and tables."""

    old_version: str | None
    new_version: str
    languages: tuple[str, ...]
    tables: tuple[str, ...]

    def to_record(self) -> dict[str, Any]:
        """Return plain data for JSON (records, history, the API)."""
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "languages": list(self.languages),
            "tables": list(self.tables),
        }


def release_id(fmt: str, paths: Mapping[str, Mapping[str, str]]) -> str:
    """Return a short, stable digest of a release's content paths."""
    lines = [fmt] + [
        f"{lang}\t{table}\t{path}"
        for lang in sorted(paths)
        for table, path in sorted(paths[lang].items())
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def compare(live: Release | None, new: Release) -> ReleaseChange:
    """Say how `new` differs from `live`: "different" in any direction, never "greater"."""
    if live is None:
        return ReleaseChange(None, new.version, new.languages, new.tables)
    old_paths = live.paths
    languages = tuple(lang for lang in new.languages if old_paths.get(lang) != new.paths[lang])
    if new.format != "json" or live.format != new.format:
        # One SQLite file per language holds every table: a new file may change any of them.
        tables = new.tables if languages or live.format != new.format else ()
    else:
        tables = tuple(
            table
            for table in new.tables
            if any(
                old_paths.get(lang, {}).get(table) != new.paths[lang][table]
                for lang in new.languages
            )
        )
    return ReleaseChange(live.version, new.version, languages, tables)


def _mapping(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    value = manifest.get(key)
    if not isinstance(value, dict):
        raise errors.BungieError(f"Bungie's manifest has no {key}")
    return value


def _pick(offered: dict[str, Any], name: str, what: str) -> Any:
    try:
        return offered[name]
    except KeyError:
        known = ", ".join(sorted(offered)[:12])
        raise errors.ManifestConfigError(
            f"Bungie's manifest has no {what} {name!r} (it offers: {known})"
        ) from None
