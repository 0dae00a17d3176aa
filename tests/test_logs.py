"""Logs a person or a log platform reads: with LOG_FORMAT=json every line is one JSON object, and
one request id follows a sync from the trigger's request through the worker to each delivery;
a client's X-Request-ID is kept when sane, replaced when not; text lines read as before."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextlib import redirect_stderr
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask

from app import create_app
from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.store import ManifestStore
from app.triggers import known_task
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from tests.fake_receivers import fake_receiver
from tests.processes import CeleryWorker
from tests.processes import ProjectProcess
from tests.processes import flask_env
from tests.reliability.servers import free_port
from tests.reliability.servers import wait_until

AUTH = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
TRIGGER = "/api/v1/manifest/sync"
SECRET = "a-webhook-secret-for-the-log-tests"
PATH_TOKEN = "path-t0ken-of-a-hook-for-the-log-tests"


def json_lines(output: str) -> list[dict[str, Any]]:
    """Parse every line of `output` as one JSON object with the fields every record has."""
    records = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"a line that is not JSON: {line!r}\n{output[-3000:]}")
        assert {"time", "level", "logger", "message"} <= set(record), line
        assert datetime.fromisoformat(record["time"]).utcoffset() is not None, line
        records.append(record)
    return records


@contextmanager
def app_stderr() -> Iterator[io.StringIO]:
    """Run the block as a process that set no logging up itself runs the app (gunicorn, the
    worker): the root logger without handlers (not the test runner's), stderr captured."""
    root = logging.getLogger()
    saved = root.handlers[:]
    for handler in saved:
        root.removeHandler(handler)
    stream = io.StringIO()
    try:
        with redirect_stderr(stream):
            yield stream
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)


def app_with_a_failing_page(overrides: dict[str, Any]) -> Flask:
    """The app, and a page of this test's own that fails (its traceback is logged)."""
    app = create_app("testing", overrides)

    def failing() -> str:
        raise RuntimeError("the page broke")

    app.add_url_rule("/test-failing-page", view_func=failing)
    return app


@pytest.fixture
def cleared_queue(
    app_overrides: dict[str, Any], redis_client: redis.Redis
) -> Iterator[dict[str, Any]]:
    """The app's settings; the tasks they queued are dropped afterwards."""
    yield app_overrides
    redis_client.delete(app_overrides["CELERY_QUEUE"])


def test_a_request_logs_json_lines_with_its_request_id(
    cleared_queue: dict[str, Any], admin: DemoAdmin
) -> None:
    with app_stderr() as stderr:
        app = app_with_a_failing_page({**cleared_queue, "LOG_FORMAT": "json"})
        client = app.test_client()
        trigger = client.post(TRIGGER, headers={**AUTH, "X-Request-ID": "req-7f3a"})
        failed = client.get("/test-failing-page", headers={"X-Request-ID": "req-9b1c"})
    records = json_lines(stderr.getvalue())

    assert trigger.status_code == 202
    assert trigger.headers["X-Request-ID"] == "req-7f3a"
    task_id = trigger.get_json()["task_id"]
    (queued,) = [r for r in records if r["message"] == f"Queued task manifest.sync[{task_id}]"]
    assert queued["request_id"] == "req-7f3a"
    assert queued["level"] == "INFO"
    assert failed.status_code == 500
    assert failed.headers["X-Request-ID"] == "req-9b1c"
    (error,) = [r for r in records if r.get("exception")]
    assert error["request_id"] == "req-9b1c"
    assert error["message"] == "Unhandled error on GET /test-failing-page"
    assert "RuntimeError: the page broke" in error["exception"]
    assert "the page broke" not in failed.get_data(as_text=True)
    # Outside any request, no request id.
    (slack_off,) = [r for r in records if r["message"].startswith("Slack is off")]
    assert "request_id" not in slack_off


@pytest.mark.parametrize(
    "sent",
    ["two words", "x" * 129, 'quote"d', "new\\nline", "", "é"],
    ids=["space", "too-long", "quote", "backslash", "empty", "non-ascii"],
)
def test_a_request_id_that_is_not_sane_is_replaced(
    cleared_queue: dict[str, Any], admin: DemoAdmin, sent: str
) -> None:
    with app_stderr() as stderr:
        app = app_with_a_failing_page({**cleared_queue, "LOG_FORMAT": "json"})
        answer = app.test_client().get("/test-failing-page", headers={"X-Request-ID": sent})
    (error,) = [r for r in json_lines(stderr.getvalue()) if r.get("exception")]

    given = answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", given)
    assert error["request_id"] == given


