"""Workload 1 (and 2): how fast, and in how much memory, the item table gets into Redis.

Each route runs as a whole process of its own against a local demo origin (`devtools.demo`)
and a real Redis, and ends with every item definition, whole, in Redis:

- engine: this project's full sync (`sync.run`) of DestinyInventoryItemDefinition, on a fresh
  key prefix, so it downloads and ingests everything;
- floor: the same work written as a plain script: download the whole file, split it into its
  entries' exact bytes (`msgspec.json.decode(body, type=dict[str, msgspec.Raw])`), train a zstd
  dictionary on the first 2 MiB of definitions (packing.py's parameters; the engine trains on
  its first slab, as large), compress every definition with it (`multi_compress_to_buffer`, 2
  threads) and write them with pipelined HSET, 500 fields a command. Whole, not in slabs: a
  prototype of both (2026-12-06, 40,000 items) took 0.34-0.51 s whole and 0.55-0.61 s in
  streamed slabs (the engine's `iter_json_table`), so the whole file is the faster floor. It
  writes no digest and counts no diff: those are the engine's own work beyond the floor;
- dvr: the original app's way: `json.loads` of the whole file, then one SET per definition.

Runs go in rounds (every route once, then again), so that noise from elsewhere on the machine
falls on every route alike; a route's figures are its best time and its highest RSS (how many
rounds, and why: docs/DECISIONS.md, "Benchmark rounds"). A route's time runs inside its process
from the start of the download to the end of the last Redis write; the process time is the whole
process, seen from here. Peak RSS is the process's own high-water mark (VmHWM, so Linux only).
For each table size this prints the routes, the engine's Redis footprint (workload 2: its item
table's hash and dictionary), and the targets of issue 15: engine <= 1.5x the floor, >= 10x
faster than DVR-style, peak RSS <= 150 MiB and flat, time linear in the size, Redis footprint
<= 15% of the raw JSON. A size where a target is missed gets a profile of one more engine run.
From the project root:

    .venv/bin/python bench/ingest.py                 # 10,000 to 80,000 items, 5 rounds
    .venv/bin/python bench/ingest.py --quick         # 5,000 items: a smoke run
    .venv/bin/python bench/ingest.py --items 40000 --repeat 1 --json bench/out/ingest.json

Only keys under a prefix of this run's own (bench:<id>:...) are written, and they are deleted
when the run ends, also on errors and Ctrl+C.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import Any
from typing import TypeVar
from typing import cast

import msgspec
import redis
import requests
import zstandard
from redis.typing import EncodableT
from stack import DEFAULT_REDIS_URL
from stack import delete_keys
from stack import demo_origin_args
from stack import describe_machine
from stack import footprint
from stack import memory_usage
from stack import print_machine
from stack import run_id
from stack import write_report
from targets import Target
from targets import Verdict
from targets import print_verdicts

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TABLE = "DestinyInventoryItemDefinition"
LANGUAGE = "en"
SEED = 1
DEFAULT_SIZES = (10_000, 20_000, 40_000, 80_000)
DEFAULT_REPEAT = 5
DEFAULT_DVR_ROUNDS = 1
QUICK_SIZES = (5_000,)
ROUTES = ("engine", "floor", "dvr")
FIELDS_PER_HSET = 500
HSETS_PER_ROUND_TRIP = 4
HTTP_TIMEOUT = (5.0, 60.0)
ROUTE_TIMEOUT = 900.0
MIB = 1024 * 1024

# The floor compresses as the engine does: these mirror app/manifest/packing.py;
# `check_floor_parameters` refuses to measure if they drift apart.
DICTIONARY_BYTES = 32 * 1024
LEVEL = 3
TRAINING = {"k": 2048, "d": 8, "steps": 4, "level": LEVEL}
COMPRESS_THREADS = 2
SAMPLE_BYTES = 1024 * 1024
T = TypeVar("T")


# -- the child process: one route ---------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a route reads the item table and under which prefix it writes."""

    base_url: str
    path: str
    prefix: str

    @property
    def file_url(self) -> str:
        return self.base_url + self.path


@dataclass
class Written:
    """What a route wrote: the hash of definitions (None: a key per definition), how many, and
    the keys that hold the table (its hash and its dictionary), measured for the footprint."""

    key: str | None
    count: int
    timings: dict[str, float] = field(default_factory=dict)
    table_keys: list[str] = field(default_factory=list)


