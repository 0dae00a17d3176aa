"""Workload 2: the cache's Redis memory, one release and during a swap, projected to the real
manifest and a 100 MB Redis plan.

A demo origin serves a 40,000-item release; the engine syncs its item table three times on a
key prefix of this run's own, the origin publishing a new release (1% added, 0.5% removed, 2%
changed) in between. `MEMORY USAGE` (all samples) is summed over:

- one release: its item table, every definition whole and compressed (the table's hash and its
  zstd dictionary's key), against the raw JSON of the table (target <= 15%, issue 15);
- the cache at rest: the live release and the previous one (kept for rollbacks and readers);
- the cache at its peak: while the third release is committed, when the live one, the previous
  one and the new one are all in Redis.

The projection scales the measured share to today's real item table (~136 MB of JSON), adds
what an empty Redis uses (INFO used_memory_startup) and what the broker and result backend
keep (a day of polls: one task result and one task record per poll, at the size measured
here), and compares the total at rest and at the peak with a 100 MB plan. From the root:

    .venv/bin/python bench/footprint.py
    .venv/bin/python bench/footprint.py --items 5000 --json bench/out/footprint.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
import redis
import requests
from stack import ITEM_TABLE
from stack import LANGUAGE
from stack import bungie_client
from stack import delete_keys
from stack import demo_origin_args
from stack import engine_settings
from stack import engine_store
from stack import footprint
from stack import item_path
from stack import memory_usage
from stack import run_id
from stack import workload_main
from stack import workload_parser
from targets import Target
from targets import Verdict
from targets import print_verdicts

MB = 1_000_000
REAL_ITEM_JSON = 136 * MB
PLAN = 100 * MB
# Celery keeps a task result beside the app's task record; each is a key of its own.
KEY_OVERHEAD = 100
META_OVERHEAD = 250

SHARE_TARGET = Target(
    "Redis memory of a release's item table / raw JSON", "<= 15%", 0.15, at_most=True
)
REST_TARGET = Target("projected Redis at rest (real manifest)", "<= 100 MB", PLAN, at_most=True)
PEAK_TARGET = Target("projected Redis during a swap", "<= 100 MB", PLAN, at_most=True)


def release_bytes(sizes: dict[str, int], release_id: str) -> int:
    """Return the bytes of one release's data keys (its tables and their dictionaries)."""
    return sum(taken for key, taken in sizes.items() if key.startswith(f"{release_id}:"))


def item_table_bytes(client: redis.Redis, store: Any, release_id: str) -> dict[str, int]:
    """Return the bytes of a release's item table: its hash and its dictionary (MEMORY USAGE)."""
    keys = store.keys
    return {
        "hash": memory_usage(client, keys.table(release_id, LANGUAGE, ITEM_TABLE)),
        "dictionary": memory_usage(client, keys.dictionary(release_id, LANGUAGE, ITEM_TABLE)),
    }


def measure(args: argparse.Namespace, origin_url: str, prefix: str) -> dict[str, Any]:
    """Sync three releases; return the footprints at each stage."""
    from app.manifest import sync
    from devtools.demo.control import DemoAdmin

    client = redis.Redis.from_url(args.redis_url)
    settings = engine_settings(
        origin_url, prefix, api_key="bench-key", tables=(ITEM_TABLE,), languages=(LANGUAGE,)
    )
    store = engine_store(client, settings)
    admin = DemoAdmin(origin_url)
    with requests.get(origin_url + item_path(admin.state()), stream=True, timeout=30) as answer:
        raw = int(answer.headers["Content-Length"])
    peak: dict[str, int] = {}

    def at_commit(progress: Any) -> None:
        if progress.phase == "committing":
            peak.update(footprint(client, prefix))

    releases = []
    for number in range(3):
        peak.clear()  # what counts is the third commit's
        result = sync.run(store, bungie_client(settings), trigger="bench", progress=at_commit)
        if result.outcome != sync.UPDATED or result.release_id is None:
            raise RuntimeError(f"sync {number + 1} did not update: {result.summary()}")
        releases.append(result.release_id)
        if number == 0:
            table = item_table_bytes(client, store, result.release_id)
            single = sum(table.values())
        if number == 1:
            rest = footprint(client, prefix)
        if number < 2:
            admin.publish()
    unchanged = sync.run(store, bungie_client(settings), trigger="bench")
    result_json = len(msgspec.json.encode(unchanged.to_dict()))
    record_json = len(client.get(store.keys.last_check) or b"")
    memory = client.info("memory")
    return {
        "items": args.items,
        "raw_bytes": raw,
        "release_bytes": single,
        "table_hash_bytes": table["hash"],
        "dictionary_bytes": table["dictionary"],
        "share": single / raw,
        "rest_bytes": sum(rest.values()),
        "rest_releases": sum(1 for r in releases[:2] if release_bytes(rest, r)),
        "peak_bytes": sum(peak.values()),
        "peak_releases": sum(1 for r in releases if release_bytes(peak, r)),
        "peak_over_release": sum(peak.values()) / single,
        "rest_over_release": sum(rest.values()) / single,
        "used_memory_startup": int(memory["used_memory_startup"]),
        "result_bytes": result_json,
        "check_record_bytes": record_json,
    }


