"""gunicorn's settings for this app: the counts of every worker process add up in /metrics.

gunicorn reads ./gunicorn.conf.py by itself when no -c is given, so the Procfile, the
Dockerfile and docker-compose.yml (all run gunicorn from the project root) get it unchanged.
The bind address and the number of workers stay on their command lines.

prometheus_client keeps a process's counts in memory unless PROMETHEUS_MULTIPROC_DIR names a
folder when it is first imported; then each worker writes its counts to files there, which a
scrape adds up (app/metrics/views.py). This file runs in the master before any worker imports
the app, so the variable set here is the one every worker inherits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# The folders this file makes for a master that was given none: one per master, never reused.
MADE_HERE = "manifest-metrics-"


def _made_here(folder: str) -> bool:
    path = Path(folder)
    return path.parent == Path(tempfile.gettempdir()) and path.name.startswith(MADE_HERE)


def _remove(folder: str, master: int) -> None:
    # Forked workers run atexit handlers too: only the master that made the folder removes it.
    if os.getpid() == master:
        shutil.rmtree(folder, ignore_errors=True)


if not os.environ.get(VARIABLE):
    _folder = tempfile.mkdtemp(prefix=MADE_HERE)
    # The one reason to write the environment: prometheus_client reads this variable itself,
    # in each worker, and it must be set before the app (and so the library) is imported.
    os.environ[VARIABLE] = _folder
    atexit.register(_remove, _folder, os.getpid())

# Imported here, once, after PROMETHEUS_MULTIPROC_DIR is set: child_exit runs in gunicorn's
# SIGCHLD handler, and an import there can be interrupted by the next worker's exit, which
# would import the half-imported package again (seen when two workers stop at once).
from prometheus_client import multiprocess  # noqa: E402

from app.logs import gunicorn_logconfig  # noqa: E402 - after PROMETHEUS_MULTIPROC_DIR is set
from config import effective_settings  # noqa: E402
from config import get_config  # noqa: E402

# LOG_FORMAT=json: gunicorn's own lines and its access log as JSON too ({}: its defaults).
logconfig_dict = gunicorn_logconfig(effective_settings(get_config())["LOG_FORMAT"])


def on_starting(server: Any) -> None:
    """Make the folder; empty one that was given (left from the last run, its counts would add
    up again)."""
    folder = Path(os.environ[VARIABLE])
    folder.mkdir(parents=True, exist_ok=True)
    if not _made_here(str(folder)):
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop an exited worker's live gauges, prometheus_client's documented practice."""
    # It removes only the files of gauges in a live mode (livesum, liveall, ...), and this app
    # has no gauge in that mode (its gauges are read from Redis at each scrape): today it
    # removes nothing. Kept because it costs nothing and makes a live gauge added later right.
    # A dead worker's counters stay in the sums either way: they are never removed.
    multiprocess.mark_process_dead(worker.pid)


def pre_exec(server: Any) -> None:
    """Give a new master (USR2, an upgrade in place) a folder of its own, even after a HUP."""
    # gunicorn execs the new master with cfg.env_orig, the environment captured before this
    # file ran (arbiter.py reexec(), after this hook): os.environ is not what it passes on.
    # Before any HUP that copy lacks the variable; a HUP builds a new Config, whose copy holds
    # it. The new master would then share this folder, which this master removes as it exits.
    if _made_here(server.cfg.env_orig.get(VARIABLE, "")):
        del server.cfg.env_orig[VARIABLE]