Work = Callable[[], Written]


def prepare_engine(source: Source, client: redis.Redis) -> Work:
    """Set up a full sync of the item table on a fresh prefix (the origin accepts any key)."""
    # Imported here: only the engine's process loads the app, Flask included, as a worker does.
    from app.manifest import sync
    from app.manifest.client import BungieClient
    from app.manifest.settings import ManifestSettings
    from app.manifest.store import ManifestStore
    from config import TestingConfig
    from config import settings_dict

    settings = replace(
        ManifestSettings.from_mapping(settings_dict(TestingConfig)),
        base_url=source.base_url,
        api_key="bench-key",
        key_prefix=source.prefix,
        tables=(TABLE,),
        languages=(LANGUAGE,),
    )
    store = ManifestStore(client, settings)
    bungie = BungieClient.from_settings(settings)

    def work() -> Written:
        result = sync.run(store, bungie, trigger="bench")
        if result.outcome != sync.UPDATED or result.release_id is None:
            raise RuntimeError(f"the sync did not update: {result.summary()}")
        key = store.keys.table(result.release_id, LANGUAGE, TABLE)
        keys = [key, store.keys.dictionary(result.release_id, LANGUAGE, TABLE)]
        return Written(key, result.counts[LANGUAGE][TABLE], result.timings, keys)

    return work


def prepare_floor(source: Source, client: redis.Redis) -> Work:
    """The same work as a plain script: download, split, train, compress, pipelined HSET."""
    split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
    key = f"{source.prefix}:{TABLE}"
    dictionary_key = f"{key}:dict"

    def work() -> Written:
        timings: dict[str, float] = {}
        started = time.perf_counter()

        def lap(name: str) -> None:
            timings[name] = round(time.perf_counter() - started - sum(timings.values()), 3)

        body = download(source.file_url)
        lap("download")
        table = split(body)
        # Each Raw is a view of the body, not a copy, and zstd takes it as a buffer (msgspec's
        # type stubs do not say Raw is one).
        names = list(table)
        definitions = cast("list[bytes | bytearray | memoryview]", list(table.values()))
        lap("split")
        trained = zstandard.train_dictionary(
            DICTIONARY_BYTES, sample(definitions, SAMPLE_BYTES), **TRAINING
        )
        lap("train")
        compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=trained)
        frames = compressor.multi_compress_to_buffer(definitions, threads=COMPRESS_THREADS)
        lap("compress")
        client.set(dictionary_key, trained.as_bytes())
        values = (frames[i].tobytes() for i in range(len(frames)))
        count = write_hash(client, key, zip(names, values, strict=True))
        lap("write")
        return Written(key, count, timings, [key, dictionary_key])

    return work


