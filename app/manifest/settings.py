"""The settings the sync engine reads, as one typed value built from the app's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from app.manifest.errors import ManifestConfigError

FORMATS = ("json", "sqlite")


@dataclass(frozen=True)
class ManifestSettings:
    """What to fetch, from where, how carefully, and where to keep it."""

    base_url: str = "http://127.0.0.1:8765"
    api_key: str | None = None
    tables: tuple[str, ...] = ("DestinyInventoryItemDefinition",)
    languages: tuple[str, ...] = ("en",)
    format: str = "json"
    projections: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_projection: tuple[str, ...] = ("hash", "displayProperties.name")
    key_prefix: str = "manifest"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 3
    backoff_seconds: float = 0.5
    max_retry_wait: float = 30.0
    max_bytes: int = 512 * 1024 * 1024
    download_deadline: float = 600.0
    lock_timeout: float = 120.0
    history_length: int = 100
    min_table_ratio: float = 0.5
    track_live: bool = True

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ManifestConfigError(
                f"MANIFEST_FORMAT must be one of {', '.join(FORMATS)}, got {self.format!r}"
            )
        if not self.tables:
            raise ManifestConfigError("MANIFEST_TABLES names no table")
        if not self.languages:
            raise ManifestConfigError("MANIFEST_LANGUAGES names no language")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> ManifestSettings:
        """Build settings from a Flask-style configuration mapping (see config.py)."""
        return cls(
            base_url=config["BUNGIE_BASE_URL"],
            api_key=config.get("BUNGIE_API_KEY"),
            tables=tuple(config["MANIFEST_TABLES"]),
            languages=tuple(config["MANIFEST_LANGUAGES"]),
            format=config["MANIFEST_FORMAT"],
            projections=dict(config["MANIFEST_PROJECTIONS"]),
            default_projection=tuple(config["MANIFEST_DEFAULT_PROJECTION"]),
            key_prefix=config["MANIFEST_KEY_PREFIX"],
            connect_timeout=float(config["BUNGIE_CONNECT_TIMEOUT"]),
            read_timeout=float(config["BUNGIE_READ_TIMEOUT"]),
            retries=int(config["BUNGIE_RETRIES"]),
            backoff_seconds=float(config["BUNGIE_BACKOFF_SECONDS"]),
            max_retry_wait=float(config["BUNGIE_MAX_RETRY_WAIT"]),
            max_bytes=int(config["MANIFEST_MAX_BYTES"]),
            download_deadline=float(config["MANIFEST_DOWNLOAD_DEADLINE"]),
            lock_timeout=float(config["MANIFEST_LOCK_TIMEOUT"]),
            history_length=int(config["MANIFEST_HISTORY_LENGTH"]),
            min_table_ratio=float(config["MANIFEST_MIN_TABLE_RATIO"]),
            track_live=bool(config["MANIFEST_TRACK_LIVE"]),
        )

    def projection(self, table: str) -> tuple[str, ...]:
        """Return the dotted field paths kept for `table`."""
        return tuple(self.projections.get(table, self.default_projection))
