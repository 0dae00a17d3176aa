"""Workload 7 (issue 16): what the change log costs: sync time and memory, Redis, the release page.

A demo origin serves a release of N items (40,000; 5,000 with --quick); the engine syncs it
(every table TestingConfig caches, one language) on a base key prefix. The origin then
publishes a second release where every `index` moved and 2% of the items changed for real
(`publish(added=0, removed=0, changed=2%)`). For each round, every route copies the base
prefix's keys (COPY, in Redis) to a prefix of its own and syncs the second release there as a
whole process of its own, seen from here:

- log: the engine as it is: digests moved are compared field by field, the change log written;
- nolog: the same engine with the change log off: in its process `app.manifest.sync.ChangeLog`
  is patched to return None, so `_ingest` passes no log to the table writers, which then count
  the diff by digests only (no live dictionary read, no unpacking, no field comparison, no
  HKEYS of both tables for the removed ones, no change records written).

Rounds alternate the routes' order; a route's figures are its best time and its highest RSS
(as bench/ingest.py). Time is `sync.run` from start to end inside the process (check, ingest,
commit); the whole process, imports included, is shown beside it. Targets: log <= 1.2x nolog,
log's peak RSS (VmHWM) <= 150 MiB; the release's change log in Redis (MEMORY USAGE of
`Keys.changes(release_id)`) <= 5% of its tables and dictionaries (MEMORY USAGE summed).

Then the origin publishes a third release with 1,000 changed items; it is synced on a prefix
whose live release is the second, and gunicorn (2 sync workers, as bench/reading.py) serves it
while the load generator takes turns between GET /healthz and GET /releases/<id> (its first
page): target >= 35% of /healthz's requests/s. A missed target comes with a profile. From the
project root:

    .venv/bin/python bench/change_log.py                  # 40,000 items, 5 rounds
    .venv/bin/python bench/change_log.py --quick          # 5,000 items: a smoke run
    .venv/bin/python bench/change_log.py --quick --profile --json bench/out/change_log.json

Only keys under a prefix of this run's own (bench:<id>:change_log:...) are written, and they
are deleted when the run ends, also on errors and Ctrl+C.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import itertools
import json
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from unittest import mock

import redis
import requests
from ingest import ThreadProfiles
from ingest import peak_rss_kib
from loadgen import LoadGroup
from loadgen import run_turns
from profiles import RequestProfile
from profiles import print_profiles
from profiles import profile_call
from profiles import to_record
from stack import LANGUAGE
from stack import PROJECT_ROOT
from stack import add_load_arguments
from stack import app_env
from stack import bungie_client
from stack import delete_keys
from stack import demo_origin_args
from stack import engine_settings
from stack import engine_store
from stack import memory_usage
from stack import run_id
from stack import web_server
from stack import workload_parser
from stack import write_report
from targets import Target
from targets import Verdict
from targets import print_verdicts

ROUTES = ("log", "nolog")
CHANGED_SHARE = 0.02
PAGE_CHANGES = 1_000
DEFAULT_REPEAT = 5
QUICK = {"items": 5_000, "repeat": 3, "seconds": 4.0, "rounds": 2, "warmup": 0.5}
ROUTE_TIMEOUT = 900.0
MAX_REQUESTS = 2_000_000
PROFILE_ROUNDS = 100
MIB = 1024 * 1024
# The change log's own work, looked up in a profile of the log route: (file, function).
LOG_FUNCTIONS = (
    ("diff.py", "count_batch"),
    ("changes.py", "compare"),
    ("changes.py", "field_changes"),
    ("changes.py", "add"),
    ("packing.py", "unpack"),
    ("writer.py", "finish"),
    ("writer.py", "flush_log"),
)

TIME_TARGET = Target("sync with change log / without (2% changed)", "<= 1.2x", 1.2, at_most=True)
RSS_TARGET = Target("sync with change log: peak RSS", "<= 150 MiB", 150.0, at_most=True)
SHARE_TARGET = Target(
    "change log in Redis / release's tables (2% changed)", "<= 5%", 0.05, at_most=True
)
PAGE_TARGET = Target("release page requests/s / /healthz requests/s", ">= 35%", 0.35, at_most=False)


# -- the child process: one sync of the second release -------------------------------------


def no_change_log(*args: object) -> None:
    """Stand in for ChangeLog: a sync that gets None keeps no log and counts by digests."""


def run_route(args: argparse.Namespace) -> None:
    """Sync the origin's release on `args.prefix`; print the figures as JSON on the last line."""
    from app.manifest import sync

    settings = engine_settings(args.url, args.prefix, api_key="bench-key", languages=(LANGUAGE,))
    store = engine_store(redis.Redis.from_url(args.redis_url), settings)
    bungie = bungie_client(settings)
    patched: contextlib.AbstractContextManager[Any] = (
        mock.patch.object(sync, "ChangeLog", no_change_log)
        if args.route == "nolog"
        else contextlib.nullcontext()
    )
    start_rss = peak_rss_kib()
    profiler = ThreadProfiles() if args.profile_out else None
    with patched:
        started = time.perf_counter()
        if profiler is not None:
            result = profiler.runcall(lambda: sync.run(store, bungie, trigger="bench"))
        else:
            result = sync.run(store, bungie, trigger="bench")
        seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.dump_stats(args.profile_out)
    info = store.release_info(result.release_id) if result.release_id else None
    counts = dict.fromkeys(("added", "removed", "changed", "unclassified", "reclassified"), 0)
    for diff in result.diffs:
        for kind in counts:
            counts[kind] += getattr(diff, kind)
    figures = {
        "seconds": seconds,
        "start_rss_kib": start_rss,
        "peak_rss_kib": peak_rss_kib(),
        "outcome": result.outcome,
        "summary": result.summary(),
        "release_id": result.release_id,
        "timings": result.timings,
        "diff": counts,
        "changes": info.changes if info else None,
        "data_keys": store.data_keys(info.release) if info else [],
        "changes_key": store.keys.changes(result.release_id or ""),
    }
    print(json.dumps(figures))


