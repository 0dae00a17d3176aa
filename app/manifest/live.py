"""The live release id, as Redis last told this process: reads skip the round trip for it.

Every read starts from the live pointer (`<prefix>:current`), which moves once a release. A
`LivePointer` keeps it in memory and has Redis say when it may have moved: a connection of its
own turns on server-assisted client-side caching (RESP3 `CLIENT TRACKING ... BCAST PREFIX`),
and Redis then pushes an invalidation on that connection whenever a key under the pointer's
name is written, deleted, expired or flushed, by anyone. Until such a push arrives, the id
read last is right, and checking for a push is a non-blocking look at a socket, not a round
trip. A push, a dropped connection, or `TRUST_SECONDS` without hearing from Redis, and the
next call reads the pointer again on that connection.

The push for a commit is written to this connection's socket when the commit executes, before
the committer hears back; so a request that follows a commit (the committer's next page, a
Slack message's link) sees the new release. On a read replica (REDIS_REPLICA_URL) the push
comes when the replica applies the commit, after the committer heard back: a request right
after a commit may see the release before it for the replication lag, never a mix. Where the
server cannot track keys (Redis before 6, the embedded server of `make dev`), `get` answers
`UNKNOWN` and callers read the pointer with their data, as they would without this.

The connection is made as the client's pool makes its own, so with Sentinel it goes to the
server the sentinels name now: after a failover, to the new primary. A pool whose connections
may go to different servers (Sentinel's replicas: it keeps to one while it answers, then moves
on, and its idle connections to the first stay) gets no pointer: the pointer's server could be
ahead of the one a read lands on, which may still lack the end of the release the pointer
names. Its reads check the pointer with their data, in the same round trip.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

# Trust an id this long at most without hearing from Redis: a bound on staleness should the
# connection die without a sign (a host gone without closing its socket).
TRUST_SECONDS: Final = 5.0
# After the server refused tracking, read the pointer directly for this long before asking
# again; after the connection failed, first for FIRST_RETRY_SECONDS, doubling up to this. A
# failover takes seconds: the pointer is back soon after it, without a dead server being asked
# (and its connect timeout waited out) on every read meanwhile.
RETRY_SECONDS: Final = 30.0
FIRST_RETRY_SECONDS: Final = 1.0


class Unknown:
    """The type of UNKNOWN: the value is not known here, read it from Redis."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = Unknown()


class LivePointer:
    """The value of one key, kept in this process and invalidated by Redis."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        # How to connect, not the client: the pointers are kept per connection pool, weakly,
        # and must not keep the pool (and an idle tracking connection) alive themselves.
        # (The pool's handler of maintenance notices refers to the pool: it stays out.)
        pool = client.connection_pool
        options = {**pool.connection_kwargs, "protocol": 3, "decode_responses": False}
        options.pop("maint_notifications_pool_handler", None)
        # No retries of its own: it holds the pointer's lock meanwhile, and backs off itself.
        options["retry"] = Retry(NoBackoff(), 0)
        self._connection_class = pool.connection_class
        self._options = options
        self.key = key
        self._lock = threading.Lock()
        self._connection: redis.Connection | None = None
        self._pid = os.getpid()
        self._value: str | None = None
        self._trusted_until = 0.0
        self._retry_at = 0.0
        self._failures = 0

    def get(self) -> str | Unknown | None:
        """Return the key's value (decoded), from memory while Redis has not said otherwise."""
        with self._lock:
            now = time.monotonic()
            if self._pid != os.getpid():  # forked (gunicorn workers): the socket is the parent's
                self._connection, self._pid, self._trusted_until = None, os.getpid(), 0.0
            if self._connection is None and now < self._retry_at:
                return UNKNOWN
            try:
                if self._connection is None:
                    self._connection = self._track()
                if self._invalidated() or now >= self._trusted_until:
                    self._value = self._read()
                    self._trusted_until = now + TRUST_SECONDS
            except redis.ResponseError:  # the server cannot track, or refused to
                self.close()
                self._retry_at = now + RETRY_SECONDS
                return UNKNOWN
            except (redis.RedisError, OSError):  # gone: a restart, a failover, a network
                self.close()
                self._retry_at = now + min(RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**self._failures)
                self._failures += 1
                return UNKNOWN
            self._failures = 0
            return self._value

    def close(self) -> None:
        """Drop the connection; the next `get` starts over."""
        connection, self._connection, self._trusted_until = self._connection, None, 0.0
        if connection is not None:
            connection.disconnect()

    def _track(self) -> redis.Connection:
        connection = self._connection_class(**self._options)
        connection.connect()
        try:
            connection.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.key)
            reply = connection.read_response()  # an error reply raises
            if reply != b"OK":
                raise redis.ResponseError(f"CLIENT TRACKING answered {reply!r}")
        except BaseException:
            connection.disconnect()
            raise
        return connection

    def _invalidated(self) -> bool:
        """Take every push waiting on the connection; True if there was any."""
        assert self._connection is not None
        pushed = False
        while self._connection.can_read(timeout=0):
            pushed = True
            try:
                self._connection.read_response(push_request=True, timeout=0)
            except redis.TimeoutError:
                break  # Part of a push so far: the read that follows waits for the rest.
        return pushed

    def _read(self) -> str | None:
        assert self._connection is not None
        self._connection.send_command("GET", self.key)
        value = self._connection.read_response()
        return value.decode() if isinstance(value, bytes) else value


_pointers: weakref.WeakKeyDictionary[redis.ConnectionPool, dict[str, LivePointer]] = (
    weakref.WeakKeyDictionary()
)
_pointers_lock = threading.Lock()


def live_pointer(client: redis.Redis, key: str) -> LivePointer:
    """Return this process's pointer for `key` on `client`'s server (made on first use)."""
    with _pointers_lock:
        by_key = _pointers.setdefault(client.connection_pool, {})
        pointer = by_key.get(key)
        if pointer is None:
            pointer = by_key[key] = LivePointer(client, key)
            # The app that made the pool is gone (tests make many): so is its connection.
            weakref.finalize(client.connection_pool, pointer.close)
        return pointer


def tracked_value(client: redis.Redis, key: str, track: bool) -> str | Unknown | None:
    """Return `key`'s value as Redis vouches for it, or UNKNOWN (tracking off or refused, or a
    client over several servers): then the caller reads it itself, with its data."""
    if not track or spread_over_servers(client.connection_pool):
        return UNKNOWN
    return live_pointer(client, key).get()


def spread_over_servers(pool: redis.ConnectionPool) -> bool:
    """Say whether the pool's connections may go to different servers at once (Sentinel's
    replica pools: a replica that stops answering sends new connections to another)."""
    return isinstance(pool, SentinelConnectionPool) and not pool.is_master
