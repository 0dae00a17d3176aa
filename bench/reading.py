"""Workload 5: reading pages, against a trivial endpoint; and item search timed in process.

A demo origin serves a 40,000-item release; the engine fills a cache on a key prefix of this
run's own, and the app serves it as deployed (gunicorn, 2 sync workers). The load generator
(bench/loadgen.py, a process of its own) takes turns between these, the same time each:

- GET /healthz, the trivial endpoint;
- GET /items?q=<word>: the search page over 40,000 names (50 results a page), words varied;
- GET /api/v1/items?q=&per_page=200&page=<n>: a page that resolves 200 hashes in one lookup;
- GET /players/<type>/<id>: a player's page (one profile, cached, resolved through the cache),
  when the app has that route.

Targets: requests/s of each page >= 35% of /healthz's. Then `store.search` is timed in this
process over varied queries (words, fragments, misses, filters) once its index is built:
target p50 <= 5 ms. A missed target comes with an in-process profile of the request (or the
search). From the project root:

    .venv/bin/python bench/reading.py                     # 40,000 items, 10 s per endpoint
    .venv/bin/python bench/reading.py --items 5000 --seconds 4 --rounds 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import msgspec
import redis
import requests
from loadgen import LoadGroup
from loadgen import run_phases
from profiles import RequestProfile
from profiles import print_profiles
from profiles import profile_call
from profiles import to_record
from stack import ITEM_TABLE
from stack import LANGUAGE
from stack import SEED
from stack import add_load_arguments
from stack import app_env
from stack import bungie_client
from stack import delete_keys
from stack import engine_settings
from stack import engine_store
from stack import run_id
from stack import web_server
from stack import workload_parser
from stack import write_report
from targets import Target
from targets import Verdict
from targets import percentile
from targets import print_verdicts
from werkzeug.test import TestResponse

PAGE_TARGET = Target("page requests/s / /healthz requests/s", ">= 35%", 0.35, at_most=False)
SEARCH_TARGET = Target("store.search p50", "<= 5 ms", 5.0, at_most=True)
MAX_REQUESTS = 2_000_000
SEARCH_CALLS = 600
QUERY_WORDS = 60
PROFILE_ROUNDS = 300
PLAYER_NAME = "Guardian#1"


def item_names(client: redis.Redis, key: str, wanted: int = 3000) -> list[str]:
    """Return the names of some items of the live release (one HSCAN page at a time)."""
    names = []
    for _, data in client.hscan_iter(key, count=1000):
        name = (msgspec.json.decode(data).get("displayProperties") or {}).get("name")
        if name:
            names.append(name)
        if len(names) >= wanted:
            break
    return names


def query_words(names: list[str], count: int) -> list[str]:
    """Return varied search words: whole words of names, fragments, and words that miss."""
    rng = random.Random(SEED)
    words = sorted({w for name in names for w in name.split() if len(w) >= 3})
    chosen = rng.sample(words, min(count, len(words)))
    fragments = [w[:3].lower() for w in rng.sample(words, min(count // 4, len(words)))]
    return chosen + fragments + ["zzqx", "no such item"]


def search_cases(words: list[str]) -> list[dict[str, Any]]:
    """Return searches as the pages make them: a word, and some with filters."""
    rng = random.Random(SEED)
    cases: list[dict[str, Any]] = [{"query": w} for w in words]
    cases += [{"query": rng.choice(words), "item_type": 3} for _ in range(10)]
    cases += [{"query": "", "tier": 6}, {"query": "", "class_type": 1}, {"query": ""}]
    cases += [{"query": rng.choice(words), "page": 2} for _ in range(5)]
    return cases


def time_search(store: Any, cases: list[dict[str, Any]], calls: int) -> dict[str, Any]:
    """Build the search index (timed), then time `calls` searches over `cases`."""
    started = time.perf_counter()
    store.search("")
    build = time.perf_counter() - started
    times = []
    hits = []
    for number in range(calls):
        case = cases[number % len(cases)]
        started = time.perf_counter()
        found = store.search(**case)
        times.append((time.perf_counter() - started) * 1000)
        hits.append(found.total)
    return {
        "index_build_ms": build * 1000,
        "calls": calls,
        "distinct_queries": len(cases),
        "p50_ms": percentile(times, 0.5),
        "p90_ms": percentile(times, 0.9),
        "p99_ms": percentile(times, 0.99),
        "max_ms": max(times),
        "median_hits": statistics.median(hits),
    }


def round_trip_costs(
    client: redis.Redis, pointer: str, table: str, calls: int = 2000
) -> dict[str, Any]:
    """Measure what one Redis round trip costs here, in CPU: this process's and Redis's own.

    The pages' requests/s are set by CPU (two sync workers, the load generator and Redis share
    the machine's cores), and a page that reads Redis makes a round trip /healthz does not:
    what one costs, against what a whole /healthz request costs, is such a page's floor.
    """
    hashes = [int(h) for h, _ in itertools.islice(client.hscan_iter(table, count=200), 200)]

    def redis_cpu() -> float:
        found = client.info("cpu")
        return found["used_cpu_sys"] + found["used_cpu_user"]

    costs = {}
    for label, call in (
        ("GET of the live pointer", lambda: client.get(pointer)),
        (f"HMGET of {len(hashes)} definitions", lambda: client.hmget(table, hashes)),
    ):
        call()
        server, own, wall = redis_cpu(), time.process_time(), time.perf_counter()
        for _ in range(calls):
            call()
        costs[label] = {
            "wall_us": (time.perf_counter() - wall) / calls * 1e6,
            "client_cpu_us": (time.process_time() - own) / calls * 1e6,
            "redis_cpu_us": (redis_cpu() - server) / calls * 1e6,
        }
    return costs


def print_round_trips(costs: dict[str, Any]) -> None:
    for label, cost in costs.items():
        print(
            f"  one {label}: {cost['client_cpu_us']:.0f} us of CPU in the client + "
            f"{cost['redis_cpu_us']:.0f} us in Redis ({cost['wall_us']:.0f} us wall)"
        )


def player_path(url: str) -> str | None:
    """Return the page of a sample player, if the app has player pages (else None)."""
    try:
        answer = requests.get(f"{url}/api/v1/players", params={"name": PLAYER_NAME}, timeout=10)
    except requests.RequestException:
        return None
    if answer.status_code != 200 or not answer.json().get("players"):
        return None
    found = answer.json()["players"][0]
    return f"/players/{found['membership_type']}/{found['membership_id']}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run workload 5; print and return its figures and verdicts."""
    from app.manifest import sync
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    rid = run_id()
    prefix, queue = f"bench:{rid}:reading", f"bench-{rid}-reading"
    print()
    print(
        f"== workload 5: reading pages, {args.items:,} items, {args.connections} connections, "
        f"{args.seconds:g} s per endpoint =="
    )
    origin_args = ("--items", str(args.items), "--seed", str(SEED), "--languages", LANGUAGE)
    try:
        with DemoOriginProcess(*origin_args) as origin:
            settings = engine_settings(origin.url, prefix, api_key="test-api-key")
            store = engine_store(client, settings)
            result = sync.run(store, bungie_client(settings), trigger="bench")
            if result.release_id is None:
                raise RuntimeError(f"the cache could not be filled: {result.summary()}")
            table = store.keys.table(result.release_id, LANGUAGE, ITEM_TABLE)
            words = query_words(item_names(client, table), QUERY_WORDS)
            search = time_search(store, search_cases(words), SEARCH_CALLS)
            print_search(search)
            round_trips = round_trip_costs(client, store.keys.current, table)
            print_round_trips(round_trips)
            env = app_env(args.redis_url, origin.url, prefix, queue)
            server, url = web_server(env)
            with server:
                paths = page_paths(words, args.items, player_path(url))
                pages = measure_pages(args, url, paths)
            misses = [p for p in pages["pages"].values() if p["ratio"] < PAGE_TARGET.limit]
            profiles: list[RequestProfile] = []
            if misses or search["p50_ms"] > SEARCH_TARGET.limit:
                profiles = profile_reads(env, paths, store, search_cases(words))
                print("  in-process profiles (a target is missed):")
                print_profiles(profiles)
    finally:
        delete_keys(client, prefix)
    found = verdicts(pages, search)
    print_verdicts(found, "reading pages")
    return {
        "workload": "reading",
        "items": args.items,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "search": search,
        "round_trips": round_trips,
        "cpus": os.cpu_count(),
        **pages,
        "profiles": [to_record(p) for p in profiles],
        "targets": [v.to_record() for v in found],
    }


