"""Fixtures of the reliability suite: a large demo origin, Redis servers of its own, figures."""

from __future__ import annotations

import json
import os
import platform
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import API_KEY
from tests.reliability.servers import RedisServer
from tests.reliability.servers import live_groups
from tests.reliability.servers import wait_until

# The large origin: an item table of ~54 MB of JSON, big enough to kill a worker inside it.
BIG_ITEMS = 20_000
RESULTS_FILE = "reliability.json"


# Outcome and duration of every reliability test of this session, by node id.
OUTCOMES: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember how each reliability test ended and how long it took (for the report)."""
    if not report.nodeid.startswith("tests/reliability/"):
        return
    entry = OUTCOMES.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
    entry["seconds"] = round(entry["seconds"] + report.duration, 2)
    if report.when != "call" and report.passed:
        return
    if hasattr(report, "wasxfail"):
        entry["outcome"] = "xfailed" if report.skipped else "xpassed"
    else:
        entry["outcome"] = report.outcome


class Figures:
    """What the scenarios measured, written as JSON for `report.py` (when RELIABILITY_RESULTS
    names a directory)."""

    def __init__(self) -> None:
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.started = time.time()

    def scenario(self, name: str) -> dict[str, Any]:
        """Return the figures of scenario `name`: a `summary` mapping and a list of `rows`."""
        return self.scenarios.setdefault(name, {"summary": {}, "rows": []})

    def write(self) -> Path | None:
        """Merge these figures into RELIABILITY_RESULTS/reliability.json; None if unset."""
        directory = os.environ.get("RELIABILITY_RESULTS")
        if not directory:
            return None
        path = Path(directory) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"scenarios": {}, "tests": {}}
        if path.exists():
            data = json.loads(path.read_text())
        data["scenarios"].update(self.scenarios)
        data.setdefault("tests", {}).update(OUTCOMES)
        data["run"] = {
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "seconds": round(time.time() - self.started, 1),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tests": len(OUTCOMES),
        }
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
        return path


@pytest.fixture(scope="session", autouse=True)
def no_orphans() -> Iterator[None]:
    """Every process this suite started (workers, beats, Redis servers) is gone at the end."""
    yield
    wait_until(lambda: not live_groups(), 15, "the suite's processes to exit")


@pytest.fixture(scope="session", autouse=True)
def figures() -> Iterator[Figures]:
    recorder = Figures()
    yield recorder
    recorder.write()


@pytest.fixture(scope="session")
def big_origin() -> Iterator[DemoOriginProcess]:
    """A demo origin with a 20,000-item table in English only (one file of ~54 MB)."""
    args = ("--items", str(BIG_ITEMS), "--seed", "11", "--languages", "en", "--api-key", API_KEY)
    with DemoOriginProcess(*args) as proc:
        yield proc


@pytest.fixture
def big_admin(big_origin: DemoOriginProcess) -> Iterator[DemoAdmin]:
    control = big_origin.admin
    control.reset()
    yield control
    control.reset()
    control.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (no persistence), killed afterwards."""
    with RedisServer() as server:
        yield server


def unique(kind: str) -> str:
    """Return a name no other test uses: a key prefix or a queue."""
    return f"rel-{kind}-{uuid.uuid4().hex[:10]}"
