"""The live pointer: kept in the process, right as soon as anyone moves it in Redis."""

from __future__ import annotations

import gc
import time
import uuid
import weakref
from collections.abc import Iterator

import pytest
import redis

from app.manifest import live
from app.manifest.live import UNKNOWN
from app.manifest.live import LivePointer
from app.manifest.live import live_pointer
from devtools import devstack


@pytest.fixture
def key(redis_client: redis.Redis) -> Iterator[str]:
    name = f"test:{uuid.uuid4().hex[:12]}:current"
    yield name
    redis_client.delete(name)


def test_a_kept_value_is_right_as_soon_as_anyone_moves_it(
    redis_client: redis.Redis, redis_url: str, key: str
) -> None:
    redis_client.set(key, "first")
    pointer = LivePointer(redis_client, key)
    assert [pointer.get() for _ in range(3)] == ["first"] * 3

    # Another connection moves it: the next read says so.
    other = redis.Redis.from_url(redis_url)
    other.set(key, "second")
    assert pointer.get() == "second"
    other.delete(key)
    assert pointer.get() is None
    other.set(f"{key}:unrelated", "x")  # the same prefix: read again, still right
    assert pointer.get() is None
    other.delete(f"{key}:unrelated")
    other.close()
    pointer.close()


@pytest.mark.budget
def test_budget_a_kept_value_costs_no_round_trip_until_someone_moves_it(
    redis_client: redis.Redis, key: str, round_trips: list[list[tuple[str, ...]]]
) -> None:
    redis_client.set(key, "first")
    pointer = LivePointer(redis_client, key)
    round_trips.clear()

    assert [pointer.get() for _ in range(3)] == ["first"] * 3
    assert round_trips == [[("CLIENT", "TRACKING")], [("GET", key)]]

    redis_client.set(key, "second")
    round_trips.clear()
    assert [pointer.get() for _ in range(3)] == ["second"] * 3
    assert round_trips == [[("GET", key)]]
    pointer.close()


def test_a_dropped_connection_means_unknown_never_stale(
    redis_client: redis.Redis, key: str
) -> None:
    redis_client.set(key, "first")
    pointer = LivePointer(redis_client, key)
    assert pointer.get() == "first"
    assert redis_client.client_kill_filter(_id=str(connection_id(pointer))) == 1
    redis_client.set(key, "second")  # unheard of: the connection is gone

    assert pointer.get() is UNKNOWN
    assert pointer.get() is UNKNOWN  # and it does not reconnect at every call


@pytest.mark.budget
def test_budget_a_value_past_its_trust_costs_one_round_trip_per_read(
    redis_client: redis.Redis,
    key: str,
    round_trips: list[list[tuple[str, ...]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_client.set(key, "first")
    pointer = LivePointer(redis_client, key)
    monkeypatch.setattr(live, "TRUST_SECONDS", 0.0)
    round_trips.clear()

    assert [pointer.get() for _ in range(3)] == ["first"] * 3
    assert round_trips == [[("CLIENT", "TRACKING")]] + [[("GET", key)]] * 3
    pointer.close()


def test_a_server_that_cannot_track_keys_gets_unknown() -> None:
    with devstack.embedded_redis() as url:
        client = redis.Redis.from_url(url)
        client.set("manifest:current", "first")
        assert LivePointer(client, "manifest:current").get() is UNKNOWN
        client.close()


def test_a_pointer_does_not_outlive_its_connection_pool(
    redis_client: redis.Redis, redis_url: str, key: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(key, "first")
    assert live_pointer(client, key).get() == "first"
    # The pointer's own connection, by id: other clients of the shared server come and go.
    tracking = connection_id(live_pointer(client, key))
    assert tracking in connection_ids(redis_client)
    pool = weakref.ref(client.connection_pool)

    del client
    gc.collect()

    assert pool() is None
    deadline = time.monotonic() + 10
    while tracking in connection_ids(redis_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracking not in connection_ids(redis_client)


def connection_ids(client: redis.Redis) -> set[int]:
    """The ids of every connection the server has open."""
    return {int(entry["id"]) for entry in client.client_list()}


def connection_id(pointer: LivePointer) -> int:
    """The id Redis gives the pointer's own connection."""
    connection = pointer._connection
    assert connection is not None
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())
