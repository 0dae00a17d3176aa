"""Redis Sentinel settings: addresses read or refused (by position, never by text), the clients
and Celery set up to follow the primary the sentinels name, production without REDIS_URL; the
replica's client and production's METRICS_TOKEN (issue 19's other settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from kombu import Connection
from redis.sentinel import SentinelConnectionPool

from app import create_app
from config import ConfigurationError
from config import TestingConfig
from config import celery_settings
from config import sentinel_addresses
from config import settings_dict
from tests.processes import PROJECT_ROOT

PASSWORD = "s3cret-redis-pw"  # a test value, looked for in messages
SENTINELS = f"sentinel://:{PASSWORD}@10.0.0.1:26379/2,sentinel://:{PASSWORD}@10.0.0.2:26380/2"
PRODUCTION = {
    "SECRET_KEY": "s" * 32,
    "BUNGIE_API_KEY": "k" * 32,
    "ADMIN_PASSWORD": "p" * 16,
    "API_TOKEN": "t" * 32,
}


def sentinel_settings(**more: Any) -> dict[str, Any]:
    return {"REDIS_SENTINEL_URLS": SENTINELS, "REDIS_SENTINEL_MASTER": "mymaster", **more}


@pytest.mark.parametrize(
    ("urls", "refusal"),
    [
        (f"sentinel://:{PASSWORD}@a:26379,redis://:{PASSWORD}@b:26379", "address 2 is not"),
        (f"sentinel://:{PASSWORD}@a:26379,sentinel://:{PASSWORD}@b:port", "address 2 is not"),
        (f"sentinel://:{PASSWORD}@a:99999", "address 1 is not"),
        (f"sentinel://:{PASSWORD}@:26379", "address 1 is not"),
        (f"a:26379,sentinel://:{PASSWORD}@b:26379/one", "address 2 has no db number"),
        (f"sentinel://:{PASSWORD}@a/1,sentinel://:{PASSWORD}@b/2", "address 2 names another"),
        (f"sentinel://:{PASSWORD}@a,sentinel://:other-pw@b", "address 2 names another"),
        (" , ", "names no address"),
    ],
)
def test_a_bad_sentinel_address_is_refused_by_its_position_never_its_text(
    urls: str, refusal: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        create_app("testing", sentinel_settings(REDIS_SENTINEL_URLS=urls))
    message = str(refused.value)
    assert refusal in message
    assert message.startswith("REDIS_SENTINEL_URLS")
    assert PASSWORD not in message
    assert "other-pw" not in message


def test_the_sentinels_and_the_primary_name_go_together() -> None:
    for half in ({"REDIS_SENTINEL_MASTER": None}, {"REDIS_SENTINEL_URLS": ()}):
        with pytest.raises(ConfigurationError, match="go together: set both, or neither"):
            create_app("testing", sentinel_settings(**half))


def test_a_worker_refuses_a_bad_address_in_one_line_without_the_password() -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FLASK_CONFIG": "testing",
        "REDIS_SENTINEL_URLS": f"sentinel://:{PASSWORD}@a:26379,sentinel://:{PASSWORD}@b:x",
        "REDIS_SENTINEL_MASTER": "mymaster",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import celery_worker"],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "REDIS_SENTINEL_URLS: address 2 is not sentinel://[:password@]host:port"
    )
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr + done.stdout


def test_addresses_without_a_scheme_are_sentinels_on_their_default_port() -> None:
    addresses = sentinel_addresses("10.0.0.1:26390, sentinel-b ,[::1]:26391")
    assert addresses.hosts == (("10.0.0.1", 26390), ("sentinel-b", 26379), ("::1", 26391))
    assert (addresses.password, addresses.db) == (None, 0)
    broker = celery_settings(
        {**settings_dict(TestingConfig), **sentinel_settings(REDIS_SENTINEL_URLS=("a:1", "b"))}
    )["broker_url"]
    assert broker == "sentinel://a:1/0;sentinel://b:26379/0"


def test_the_setting_is_read_from_the_environment_as_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASK_REDIS_SENTINEL_URLS", "10.0.0.1:26379,10.0.0.2:26379")
    monkeypatch.setenv("FLASK_REDIS_SENTINEL_MASTER", "mymaster")
    app = create_app("testing")
    assert app.config["REDIS_SENTINEL_URLS"] == ("10.0.0.1:26379", "10.0.0.2:26379")
    pool = app.extensions["redis"].connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert [
        s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels
    ] == [
        26379,
        26379,
    ]


def test_celery_asks_the_sentinels_for_the_primary_they_watch() -> None:
    app = create_app("testing", sentinel_settings(REDIS_SENTINEL_PASSWORD="sentinel-own-password"))
    conf = app.extensions["celery"].conf
    expected = f"sentinel://:{PASSWORD}@10.0.0.1:26379/2;sentinel://:{PASSWORD}@10.0.0.2:26380/2"
    assert conf.broker_url == conf.result_backend == expected
    for options in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert options["master_name"] == "mymaster"
        assert options["sentinel_kwargs"]["password"] == "sentinel-own-password"
        assert options["sentinel_kwargs"]["socket_timeout"] > 0
    assert conf.broker_transport_options["visibility_timeout"] > TestingConfig.SYNC_TIME_LIMIT
    # What Celery makes of them: kombu's sentinel transport, Celery's sentinel result backend.
    with Connection(conf.broker_url, transport_options=conf.broker_transport_options) as broker:
        assert broker.transport_cls == "sentinel"
        assert len(broker.alt) == 2
    assert type(app.extensions["celery"].backend).__name__ == "SentinelBackend"
    # The sentinels' own password is theirs: never in a URL a log line could show.
    assert "sentinel-own-password" not in conf.broker_url


def test_a_password_with_reserved_characters_reaches_celery_intact() -> None:
    urls = "sentinel://:p%40ss%3Aw%2Frd@a:26379"
    assert sentinel_addresses(urls).password == "p@ss:w/rd"
    conf = celery_settings(
        {**settings_dict(TestingConfig), **sentinel_settings(REDIS_SENTINEL_URLS=urls)}
    )
    assert conf["broker_url"] == "sentinel://:p%40ss%3Aw%2Frd@a:26379/0"


def test_the_app_reads_from_a_replica_and_writes_to_the_primary_the_sentinels_name() -> None:
    app = create_app("testing", sentinel_settings())
    primary = app.extensions["redis"].connection_pool
    reads = app.extensions["redis_reads"].connection_pool
    assert isinstance(primary, SentinelConnectionPool)
    assert isinstance(reads, SentinelConnectionPool)
    assert (primary.service_name, primary.is_master) == ("mymaster", True)
    assert (reads.service_name, reads.is_master) == ("mymaster", False)
    assert primary.connection_kwargs["password"] == PASSWORD
    assert primary.connection_kwargs["db"] == 2
    # A replica that hangs costs a read seconds, not the primary's half minute.
    assert (
        reads.connection_kwargs["socket_timeout"],
        primary.connection_kwargs["socket_timeout"],
    ) == (5, 30)
    assert reads.connection_kwargs["socket_connect_timeout"] == 2


def test_a_replica_url_gets_the_readers_shorter_timeouts() -> None:
    app = create_app("testing", {"REDIS_REPLICA_URL": "redis://10.0.0.3:6379/0"})
    reads = app.extensions["redis_reads"].connection_pool.connection_kwargs
    primary = app.extensions["redis"].connection_pool.connection_kwargs
    assert (reads["host"], reads["socket_timeout"], reads["socket_connect_timeout"]) == (
        "10.0.0.3",
        5,
        2,
    )
    assert (primary["socket_timeout"], primary["socket_connect_timeout"]) == (30, 5)


def test_production_needs_no_redis_url_with_sentinels() -> None:
    app = create_app("production", {**PRODUCTION, "REDIS_URL": None, **sentinel_settings()})
    assert isinstance(app.extensions["redis"].connection_pool, SentinelConnectionPool)
    assert app.extensions["celery"].conf.broker_url.startswith("sentinel://")
    with pytest.raises(
        ConfigurationError, match="needs these settings in the environment: REDIS_URL"
    ):
        create_app("production", {**PRODUCTION, "REDIS_URL": None})


@pytest.mark.parametrize(
    ("token", "refusal"),
    [
        ("m" * 23, "METRICS_TOKEN (at least 24 characters)"),
        ("change-me-to-a-long-random-token", "METRICS_TOKEN (not an example, development or"),
    ],
)
def test_production_refuses_a_weak_metrics_token_by_name_only(token: str, refusal: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        create_app("production", {**PRODUCTION, **sentinel_settings(), "METRICS_TOKEN": token})
    assert refusal in str(refused.value)
    assert token not in str(refused.value)


def test_production_takes_a_strong_metrics_token_or_none() -> None:
    for token in (None, "m" * 24):
        app = create_app(
            "production", {**PRODUCTION, **sentinel_settings(), "METRICS_TOKEN": token}
        )
        assert app.config["METRICS_TOKEN"] == token
