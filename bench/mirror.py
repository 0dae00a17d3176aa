"""Workload 8: the Bungie-compatible mirror streaming a whole item table, and conditional GETs
answered 304 (issue 17).

A demo origin serves an 80,000-item release; the engine fills a cache on a key prefix of this
run's own, and the app serves it as deployed (gunicorn, 2 sync workers, loopback), as in
bench/reading.py.

- A whole item table streamed: its path is read from GET /Platform/Destiny2/Manifest/
  (`jsonWorldComponentContentPaths`), the file downloaded once and checked, untimed (it
  parses, it holds one entry per item of the release, each keyed by its own hash), then
  downloaded `--downloads` times more, one at a time, each timed from the request to its last
  byte. Targets: the median rate (body bytes / time, 10^6 bytes a MB) >= 100 MB/s; the peak
  RSS (VmHWM in /proc/<pid>/status) of the gunicorn workers (the master's children) after the
  downloads <= 150 MiB.
- A conditional GET answered 304: each route is asked once per path to learn its ETag; then
  the load generator (bench/loadgen.py, a process of its own) takes turns between GET /healthz
  and GETs sending `If-None-Match: <the ETag that path answered>`: /api/v1/manifest,
  /api/v1/definitions/<Table>/<hash> (random live hashes) and the mirror's item file. Target:
  304s/s >= 80% of /healthz's requests/s. A route that answers no ETag, or does not answer its
  own ETag with 304, is not loaded: its verdict is n/a, saying why.

A missed target comes with in-process profiles: of one download, or of /healthz and each
conditional GET that missed. From the root:

    .venv/bin/python bench/mirror.py                      # 80,000 items, 10 s per endpoint
    .venv/bin/python bench/mirror.py --items 5000 --downloads 3 --seconds 4 --rounds 2
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import redis
import requests
from loadgen import LoadGroup
from loadgen import run_turns
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
from stack import demo_origin_args
from stack import engine_settings
from stack import engine_store
from stack import run_keys
from stack import web_server
from stack import workload_main
from stack import workload_parser
from targets import Target
from targets import Verdict
from targets import print_verdicts
from werkzeug.test import TestResponse

STREAM_TARGET = Target("a whole item table streamed from the mirror", ">= 100 MB/s", 100.0, False)
RSS_TARGET = Target("peak RSS of the web workers streaming it", "<= 150 MiB", 150.0, True)
CONDITIONAL_TARGET = Target(
    "304s/s of a conditional GET / /healthz requests/s", ">= 80%", 0.80, at_most=False
)
MANIFEST_ROUTE = "/Platform/Destiny2/Manifest/"
MAX_REQUESTS = 2_000_000
DEFINITION_PATHS = 200
READ_BYTES = 1 << 20
STREAM_PROFILE_ROUNDS = 1
PROFILE_ROUNDS = 300
MB = 1_000_000
MIB = 1024 * 1024


class Keyed(msgspec.Struct):
    """The one field of a definition the check reads: the hash it is keyed by."""

    hash: int


# -- the gunicorn workers' memory ---------------------------------------------------------------


def children(parent: int) -> list[int]:
    """Return the pids of `parent`'s children (gunicorn's workers, of their master), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name, in parentheses, may hold spaces: the fields follow its last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def memory_mib(pid: int) -> dict[str, float]:
    """Return a process's peak and current RSS (VmHWM, VmRSS) in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0]) / 1024  # kB
    return {"peak_rss_mib": fields["VmHWM"], "rss_mib": fields["VmRSS"]}


def workers_memory(master: int) -> dict[str, dict[str, float]]:
    """Return the memory of each of the master's workers, by pid."""
    pids = children(master)
    if not pids:
        raise RuntimeError(f"gunicorn's master ({master}) has no workers")
    return {str(pid): memory_mib(pid) for pid in pids}


# -- streaming the item table -----------------------------------------------------------------


def item_file_path(url: str) -> str:
    """Return the item table's file as the mirror's manifest names it."""
    answer = requests.get(url + MANIFEST_ROUTE, headers={"X-API-Key": "bench"}, timeout=30)
    envelope = answer.json()
    if answer.status_code != 200 or envelope.get("ErrorCode") != 1:
        raise RuntimeError(
            f"GET {MANIFEST_ROUTE} answered {answer.status_code}: {answer.text[:300]!r}"
        )
    paths = envelope["Response"]["jsonWorldComponentContentPaths"]
    path = paths.get(LANGUAGE, {}).get(ITEM_TABLE)
    if not isinstance(path, str):
        raise RuntimeError(f"GET {MANIFEST_ROUTE} names no {LANGUAGE} {ITEM_TABLE} file: {paths}")
    return path


