"""docker compose's scaled topology and its profiles (replica, sentinel, monitoring): what each
runs, and the Redis, replica and sentinel command lines of the compose file run for real here,
each on a port and in a directory of its own (never the shared Redis)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from config import sentinel_addresses
from tests.processes import PROJECT_ROOT
from tests.reliability.servers import free_port
from tests.reliability.servers import wait_until

APP_SERVICES = {"web", "web-2", "worker", "beat", "demo-origin"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def env_example() -> dict[str, str]:
    """Every setting .env.example names, commented out or not, with its first example value."""
    found: dict[str, str] = {}
    for line in (PROJECT_ROOT / ".env.example").read_text().splitlines():
        name, equals, value = line.lstrip("# ").partition("=")
        if equals and name.isupper() and " " not in name:
            found.setdefault(name, value)
    return found


def sentinel_script() -> str:
    """The shell script each sentinel service runs."""
    shell, flag, script = command_of(services()["sentinel-1"])
    assert (shell, flag) == ("sh", "-c")
    return script


# -- what each profile runs -------------------------------------------------------------------


def test_a_plain_up_runs_two_web_two_workers_and_exactly_one_beat() -> None:
    found = services()
    always = {name for name, service in found.items() if not service.get("profiles")}
    assert always == {"redis", *APP_SERVICES}
    web, web_2 = found["web"], found["web-2"]
    assert command_of(web) == command_of(web_2)
    assert command_of(web)[0] == "gunicorn"
    # Each on a port of its own, for a load balancer in front of both (or a browser).
    assert web["ports"] == ["8000:8000"]
    assert web_2["ports"] == ["8001:8000"]
    assert web["healthcheck"] == web_2["healthcheck"]
    worker = found["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert not {"-B", "--beat"} & set(command_of(worker))
    beats = [name for name, s in found.items() if "beat" in command_of(s)]
    assert beats == ["beat"]
    assert found["beat"]["deploy"]["replicas"] == 1
    assert all("replicas" not in s.get("deploy", {}) for name, s in found.items() if "web" in name)


def test_each_profile_adds_what_it_names() -> None:
    by_profile: dict[str, set[str]] = {}
    for name, service in services().items():
        for profile in service.get("profiles", []):
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == {
        "replica": {"redis-replica"},
        "sentinel": {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"},
        "monitoring": {"flower", "prometheus"},
    }


def test_the_env_example_names_the_replica_and_the_sentinels_compose_runs() -> None:
    """What .env.example suggests for the replica and sentinel profiles reaches them: the app
    services read .env, and its addresses are those of compose's services."""
    example = env_example()
    found = services()
    for name in APP_SERVICES - {"demo-origin"}:
        assert found[name]["env_file"][0]["path"] == ".env", name
    assert example["COMPOSE_PROFILES"] == "replica"
    assert example["REDIS_REPLICA_URL"] == "redis://redis-replica:6379/0"
    addresses = sentinel_addresses(tuple(example["REDIS_SENTINEL_URLS"].split(",")))
    sentinels = {name for name in found if name.startswith("sentinel-")}
    assert set(addresses.hosts) == {(name, 26379) for name in sentinels}
    assert "'port 26379'" in sentinel_script()
    master = example["REDIS_SENTINEL_MASTER"]
    assert f"'sentinel monitor {master} redis 6379 2'" in sentinel_script()


# -- Redis, its replica and the sentinels, run as compose runs them ----------------------------


@contextlib.contextmanager
def run_redis(args: list[str], where: Path) -> Iterator[redis.Redis]:
    """Run a compose redis-server command line on a free loopback port, its `--dir` (the
    volume) a new directory under `where`; yield a client of it."""
    port = free_port()
    workdir = where / f"redis-{port}"
    workdir.mkdir()
    assert args[0] == "redis-server"
    assert args[args.index("--dir") + 1] == "/data"
    command = [str(workdir) if arg == "/data" else arg for arg in args]
    command += ["--port", str(port), "--bind", "127.0.0.1", "--logfile", str(workdir / "log")]
    process = subprocess.Popen(command, cwd=workdir, start_new_session=True)
    client = redis.Redis(port=port, socket_connect_timeout=2, socket_timeout=10)
    try:
        wait_until(lambda: answers(client, process, workdir), 20, f"{args[:3]} on {port}")
        yield client
    finally:
        client.close()
        stop(process)


def answers(client: redis.Redis, process: subprocess.Popen[bytes], workdir: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"redis-server exited: {(workdir / 'log').read_text()[-2000:]}")
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a server this test started, by its process group, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def port_of(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs["port"])


def replica_of(primary: redis.Redis, where: Path) -> contextlib.AbstractContextManager[redis.Redis]:
    """Run compose's redis-replica command line, following `primary` instead of `redis`."""
    args = command_of(services()["redis-replica"])
    at = args.index("--replicaof")
    assert args[at + 1 : at + 3] == ["redis", "6379"]  # the primary's service and port
    args[at + 1 : at + 3] = ["127.0.0.1", str(port_of(primary))]
    return run_redis(args, where)


def replication(client: redis.Redis) -> dict[str, Any]:
    info: dict[str, Any] = client.info("replication")
    return info


