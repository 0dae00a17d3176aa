"""Shared clients, one per app: Redis, Celery, and the manifest store and Bungie client on them."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from typing import NoReturn

import redis
from celery import Celery
from celery import Task
from flask import Flask
from flask import current_app
from redis.sentinel import MasterNotFoundError
from redis.sentinel import Sentinel
from redis.sentinel import SentinelConnectionPool
from redis.sentinel import SentinelConnectionPoolProxy
from redis.sentinel import SentinelManagedConnection
from redis.sentinel import SentinelManagedSSLConnection
from redis.sentinel import SlaveNotFoundError

from app.keys import Keys
from app.manifest.client import BungieClient
from app.manifest.settings import ManifestSettings
from app.manifest.store import ManifestStore
from config import celery_settings
from config import redis_ssl_options
from config import sentinel_addresses


def init_app(app: Flask) -> None:
    """Attach the Redis clients, the engine's settings and Celery to `app`."""
    primary, reads = redis_clients(app.config)
    app.extensions["redis"] = primary
    app.extensions["redis_reads"] = reads
    app.extensions["manifest_settings"] = ManifestSettings.from_mapping(app.config)
    app.extensions["bungie_by_thread"] = threading.local()
    celery_init_app(app)


# Every client waits this long to connect, and for an answer.
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "health_check_interval": 30,
}
# The replica's client waits less: its answers are small (an HSCAN slice of the mirror, 1,000
# entries, is a few MB at most, and the timeout is per socket read), and a replica that hangs
# should cost a request seconds before it runs again on the primary (app.queries.read_view).
READ_CLIENT_OPTIONS: dict[str, Any] = {
    **CLIENT_OPTIONS,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}


def redis_clients(config: Mapping[str, Any]) -> tuple[redis.Redis, redis.Redis]:
    """Return the client of the primary (writes, locks, triggers, tasks) and the client the
    reading pages, the API and the mirror read through: a replica's when one is set, else
    the primary's own.

    With Sentinel, both follow a failover: the primary is whichever server the sentinels name
    now, and reads go to one of its replicas, the same one while it answers (to the primary
    while none does). The replica's client gives up sooner (READ_CLIENT_OPTIONS).
    """
    tls = redis_ssl_options(config["REDIS_URL"], config["REDIS_SSL_CERT_REQS"])
    if config.get("REDIS_SENTINEL_URLS"):
        addresses = sentinel_addresses(config["REDIS_SENTINEL_URLS"])
        sentinels = Sentinel(
            list(addresses.hosts),
            sentinel_kwargs={
                "password": config.get("REDIS_SENTINEL_PASSWORD"),
                "socket_timeout": 5,
                "socket_connect_timeout": 5,
            },
            password=addresses.password,
            db=addresses.db,
            **CLIENT_OPTIONS,
        )
        master = config["REDIS_SENTINEL_MASTER"]
        reads = sentinels.slave_for(
            master, connection_pool_class=StickyReplicaPool, **READ_CLIENT_OPTIONS
        )
        return sentinels.master_for(master), reads
    primary = redis.Redis.from_url(config["REDIS_URL"], **CLIENT_OPTIONS, **tls)
    replica_url = config.get("REDIS_REPLICA_URL")
    if not replica_url:
        return primary, primary
    replica_tls = redis_ssl_options(replica_url, config["REDIS_SSL_CERT_REQS"])
    # Its own connection class: its failures say they are the replica's (ReplicaUnavailable).
    marking = _replica_connection_class(replica_url)
    reads = redis.Redis.from_url(
        replica_url, connection_class=marking, **READ_CLIENT_OPTIONS, **replica_tls
    )
    return primary, reads


class ReplicaUnavailable(redis.RedisError):
    """The read client's server failed a connect, a send or a read (not the primary's client).

    Raised as ReplicaConnectionError or ReplicaTimeoutError, subclasses of the redis-py error
    they replace, so whatever catches or retries a ConnectionError or a TimeoutError still
    does. `error` names the error redis-py raised (ConnectionError, TimeoutError, ...).
    """

    error: str = "ConnectionError"


