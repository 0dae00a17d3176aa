"""The figures GET /metrics reads from Redis at each scrape: the last check, the live release,
the history, each destination's state, Redis's memory, and what the workers counted (ledger).

Nothing here is kept in a web process: any process, on any machine, shows the same figures.
A scrape costs four round trips: the lot in one pipeline, the live release's record, the memory
its tables take (MEMORY USAGE, sampled), the destinations' states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app.keys import Keys
from app.metrics.ledger import Ledger
from app.notify.announce import DestinationState


@dataclass(frozen=True)
class _Live:
    """What the figures need of the live release: when it was built, its counts, its bytes."""

    synced_at: float | None
    counts: dict[str, dict[str, int]]
    memory: int | None


class CacheFigures:
    """A prometheus_client collector of what Redis holds, read when a scrape asks."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        destinations: Callable[[], Sequence[DestinationState]],
    ) -> None:
        self.client = client
        self.keys = keys
        self.destinations = destinations

    def collect(self) -> Iterator[Metric]:
        """Yield every figure; only `manifest_redis_up` 0 when Redis does not answer."""
        try:
            figures = list(self._figures(time.time()))
        except redis.RedisError:
            figures = []
        yield _gauge(
            "manifest_redis_up",
            "1 when this scrape could read Redis (the figures below it are there), 0 when not.",
            1 if figures else 0,
        )
        yield from figures

    def _figures(self, now: float) -> Iterator[Metric]:
        keys = self.keys
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(keys.current)
            pipe.get(keys.last_check)
            pipe.llen(keys.history)
            pipe.hgetall(keys.metrics)
            pipe.info("memory")
            # A server without INFO memory (an embedded one for `make dev`) still answers.
            live_id, check, history, fields, memory = pipe.execute(raise_on_error=False)
        for answer in (live_id, check, history, fields):
            if isinstance(answer, Exception):
                raise answer
        yield from Ledger.read(fields).families()
        yield from _check_figures(msgspec.json.decode(check) if check else None, now)
        if live_id:
            yield from _live_figures(self._live(live_id.decode()), now)
        yield _gauge(
            "manifest_history_entries",
            "Commits (updates and rollbacks) the history keeps (MANIFEST_HISTORY_LENGTH at most).",
            history,
        )
        if isinstance(memory, dict):
            yield from _memory_figures(memory)
        yield from _destination_figures(self.destinations(), now)

    def _live(self, live_id: str) -> _Live:
        counts_field, synced_at = self.client.hmget(
            self.keys.release(live_id), ["counts", "synced_at"]
        )
        counts: dict[str, dict[str, int]] = msgspec.json.decode(counts_field or b"{}")
        with self.client.pipeline(transaction=False) as pipe:
            for lang, tables in counts.items():
                for table in tables:
                    pipe.memory_usage(self.keys.table(live_id, lang, table))
                    pipe.memory_usage(self.keys.dictionary(live_id, lang, table))
            used = pipe.execute(raise_on_error=False) if counts else []
        # MEMORY USAGE samples a few fields of each hash: an estimate, cheap at any size.
        memory = None if any(isinstance(u, Exception) for u in used) else sum(u or 0 for u in used)
        return _Live(float(synced_at) if synced_at else None, counts, memory)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _check_figures(check: dict[str, Any] | None, now: float) -> Iterator[Metric]:
    if check is None:
        return  # no check yet: no ages to tell
    yield _gauge(
        "manifest_last_check_age_seconds",
        "Seconds since the latest check of Bungie, whatever its outcome (beat polls every "
        "MANIFEST_POLL_SECONDS: much more means no worker or no beat runs).",
        now - check["at"],
    )
    ok = check["outcome"] in ("updated", "unchanged")
    yield _gauge(
        "manifest_last_check_ok",
        "1 when the latest check succeeded (the cache holds what Bungie serves), else 0.",
        1 if ok else 0,
    )
    if check.get("last_success") is not None:
        yield _gauge(
            "manifest_seconds_since_last_success",
            "Seconds since the latest check that succeeded (updated or unchanged).",
            now - check["last_success"],
        )
    since = check.get("failing_since")
    yield _gauge(
        "manifest_failing_for_seconds",
        "Seconds the checks have been failing in a row (0: the latest one succeeded).",
        now - since if since else 0,
    )


def _live_figures(live: _Live, now: float) -> Iterator[Metric]:
    if live.synced_at is not None:
        yield _gauge(
            "manifest_live_release_age_seconds",
            "Seconds since the live release was built from Bungie's files.",
            now - live.synced_at,
        )
    definitions = GaugeMetricFamily(
        "manifest_definitions",
        "Definitions the live release holds, by language and table.",
        labels=["lang", "table"],
    )
    for lang, tables in sorted(live.counts.items()):
        for table, count in sorted(tables.items()):
            definitions.add_metric([lang, table], count)
    yield definitions
    if live.memory is not None:
        yield _gauge(
            "manifest_live_release_memory_bytes",
            "Bytes Redis uses for the live release's tables and dictionaries (estimated by "
            "MEMORY USAGE from a sample of each table).",
            live.memory,
        )


def _memory_figures(memory: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge(
        "manifest_redis_memory_used_bytes",
        "Bytes Redis uses in all (INFO memory used_memory): the cache, the broker, the rest.",
        memory.get("used_memory", 0),
    )
    yield _gauge(
        "manifest_redis_memory_max_bytes",
        "Redis's memory limit (maxmemory); 0: no limit set.",
        memory.get("maxmemory", 0),
    )


def _destination_figures(states: Sequence[DestinationState], now: float) -> Iterator[Metric]:
    owed = GaugeMetricFamily(
        "manifest_destination_owed_releases",
        "Releases a destination is still owed (queued, retrying or given up, within a day).",
        labels=["destination"],
    )
    failing = GaugeMetricFamily(
        "manifest_destination_failing_for_seconds",
        "Seconds a destination has been failing to take posts (0: its last post went through).",
        labels=["destination"],
    )
    throttled = GaugeMetricFamily(
        "manifest_destination_throttled_for_seconds",
        "Seconds a destination still asks this app to wait before posting again (0: none).",
        labels=["destination"],
    )
    last = GaugeMetricFamily(
        "manifest_destination_last_delivery_age_seconds",
        "Seconds since a destination last took a release (absent: never).",
        labels=["destination"],
    )
    for state in states:
        name = [state.name]
        owed.add_metric(name, state.pending)
        failing.add_metric(name, now - state.failing_since if state.failing_since else 0)
        throttled.add_metric(name, max(0.0, (state.throttled_until or now) - now))
        if state.last_at is not None:
            last.add_metric(name, now - state.last_at)
    yield from (owed, failing, throttled, last)
