"""`manage.py manifest sync|status`, `history export|import` and `tasks`: the engine from a
terminal."""

from __future__ import annotations

import sys
import uuid
from typing import IO
from typing import Any

import click
import redis
from flask import Flask
from flask import current_app
from flask.cli import AppGroup
from flask.cli import with_appcontext

from app import dates
from app import triggers
from app.extensions import get_bungie
from app.extensions import get_celery
from app.extensions import get_redis
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import archive
from app.manifest.store.lock import LockLost
from app.manifest.sync import Progress
from app.manifest.sync import SyncResult
from app.notify import policy

manifest_cli = AppGroup("manifest", help="Sync the manifest cache and show its state.")
history_cli = AppGroup(
    "history", help="Back up the history and every change log to a file, and restore them."
)


def init_app(app: Flask) -> None:
    """Register the commands and what `manage.py shell` has in scope."""
    app.cli.add_command(manifest_cli)
    app.cli.add_command(history_cli)
    app.cli.add_command(tasks_command)
    app.shell_context_processor(shell_context)


def shell_context() -> dict[str, Any]:
    """`manage.py shell` starts with the app, the store, Bungie, Celery and Redis at hand."""
    return {
        "app": current_app._get_current_object(),  # type: ignore[attr-defined]
        "store": get_store(),
        "bungie": get_bungie(),
        "celery": get_celery(),
        "redis": get_redis(),
        "sync": sync,
    }


EXIT_CODES = {sync.UPDATED: 0, sync.UNCHANGED: 0, sync.FAILED: 1, sync.UNAVAILABLE: 2, sync.BUSY: 3}


