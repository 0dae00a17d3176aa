"""Workload 9: what a Prometheus scrape of GET /metrics costs, with 100 releases of history.

A demo origin serves a release of `--items` items; the engine fills a cache on a key prefix of
this run's own, then the origin publishes `--releases` new releases, each synced (a real
history: every entry with its diff and change log, capped at MANIFEST_HISTORY_LENGTH = 100),
and each sync is counted in Redis as a Celery worker counts it (app/metrics/ledger.py: its
outcome, its phases' durations, its Bungie requests). The app then runs as deployed: gunicorn,
2 sync workers, its gunicorn.conf.py (so prometheus_client's multiprocess mode), Slack and a
webhook configured (their states are part of a scrape), on loopback. After requests to both
workers (their own counts, in files), `--scrapes` scrapes are timed one after the other over
real HTTP, each on a new connection as Prometheus' scrape of a sync worker is: the time from
sending the request to the whole body read.

Target (issue 19): a scrape under 50 ms at the 95th percentile. An absolute time, unlike the
other workloads' ratios: it is the budget the issue sets. From the project root:

    .venv/bin/python bench/metrics.py                    # 100 releases, 50 scrapes
    .venv/bin/python bench/metrics.py --releases 20 --scrapes 20 --json bench/out/metrics.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from stack import app_env
from stack import bungie_client
from stack import delete_celery_keys
from stack import delete_keys
from stack import demo_origin_args
from stack import engine_settings
from stack import engine_store
from stack import run_keys
from stack import web_server
from stack import workload_main
from stack import workload_parser
from targets import Target
from targets import Verdict
from targets import percentile
from targets import print_verdicts

SCRAPE_TARGET = Target("/metrics scrape, p95", "< 50 ms", 50.0, at_most=True)
WARMUP_SCRAPES = 5
WARMUP_REQUESTS = 200
HTTP_TIMEOUT = (5.0, 30.0)
# Destinations that are configured but never posted to (no worker runs): a scrape reads their
# state all the same. Nothing listens on port 9.
DESTINATIONS = {
    "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/services/bench",
    "WEBHOOK_URLS": "http://127.0.0.1:9/hooks/bench",
}


def build_history(args: argparse.Namespace, client: redis.Redis, origin: Any, prefix: str) -> int:
    """Fill the cache, then publish and sync `args.releases` releases; return the history's
    length. Each sync is counted in Redis as the sync task counts it."""
    from app.manifest import sync
    from app.metrics import ledger

    settings = engine_settings(origin.url, prefix, api_key="test-api-key")
    store = engine_store(client, settings)
    started = time.monotonic()
    for number in range(args.releases + 1):
        if number:
            origin.admin.publish()
        bungie = bungie_client(settings)
        result = sync.run(store, bungie, trigger="beat")
        bungie.close()
        if result.outcome != sync.UPDATED:
            raise RuntimeError(f"release {number} was not synced: {result.summary()}")
        ledger.record_sync(
            client,
            store.keys,
            trigger="beat",
            outcome=result.outcome,
            timings=result.timings,
            requests=bungie.take_requests(),
        )
        if number and number % 25 == 0:
            print(f"  {number} releases synced ({time.monotonic() - started:.0f} s)")
    return int(client.llen(store.keys.history))


def time_scrapes(url: str, count: int) -> tuple[list[float], str]:
    """Time `count` scrapes (each on a new connection); return the seconds and the last body."""
    for _ in range(WARMUP_REQUESTS):
        requests.get(f"{url}/healthz", timeout=HTTP_TIMEOUT).raise_for_status()
    body = ""
    seconds = []
    for number in range(WARMUP_SCRAPES + count):
        started = time.perf_counter()
        answer = requests.get(f"{url}/metrics", timeout=HTTP_TIMEOUT)
        body = answer.text
        elapsed = time.perf_counter() - started
        answer.raise_for_status()
        if number >= WARMUP_SCRAPES:
            seconds.append(elapsed)
    return seconds, body


def describe(body: str) -> dict[str, Any]:
    """Return what a scrape answered: its size, families and samples (Prometheus' parser)."""
    found = list(text_string_to_metric_families(body))
    samples = {f.name: f.samples for f in found}
    history = [s.value for s in samples.get("manifest_history_entries", [])]
    syncs = sum(s.value for s in samples.get("manifest_syncs", []))
    return {
        "bytes": len(body.encode()),
        "families": len(found),
        "samples": sum(len(f.samples) for f in found),
        "history_entries": history[0] if history else None,
        "syncs_counted": syncs,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run workload 9; print and return its figures and verdicts."""
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    prefix, queue = run_keys("metrics")
    print()
    print(
        f"== workload 9: /metrics scrape, {args.releases} releases of history "
        f"({args.items:,} items), {args.scrapes} scrapes =="
    )
    origin_args = demo_origin_args(args.items)
    try:
        with DemoOriginProcess(*origin_args) as origin:
            started = time.monotonic()
            history = build_history(args, client, origin, prefix)
            build_seconds = time.monotonic() - started
            print(f"  history: {history} entries, built in {build_seconds:.0f} s")
            env = app_env(args.redis_url, origin.url, prefix, queue, **DESTINATIONS)
            server, url = web_server(env)
            with server:
                seconds, body = time_scrapes(url, args.scrapes)
    finally:
        delete_keys(client, prefix)
        delete_celery_keys(client, queue, [])
    answer = describe(body)
    ms = [s * 1000 for s in seconds]
    summary = {
        "scrapes": len(ms),
        "median_ms": statistics.median(ms),
        "p95_ms": percentile(ms, 0.95),
        "max_ms": max(ms),
        "min_ms": min(ms),
        "history_entries": history,
        "build_seconds": build_seconds,
        **{f"answer_{k}": v for k, v in answer.items()},
    }
    print(
        f"  {summary['scrapes']} scrapes over HTTP (gunicorn, 2 workers): median "
        f"{summary['median_ms']:.1f} ms, p95 {summary['p95_ms']:.1f} ms, max "
        f"{summary['max_ms']:.1f} ms; each answer {answer['bytes']:,} bytes, "
        f"{answer['families']} families, {answer['samples']} samples "
        f"(history {answer['history_entries']:g}, {answer['syncs_counted']:g} syncs counted)"
    )
    found = [
        Verdict(
            SCRAPE_TARGET,
            f"{history} history entries",
            summary["p95_ms"],
            f"{summary['p95_ms']:.1f} ms (median {summary['median_ms']:.1f} ms, "
            f"{summary['scrapes']} scrapes)",
        )
    ]
    print_verdicts(found, "/metrics scrape")
    return {
        "workload": "metrics",
        "items": args.items,
        "releases": args.releases,
        "summary": summary,
        "targets": [v.to_record() for v in found],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__, items=300)
    parser.add_argument(
        "--releases", type=int, default=100, help="releases published and synced after the first"
    )
    parser.add_argument("--scrapes", type=int, default=50, help="(default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return workload_main(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
