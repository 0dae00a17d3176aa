"""Shared clients, one per app: Redis, Celery, and the manifest store and Bungie client on them."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import redis
from celery import Celery
from celery import Task
from flask import Flask
from flask import current_app

from app.keys import Keys
from app.manifest.client import BungieClient
from app.manifest.settings import ManifestSettings
from app.manifest.store import ManifestStore
from config import celery_settings
from config import redis_ssl_options


def init_app(app: Flask) -> None:
    """Attach the Redis client, the engine's settings and Celery to `app`."""
    url = app.config["REDIS_URL"]
    tls = redis_ssl_options(url, app.config["REDIS_SSL_CERT_REQS"])
    app.extensions["redis"] = redis.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30, **tls
    )
    app.extensions["manifest_settings"] = ManifestSettings.from_mapping(app.config)
    app.extensions["bungie_by_thread"] = threading.local()
    celery_init_app(app)


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app for `app`: every task runs inside an application context."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_settings(app.config))
    celery_app.conf.task_annotations = {
        "manifest.sync": {
            "soft_time_limit": app.config["SYNC_SOFT_TIME_LIMIT"],
            "time_limit": app.config["SYNC_TIME_LIMIT"],
        }
    }
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def get_redis() -> redis.Redis:
    """Return the current app's Redis client."""
    return current_app.extensions["redis"]


def get_celery() -> Celery:
    """Return the current app's Celery app."""
    return current_app.extensions["celery"]


def get_settings() -> ManifestSettings:
    """Return the current app's manifest settings."""
    return current_app.extensions["manifest_settings"]


def get_store() -> ManifestStore:
    """Return a manifest store on the current app's Redis."""
    return ManifestStore(get_redis(), get_settings())


def get_keys() -> Keys:
    """Return the names of the current app's Redis keys."""
    return get_store().keys


def get_bungie() -> BungieClient:
    """Return a new Bungie client configured for the current app (close it when done)."""
    return BungieClient.from_settings(get_settings())


def get_shared_bungie() -> BungieClient:
    """Return this thread's Bungie client for the player pages, kept from request to request.

    It asks once and never sleeps: a request must not wait out Bungie's Retry-After, and each
    call is one unit of the pages' budget. An HTTP 429 or a throttle code goes back to the
    pages, which pause every player lookup for the time Bungie asked; an outage answers 503.
    The syncs' retries (BUNGIE_RETRIES, BUNGIE_MAX_RETRY_WAIT) are theirs alone, and it waits
    PLAYER_READ_TIMEOUT for an answer, inside the web server's own timeout. It keeps its
    connections alive between requests, and a page that needs no call costs nothing to set one
    up. One per thread: a requests Session is not to be shared between threads.
    """
    local = current_app.extensions["bungie_by_thread"]
    client = getattr(local, "client", None)
    if client is None:
        once = replace(
            get_settings(),
            retries=0,
            max_retry_wait=0.0,
            read_timeout=current_app.config["PLAYER_READ_TIMEOUT"],
        )
        client = local.client = BungieClient.from_settings(once)
    return client