# -- the parent: routes, rounds, figures -----------------------------------------------------


class RouteFailed(RuntimeError):
    """A route's process failed, said nothing we could read, or did not sync as expected."""


@dataclass
class Run:
    """One process syncing the second release, and what Redis held after it."""

    seconds: float
    process_seconds: float
    start_rss_kib: int
    peak_rss_kib: int
    timings: dict[str, float]
    diff: dict[str, int]
    changes: dict[str, int] | None
    changes_bytes: int
    release_bytes: int


@dataclass
class RouteResult:
    """The runs of one route: its best time and its highest RSS count."""

    route: str
    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.runs)

    @property
    def seconds(self) -> float:
        return min(run.seconds for run in self.runs)

    @property
    def process_seconds(self) -> float:
        return min(run.process_seconds for run in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(run.peak_rss_kib for run in self.runs) / 1024

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda run: run.seconds)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"route": self.route, "error": self.error}
        if self.runs:
            record |= {
                "seconds": round(self.seconds, 3),
                "process_seconds": round(self.process_seconds, 3),
                "peak_rss_mib": round(self.peak_rss_mib, 1),
                "runs": [asdict(run) for run in self.runs],
            }
        return record


def copy_keys(client: redis.Redis, source: str, target: str) -> int:
    """COPY every key under prefix `source` to the same name under `target`; return how many."""
    copied = 0
    keys = client.scan_iter(match=f"{source}:*", count=1000)
    while batch := list(itertools.islice(keys, 500)):
        with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.copy(key, target + key.decode()[len(source) :])
            copied += sum(1 for done in pipe.execute() if done)
    return copied


