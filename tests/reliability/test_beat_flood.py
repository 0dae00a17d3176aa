"""Scenario 5: two beat processes at once (a misconfiguration that happens: `--beat` on two
dynos) and a flood of API triggers while a new release comes out: one sync per change, one
download of each table per release, one history entry per release."""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from app import create_app
from app.extensions import get_store
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.processes import ProjectProcess
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.servers import RedisServer
from tests.reliability.servers import beat
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

TOKEN = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
TRIGGERS = 100
THREADS = 4
POLL_SECONDS = 2


def item_path(admin: Any) -> str:
    return admin.state()["paths"]["jsonWorldComponentContentPaths"]["en"][ITEM_TABLE]


def ticks(process: ProjectProcess) -> int:
    """Return how many tasks a beat process has sent."""
    return process.output().count("Scheduler: Sending due task")


def test_two_beats_and_a_flood_of_triggers_make_one_sync_per_release(
    origin: DemoOriginProcess, admin: DemoAdmin, figures: Figures
) -> None:
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        schedules = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": origin.url,
            "MANIFEST_KEY_PREFIX": unique("flood"),
            "CELERY_QUEUE": unique("flood"),
            "MANIFEST_POLL_SECONDS": POLL_SECONDS,
            "TRIGGER_RATE_LIMIT": 10 * TRIGGERS,
        }
        app = create_app("testing", overrides)
        with app.app_context():
            store = get_store()
        work = stack.enter_context(worker(overrides, concurrency=2))
        beats = [stack.enter_context(beat(overrides, schedules / f"beat-{n}")) for n in (1, 2)]
        first_path = item_path(admin)
        wait_until(store.live_id, 30, "beat's first sync")

        answers: list[tuple[int, str, bool, float]] = []
        lock = threading.Lock()

        def flood() -> None:
            client = app.test_client()
            for _ in range(TRIGGERS // THREADS):
                started = time.monotonic()
                response = client.post("/api/v1/manifest/sync", headers=TOKEN)
                body = response.get_json() or {}
                with lock:
                    answers.append(
                        (
                            response.status_code,
                            body.get("task_id", ""),
                            bool(body.get("joined")),
                            time.monotonic() - started,
                        )
                    )
                time.sleep(0.06 * THREADS)  # a steady flood, spread over the release

        threads = [threading.Thread(target=flood) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(answers) >= TRIGGERS // 5, 30, "the flood to be under way")
        # The flood is under way: now the release comes out.
        published = admin.publish()
        second_path = item_path(admin)
        for thread in threads:
            thread.join()
        wait_until(
            lambda: (
                (live := store.live_release()) is not None
                and live.release.version == published["version"]
            ),
            60,
            "the new release to go live",
        )
        # Two more ticks of each beat: they must find nothing.
        ticked = [ticks(process) for process in beats]
        wait_until(
            lambda: all(ticks(p) >= n + 2 for p, n in zip(beats, ticked, strict=True)),
            4 * POLL_SECONDS + 30,
            "two more ticks of each beat",
        )
        for process in beats:
            process.stop()
        work.wait_until_idle(app.extensions["celery"])  # every sync they sent has run
        beat_sends = sum(ticks(p) for p in beats)
        history = store.history(50)
        checks = store.recent_checks(50)

    downloads = Counter(r["path"] for r in admin.requests_log() if ITEM_TABLE in r["path"])
    statuses = Counter(status for status, *_ in answers)
    task_ids = {task_id for _, task_id, _, _ in answers}
    figures.scenario("beat-flood")["summary"] = {
        "beat processes / poll interval (s)": f"2 / {POLL_SECONDS}",
        "tasks sent by the beats": beat_sends,
        "API triggers (status: count)": dict(statuses),
        "distinct task ids handed out": len(task_ids),
        "triggers that joined a queued or running sync": sum(j for *_, j, _ in answers),
        "worst trigger answer (ms)": round(max(a[3] for a in answers) * 1000, 1),
        "checks recorded (last 50 kept)": len(checks),
        "check outcomes": dict(Counter(c["outcome"] for c in checks)),
        "history entries (releases)": len(history),
        "item table downloads, first / new release": (
            f"{downloads[first_path]} / {downloads[second_path]}"
        ),
    }
    assert statuses == {202: TRIGGERS}
    assert [h["version"] for h in history] == [published["version"], history[-1]["version"]]
    assert downloads == {first_path: 1, second_path: 1}
    assert {c["outcome"] for c in checks} <= {"updated", "unchanged"}
    assert beat_sends >= 4
