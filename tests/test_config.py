"""Configuration: one home, environment overrides, and production refusing to start half-set."""

from __future__ import annotations

import dataclasses
import logging
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

import config
from app import create_app
from app.manifest.settings import ManifestSettings
from config import Config
from config import ConfigurationError
from config import ProductionConfig
from config import TestingConfig
from config import celery_settings
from config import get_config
from config import settings_dict

PRODUCTION = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "s" * 32,
    "BUNGIE_API_KEY": "k" * 32,
    "ADMIN_PASSWORD": "p" * 16,
    "API_TOKEN": "t" * 32,
}


def test_flask_config_picks_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_config("production") is ProductionConfig
    monkeypatch.setenv("FLASK_CONFIG", "testing")
    assert get_config() is TestingConfig
    monkeypatch.delenv("FLASK_CONFIG")
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    assert get_config() is ProductionConfig  # never development secrets by omission
    with pytest.raises(ValueError, match="Unknown FLASK_CONFIG 'staging'"):
        get_config("staging")


def test_production_names_every_missing_setting_at_once() -> None:
    with pytest.raises(ConfigurationError) as refused:
        create_app("production", dict.fromkeys(PRODUCTION))
    message = str(refused.value)
    for name in ("REDIS_URL", "SECRET_KEY", "BUNGIE_API_KEY", "API_TOKEN", "ADMIN_PASSWORD"):
        assert name in message


def test_production_accepts_a_password_hash_instead_of_a_password() -> None:
    settings = {**PRODUCTION, "ADMIN_PASSWORD": None, "ADMIN_PASSWORD_HASH": "scrypt:..."}
    app = create_app("production", settings)
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_production_refusal_is_one_clear_line_not_a_traceback_of_secrets() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from app import create_app; create_app('production')"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "."},
        check=False,
    )
    assert done.returncode != 0
    assert "ProductionConfig needs these settings in the environment: REDIS_URL" in done.stderr


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_MANIFEST_POLL_SECONDS", "42")
    monkeypatch.setenv("FLASK_MANIFEST_KEY_PREFIX", "elsewhere")
    app = create_app("testing")
    assert app.config["MANIFEST_POLL_SECONDS"] == 42
    assert app.extensions["manifest_settings"].key_prefix == "elsewhere"
    schedule = app.extensions["celery"].conf.beat_schedule["sync-manifest"]
    assert schedule["schedule"] == 42