def spawn_route(command: list[str]) -> tuple[dict[str, Any], float]:
    """Run a route's process; return its figures and the whole process's wall time."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=ROUTE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RouteFailed(f"no answer within {ROUTE_TIMEOUT:.0f}s") from None
    process_seconds = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise RouteFailed(tail[0][:160])
    try:
        return json.loads(lines[-1]), process_seconds
    except json.JSONDecodeError:
        raise RouteFailed(f"unreadable figures: {lines[-1][:120]!r}") from None


def check_route(route: str, figures: dict[str, Any], release_id: str, changed: int) -> None:
    """Refuse a run that did not sync the second release as published, or logged otherwise."""
    if figures["outcome"] != "updated" or figures["release_id"] != release_id:
        raise RouteFailed(f"did not sync {release_id}: {figures['summary']}")
    diff = figures["diff"]
    if (diff["added"], diff["removed"], diff["changed"]) != (0, 0, changed):
        raise RouteFailed(f"counted {diff}, not {changed:,} changed and nothing else")
    summary = figures["changes"]
    if route == "nolog" and summary is not None:
        raise RouteFailed(f"kept a change log ({summary}) with ChangeLog patched out")
    if route == "log" and (summary is None or summary["kept"] != changed or summary["cut"]):
        raise RouteFailed(f"its change log is {summary}, not {changed:,} records kept")


def measure_route(
    route: str,
    args: argparse.Namespace,
    origin_url: str,
    base: str,
    prefix: str,
    expected: tuple[str, int],
    profile_out: Path | None = None,
) -> Run:
    """Copy the base cache to `prefix`, sync the second release there in a process; measure."""
    client = redis.Redis.from_url(args.redis_url)
    command = [sys.executable, str(Path(__file__).resolve()), "--route", route]
    command += ["--url", origin_url, "--redis-url", args.redis_url, "--prefix", prefix]
    if profile_out is not None:
        command += ["--profile-out", str(profile_out)]
    try:
        copy_keys(client, base, prefix)
        figures, process_seconds = spawn_route(command)
        check_route(route, figures, *expected)
        changes_bytes = memory_usage(client, figures["changes_key"])
        if route == "nolog" and changes_bytes:
            raise RouteFailed("wrote a change log with ChangeLog patched out")
        return Run(
            seconds=figures["seconds"],
            process_seconds=process_seconds,
            start_rss_kib=figures["start_rss_kib"],
            peak_rss_kib=figures["peak_rss_kib"],
            timings=figures["timings"],
            diff=figures["diff"],
            changes=figures["changes"],
            changes_bytes=changes_bytes,
            release_bytes=sum(memory_usage(client, key) for key in figures["data_keys"]),
        )
    finally:
        delete_keys(client, prefix)


def sync_here(store: Any, settings: Any) -> Any:
    """Sync in this process (untimed set-up); return the result, refusing anything but updated."""
    from app.manifest import sync

    result = sync.run(store, bungie_client(settings), trigger="bench")
    if result.outcome != sync.UPDATED or result.release_id is None:
        raise RuntimeError(f"the set-up sync did not update: {result.summary()}")
    return result


def measure_syncs(
    args: argparse.Namespace, origin: Any, client: redis.Redis, run_prefix: str
) -> dict[str, Any]:
    """Sync release 1 on a base prefix, publish release 2, then time every route in rounds."""
    base = f"{run_prefix}:base"
    settings = engine_settings(origin.url, base, api_key="bench-key", languages=(LANGUAGE,))
    first = sync_here(engine_store(client, settings), settings)
    changed = max(1, round(args.items * CHANGED_SHARE))
    published = origin.admin.publish(added=0, removed=0, changed=changed)
    print(
        f"  release 1 synced on the base prefix ({sum(first.counts[LANGUAGE].values()):,} "
        f"definitions in {len(first.counts[LANGUAGE])} tables); release 2 published: every "
        f"index renumbered, {len(published['changed']):,} items changed"
    )
    expected_id = release_id_of(settings)
    routes = {route: RouteResult(route) for route in ROUTES}
    for attempt in range(args.repeat):
        order = ROUTES if attempt % 2 == 0 else ROUTES[::-1]
        for route in order:
            result = routes[route]
            if result.error:
                continue
            prefix = f"{run_prefix}:{attempt}:{route}"
            try:
                result.runs.append(
                    measure_route(route, args, origin.url, base, prefix, (expected_id, changed))
                )
            except RouteFailed as exc:
                result.error = str(exc)
    print_routes(routes)
    profile = None
    log, nolog = routes["log"], routes["nolog"]
    missed = log.ok and nolog.ok and log.seconds / nolog.seconds > TIME_TARGET.limit
    if args.profile or missed:
        profile = profile_route(
            args, origin.url, base, f"{run_prefix}:prof", (expected_id, changed)
        )
    return {
        "changed": changed,
        "release_id": expected_id,
        "definitions": sum(first.counts[LANGUAGE].values()),
        "routes": routes,
        "profile": profile,
        "base": base,
        "settings": settings,
    }


def release_id_of(settings: Any) -> str:
    """Return the id the engine gives the origin's current release (as a sync would)."""
    from app.manifest.release import Release

    return Release.from_manifest(bungie_client(settings).get_manifest(), settings).id