def download(url: str, path: str) -> tuple[int, float]:
    """GET `path` on a fresh connection, its body read and dropped; return its bytes and time."""
    split = urlsplit(url)
    connection = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port, timeout=60)
    buffer = bytearray(READ_BYTES)
    received = 0
    try:
        started = time.perf_counter()
        connection.request("GET", path)
        answer = connection.getresponse()
        if answer.status != 200:
            raise RuntimeError(f"GET {path} answered {answer.status}: {answer.read(300)!r}")
        while read := answer.readinto(buffer):
            received += read
        took = time.perf_counter() - started
    finally:
        connection.close()
    return received, took


def check_table(body: bytes, expected: int) -> dict[str, Any]:
    """Check a downloaded table: it parses, holds `expected` entries, each under its own hash."""
    try:
        table = msgspec.json.decode(body, type=dict[str, Keyed])
    except msgspec.DecodeError as exc:
        raise RuntimeError(f"the item file is not a table of definitions: {exc}") from exc
    strays = [key for key, definition in table.items() if int(key) != definition.hash]
    if len(table) != expected or strays:
        raise RuntimeError(
            f"the item file holds {len(table):,} entries, {expected:,} expected; "
            f"{len(strays)} keyed by another hash than their own (first: {strays[:3]})"
        )
    return {"entries": len(table), "body_bytes": len(body)}


def stream_table(args: argparse.Namespace, url: str, master: int, expected: int) -> dict[str, Any]:
    """Check the item file once, download it `args.downloads` times; return rates and memory."""
    path = item_file_path(url)
    before = workers_memory(master)
    answer = requests.get(url + path, timeout=120)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:300]!r}")
    checked = check_table(answer.content, expected)
    print(
        f"  {path}: {checked['entries']:,} entries, {checked['body_bytes'] / MB:.1f} MB, "
        "parsed and keyed by their own hashes"
    )
    runs = []
    for _ in range(args.downloads):
        size, took = download(url, path)
        if size != checked["body_bytes"]:
            raise RuntimeError(f"GET {path} sent {size:,} bytes, then {checked['body_bytes']:,}")
        runs.append({"seconds": took, "mb_s": size / took / MB})
        print(f"    download: {size / MB:.1f} MB in {took:.2f} s, {size / took / MB:.0f} MB/s")
    after = workers_memory(master)
    rates = [run["mb_s"] for run in runs]
    return {
        "path": path,
        **checked,
        "downloads": runs,
        "median_mb_s": statistics.median(rates),
        "best_mb_s": max(rates),
        "workers_before": before,
        "workers_after": after,
        "peak_rss_mib": max(w["peak_rss_mib"] for w in after.values()),
        "peak_rss_before_mib": max(w["peak_rss_mib"] for w in before.values()),
    }


def print_stream(found: dict[str, Any]) -> None:
    workers = ", ".join(
        f"{pid}: {before['peak_rss_mib']:.0f} -> {found['workers_after'][pid]['peak_rss_mib']:.0f}"
        for pid, before in found["workers_before"].items()
        if pid in found["workers_after"]
    )
    print(
        f"  median {found['median_mb_s']:.0f} MB/s, best {found['best_mb_s']:.0f} MB/s over "
        f"{len(found['downloads'])} downloads; workers' peak RSS (VmHWM MiB, before -> after "
        f"the downloads) {workers}"
    )


# -- conditional GETs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Conditional:
    """A route asked with If-None-Match: its paths, and the ETag each answered."""

    name: str
    label: str
    paths: list[str]
    etags: list[str]

    def load(self, connections: int) -> LoadGroup:
        """Return the load generator's group: each path with its own ETag, 304 expected."""
        return LoadGroup(
            self.name,
            "GET",
            self.paths,
            connections,
            ok=304,
            header_sets=[{"If-None-Match": etag} for etag in self.etags],
        )


