"""Workload 6: readers hammering the cache while new releases are ingested and committed.

A demo origin serves a 40,000-item release and the engine fills a cache on a key prefix of
this run's own. Then, `--swaps` times: the origin publishes a new release; a reader process
starts with 200 item hashes (some the new release changes, adds and removes, some it keeps)
and reads them in a tight loop, taking turns between the app's `store.lookup` (an `HMGET` of
the release Redis vouches is live, see app/manifest/live.py) and a plain `GET current` +
`HMGET` (two round trips, as a naive reader would; it unpacks the stored definitions with the
release's dictionary, fetched once per release); this
process syncs (as a worker would: ingest beside the live release, then the commit), and the
reader stops a moment after the commit.

Each read records its latency, the release it says it read from, and a digest of the values.
Afterwards every digest is checked against the values of that release, read directly: a read
that matches neither release is a mixed one (target: none). The worst latency of any read
while a sync ran is the spike (target <= 50 ms). From the project root:

    .venv/bin/python bench/swap_readers.py                 # 40,000 items, 3 swaps
    .venv/bin/python bench/swap_readers.py --items 5000 --swaps 1
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import redis
from stack import ITEM_TABLE
from stack import LANGUAGE
from stack import PROJECT_ROOT
from stack import SEED
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

MIXED_TARGET = Target("reads that mixed two releases", "= 0", 0, at_most=True)
SPIKE_TARGET = Target("worst read latency during a swap", "<= 50 ms", 50.0, at_most=True)
SAMPLE = 200
SETTLE = 0.3
READER_MAX_SECONDS = 120.0
READER_MAX_READS = 2_000_000
READER_TIMEOUT = 30.0
SPIKE_MS = 5.0
KINDS = ("lookup", "hmget")


def digest(values: list[Any]) -> str:
    """Return a short digest of decoded definitions (None for a missing one)."""
    return hashlib.blake2b(msgspec.json.encode(values), digest_size=8).hexdigest()


# -- the reader process -------------------------------------------------------------------------


def read_loop(args: argparse.Namespace) -> None:
    """Read `args.hashes` until stdin closes; print every read's figures as JSON.

    The figures go into flat arrays, with the release ids and digests numbered, and what was
    imported is frozen out of the garbage collector's reach: else its full collections pause
    this process for tens of milliseconds now and then, which would be counted as Redis's.
    """
    client = redis.Redis.from_url(args.redis_url)
    store = engine_store(client, engine_settings("http://127.0.0.1:9", args.prefix))
    hashes = [int(h) for h in args.hashes.split(",")]
    decode = msgspec.json.decode
    stop = threading.Event()

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    moments, took = array("d"), array("d")
    kinds, releases, digests = array("b"), array("l"), array("l")
    numbers: dict[str, dict[str, int]] = {"release": {}, "digest": {}}
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    deadline = time.monotonic() + READER_MAX_SECONDS
    turn = 0
    while not stop.is_set() and time.monotonic() < deadline and turn < READER_MAX_READS:
        at = time.time()
        started = time.perf_counter()
        if turn % 2 == 0:
            release_id, found = store.lookup({ITEM_TABLE: hashes})
            values = [found[ITEM_TABLE][h] for h in hashes]
        else:
            current = client.get(store.keys.current)
            assert current is None or isinstance(current, bytes)
            release_id = current.decode() if current else None
            raw = client.hmget(store.keys.table(str(release_id), LANGUAGE, ITEM_TABLE), hashes)
            unpack = store.unpacker(str(release_id), LANGUAGE, ITEM_TABLE).unpack
            values = [decode(unpack(v)) if isinstance(v, bytes) else None for v in raw]
        moments.append(at)
        took.append((time.perf_counter() - started) * 1000)
        kinds.append(turn % 2)
        releases.append(numbers["release"].setdefault(str(release_id), len(numbers["release"])))
        digests.append(numbers["digest"].setdefault(digest(values), len(numbers["digest"])))
        turn += 1
    names = {kind: {n: v for v, n in table.items()} for kind, table in numbers.items()}
    reads = [
        (
            moments[i],
            took[i],
            KINDS[kinds[i]],
            names["release"][releases[i]],
            names["digest"][digests[i]],
        )
        for i in range(turn)
    ]
    print(json.dumps(reads))


# -- the parent ---------------------------------------------------------------------------------


class Reader:
    """The reader process of one swap: started on a sample, stopped by closing its stdin."""

    def __init__(self, redis_url: str, prefix: str, hashes: list[int]) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--reader"]
        command += ["--redis-url", redis_url, "--prefix", prefix]
        command += ["--hashes", ",".join(map(str, hashes))]
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the reader did not start")

    def finish(self) -> list[list[Any]]:
        """Stop the reader; return its reads."""
        out, _ = self.process.communicate("", timeout=READER_TIMEOUT)
        return json.loads(out)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def expected_digest(client: redis.Redis, store: Any, release_id: str, hashes: list[int]) -> str:
    """Return the digest of what `release_id` holds for `hashes`, read directly."""
    raw = client.hmget(store.keys.table(release_id, LANGUAGE, ITEM_TABLE), hashes)
    unpack = store.unpacker(release_id, LANGUAGE, ITEM_TABLE).unpack
    return digest([msgspec.json.decode(unpack(v)) if v else None for v in raw])


def choose_sample(published: dict[str, Any], live: list[int]) -> list[int]:
    """Return hashes the new release changes, adds and removes, and some it keeps."""
    rng = random.Random(SEED)
    moved = [*published["changed"][:60], *published["removed"][:40], *published["added"][:40]]
    kept = rng.sample(live, SAMPLE - len(moved))
    return [*moved, *kept]


def run_swap(number: int, args: argparse.Namespace, origin_url: str, prefix: str) -> dict[str, Any]:
    """Publish, start a reader, sync, stop the reader; return what it saw and what was right."""
    from app.manifest import sync
    from devtools.demo.control import DemoAdmin

    client = redis.Redis.from_url(args.redis_url)
    settings = engine_settings(origin_url, prefix, api_key="bench-key")
    store = engine_store(client, settings)
    old = store.live_id()
    assert old is not None
    live = [int(h) for h in client.hkeys(store.keys.table(old, LANGUAGE, ITEM_TABLE))]
    sample = choose_sample(DemoAdmin(origin_url).publish(), live)
    expected = {old: expected_digest(client, store, old, sample)}
    committing: list[float] = []

    def at_commit(progress: Any) -> None:
        if progress.phase == "committing":
            committing.append(time.time())

    reader = Reader(args.redis_url, prefix, sample)
    try:
        reader.wait_ready()
        time.sleep(SETTLE)
        sync_started = time.time()
        result = sync.run(store, bungie_client(settings), trigger="bench", progress=at_commit)
        sync_ended = time.time()
        time.sleep(SETTLE)
        reads = reader.finish()
    finally:
        reader.kill()
    if result.outcome != sync.UPDATED or result.release_id is None:
        raise RuntimeError(f"swap {number}: the sync did not update: {result.summary()}")
    expected[result.release_id] = expected_digest(client, store, result.release_id, sample)
    return judge_swap(number, reads, expected, (sync_started, committing[0], sync_ended), result)


def judge_swap(
    number: int,
    reads: list[list[Any]],
    expected: dict[str, str],
    moments: tuple[float, float, float],
    result: Any,
) -> dict[str, Any]:
    """Check every read against its release; sum up latencies while the sync ran."""
    sync_started, commit_at, sync_ended = moments
    during = [r for r in reads if sync_started <= r[0] <= sync_ended]
    near_commit = [r for r in reads if commit_at - 0.05 <= r[0] <= sync_ended + 0.05]
    mixed = [r for r in reads if expected.get(r[3]) != r[4]]
    worst = max(during, key=lambda r: r[1], default=None)
    by_kind = {}
    for kind in ("lookup", "hmget"):
        times = [r[1] for r in during if r[2] == kind]
        by_kind[kind] = {
            "reads": len(times),
            "p50_ms": percentile(times, 0.5),
            "p99_ms": percentile(times, 0.99),
            "max_ms": max(times, default=float("nan")),
        }
    return {
        "swap": number,
        "reads": len(reads),
        "reads_during_sync": len(during),
        "releases_seen": dict(Counter(r[3] for r in reads)),
        "both_seen": all(release in {r[3] for r in reads} for release in expected),
        "mixed": len(mixed),
        "sync_seconds": sync_ended - sync_started,
        "commit_ms": result.timings.get("commit", 0.0) * 1000,
        "worst_ms": worst[1] if worst else float("nan"),
        "worst_kind": worst[2] if worst else None,
        "worst_near_commit_ms": max((r[1] for r in near_commit), default=float("nan")),
        "by_kind": by_kind,
        # For the plot: when, and how long, relative to the sync's start.
        "timeline": [
            [round(r[0] - sync_started, 4), round(r[1], 3)]
            for r in reads
            if r[1] >= SPIKE_MS or int(r[0] * 1000) % 20 == 0
        ],
        "commit_offset": commit_at - sync_started,
        "sync_offset": sync_ended - sync_started,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run workload 6; print and return its figures and verdicts."""
    from app.manifest import sync
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    prefix = f"bench:{run_id()}:swap"
    print()
    print(f"== workload 6: readers during a swap, {args.items:,} items, {args.swaps} swaps ==")
    origin_args = demo_origin_args(args.items)
    swaps = []
    try:
        with DemoOriginProcess(*origin_args) as origin:
            settings = engine_settings(origin.url, prefix, api_key="bench-key")
            first = sync.run(engine_store(client, settings), bungie_client(settings))
            if first.outcome != sync.UPDATED:
                raise RuntimeError(f"the cache could not be filled: {first.summary()}")
            for number in range(1, args.swaps + 1):
                swaps.append(run_swap(number, args, origin.url, prefix))
                print_swap(swaps[-1])
    finally:
        delete_keys(client, prefix)
    found = verdicts(swaps)
    print_verdicts(found, "readers during a swap")
    return {
        "workload": "swap_readers",
        "items": args.items,
        "swaps": swaps,
        "targets": [v.to_record() for v in found],
    }


