"""What a benchmark starts and owns: the app's web server and Celery worker, an engine on a key
prefix of the run's own, and the cleanup of both (processes stopped, keys deleted, in a finally).

Every process runs in a process group of its own, so stopping it stops its children too
(gunicorn's and Celery's workers); no key outside the run's prefix and queue is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Any

import msgspec
import redis
import requests
import zstandard

if TYPE_CHECKING:
    from app.manifest.client import BungieClient
    from app.manifest.settings import ManifestSettings
    from app.manifest.store import ManifestStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ITEM_TABLE = "DestinyInventoryItemDefinition"
LANGUAGE = "en"
SEED = 1
# TestingConfig's credentials: the web server and worker run on it.
API_TOKEN = "test-api-token-0123456789"  # noqa: S105 - TestingConfig's, known to the tests
ADMIN = ("admin", "test-password")
STARTUP_TIMEOUT = 60.0
STOP_GRACE = 10.0


def workload_parser(doc: str, items: int = 40_000) -> argparse.ArgumentParser:
    """Return a workload script's parser with what they all take: --items, --redis-url, --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--items", type=int, default=items, help="(default: %(default)s)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="(default: %(default)s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    return parser


def add_load_arguments(
    parser: argparse.ArgumentParser, part: str, seconds: float, rounds: int
) -> None:
    """Add what a load on the web server takes: connections, and time cut in rounds of `part`s."""
    parser.add_argument("--connections", type=int, default=50, help="(default: %(default)s)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=seconds,
        help=f"measured seconds per {part} (default: %(default)g)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=rounds,
        help=f"turns each {part}'s time is cut in (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds per turn (default: 1)"
    )


def run_id() -> str:
    """Return a fresh id for a run's key prefix and queue."""
    return uuid.uuid4().hex[:12]


def run_keys(workload: str) -> tuple[str, str]:
    """Return a fresh run's key prefix and Celery queue, both named after `workload`."""
    rid = run_id()
    return f"bench:{rid}:{workload}", f"bench-{rid}-{workload}"


def demo_origin_args(items: int) -> tuple[str, ...]:
    """Return the demo origin's arguments: `items` items, the bench's seed and language."""
    return ("--items", str(items), "--seed", str(SEED), "--languages", LANGUAGE)


def workload_main(args: argparse.Namespace, run: Callable[[argparse.Namespace], Any]) -> int:
    """Run a workload script's `run` on its parsed arguments and write its figures if asked."""
    write_report(args.json, run(args))
    return 0


def free_port() -> int:
    """Return a loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- Redis hygiene ------------------------------------------------------------------------------


def delete_keys(client: redis.Redis, prefix: str) -> None:
    """UNLINK every key under `prefix`, a thousand at a time."""
    keys = client.scan_iter(match=f"{prefix}:*", count=1000)
    while batch := list(itertools.islice(keys, 1000)):
        client.unlink(*batch)


def memory_usage(client: redis.Redis, key: str | bytes) -> int:
    """Return the bytes Redis uses for `key` (MEMORY USAGE, all samples; 0 if it is absent)."""
    return int(client.memory_usage(key, samples=0) or 0)


def footprint(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Return the bytes Redis uses for each key under `prefix` (MEMORY USAGE, all samples)."""
    return {
        key.decode()[len(prefix) + 1 :]: memory_usage(client, key)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000)
    }