def page_paths(words: list[str], items: int, player: str | None) -> dict[str, list[str]]:
    """Return the paths each page endpoint is loaded with, taken in turn."""
    paths = {
        "healthz": ["/healthz"],
        "search": [f"/items?q={quote(word)}" for word in words],
        "hashes200": [
            f"/api/v1/items?q=&per_page=200&page={n}" for n in range(1, max(2, items // 200))
        ],
    }
    if player is not None:
        paths["player"] = [player]
    return paths


LABELS = {
    "healthz": "GET /healthz",
    "search": "GET /items?q=<word>",
    "hashes200": "GET /api/v1/items?per_page=200",
    "player": "GET /players/<type>/<id>",
}


def measure_pages(args: argparse.Namespace, url: str, paths: dict[str, list[str]]) -> dict:
    """Load /healthz and each page, taking turns, the same way; return figures and ratios."""
    phases = {
        name: [LoadGroup(name, "GET", chosen, args.connections)] for name, chosen in paths.items()
    }
    found = run_phases(
        url,
        phases,
        rounds=args.rounds,
        seconds=args.seconds / args.rounds,
        warmup=args.warmup,
        max_requests=MAX_REQUESTS,
    )
    runs = {name: {"label": LABELS[name], **found[name][name].summary()} for name in paths}
    healthz = runs.pop("healthz")
    for page in runs.values():
        page["ratio"] = page["rps"] / healthz["rps"]
    print(
        f"  {'endpoint':<32} {'requests':>9} {'req/s':>8} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for page in (healthz, *runs.values()):
        ratio = f"{page['ratio']:.0%}" if "ratio" in page else "-"
        print(
            f"  {page['label']:<32} {page['requests']:>9,} {page['rps']:>8.0f} {ratio:>6} "
            f"{page['p50_ms']:>8.1f} {page['p99_ms']:>8.1f}  {page['statuses']}"
        )
    return {"healthz": healthz, "pages": runs}


def profile_reads(
    env: dict[str, str], paths: dict[str, list[str]], store: Any, cases: list[dict[str, Any]]
) -> list[RequestProfile]:
    """Replay each endpoint in this process (the app on the same keys) and store.search."""
    from app import create_app

    settings = {name.removeprefix("FLASK_"): value for name, value in env.items()}
    del settings["CONFIG"]
    app = create_app("testing", {**settings, "SERVER_NAME": "localhost"})
    web = app.test_client()
    profiles = []
    for name, chosen in paths.items():
        turn = iter(range(10**9))

        def get(chosen: list[str] = chosen, turn: Iterator[int] = turn) -> TestResponse:
            return web.get(chosen[next(turn) % len(chosen)])

        profiles.append(profile_call(LABELS[name], get, PROFILE_ROUNDS))
    turn = iter(range(10**9))
    profiles.append(
        profile_call(
            "store.search", lambda: store.search(**cases[next(turn) % len(cases)]), PROFILE_ROUNDS
        )
    )
    return profiles


def verdicts(pages: dict[str, Any], search: dict[str, Any]) -> list[Verdict]:
    found = [
        Verdict(
            PAGE_TARGET,
            page["label"],
            page["ratio"],
            f"{page['ratio']:.0%} ({page['rps']:.0f} vs {pages['healthz']['rps']:.0f} requests/s)",
        )
        for page in pages["pages"].values()
    ]
    found.append(
        Verdict(
            SEARCH_TARGET,
            f"{search['calls']} searches",
            search["p50_ms"],
            f"p50 {search['p50_ms']:.2f} ms, p99 {search['p99_ms']:.2f} ms",
        )
    )
    return found


def print_search(search: dict[str, Any]) -> None:
    print(
        f"  store.search in process: index built in {search['index_build_ms']:.0f} ms; "
        f"{search['calls']} searches over {search['distinct_queries']} queries: "
        f"p50 {search['p50_ms']:.2f} ms, p90 {search['p90_ms']:.2f} ms, "
        f"p99 {search['p99_ms']:.2f} ms, max {search['max_ms']:.2f} ms "
        f"(median {search['median_hits']:g} hits)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__)
    add_load_arguments(parser, "endpoint", seconds=10.0, rounds=3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    write_report(args.json, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
