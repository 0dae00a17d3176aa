"""Workload 4: the sync triggers hammered while a sync runs, against a trivial endpoint.

A demo origin serves a 40,000-item release; the app runs as deployed: gunicorn with 2 sync
workers and a Celery worker, on a key prefix and queue of this run's own. The load generator
(bench/loadgen.py, a process of its own, `--connections` connections) takes turns between
`/healthz` and the triggers, for the same time each: half its connections POST
/api/v1/manifest/sync (bearer token) and half GET /updateManifest (signed in). The first
trigger queues a sync; the origin drips the item table so that the sync outlasts the load,
and every other trigger must join it. The rate limit is raised for the load (any 429 is
counted apart from errors).

Figures: requests/s of the triggers as a ratio of /healthz's (target >= 50%), p50/p99
latencies, errors (target 0), and syncs started (target exactly 1), counted three ways: the
item-table downloads in the origin's request log, the task records the app wrote, and the
`manifest.sync` tasks the worker received. From the project root:

    .venv/bin/python bench/trigger_load.py            # 50 connections, 4 turns of 5 s each
    .venv/bin/python bench/trigger_load.py --seconds 4 --rounds 2 --items 5000
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any
from urllib.parse import urljoin

import redis
import requests
from loadgen import LoadGroup
from loadgen import run_turns
from profiles import RequestProfile
from profiles import print_profiles
from profiles import profile_call
from profiles import to_record
from stack import ADMIN
from stack import API_TOKEN
from stack import add_load_arguments
from stack import app_env
from stack import celery_worker
from stack import delete_celery_keys
from stack import delete_keys
from stack import demo_origin_args
from stack import item_path
from stack import run_keys
from stack import web_server
from stack import workload_main
from stack import workload_parser
from targets import Target
from targets import Verdict
from targets import print_verdicts

from app.keys import Keys

RATIO_TARGET = Target("trigger requests/s / /healthz requests/s", ">= 50%", 0.5, at_most=False)
ERRORS_TARGET = Target("errors (429 apart)", "= 0", 0, at_most=True)
SYNCS_TARGET = Target("syncs started", "= 1", 0, at_most=True)
DRIP_CHUNK = 256 * 1024
# The sync must outlast the load: its download takes the load's time and this much more.
DRIP_MARGIN = 8.0
FINISH_TIMEOUT = 120.0
MAX_REQUESTS = 2_000_000
UNLIMITED = 1_000_000_000
PROFILE_ROUNDS = 300
PROFILE_LOCK_SECONDS = 120


def sign_in(url: str) -> str:
    """Sign the admin in through the login form; return the session's Cookie header."""
    session = requests.Session()
    page = session.get(f"{url}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if token is None:
        raise RuntimeError("the login form has no CSRF token")
    form = {"username": ADMIN[0], "password": ADMIN[1], "csrf_token": token.group(1), "next": "/"}
    answer = session.post(f"{url}/login", data=form, allow_redirects=False, timeout=10)
    if answer.status_code != 303:
        raise RuntimeError(f"signing in answered HTTP {answer.status_code}")
    # Go where the sign-in leads, as a browser does: that page shows (and so drops) the
    # "Signed in" flash. A cookie still carrying it would make every request of the load show
    # it again and re-sign the session, which no browser's request does.
    session.get(urljoin(url, answer.headers["Location"]), timeout=10).raise_for_status()
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items())


def item_file_size(origin_url: str, path: str) -> int:
    """Return the item table's size as the origin declares it (the body is not read)."""
    with requests.get(origin_url + path, stream=True, timeout=30) as response:
        response.raise_for_status()
        return int(response.headers["Content-Length"])


