"""The settings the sync engine reads, as one typed value built from the app's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.manifest.errors import ManifestConfigError

FORMATS = ("json", "sqlite")


@dataclass(frozen=True)
class ManifestSettings:
    """What to fetch, from where, how carefully, and where to keep it.

    No field has a default: config.py holds them all, and `from_mapping` reads them from there.
    """

    base_url: str
    api_key: str | None
    tables: tuple[str, ...]
    languages: tuple[str, ...]
    format: str
    key_prefix: str
    connect_timeout: float
    read_timeout: float
    retries: int
    backoff_seconds: float
    max_retry_wait: float
    max_bytes: int
    download_deadline: float
    lock_timeout: float
    history_length: int
    min_table_ratio: float
    diff_ignore: tuple[str, ...]
    changes_max_bytes: int
    track_live: bool

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
            api_key=config["BUNGIE_API_KEY"],
            tables=tuple(config["MANIFEST_TABLES"]),
            languages=tuple(config["MANIFEST_LANGUAGES"]),
            format=config["MANIFEST_FORMAT"],
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
            diff_ignore=tuple(config["MANIFEST_DIFF_IGNORE"]),
            changes_max_bytes=int(config["MANIFEST_CHANGES_MAX_BYTES"]),
            track_live=bool(config["MANIFEST_TRACK_LIVE"]),
        )