def print_swap(swap: dict[str, Any]) -> None:
    kinds = "; ".join(
        f"{kind}: {k['reads']:,} reads, p50 {k['p50_ms']:.2f} ms, p99 {k['p99_ms']:.2f} ms, "
        f"max {k['max_ms']:.1f} ms"
        for kind, k in swap["by_kind"].items()
    )
    print(
        f"  swap {swap['swap']}: sync {swap['sync_seconds']:.2f} s (commit "
        f"{swap['commit_ms']:.0f} ms); {swap['reads']:,} reads, {swap['reads_during_sync']:,} "
        f"while it ran, releases seen {len(swap['releases_seen'])}, mixed {swap['mixed']}; "
        f"worst {swap['worst_ms']:.1f} ms ({swap['worst_kind']}), around the commit "
        f"{swap['worst_near_commit_ms']:.1f} ms\n    {kinds}"
    )


def verdicts(swaps: list[dict[str, Any]]) -> list[Verdict]:
    scope = f"{len(swaps)} swaps"
    mixed = sum(s["mixed"] for s in swaps)
    straddled = sum(1 for s in swaps if s["both_seen"])
    worst = max(swaps, key=lambda s: s["worst_ms"])
    reads = sum(s["reads"] for s in swaps)
    return [
        Verdict(
            MIXED_TARGET,
            scope,
            # A swap the reader did not straddle proves nothing: it counts as a failure.
            mixed + (len(swaps) - straddled),
            f"{mixed} of {reads:,} reads; {straddled} of {len(swaps)} swaps seen from both sides",
        ),
        Verdict(
            SPIKE_TARGET,
            scope,
            worst["worst_ms"],
            f"{worst['worst_ms']:.1f} ms ({worst['worst_kind']}, swap {worst['swap']}); around "
            f"the commits at most {max(s['worst_near_commit_ms'] for s in swaps):.1f} ms",
        ),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__)
    parser.add_argument("--swaps", type=int, default=3, help="(default: %(default)s)")
    # How the benchmark starts its reader process.
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--hashes", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reader:
        read_loop(args)
        return 0
    return workload_main(args, run)


if __name__ == "__main__":
    sys.exit(main())
