"""What the Celery workers count for GET /metrics, kept in Redis: syncs by trigger and outcome,
sync durations by phase, Bungie requests by status and error code, deliveries by destination.

A worker may run on another machine and any web process must show what every worker did, so
these figures live in one hash (Keys.metrics), each field a count that only grows, written in
one MULTI/EXEC per sync and per delivery and read back whole at each scrape. Every label comes
from a closed set (anything else counts as "other"), so the hash stays a few hundred fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

import redis
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from app.keys import Keys
from app.manifest.client import RequestKind
from app.manifest.outcome import BUSY
from app.manifest.outcome import FAILED
from app.manifest.outcome import UNAVAILABLE
from app.manifest.outcome import UNCHANGED
from app.manifest.outcome import UPDATED
from app.metrics.counters import OTHER
from app.metrics.counters import TRIGGERS
from app.metrics.counters import closed

SYNC_OUTCOMES = (UPDATED, UNCHANGED, UNAVAILABLE, FAILED, BUSY)
# SyncResult.timings' phases; its per-table timings ("<lang>:<table>") are not kept.
PHASES = ("check", "ingest", "commit", "total")
# Seconds: a check takes a fraction of one, a whole release minutes.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
LE = (*(floatToGoString(b) for b in BUCKETS), "+Inf")
MESSAGES = ("release", "alert")
# What a delivery task's try ended in: what app/notify/policy.py returned (spaces made
# underscores), or the trouble that made it retry or give up.
DELIVERY_OUTCOMES = (
    "sent",
    "filtered",
    "already_sent",
    "being_sent_elsewhere",
    "off",
    "rejected",
    "throttled",
    "failed",
    "gave_up",
)
_DESTINATION = re.compile(r"slack|discord|webhook:[0-9a-f]{1,64}")
_KINDS = ("api", "content")
_STATUS = re.compile(r"[1-5][0-9][0-9]|none")
_CODE = re.compile(r"[0-9]{1,5}|none")
# Labels never hold it: it separates them in a field's name.
SEP = "|"


def _bucket(seconds: float) -> str:
    return next((le for le, top in zip(LE, BUCKETS, strict=False) if seconds <= top), "+Inf")


def record_sync(
    client: redis.Redis,
    keys: Keys,
    *,
    trigger: str,
    outcome: str,
    timings: Mapping[str, float],
    requests: Mapping[RequestKind, int],
) -> None:
    """Count one sync: its outcome, its phases' durations and the Bungie requests it made."""
    trigger, outcome = closed(trigger, TRIGGERS), closed(outcome, SYNC_OUTCOMES)
    with client.pipeline(transaction=True) as pipe:
        pipe.hincrby(keys.metrics, SEP.join(("syncs", trigger, outcome)), 1)
        for phase in PHASES:
            seconds = timings.get(phase)
            if seconds is None:
                continue
            labels = (phase, outcome)
            pipe.hincrby(keys.metrics, SEP.join(("sync_seconds", *labels, _bucket(seconds))), 1)
            pipe.hincrbyfloat(keys.metrics, SEP.join(("sync_seconds_sum", *labels)), seconds)
        for (kind, status, code), count in requests.items():
            request = (closed(kind, _KINDS), _matching(status, _STATUS), _matching(code, _CODE))
            pipe.hincrby(keys.metrics, SEP.join(("bungie", *request)), count)
        pipe.execute()


def record_delivery(
    client: redis.Redis, keys: Keys, destination: str, message: str, outcome: str
) -> None:
    """Count one try of a delivery task: `message` (release or alert) and what it ended in."""
    labels = (
        destination if _DESTINATION.fullmatch(destination) else OTHER,
        closed(message, MESSAGES),
        closed(outcome.replace(" ", "_"), DELIVERY_OUTCOMES),
    )
    client.hincrby(keys.metrics, SEP.join(("deliveries", *labels)), 1)


def _matching(value: str, pattern: re.Pattern[str]) -> str:
    return value if pattern.fullmatch(value) else OTHER


# -- reading them back ------------------------------------------------------------------------


@dataclass
class Ledger:
    """The hash read back: each family's counts by labels."""

    syncs: dict[tuple[str, ...], int] = field(default_factory=dict)
    buckets: dict[tuple[str, ...], dict[str, int]] = field(default_factory=dict)
    sums: dict[tuple[str, ...], float] = field(default_factory=dict)
    bungie: dict[tuple[str, ...], int] = field(default_factory=dict)
    deliveries: dict[tuple[str, ...], int] = field(default_factory=dict)

    @classmethod
    def read(cls, fields: Mapping[bytes, bytes]) -> Ledger:
        """Sort the hash's fields into families; fields this version does not know are left."""
        ledger = cls()
        counts = {"syncs": ledger.syncs, "bungie": ledger.bungie, "deliveries": ledger.deliveries}
        for raw, value in fields.items():
            family, *labels = raw.decode(errors="replace").split(SEP)
            if family in counts:
                counts[family][tuple(labels)] = int(value)
            elif family == "sync_seconds" and len(labels) == 3:
                ledger.buckets.setdefault(tuple(labels[:2]), {})[labels[2]] = int(value)
            elif family == "sync_seconds_sum":
                ledger.sums[tuple(labels)] = float(value)
        return ledger

    def families(self) -> Iterator[Metric]:
        """Yield the figures as Prometheus metric families."""
        yield _counters(
            "manifest_syncs",
            "Syncs the Celery workers ran, by what asked for them (beat's poll, the pages, the "
            "API, a player page) and how they ended: updated, unchanged, unavailable (Bungie "
            "down or throttling), failed, busy (another sync held the lock).",
            ["trigger", "outcome"],
            self.syncs,
        )
        yield self._durations()
        yield _counters(
            "manifest_bungie_requests",
            "HTTP requests the syncs made to Bungie, by kind (api: the manifest endpoint; "
            "content: table files), HTTP status (none: no answer) and Bungie's ErrorCode "
            "(1: success, 5: maintenance, throttling and API-key codes by number; none: no "
            "envelope; other: any other code).",
            ["kind", "status", "error_code"],
            self.bungie,
        )
        yield _counters(
            "manifest_deliveries",
            "Tries to post to a destination (slack, discord, webhook:<id>), by message (a "
            "release or an alert) and outcome: sent, filtered (nothing it asked for), "
            "already_sent, throttled or failed (will retry), gave_up, rejected, ...",
            ["destination", "message", "outcome"],
            self.deliveries,
        )

    def _durations(self) -> HistogramMetricFamily:
        durations = HistogramMetricFamily(
            "manifest_sync_duration_seconds",
            "How long syncs took, by phase (check: asking Bungie for the manifest; ingest: "
            "downloading and storing every table; commit: the flip; total: the whole run) and "
            "by how the sync ended.",
            labels=["phase", "outcome"],
        )
        for labels, found in sorted(self.buckets.items()):
            running = 0
            cumulative = []
            for le in LE:
                running += found.get(le, 0)
                cumulative.append((le, float(running)))
            durations.add_metric(list(labels), cumulative, self.sums.get(labels, 0.0))
        return durations


def _counters(
    name: str, documentation: str, labels: list[str], counts: Mapping[tuple[str, ...], int]
) -> CounterMetricFamily:
    """Return one counter family holding `counts` (labels -> count), in a steady order."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in sorted(counts.items()):
        family.add_metric(list(values), count)
    return family