class ReplicaConnectionError(ReplicaUnavailable, redis.ConnectionError):
    """A redis.ConnectionError of the read client."""


class ReplicaTimeoutError(ReplicaUnavailable, redis.TimeoutError):
    """A redis.TimeoutError of the read client."""


def _raise_marked(exc: redis.ConnectionError | redis.TimeoutError) -> NoReturn:
    """Raise `exc` again as the read client's (ReplicaUnavailable), with the same message."""
    kind = ReplicaTimeoutError if isinstance(exc, redis.TimeoutError) else ReplicaConnectionError
    marked = kind(*exc.args)
    marked.error = type(exc).__name__
    # An OSError redis-py gave as the cause stays the cause: a retry policy may read its errno.
    cause = exc.__cause__
    raise marked from (cause if isinstance(cause, OSError) else exc)


@contextmanager
def _marking_failures() -> Iterator[None]:
    """Raise a ConnectionError or a TimeoutError of the block as ReplicaUnavailable."""
    try:
        yield
    except ReplicaUnavailable:
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        _raise_marked(exc)


class _MarksFailures(redis.connection.AbstractConnection):
    """A connection of the read client: what fails in it is raised as ReplicaUnavailable, at
    the place it fails, so `queries.read_view` tells the replica's failure from the
    primary's (a view may read both) by the exception alone."""

    def connect(self) -> None:
        with _marking_failures():
            super().connect()

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        with _marking_failures():
            super().connect_check_health(*args, **kwargs)

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        with _marking_failures():
            super().send_packed_command(*args, **kwargs)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        with _marking_failures():
            return super().read_response(*args, **kwargs)


class _ReplicaConnection(_MarksFailures, redis.Connection):
    """REDIS_REPLICA_URL's connection (redis://)."""


class _ReplicaSSLConnection(_MarksFailures, redis.SSLConnection):
    """REDIS_REPLICA_URL's connection over TLS (rediss://)."""


class _ReplicaUnixConnection(_MarksFailures, redis.UnixDomainSocketConnection):
    """REDIS_REPLICA_URL's connection on a Unix socket (unix://)."""


def _replica_connection_class(url: str) -> type[_MarksFailures]:
    """Return the read client's connection class for `url`'s scheme, as redis-py picks its own
    (an explicit connection_class wins over the URL's)."""
    scheme = url.partition(":")[0].lower()
    if scheme == "rediss":
        return _ReplicaSSLConnection
    if scheme == "unix":
        return _ReplicaUnixConnection
    return _ReplicaConnection


