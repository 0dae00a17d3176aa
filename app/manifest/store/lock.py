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


class PrimaryChanged(LockLost):
    """The Redis primary is not the server that granted this run the lock (a failover, a
    restart): writes the old one took but had not passed on (to its replica, to its disk) may
    be gone, so the run's staged data may lack some. Nothing is committed; the next run builds
    the release again."""


class SyncLock:
    """One sync at a time: a Redis lock whose value names the run holding it.

    It also remembers which server granted it, so that the commit can refuse to build on
    another (`check_server`).
    """

    def __init__(self, client: redis.Redis, key: str, run_id: str, timeout: float) -> None:
        self._redis = client
        self.key = key
        self.run_id = run_id
        self.timeout = timeout
        self._lock = client.lock(key, timeout=timeout, blocking=False, thread_local=False)
        self._extended_at = 0.0
        self.server: str | None = None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; return whether this run holds it now."""
        taken = bool(self._lock.acquire(token=self.run_id))
        self._extended_at = time.monotonic()
        if taken:
            # Read after the lock is taken and before anything is written under it: every
            # write of the run goes to this server, or to one that came after it.
            self.server = server_identity(self._redis)
        return taken

    def check_server(self, client: redis.Redis) -> None:
        """Raise PrimaryChanged unless `client` (a pipeline holding its connection) talks to
        the server process that granted the lock, with the same history of writes.

        Another server (a replica a failover promoted), the same one restarted (from a file
        that may miss the last second), or one that was a replica meanwhile: what the run wrote
        before may be missing there. Servers that do not say (no INFO) are not checked.
        """
        if self.server is not None and server_identity(client) != self.server:
            raise PrimaryChanged(
                "The Redis primary changed while this run worked (a failover or a restart)"
            )

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


def server_identity(client: redis.Redis) -> str | None:
    """Return who `client`'s server is, as far as a run's writes go: the server process (INFO's
    run_id, new at every start) and its history of writes (master_replid, new when a replica
    becomes the primary). None where the server does not say (the embedded server of
    `make dev`)."""
    try:
        run_id = client.info("server").get("run_id")
        history = client.info("replication").get("master_replid")
    except redis.ResponseError:
        return None
    return f"{run_id}/{history}" if run_id and history else None
