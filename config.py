"""Every setting of Manifest Syncer: its one home, its default and its environment override."""

from __future__ import annotations

import os
from typing import Any

DEFAULT_TABLES = (
    "DestinyInventoryItemDefinition",
    "DestinyClassDefinition",
    "DestinyDamageTypeDefinition",
    "DestinyInventoryBucketDefinition",
    "DestinyItemTierTypeDefinition",
)

# Which fields of each definition the cache keeps (dotted paths). Tables not listed here keep
# DEFAULT_PROJECTION; "*" keeps the whole definition.
DEFAULT_PROJECTION = (
    "hash",
    "index",
    "redacted",
    "displayProperties.name",
    "displayProperties.description",
    "displayProperties.icon",
)
PROJECTIONS: dict[str, tuple[str, ...]] = {
    "DestinyInventoryItemDefinition": (
        "hash",
        "redacted",
        "displayProperties.name",
        "displayProperties.description",
        "displayProperties.icon",
        "itemTypeDisplayName",
        "itemTypeAndTierDisplayName",
        "inventory.tierTypeName",
        "inventory.tierType",
        "inventory.bucketTypeHash",
        "itemType",
        "itemSubType",
        "classType",
        "defaultDamageType",
        "defaultDamageTypeHash",
        "equippable",
    ),
    "DestinyClassDefinition": ("hash", "redacted", "classType", "displayProperties.name"),
    "DestinyDamageTypeDefinition": (
        "hash",
        "redacted",
        "enumValue",
        "transparentIconPath",
        "displayProperties.name",
        "displayProperties.icon",
    ),
    "DestinyInventoryBucketDefinition": (
        "hash",
        "redacted",
        "category",
        "location",
        "displayProperties.name",
    ),
    "DestinyItemTierTypeDefinition": ("hash", "redacted", "index", "displayProperties.name"),
}


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the environment variable `name`, or `default` when it is unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = env_str(name)
    if value is None:
        return default
    return tuple(part.strip() for part in value.split(",") if part.strip())


class Config:
    """Defaults shared by every environment; each can be overridden from the environment."""

    SECRET_KEY = env_str("SECRET_KEY")
    REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

    # Bungie. The demo origin (`manage.py demo-origin`) answers on this default address.
    BUNGIE_BASE_URL = env_str("BUNGIE_BASE_URL", "http://127.0.0.1:8765")
    BUNGIE_API_KEY = env_str("BUNGIE_API_KEY")
    BUNGIE_CONNECT_TIMEOUT = env_float("BUNGIE_CONNECT_TIMEOUT", 5.0)
    BUNGIE_READ_TIMEOUT = env_float("BUNGIE_READ_TIMEOUT", 30.0)
    BUNGIE_RETRIES = env_int("BUNGIE_RETRIES", 3)
    BUNGIE_BACKOFF_SECONDS = env_float("BUNGIE_BACKOFF_SECONDS", 0.5)
    # A Retry-After longer than this is not slept through: the sync reports "unavailable".
    BUNGIE_MAX_RETRY_WAIT = env_float("BUNGIE_MAX_RETRY_WAIT", 30.0)

    # The manifest cache.
    MANIFEST_KEY_PREFIX = env_str("MANIFEST_KEY_PREFIX", "manifest")
    MANIFEST_TABLES = env_list("MANIFEST_TABLES", DEFAULT_TABLES)
    MANIFEST_LANGUAGES = env_list("MANIFEST_LANGUAGES", ("en",))
    MANIFEST_FORMAT = env_str("MANIFEST_FORMAT", "json")
    MANIFEST_PROJECTIONS = PROJECTIONS
    MANIFEST_DEFAULT_PROJECTION = DEFAULT_PROJECTION
    MANIFEST_MAX_BYTES = env_int("MANIFEST_MAX_BYTES", 512 * 1024 * 1024)
    MANIFEST_DOWNLOAD_DEADLINE = env_float("MANIFEST_DOWNLOAD_DEADLINE", 600.0)
    MANIFEST_LOCK_TIMEOUT = env_float("MANIFEST_LOCK_TIMEOUT", 120.0)
    MANIFEST_HISTORY_LENGTH = env_int("MANIFEST_HISTORY_LENGTH", 100)
    # A table that comes back with fewer entries than this share of the live one fails the sync.
    MANIFEST_MIN_TABLE_RATIO = env_float("MANIFEST_MIN_TABLE_RATIO", 0.5)
    MANIFEST_POLL_SECONDS = env_int("MANIFEST_POLL_SECONDS", 300)


class DevelopmentConfig(Config):
    """`make dev`: embedded defaults, nothing to configure."""

    DEBUG = True
    SECRET_KEY = Config.SECRET_KEY or "dev-only-secret-key"
    BUNGIE_API_KEY = Config.BUNGIE_API_KEY or "demo-key"


class TestingConfig(Config):
    """The test suite: a real Redis, the demo origin, fast retries."""

    TESTING = True
    SECRET_KEY = "test-secret-key"  # noqa: S105 - only ever used by the test suite
    REDIS_URL = env_str("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    BUNGIE_API_KEY = "test-api-key"
    BUNGIE_BACKOFF_SECONDS = 0.01
    BUNGIE_MAX_RETRY_WAIT = 1.0
    MANIFEST_DOWNLOAD_DEADLINE = 30.0


class ProductionConfig(Config):
    """Production: secrets and addresses come from the environment only."""

    REDIS_URL = env_str("REDIS_URL")
    BUNGIE_BASE_URL = env_str("BUNGIE_BASE_URL", "https://www.bungie.net")


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def get_config(name: str | None = None) -> type[Config]:
    """Return the configuration class for `name`, else for FLASK_CONFIG (default development)."""
    name = name or env_str("FLASK_CONFIG", "development")
    try:
        return CONFIGS[name]
    except KeyError:
        known = ", ".join(CONFIGS)
        raise ValueError(f"Unknown FLASK_CONFIG {name!r}: choose one of {known}") from None


def settings_dict(config: type[Config]) -> dict[str, Any]:
    """Return the upper-case settings of a configuration class as a plain mapping."""
    return {key: getattr(config, key) for key in dir(config) if key.isupper()}
