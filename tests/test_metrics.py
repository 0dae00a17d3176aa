"""GET /metrics as Prometheus reads it: its own parser, the token, no secret; figures that move
when a Celery worker in another process syncs and posts, or when a sync is cut short;
gunicorn's workers added up; and the Grafana dashboard asks only for what /metrics exports,
counting each figure once however many web instances Prometheus scrapes."""

from __future__ import annotations

import json
import re
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery.exceptions import SoftTimeLimitExceeded
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app import triggers
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import CSRF
from tests.conftest import DEMO_ITEMS
from tests.conftest import drop_keys
from tests.conftest import drop_queue
from tests.fake_receivers import FakeReceiver
from tests.fake_receivers import fake_receiver
from tests.processes import PROJECT_ROOT
from tests.processes import CeleryWorker
from tests.processes import ProjectProcess
from tests.processes import celery_worker
from tests.processes import flask_env
from tests.processes import http_ok
from tests.reliability.servers import free_port
from tests.reliability.servers import wait_until
from tests.test_keys import run_queued_delivery

DASHBOARD = PROJECT_ROOT / "docs" / "grafana-dashboard.json"
API = {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"}
METRICS_TOKEN = "metrics-token-for-these-tests-0123456789"
# What each family is, as Prometheus' parser reads it (a counter's name without `_total`).
KINDS = {
    "manifest_syncs": "counter",
    "manifest_sync_duration_seconds": "histogram",
    "manifest_bungie_requests": "counter",
    "manifest_deliveries": "counter",
    "manifest_triggers": "counter",
    "manifest_rate_limited": "counter",
    "manifest_http_requests": "counter",
    "manifest_redis_up": "gauge",
    "manifest_last_check_age_seconds": "gauge",
    "manifest_last_check_ok": "gauge",
    "manifest_seconds_since_last_success": "gauge",
    "manifest_failing_for_seconds": "gauge",
    "manifest_live_release_age_seconds": "gauge",
    "manifest_live_release_memory_bytes": "gauge",
    "manifest_definitions": "gauge",
    "manifest_history_entries": "gauge",
    "manifest_redis_memory_used_bytes": "gauge",
    "manifest_redis_memory_max_bytes": "gauge",
    "manifest_destination_owed_releases": "gauge",
    "manifest_destination_failing_for_seconds": "gauge",
    "manifest_destination_throttled_for_seconds": "gauge",
    "manifest_destination_last_delivery_age_seconds": "gauge",
}
SERIES_OF = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def families(text: str) -> dict[str, Metric]:
    """Parse an exposition with Prometheus' own parser; return its families by name."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def total(found: dict[str, Metric], sample: str, **labels: str) -> float:
    """Add up the samples named `sample` whose labels include `labels`."""
    return sum(
        s.value
        for family in found.values()
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def scrape(client: FlaskClient, headers: dict[str, str] | None = None) -> dict[str, Metric]:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    return families(answer.get_data(as_text=True))


def sync_here(app: Flask, trigger: str = "api") -> dict[str, Any]:
    """Run the sync task in this process, as a worker would; return its result."""
    result: dict[str, Any] = (
        app.extensions["celery"].tasks[triggers.SYNC_TASK].apply(kwargs={"trigger": trigger}).get()
    )
    assert result["outcome"] == "updated", result
    return result


@pytest.fixture
def make_app(
    app_overrides: dict[str, Any], admin: DemoAdmin, redis_client: redis.Redis
) -> Iterator[Callable[..., Flask]]:
    """Make the app on this test's prefix with more settings; drop the tasks it queued."""
    yield lambda **settings: create_app("testing", {**app_overrides, **settings})
    redis_client.delete(app_overrides["CELERY_QUEUE"])


# -- what a scrape answers --------------------------------------------------------------------


def test_prometheus_parses_every_figure_and_its_help(app: Flask, client: FlaskClient) -> None:
    sync_here(app)
    answer = client.get("/metrics")

    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["Cache-Control"] == "no-store"
    found = families(answer.get_data(as_text=True))
    assert {name: found[name].type for name in KINDS if name in found} == KINDS
    assert all(found[name].documentation for name in KINDS), "every figure says what it is"
    assert total(found, "manifest_redis_up") == 1
    assert total(found, "manifest_syncs_total", trigger="api", outcome="updated") == 1
    assert total(found, "manifest_definitions", lang="en", table=ITEM_TABLE) == DEMO_ITEMS
    assert total(found, "manifest_history_entries") == 1
    assert total(found, "manifest_last_check_ok") == 1
    assert total(found, "manifest_failing_for_seconds") == 0
    assert 0 <= total(found, "manifest_seconds_since_last_success") < 600
    assert 0 <= total(found, "manifest_live_release_age_seconds") < 600
    assert total(found, "manifest_live_release_memory_bytes") > 0
    assert total(found, "manifest_redis_memory_used_bytes") > 0
    # The histogram of the sync's whole run: one observation, buckets that only grow.
    run = {"phase": "total", "outcome": "updated"}
    assert total(found, "manifest_sync_duration_seconds_count", **run) == 1
    buckets = [
        s.value
        for s in found["manifest_sync_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["phase"] == "total"
    ]
    assert buckets == sorted(buckets)
    assert buckets[-1] == 1
    assert total(found, "manifest_sync_duration_seconds_count", phase="ingest") == 1


def test_the_dashboard_asks_only_for_what_metrics_exports(app: Flask, client: FlaskClient) -> None:
    sync_here(app)
    exported = {
        name + suffix
        for name, family in scrape(client).items()
        for suffix in SERIES_OF.get(family.type, ("",))
    }
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    exprs = list(_exprs(dashboard))
    assert len(exprs) >= 15
    named = {name for expr in exprs for name in re.findall(r"\bmanifest_[a-z_]+", expr)}
    assert named - exported == set(), f"the dashboard asks for series /metrics lacks: {named}"
    # And every family of /metrics has a panel.
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in named}
    assert set(KINDS) - shown == set()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


def _panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from _panels(panel)


def _exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]