def delete_celery_keys(client: redis.Redis, queue: str, task_ids: Iterable[str]) -> None:
    """Delete what Celery kept in Redis for this run: its queue, binding and task results."""
    keys = [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
    keys += [f"celery-task-meta-{task_id}" for task_id in task_ids]
    client.unlink(*keys)


# -- the engine, in this process ------------------------------------------------------------


def engine_settings(base_url: str, prefix: str, **changes: Any) -> ManifestSettings:
    """Return TestingConfig's engine settings on a demo origin and a key prefix of our own."""
    # Imported here: only what runs the engine loads the app (Flask included).
    from app.manifest.settings import ManifestSettings
    from config import TestingConfig
    from config import settings_dict

    settings = ManifestSettings.from_mapping(settings_dict(TestingConfig))
    return replace(settings, base_url=base_url, key_prefix=prefix, **changes)


def engine_store(client: redis.Redis, settings: ManifestSettings) -> ManifestStore:
    from app.manifest.store import ManifestStore

    return ManifestStore(client, settings)


def bungie_client(settings: ManifestSettings) -> BungieClient:
    """Return a fresh client, as every sync task builds one (a new HTTP session)."""
    from app.manifest.client import BungieClient

    return BungieClient.from_settings(settings)


def item_path(admin_state: Mapping[str, Any], table: str = ITEM_TABLE) -> str:
    """Return the JSON content path of `table` in the origin's current generation."""
    return admin_state["paths"]["jsonWorldComponentContentPaths"][LANGUAGE][table]


# -- the app's processes -------------------------------------------------------------------


class ServiceProcess:
    """A child process in its own process group, its output in a file; a context manager.

    Entering starts it and waits until `ready(self)` holds; leaving stops the whole group:
    SIGTERM, then SIGKILL after a grace period. The output stays readable after the stop.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        ready: Callable[[ServiceProcess], bool],
        timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.name = name
        self.args = args
        self.env = {**os.environ, **env}
        self.ready = ready
        self.timeout = timeout
        handle, path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(path)
        self.process: subprocess.Popen[bytes] | None = None
        self.final_output = ""

    def __enter__(self) -> ServiceProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.timeout
        try:
            while not self.ready(self):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start:\n{self.output()[-3000:]}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def output(self) -> str:
        if self.process is None and self.final_output:
            return self.final_output
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the process group: SIGTERM, SIGKILL after STOP_GRACE; keep the output."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)
            # Children that outlived their parent (a broken shutdown) go too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        finally:
            self.final_output = self.log_path.read_text(errors="replace")
            self.log_path.unlink(missing_ok=True)


def app_env(
    redis_url: str, origin_url: str, prefix: str, queue: str, **settings: Any
) -> dict[str, str]:
    """Return the environment of the app's processes: TestingConfig, this run's Redis keys."""
    env = {
        "FLASK_CONFIG": "testing",
        "FLASK_REDIS_URL": redis_url,
        "FLASK_BUNGIE_BASE_URL": origin_url,
        "FLASK_MANIFEST_KEY_PREFIX": prefix,
        "FLASK_CELERY_QUEUE": queue,
        "FLASK_LOG_LEVEL": "WARNING",
    }
    env.update({f"FLASK_{name}": str(value) for name, value in settings.items()})
    return env


def web_server(env: Mapping[str, str], workers: int = 2) -> tuple[ServiceProcess, str]:
    """Return gunicorn (sync workers) serving the app on a free loopback port, and its URL.

    The command is the Procfile's, without the access log (one line per request is I/O that
    only a deployment wants).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
    args += ["--workers", str(workers), "--worker-class", "sync", "app:create_app()"]
    # TestingConfig names a SERVER_NAME; requests must carry the host they are sent to.
    env = {**env, "FLASK_SERVER_NAME": f"127.0.0.1:{port}"}

    def ready(service: ServiceProcess) -> bool:
        if service.output().count("Booting worker with pid") < workers:
            return False
        try:
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return ServiceProcess("gunicorn", args, env, ready), url


def celery_worker(env: Mapping[str, str], concurrency: int = 2) -> ServiceProcess:
    """Return a Celery worker (prefork pool) of the app, as the Procfile runs it, minus beat."""
    args = [sys.executable, "-m", "celery", "-A", "celery_worker.celery", "worker"]
    args += ["--loglevel=INFO", f"--concurrency={concurrency}"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    args += ["-n", f"bench-{run_id()}@%h"]
    return ServiceProcess("celery", args, env, lambda service: " ready." in service.output())


# -- the machine ----------------------------------------------------------------------------


def describe_machine(client: redis.Redis, redis_url: str) -> dict[str, Any]:
    """Return what the figures depend on: CPUs, memory, Python, Redis and library versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), cpu)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(memory / 1024**3, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "redis": client.info("server")["redis_version"],
        "redis_url": redis_url,
        "msgspec": msgspec.__version__,
        "zstandard": f"{zstandard.__version__} (zstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
        "redis_py": redis.__version__,
    }


def print_machine(machine: Mapping[str, Any]) -> None:
    print(
        f"machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"{machine['python']}, Redis {machine['redis']} at {machine['redis_url']}, "
        f"{machine['platform']}; msgspec {machine['msgspec']}, zstandard "
        f"{machine['zstandard']}, redis-py {machine['redis_py']}"
    )


def write_report(path: Path | None, report: Mapping[str, Any]) -> None:
    """Write a workload's figures as JSON to `path`, if one is given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {path}")