@pytest.mark.parametrize("sent", [None, "not sane"], ids=["none", "not-sane"])
def test_the_sync_records_the_request_id_the_logs_carry(
    cleared_queue: dict[str, Any], admin: DemoAdmin, sent: str | None
) -> None:
    app = create_app("testing", {**cleared_queue, "LOG_FORMAT": "json"})
    headers = AUTH if sent is None else {**AUTH, "X-Request-ID": sent}
    answer = app.test_client().post(TRIGGER, headers=headers)
    with app.app_context():
        trigger = known_task(answer.get_json()["task_id"])
    assert trigger is not None
    assert trigger["request_id"] == answer.headers["X-Request-ID"]


def test_text_lines_read_as_before_with_the_request_id_inside_a_request(
    cleared_queue: dict[str, Any], admin: DemoAdmin
) -> None:
    with app_stderr() as stderr:
        app = create_app("testing", cleared_queue)
        answer = app.test_client().post(TRIGGER, headers={**AUTH, "X-Request-ID": "req-5d2e"})
    lines = stderr.getvalue().splitlines()

    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert any(
        re.fullmatch(rf"{stamp} INFO app: Slack is off: set SLACK_WEBHOOK_URL, .*", line)
        for line in lines
    ), lines
    task_id = answer.get_json()["task_id"]
    queued = (
        rf"{stamp} INFO app\.logs \[request_id=req-5d2e\]: Queued task manifest\.sync\[{task_id}\]"
    )
    assert any(re.fullmatch(queued, line) for line in lines), lines


def test_one_request_id_follows_a_sync_from_its_trigger_to_each_delivery(
    cleared_queue: dict[str, Any],
    admin: DemoAdmin,
    store: ManifestStore,
    bungie: BungieClient,
) -> None:
    assert sync.run(store, bungie).outcome == sync.UPDATED  # the next release is news
    admin.publish()
    with fake_receiver() as hook:
        overrides = {
            **cleared_queue,
            "LOG_FORMAT": "json",
            "WEBHOOK_URLS": ",".join(hook.url_for(f"/{n}/{PATH_TOKEN}") for n in "ab"),
            "WEBHOOK_SECRET": SECRET,
            "SYNC_MAX_RETRIES": 0,
        }
        app = create_app("testing", overrides)
        with CeleryWorker(overrides, loglevel="DEBUG") as worker:
            answer = app.test_client().post(TRIGGER, headers={**AUTH, "X-Request-ID": "req-c0ffee"})
            assert answer.status_code == 202
            hook.wait_for(2, timeout=90)
            worker.wait_until_idle(app.extensions["celery"], timeout=60)
            output = worker.output()
    records = json_lines(output)

    sync_id = answer.get_json()["task_id"]
    in_sync = [r for r in records if r.get("task_id") == sync_id]
    assert {r["task"] for r in in_sync} == {"manifest.sync"}
    assert any(r["message"].startswith(f"Task manifest.sync[{sync_id}] succeeded") for r in in_sync)
    in_deliveries = [r for r in records if r.get("task") == "manifest.deliver_release"]
    deliveries = {r["task_id"] for r in in_deliveries}
    assert len(deliveries) == 2
    # The sync said which tasks it queued, under the same request id.
    queued = {r["message"] for r in in_sync if r["message"].startswith("Queued task")}
    assert queued == {f"Queued task manifest.deliver_release[{d}]" for d in deliveries}
    for record in in_sync + in_deliveries:
        assert record["request_id"] == "req-c0ffee", record
    assert [r for r in records if r.get("task_id") and r not in in_sync + in_deliveries] == []
    for secret in (PATH_TOKEN, SECRET, TestingConfig.BUNGIE_API_KEY, TestingConfig.API_TOKEN):
        assert secret not in output


def test_gunicorn_logs_json_with_its_access_lines(
    cleared_queue: dict[str, Any], admin: DemoAdmin, tmp_path: Path
) -> None:
    # The project's gunicorn.conf.py (read from the project root) applies LOG_FORMAT=json to
    # gunicorn's own lines and its access log.
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    args += ["--access-logfile", "-", "app:create_app()"]
    env = flask_env({**cleared_queue, "LOG_FORMAT": "json"})
    with ProjectProcess(args, env, ready="Booting worker") as web:
        url = f"http://127.0.0.1:{port}{TRIGGER}"
        answer = requests.post(url, headers={**AUTH, "X-Request-ID": "req-a11ce"}, timeout=30)
        # The access line is written once the answer went out.
        wait_until(lambda: '"gunicorn.access"' in web.output(), 30, "the access line")
        output = web.output()
    records = json_lines(output)

    assert answer.status_code == 202
    assert answer.headers["X-Request-ID"] == "req-a11ce"
    (access,) = [r for r in records if r["logger"] == "gunicorn.access"]
    assert access["request_id"] == "req-a11ce"
    assert (access["method"], access["path"], access["status"]) == ("POST", TRIGGER, 202)
    (queued,) = [r for r in records if r["message"].startswith("Queued task manifest.sync[")]
    assert queued["request_id"] == "req-a11ce"
    assert any(r["logger"] == "gunicorn.error" for r in records)
