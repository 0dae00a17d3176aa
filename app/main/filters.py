"""The pages' value filters: instants, durations, counts and table names as the templates show
them (the formats of instants and durations are app.dates')."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from app import dates
from app.manifest.items import table_label

# What a page shows for a value it does not have.
MISSING = "\N{EN DASH}"


def format_datetime(epoch: float | None) -> str:
    """Format a Unix time as "2026-11-21 19:30 UTC"; "never" if there is none."""
    return "never" if epoch is None else dates.instant(epoch)


def format_seconds(seconds: float | None) -> str:
    """Format a duration: "0.4 s", "2 min 5 s"."""
    return MISSING if seconds is None else dates.duration(seconds)


def format_number(value: int | None) -> str:
    """Format a count with thousands separators."""
    return MISSING if value is None else f"{value:,}"


def format_played(moment: str) -> str:
    """Format one of Bungie's ISO 8601 times as "2026-11-21 19:30 UTC" (as is if not one)."""
    try:
        return dates.instant(datetime.fromisoformat(moment).timestamp())
    except ValueError:
        return moment


# The filters by the name templates use.
FILTERS: dict[str, Callable[..., Any]] = {
    "datetime": format_datetime,
    "clock": dates.clock,
    "ago": dates.ago,
    "seconds": format_seconds,
    "number": format_number,
    "played": format_played,
    "short_table": table_label,
}