class ProgressLine:
    """Draw sync progress on stderr: one line redrawn on a terminal, a line per step elsewhere."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._last_step: tuple[Any, ...] = ()
        self._width = 0

    def __call__(self, progress: Progress) -> None:
        step = (progress.phase, progress.language, progress.table)
        if not self.live:
            if step != self._last_step:
                click.echo(self._describe(progress), file=self.stream)
            self._last_step = step
            return
        line = self._describe(progress)
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write(f"\r{line}{padding}")
        self.stream.flush()

    def done(self) -> None:
        """End the redrawn line."""
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()

    @staticmethod
    def _describe(progress: Progress) -> str:
        parts = [f"[{progress.phase}]"]
        if progress.table:
            parts.append(f"{progress.language} {progress.table}")
        if progress.tables_total:
            parts.append(f"table {progress.tables_done + 1}/{progress.tables_total}")
        if progress.entries_done:
            parts.append(f"{progress.entries_done:,} entries")
        if progress.bytes_total:
            share = progress.bytes_done / progress.bytes_total
            bar = "#" * int(share * 20)
            parts.append(
                f"{progress.bytes_done / 1e6:.1f}/{progress.bytes_total / 1e6:.1f} MB "
                f"[{bar:<20}] {share:.0%}"
            )
        return " ".join(parts)


def format_result(result: SyncResult) -> str:
    """Return the outcome and, for an update, the diff as a table."""
    summary = result.summary()
    lines = [summary[:1].upper() + summary[1:]]
    if result.outcome != sync.UPDATED:
        return "\n".join(lines)
    if result.previous_version:
        lines[0] += f", was {result.previous_version}"
    lines.append("")
    width = max([len("table"), *(len(d.table) for d in result.diffs)])
    lines.append(f"{'table':<{width}}  {'added':>7}  {'changed':>7}  {'removed':>7}  {'total':>7}")
    for d in result.diffs:
        lines.append(
            f"{d.table:<{width}}  {d.added:>7,}  {d.changed:>7,}  {d.removed:>7,}  {d.total:>7,}"
        )
    for d in result.diffs:
        for label, names in (("new", d.added_names), ("changed", d.changed_names)):
            if names:
                shown = ", ".join(f"{name or '(no name)'} ({h})" for h, name in names[:10])
                more = f" and {len(names) - 10} more" if len(names) > 10 else ""
                lines.append(f"{d.table} {label}: {shown}{more}")
    return "\n".join(lines)


@manifest_cli.command("sync")
def sync_command() -> None:
    """Check Bungie now and update the cache if the manifest changed."""
    line = ProgressLine()
    result = sync.run(get_store(), get_bungie(), trigger="cli", progress=line)
    line.done()
    policy.after_check(result)
    click.echo(format_result(result))
    sys.exit(EXIT_CODES[result.outcome])


@manifest_cli.command("status")
def status_command() -> None:
    """Show the live release, the last check and the item counts."""
    store = get_store()
    live = store.live_release()
    if live is None:
        click.echo("Live release: none yet (run `python manage.py manifest sync`)")
    else:
        click.echo(f"Live release: {live.release.version} (id {live.id})")
        synced_at = dates.instant(live.synced_at, seconds=True)
        click.echo(f"Synced at:    {synced_at} in {live.duration:.1f}s")
    check = store.last_check()
    if check is None:
        click.echo("Last check:   never")
    else:
        outcome = check["outcome"]
        if check.get("error"):
            outcome += f" ({check['error']}: {check['message']})"
        checked_at = dates.instant(check["at"], seconds=True)
        click.echo(f"Last check:   {checked_at}: {outcome}")
    if live is not None:
        click.echo("")
        for lang, tables in live.counts.items():
            for table, count in tables.items():
                click.echo(f"  {lang}  {table:<36} {count:>8,}")


@history_cli.command("export")
@click.option(
    "--output",
    "-o",
    default="-",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="File to write (replaced only once it is whole); stdout by default.",
)
def history_export_command(output: str) -> None:
    """Write the history and every change log as JSON lines.

    Restore them with `history import`. Release data is not written: a sync fetches it again.
    """
    try:
        # atomic: a failed export leaves no file that looks like a backup.
        with click.open_file(output, "wb", atomic=output != "-") as out:
            done = archive.export_history(get_store(), out)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis failed during the export: {exc}") from None
    where = "stdout" if output == "-" else output
    click.echo(
        f"Exported {done.entries} history entries and {done.records} change records "
        f"of {done.logs} releases to {where}.",
        err=True,
    )


@history_cli.command("import")
@click.argument("file", type=click.File("rb"))
def history_import_command(file: IO[bytes]) -> None:
    """Merge an exported file back into the history and the change logs.

    FILE is what `history export` wrote (`-`: stdin). The whole file is checked first: a bad
    line is named and nothing is written. Importing a file twice, or into a history that holds
    part of it, keeps one copy of each entry.
    """
    try:
        checked = archive.read_archive(file)
    except archive.ArchiveError as exc:
        raise click.ClickException(f"{file.name}, {exc}. Nothing was imported.") from None
    try:
        done = archive.import_history(get_store(), checked, f"history-import-{uuid.uuid4().hex}")
    except archive.SyncRunning as exc:
        click.echo(f"Not imported: {exc}.", err=True)
        sys.exit(EXIT_CODES[sync.BUSY])
    except LockLost as exc:
        raise click.ClickException(f"{exc}. Nothing was imported: run it again.") from None
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis refused the import: {exc}") from None
    click.echo(format_import(file.name, done))


def format_import(name: str, done: archive.Imported) -> str:
    """Return what an import did, in counts."""
    lines = [
        f"Imported {name}:",
        f"  history: {done.entries} entries in the file, {done.added} added, "
        f"{done.present} already there; it holds {done.history} now",
        f"  change logs: {done.records} records of {done.logs} releases in the file, "
        f"{done.new_records} added, {done.records - done.new_records - done.skipped_records} "
        "already there",
    ]
    if done.left_out:
        lines.append(
            f"  {done.left_out} older entries left out: the history keeps the newest "
            f"{done.history} (MANIFEST_HISTORY_LENGTH)"
        )
    if done.skipped_records:
        lines.append(
            f"  {done.skipped_records} change records skipped: no entry kept names their release"
        )
    return "\n".join(lines)


@click.command("tasks")
@click.option("--purge", is_flag=True, help="Drop every task waiting in the queue.")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for workers.")
@with_appcontext
def tasks_command(purge: bool, timeout: float) -> None:
    """Show what the workers are running, have reserved and have scheduled."""
    celery = get_celery()
    if purge:
        click.confirm("Drop every queued task? Running tasks are not touched", abort=True)
        dropped = celery.control.purge()
        triggers.forget_purged()
        click.echo(f"Dropped {dropped} queued task(s).")
        return
    inspect = celery.control.inspect(timeout=timeout)
    sections = {
        "running": inspect.active() or {},
        "reserved": inspect.reserved() or {},
        "scheduled": inspect.scheduled() or {},
    }
    workers = sorted({name for replies in sections.values() for name in replies})
    if not workers:
        click.echo(
            f"No worker answered within {timeout:g}s. "
            "Is `celery -A celery_worker.celery worker` running against this broker?"
        )
        sys.exit(1)
    for worker in workers:
        click.echo(worker)
        for label, replies in sections.items():
            entries = replies.get(worker, [])
            click.echo(f"  {label}: {len(entries)}")
            for entry in entries:
                task = entry.get("request", entry)
                click.echo(f"    {task.get('name')} {task.get('id')} {task.get('kwargs') or ''}")
