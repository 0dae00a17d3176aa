"""`make dev` with a Celery broker or result backend that does not answer: a dead Redis is
served by the embedded server too; any other broker is one clear line naming the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.processes import PROJECT_ROOT
from tests.test_run_targets import clean_env
from tests.test_run_targets import free_port
from tests.test_run_targets import start_dev
from tests.test_run_targets import stop_dev
from tests.test_run_targets import wait_until


def test_make_dev_serves_a_dead_redis_broker_from_the_embedded_server(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dev.log"
    env = clean_env(
        REDIS_URL="redis://127.0.0.1:1/0",
        CELERY_BROKER_URL="redis://:sek-broker-password@127.0.0.1:2/0",
        CELERY_RESULT_BACKEND="redis://127.0.0.1:3/1",
        PYTHONUNBUFFERED="1",
    )
    dev = start_dev(port, log, env, demo_items=300)
    try:
        wait_until(
            lambda: "Dashboard:" in log.read_text() or dev.poll() is not None, 90, "make dev"
        )
        output = log.read_text()
        assert "Dashboard:" in output, output[-3000:]
        assert "CELERY_BROKER_URL (redis://:***@127.0.0.1:2/0) does not answer" in output
        assert "CELERY_RESULT_BACKEND (redis://127.0.0.1:3/1) does not answer" in output
        base = f"http://127.0.0.1:{port}"
        found = wait_until(
            lambda: requests.get(f"{base}/api/v1/items", timeout=5).json().get("total"), 90, "items"
        )
        assert found > 0
        # While it runs: how it stops is test_run_targets' concern (stops cleanly).
        running = log.read_text()
    finally:
        stop_dev(dev)
    assert "Traceback" not in running
    assert "Cannot connect to" not in running
    assert "sek-broker-password" not in log.read_text()


def test_make_dev_with_a_dead_amqp_broker_says_which_setting_to_fix() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "dev", "--port", str(free_port())],
        cwd=PROJECT_ROOT,
        env=clean_env(
            REDIS_URL="redis://127.0.0.1:1/0",
            CELERY_BROKER_URL="amqp://guest:sek-amqp-password@127.0.0.1:1//",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == [
        "Error: CELERY_BROKER_URL (amqp://guest:***@127.0.0.1:1//) does not answer: start "
        "that broker, or unset CELERY_BROKER_URL to use Redis."
    ], done.stderr
    assert "started worker" not in done.stdout
    assert "sek-amqp-password" not in done.stdout + done.stderr
