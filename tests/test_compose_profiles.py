"""docker compose's scaled topology and its profiles (replica, sentinel, monitoring): what each
runs, and the Redis, replica and sentinel command lines of the compose file run for real here,
each on a port and in a directory (its volume) of its own, never the shared Redis."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from config import sentinel_addresses
from tests.compose_file import command_of
from tests.compose_file import compose
from tests.compose_file import services
from tests.processes import PROJECT_ROOT
from tests.reliability.servers import free_port
from tests.reliability.servers import wait_until

APP_SERVICES = {"web", "web-2", "worker", "beat", "demo-origin"}
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")

needs_redis = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")),
    reason="needs redis-server and redis-cli",
)


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
    """How many of each, and where (what each runs: test_run_targets)."""
    found = services()
    always = {name for name, service in found.items() if not service.get("profiles")}
    assert always == {"redis", *APP_SERVICES}
    web, web_2 = found["web"], found["web-2"]
    assert command_of(web) == command_of(web_2)
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
        "sentinel": {"redis-replica", *SENTINELS},
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
    assert set(addresses.hosts) == {(name, 26379) for name in SENTINELS}
    assert "'port 26379'" in sentinel_script()
    master = example["REDIS_SENTINEL_MASTER"]
    assert f"'sentinel monitor {master} redis 6379 2'" in sentinel_script()


def test_each_redis_and_sentinel_keeps_its_state_on_a_named_volume_of_its_own() -> None:
    """The history and the change logs survive `docker compose down` / up and a crash (an
    append-only file); so do the role Sentinel gave each server and the sentinels' view of
    which one is the primary (their files, rewritten as they learn it)."""
    file = compose()
    redis_options = file["services"]["redis"]["command"]
    options = dict(zip(redis_options[::2], redis_options[1::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--dir"] == "/data"
    volumes = {}
    for name in ("redis", "redis-replica", *SENTINELS):
        (mount,) = file["services"][name]["volumes"]
        volume, _, target = mount.partition(":")
        # Where its command line keeps its files (the data, its role, the sentinel's view).
        assert target == "/data", name
        assert any("/data/" in arg or arg == "/data" for arg in command_of(file["services"][name]))
        assert volume in file["volumes"], name  # a named volume, not a path or an anonymous one
        volumes[name] = volume
    assert len(set(volumes.values())) == len(volumes)


# -- Redis, its replica and the sentinels, run as compose runs them ----------------------------


class ComposeServer:
    """A Redis or sentinel service of the compose file, run here as its container runs it: on a
    port of 127.0.0.1 (`hosts` gives each service's) and its volume, /data, a directory. Both
    stay from one start to the next, as a named volume does over `docker compose down` / up."""

    def __init__(self, service: str, where: Path, hosts: dict[str, int]) -> None:
        self.service = service
        self.port = hosts[service]
        self.hosts = hosts
        self.where = where
        self.volume = where / service
        self.volume.mkdir()
        self.process: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=10)

    def command(self) -> list[str]:
        """The service's command line, its names and figures made this machine's."""
        args = command_of(services()[self.service])
        if self.service in SENTINELS:
            shell, flag, script = args
            # Quicker figures than compose's: a dead primary noticed in a second, a failover
            # that stalls tried again in seconds (a split vote waits 2 x failover-timeout).
            for compose_text, here in (
                ("'port 26379'", f"'port {self.port}'"),
                ("down-after-milliseconds manifest 5000", "down-after-milliseconds manifest 1000"),
                ("failover-timeout manifest 60000", "failover-timeout manifest 5000"),
            ):
                assert compose_text in script, compose_text
                script = script.replace(compose_text, here)
            args = [shell, flag, script]
        else:
            # No wait before a full resync (Redis 7 waits 5 s for more replicas by default).
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
            args += ["--repl-diskless-sync-delay", "0"]
        return [self.here(arg, previous) for previous, arg in zip(["", *args], args, strict=False)]

    def here(self, arg: str, previous: str) -> str:
        """`arg` as this machine names it: /data the volume, a service's name and port ours."""
        if previous == "--replica-announce-ip":
            assert arg in self.hosts, arg
            return "127.0.0.1"
        arg = arg.replace("/data", str(self.volume))
        for name, port in self.hosts.items():
            arg = re.sub(rf"(?<![\w-]){re.escape(name)} 6379\b", f"127.0.0.1 {port}", arg)
        return arg

    def start(self) -> None:
        """Start it (again), as `docker compose up` would, and wait for it to answer."""
        bin_dir = self.where / "bin"
        if not bin_dir.exists():
            # The image's entrypoint, as it runs for a user other than root: it runs the rest.
            bin_dir.mkdir()
            (bin_dir / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
            (bin_dir / "docker-entrypoint.sh").chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        for name, value in services()[self.service].get("environment", {}).items():
            # A service's name, as its container would announce it: one that resolves here.
            env[name] = "localhost" if value in self.hosts else value
        with (self.where / f"{self.service}.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.volume, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(self.answers, 20, f"{self.service} on {self.port}")

    def answers(self) -> bool:
        """Say whether it answers a PING; fail at once, with its log, if it exited."""
        if self.process is not None and self.process.poll() is not None:
            text = (self.where / f"{self.service}.log").read_text(errors="replace")
            raise AssertionError(f"{self.service} exited: {text[-2000:]}")
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """Kill it by its process group, as a crash or `docker compose kill` would; reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def replication(self) -> dict[str, Any]:
        """Return its INFO replication."""
        info: dict[str, Any] = self.client.info("replication")
        return info

    def healthy(self) -> bool:
        """Say whether the service's CMD-SHELL healthcheck passes, run against this server."""
        kind, script = services()[self.service]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        script = script.replace("redis-cli", f"redis-cli -p {self.port}")
        return subprocess.run(["sh", "-c", script], check=False, timeout=10).returncode == 0


@contextlib.contextmanager
def run_here(where: Path, *names: str) -> Iterator[dict[str, ComposeServer]]:
    """The services `names`, each given a free port; none started yet, all killed at the end."""
    hosts = {name: free_port() for name in names}
    found = {name: ComposeServer(name, where, hosts) for name in names}
    try:
        yield found
    finally:
        for server in found.values():
            server.kill()
            server.client.close()


@needs_redis
def test_the_replica_copies_the_primary_and_refuses_writes(tmp_path: Path) -> None:
    with run_here(tmp_path, "redis", "redis-replica") as here:
        primary, replica = here["redis"], here["redis-replica"]
        primary.start()
        primary.client.set("compose:before", "kept")
        replica.start()
        wait_until(lambda: replica.replication()["master_link_status"] == "up", 30, "link")
        assert replica.healthy()
        assert replica.client.get("compose:before") == b"kept"
        with primary.client.pipeline(transaction=True) as commit:
            commit.set("compose:a", "1")
            commit.set("compose:b", "2")
            commit.execute()
        wait_until(
            lambda: replica.client.mget("compose:a", "compose:b") == [b"1", b"2"], 10, "copy"
        )
        with pytest.raises(redis.ReadOnlyError):
            replica.client.set("compose:here", "no")
        # As the primary's: Sentinel may promote it, and the broker's queues live there.
        assert replica.client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert replica.client.config_get("appendonly")["appendonly"] == "yes"
        assert primary.client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        # Cut off from its primary, it serves stale data: unhealthy.
        primary.kill()
        wait_until(lambda: not replica.healthy(), 30, "the replica's healthcheck to fail")


def master_port(sentinel: ComposeServer) -> int | None:
    """Return the port of the server `sentinel` names as the primary now."""
    address = sentinel.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "manifest")
    return int(address[1]) if address else None


@needs_redis
def test_after_a_failover_the_promoted_replica_stays_the_primary_over_down_and_up(
    tmp_path: Path,
) -> None:
    """The sentinels promote the replica when the primary dies, and make the old primary, back,
    its replica; then `docker compose down` and `up`: the promoted replica is still the primary
    and keeps what was written after the failover, even with redis not started, and redis comes
    back a replica at once (not a second primary until the sentinels catch it)."""
    assert env_example()["REDIS_SENTINEL_MASTER"] == "manifest"
    with run_here(tmp_path, "redis", "redis-replica", *SENTINELS) as here:
        primary, replica = here["redis"], here["redis-replica"]
        sentinels = [here[name] for name in SENTINELS]
        # Each waits for redis to start only, not to answer (redis may be the one server
        # gone after a failover): they start before it.
        for name in ("redis-replica", *SENTINELS):
            assert services()[name]["depends_on"]["redis"]["condition"] == "service_started"
        for sentinel in sentinels:
            sentinel.start()
        replica.start()
        primary.start()
        wait_until(lambda: replica.replication()["master_link_status"] == "up", 30, "link")

        def all_see_everyone() -> bool:
            return all(
                master_port(s) == primary.port
                and len(s.client.execute_command("SENTINEL", "SENTINELS", "manifest")) == 2
                and len(s.client.execute_command("SENTINEL", "REPLICAS", "manifest")) == 1
                for s in sentinels
            )

        wait_until(all_see_everyone, 60, "three sentinels seeing each other and the replica")
        for sentinel in sentinels:  # by the names they announce, as their files keep them
            others = sentinel.client.execute_command("SENTINEL", "SENTINELS", "manifest")
            assert {other[b"ip"] for other in others} == {b"localhost"}
        assert (
            "known-sentinel manifest localhost"
            in (tmp_path / "sentinel-1" / "sentinel.conf").read_text()
        )
        primary.client.set("compose:written", "before the failover")
        wait_until(lambda: replica.client.get("compose:written"), 10, "the write on the replica")
        primary.kill()

        def named(port: int) -> bool:
            return all(master_port(s) == port for s in sentinels)

        wait_until(lambda: named(replica.port), 60, "the failover")
        wait_until(lambda: replica.replication()["role"] == "master", 30, "the promotion")
        assert replica.healthy()  # promoted, it stays healthy
        assert replica.client.get("compose:written") == b"before the failover"
        assert replica.client.set("compose:after", "written after the failover")

        def follows_the_new_primary() -> bool:
            info = primary.replication()
            return (
                info["role"] == "slave"
                and info["master_port"] == replica.port
                and info["master_link_status"] == "up"
            )

        primary.start()  # back, it comes as the primary it was, till the sentinels convert it
        wait_until(follows_the_new_primary, 60, "the old primary to become a replica")

        for server in here.values():  # docker compose down; then up, on the same volumes
            server.kill()
        # Up, with redis not started: the new primary and the sentinels need it not.
        for server in (replica, *sentinels):
            server.start()
        wait_until(lambda: named(replica.port), 30, "the sentinels to name the new primary")
        assert replica.replication()["role"] == "master"
        assert replica.healthy()
        assert replica.client.get("compose:after") == b"written after the failover"
        assert replica.client.set("compose:after-up", "written before redis is back")
        primary.start()
        # At once, from its own file: the sentinels would convert it 8 s after it answers.
        info = primary.replication()
        assert info["role"] == "slave"
        assert info["master_port"] == replica.port
        wait_until(follows_the_new_primary, 60, "the old primary to copy the new one")
        assert primary.client.get("compose:after-up") == b"written before redis is back"


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