def learn_etags(url: str, name: str, label: str, paths: list[str]) -> Conditional | str:
    """GET each path (the body left unread) and then the first with its own ETag.

    Return the route with its ETags, or why it cannot be loaded with conditional GETs.
    """
    etags = []
    with requests.Session() as session:
        for path in paths:
            with session.get(url + path, stream=True, timeout=30) as answer:
                if answer.status_code != 200:
                    return f"GET {label} answered {answer.status_code}"
                etag = answer.headers.get("ETag")
            if not etag:
                return f"GET {label} answered 200 without an ETag: no HTTP caching there yet"
            etags.append(etag)
        again = session.get(url + paths[0], headers={"If-None-Match": etags[0]}, timeout=30)
    if again.status_code != 304:
        return f"GET {label} with If-None-Match: its own ETag answered {again.status_code}"
    return Conditional(name, label, paths, etags)


def conditional_routes(
    url: str, hashes: list[int], item_file: str
) -> tuple[list[Conditional], dict[str, str]]:
    """Return the routes that answer 304 to their own ETag, and why the others are left out."""
    chosen = random.Random(SEED).sample(hashes, min(DEFINITION_PATHS, len(hashes)))
    candidates = [
        ("manifest", "/api/v1/manifest", ["/api/v1/manifest"]),
        (
            "definition",
            "/api/v1/definitions/<Table>/<hash>",
            [f"/api/v1/definitions/{ITEM_TABLE}/{h}" for h in chosen],
        ),
        ("item_file", "the mirror's item file", [item_file]),
    ]
    routes, skipped = [], {}
    for name, label, paths in candidates:
        found = learn_etags(url, name, label, paths)
        if isinstance(found, str):
            skipped[label] = found
            print(f"  {label}: not loaded: {found}")
        else:
            routes.append(found)
    return routes, skipped


def measure_conditionals(
    args: argparse.Namespace, url: str, routes: list[Conditional]
) -> dict[str, Any]:
    """Load /healthz and each conditional GET, taking turns; return their figures and ratios."""
    phases = {"healthz": [LoadGroup("healthz", "GET", ["/healthz"], args.connections)]}
    phases |= {route.name: [route.load(args.connections)] for route in routes}
    found = run_turns(url, phases, args, MAX_REQUESTS)
    healthz = {"label": "GET /healthz", **found["healthz"]["healthz"].summary()}
    # Only the expected answers count: a 200 to a conditional GET is not a 304's cost.
    healthz["ok_rps"] = healthz["statuses"].get("200", 0) / healthz["seconds"]
    answered = {}
    for route in routes:
        figures = {
            "label": f"{route.label} (If-None-Match)",
            **found[route.name][route.name].summary(),
        }
        figures["ok_rps"] = figures["statuses"].get("304", 0) / figures["seconds"]
        figures["ratio"] = figures["ok_rps"] / healthz["ok_rps"]
        answered[route.name] = figures
    print(f"  {'endpoint':<58} {'answers/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}")
    for row in (healthz, *answered.values()):
        ratio = f"{row['ratio']:.0%}" if "ratio" in row else "-"
        print(
            f"  {row['label']:<58} {row['ok_rps']:>9.0f} {ratio:>6} {row['p50_ms']:>7.1f} "
            f"{row['p99_ms']:>7.1f}  {row['statuses']}"
        )
    return {"healthz": healthz, "routes": answered}


# -- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run workload 8; print and return its figures and verdicts."""
    from app.manifest import sync
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    prefix, queue = run_keys("mirror")
    print()
    print(
        f"== workload 8: the mirror and conditional GETs, {args.items:,} items, "
        f"{args.downloads} downloads, {args.connections} connections, {args.seconds:g} s per "
        "endpoint =="
    )
    origin_args = demo_origin_args(args.items)
    profiles: list[RequestProfile] = []
    conditionals: dict[str, Any] = {}
    routes: list[Conditional] = []
    try:
        with DemoOriginProcess(*origin_args) as origin:
            settings = engine_settings(origin.url, prefix, api_key="test-api-key")
            store = engine_store(client, settings)
            result = sync.run(store, bungie_client(settings), trigger="bench")
            if result.release_id is None:
                raise RuntimeError(f"the cache could not be filled: {result.summary()}")
            table = store.keys.table(result.release_id, LANGUAGE, ITEM_TABLE)
            hashes = sorted(int(h) for h in client.hkeys(table))
            env = app_env(args.redis_url, origin.url, prefix, queue)
            server, url = web_server(env)
            with server:
                assert server.process is not None
                stream = stream_table(args, url, server.process.pid, len(hashes))
                print_stream(stream)
                routes, skipped = conditional_routes(url, hashes, stream["path"])
                if routes:
                    conditionals = measure_conditionals(args, url, routes)
            found = verdicts(args, stream, conditionals, skipped)
            missed = [route for route in routes if route.label in missed_scopes(found)]
            if found[0].met is False or missed:
                profiles = profile_misses(
                    env, stream["path"] if found[0].met is False else None, missed
                )
                print("  in-process profiles (a target is missed):")
                print_profiles(profiles)
    finally:
        delete_keys(client, prefix)
    print_verdicts(found, "the mirror and conditional GETs")
    return {
        "workload": "mirror",
        "items": args.items,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "stream": stream,
        **conditionals,
        "skipped": skipped,
        "profiles": [to_record(p) for p in profiles],
        "targets": [v.to_record() for v in found],
    }