def prepare_dvr(source: Source, client: redis.Redis) -> Work:
    """The original app's way: the whole file through `json.loads`, one SET per definition."""

    def work() -> Written:
        response = requests.get(source.file_url, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        definitions = json.loads(response.content)
        for item, definition in definitions.items():
            client.set(f"{source.prefix}:{item}", json.dumps(definition))
        return Written(None, len(definitions))

    return work


PREPARE: dict[str, Callable[[Source, redis.Redis], Work]] = {
    "engine": prepare_engine,
    "floor": prepare_floor,
    "dvr": prepare_dvr,
}


def sample(definitions: Sequence[bytes | bytearray | memoryview], size: int) -> list[bytes]:
    """Return the first definitions, as bytes, until they weigh `size` bytes (the training set)."""
    taken, total = [], 0
    for definition in definitions:
        taken.append(bytes(definition))
        total += len(taken[-1])
        if total >= size:
            break
    return taken


def check_floor_parameters() -> None:
    """Refuse to measure a floor that compresses otherwise than the engine does."""
    from app.manifest import packing

    ours = (DICTIONARY_BYTES, LEVEL, TRAINING, COMPRESS_THREADS, SAMPLE_BYTES)
    engine = (
        packing.DICTIONARY_BYTES,
        packing.LEVEL,
        packing.TRAINING,
        packing.COMPRESS_THREADS,
        packing.SAMPLE_BYTES,
    )
    if ours != engine:
        raise RuntimeError(
            "bench/ingest.py's floor no longer compresses as app/manifest/packing.py does "
            f"(dictionary, level, training, threads, sample): {ours} here, {engine} there"
        )


def download(url: str) -> bytes:
    """Return a whole file: one read of the raw stream, the fastest and leanest way here."""
    with requests.get(url, stream=True, timeout=HTTP_TIMEOUT) as response:
        response.raise_for_status()
        response.raw.decode_content = True
        return response.raw.read()


def write_hash(client: redis.Redis, key: str, pairs: Iterable[tuple[str, bytes]]) -> int:
    """HSET `pairs` into `key`, FIELDS_PER_HSET a command, pipelined; return how many."""
    written = 0
    # redis-py's HSET takes a Mapping, invariant in its key: widen to what it accepts.
    remaining: Iterator[tuple[EncodableT, EncodableT]] = iter(pairs)
    with client.pipeline(transaction=False) as pipe:
        while batch := dict(itertools.islice(remaining, FIELDS_PER_HSET)):
            pipe.hset(key, mapping=batch)
            written += len(batch)
            if len(pipe) >= HSETS_PER_ROUND_TRIP:
                pipe.execute()
        pipe.execute()
    return written


def peak_rss_kib() -> int:
    """Return this process's peak resident set size so far, in KiB (VmHWM; Linux only).

    Not ru_maxrss: Linux keeps that across fork and exec, so a route's process would report
    the benchmark's own peak (it reads the whole file once). VmHWM starts afresh with the program.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM line")


class ThreadProfiles:
    """cProfile of a call and of every Python thread it starts (the engine's writer thread).

    cProfile sees the thread it is enabled in only; the engine compresses and writes in a
    thread of its own, so each thread started during the call gets a profiler of its own, and
    the stats are added up (times of threads that ran at once add up past the wall time).
    """

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.threads: list[cProfile.Profile] = []

    def runcall(self, work: Callable[[], T]) -> T:
        """Run `work` profiled, with every thread it starts."""
        original = threading.Thread.run
        profiles = self.threads

        def profiled_run(thread: threading.Thread) -> None:
            profile = cProfile.Profile()
            profiles.append(profile)
            profile.runcall(original, thread)

        threading.Thread.run = profiled_run  # type: ignore[method-assign,assignment]
        try:
            return self.main.runcall(work)
        finally:
            threading.Thread.run = original  # type: ignore[method-assign]

    def dump_stats(self, path: str) -> None:
        """Write the stats of every thread, added up, to `path`."""
        stats = pstats.Stats(self.main)
        for profile in self.threads:
            stats.add(profile)
        stats.dump_stats(path)


def run_route(args: argparse.Namespace) -> None:
    """Run one route in this process; print its figures as JSON on the last line of stdout."""
    source = Source(args.url, args.path, args.prefix)
    work = PREPARE[args.route](source, redis.Redis.from_url(args.redis_url))
    start_rss = peak_rss_kib()
    profiler = ThreadProfiles() if args.profile_out else None
    started = time.perf_counter()
    written = profiler.runcall(work) if profiler else work()
    seconds = time.perf_counter() - started
    if profiler:
        profiler.dump_stats(args.profile_out)
    figures = {
        **asdict(written),
        "seconds": seconds,
        "start_rss_kib": start_rss,
        "peak_rss_kib": peak_rss_kib(),
    }
    print(json.dumps(figures))


# -- the parent process: origins, routes, figures ---------------------------------------------


class RouteFailed(RuntimeError):
    """A route's process failed or said nothing we could read."""


@dataclass(frozen=True)
class ItemFile:
    """The item table as the origin serves it."""

    base_url: str
    path: str
    size: int
    entries: int


@dataclass
class Run:
    """One process running one route, and what Redis held after it."""

    seconds: float
    process_seconds: float
    start_rss_kib: int
    peak_rss_kib: int
    reported: int
    in_redis: int
    # The engine's keys (named without the run's prefix) and the bytes Redis uses for each.
    footprint: dict[str, int]
    timings: dict[str, float]
    # The bytes of the route's table: its hash and dictionary (0: a key per definition).
    table_bytes: int = 0


@dataclass
class RouteResult:
    """The runs of one route at one size; its figures are the best time and the highest RSS."""

    route: str
    expected: int
    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def status(self) -> str:
        if self.error:
            return f"BROKEN: {self.error}"
        for run in self.runs:
            if run.in_redis != self.expected or run.reported != self.expected:
                return (
                    f"BROKEN: {run.in_redis:,} entries in Redis, {run.reported:,} reported, "
                    f"{self.expected:,} in the file"
                )
        return "ok"

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda run: run.seconds)

    @property
    def seconds(self) -> float:
        return self.best.seconds

    @property
    def process_seconds(self) -> float:
        return min(run.process_seconds for run in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(run.peak_rss_kib for run in self.runs) / 1024

    @property
    def start_rss_mib(self) -> float:
        return max(run.start_rss_kib for run in self.runs) / 1024

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"route": self.route, "status": self.status}
        if self.runs:
            record |= {
                "seconds": round(self.seconds, 3),
                "process_seconds": round(self.process_seconds, 3),
                "peak_rss_mib": round(self.peak_rss_mib, 1),
                "start_rss_mib": round(self.start_rss_mib, 1),
                "runs": [asdict(run) for run in self.runs],
            }
        return record


@dataclass
class SizeResult:
    """Every route at one table size."""

    items: int
    file: ItemFile
    origin_ready_seconds: float
    routes: dict[str, RouteResult] = field(default_factory=dict)
    profile: str | None = None

    def usable(self, route: str) -> RouteResult | None:
        result = self.routes.get(route)
        return result if result is not None and result.ok and result.runs else None

    @property
    def floor(self) -> RouteResult | None:
        """The floor route, if it ended right."""
        return self.usable("floor")

    @property
    def footprint_bytes(self) -> int | None:
        """Bytes of every key the engine's sync left (the table, its release's records...)."""
        engine = self.usable("engine")
        return sum(engine.best.footprint.values()) if engine else None

    @property
    def table_bytes(self) -> int | None:
        """Bytes of the engine's item table: its hash and its dictionary (MEMORY USAGE)."""
        engine = self.usable("engine")
        return engine.best.table_bytes if engine else None

    def to_record(self) -> dict[str, Any]:
        floor = self.floor
        return {
            "items": self.items,
            "raw_bytes": self.file.size,
            "entries": self.file.entries,
            "origin_ready_seconds": round(self.origin_ready_seconds, 2),
            "floor_route": floor.route if floor else None,
            "engine_footprint_bytes": self.footprint_bytes,
            "engine_table_bytes": self.table_bytes,
            "routes": {name: result.to_record() for name, result in self.routes.items()},
            "profile": self.profile,
        }


FLOOR_TARGET = Target("engine time / floor time", "<= 1.5x", 1.5, at_most=True)
DVR_TARGET = Target("dvr time / engine time", ">= 10x", 10.0, at_most=False)
RSS_TARGET = Target("engine peak RSS", "<= 150 MiB", 150.0, at_most=True)
GROWTH_TARGET = Target("engine peak RSS growth", "<= +15%", 0.15, at_most=True)
FOOTPRINT_TARGET = Target("Redis footprint / raw JSON", "<= 15%", 0.15, at_most=True)
LINEAR_TARGET = Target(
    "engine time per item, largest size vs smaller", "<= 1.25x", 1.25, at_most=True
)


def route_command(
    route: str, source: Source, redis_url: str, profile_out: Path | None
) -> list[str]:
    """Return the command line that runs `route` in a process of its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--route", route]
    command += ["--url", source.base_url, "--path", source.path]
    command += ["--redis-url", redis_url, "--prefix", source.prefix]
    if profile_out is not None:
        command += ["--profile-out", str(profile_out)]
    return command


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


def count_in_redis(client: redis.Redis, prefix: str, key: str | None) -> int:
    """Return how many definitions a route left in Redis: a hash's length, or its keys."""
    if key is not None:
        return int(client.hlen(key))
    return sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))


