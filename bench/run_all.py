"""Run every benchmark (issues 7, 15-17, 19) in turn; write docs/BENCHMARKS.md and the plots.

`make bench` runs this. Each workload is a script of its own in bench/ that can also be run
alone (see its docstring); here they run one after the other in one process, each starting
and stopping what it needs (demo origins, gunicorn, a Celery worker, the load generator) and
deleting its Redis keys. A workload that fails is reported as such and the others still run.
The figures are ratios measured in the same run, or counts: no absolute time is a target.
From the project root:

    make bench                                        # several minutes
    .venv/bin/python bench/run_all.py --quick --doc /tmp/BENCHMARKS.md --plots /tmp/bench
    .venv/bin/python bench/run_all.py --only unchanged swap_readers --json bench/out/all.json
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import change_log
import footprint
import ingest
import metrics
import mirror
import plots
import reading
import redis
import report
import swap_readers
import trigger_load
import unchanged
from stack import DEFAULT_REDIS_URL
from stack import PROJECT_ROOT
from stack import describe_machine
from stack import print_machine
from stack import write_report

# name -> (module, its arguments for a full run, for a quick one)
WORKLOADS: dict[str, tuple[ModuleType, list[str], list[str]]] = {
    "ingest": (ingest, [], ["--quick", "--repeat", "1"]),
    "footprint": (footprint, [], ["--items", "5000"]),
    "unchanged": (unchanged, [], ["--items", "5000", "--repeat", "10"]),
    "trigger_load": (
        trigger_load,
        [],
        ["--items", "5000", "--seconds", "4", "--rounds", "2", "--warmup", "0.5"],
    ),
    "reading": (
        reading,
        [],
        ["--items", "5000", "--seconds", "4", "--rounds", "2", "--warmup", "0.5"],
    ),
    "swap_readers": (swap_readers, [], ["--items", "5000", "--swaps", "1"]),
    "change_log": (change_log, [], ["--quick"]),
    "mirror": (
        mirror,
        [],
        [
            "--items",
            "5000",
            "--downloads",
            "3",
            "--seconds",
            "4",
            "--rounds",
            "2",
            "--warmup",
            "0.5",
        ],
    ),
    "metrics": (metrics, [], ["--releases", "20", "--scrapes", "20"]),
}


def run_workload(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one workload; on failure, return what went wrong instead of its figures."""
    module, full, quick = WORKLOADS[name]
    argv = [*(quick if args.quick else full), "--redis-url", args.redis_url]
    runner: Callable[[argparse.Namespace], dict[str, Any]] = module.run
    started = time.monotonic()
    try:
        figures = runner(module.parse_args(argv))
    except Exception as exc:  # noqa: BLE001 - reported in the document; the others still run
        traceback.print_exc()
        figures = {"workload": name, "error": f"{type(exc).__name__}: {exc}", "targets": []}
    figures["wall_seconds"] = time.monotonic() - started
    figures["argv"] = argv
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, short loads: a smoke run"
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(WORKLOADS), metavar="NAME", help="run these only"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="(default: %(default)s)")
    parser.add_argument(
        "--doc",
        type=Path,
        default=PROJECT_ROOT / "docs" / "BENCHMARKS.md",
        help="the document to write (default: docs/BENCHMARKS.md)",
    )
    parser.add_argument(
        "--plots",
        type=Path,
        default=PROJECT_ROOT / "docs" / "bench",
        help="the folder of the PNG plots (default: docs/bench)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    assert isinstance(sys.stdout, io.TextIOWrapper)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows through a pipe (tee) too
    client = redis.Redis.from_url(args.redis_url)
    machine = describe_machine(client, args.redis_url)
    machine["load_before"] = os.getloadavg()
    print_machine(machine)
    started = time.monotonic()
    reports = {name: run_workload(name, args) for name in args.only or WORKLOADS}
    machine["load_after"] = os.getloadavg()
    drawn = plots.draw_all({k: v for k, v in reports.items() if "error" not in v}, args.plots)
    given = sys.argv[1:] if argv is None else argv
    run = {
        "command": " ".join([".venv/bin/python bench/run_all.py", *given])
        if given
        else "make bench",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": (time.monotonic() - started) / 60,
        "machine": machine,
        "quick": args.quick,
    }
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(report.render(run, reports, drawn, args.doc.parent), encoding="utf-8")
    print(f"\nwrote {args.doc} and {len(drawn)} plots in {args.plots}")
    write_report(args.json, {"run": run, "workloads": reports})
    summary = [t for r in reports.values() for t in r["targets"]]
    met = sum(1 for t in summary if t["verdict"] == "MET")
    print(f"{met} of {len(summary)} targets met in {run['minutes']:.1f} minutes")
    return 1 if any("error" in r for r in reports.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