# An aggregation written `op by (labels) (argument)` (the dashboard's one form), and a series.
AGGREGATION = re.compile(r"\b(sum|max|min|avg|count)\s*(?:(by|without)\s*\(([^()]*)\)\s*)?\(")
SERIES = re.compile(r"\bmanifest_[a-z_]+")


@dataclass(frozen=True)
class Aggregation:
    """One aggregation of a PromQL expression: its operator, its `by` labels, its argument."""

    op: str
    by: frozenset[str]
    start: int
    end: int


def aggregations(expr: str) -> list[Aggregation]:
    """Find every aggregation in `expr`, innermost last among those that nest."""
    found = []
    for match in AGGREGATION.finditer(expr):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            end += 1
        assert match[2] != "without", f"{expr}: name the labels kept (by), not those dropped"
        assert not re.match(r"\s*(by|without)\b", expr[end:]), f"{expr}: write `op by (...) (x)`"
        by = frozenset(label.strip() for label in (match[3] or "").split(",") if label.strip())
        found.append(Aggregation(match[1], by, match.end(), end - 1))
    return found


def test_the_dashboard_counts_each_figure_once(
    make_app: Callable[..., Flask], admin: DemoAdmin, redis_client: redis.Redis
) -> None:
    """Every web instance Prometheus scrapes shows the same Redis-kept series (labels
    `instance`, `job` apart), and its own per-process counts. So a panel must first take one
    copy of each Redis-kept series: `max by` (or `min by`) exactly the labels the series has,
    which drops the instances' labels and nothing else (fewer labels would take the max across
    triggers or outcomes: an undercount); only then add those up, with `sum`. A per-process
    counter is summed across instances. Which is which: what a scrape without Redis still
    shows is per process."""
    with fake_receiver(200) as hook:
        app = make_app(WEBHOOK_URLS=hook.url_for("/hooks/dashboard"))
        sync_here(app)
        admin.publish()
        sync_here(app)
        # Posted, as a worker would: the destination's and the deliveries' series are there.
        assert run_queued_delivery(app, redis_client, app.config["CELERY_QUEUE"]) == "sent"
    labels: dict[str, set[str]] = {}
    additive = set()  # counters' and histograms' series: their copies add up
    for family in scrape(app.test_client()).values():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            if family.type in ("counter", "histogram"):
                additive.add(sample.name)
    unreachable = create_app("testing", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    per_process = {
        name + "_total"
        for name, family in scrape(unreachable.test_client()).items()
        if family.type == "counter"
    }
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    wrong = []
    for expr in _exprs(dashboard):
        found = aggregations(expr)
        for series in SERIES.finditer(expr):
            name = series[0]
            around = sorted(
                (a for a in found if a.start <= series.start() < a.end), key=lambda a: -a.start
            )
            if not around:
                wrong.append(f"{expr}: {name} is not aggregated across instances")
            elif name in per_process:
                if around[0].op != "sum":
                    wrong.append(f"{expr}: {name} counts per process: sum it, not {around[0].op}")
            elif name not in labels:
                wrong.append(f"{expr}: {name} has no sample in the scrape to read its labels")
            elif around[0].op not in ("max", "min") or around[0].by != labels[name]:
                kept = ", ".join(sorted(labels[name]))
                wrong.append(f"{expr}: take one copy of {name}: max by ({kept})")
            elif name in additive and any(a.op != "sum" for a in around[1:]):
                wrong.append(f"{expr}: the copies of {name} add up with sum")
    assert wrong == []
    assert "manifest_syncs_total" not in per_process
    assert "manifest_triggers_total" in per_process


def test_a_sync_cut_short_still_counts_its_requests(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cut_short(*args: Any) -> None:
        raise SoftTimeLimitExceeded()

    # The soft time limit lands after the flow, while the check is recorded: sync.run raises.
    monkeypatch.setattr(sync, "_record_check", cut_short)
    task = app.extensions["celery"].tasks[triggers.SYNC_TASK]
    with pytest.raises(SoftTimeLimitExceeded):
        task.apply(kwargs={"trigger": "api"}).get()

    found = scrape(client)
    assert total(found, "manifest_syncs_total", trigger="api", outcome="failed") == 1
    assert total(found, "manifest_syncs_total") == 1
    # The requests it made to Bungie are counted all the same.
    assert total(found, "manifest_bungie_requests_total", kind="api", status="200") == 1
    assert total(found, "manifest_bungie_requests_total", kind="content", status="200") >= 1


def test_metrics_token_is_asked_for_when_set(make_app: Callable[..., Flask]) -> None:
    client = make_app(METRICS_TOKEN=METRICS_TOKEN).test_client()

    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        API,
    ):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.headers["Cache-Control"] == "no-store"
        assert "manifest_" not in refused.get_data(as_text=True)
    found = scrape(client, {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert total(found, "manifest_redis_up") == 1


def test_no_secret_is_ever_shown(make_app: Callable[..., Flask]) -> None:
    secrets = {
        "METRICS_TOKEN": METRICS_TOKEN,
        "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/services/T0/B0/slack-path-secret",
        "DISCORD_WEBHOOK_URL": "http://127.0.0.1:9/api/webhooks/1/discord-path-secret",
        "WEBHOOK_URLS": "http://127.0.0.1:9/hooks/webhook-path-secret",
    }
    app = make_app(**secrets)
    sync_here(app)
    client = app.test_client()
    client.post("/api/v1/manifest/sync", headers=API)

    answer = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    text = answer.get_data(as_text=True)

    shown = families(text)
    destinations = {
        s.labels["destination"] for s in shown["manifest_destination_owed_releases"].samples
    }
    assert {"slack", "discord"} <= destinations
    assert any(name.startswith("webhook:") for name in destinations)
    never = [
        *secrets.values(),
        "slack-path-secret",
        "discord-path-secret",
        "webhook-path-secret",
        "127.0.0.1:9",
        str(TestingConfig.API_TOKEN),
        str(TestingConfig.BUNGIE_API_KEY),
        str(TestingConfig.SECRET_KEY),
        str(TestingConfig.WEBHOOK_SECRET),
        str(TestingConfig.ADMIN_PASSWORD),
    ]
    assert [secret for secret in never if secret in text] == []


def test_refused_sign_ins_are_counted_by_limit(
    make_app: Callable[..., Flask], steady_rate_windows: None
) -> None:
    app = make_app(RATE_LIMIT_WINDOW=3600, LOGIN_RATE_LIMIT=2, LOGIN_ACCOUNT_RATE_LIMIT=3)
    before = scrape(app.test_client())
    statuses = []
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        browser = app.test_client()
        browser.environ_base["REMOTE_ADDR"] = address
        with browser.session_transaction() as session:
            session["csrf_token"] = CSRF
        form = {"username": "admin", "password": "guess", "csrf_token": CSRF}
        statuses += [browser.post("/login", data=form).status_code for _ in range(3)]

    found = scrape(app.test_client())
    moved = {
        what: total(found, "manifest_rate_limited_total", what=what)
        - total(before, "manifest_rate_limited_total", what=what)
        for what in ("login", "login_account", "trigger")
    }
    # Each address: 2 tries, then its own limit; the account's 3 tries are spent by the 2nd.
    assert statuses == [401, 401, 429, 401, 429, 429, 429, 429, 429]
    assert moved == {"login": 3, "login_account": 3, "trigger": 0}


# -- a worker in another process --------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[FakeReceiver]:
    with fake_receiver(200) as hook:
        yield hook


@pytest.fixture(scope="module")
def worker_settings(
    origin: DemoOriginProcess, redis_url: str, receiver: FakeReceiver
) -> dict[str, Any]:
    return {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
        "TRIGGER_RATE_LIMIT": 1000,
        "WEBHOOK_URLS": receiver.url_for("/hooks/a-path-that-is-a-secret"),
        "SYNC_MAX_RETRIES": 0,
    }


@pytest.fixture(scope="module")
def worker(worker_settings: dict[str, Any], redis_client: redis.Redis) -> Iterator[CeleryWorker]:
    with celery_worker(worker_settings) as process:
        yield process
    prefix, queue = worker_settings["MANIFEST_KEY_PREFIX"], worker_settings["CELERY_QUEUE"]
    drop_queue(redis_client, queue)
    drop_keys(redis_client, prefix)


def trigger_and_wait(client: FlaskClient, timeout: float = 90) -> dict[str, Any]:
    """Ask for a sync through the API, as a program would; wait for the worker to end it."""
    asked = client.post("/api/v1/manifest/sync", headers=API)
    assert asked.status_code == 202, asked.get_data(as_text=True)
    task_id = asked.get_json()["task_id"]

    def ended() -> dict[str, Any] | None:
        answer = client.get(f"/api/v1/tasks/{task_id}").get_json()
        return answer if answer["state"] in ("SUCCESS", "FAILURE") else None

    answer = wait_until(ended, timeout, f"sync {task_id}", interval=0.1)
    assert answer is not None
    assert answer["state"] == "SUCCESS", answer
    result: dict[str, Any] = answer["result"]
    return result


def test_figures_move_when_a_worker_in_another_process_syncs(
    worker_settings: dict[str, Any],
    worker: CeleryWorker,
    admin: DemoAdmin,
    receiver: FakeReceiver,
) -> None:
    client = create_app("testing", worker_settings).test_client()
    before = scrape(client)
    queued = {"trigger": "api", "outcome": "queued"}

    assert trigger_and_wait(client)["outcome"] == "updated"

    found = scrape(client)
    assert total(found, "manifest_syncs_total", trigger="api", outcome="updated") == 1
    assert total(found, "manifest_triggers_total", **queued) == (
        total(before, "manifest_triggers_total", **queued) + 1
    )
    assert total(found, "manifest_bungie_requests_total", kind="api", status="200") >= 1
    assert total(found, "manifest_bungie_requests_total", error_code="1") >= 1
    assert total(found, "manifest_bungie_requests_total", kind="content", status="200") >= 1
    assert total(found, "manifest_definitions", lang="en", table=ITEM_TABLE) == DEMO_ITEMS
    assert total(found, "manifest_sync_duration_seconds_count", phase="ingest") == 1
    assert total(found, "manifest_history_entries") == 1

    # A new release: the worker syncs it, then posts it to the webhook.
    admin.publish()
    assert trigger_and_wait(client)["outcome"] == "updated"
    receiver.wait_for(1)

    def delivered() -> dict[str, Metric] | None:
        now = scrape(client)
        sent = {"message": "release", "outcome": "sent"}
        return now if total(now, "manifest_deliveries_total", **sent) == 1 else None

    after = wait_until(delivered, 30, "the post to be counted", interval=0.1)
    assert after is not None
    assert total(after, "manifest_syncs_total", trigger="api", outcome="updated") == 2
    assert total(after, "manifest_history_entries") == 2
    hooks = {s.labels["destination"] for s in after["manifest_deliveries"].samples}
    assert len(hooks) == 1
    assert next(iter(hooks)).startswith("webhook:")
    assert total(after, "manifest_destination_owed_releases") == 0
    text = client.get("/metrics").get_data(as_text=True)
    assert "a-path-that-is-a-secret" not in text
    assert receiver.url not in text


# -- gunicorn: several workers, one sum --------------------------------------------------------

ACCESS = "served-by %(p)s %(s)s %(U)s"
REFUSED = re.compile(r"served-by <(\d+)> 429 /api/v1/manifest/sync")


def refusals_by_worker(output: str) -> Counter[str]:
    """Count the triggers each gunicorn worker (by pid) answered 429, from its access log."""
    return Counter(REFUSED.findall(output))


def metric_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("manifest-metrics-*"))


def test_gunicorn_workers_add_up_their_counts(
    origin: DemoOriginProcess, redis_url: str, redis_client: redis.Redis
) -> None:
    prefix, queue = f"test:{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"
    settings = {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": prefix,
        "CELERY_QUEUE": queue,
        "TRIGGER_RATE_LIMIT": 1,
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The Procfile's command: no -c, so gunicorn reads ./gunicorn.conf.py by itself.
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    command += ["--access-logfile", "-", "--access-logformat", ACCESS, "app:create_app()"]
    folders_before = metric_folders()
    try:
        with ProjectProcess(command, flask_env(settings), "Booting worker") as web:
            wait_until(lambda: web.output().count("Booting worker") >= 2, 60, "two workers")
            wait_until(lambda: http_ok(f"{url}/healthz"), 60, "gunicorn")

            def post() -> int:
                return requests.post(
                    f"{url}/api/v1/manifest/sync", headers=API, timeout=30
                ).status_code

            def both_refused() -> bool:
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda _: post(), range(8)))
                return len(refusals_by_worker(web.output())) >= 2

            wait_until(both_refused, 60, "each gunicorn worker to refuse triggers", interval=0)

            def counted_alike() -> dict[str, Metric] | None:
                refused = sum(refusals_by_worker(web.output()).values())
                found = families(requests.get(f"{url}/metrics", timeout=30).text)
                limited = total(found, "manifest_rate_limited_total", what="trigger")
                return found if limited == refused else None

            # Any worker answers the scrape, and each shows every worker's refusals.
            for _ in range(4):
                found = wait_until(counted_alike, 30, "the access log and /metrics to agree")
            assert found is not None
            refused = sum(refusals_by_worker(web.output()).values())
            limited = {"trigger": "api", "outcome": "rate_limited"}
            assert total(found, "manifest_triggers_total", **limited) == refused
            assert total(found, "manifest_http_requests_total", status="429") == refused
            # Each worker counted in a file of its own, in the folder gunicorn.conf.py made.
            pids = set(refusals_by_worker(web.output()))
            (folder,) = [f for f in metric_folders() - folders_before if _holds(f, pids)]
        assert "Traceback" not in web.output(), web.output()[-3000:]
        assert not folder.exists(), "the master removes its folder when it stops"
    finally:
        drop_keys(redis_client, prefix)
        drop_queue(redis_client, queue)


def _holds(folder: Path, pids: set[str]) -> bool:
    return all((folder / f"counter_{pid}.db").exists() for pid in pids)


def test_a_scrape_without_redis_says_so() -> None:
    app = create_app("testing", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    found = scrape(app.test_client())
    assert total(found, "manifest_redis_up") == 0
    assert "manifest_definitions" not in found
    assert "manifest_triggers" in found, "the web process's own counts are still there"
