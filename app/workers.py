"""Whether a Celery worker is listening: pinged with a short timeout, remembered briefly."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
import redis

from app.extensions import get_celery
from app.extensions import get_keys
from app.extensions import get_redis

PING_TIMEOUT = 0.5
REMEMBER_SECONDS = 30


def worker_status(*, refresh: bool = False) -> dict[str, Any]:
    """Return {"at", "workers": [names]} of the latest ping, pinging again when it is stale."""
    key = get_keys().workers
    client = get_redis()
    try:
        cached = client.get(key)
    except redis.RedisError:
        cached = None
    if cached and not refresh:
        return msgspec.json.decode(cached)
    try:
        replies = get_celery().control.ping(timeout=PING_TIMEOUT) or []
    except Exception:  # noqa: BLE001 - a broker that is down means "no worker answered"
        replies = []
    status = {"at": time.time(), "workers": sorted(name for reply in replies for name in reply)}
    with contextlib.suppress(redis.RedisError):
        client.set(key, msgspec.json.encode(status), ex=REMEMBER_SECONDS)
    return status
