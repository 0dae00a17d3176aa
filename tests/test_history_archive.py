"""The history and the change logs outlive Redis: `manage.py history export|import` restores them
whole, and a Redis keeping an append-only file finds them whole after it is killed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskCliRunner

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.client import BungieClient
from app.manifest.settings import ManifestSettings
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store import changelog
from app.manifest.store.records import logged_release
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import snapshot
from tests.reliability.servers import RedisServer
from tests.reliability.servers import wait_until

# The history's entries and each change log it names, as Redis answers them.
Held = tuple[list[Any], dict[str, dict[Any, Any]]]


@pytest.fixture(autouse=True)
def no_cached_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start with no change log cached in this process: reads below go to Redis."""
    monkeypatch.setattr(changelog, "_logs", {})


def forget_cached_logs() -> None:
    """Drop the logs this process cached, so that the next read shows what Redis holds now."""
    changelog._logs.clear()


def two_releases(store: ManifestStore, bungie: BungieClient, admin: DemoAdmin) -> list[int]:
    """Sync the first release, publish one with five items changed, sync it; return those."""
    first = sync.run(store, bungie, trigger="test")
    assert first.outcome == sync.UPDATED, first.summary()
    published = admin.publish(changed=5)
    second = sync.run(store, bungie, trigger="test")
    assert second.outcome == sync.UPDATED, second.summary()
    return [int(number) for number in published["changed"]]


def held(store: ManifestStore) -> Held:
    """Return what Redis holds of the history and of every change log it names."""
    history = store.redis.lrange(store.keys.history, 0, -1)
    named = {logged_release(json.loads(entry)) for entry in history}
    return history, {r: store.redis.hgetall(store.keys.changes(r)) for r in named if r}


def answers(store: ManifestStore, changed: list[int]) -> dict[str, Any]:
    """Return what the store answers of the history, the change logs and the changed items."""
    forget_cached_logs()
    entries = store.history(store.settings.history_length)
    return {
        "history": entries,
        "logs": {entry["id"]: store.changes_of(entry) for entry in entries},
        "items": {n: store.definition_history(ITEM_TABLE, n) for n in changed},
    }


def flush(store: ManifestStore, releases: list[str]) -> None:
    """Lose the history and the change logs, as a Redis that restarted without its data."""
    store.redis.delete(store.keys.history, *(store.keys.changes(r) for r in releases))


