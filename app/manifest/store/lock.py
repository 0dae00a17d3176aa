"""The sync lock: one sync at a time across every process, and how a run learns it lost it."""

from __future__ import annotations

import logging
import time

import redis
from redis.exceptions import LockError

from app.manifest.errors import ManifestError
from app.manifest.replies import optional_text

log = logging.getLogger(__name__)


class LockLost(ManifestError):
    """The sync lock expired or was taken over while this run worked; its work is dropped."""

    transient = True
    retry_after = 5.0


class SyncLock:
    """One sync at a time: a Redis lock whose value names the run holding it."""

    def __init__(self, client: redis.Redis, key: str, run_id: str, timeout: float) -> None:
        self._redis = client
        self.key = key
        self.run_id = run_id
        self.timeout = timeout
        self._lock = client.lock(key, timeout=timeout, blocking=False, thread_local=False)
        self._extended_at = 0.0

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; return whether this run holds it now."""
        taken = bool(self._lock.acquire(token=self.run_id))
        self._extended_at = time.monotonic()
        return taken

    def holder(self) -> str | None:
        """Return the id of the run holding the lock, if any."""
        value = self._redis.get(self.key)
        return optional_text(value) if value else None

    def keep_alive(self) -> None:
        """Push the expiry back while work goes on; raise LockLost if another run took over."""
        if time.monotonic() - self._extended_at < self.timeout / 3:
            return
        try:
            self._lock.reacquire()
        except LockError:
            raise LockLost("The sync lock expired while this run was working") from None
        self._extended_at = time.monotonic()

    def release(self) -> None:
        """Let go of the lock if this run still holds it.

        Never raises: a lock that cannot be released (Redis blinked) expires by itself, and
        the run it guarded is over either way.
        """
        try:
            self._lock.release()
        except LockError:
            pass
        except redis.RedisError as exc:
            log.warning(
                "Could not release the sync lock (%s); it expires in %.0fs", exc, self.timeout
            )