def healthcheck_passes(service: str, port: int) -> bool:
    """Run a service's CMD-SHELL healthcheck against the server on `port`."""
    kind, script = services()[service]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    script = script.replace("redis-cli", f"redis-cli -p {port}")
    return subprocess.run(["sh", "-c", script], check=False, timeout=10).returncode == 0


def test_the_replica_copies_the_primary_and_refuses_writes(tmp_path: Path) -> None:
    with run_redis(command_of(services()["redis"]), tmp_path) as primary:
        primary.set("compose:before", "kept")
        with replica_of(primary, tmp_path) as replica:
            assert not healthcheck_passes("redis-replica", port_of(primary))  # not a replica
            wait_until(lambda: replication(replica)["master_link_status"] == "up", 30, "link")
            assert healthcheck_passes("redis-replica", port_of(replica))
            assert replica.get("compose:before") == b"kept"
            with primary.pipeline(transaction=True) as commit:
                commit.set("compose:a", "1")
                commit.set("compose:b", "2")
                commit.execute()
            wait_until(lambda: replica.mget("compose:a", "compose:b") == [b"1", b"2"], 10, "copy")
            with pytest.raises(redis.ReadOnlyError):
                replica.set("compose:here", "no")
            # As the primary's: Sentinel may promote it, and the broker's queues live there.
            assert replica.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
            assert replica.config_get("appendonly")["appendonly"] == "yes"
            assert primary.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"


@contextlib.contextmanager
def sentinel(primary_port: int, workdir: Path) -> Iterator[redis.Redis]:
    """Run compose's sentinel script, watching the primary on `primary_port`."""
    port = free_port()
    script = sentinel_script()
    for compose_text, here in (
        ("'port 26379'", f"'port {port}'"),
        (" redis 6379 ", f" 127.0.0.1 {primary_port} "),
        ("/tmp/sentinel.conf", str(workdir / f"sentinel-{port}.conf")),
    ):
        assert compose_text in script
        script = script.replace(compose_text, here)
    log = (workdir / f"sentinel-{port}.log").open("wb")
    process = subprocess.Popen(
        ["sh", "-c", script], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=2, socket_timeout=10)
    try:
        wait_until(lambda: answers(client, process, workdir), 20, f"sentinel on {port}")
        yield client
    finally:
        client.close()
        stop(process)
        log.close()


def master_port(watcher: redis.Redis, name: str) -> int | None:
    address = watcher.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
    return int(address[1]) if address else None


def test_the_sentinels_agree_on_the_primary_and_promote_the_replica_when_it_dies(
    tmp_path: Path,
) -> None:
    name = env_example()["REDIS_SENTINEL_MASTER"]
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(run_redis(command_of(services()["redis"]), tmp_path))
        replica = stack.enter_context(replica_of(primary, tmp_path))
        wait_until(lambda: replication(replica)["master_link_status"] == "up", 30, "link")
        watchers = [stack.enter_context(sentinel(port_of(primary), tmp_path)) for _ in range(3)]

        def all_see_everyone() -> bool:
            return all(
                master_port(w, name) == port_of(primary)
                and len(w.execute_command("SENTINEL", "SENTINELS", name)) == 2
                and len(w.execute_command("SENTINEL", "REPLICAS", name)) == 1
                for w in watchers
            )

        wait_until(all_see_everyone, 60, "three sentinels seeing each other and the replica")
        primary.set("compose:written", "before the failover")
        wait_until(lambda: replica.get("compose:written"), 10, "the write on the replica")
        os.killpg(int(primary.info("server")["process_id"]), signal.SIGKILL)

        promoted = port_of(replica)
        wait_until(lambda: all(master_port(w, name) == promoted for w in watchers), 60, "failover")
        wait_until(lambda: replication(replica)["role"] == "master", 30, "the promotion")
        assert replica.get("compose:written") == b"before the failover"
        assert replica.set("compose:after", "the new primary takes writes")


# -- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_scrapes_each_web_container_and_listens_on_this_machine_only() -> None:
    service = services()["prometheus"]
    assert service["profiles"] == ["monitoring"]
    config_file = next(a for a in command_of(service) if a.startswith("--config.file="))
    mounted = config_file.removeprefix("--config.file=")
    assert f"./deploy/prometheus.yml:{mounted}:ro" in service["volumes"]
    assert service["ports"]
    assert all(str(port).startswith("127.0.0.1:") for port in service["ports"])
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus.yml").read_text())
    webs = {name for name, s in services().items() if command_of(s)[:1] == ["gunicorn"]}
    assert webs == {"web", "web-2"}
    assert {f"{name}:8000" for name in webs} <= scraped(config["scrape_configs"])


def scraped(jobs: list[dict[str, Any]]) -> set[str]:
    """Every host:port whose /metrics the jobs scrape: named, or each address a name has (DNS
    service discovery: every container of a compose service)."""
    found = set()
    for job in jobs:
        if job.get("metrics_path", "/metrics") != "/metrics":
            continue
        for static in job.get("static_configs", []):
            found.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            if dns.get("type", "SRV") == "A":
                found.update(f"{name}:{dns['port']}" for name in dns["names"])
    return found
