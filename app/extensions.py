"""Shared clients: the Redis connection, the manifest store and the Bungie client, one per app."""

from __future__ import annotations

import redis
from flask import Flask
from flask import current_app

from app.manifest.client import BungieClient
from app.manifest.settings import ManifestSettings
from app.manifest.store import ManifestStore


def init_app(app: Flask) -> None:
    """Attach the Redis client to `app`; the store and Bungie client are built from it."""
    app.extensions["redis"] = redis.Redis.from_url(app.config["REDIS_URL"])
    app.extensions["manifest_settings"] = ManifestSettings.from_mapping(app.config)


def get_redis() -> redis.Redis:
    """Return the current app's Redis client."""
    return current_app.extensions["redis"]


def get_settings() -> ManifestSettings:
    """Return the current app's manifest settings."""
    return current_app.extensions["manifest_settings"]


def get_store() -> ManifestStore:
    """Return a manifest store on the current app's Redis."""
    return ManifestStore(get_redis(), get_settings())


def get_bungie() -> BungieClient:
    """Return a Bungie client configured for the current app."""
    return BungieClient.from_settings(get_settings())