def measure_route(
    route: str,
    item_file: ItemFile,
    client: redis.Redis,
    redis_url: str,
    prefix: str,
    profile_out: Path | None = None,
) -> Run:
    """Run a route once in its own process, check what it left in Redis, then delete that."""
    source = Source(item_file.base_url, item_file.path, prefix)
    try:
        figures, process_seconds = spawn_route(route_command(route, source, redis_url, profile_out))
        return Run(
            seconds=figures["seconds"],
            process_seconds=process_seconds,
            start_rss_kib=figures["start_rss_kib"],
            peak_rss_kib=figures["peak_rss_kib"],
            reported=figures["count"],
            in_redis=count_in_redis(client, prefix, figures["key"]),
            footprint=footprint(client, prefix) if route == "engine" else {},
            timings=figures["timings"],
            table_bytes=sum(memory_usage(client, key) for key in figures["table_keys"]),
        )
    finally:
        delete_keys(client, prefix)


def inspect_item_file(base_url: str, path: str) -> ItemFile:
    """Fetch the item table once (the origin builds and caches it); return its size and entries."""
    with requests.get(base_url + path, stream=True, timeout=HTTP_TIMEOUT) as response:
        response.raise_for_status()
        declared = int(response.headers["Content-Length"])
        body = response.raw.read()
    if len(body) != declared:
        raise RuntimeError(f"{path}: got {len(body):,} of {declared:,} bytes")
    entries = len(msgspec.json.decode(body, type=dict[str, msgspec.Raw]))
    return ItemFile(base_url, path, declared, entries)