def export(runner: FlaskCliRunner, path: Path) -> list[dict[str, Any]]:
    result = runner.invoke(args=["history", "export", "--output", str(path)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in path.read_text().splitlines()]


def import_file(runner: FlaskCliRunner, path: Path) -> Any:
    return runner.invoke(args=["history", "import", str(path)])


def test_export_then_import_restores_the_history_and_every_change_log(
    app: Flask,
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    tmp_path: Path,
) -> None:
    changed = two_releases(store, bungie, admin)
    before = answers(store, changed)
    raw_before = held(store)
    second = before["history"][0]["id"]
    assert len(before["history"]) == 2
    assert {c["hash"] for c in before["logs"][second] if c["kind"] == "changed"} == set(changed)
    assert all(len(before["items"][n]) == 1 for n in changed)

    runner = app.test_cli_runner()
    lines = export(runner, tmp_path / "history.jsonl")
    assert lines[0]["type"] == "header"
    assert lines[0]["format"] == 1
    # Oldest first, so that the release a change log belongs to comes before it.
    assert [line["entry"]["id"] for line in lines if line["type"] == "history"] == [
        entry["id"] for entry in reversed(before["history"])
    ]
    exported = [line for line in lines if line["type"] == "change"]
    assert len(exported) == sum(len(log) for log in raw_before[1].values()) >= len(changed)
    assert {line["release_id"] for line in exported} == {second}

    flush(store, list(raw_before[1]))
    assert answers(store, changed) == {
        "history": [],
        "logs": {},
        "items": {n: [] for n in changed},
    }

    restored = import_file(runner, tmp_path / "history.jsonl")
    assert restored.exit_code == 0, restored.output
    assert "history: 2 entries in the file, 2 added, 0 already there; it holds 2 now" in (
        restored.output
    )
    assert f"{len(exported)} records of 1 releases in the file, {len(exported)} added" in (
        restored.output
    )
    assert held(store) == raw_before
    assert answers(store, changed) == before


def test_import_is_idempotent_and_fills_in_what_is_missing(
    app: Flask,
    app_overrides: dict[str, Any],
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    tmp_path: Path,
) -> None:
    changed = two_releases(store, bungie, admin)
    before = answers(store, changed)
    raw_before = held(store)
    runner = app.test_cli_runner()
    path = tmp_path / "history.jsonl"
    export(runner, path)

    # Into the store it came from: nothing changes.
    unchanged = snapshot(store.redis, store.keys.prefix)
    again = import_file(runner, path)
    assert again.exit_code == 0, again.output
    assert "2 added" not in again.output
    assert "0 added, 2 already there; it holds 2 now" in again.output
    assert snapshot(store.redis, store.keys.prefix) == unchanged

    # Into a store that lost its oldest entry and part of a change log: both come back, once.
    second = before["history"][0]["id"]
    fields = sorted(raw_before[1][second])
    store.redis.rpop(store.keys.history)
    store.redis.hdel(store.keys.changes(second), *fields[: len(fields) // 2])
    partial = import_file(runner, path)
    assert partial.exit_code == 0, partial.output
    assert "1 added, 1 already there; it holds 2 now" in partial.output
    assert f"{len(fields) // 2} added" in partial.output
    assert held(store) == raw_before
    twice = import_file(runner, path)
    assert twice.exit_code == 0, twice.output
    assert held(store) == raw_before
    assert answers(store, changed) == before

    # Into an empty store keeping one entry: the newest, with its log; the count says so.
    flush(store, list(raw_before[1]))
    short = create_app("testing", {**app_overrides, "MANIFEST_HISTORY_LENGTH": 1})
    capped = import_file(short.test_cli_runner(), path)
    assert capped.exit_code == 0, capped.output
    assert "it holds 1 now" in capped.output
    assert "1 older entries left out" in capped.output
    history, logs = held(store)
    assert history == raw_before[0][:1]
    assert logs == {second: raw_before[1][second]}


def bad_files(lines: list[str]) -> Iterator[tuple[str, list[str], int]]:
    """Yield (what is wrong, the file's lines, the line an import must name)."""
    change_at = next(n for n, line in enumerate(lines) if '"type":"change"' in line)
    change = json.loads(lines[change_at])
    yield "not JSON", [*lines[:2], "{not json", *lines[3:]], 3
    yield "no header", lines[1:], 1
    mutated = {**change, "change": {**change["change"], "kind": "mutated"}}
    yield (
        "unknown kind",
        [*lines[:change_at], json.dumps(mutated), *lines[change_at + 1 :]],
        (change_at + 1),
    )
    nameless = {**change, "release_id": "no-such-release"}
    yield (
        "orphan change",
        [*lines[:change_at], json.dumps(nameless), *lines[change_at + 1 :]],
        (change_at + 1),
    )
    yield "a line too many", [*lines, lines[change_at]], len(lines) + 1
    yield "cut short", lines[:-1], len(lines)
    entry = json.loads(lines[1])
    del entry["entry"]["at"]
    yield "entry without time", [lines[0], json.dumps(entry), *lines[2:]], 2
    # Shapes the pages, the feed, the messages and the next commit rely on.
    for wrong, field, value in (
        ("a log that is text", "log", "x"),
        ("a diff without tables", "diff", [{"added": 1}]),
        ("no version", "version", None),
    ):
        broken = json.loads(lines[1])
        broken["entry"][field] = value
        yield wrong, [lines[0], json.dumps(broken), *lines[2:]], 2


def test_a_malformed_file_is_refused_naming_the_line_and_nothing_is_written(
    app: Flask,
    store: ManifestStore,
    bungie: BungieClient,
    admin: DemoAdmin,
    tmp_path: Path,
) -> None:
    two_releases(store, bungie, admin)
    runner = app.test_cli_runner()
    good = tmp_path / "history.jsonl"
    export(runner, good)
    _, logs = held(store)
    flush(store, list(logs))
    empty = snapshot(store.redis, store.keys.prefix)

    for wrong, lines, line_number in bad_files(good.read_text().splitlines()):
        path = tmp_path / f"{wrong.replace(' ', '-')}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        refused = import_file(runner, path)
        assert refused.exit_code == 1, (wrong, refused.output)
        message = refused.output.strip().splitlines()[-1]
        assert message.startswith(f"Error: {path}, line {line_number}: "), (wrong, message)
        assert message.endswith("Nothing was imported."), (wrong, message)
        assert "Traceback" not in refused.output
        assert snapshot(store.redis, store.keys.prefix) == empty, wrong

    assert import_file(runner, good).exit_code == 0
    assert snapshot(store.redis, store.keys.prefix) != empty


def test_export_writes_to_stdout_by_default(
    app: Flask, store: ManifestStore, bungie: BungieClient, admin: DemoAdmin
) -> None:
    two_releases(store, bungie, admin)
    result = app.test_cli_runner().invoke(args=["history", "export"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["type"] for line in lines[:3]] == ["header", "history", "history"]
    assert lines[0]["entries"] == 2
    assert lines[0]["changes"] == len(lines) - 3
    assert "Exported 2 history entries" in result.stderr


def test_the_history_and_every_change_log_survive_a_killed_redis_with_aof(
    origin: DemoOriginProcess,
    admin: DemoAdmin,
    settings: ManifestSettings,
) -> None:
    with RedisServer("--appendonly", "yes", "--appendfsync", "everysec") as server:
        overrides = {
            "REDIS_URL": server.url,
            "BUNGIE_BASE_URL": origin.url,
            "MANIFEST_KEY_PREFIX": settings.key_prefix,
        }
        app = create_app("testing", overrides)
        with app.app_context():
            changed = two_releases(get_store(), get_bungie(), admin)
            store = get_store()
            before = answers(store, changed)
            raw_before = held(store)
        assert any(raw_before[1].values()), "the second release logged its changes"

        # everysec: Redis writes its AOF buffer to the file soon after it answers, and
        # fsyncs the file within a second; a killed process loses what it had not written.
        probe = server.client()
        wait_until(lambda: aof_written(probe), 10, "the append-only file to be written")
        probe.close()
        server.kill()  # SIGKILL: no shutdown, no last save
        server.start()  # same port, same directory

        reader = ManifestStore(
            redis.Redis.from_url(server.url), replace(settings, base_url=origin.url)
        )
        try:
            assert held(reader) == raw_before
            assert answers(reader, changed) == before
        finally:
            reader.redis.close()


def aof_written(client: redis.Redis) -> bool:
    """Say whether the server has written every write it answered to its AOF, none pending."""
    info = client.info("persistence")
    return (
        info["aof_enabled"] == 1
        and info["aof_rewrite_in_progress"] == 0
        and info.get("aof_buffer_length", 0) == 0
        and info.get("aof_pending_bio_fsync", 0) == 0
    )


def test_import_refuses_while_a_sync_holds_the_lock(
    app: Flask, store: ManifestStore, bungie: BungieClient, admin: DemoAdmin, tmp_path: Path
) -> None:
    two_releases(store, bungie, admin)
    runner = app.test_cli_runner()
    path = tmp_path / "history.jsonl"
    export(runner, path)
    _, logs = held(store)
    flush(store, list(logs))
    running = store.lock("a-running-sync")
    assert running.acquire()
    try:
        before = snapshot(store.redis, store.keys.prefix)
        refused = import_file(runner, path)
        assert refused.exit_code == 3, refused.output
        assert "Not imported: a sync is running (a-running-sync)" in refused.output
        assert snapshot(store.redis, store.keys.prefix) == before
    finally:
        running.release()
    assert import_file(runner, path).exit_code == 0
    assert len(store.history()) == 2
