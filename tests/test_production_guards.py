"""Production's smaller guards: HSTS on every answer, SERVER_NAME when Slack gets links, and
Flower (compose's monitoring profile) on the loopback only, behind a password."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import create_app
from config import ConfigurationError
from tests.processes import PROJECT_ROOT
from tests.test_deploy_defaults import GOOD


def test_production_answers_carry_strict_transport_security(redis_url: str) -> None:
    app = create_app("production", {**GOOD, "REDIS_URL": redis_url})
    client = app.test_client()
    for url in ("/healthz", "/login", "/no-such-page"):
        answer = client.get(url)
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000", url


def test_hsts_max_age_is_a_setting_and_zero_turns_it_off(redis_url: str) -> None:
    settings = {**GOOD, "REDIS_URL": redis_url}
    short = create_app("production", {**settings, "HSTS_MAX_AGE": 600}).test_client()
    assert short.get("/healthz").headers["Strict-Transport-Security"] == "max-age=600"
    off = create_app("production", {**settings, "HSTS_MAX_AGE": 0}).test_client()
    assert "Strict-Transport-Security" not in off.get("/healthz").headers


@pytest.mark.parametrize("config_name", ["development", "testing"])
def test_no_hsts_outside_production(config_name: str, redis_url: str) -> None:
    app = create_app(config_name, {"REDIS_URL": redis_url})
    assert "Strict-Transport-Security" not in app.test_client().get("/healthz").headers


@pytest.mark.parametrize(
    "destination",
    [
        {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/sek-hook-value"},
        {"SLACK_BOT_TOKEN": "xoxb-sek-bot-value", "SLACK_CHANNEL": "#manifest"},
    ],
    ids=["webhook", "bot"],
)
def test_production_with_slack_needs_server_name(destination: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as refused:
        create_app("production", {**GOOD, **destination, "SERVER_NAME": None})
    message = str(refused.value)
    assert "SERVER_NAME" in message
    assert not any(value in message for value in destination.values())
    app = create_app("production", {**GOOD, **destination, "SERVER_NAME": "syncer.example.org"})
    assert app.config["SERVER_NAME"] == "syncer.example.org"


def test_server_name_is_named_with_the_other_settings_in_one_message() -> None:
    settings = {**GOOD, "SLACK_WEBHOOK_URL": "https://hooks.example/x", "SERVER_NAME": None}
    with pytest.raises(ConfigurationError) as refused:
        create_app("production", {**settings, "API_TOKEN": None})
    assert "API_TOKEN" in str(refused.value)
    assert "SERVER_NAME" in str(refused.value)


def test_production_without_slack_does_not_need_server_name() -> None:
    settings = {**GOOD, "SERVER_NAME": None, "SLACK_WEBHOOK_URL": None, "SLACK_BOT_TOKEN": None}
    assert create_app("production", settings).config["SERVER_NAME"] is None


def flower() -> dict[str, Any]:
    services = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    return services["flower"]


def test_flower_listens_on_the_loopback_only() -> None:
    ports = [str(port) for port in flower()["ports"]]
    assert ports
    assert all(port.startswith("127.0.0.1:") for port in ports), ports


def test_flower_refuses_to_start_without_flower_basic_auth(tmp_path: Path) -> None:
    service = flower()
    # Compose interpolates every service before it applies profiles, so `${VAR:?}` would stop
    # a plain `docker compose up`: the container refuses instead, when the profile runs it.
    assert service["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
    shell, flag, script = service["command"]
    assert (shell, flag) == ("sh", "-c")
    script = script.replace("$$", "$")  # compose's escape of a literal $
    # The image's celery, stood in for: it says what it was asked to run, and with what.
    stub = tmp_path / "celery"
    stub.write_text('#!/bin/sh\necho "celery $* auth=${FLOWER_BASIC_AUTH:+set}"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}

    refused = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0
    assert "FLOWER_BASIC_AUTH" in refused.stderr
    assert "celery" not in refused.stdout

    secret = "ops:sek-flower-password"
    ran = subprocess.run(
        ["sh", "-c", script],
        env={**env, "FLOWER_BASIC_AUTH": secret},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "flower" in ran.stdout.split()
    assert "auth=set" in ran.stdout  # Flower reads the variable itself...
    assert secret not in ran.stdout  # ...so the password is not on its command line
