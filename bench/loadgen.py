"""A small HTTP load generator, run as a process of its own so it shares no GIL with what it loads.

Each group of connections sends one kind of request (method, headers, paths taken in turn,
bodies taken in turn for a POST, header sets taken in turn: an If-None-Match per path) over
keep-alive connections (gunicorn's sync workers close every connection after one response; the
client then reconnects, as any client of such a server does). A run is bounded in time
(warm-up, then the measured window) and in requests. Only responses that complete inside the
measured window count: their status, latency and, for JSON answers naming a `task_id`, that id;
with `count_bytes`, also the bytes of the answers of the expected status, and how many answers
each request (its turn among the paths or bodies) had. The parent sends the spec as JSON on
stdin and reads the figures as JSON from stdout:

    echo '{"base_url": "http://127.0.0.1:8000", "seconds": 5, "warmup": 1,
           "max_requests": 100000, "groups": [{"name": "healthz", "method": "GET",
           "paths": ["/healthz"], "connections": 50}]}' | .venv/bin/python bench/loadgen.py

`run_load` does that from a benchmark; `run_phases` takes turns between several loads.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from targets import percentile

REQUEST_TIMEOUT = 30.0
ERROR_PAUSE = 0.01


@dataclass
class LoadGroup:
    """Connections that all send one kind of request; `ok` is the status that means success."""

    name: str
    method: str
    paths: list[str]
    connections: int
    headers: dict[str, str] = field(default_factory=dict)
    ok: int = 200
    collect_task_ids: bool = False
    # Sent in turn with the paths (the n-th request sends body n); none: no body.
    bodies: list[str] = field(default_factory=list)
    count_bytes: bool = False
    # Sent in turn with the paths, on top of `headers` (the n-th request adds set n): a
    # conditional GET names each path's own ETag.
    header_sets: list[dict[str, str]] = field(default_factory=list)


@dataclass
class GroupFigures:
    """What one group's connections saw within the measured window(s)."""

    name: str
    ok: int
    seconds: float
    statuses: dict[str, int]
    failures: dict[str, int]
    latencies_ms: list[float]
    task_ids: list[str]
    # With count_bytes: bytes of the answers of the expected status, and how many answers each
    # request (by its turn, as a string: JSON's keys) had.
    body_bytes: int = 0
    turns: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def rate_limited(self) -> int:
        """429s: refusals the rate limit intends, counted apart from errors."""
        return self.statuses.get("429", 0)

    @property
    def errors(self) -> int:
        """Every answer but the expected status and 429, and every failed request."""
        unexpected = sum(n for s, n in self.statuses.items() if s not in (str(self.ok), "429"))
        return unexpected + sum(self.failures.values())

    def summary(self) -> dict[str, Any]:
        """Return the figures a report shows (not every latency)."""
        latencies = self.latencies_ms
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "rps": self.rps,
            "p50_ms": percentile(latencies, 0.50),
            "p90_ms": percentile(latencies, 0.90),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies, default=float("nan")),
            "statuses": self.statuses,
            "failures": self.failures,
            "errors": self.errors,
            "rate_limited": self.rate_limited,
            "body_bytes": self.body_bytes,
        }


def merge(parts: list[GroupFigures]) -> GroupFigures:
    """Add up one group's figures over several windows."""
    statuses: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    turns: Counter[str] = Counter()
    for part in parts:
        statuses.update(part.statuses)
        failures.update(part.failures)
        turns.update(part.turns)
    return GroupFigures(
        name=parts[0].name,
        ok=parts[0].ok,
        seconds=sum(part.seconds for part in parts),
        statuses=dict(statuses),
        failures=dict(failures),
        latencies_ms=[x for part in parts for x in part.latencies_ms],
        task_ids=sorted({task for part in parts for task in part.task_ids}),
        body_bytes=sum(part.body_bytes for part in parts),
        turns=dict(turns),
    )


# -- the generator process --------------------------------------------------------------------


