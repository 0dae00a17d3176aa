"""The deploy entry points never run on development secrets: gunicorn, the Celery worker and
beat default to production, which refuses missing, example and too-short secrets by name."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from app import create_app
from config import ConfigurationError
from config import DevelopmentConfig
from config import ProductionConfig
from config import TestingConfig
from config import get_config
from tests.processes import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent
SECRETS = ("SECRET_KEY", "BUNGIE_API_KEY", "API_TOKEN", "ADMIN_PASSWORD")
# Long enough and not public: what a production that starts looks like.
GOOD = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "k3Jx9vQ2mB7nR4tY8wZ1pL6sD0fG5hA",
    "BUNGIE_API_KEY": "0f3c9a7e5b1d4c2a8e6f0b9d7c5a3e1f",
    "API_TOKEN": "Tq8Zr2Lm5Xv9Nc3Bw7Kd1Hf4Js6Gp0Ya",
    "ADMIN_PASSWORD": "horse-battery-staple-7",
}


def run_here(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command of the project's in its folder with `env`; its output as text."""
    return subprocess.run(
        args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def bare_env(**extra: str) -> dict[str, str]:
    """An environment with no FLASK_CONFIG, no secret and no app setting: a fresh deploy.

    REDIS_URL points nowhere, so a process that wrongly starts touches no one's Redis.
    """
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    path = f"{VENV_BIN}:{os.environ['PATH']}"
    return {**keep, "PATH": path, "REDIS_URL": "redis://127.0.0.1:1/0", **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Started:
    """A process in its own session whose output is kept, stopped for sure on the way out."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the whole process group; kill what is left (Celery's embedded beat, say)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)


@pytest.fixture
def started() -> Iterator[list[Started]]:
    processes: list[Started] = []
    yield processes
    for process in processes:
        process.stop()


def start(processes: list[Started], command: str, env: dict[str, str], log: Path) -> Started:
    process = Started(command, env, log)
    processes.append(process)
    return process


def wait_for(check: Callable[[], object], timeout: float = 60) -> None:
    """Wait until `check()` is true (the process decided: it stopped, or it serves)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("the process neither stopped nor started in time")


def assert_refused_naming_every_secret(process: Started) -> None:
    output = process.output()
    assert process.process.returncode not in (None, 0), output[-3000:]
    line = next(
        (line for line in output.splitlines() if "ProductionConfig needs" in line), output[-3000:]
    )
    for name in SECRETS:
        assert name in line, line
    assert "REDIS_URL," not in line  # it is set (to nowhere): only what is wrong is named


def decided(celery: Started) -> bool:
    """Return whether a Celery process stopped, or loaded the app (its banner is out)."""
    output = celery.output()
    return celery.process.poll() is not None or "[config]" in output or "Configuration ->" in output


def procfile() -> dict[str, str]:
    lines = (PROJECT_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def serves(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
    except requests.RequestException:
        return False
    return True


# -- the deploy entry points ------------------------------------------------------------------


def test_procfile_web_without_flask_config_refuses_to_serve(
    started: list[Started], tmp_path: Path
) -> None:
    port = free_port()
    env = bare_env(PORT=str(port), WEB_CONCURRENCY="1")
    web = start(started, procfile()["web"], env, tmp_path / "web.log")
    wait_for(lambda: web.process.poll() is not None or serves(f"http://127.0.0.1:{port}/healthz"))
    assert_refused_naming_every_secret(web)


def test_procfile_worker_and_beat_without_flask_config_refuse_to_start(
    started: list[Started], tmp_path: Path
) -> None:
    worker = start(started, procfile()["worker"], bare_env(), tmp_path / "worker.log")
    beat = start(
        started,
        procfile()["beat"] + " --schedule=" + str(tmp_path / "schedule"),
        bare_env(),
        tmp_path / "beat.log",
    )
    for process in (worker, beat):
        wait_for(functools.partial(decided, process))
        assert_refused_naming_every_secret(process)
        assert "Traceback" not in process.output()  # one clear line


def test_the_image_and_compose_choose_no_development() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (.*)$", dockerfile, flags=re.MULTILINE)
    assert cmd is not None
    assert cmd.group(1).rstrip().endswith('"app:create_app()"]')
    assert "development" not in dockerfile
    assert "development" not in (PROJECT_ROOT / "Procfile").read_text()
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    assert "development" not in str(compose)


def test_with_no_flask_config_the_default_is_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_CONFIG", raising=False)
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)
    monkeypatch.setenv("FLASK_DEBUG", "1")  # debug mode outside the flask command: no effect
    assert get_config() is ProductionConfig
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")  # what the flask command sets
    assert get_config() is DevelopmentConfig
    monkeypatch.setenv("FLASK_DEBUG", "0")
    assert get_config() is ProductionConfig


# -- the local ways still need no settings ----------------------------------------------------


def test_flask_run_debug_works_with_no_settings_and_plain_run_refuses(
    started: list[Started], tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    env = bare_env(REDIS_URL=redis_url)
    debug = start(
        started,
        f"python -m flask --app app run --debug --no-reload --port {port}",
        env,
        tmp_path / "debug.log",
    )
    health = f"http://127.0.0.1:{port}/healthz"
    wait_for(lambda: debug.process.poll() is not None or serves(health))
    assert requests.get(health, timeout=5).json() == {"status": "ok"}, debug.output()
    login = requests.get(f"http://127.0.0.1:{port}/login", timeout=5)
    assert login.status_code == 200
    debug.stop()

    plain = start(
        started,
        f"python -m flask --app app run --port {free_port()}",
        bare_env(),
        tmp_path / "plain.log",
    )
    wait_for(lambda: plain.process.poll() is not None or "Running on" in plain.output())
    assert_refused_naming_every_secret(plain)


def test_manage_py_without_settings_says_what_to_set_in_one_line() -> None:
    done = run_here([sys.executable, "manage.py", "manifest", "status"], env=bare_env())
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "Error: ProductionConfig needs these settings in the environment: " in done.stderr
    assert "FLASK_CONFIG=development python manage.py" in done.stderr


# -- what production refuses ------------------------------------------------------------------


def env_example() -> dict[str, str]:
    text = (PROJECT_ROOT / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(.*)$", text, flags=re.MULTILINE))


def refusal(settings: dict[str, str | None]) -> str:
    with pytest.raises(ConfigurationError) as refused:
        create_app("production", settings)
    return str(refused.value)


def test_production_refuses_the_example_values_naming_each_without_its_value() -> None:
    example = env_example()
    assert set(SECRETS) <= set(example)
    message = refusal({**GOOD, **{name: example[name] for name in SECRETS}})
    for name in SECRETS:
        assert name in message
        assert example[name] not in message
    assert "\n" not in message


def test_production_refuses_the_development_values() -> None:
    public = {
        "SECRET_KEY": "dev-only-secret-key",
        "BUNGIE_API_KEY": "demo-key",
        "API_TOKEN": "dev-api-token",
        "ADMIN_PASSWORD": "dev",
    }
    message = refusal({**GOOD, **public})
    for name, value in public.items():
        assert name in message
        if len(value) > len("dev"):  # "dev" is in any message that says `make dev`
            assert value not in message


def test_production_refuses_the_test_suites_values() -> None:
    public = {name: str(getattr(TestingConfig, name)) for name in SECRETS}
    message = refusal({**GOOD, **public})
    for name, value in public.items():
        assert name in message
        assert value not in message


def test_production_refuses_secrets_too_short_to_be_secret() -> None:
    short = {"SECRET_KEY": "x7Gq2", "API_TOKEN": "Tq8Zr2Lm5", "ADMIN_PASSWORD": "hunter2"}
    message = refusal({**GOOD, **short})
    for name, value in short.items():
        assert name in message
        assert value not in message
    assert "BUNGIE_API_KEY" not in message  # Bungie's key is Bungie's: only public values fail


def test_production_names_missing_wrong_and_short_settings_in_one_message() -> None:
    message = refusal(
        {**GOOD, "REDIS_URL": None, "SECRET_KEY": "change-me-to-a-long-random-string",
         "API_TOKEN": "short"}
    )  # fmt: skip
    assert message.startswith("ProductionConfig needs these settings in the environment: ")
    for name in ("REDIS_URL", "SECRET_KEY", "API_TOKEN"):
        assert name in message
    assert "ADMIN_PASSWORD" not in message


def test_production_starts_with_good_secrets() -> None:
    app = create_app("production", GOOD)
    assert app.config["SECRET_KEY"] == GOOD["SECRET_KEY"]


def test_celery_worker_module_refuses_in_one_line(tmp_path: Path) -> None:
    done = run_here(
        [sys.executable, "-c", "import celery_worker"],
        env={**bare_env(), "SECRET_KEY": "change-me-to-a-long-random-string"},
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "SECRET_KEY" in done.stderr
    assert "change-me-to-a-long-random-string" not in done.stderr


@pytest.mark.parametrize(
    ("setting", "value", "refusal"),
    [
        ("MANIFEST_FORMAT", "xml", "MANIFEST_FORMAT must be one of json, sqlite, got 'xml'"),
        ("SYNC_TIME_LIMIT", "soon", "SYNC_TIME_LIMIT must be a whole number, got 'soon'"),
        (
            "FLASK_SYNC_TIME_LIMIT",
            "soon",
            "FLASK_SYNC_TIME_LIMIT must be a whole number, got 'soon'",
        ),
    ],
)
def test_celery_worker_module_refuses_a_bad_setting_in_one_line(
    setting: str, value: str, refusal: str
) -> None:
    done = run_here(
        [sys.executable, "-c", "import celery_worker"], env={**GOOD, **bare_env(**{setting: value})}
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == refusal