class StickyReplicaPool(SentinelConnectionPool):
    """Sentinel's replica pool, but each process keeps to one server while it answers.

    redis-py's own pool sends each new connection to the next replica, so two round trips of
    one request could read two replicas at different points of the replication stream (the
    history from one, the change log from the other). Here a new connection goes first to the
    replica the last one connected to; to the others, in turn, only once that one fails; to
    the primary when no replica answers, as before. When the server kept changes, the idle
    connections to the one before are closed, and one given back while on another server
    than the one kept is dropped: the pool's connections end up on one server.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        tls = kwargs.pop("ssl", False)
        kwargs.setdefault("connection_class", _StickySSLConnection if tls else _StickyConnection)
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.proxy = _StickyProxy(
            connection_pool=self,
            is_master=self.is_master,
            check_connection=self.check_connection,
            service_name=service_name,
            sentinel_manager=sentinel_manager,
        )
        self.connection_kwargs["connection_pool"] = self.proxy

    def owns_connection(self, connection: Any) -> bool:
        """Take back only a connection of this process on the server kept (redis-py's
        release() drops and closes any other)."""
        kept = getattr(self.proxy, "kept", None)
        here = (connection.host, connection.port) == kept
        return here and bool(super().owns_connection(connection))


class _StickyProxy(SentinelConnectionPoolProxy):
    """What a pool's connections ask where to connect: the server kept first."""

    def reset(self) -> None:
        super().reset()
        # The server the last connection made connected to: a replica, or the primary while
        # none answered. None after a connect to it failed, until one succeeds.
        self.kept: tuple[str, int] | None = None

    def rotate_slaves(self) -> Iterator[tuple[str, int]]:
        """Yield where to try to connect: the replica kept, the other replicas in turn (from
        where the last turn stopped), then the primary."""
        replicas = list(self.sentinel_manager.discover_slaves(self.service_name))
        kept = self.kept
        if kept is not None and kept in replicas:
            yield kept
        if replicas:
            if self.slave_rr_counter is None:
                self.slave_rr_counter = random.randrange(len(replicas))
            for _ in range(len(replicas)):
                self.slave_rr_counter = (self.slave_rr_counter + 1) % len(replicas)
                if replicas[self.slave_rr_counter] != kept:
                    yield replicas[self.slave_rr_counter]
        try:
            primary = self.get_master_address()
        except MasterNotFoundError:
            pass
        else:
            yield primary
        raise SlaveNotFoundError(f"No replica found for {self.service_name!r}")

    def connected(self, address: tuple[str, int]) -> None:
        """Keep to `address` (a connection to it just succeeded)."""
        self._keep(address)

    def failed(self, address: tuple[str, int]) -> None:
        """Stop keeping to `address` (a connection to it just failed)."""
        if self.kept == address:
            self._keep(None)

    def _keep(self, address: tuple[str, int] | None) -> None:
        if self.kept == address:
            return
        self.kept = address
        # Idle connections to the server before would go on reading it: closed, they connect
        # again where the next one would (as redis-py does for a new primary). Those in use
        # are dropped when given back (StickyReplicaPool.owns_connection).
        pool = self.connection_pool_ref()
        if pool is not None:
            pool.disconnect(inuse_connections=False)


class _StickyConnection(_MarksFailures, SentinelManagedConnection):
    """A connection of a StickyReplicaPool: it tells the pool how each attempt went, and
    moves on to the next server when one does not answer in time, as when it refuses."""

    def connect_to(self, address: tuple[str, int]) -> None:
        proxy = self.connection_pool
        try:
            super().connect_to(address)
        except BaseException:
            if isinstance(proxy, _StickyProxy):
                proxy.failed(address)
            raise
        if isinstance(proxy, _StickyProxy):
            proxy.connected(address)

    def _connect_retry(self) -> None:
        proxy = self.connection_pool
        if self._sock or proxy.is_master:
            super()._connect_retry()
            return
        # redis-py's own loop moves on after a ConnectionError only: a server that does not
        # answer in time (a TimeoutError: unreachable, hung) would end the attempt.
        for address in proxy.rotate_slaves():
            try:
                self.connect_to(address)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            return
        raise SlaveNotFoundError(f"No replica found for {proxy.service_name!r}")


class _StickySSLConnection(_StickyConnection, SentinelManagedSSLConnection):
    """The same over TLS."""


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


def get_read_redis() -> redis.Redis:
    """Return the client reads go through: a replica's (REDIS_REPLICA_URL, Sentinel), else the
    primary's. Never write through it: a replica refuses writes."""
    return current_app.extensions["redis_reads"]


def get_settings() -> ManifestSettings:
    """Return the current app's manifest settings."""
    return current_app.extensions["manifest_settings"]


def get_store() -> ManifestStore:
    """Return a manifest store on the current app's Redis."""
    return ManifestStore(get_redis(), get_settings())


def get_reader() -> ManifestStore:
    """Return a manifest store for reading only, on the replica when there is one: the reading
    pages, the API and the mirror. A commit is one transaction, replicated as one, so a
    replica never holds half a release."""
    return ManifestStore(get_read_redis(), get_settings())


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