class _Tally:
    """One connection's counts; merged per group at the end (no locks while loading)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.task_ids: set[str] = set()
        self.body_bytes = 0
        self.turns: Counter[str] = Counter()


def _connection_loop(
    base: tuple[str, int],
    group: dict[str, Any],
    offset: int,
    window: tuple[float, float],
    budget: itertools.count,
    max_requests: int,
    tally: _Tally,
) -> None:
    host, port = base
    start, end = window
    paths = group["paths"]
    bodies = [body.encode() for body in group.get("bodies", [])]
    method, headers = group["method"], group.get("headers", {})
    # Merged once here, not per request.
    header_sets = [{**headers, **extra} for extra in group.get("header_sets", [])] or [headers]
    collect = group.get("collect_task_ids", False)
    count_bytes = group.get("count_bytes", False)
    ok = str(group.get("ok", 200))
    connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
    for turn in itertools.count(offset):
        if time.monotonic() >= end or next(budget) >= max_requests:
            break
        sent = time.perf_counter()
        status: str | None = None
        failure = ""
        body = b""
        chosen = turn % max(len(paths), len(bodies), len(header_sets))
        try:
            body_sent = bodies[chosen % len(bodies)] if bodies else None
            sent_headers = header_sets[chosen % len(header_sets)]
            connection.request(method, paths[chosen % len(paths)], body_sent, sent_headers)
            response = connection.getresponse()
            body = response.read()
            status = str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            failure = type(exc).__name__
        took = time.perf_counter() - sent
        if not start <= time.monotonic() <= end:
            continue
        if status is None:
            tally.failures[failure] += 1
            time.sleep(ERROR_PAUSE)
            continue
        tally.statuses[status] += 1
        tally.latencies.append(took)
        if count_bytes and status == ok:
            tally.body_bytes += len(body)
            tally.turns[str(chosen)] += 1
        if collect and body.startswith(b"{"):
            task_id = json.loads(body).get("task_id")
            if task_id:
                tally.task_ids.add(task_id)
    connection.close()


def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load described by `spec`; return each group's figures and the window's length."""
    url = urlsplit(spec["base_url"])
    base = (url.hostname or "127.0.0.1", url.port or 80)
    start = time.monotonic() + spec["warmup"]
    end = start + spec["seconds"]
    budget = itertools.count()
    threads: list[threading.Thread] = []
    tallies: dict[str, list[_Tally]] = {}
    for group in spec["groups"]:
        for index in range(group["connections"]):
            tally = _Tally()
            tallies.setdefault(group["name"], []).append(tally)
            args = (base, group, index, (start, end), budget, spec["max_requests"], tally)
            threads.append(threading.Thread(target=_connection_loop, args=args, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, end - time.monotonic()) + REQUEST_TIMEOUT + 5)
    window = min(spec["seconds"], max(1e-9, time.monotonic() - start))
    groups = {}
    for group in spec["groups"]:
        parts = tallies[group["name"]]
        latencies = [x * 1000 for part in parts for x in part.latencies]
        statuses = sum((part.statuses for part in parts), Counter())
        failures = sum((part.failures for part in parts), Counter())
        groups[group["name"]] = GroupFigures(
            name=group["name"],
            ok=group.get("ok", 200),
            seconds=window,
            statuses=dict(statuses),
            failures=dict(failures),
            latencies_ms=[round(x, 3) for x in latencies],
            task_ids=sorted(set().union(*(part.task_ids for part in parts))),
            body_bytes=sum(part.body_bytes for part in parts),
            turns=dict(sum((part.turns for part in parts), Counter())),
        )
    return {name: asdict(g) for name, g in groups.items()}


# -- the parent's side ------------------------------------------------------------------------


def run_load(
    base_url: str,
    groups: list[LoadGroup],
    *,
    seconds: float,
    warmup: float,
    max_requests: int,
) -> dict[str, GroupFigures]:
    """Run the load generator in a process of its own against `base_url`; return its figures."""
    spec = {
        "base_url": base_url,
        "seconds": seconds,
        "warmup": warmup,
        "max_requests": max_requests,
        "groups": [asdict(group) for group in groups],
    }
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(json.dumps(spec), timeout=warmup + seconds + 120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    if process.returncode != 0 or not out.strip():
        raise RuntimeError(f"the load generator failed: {err.strip()[-2000:]}")
    return {name: GroupFigures(**g) for name, g in json.loads(out).items()}


def run_phases(
    base_url: str,
    phases: dict[str, list[LoadGroup]],
    *,
    rounds: int,
    seconds: float,
    warmup: float,
    max_requests: int,
) -> dict[str, dict[str, GroupFigures]]:
    """Load each phase in turn, `rounds` times over; return each phase's groups, added up.

    Taking turns, rather than one phase after the other, spreads whatever else the machine
    does over every phase alike, so that the ratios between phases hold.
    """
    seen: dict[str, dict[str, list[GroupFigures]]] = {name: {} for name in phases}
    for _ in range(rounds):
        for name, groups in phases.items():
            found = run_load(
                base_url, groups, seconds=seconds, warmup=warmup, max_requests=max_requests
            )
            for group, figures in found.items():
                seen[name].setdefault(group, []).append(figures)
    return {
        name: {group: merge(parts) for group, parts in groups.items()}
        for name, groups in seen.items()
    }


def run_turns(
    base_url: str, phases: dict[str, list[LoadGroup]], args: argparse.Namespace, max_requests: int
) -> dict[str, dict[str, GroupFigures]]:
    """Run `phases` as a workload's load arguments say: --rounds turns of --seconds in all."""
    return run_phases(
        base_url,
        phases,
        rounds=args.rounds,
        seconds=args.seconds / args.rounds,
        warmup=args.warmup,
        max_requests=max_requests,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate HTTP load; the spec is JSON.")
    parser.add_argument(
        "--spec",
        type=argparse.FileType("r", encoding="utf-8"),
        default=sys.stdin,
        help="the spec as a JSON file (default: stdin)",
    )
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(generate(json.load(args.spec))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