def missed_scopes(found: list[Verdict]) -> set[str]:
    """Return the routes (their labels) whose conditional GET missed its target."""
    return {
        v.scope.removesuffix(" (If-None-Match)")
        for v in found
        if v.target is CONDITIONAL_TARGET and v.met is False
    }


def profile_misses(
    env: dict[str, str], item_file: str | None, missed: list[Conditional]
) -> list[RequestProfile]:
    """Replay in this process (the app on the same keys, no HTTP): one download of the item
    file (if given), and /healthz and each missed conditional GET, profiled."""
    from app import create_app

    settings = {name.removeprefix("FLASK_"): value for name, value in env.items()}
    del settings["CONFIG"]
    app = create_app("testing", {**settings, "SERVER_NAME": "localhost"})
    web = app.test_client()
    profiles = []
    if item_file is not None:

        def stream() -> int:
            answer = web.get(item_file, buffered=False)
            try:
                return sum(len(chunk) for chunk in answer.response)
            finally:
                answer.close()

        profiles.append(profile_call("GET the item file", stream, STREAM_PROFILE_ROUNDS, "tottime"))
    if missed:
        profiles.append(profile_call("GET /healthz", lambda: web.get("/healthz"), PROFILE_ROUNDS))
    for route in missed:
        turn = iter(range(10**9))

        def call(route: Conditional = route, turn: Iterator[int] = turn) -> TestResponse:
            n = next(turn)
            etag = route.etags[n % len(route.etags)]
            return web.get(route.paths[n % len(route.paths)], headers={"If-None-Match": etag})

        profiles.append(profile_call(f"{route.label} (If-None-Match)", call, PROFILE_ROUNDS))
    return profiles


def verdicts(
    args: argparse.Namespace,
    stream: dict[str, Any],
    conditionals: dict[str, Any],
    skipped: dict[str, str],
) -> list[Verdict]:
    """Judge the stream's median rate and the workers' peak RSS, then each conditional GET."""
    scope = f"{stream['entries']:,} items, 2 sync workers"
    found = [
        Verdict(
            STREAM_TARGET,
            scope,
            stream["median_mb_s"],
            f"median {stream['median_mb_s']:.0f} MB/s of {len(stream['downloads'])} downloads "
            f"of {stream['body_bytes'] / MB:.0f} MB (best {stream['best_mb_s']:.0f})",
        ),
        Verdict(
            RSS_TARGET,
            scope,
            stream["peak_rss_mib"],
            f"{stream['peak_rss_mib']:.0f} MiB (VmHWM of the busiest worker; "
            f"{stream['peak_rss_before_mib']:.0f} before the downloads)",
        ),
    ]
    healthz = conditionals.get("healthz", {}).get("ok_rps", 0.0)
    for route in conditionals.get("routes", {}).values():
        others = {s: n for s, n in route["statuses"].items() if s != "304"}
        shown = f"{route['ratio']:.0%} ({route['ok_rps']:.0f} vs {healthz:.0f} requests/s)"
        if others:
            shown += f"; also answered {others}"
        found.append(Verdict(CONDITIONAL_TARGET, route["label"], route["ratio"], shown))
    for label, reason in skipped.items():
        found.append(Verdict(CONDITIONAL_TARGET, f"{label} (If-None-Match)", None, reason))
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__, items=80_000)
    parser.add_argument(
        "--downloads",
        type=int,
        default=5,
        help="timed downloads of the item file (default: %(default)s)",
    )
    add_load_arguments(parser, "endpoint", seconds=10.0, rounds=3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return workload_main(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
