"""Processes the reliability tests start and kill: Redis servers, workers, beat; and waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Self
from typing import TypeVar

import redis

from tests.processes import CeleryWorker
from tests.processes import ProjectProcess
from tests.processes import flask_env

T = TypeVar("T")

# The process groups this suite started, to prove none outlives it.
STARTED_GROUPS: set[int] = set()


def wait_until(
    check: Callable[[], T], timeout: float, message: str = "condition", interval: float = 0.02
) -> T:
    """Poll `check` until it returns something truthy; return it, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_port_url() -> str:
    """Return a redis:// URL of a port where nothing listens (connections are refused)."""
    return f"redis://127.0.0.1:{free_port()}/0"


class RedisServer:
    """A redis-server of a test's own on a free port; `stop`, `kill` and `start` it at will.

    Never the shared server on 6379: this one can be restarted, filled up and killed.
    """

    def __init__(self, *args: str, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="reliability-redis-"))
        self.password = password
        self.args = (*args, "--requirepass", password) if password else args
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10)

    def start(self) -> Self:
        """Start the server (again, after a stop or kill: same port, same data directory)."""
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            *self.args,
        ]
        self.process = subprocess.Popen(command, start_new_session=True)
        STARTED_GROUPS.add(self.process.pid)
        probe = self.client()
        try:
            wait_until(lambda: self._answers(probe), 20, f"redis-server on {self.port}")
        except BaseException:
            self.kill()
            raise
        finally:
            probe.close()
        return self

    def _answers(self, probe: redis.Redis) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM) and wait for it."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self._remove_dir()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        self._remove_dir()

    def _remove_dir(self) -> None:
        for path in sorted(self.dir.rglob("*"), reverse=True):
            with contextlib.suppress(OSError):
                path.unlink() if path.is_file() else path.rmdir()
        with contextlib.suppress(OSError):
            self.dir.rmdir()


def link_up(server: redis.Redis) -> bool:
    """Say whether `server`, a replica, has its link to its primary up (master_link_status)."""
    return server.info("replication").get("master_link_status") == "up"


class ReplicaServer(RedisServer):
    """A RedisServer of a test's own replicating another server; started, it waits until its
    link to the primary is up (a primary waits 5 s, repl-diskless-sync-delay, before it sends
    a new replica its data: hence the generous `link_timeout`)."""

    def __init__(
        self,
        primary_port: int,
        *args: str,
        primary_host: str = "127.0.0.1",
        primary_password: str | None = None,
        link_timeout: float = 60,
    ) -> None:
        # Never persisted: --save "" (every RedisServer), and no append-only file either.
        replicating = ["--replicaof", primary_host, str(primary_port), "--appendonly", "no"]
        if primary_password:
            replicating += ["--masterauth", primary_password]
        super().__init__(*replicating, *args)
        self.link_timeout = link_timeout

    def start(self) -> Self:
        """Start the server and wait until its link to the primary is up."""
        super().start()
        with self.client() as probe:
            try:
                wait_until(
                    lambda: link_up(probe), self.link_timeout, f"replica {self.port} in sync", 0.1
                )
            except BaseException:
                self.kill()
                raise
        return self


def replica_of(
    primary_port: int,
    *args: str,
    primary_host: str = "127.0.0.1",
    primary_password: str | None = None,
    link_timeout: float = 60,
) -> ReplicaServer:
    """Return a replica of the server on `primary_port`, with more redis-server `args`: not
    started; a context manager that starts it, waits until it is in sync, and kills it by pid.
    """
    return ReplicaServer(
        primary_port,
        *args,
        primary_host=primary_host,
        primary_password=primary_password,
        link_timeout=link_timeout,
    )


# Commands a replica runs only for its clients besides the readonly-flagged ones: the
# primary's stream brings writes (a script's effects, not the script itself).
SCRIPTS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


def replica_reads(server: redis.Redis) -> int:
    """Count the reads `server` ran: readonly-flagged commands (COMMAND INFO) and scripts.

    On a replica, every one was asked by a client (the replication stream carries writes,
    MULTI/EXEC and PING only); INFO and COMMAND, which this asks, are not readonly.
    """
    stats: dict[str, dict[str, int]] = server.info("commandstats")
    names = [name.removeprefix("cmdstat_") for name in stats]
    flags = server.execute_command("COMMAND", "INFO", *names)
    return sum(
        stats[f"cmdstat_{name}"]["calls"]
        for name in names
        if name in SCRIPTS or "readonly" in (flags.get(name) or {}).get("flags", [])
    )


class TrackedProcess(ProjectProcess):
    """A ProjectProcess whose process group is remembered for the orphan check."""

    def __enter__(self) -> Self:
        super().__enter__()
        assert self.process is not None
        STARTED_GROUPS.add(self.process.pid)
        return self


class TrackedWorker(TrackedProcess, CeleryWorker):
    """A CeleryWorker whose process group is remembered for the orphan check."""


def live_groups() -> list[int]:
    """Return the process groups started here that still have a process in them."""
    alive = []
    for group in sorted(STARTED_GROUPS):
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(group)
    return alive


