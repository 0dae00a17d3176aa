"""Every way users run the app: make dev, the Procfile, Startup.bat and docker compose."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery.result import AsyncResult

from app import create_app
from app import triggers
from app.extensions import get_celery
from app.extensions import get_store
from devtools import devstack
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.compose_file import command_of
from tests.compose_file import compose
from tests.processes import PROJECT_ROOT
from tests.processes import ProjectProcess
from tests.processes import flask_env

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except requests.RequestException:
            found = None
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any FLASK_ or app setting leaking in."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLASK_", "REDIS", "BUNGIE", "ADMIN_PASSWORD"))
    }
    return {**keep, **extra}


def start_dev(
    port: int, log: Path, env: dict[str, str], demo_items: int
) -> subprocess.Popen[bytes]:
    """Start `manage.py dev` in a session of its own (stop it by its group), output to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "dev",
                "--port",
                str(port),
                "--demo-items",
                str(demo_items),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_dev(dev: subprocess.Popen[bytes], *, twice: bool = False) -> None:
    """Press Ctrl+C on `make dev` (`twice`: a second time, soon after) and wait for it to stop.

    Should it not stop within a minute, kill its whole session, so that none of its children
    outlives the test, and fail.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(dev.pid, signal.SIGINT)
    if twice:
        time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.kill(dev.pid, signal.SIGINT)
    try:
        dev.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)
        dev.wait(10)
        raise


# -- make dev -----------------------------------------------------------------------------


def test_make_dev_runs_everything_without_redis_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dev.log"
    env = clean_env(REDIS_URL="redis://127.0.0.1:1/0", PYTHONUNBUFFERED="1")
    dev = start_dev(port, log, env, demo_items=500)
    try:
        wait_until(lambda: "Dashboard:" in log.read_text(), 90, "the dashboard line")
        output = log.read_text()
        assert "using an embedded server" in output
        assert f"Dashboard:  http://127.0.0.1:{port}/" in output
        assert "Sign in:    admin / dev" in output
        # The first sync fills the cache within seconds: the items page lists items.
        base = f"http://127.0.0.1:{port}"
        found = wait_until(
            lambda: requests.get(f"{base}/api/v1/items", timeout=5).json().get("total"), 90, "items"
        )
        assert found > 0
        name = requests.get(f"{base}/api/v1/items", timeout=5).json()["items"][0]
        page = requests.get(f"{base}/items", timeout=5)
        assert name["displayProperties"]["name"] in page.text
        # A second `make dev` on the same port says so, clearly, and starts nothing.
        second = subprocess.run(
            [sys.executable, "manage.py", "dev", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert f"Port {port} is taken" in second.stderr
    finally:
        # Ctrl+C twice, as impatient people do: the second must not cut the stop short.
        stop_dev(dev, twice=True)
    children = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", log.read_text())]
    assert len(children) == 3
    assert all(gone(pid) for pid in children), "a child of make dev survived Ctrl+C"
    assert "stopped" in log.read_text()
    # Each line says which process it comes from, once.
    sync_lines = [
        line for line in log.read_text().splitlines() if "Sync " in line and "updated" in line
    ]
    assert sync_lines, log.read_text()[-3000:]
    assert all(line.startswith("worker |") for line in sync_lines)
    assert len(sync_lines) == 1
    # The embedded server never dropped anyone's connection.
    assert "Connection closed by server" not in log.read_text()
    assert "Connection to broker lost" not in log.read_text()


def test_the_embedded_redis_answers_an_error_and_keeps_the_connection() -> None:
    with devstack.embedded_redis() as url:
        client = redis.Redis.from_url(url, single_connection_client=True)
        client.set("key", "text")
        connection = client.client_id()
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            client.lpush("key", "item")
        # A script's first EVALSHA is answered NOSCRIPT, then loaded, on the same connection.
        script = client.register_script("return redis.call('GET', KEYS[1])")
        assert script(keys=["key"]) == b"text"
        assert client.client_id() == connection
        client.close()


# -- Heroku: Procfile ---------------------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (PROJECT_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


@pytest.fixture
def heroku_env(origin: DemoOriginProcess, redis_url: str, tmp_path: Path) -> dict[str, Any]:
    settings = {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": f"test:{uuid.uuid4().hex[:12]}",
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
        "CELERY_BEAT_SCHEDULE_FILE": str(tmp_path / "celerybeat-schedule"),
    }
    return {**settings, "_env": flask_env(settings)}


def run_procfile_line(kind: str, env: dict[str, str], ready: str) -> ProjectProcess:
    command = procfile()[kind]
    shell_env = {**env, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    return ProjectProcess(["bash", "-c", f"exec {command}"], shell_env, ready=ready)


def test_procfile_web_serves_pages_on_port(heroku_env: dict[str, Any], admin: DemoAdmin) -> None:
    port = free_port()
    env = {**heroku_env["_env"], "PORT": str(port), "WEB_CONCURRENCY": "1"}
    with run_procfile_line("web", env, ready="Booting worker"):
        base = f"http://127.0.0.1:{port}"
        health = wait_until(lambda: requests.get(f"{base}/healthz", timeout=2), 30, "gunicorn")
        assert health.json() == {"status": "ok"}
        page = requests.get(f"{base}/", timeout=5)
        assert page.status_code == 200
        assert "Manifest Syncer" in page.text


def test_procfile_worker_runs_syncs_and_beat_is_its_own_process_type(
    heroku_env: dict[str, Any], admin: DemoAdmin, redis_client: redis.Redis
) -> None:
    """Worker dynos scale (`heroku ps:scale worker=N`) and never run beat: exactly one beat
    dyno polls."""
    assert not {"-B", "--beat"} & set(shlex.split(procfile()["worker"]))
    assert shlex.split(procfile()["beat"])[:5] == [
        "celery",
        "-A",
        "celery_worker.celery",
        "-q",
        "beat",
    ]
    settings = {k: v for k, v in heroku_env.items() if k != "_env"}
    env = {**heroku_env["_env"], "FLASK_MANIFEST_POLL_SECONDS": "2"}
    with (
        run_procfile_line("worker", env, ready=" ready.") as worker,
        run_procfile_line("beat", env, ready="beat: Starting..."),
    ):
        app = create_app("testing", settings)
        with app.test_request_context():
            sync = triggers.request_sync("test")
            result = AsyncResult(sync.task_id, app=get_celery())
            wait_until(lambda: result.state == "SUCCESS", 60, "the sync")
            assert result.info["outcome"] == "updated"
            # Beat's polls reach the worker: the checks say who asked.
            store = get_store()
            wait_until(
                lambda: any(c["trigger"] == "beat" for c in store.recent_checks()), 30, "a poll"
            )
        assert "beat: Starting..." not in worker.output()
    queue = settings["CELERY_QUEUE"]
    redis_client.delete(queue, f"_kombu.binding.{queue}")
    keys = list(redis_client.scan_iter(match=f"{settings['MANIFEST_KEY_PREFIX']}:*"))
    if keys:
        redis_client.unlink(*keys)


# -- Windows: Startup.bat -----------------------------------------------------------------


def startup_bat_commands() -> list[list[str]]:
    """Every Python command Startup.bat starts, as argument lists."""
    text = (PROJECT_ROOT / "Startup.bat").read_bytes().decode()
    commands = []
    for line in text.splitlines():
        match = re.search(r'"\.venv\\Scripts\\python\.exe"\s+((?:-m|manage\.py)\s.*)$', line)
        if match:
            commands.append(shlex.split(match.group(1)))
    return commands


def test_startup_bat_uses_crlf_and_starts_each_piece_in_its_own_window() -> None:
    raw = (PROJECT_ROOT / "Startup.bat").read_bytes()
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    text = raw.decode()
    commands = "\n".join(
        line for line in text.splitlines() if not line.lstrip().lower().startswith("rem ")
    )
    assert "--pool=solo" in commands
    assert " -B" not in commands
    assert " --beat" not in commands
    windows = re.findall(r'^\s*start "([^"]+)"', text, flags=re.MULTILINE)
    assert {"Manifest Syncer - worker", "Manifest Syncer - beat", "Manifest Syncer - web"} <= set(
        windows
    )
    assert "where redis-server" in text
    assert "manage.py dev" in text  # the way out when there is no Redis


def dry_run(args: list[str]) -> list[str]:
    """The same command, asked only to load the app and show its help (or routes)."""
    if args[:2] == ["-m", "flask"]:
        return [*args[: args.index("run")], "routes"]
    if args[:2] == ["-m", "pip"]:
        return ["-m", "pip", "--version"]
    return [*args, "--help"]


@pytest.mark.parametrize("args", startup_bat_commands(), ids=lambda a: " ".join(a[:4]))
def test_every_python_command_of_startup_bat_exists(args: list[str], redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, *dry_run(args)],
        cwd=PROJECT_ROOT,
        env=clean_env(FLASK_CONFIG="testing", TEST_REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- docker compose -----------------------------------------------------------------------


def test_compose_services_run_this_projects_commands() -> None:
    services = compose()["services"]
    assert {"redis", "web", "web-2", "worker", "beat", "demo-origin", "flower"} <= set(services)
    ours = {name: command_of(s) for name, s in services.items() if s.get("build") == "."}
    assert ours["web"][0] == "gunicorn"
    assert ours["web"][-1] == shlex.split(procfile()["web"])[-1]  # the same app as Heroku's
    assert ours["worker"][:4] == ["celery", "-A", "celery_worker.celery", "worker"]
    assert ours["beat"][:5] == ["celery", "-A", "celery_worker.celery", "-q", "beat"]
    assert ours["demo-origin"][:3] == ["python", "manage.py", "demo-origin"]
    assert set(ours) == {"web", "web-2", "worker", "beat", "demo-origin"}


def test_compose_services_have_healthchecks_and_wait_for_redis() -> None:
    """How many of each compose runs (one beat): test_compose_profiles."""
    services = compose()["services"]
    for name in ("redis", "web", "web-2", "worker", "demo-origin"):
        assert services[name]["healthcheck"]["test"], name
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("web", "web-2", "worker", "beat"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["flower"]["profiles"] == ["monitoring"]
    assert "noeviction" in command_of(services["redis"])
    schedule = next(a for a in command_of(services["beat"]) if a.startswith("--schedule="))
    assert schedule.startswith("--schedule=/tmp/")  # writable by the image's non-root user


def test_compose_commands_load_the_app(redis_url: str) -> None:
    services = compose()["services"]
    env = clean_env(FLASK_CONFIG="testing", TEST_REDIS_URL=redis_url)
    checks = {
        "web": [str(VENV_BIN / "gunicorn"), "--check-config", command_of(services["web"])[-1]],
        "worker": [*command_of(services["worker"]), "--help"],
        "beat": [*command_of(services["beat"]), "--help"],
        "demo-origin": [*command_of(services["demo-origin"]), "--help"],
    }
    checks["worker"][0] = checks["beat"][0] = str(VENV_BIN / "celery")
    checks["demo-origin"][0] = sys.executable
    for name, args in checks.items():
        done = subprocess.run(
            args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"


def test_compose_configuration_comes_from_env_example() -> None:
    example = (PROJECT_ROOT / ".env.example").read_text()
    names = re.findall(r"^#?\s*([A-Z_]+)=", example, flags=re.MULTILINE)
    from config import Config

    assert names
    compose_only = ("FLASK_CONFIG", "FLOWER_BASIC_AUTH", "COMPOSE_PROFILES")
    assert all(hasattr(Config, name) or name in compose_only for name in names), names
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "USER syncer" in dockerfile
    assert dockerfile.index("pip install -r") < dockerfile.index("COPY . .")