def bench_size(
    items: int, args: argparse.Namespace, client: redis.Redis, run_prefix: str
) -> SizeResult:
    """Start an origin serving `items` definitions and run every route against it, in rounds."""
    # Imported here: importing the app loads Flask, which the floor routes' processes do without.
    from devtools.demo.control import DemoOriginProcess

    started = time.perf_counter()
    origin_args = demo_origin_args(items)
    with DemoOriginProcess(*origin_args) as origin:
        state = origin.admin.state()
        path = state["paths"]["jsonWorldComponentContentPaths"][LANGUAGE][TABLE]
        item_file = inspect_item_file(origin.url, path)
        size = SizeResult(items, item_file, time.perf_counter() - started)
        print_size_header(size)
        size.routes = {route: RouteResult(route, item_file.entries) for route in ROUTES}
        for attempt in range(args.repeat):
            for route, result in size.routes.items():
                if result.error or (route == "dvr" and attempt >= args.dvr_rounds):
                    continue
                prefix = f"{run_prefix}:{items}:{route}:{attempt}"
                try:
                    result.runs.append(
                        measure_route(route, item_file, client, args.redis_url, prefix)
                    )
                except RouteFailed as exc:
                    result.error = str(exc)
        for result in size.routes.values():
            print_route(result)
        print_size_footer(size)
        if args.profile is not None or any(v.met is False for v in size_verdicts(size)):
            size.profile = profile_engine(item_file, client, args, f"{run_prefix}:{items}:prof")
    return size


