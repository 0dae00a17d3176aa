"""How instants and durations read, in UTC, wherever the app shows them: pages, Slack messages
and the CLI."""

from __future__ import annotations

import time
from datetime import UTC
from datetime import datetime

AGO_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"))


def instant(epoch: float, *, seconds: bool = False) -> str:
    """Format a Unix time as "2026-11-21 19:30 UTC" ("2026-11-21 19:30:05 UTC" with seconds)."""
    shape = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC"
    return datetime.fromtimestamp(epoch, UTC).strftime(shape)


def clock(epoch: float) -> str:
    """Format a Unix time as "19:30:05 UTC"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


def ago(epoch: float) -> str:
    """Say how long ago a Unix time was: "just now", "1 minute ago", "3 days ago"."""
    elapsed = time.time() - epoch
    for size, unit in AGO_UNITS:
        if elapsed >= size:
            count = int(elapsed // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"


def duration(seconds: float) -> str:
    """Format a duration to the tenth of a second: "0.4 s", "2 min 5 s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def duration_in_minutes(seconds: float) -> str:
    """Format a long duration to the minute, at least one: "1m", "45m", "2h 0m"."""
    minutes = int(seconds // 60)
    return f"{minutes // 60}h {minutes % 60}m" if minutes >= 60 else f"{max(minutes, 1)}m"
