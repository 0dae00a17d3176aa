"""`manage.py manifest sync|status`: what the operator reads, and the exit codes scripts rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from flask import Flask

from app.cli import EXIT_CODES
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from devtools.demo.control import DemoAdmin
from tests.conftest import DEMO_ITEMS


def diff_row(output: str, table: str) -> tuple[int, ...]:
    """Return (added, changed, removed) from the diff table printed for `table`."""
    row = next(line for line in output.splitlines() if line.startswith(table + " "))
    return tuple(int(n.replace(",", "")) for n in row.split()[1:4])


def test_sync_prints_progress_and_the_diff_table(app: Flask, admin: DemoAdmin) -> None:
    runner = app.test_cli_runner()
    first = runner.invoke(args=["manifest", "sync"])
    assert first.exit_code == 0, first.output
    assert "Updated to" in first.output
    assert "[downloading] en DestinyInventoryItemDefinition" in first.output
    assert diff_row(first.output, ITEM_TABLE) == (DEMO_ITEMS, 0, 0)  # all new on a first sync

    published = admin.publish()
    second = runner.invoke(args=["manifest", "sync"])
    assert second.exit_code == 0, second.output
    assert diff_row(second.output, ITEM_TABLE) == (
        len(published["added"]),
        len(published["changed"]),
        len(published["removed"]),
    )
    assert f"{ITEM_TABLE} new:" in second.output

    third = runner.invoke(args=["manifest", "sync"])
    assert third.exit_code == 0
    assert third.output.startswith("Unchanged") or "\nUnchanged" in third.output


def test_sync_failure_exits_non_zero_with_one_line_reason(app: Flask, admin: DemoAdmin) -> None:
    admin.fault("maintenance")
    result = app.test_cli_runner().invoke(args=["manifest", "sync"])
    assert result.exit_code == EXIT_CODES[sync.UNAVAILABLE] != 0
    reason = result.output.strip().splitlines()[-1]
    assert reason.startswith("Unavailable: BungieMaintenance:")
    assert "retry after 60s" in reason


def test_status_before_and_after_a_sync(app: Flask, admin: DemoAdmin) -> None:
    runner = app.test_cli_runner()
    empty = runner.invoke(args=["manifest", "status"])
    assert "Live release: none yet" in empty.output
    assert "Last check:   never" in empty.output

    runner.invoke(args=["manifest", "sync"])
    state = admin.state()
    status = runner.invoke(args=["manifest", "status"])
    assert status.exit_code == 0
    assert f"Live release: {state['version']}" in status.output
    assert "Last check:" in status.output
    assert ": updated" in status.output
    assert f"en  {ITEM_TABLE:<36} {DEMO_ITEMS:>8,}" in status.output


def test_manage_py_runs_the_sync_as_a_real_process(
    app_overrides: dict[str, Any], admin: DemoAdmin, redis_url: str
) -> None:
    env = {
        **os.environ,
        "FLASK_CONFIG": "testing",
        "TEST_REDIS_URL": redis_url,
        **{f"FLASK_{key}": value for key, value in app_overrides.items()},
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "manifest", "sync"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Updated to" in done.stdout
    assert "test-api-key" not in done.stdout + done.stderr