def profile_engine(
    item_file: ItemFile, client: redis.Redis, args: argparse.Namespace, prefix: str
) -> str | None:
    """Run the engine once more under cProfile (untimed); print and return where time goes."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as scratch:
        folder = args.profile.resolve() if args.profile is not None else Path(scratch)
        out = folder / f"engine-{item_file.entries}.prof"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            run = measure_route(
                "engine", item_file, client, args.redis_url, prefix, profile_out=out
            )
        except RouteFailed as exc:
            print(f"  profile: the engine failed: {exc}")
            return None
        text = io.StringIO()
        pstats.Stats(str(out), stream=text).strip_dirs().sort_stats("tottime").print_stats(20)
    body = text.getvalue()
    listing = body[body.index("   ncalls") :] if "   ncalls" in body else body
    kept = f", saved to {out}" if args.profile is not None else ""
    print(
        f"  profile of one more engine run ({run.seconds:.2f} s under cProfile){kept}, by "
        "tottime summed over its threads:"
    )
    print("\n".join("    " + line for line in listing.rstrip().splitlines()))
    return listing


# -- reporting ----------------------------------------------------------------------------------


def print_size_header(size: SizeResult) -> None:
    file = size.file
    print()
    print(
        f"== {size.items:,} items: {TABLE} is {file.size / MIB:.1f} MiB of JSON, "
        f"{file.entries:,} entries (origin ready in {size.origin_ready_seconds:.1f} s) =="
    )
    print(
        f"  {'route':<8} {'time s':>7} {'process s':>9} {'peak RSS MiB':>12} "
        f"{'start RSS MiB':>13} {'in Redis':>9}  status"
    )


def print_route(result: RouteResult) -> None:
    if not result.runs:
        print(
            f"  {result.route:<8} {'-':>7} {'-':>9} {'-':>12} {'-':>13} {'-':>9}  {result.status}"
        )
        return
    in_redis = min(run.in_redis for run in result.runs)
    print(
        f"  {result.route:<8} {result.seconds:>7.2f} {result.process_seconds:>9.2f} "
        f"{result.peak_rss_mib:>12.1f} {result.start_rss_mib:>13.1f} {in_redis:>9,}  "
        f"{result.status}"
    )


def print_size_footer(size: SizeResult) -> None:
    floor = size.floor
    if floor is None:
        print("  floor: did not end right")
    else:
        print(f"  floor's own timings (best run): {format_timings(floor.best.timings)}")
        print(f"  floor's table in Redis: {floor.best.table_bytes / MIB:.1f} MiB")
    engine = size.usable("engine")
    if engine is None:
        return
    print(f"  engine's own timings (best run): {format_timings(engine.best.timings)}")
    table = size.table_bytes or 0
    used = size.footprint_bytes or 0
    print(
        f"  engine's item table in Redis (hash + dictionary): {table / MIB:.1f} MiB "
        f"= {table / size.file.size:.1%} of the raw JSON; all its keys: {used / MIB:.1f} MiB, "
        "of which:"
    )
    for key, taken in sorted(engine.best.footprint.items(), key=lambda kv: -kv[1]):
        if taken >= used / 100:
            print(f"    {taken / MIB:6.1f} MiB  {key}")


def format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f} s" for name, value in timings.items())


def size_verdicts(size: SizeResult) -> list[Verdict]:
    """Judge the targets that hold at one size; times are each route's own work."""
    scope = f"{size.items:,} items"
    engine, floor, dvr = size.usable("engine"), size.floor, size.usable("dvr")
    if engine is None:
        broken = "engine BROKEN"
        return [
            Verdict(target, scope, None, broken)
            for target in (FLOOR_TARGET, DVR_TARGET, RSS_TARGET, FOOTPRINT_TARGET)
        ]
    found = []
    if floor is None:
        found.append(Verdict(FLOOR_TARGET, scope, None, "floor BROKEN"))
    else:
        ratio = engine.seconds / floor.seconds
        whole = engine.process_seconds / floor.process_seconds
        shown = (
            f"{ratio:.2f}x ({engine.seconds:.2f} vs {floor.seconds:.2f} s; whole processes "
            f"{whole:.2f}x)"
        )
        found.append(Verdict(FLOOR_TARGET, scope, ratio, shown))
    if dvr is None:
        found.append(Verdict(DVR_TARGET, scope, None, "dvr BROKEN"))
    else:
        ratio = dvr.seconds / engine.seconds
        whole = dvr.process_seconds / engine.process_seconds
        shown = f"{ratio:.1f}x (whole processes {whole:.1f}x)"
        if floor is not None:
            shown += f"; the floor itself: {dvr.seconds / floor.seconds:.1f}x"
        found.append(Verdict(DVR_TARGET, scope, ratio, shown))
    found.append(Verdict(RSS_TARGET, scope, engine.peak_rss_mib, f"{engine.peak_rss_mib:.1f} MiB"))
    share = (size.table_bytes or 0) / size.file.size
    shown = f"{share:.1%} (item table + dictionary, {(size.table_bytes or 0) / MIB:.1f} MiB)"
    found.append(Verdict(FOOTPRINT_TARGET, scope, share, shown))
    return found


def growth_verdict(sizes: list[SizeResult]) -> Verdict:
    """Judge how the engine's peak RSS changes from the smallest table to the largest."""
    ordered = sorted(sizes, key=lambda size: size.items)
    if len(ordered) < 2:
        return Verdict(GROWTH_TARGET, "across sizes", None, "needs two sizes")
    small, large = ordered[0], ordered[-1]
    scope = f"{small.items:,} -> {large.items:,} items"
    first, last = small.usable("engine"), large.usable("engine")
    if first is None or last is None:
        return Verdict(GROWTH_TARGET, scope, None, "engine BROKEN")
    growth = last.peak_rss_mib / first.peak_rss_mib - 1
    shown = f"{growth:+.1%} ({first.peak_rss_mib:.1f} -> {last.peak_rss_mib:.1f} MiB)"
    return Verdict(GROWTH_TARGET, scope, growth, shown)


