"""Secrets stay secret: one representative run of everything (syncs good and bad, Slack by
webhook and bot, the API, the pages, the CLI, a worker) with distinctive secret values, then
every log record, response, worker log line and Slack payload is searched for them."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.notify import slack
from app.notify.policy import after_check
from devtools.demo.control import DemoOriginProcess
from tests.fake_slack import fake_slack
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique
from tests.reliability.servers import RedisServer
from tests.reliability.servers import wait_until
from tests.reliability.servers import worker

MARK = uuid.uuid4().hex[:12]
SECRETS = {
    "Bungie API key": f"sek-bungie-key-{MARK}",
    "wrong Bungie API key": f"sek-wrong-key-{MARK}",
    "API token": f"sek-api-token-{MARK}",
    "admin password": f"sek-admin-password-{MARK}",
    "Flask SECRET_KEY": f"sek-flask-secret-{MARK}",
    "Slack webhook": f"sek-slack-hook-{MARK}",
    "Slack bot token": f"xoxb-sek-bot-{MARK}",
    "Redis password": f"sek-redis-password-{MARK}",
    "Discord webhook token": f"sek-discord-token-{MARK}",
    "webhook URL token": f"sek-webhook-url-{MARK}",
    "webhook secret": f"sek-webhook-secret-{MARK}-0123456789",
}


class SecretLeaked(AssertionError):
    """A secret value was found where it must never be."""


class Recorder:
    """Everything a run produced that someone other than the app could read."""

    def __init__(self) -> None:
        self.sources: dict[str, list[str]] = {
            "log records": [],
            "responses": [],
            "worker log": [],
            "Slack payloads": [],
            "CLI output": [],
        }

    def response(self, client: FlaskClient, method: str, url: str, **options: Any) -> Any:
        answer = client.open(url, method=method, **options)
        headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        self.sources["responses"].append(f"{method} {url}\n{headers}\n{answer.get_data(True)}")
        return answer

    def leaks(self) -> list[tuple[str, str, str]]:
        found = []
        for source, texts in self.sources.items():
            for text in texts:
                for name, secret in SECRETS.items():
                    for line in text.splitlines():
                        if secret in line:
                            found.append((name, source, line.strip()[:300]))
        return found


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    """An origin wanting our API key, a Redis wanting a password, a fake Slack."""
    with ExitStack() as stack:
        args = ("--items", "300", "--seed", "5", "--languages", "en")
        origin = stack.enter_context(
            DemoOriginProcess(*args, "--api-key", SECRETS["Bungie API key"])
        )
        server = stack.enter_context(RedisServer(password=SECRETS["Redis password"]))
        fake = stack.enter_context(fake_slack())
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": origin.url,
            "BUNGIE_API_KEY": SECRETS["Bungie API key"],
            "API_TOKEN": SECRETS["API token"],
            "ADMIN_PASSWORD": SECRETS["admin password"],
            "SECRET_KEY": SECRETS["Flask SECRET_KEY"],
            "SLACK_WEBHOOK_URL": f"{fake.url}/services/T0/B0/{SECRETS['Slack webhook']}",
            "SLACK_ALERT_AFTER_SECONDS": 0,
            # Destinations the fake receiver does not know (404): their tokens must not leak
            # from the error path either.
            "DISCORD_WEBHOOK_URL": f"{fake.url}/api/webhooks/1/{SECRETS['Discord webhook token']}",
            "WEBHOOK_URLS": f"{fake.url}/hooks/{SECRETS['webhook URL token']}",
            "WEBHOOK_SECRET": SECRETS["webhook secret"],
            "MANIFEST_KEY_PREFIX": unique("secrets"),
            "CELERY_QUEUE": unique("secrets"),
            "LOG_LEVEL": "DEBUG",
            "SYNC_MAX_RETRIES": 0,
        }
        yield {"origin": origin, "slack": fake, "overrides": overrides, "stack": stack}


def sign_in(recorder: Recorder, client: FlaskClient, password: str) -> int:
    page = recorder.response(client, "GET", "/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    token = match.group(1)
    data = {"username": "admin", "password": password, "csrf_token": token}
    return recorder.response(client, "POST", "/login", data=data).status_code


def wait_task(recorder: Recorder, client: FlaskClient, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        answer = recorder.response(client, "GET", f"/api/v1/tasks/{task_id}").get_json()
        return answer if answer["state"] in ("SUCCESS", "FAILURE") else None

    answer = wait_until(done, 60, f"task {task_id}", interval=0.2)
    assert answer is not None
    return answer


def test_no_secret_reaches_a_log_a_page_an_answer_or_slack(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    caplog.set_level(logging.DEBUG)
    overrides = world["overrides"]
    fake = world["slack"]
    admin = world["origin"].admin
    recorder = Recorder()
    app: Flask = create_app("testing", overrides)
    process = world["stack"].enter_context(worker(overrides, loglevel="DEBUG"))
    runner = app.test_cli_runner()
    bearer = {"Authorization": f"Bearer {SECRETS['API token']}"}

    # The CLI fills the cache; a new release comes through the API and the worker, and Slack
    # rate-limits its message once.
    for args in (["manifest", "sync"], ["manifest", "status"]):
        recorder.sources["CLI output"].append(runner.invoke(args=args).output)
    admin.publish()
    fake.answer_next(429, Retry_After="1")
    client = app.test_client()
    trigger = recorder.response(client, "POST", "/api/v1/manifest/sync", headers=bearer)
    assert wait_task(recorder, client, trigger.get_json()["task_id"])["state"] == "SUCCESS"
    wait_until(lambda: fake.received, 30, "the release message")
    recorder.response(client, "POST", "/api/v1/manifest/sync", headers={"Authorization": "x"})
    recorder.response(
        client, "POST", "/api/v1/manifest/sync", headers={"Authorization": "Bearer wrong"}
    )

    # The pages, signed in with the password, and a wrong password.
    assert sign_in(recorder, app.test_client(), "wrong-" + SECRETS["admin password"]) == 401
    pages = app.test_client()
    assert sign_in(recorder, pages, SECRETS["admin password"]) == 303
    with app.app_context():
        store = get_store()
        release = store.live_id()
        item = store.search(per_page=1).items[0]["hash"]
    for url in (
        "/", "/items?q=a", f"/items/{item}", "/history", f"/releases/{release}",
        "/updateManifest", "/readyz", "/healthz", "/players?name=Nobody%230001",
        "/api/v1/manifest", "/api/v1/history", f"/api/v1/items/{item}", "/api/v1/items?q=a",
    ):  # fmt: skip
        recorder.response(pages, "GET", url)

    # A sync with a wrong API key fails (and Slack is told at once: not transient).
    wrong = create_app("testing", {**overrides, "BUNGIE_API_KEY": SECRETS["wrong Bungie API key"]})
    recorder.sources["CLI output"].append(
        wrong.test_cli_runner().invoke(args=["manifest", "sync"]).output
    )
    with wrong.app_context():
        failed = sync.run(get_store(), get_bungie())
        after_check(failed)
    assert failed.error == "BungieConfigError"
    wait_until(lambda: len(fake.received) >= 2, 30, "the trouble message")
    recorder.response(wrong.test_client(), "GET", "/api/v1/manifest")

    # Slack by bot token, in this process.
    bot = slack.BotSender(SECRETS["Slack bot token"], "#manifest", base_url=fake.url + "/api/")
    bot.send(slack.trouble_message({"at": time.time(), "error": "X", "message": "y"}, "http://x"))

    recorder.sources["Slack payloads"] = [json.dumps(a["payload"]) for a in fake.attempts]
    recorder.sources["worker log"] = [process.output()]
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    recorder.sources["log records"] = [formatter.format(r) for r in caplog.records]
    leaks = recorder.leaks()
    figures.scenario("secrets")["summary"] = {
        "secrets planted": ", ".join(SECRETS),
        "log records of this process (DEBUG)": len(recorder.sources["log records"]),
        "HTTP answers (status, headers, body)": len(recorder.sources["responses"]),
        "worker log lines (DEBUG)": process.output().count("\n"),
        "Slack payloads": len(recorder.sources["Slack payloads"]),
        "CLI outputs": len(recorder.sources["CLI output"]),
        "lines holding a secret": len(leaks),
    }
    figures.scenario("secrets")["rows"] = [
        {"secret": name, "found in": source, "line": line} for name, source, line in leaks
    ]
    if leaks:
        raise SecretLeaked(f"{len(leaks)} lines hold a secret, e.g. {leaks[:3]}")
