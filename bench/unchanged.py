"""Workload 3: what a sync costs when nothing changed, against a bare request of the manifest.

A demo origin serves a 40,000-item release; the engine fills a cache on a key prefix of this
run's own, the origin publishes a new release and the engine syncs again (so the live release
has a diff, as in real life). Then, `--repeat` times, in alternating order:

- a bare `requests.get` of /Platform/Destiny2/Manifest/ with the API key (a new session each
  time, as a sync task builds a new client each time), timed;
- a sync (`sync.run` with a fresh BungieClient), timed as a whole, counting what it did:
  the HTTP requests the origin logged, the content bytes it served (the Content-Length of any
  content file fetched), and the Redis commands and round trips sent (counted in the client's
  connection, so other users of the same Redis do not blur them) and executed (INFO
  commandstats deltas, Lua's inner commands included; other clients would add to these, so the
  median over the runs is shown).

Targets: 1 HTTP request and 0 content bytes per unchanged sync; median sync time <= 1.5x the
median bare request. From the project root:

    .venv/bin/python bench/unchanged.py                 # 40,000 items, 50 rounds
    .venv/bin/python bench/unchanged.py --repeat 10 --items 2000 --json bench/out/unchanged.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import ClassVar
from urllib.parse import urlsplit

import redis
import requests
from redis.connection import Connection
from stack import bungie_client
from stack import delete_keys
from stack import demo_origin_args
from stack import engine_settings
from stack import engine_store
from stack import run_id
from stack import workload_main
from stack import workload_parser
from targets import Target
from targets import Verdict
from targets import percentile
from targets import print_verdicts

MANIFEST_PATH = "/Platform/Destiny2/Manifest/"
CONTENT_PREFIX = "/common/destiny2_content/"
API_KEY = "bench-key"
WARMUP_ROUNDS = 3
HTTP_TIMEOUT = (5.0, 30.0)

REQUESTS_TARGET = Target("HTTP requests per unchanged sync", "<= 1", 1, at_most=True)
BYTES_TARGET = Target("content bytes per unchanged sync", "= 0", 0, at_most=True)
TIME_TARGET = Target("unchanged sync / bare manifest GET", "<= 1.5x", 1.5, at_most=True)


class CountingConnection(Connection):
    """A Redis connection that counts the commands and round trips it sends (all instances)."""

    commands: ClassVar[Counter[str]] = Counter()
    round_trips: ClassVar[list[int]] = [0]

    @classmethod
    def reset(cls) -> None:
        cls.commands.clear()
        cls.round_trips[0] = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips[0] += 1
        super().send_packed_command(command, check_health)

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.commands[_name(args[0])] += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        for command in commands:
            CountingConnection.commands[_name(command[0])] += 1
        return super().pack_commands(commands)


def _name(word: str | bytes) -> str:
    return (word.decode() if isinstance(word, bytes) else str(word)).upper()


def command_stats(client: redis.Redis) -> Counter[str]:
    """Return how many times Redis ran each command so far (INFO commandstats), INFO excluded."""
    stats = client.info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_").upper(): int(value["calls"])
            for name, value in stats.items()
            if name != "cmdstat_info"
        }
    )


@dataclass
class Round:
    """One unchanged sync and one bare request."""

    bare_seconds: float
    sync_seconds: float
    outcome: str
    http_requests: int
    content_requests: int
    content_bytes: int
    commands: dict[str, int]
    round_trips: int
    executed: dict[str, int]


@dataclass
class Figures:
    """Every round, and the step timings when they were taken."""

    rounds: list[Round] = field(default_factory=list)
    profile: dict[str, float] | None = None

    def median(self, name: str) -> float:
        return statistics.median(getattr(r, name) for r in self.rounds)


def run_rounds(args: argparse.Namespace, origin_url: str, prefix: str) -> Figures:
    """Fill the cache, then time `args.repeat` unchanged syncs against bare manifest requests."""
    from app.manifest import sync
    from devtools.demo.control import DemoAdmin

    settings = engine_settings(origin_url, prefix, api_key=API_KEY)
    counted = redis.Redis.from_url(args.redis_url, connection_class=CountingConnection)
    plain = redis.Redis.from_url(args.redis_url)
    store = engine_store(counted, settings)
    admin = DemoAdmin(origin_url)
    # The first fill, then a new release, so that the live one has a diff, as in real life.
    for publish in (True, False):
        result = sync.run(store, bungie_client(settings), trigger="bench")
        if result.outcome != sync.UPDATED:
            raise RuntimeError(f"the cache could not be filled: {result.summary()}")
        if publish:
            admin.publish()
    url = origin_url + MANIFEST_PATH
    headers = {"X-API-Key": API_KEY}
    content_sizes: dict[str, int] = {}

    def bare() -> float:
        started = time.perf_counter()
        response = requests.get(url, headers=headers, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return time.perf_counter() - started

    def unchanged() -> tuple[float, Any, dict[str, int]]:
        admin.clear_requests_log()
        CountingConnection.reset()
        before = command_stats(plain)
        started = time.perf_counter()
        client = bungie_client(settings)
        client.session.hooks["response"].append(_remember_size(content_sizes))
        result = sync.run(store, client, trigger="bench")
        client.close()
        seconds = time.perf_counter() - started
        executed = command_stats(plain) - before
        return seconds, result, dict(executed)

    figures = Figures()
    for number in range(WARMUP_ROUNDS + args.repeat):
        if number % 2:
            seconds, result, executed = unchanged()
            log = admin.requests_log()
            bare_seconds = bare()
        else:
            bare_seconds = bare()
            seconds, result, executed = unchanged()
            log = admin.requests_log()
        if number < WARMUP_ROUNDS:
            continue
        content = [entry for entry in log if entry["path"].startswith(CONTENT_PREFIX)]
        figures.rounds.append(
            Round(
                bare_seconds=bare_seconds,
                sync_seconds=seconds,
                outcome=result.outcome,
                http_requests=len(log),
                content_requests=len(content),
                content_bytes=sum(content_sizes.get(entry["path"], 0) for entry in content),
                commands=dict(CountingConnection.commands),
                round_trips=CountingConnection.round_trips[0],
                executed=executed,
            )
        )
    # A missed time target comes with the profile that shows where the time goes.
    ratio = figures.median("sync_seconds") / figures.median("bare_seconds")
    if args.profile or ratio > TIME_TARGET.limit:
        figures.profile = profile_unchanged(store, settings)
    return figures


def _remember_size(sizes: dict[str, int]) -> Any:
    """Return a response hook noting each content file's declared size, by path."""

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        path = urlsplit(response.url).path
        if path.startswith(CONTENT_PREFIX):
            sizes[path] = int(response.headers.get("Content-Length") or 0)

    return hook