def project(figures: dict[str, Any]) -> dict[str, Any]:
    """Scale the demo's figures to the real item table and add Redis's and the broker's own."""
    from config import Config

    polls_kept = Config.TASK_RESULT_SECONDS // Config.MANIFEST_POLL_SECONDS
    per_poll = figures["result_bytes"] + META_OVERHEAD + figures["check_record_bytes"]
    broker = polls_kept * (per_poll + 2 * KEY_OVERHEAD)
    release = figures["share"] * REAL_ITEM_JSON
    base = figures["used_memory_startup"] + broker
    return {
        "real_item_json": REAL_ITEM_JSON,
        "release": release,
        "polls_kept": polls_kept,
        "broker": broker,
        "base": base,
        "rest": base + release * figures["rest_over_release"],
        "peak": base + release * figures["peak_over_release"],
        "peak_if_two": base + release * 2,
    }


def verdicts(figures: dict[str, Any], projection: dict[str, Any]) -> list[Verdict]:
    scope = f"{figures['items']:,} items"
    real = "~136 MB item JSON"
    return [
        Verdict(
            SHARE_TARGET,
            scope,
            figures["share"],
            f"{figures['share']:.1%} ({figures['release_bytes'] / MB:.1f} of "
            f"{figures['raw_bytes'] / MB:.1f} MB)",
        ),
        Verdict(
            REST_TARGET,
            real,
            projection["rest"],
            f"{projection['rest'] / MB:.1f} MB ({figures['rest_releases']} releases)",
        ),
        Verdict(
            PEAK_TARGET,
            real,
            projection["peak"],
            f"{projection['peak'] / MB:.1f} MB ({figures['peak_releases']} releases at once; "
            f"{projection['peak_if_two'] / MB:.1f} MB with two)",
        ),
    ]


def print_figures(figures: dict[str, Any], projection: dict[str, Any]) -> None:
    print(
        f"  one release's item table: {figures['release_bytes'] / MB:.1f} MB in Redis (hash "
        f"{figures['table_hash_bytes'] / MB:.1f} MB, dictionary "
        f"{figures['dictionary_bytes'] / 1024:.0f} KiB) for {figures['raw_bytes'] / MB:.1f} MB "
        f"of raw JSON = {figures['share']:.1%}\n"
        f"  at rest: {figures['rest_bytes'] / MB:.1f} MB ({figures['rest_releases']} releases, "
        f"{figures['rest_over_release']:.2f}x one release)\n"
        f"  while the third release is committed: {figures['peak_bytes'] / MB:.1f} MB "
        f"({figures['peak_releases']} releases, {figures['peak_over_release']:.2f}x one release)"
    )
    print(
        f"  projected to {projection['real_item_json'] / MB:.0f} MB of item JSON: one release "
        f"{projection['release'] / MB:.1f} MB; empty Redis "
        f"{figures['used_memory_startup'] / MB:.1f} MB; broker and results "
        f"{projection['broker'] / MB:.2f} MB ({projection['polls_kept']} polls kept, "
        f"{figures['result_bytes']} + {figures['check_record_bytes']} bytes each)\n"
        f"  -> at rest {projection['rest'] / MB:.1f} MB, during a swap "
        f"{projection['peak'] / MB:.1f} MB, of a {PLAN / MB:.0f} MB plan"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run workload 2; print and return its figures and verdicts."""
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    prefix = f"bench:{run_id()}:footprint"
    print()
    print(f"== workload 2: Redis memory of the cache, {args.items:,} items ==")
    origin_args = demo_origin_args(args.items)
    try:
        with DemoOriginProcess(*origin_args) as origin:
            figures = measure(args, origin.url, prefix)
    finally:
        delete_keys(client, prefix)
    projection = project(figures)
    print_figures(figures, projection)
    found = verdicts(figures, projection)
    print_verdicts(found, "Redis memory")
    return {
        "workload": "footprint",
        **figures,
        "projection": projection,
        "targets": [v.to_record() for v in found],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return workload_main(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