def linear_fit(points: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """Return slope, intercept and R² of the least-squares line through `points`."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for _, y in points)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in points)
    return slope, intercept, 1 - residual / total if total else 1.0


def linear_verdict(sizes: list[SizeResult]) -> Verdict:
    """Judge whether the engine's time grows linearly: the time per item does not grow.

    A linear sync with a fixed part takes less time per item as the table grows; the largest
    table's time per item is compared with the median of the smaller tables' (one noisy size
    cannot decide it), and the least-squares line through every size is shown.
    """
    engines = sorted(
        (size.items, engine.seconds)
        for size in sizes
        if (engine := size.usable("engine")) is not None
    )
    if len(engines) < 2:
        return Verdict(LINEAR_TARGET, "across sizes", None, "needs two sizes")
    *smaller, (last, t_last) = engines
    before = statistics.median(t / n for n, t in smaller)
    ratio = (t_last / last) / before
    slope, intercept, r2 = linear_fit(engines)
    shown = (
        f"{ratio:.2f}x ({t_last / last * 1e6:.1f} us per item at {last:,}, median "
        f"{before * 1e6:.1f} below); fit {slope * 1e6:.1f} us per item {intercept:+.2f} s, "
        f"R² {r2:.3f}"
    )
    return Verdict(LINEAR_TARGET, f"{engines[0][0]:,} -> {last:,} items", ratio, shown)


# -- the command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the engine's sync of the item table against the floor and DVR-style.",
    )
    parser.add_argument(
        "--items",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        metavar="N",
        help="table sizes to measure, one demo origin each (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_SIZES[0]:,} items only (overrides --items)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        metavar="N",
        help="rounds of every route: the best time and the highest RSS count "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--dvr-rounds",
        type=int,
        default=DEFAULT_DVR_ROUNDS,
        metavar="N",
        help="rounds of the DVR-style route, the slowest by far (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="the Redis to write to (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="profile one more engine run at every size (not only where a target is missed); "
        "keep the stats in DIR",
    )
    # One route in a process of its own: how the benchmark calls itself.
    parser.add_argument("--route", choices=ROUTES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.items = list(QUICK_SIZES)
    if min(args.repeat, args.dvr_rounds, *args.items) < 1:
        parser.error("--items, --repeat and --dvr-rounds take whole numbers of 1 or more")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every size; print and return the figures and the verdicts."""
    check_floor_parameters()
    client = redis.Redis.from_url(args.redis_url)
    run_prefix = f"bench:{run_id()}:ingest"
    print()
    print(
        f"== workload 1: sync time and memory vs size, {', '.join(f'{n:,}' for n in args.items)} "
        f"items, {args.repeat} round(s) =="
    )
    sizes: list[SizeResult] = []
    try:
        for items in args.items:
            sizes.append(bench_size(items, args, client, run_prefix))
    finally:
        delete_keys(client, run_prefix)
    found = [verdict for size in sizes for verdict in size_verdicts(size)]
    found += [growth_verdict(sizes), linear_verdict(sizes)]
    print_verdicts(found, "sync time and memory (times are each route's own work)")
    return {
        "workload": "ingest",
        "repeat": args.repeat,
        "dvr_rounds": min(args.dvr_rounds, args.repeat),
        "sizes": [size.to_record() for size in sizes],
        "targets": [verdict.to_record() for verdict in found],
        "broken": any(not route.ok for size in sizes for route in size.routes.values()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.route:
        run_route(args)
        return 0
    assert isinstance(sys.stdout, io.TextIOWrapper)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows through a pipe (tee) too
    try:
        client = redis.Redis.from_url(args.redis_url)
        print_machine(describe_machine(client, args.redis_url))
        report = run(args)
    except KeyboardInterrupt:
        # The origins are stopped and the keys deleted by now (context managers, finally).
        print("interrupted", file=sys.stderr)
        return 130
    write_report(args.json, report)
    return 1 if report["broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