# The steps of an unchanged sync, timed one by one: (label, owner, method).
STEPS = (
    ("new client (HTTP session)", "client", "__init__"),
    ("GET manifest (HTTP)", "client", "get_manifest"),
    ("lock: acquire", "lock", "acquire"),
    ("lock: release", "lock", "release"),
    ("live release: GET current + HGETALL record + decode", "store", "live_release"),
    ("record check: GET last_check", "store", "last_check"),
    ("record check: MULTI SET LPUSH LTRIM EXEC", "store", "record_check"),
)


def profile_unchanged(store: Any, settings: Any, runs: int = 200) -> dict[str, float]:
    """Time each step of `runs` unchanged syncs; return the median microseconds of each.

    The steps are wrapped with timers in this process only, for this profile; the rest of
    the sync's time is shown as "other".
    """
    from app.manifest import sync
    from app.manifest.client import BungieClient
    from app.manifest.store import ManifestStore
    from app.manifest.store import SyncLock

    owners = {"client": BungieClient, "lock": SyncLock, "store": ManifestStore}
    spent: dict[str, float] = {}
    originals = []

    def timed(label: str, method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        return wrapper

    for label, owner, name in STEPS:
        method = getattr(owners[owner], name)
        originals.append((owners[owner], name, method))
        setattr(owners[owner], name, timed(label, method))
    samples: dict[str, list[float]] = {label: [] for label, _, _ in STEPS}
    samples["whole sync"] = []
    try:
        for _ in range(runs):
            spent.clear()
            started = time.perf_counter()
            sync.run(store, bungie_client(settings), trigger="bench")
            samples["whole sync"].append(time.perf_counter() - started)
            for label, _, _ in STEPS:
                samples[label].append(spent.get(label, 0.0))
    finally:
        for patched, name, method in originals:
            setattr(patched, name, method)
    steps = {label: statistics.median(times) * 1e6 for label, times in samples.items()}
    steps["other (sync.py, logging, results)"] = steps["whole sync"] - sum(
        steps[label] for label, _, _ in STEPS
    )
    return steps


def summarize(figures: Figures) -> dict[str, Any]:
    """Return the medians and counts of every round."""
    rounds = figures.rounds
    commands: Counter[str] = Counter()
    for r in rounds:
        commands.update(r.commands)
    executed_totals = [sum(r.executed.values()) for r in rounds]
    typical = min(rounds, key=lambda r: abs(sum(r.executed.values()) - min(executed_totals)))
    return {
        "rounds": len(rounds),
        "outcomes": dict(Counter(r.outcome for r in rounds)),
        "bare_median_ms": figures.median("bare_seconds") * 1000,
        "sync_median_ms": figures.median("sync_seconds") * 1000,
        "bare_p90_ms": percentile([r.bare_seconds for r in rounds], 0.9) * 1000,
        "sync_p90_ms": percentile([r.sync_seconds for r in rounds], 0.9) * 1000,
        "ratio": figures.median("sync_seconds") / figures.median("bare_seconds"),
        "http_requests_max": max(r.http_requests for r in rounds),
        "content_requests_max": max(r.content_requests for r in rounds),
        "content_bytes_max": max(r.content_bytes for r in rounds),
        "commands_per_sync": {k: v / len(rounds) for k, v in sorted(commands.items())},
        "commands_total": sum(commands.values()) / len(rounds),
        "round_trips": figures.median("round_trips"),
        "executed_median": statistics.median(executed_totals),
        "executed_min": min(executed_totals),
        "executed_by_command": dict(sorted(typical.executed.items())),
    }


def verdicts(summary: dict[str, Any]) -> list[Verdict]:
    scope = f"{summary['rounds']} rounds"
    return [
        Verdict(
            REQUESTS_TARGET,
            scope,
            summary["http_requests_max"],
            f"{summary['http_requests_max']} (most in any round)",
        ),
        Verdict(
            BYTES_TARGET,
            scope,
            summary["content_bytes_max"],
            f"{summary['content_bytes_max']:,} bytes in "
            f"{summary['content_requests_max']} content requests (most in any round)",
        ),
        Verdict(
            TIME_TARGET,
            scope,
            summary["ratio"],
            f"{summary['ratio']:.2f}x (medians {summary['sync_median_ms']:.2f} ms vs "
            f"{summary['bare_median_ms']:.2f} ms)",
        ),
    ]


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"  {summary['rounds']} rounds, outcomes {summary['outcomes']}\n"
        f"  bare GET of the manifest: median {summary['bare_median_ms']:.2f} ms, "
        f"p90 {summary['bare_p90_ms']:.2f} ms\n"
        f"  unchanged sync:           median {summary['sync_median_ms']:.2f} ms, "
        f"p90 {summary['sync_p90_ms']:.2f} ms ({summary['ratio']:.2f}x)\n"
        f"  HTTP requests per sync: {summary['http_requests_max']} (most), content requests "
        f"{summary['content_requests_max']}, content bytes {summary['content_bytes_max']:,}"
    )
    sent = ", ".join(f"{k} {v:g}" for k, v in summary["commands_per_sync"].items())
    print(
        f"  Redis commands sent per sync: {summary['commands_total']:g} in "
        f"{summary['round_trips']:g} round trips ({sent})"
    )
    executed = ", ".join(f"{k} {v}" for k, v in summary["executed_by_command"].items())
    print(
        f"  Redis commands executed per sync (commandstats): median "
        f"{summary['executed_median']:g}, fewest {summary['executed_min']:g} ({executed})"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run workload 3; print and return its figures and verdicts."""
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    prefix = f"bench:{run_id()}:unchanged"
    print()
    print(f"== workload 3: unchanged check, {args.items:,} items, {args.repeat} rounds ==")
    origin_args = demo_origin_args(args.items)
    try:
        with DemoOriginProcess(*origin_args) as origin:
            figures = run_rounds(args, origin.url, prefix)
    finally:
        delete_keys(client, prefix)
    summary = summarize(figures)
    print_summary(summary)
    if figures.profile:
        print("  where an unchanged sync's time goes (median us of 200 syncs, steps timed):")
        for label, micros in figures.profile.items():
            print(f"    {micros:8.0f}  {label}")
    found = verdicts(summary)
    print_verdicts(found, "unchanged check")
    return {
        "workload": "unchanged",
        "items": args.items,
        "summary": summary,
        "profile": figures.profile,
        "targets": [v.to_record() for v in found],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__)
    parser.add_argument("--repeat", type=int, default=50, help="rounds (default: %(default)s)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time the steps of 200 unchanged syncs even if the time target is met",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return workload_main(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
