"""The sync lock: one sync at a time across every process, and how a run learns it lost it."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    """The Redis primary may have lost writes this run made: it is not the server process that
    granted the lock (a failover, a restart), or it has been a replica since (its data then
    came from another server). Replication is asynchronous, so the run's staged data may lack
    some. Nothing is committed; the next run builds the release again."""


@dataclass(frozen=True)
class Grantor:
    """The server that granted a lock, as INFO names it: its process (`run_id`, new at every
    start) and its history of writes (`master_replid`) at the time."""

    run_id: str
    replid: str

    @classmethod
    def read(cls, client: redis.Redis) -> Grantor | None:
        """Ask `client`'s server who it is; None where it does not say (no INFO)."""
        info = server_info(client)
        if info is None or not info.get("run_id") or not info.get("master_replid"):
            return None
        return cls(str(info["run_id"]), str(info["master_replid"]))

    def still_holds_writes(self, info: Mapping[str, Any]) -> bool:
        """Say whether the server that answered `info` still holds what was written on this
        grantor: it is the same process, a primary still, and its history goes on from the
        one the lock was granted in.

        A running primary takes a new history id without losing a write when it creates its
        replication backlog (its first replica attaches) or frees it (no replica for
        repl-backlog-ttl); it clears its previous id then. One that was a replica since and is
        a primary again names as its previous id the history it followed last: the granted one
        only if it took no other server's data meanwhile (a REPLICAOF undone before it synced).
        """
        if str(info.get("run_id")) != self.run_id or info.get("role") != "master":
            return False
        if str(info.get("master_replid")) == self.replid:
            return True
        previous_cleared = info.get("second_repl_offset") == -1
        return previous_cleared or str(info.get("master_replid2")) == self.replid


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
        self.server: Grantor | None = None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; return whether this run holds it now."""
        taken = bool(self._lock.acquire(token=self.run_id))
        self._extended_at = time.monotonic()
        if taken:
            # Read after the lock is taken and before anything is written under it: every
            # write of the run goes to this server, or to one that came after it.
            try:
                self.server = Grantor.read(self._redis)
            except BaseException:
                # The caller learns nothing was taken, so it would never release the lock:
                # held on, it would keep every other run out until it expired.
                self.release()
                raise
        return taken

    def check_server(self, client: redis.Redis) -> None:
        """Raise PrimaryChanged unless `client` (a pipeline holding its connection) talks to
        a server that still holds every write made since the lock was granted
        (`Grantor.still_holds_writes`): not another server (a replica a failover promoted),
        not the same one restarted (from a file that may miss the last second), not one that
        was a replica meanwhile. Servers that do not say (no INFO) are not checked.
        """
        if self.server is None:
            return
        info = server_info(client)
        if info is None or not self.server.still_holds_writes(info):
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


def server_info(client: redis.Redis) -> Mapping[str, Any] | None:
    """Return INFO's server and replication sections in one round trip; None where the server
    does not answer INFO (the embedded server of `make dev`)."""
    try:
        return client.info("server", "replication")
    except redis.ResponseError:
        pass
    try:
        # Before Redis 7, INFO takes one section: the default ones hold both.
        return client.info()
    except redis.ResponseError:
        return None