def worker(
    overrides: Mapping[str, object], *, concurrency: int = 1, loglevel: str = "INFO"
) -> TrackedWorker:
    """A real Celery worker (prefork) for the app configured by `overrides`."""
    return TrackedWorker(
        overrides,
        concurrency=concurrency,
        loglevel=loglevel,
        options=("--without-heartbeat",),
        name="reliability",
    )


def beat(overrides: Mapping[str, object], schedule_file: Path) -> ProjectProcess:
    """A real Celery beat for the app configured by `overrides`, with its own schedule file."""
    args = [sys.executable, "-m", "celery", "-A", "celery_worker.celery", "beat", "--loglevel=INFO"]
    env = flask_env({**overrides, "CELERY_BEAT_SCHEDULE_FILE": str(schedule_file)})
    return TrackedProcess(args, env, ready="beat: Starting...")


def pool_children(process: ProjectProcess) -> list[int]:
    """Return the pids of a prefork worker's pool processes (its direct children)."""
    assert process.process is not None
    listing = subprocess.run(
        ["ps", "--ppid", str(process.process.pid), "-o", "pid="],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in listing.stdout.split()]


def kill_group(process: ProjectProcess) -> None:
    """SIGKILL a process and every child in its group at once, as the OOM killer or a dyno
    restart would; then reap it."""
    assert process.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.process.pid, signal.SIGKILL)
    process.process.wait(10)


class SentinelServer:
    """One Redis Sentinel (`redis-server <conf> --sentinel`) watching `master` on a free port.

    Sentinel rewrites its configuration file as it learns the topology, so each has its own,
    written in a directory of its own.
    """

    def __init__(self, master: str, primary_port: int, *, quorum: int = 2) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="reliability-sentinel-"))
        self.conf = self.dir / "sentinel.conf"
        self.log_path = self.dir / "sentinel.log"
        self.conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.dir}",
                    f"logfile {self.log_path}",
                    f"sentinel monitor {master} 127.0.0.1 {primary_port} {quorum}",
                    # Small figures: a dead primary is noticed in a second, and a failover
                    # that stalls is tried again within seconds, not minutes.
                    f"sentinel down-after-milliseconds {master} 1000",
                    f"sentinel failover-timeout {master} 5000",
                    f"sentinel parallel-syncs {master} 1",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=5)

    def start(self) -> SentinelServer:
        command = ["redis-server", str(self.conf), "--sentinel", "--daemonize", "no"]
        self.process = subprocess.Popen(command, start_new_session=True)
        STARTED_GROUPS.add(self.process.pid)
        with self.client() as probe:
            wait_until(lambda: self._answers(probe), 20, f"sentinel on {self.port}")
        return self

    def _answers(self, probe: redis.Redis) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sentinel exited: {self.log_text()[-2000:]}")
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        for path in sorted(self.dir.rglob("*"), reverse=True):
            with contextlib.suppress(OSError):
                path.unlink() if path.is_file() else path.rmdir()
        with contextlib.suppress(OSError):
            self.dir.rmdir()


class SentinelCluster:
    """A primary, one replica of it and three sentinels watching them, all on free ports.

    `sentinel_urls` and `master` are what REDIS_SENTINEL_URLS and REDIS_SENTINEL_MASTER take;
    `failed_over` says when every sentinel names a primary other than the first one.
    """

    def __init__(self, master: str = "manifest-primary", sentinels: int = 3) -> None:
        self.master = master
        # No wait before a full resync (Redis 7 waits 5 s for more replicas by default).
        self.primary = RedisServer("--repl-diskless-sync-delay", "0")
        self.replica = RedisServer(
            "--replicaof", "127.0.0.1", str(self.primary.port), "--repl-diskless-sync-delay", "0"
        )
        self.sentinels = [SentinelServer(master, self.primary.port) for _ in range(sentinels)]

    @property
    def sentinel_urls(self) -> str:
        return ",".join(s.url for s in self.sentinels)

    def __enter__(self) -> SentinelCluster:
        try:
            self.primary.start()
            self.replica.start()
            with self.replica.client() as replica:
                wait_until(lambda: link_up(replica), 30, "the replica to sync")
            for sentinel in self.sentinels:
                sentinel.start()
            wait_until(self._watching, 40, "the sentinels to know each other and the replica")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
        self.replica.__exit__()
        self.primary.__exit__()

    def _watching(self) -> bool:
        """Say whether every sentinel sees the other sentinels and the replica."""
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                try:
                    state = client.sentinel_master(self.master)
                except redis.RedisError:
                    return False
            if (
                int(state["num-other-sentinels"]) < len(self.sentinels) - 1
                or int(state["num-slaves"]) < 1
            ):
                return False
        return True

    def named_primaries(self) -> set[int]:
        """Return the ports the sentinels name as the primary now (unanswered ones left out)."""
        ports = set()
        for sentinel in self.sentinels:
            with sentinel.client() as client, contextlib.suppress(redis.RedisError):
                _, port = client.sentinel_get_master_addr_by_name(self.master)
                ports.add(int(port))
        return ports

    def failed_over(self) -> bool:
        """Say whether every sentinel names the replica as the primary, and it acts as one."""
        if self.named_primaries() != {self.replica.port}:
            return False
        with self.replica.client() as replica, contextlib.suppress(redis.RedisError):
            return replica.info("replication").get("role") == "master"
        return False