def test_a_switch_reads_the_usual_words_and_refuses_others(monkeypatch: pytest.MonkeyPatch) -> None:
    for word, meant in (("true", True), ("1", True), ("Off", False), ("no", False)):
        monkeypatch.setenv("MANIFEST_TRACK_LIVE", word)
        assert config.env_bool("MANIFEST_TRACK_LIVE", not meant) is meant
    monkeypatch.setenv("MANIFEST_TRACK_LIVE", "maybe")
    with pytest.raises(ValueError, match="MANIFEST_TRACK_LIVE must be true or false, got 'maybe'"):
        config.env_bool("MANIFEST_TRACK_LIVE", True)
    monkeypatch.setenv("FLASK_MANIFEST_TRACK_LIVE", "false")
    assert create_app("testing").extensions["manifest_settings"].track_live is False


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "FLASK_SYNC_TIME_LIMIT",
            "soon",
            "FLASK_SYNC_TIME_LIMIT must be a whole number, got 'soon'",
        ),
        ("FLASK_MANIFEST_LOCK_TIMEOUT", "2m", "FLASK_MANIFEST_LOCK_TIMEOUT must be a number"),
        ("FLASK_MANIFEST_TRACK_LIVE", "maybe", "FLASK_MANIFEST_TRACK_LIVE must be true or false"),
        ("FLASK_MANIFEST_MAX_BYTES", "lots", "FLASK_MANIFEST_MAX_BYTES must be a whole number"),
    ],
)
def test_a_flask_prefixed_value_is_checked_like_the_others(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        create_app("testing")


def test_flask_prefixed_values_take_the_type_of_their_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASK_MANIFEST_TABLES", "DestinyClassDefinition, DestinyStatDefinition")
    monkeypatch.setenv("FLASK_API_TOKEN", "12345")
    monkeypatch.setenv("FLASK_MANIFEST_LOCK_TIMEOUT", "7")
    monkeypatch.setenv("FLASK_MANIFEST_MAX_BYTES", "1000")
    app = create_app("testing")
    assert app.config["API_TOKEN"] == "12345"
    assert app.config["MANIFEST_LOCK_TIMEOUT"] == 7.0
    settings = app.extensions["manifest_settings"]
    assert settings.tables == ("DestinyClassDefinition", "DestinyStatDefinition")
    assert settings.max_bytes == 1000


def test_the_engine_takes_every_default_from_config() -> None:
    assert not [
        field.name
        for field in dataclasses.fields(ManifestSettings)
        if field.default is not dataclasses.MISSING
        or field.default_factory is not dataclasses.MISSING
    ]
    settings = ManifestSettings.from_mapping(settings_dict(Config))
    assert settings.tables == Config.MANIFEST_TABLES == config.DEFAULT_TABLES
    assert settings.languages == Config.MANIFEST_LANGUAGES
    assert settings.base_url == Config.BUNGIE_BASE_URL
    assert settings.lock_timeout == Config.MANIFEST_LOCK_TIMEOUT


def test_broker_defaults_to_redis_url_and_can_be_rabbitmq() -> None:
    base = settings_dict(TestingConfig)
    assert celery_settings(base)["broker_url"] == base["REDIS_URL"]
    rabbit = {**base, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"}
    conf = celery_settings(rabbit)
    assert conf["broker_url"].startswith("amqp://")
    assert conf["result_backend"] == base["REDIS_URL"]
    assert conf["broker_use_ssl"] is None


def test_heroku_rediss_urls_get_tls_options_for_redis_and_celery() -> None:
    heroku = {
        **settings_dict(TestingConfig),
        "REDIS_URL": "rediss://:secret@ec2-1-2-3-4.compute-1.amazonaws.com:6380",
        "REDIS_SSL_CERT_REQS": "none",
    }
    conf = celery_settings(heroku)
    assert conf["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert conf["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    app = create_app("testing", heroku)
    kwargs = app.extensions["redis"].connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_NONE
    with pytest.raises(ConfigurationError, match="REDIS_SSL_CERT_REQS"):
        celery_settings({**heroku, "REDIS_SSL_CERT_REQS": "sometimes"})


def test_celery_is_set_up_for_long_syncs() -> None:
    app = create_app("testing")
    conf = app.extensions["celery"].conf
    assert conf.task_ignore_result is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup is True
    assert conf.broker_transport_options["visibility_timeout"] > TestingConfig.SYNC_TIME_LIMIT
    assert conf.task_annotations["manifest.sync"]["time_limit"] == TestingConfig.SYNC_TIME_LIMIT
    task = app.extensions["celery"].tasks["manifest.sync"]
    assert task.acks_late is True
    assert task.ignore_result is False


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    assert set(settings_dict(Config)) - {"DEBUG", "TESTING"} <= rows
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make \w+", quickstart, flags=re.MULTILINE) == ["make dev", "make test"]


def test_a_retired_setting_is_named_at_start_not_silently_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MANIFEST_PROJECTIONS", '{"DestinyClassDefinition": ["hash"]}')
    monkeypatch.setenv("FLASK_MANIFEST_DEFAULT_PROJECTION", "hash")
    with caplog.at_level(logging.WARNING, logger="app"):
        create_app("testing")
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "MANIFEST_PROJECTIONS is no longer read: every definition is now kept whole" in said[0]
    assert said[1].startswith("FLASK_MANIFEST_DEFAULT_PROJECTION is no longer read")