def wait_for_sync(client: redis.Redis, keys: Keys, timeout: float) -> dict[str, Any] | None:
    """Wait until no sync runs or waits; return the latest check outcome (None: timed out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not client.exists(keys.lock, keys.queued_sync):
            check = client.get(keys.last_check)
            return json.loads(check) if check else None
        time.sleep(0.2)
    return None


def worker_received(output: str) -> int:
    """Count the `manifest.sync` tasks the Celery worker's log says it received."""
    return len(re.findall(r"Task manifest\.sync\[[0-9a-f-]+\] received", output))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run workload 4; print and return its figures and verdicts."""
    from devtools.demo.control import DemoOriginProcess

    client = redis.Redis.from_url(args.redis_url)
    prefix, queue = run_keys("trigger")
    print()
    print(
        f"== workload 4: triggers under load, {args.items:,} items, {args.connections} "
        f"connections, {args.seconds:g} s per phase =="
    )
    origin_args = demo_origin_args(args.items)
    task_ids: set[str] = set()
    try:
        with DemoOriginProcess(*origin_args) as origin:
            admin = origin.admin
            path = item_path(admin.state())
            size = item_file_size(origin.url, path)
            env = app_env(
                args.redis_url,
                origin.url,
                prefix,
                queue,
                TRIGGER_RATE_LIMIT=UNLIMITED,
                MANIFEST_DOWNLOAD_DEADLINE=args.seconds * 4 + 300,
            )
            server, url = web_server(env)
            with server, celery_worker(env) as worker:
                figures = measure(args, url, admin, path, size, client, prefix, env)
                task_ids.update(figures.pop("task_ids"))
                worker.stop()
                figures["worker_received"] = worker_received(worker.output())
            log = admin.requests_log()
    finally:
        delete_keys(client, prefix)
        delete_celery_keys(client, queue, task_ids)
    figures["item_downloads"] = sum(1 for entry in log if entry["path"] == path)
    figures["manifest_requests"] = sum(1 for entry in log if "/Manifest" in entry["path"])
    found = verdicts(figures)
    print_figures(figures)
    print_verdicts(found, "triggers under load")
    return {"workload": "trigger_load", **figures, "targets": [v.to_record() for v in found]}


def measure(
    args: argparse.Namespace,
    url: str,
    admin: Any,
    path: str,
    size: int,
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
) -> dict[str, Any]:
    """Load /healthz and the triggers in turns while a dripped sync runs; wait for that sync.

    A missed throughput target is profiled in this process while the sync still runs (the
    machine as busy as under the load); the replayed triggers join a sync as the load's do.
    """
    cookie = sign_in(url)
    turn = args.seconds / args.rounds
    # The sync starts with the first turn of triggers, after one of /healthz, and must outlast
    # the last turn of triggers.
    download_seconds = (2 * args.rounds - 1) * (args.warmup + turn) + DRIP_MARGIN
    delay = DRIP_CHUNK * download_seconds / size
    admin.fault("slow_drip", table="DestinyInventoryItemDefinition", chunk=DRIP_CHUNK, delay=delay)
    admin.clear_requests_log()
    api = args.connections // 2
    phases = {
        "healthz": [LoadGroup("healthz", "GET", ["/healthz"], args.connections)],
        "triggers": [
            LoadGroup(
                "api",
                "POST",
                ["/api/v1/manifest/sync"],
                api,
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                ok=202,
                collect_task_ids=True,
            ),
            LoadGroup(
                "page", "GET", ["/updateManifest"], args.connections - api, {"Cookie": cookie}
            ),
        ],
    }
    found = run_turns(url, phases, args, MAX_REQUESTS)
    health = found["healthz"]["healthz"]
    triggers = found["triggers"]
    trigger_rps = triggers["api"].rps + triggers["page"].rps
    running_after = bool(client.exists(Keys(prefix).lock))
    profiles = []
    if trigger_rps / health.rps < RATIO_TARGET.limit:
        profiles = profile_triggers(env, client)
        print("  in-process profiles (a target is missed):")
        print_profiles(profiles)
    check = wait_for_sync(client, Keys(prefix), download_seconds + FINISH_TIMEOUT)
    admin.clear_faults()
    records = [
        key.decode()
        for key in client.scan_iter(match=Keys(prefix).task("*"), count=1000)
        if key.decode().count(":") == prefix.count(":") + 2
    ]
    return {
        "items": args.items,
        "connections": args.connections,
        "seconds": args.seconds,
        "download_seconds": download_seconds,
        "rounds": args.rounds,
        "healthz": health.summary(),
        "api": triggers["api"].summary(),
        "page": triggers["page"].summary(),
        "trigger_rps": trigger_rps,
        "ratio": trigger_rps / health.rps,
        "sync_running_after_load": running_after,
        "sync_outcome": check.get("outcome") if check else "did not finish",
        "task_records": len(records),
        "task_ids": sorted({key.rsplit(":", 1)[1] for key in records}),
        "api_task_ids": triggers["api"].task_ids,
        "profiles": [to_record(found) for found in profiles],
    }


def profile_triggers(env: dict[str, str], client: redis.Redis) -> list[RequestProfile]:
    """Replay /healthz and both triggers through the app in this process, signed in.

    The replay has keys and a queue of its own (its triggers must not count as syncs of the
    load), where a sync holds the lock as under the load: every trigger joins it.
    """
    from app import create_app

    settings: dict[str, Any] = {name.removeprefix("FLASK_"): value for name, value in env.items()}
    del settings["CONFIG"]
    settings["TRIGGER_RATE_LIMIT"] = UNLIMITED
    settings["MANIFEST_KEY_PREFIX"] += ":profile"
    settings["CELERY_QUEUE"] += "-profile"
    prefix, holder = settings["MANIFEST_KEY_PREFIX"], "0" * 32
    record = json.dumps({"at": time.time(), "trigger": "web", "requested_by": "the profile"})
    keys = Keys(prefix)
    client.set(keys.lock, holder, ex=PROFILE_LOCK_SECONDS)
    client.set(keys.heartbeat(holder), 1, ex=PROFILE_LOCK_SECONDS)  # the holder is alive
    client.set(keys.task(holder), record, ex=PROFILE_LOCK_SECONDS)
    app = create_app("testing", {**settings, "SERVER_NAME": "localhost"})
    browser, api = app.test_client(), app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text)
    assert token is not None
    form = {"username": ADMIN[0], "password": ADMIN[1], "csrf_token": token.group(1), "next": "/"}
    browser.post("/login", data=form)
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    return [
        profile_call("GET /healthz", lambda: api.get("/healthz"), PROFILE_ROUNDS),
        profile_call(
            "POST /api/v1/manifest/sync",
            lambda: api.post("/api/v1/manifest/sync", headers=bearer),
            PROFILE_ROUNDS,
        ),
        profile_call("GET /updateManifest", lambda: browser.get("/updateManifest"), PROFILE_ROUNDS),
    ]


def syncs_started(figures: dict[str, Any]) -> int:
    """Return the most syncs any of the three counts says were started."""
    return max(
        figures["item_downloads"],
        figures["task_records"],
        figures["worker_received"],
        len(figures["api_task_ids"]),
    )


def verdicts(figures: dict[str, Any]) -> list[Verdict]:
    scope = f"{figures['connections']} connections, {figures['seconds']:g} s"
    errors = figures["api"]["errors"] + figures["page"]["errors"]
    limited = figures["api"]["rate_limited"] + figures["page"]["rate_limited"]
    started = syncs_started(figures)
    counts = (
        f"{figures['item_downloads']} item-table download(s), {figures['task_records']} task "
        f"record(s), {figures['worker_received']} task(s) received by the worker, "
        f"{len(figures['api_task_ids'])} task id(s) answered"
    )
    healthz = figures["healthz"]["errors"]
    return [
        Verdict(
            RATIO_TARGET,
            scope,
            figures["ratio"],
            f"{figures['ratio']:.0%} ({figures['trigger_rps']:.0f} vs "
            f"{figures['healthz']['rps']:.0f} requests/s)",
        ),
        Verdict(
            ERRORS_TARGET,
            scope,
            errors + healthz,
            f"{errors} on the triggers, {healthz} on /healthz; 429s: {limited}",
        ),
        # Exactly one: none started is as wrong as two.
        Verdict(SYNCS_TARGET, scope, abs(started - 1), f"{started} ({counts})"),
    ]


def print_figures(figures: dict[str, Any]) -> None:
    print(f"  {'endpoint':<28} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for name, label in (
        ("healthz", "GET /healthz"),
        ("api", "POST /api/v1/manifest/sync"),
        ("page", "GET /updateManifest"),
    ):
        group = figures[name]
        failures = f", failures {group['failures']}" if group["failures"] else ""
        print(
            f"  {label:<28} {group['requests']:>9,} {group['rps']:>8.0f} {group['p50_ms']:>8.1f} "
            f"{group['p99_ms']:>8.1f}  {group['statuses']}{failures}"
        )
    print(
        f"  triggers together: {figures['trigger_rps']:.0f} requests/s = {figures['ratio']:.0%} "
        f"of /healthz; the sync (download dripped over {figures['download_seconds']:.0f} s) was "
        f"{'still' if figures['sync_running_after_load'] else 'no longer'} running when the load "
        f"ended, and ended {figures['sync_outcome']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = workload_parser(__doc__)
    add_load_arguments(parser, "phase", seconds=20.0, rounds=4)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return workload_main(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