def profile_route(
    args: argparse.Namespace, origin_url: str, base: str, prefix: str, expected: tuple[str, int]
) -> dict[str, Any] | None:
    """Run the log route once more under cProfile (untimed); print where its time goes."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as scratch:
        out = Path(scratch) / "change-log.prof"
        try:
            run = measure_route("log", args, origin_url, base, prefix, expected, out)
        except RouteFailed as exc:
            print(f"  profile: the log route failed: {exc}")
            return None
        stats = pstats.Stats(str(out))
        text = io.StringIO()
        pstats.Stats(str(out), stream=text).strip_dirs().sort_stats("tottime").print_stats(20)
    # typeshed's pstats.Stats omits `stats`, the raw table every Stats method reads.
    table = stats.stats  # type: ignore[attr-defined]
    own = {}
    for (filename, _, function), (_, calls, _, cumulative, _) in table.items():
        for suffix, name in LOG_FUNCTIONS:
            where = filename.endswith((f"manifest/{suffix}", f"store/{suffix}"))
            if where and function == name:
                own[f"{suffix}:{name}"] = {"calls": calls, "cumulative": cumulative}
    body = text.getvalue()
    listing = body[body.index("   ncalls") :] if "   ncalls" in body else body
    print(
        f"  profile of one more log run ({run.seconds:.2f} s under cProfile), the change log's "
        "own functions (cumulative s, summed over threads):"
    )
    for name, found in own.items():
        print(f"    {name}: {found['cumulative']:.3f} s in {found['calls']:,} calls")
    print("  by tottime:")
    print("\n".join("    " + line for line in listing.rstrip().splitlines()))
    return {"seconds": run.seconds, "log_functions": own, "listing": listing}


def print_routes(routes: dict[str, RouteResult]) -> None:
    print(
        f"  {'route':<6} {'sync s':>7} {'process s':>9} {'peak RSS MiB':>12} "
        f"{'changed':>8} {'log kept':>8} {'log KiB':>8}  status"
    )
    for result in routes.values():
        if not result.runs:
            print(f"  {result.route:<6} {'-':>7} {'-':>9} {'-':>12}  BROKEN: {result.error}")
            continue
        best = result.best
        kept = best.changes["kept"] if best.changes else "-"
        print(
            f"  {result.route:<6} {result.seconds:>7.2f} {result.process_seconds:>9.2f} "
            f"{result.peak_rss_mib:>12.1f} {best.diff['changed']:>8,} {kept!s:>8} "
            f"{best.changes_bytes / 1024:>8.1f}  "
            f"{'ok' if result.error is None else 'BROKEN: ' + result.error}"
        )
        steps = ", ".join(f"{name} {value:.2f} s" for name, value in best.timings.items())
        print(f"         its steps (best run): {steps}")


# -- the release page -----------------------------------------------------------------------


def measure_page(
    args: argparse.Namespace, origin: Any, client: redis.Redis, syncs: dict[str, Any], rid: str
) -> dict[str, Any]:
    """Publish a release with 1,000 changes on top of the second; load its page against /healthz."""
    prefix, queue = f"bench:{rid}:change_log:page", f"bench-{rid}-change_log"
    copy_keys(client, syncs["base"], prefix)
    settings = engine_settings(origin.url, prefix, api_key="bench-key", languages=(LANGUAGE,))
    store = engine_store(client, settings)
    sync_here(store, settings)
    origin.admin.publish(added=0, removed=0, changed=PAGE_CHANGES)
    third = sync_here(store, settings)
    info = store.release_info(third.release_id)
    logged = info.changes if info else None
    names = [change["name"] for change in store.change_log(third.release_id) if change["name"]]
    print(
        f"  release 3 published ({PAGE_CHANGES:,} items changed) and synced: its change log "
        f"{logged}"
    )
    path = f"/releases/{third.release_id}"
    env = app_env(args.redis_url, origin.url, prefix, queue)
    server, url = web_server(env)
    with server:
        answer = requests.get(url + path, timeout=30)
        kind = answer.headers.get("Content-Type", "")
        if answer.status_code != 200 or not kind.startswith("text/html"):
            said = server.output().strip().splitlines()[-12:]
            raise RuntimeError(
                f"GET {path} answered {answer.status_code} {kind}; the server's log ends:\n"
                + "\n".join(said)
            )
        shown = sum(1 for name in set(names) if html.escape(name) in answer.text)
        print(
            f"  GET {path}: {len(answer.content):,} bytes of HTML; names of changed definitions "
            f"in it: {shown:,} of {len(set(names)):,}"
        )
        groups = {
            "healthz": [LoadGroup("healthz", "GET", ["/healthz"], args.connections)],
            "release": [LoadGroup("release", "GET", [path], args.connections)],
        }
        found = run_turns(url, groups, args, MAX_REQUESTS)
    healthz = found["healthz"]["healthz"].summary()
    page = found["release"]["release"].summary()
    page["ratio"] = page["rps"] / healthz["rps"]
    print(
        f"  {'endpoint':<28} {'requests':>9} {'req/s':>8} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for label, figures in (("GET /healthz", healthz), ("GET /releases/<id>", page)):
        ratio = f"{figures['ratio']:.0%}" if "ratio" in figures else "-"
        print(
            f"  {label:<28} {figures['requests']:>9,} {figures['rps']:>8.0f} {ratio:>6} "
            f"{figures['p50_ms']:>8.1f} {figures['p99_ms']:>8.1f}  {figures['statuses']}"
        )
    profiles: list[RequestProfile] = []
    if page["ratio"] < PAGE_TARGET.limit or args.profile:
        profiles = [profile_page(env, path)]
        print("  in-process profile of the release page:")
        print_profiles(profiles)
        print("\n".join("    " + line for line in profiles[0].listing.rstrip().splitlines()))
    return {
        "release_id": third.release_id,
        "changed": PAGE_CHANGES,
        "changes": logged,
        "page_bytes": len(answer.content),
        "names_shown": shown,
        "names": len(set(names)),
        "healthz": healthz,
        "page": page,
        "profiles": [to_record(p) for p in profiles],
    }


def profile_page(env: dict[str, str], path: str) -> RequestProfile:
    """Replay the release page in this process (the app on the same keys); time and profile it."""
    from app import create_app

    settings = {name.removeprefix("FLASK_"): value for name, value in env.items()}
    del settings["CONFIG"]
    web = create_app("testing", {**settings, "SERVER_NAME": "localhost"}).test_client()
    # By own time: a page's cumulative listing is the chain of Flask and Jinja calls above it.
    return profile_call("GET /releases/<id>", lambda: web.get(path), PROFILE_ROUNDS, "tottime")


# -- verdicts and the command line ----------------------------------------------------------


def verdicts(
    syncs: dict[str, Any] | None, page: dict[str, Any] | None, items: int
) -> list[Verdict]:
    """Judge the sync's time and memory, the log's share of Redis, and the page's rate."""
    scope = f"{items:,} items, 2% changed"
    found = []
    routes = syncs["routes"] if syncs else {}
    log, nolog = routes.get("log"), routes.get("nolog")
    if log is None or nolog is None or not log.ok or not nolog.ok:
        found.append(Verdict(TIME_TARGET, scope, None, "a route BROKEN"))
    else:
        ratio = log.seconds / nolog.seconds
        whole = log.process_seconds / nolog.process_seconds
        shown = (
            f"{ratio:.2f}x ({log.seconds:.2f} vs {nolog.seconds:.2f} s; whole processes "
            f"{whole:.2f}x, {log.process_seconds:.2f} vs {nolog.process_seconds:.2f} s)"
        )
        found.append(Verdict(TIME_TARGET, scope, ratio, shown))
    if log is None or not log.ok:
        found.append(Verdict(RSS_TARGET, scope, None, "log BROKEN"))
        found.append(Verdict(SHARE_TARGET, scope, None, "log BROKEN"))
    else:
        found.append(Verdict(RSS_TARGET, scope, log.peak_rss_mib, f"{log.peak_rss_mib:.1f} MiB"))
        best = log.best
        share = best.changes_bytes / best.release_bytes
        kept = best.changes["kept"] if best.changes else 0
        shown = (
            f"{share:.2%} ({best.changes_bytes / 1024:.0f} KiB for {kept:,} records; tables + "
            f"dictionaries {best.release_bytes / MIB:.1f} MiB)"
        )
        found.append(Verdict(SHARE_TARGET, scope, share, shown))
    if page is None:
        found.append(Verdict(PAGE_TARGET, f"{PAGE_CHANGES:,} changes", None, "not measured"))
    else:
        p, h = page["page"], page["healthz"]
        shown = f"{p['ratio']:.0%} ({p['rps']:.0f} vs {h['rps']:.0f} requests/s)"
        found.append(
            Verdict(PAGE_TARGET, f"{PAGE_CHANGES:,} changes, first page", p["ratio"], shown)
        )
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the workload; print and return its figures and verdicts."""
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    rid = run_id()
    run_prefix = f"bench:{rid}:change_log"
    print()
    print(
        f"== workload 7: the change log's cost, {args.items:,} items, {args.repeat} round(s); "
        f"the release page, {args.connections} connections, {args.seconds:g} s per endpoint =="
    )
    origin_args = demo_origin_args(args.items)
    syncs = page = None
    try:
        with DemoOriginProcess(*origin_args) as origin:
            syncs = measure_syncs(args, origin, client, run_prefix)
            page = measure_page(args, origin, client, syncs, rid)
    finally:
        delete_keys(client, run_prefix)
    found = verdicts(syncs, page, args.items)
    print_verdicts(found, "the change log")
    routes = syncs["routes"] if syncs else {}
    return {
        "workload": "change_log",
        "items": args.items,
        "repeat": args.repeat,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "changed": syncs["changed"] if syncs else None,
        "definitions": syncs["definitions"] if syncs else None,
        "routes": {name: result.to_record() for name, result in routes.items()},
        "profile": syncs["profile"] if syncs else None,
        "page": page,
        "profiles": page["profiles"] if page else [],
        "targets": [v.to_record() for v in found],
        "broken": any(not result.ok for result in routes.values()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__)
    add_load_arguments(parser, "endpoint", seconds=10.0, rounds=3)
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help="rounds of both routes: the best time and the highest RSS count "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: " + ", ".join(f"--{k} {v:g}" for k, v in QUICK.items()),
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the log route and the page even when met"
    )
    # One route in a process of its own: how the benchmark calls itself.
    parser.add_argument("--route", choices=ROUTES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if min(args.items, args.repeat, args.rounds) < 1:
        parser.error("--items, --repeat and --rounds take whole numbers of 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.route:
        run_route(args)
        return 0
    report = run(args)
    write_report(args.json, report)
    return 1 if report["broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
