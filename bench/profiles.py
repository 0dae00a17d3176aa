"""Profiles that come with a missed target: where a request's time goes, in this process.

A web request is replayed through the app's WSGI callable (Flask's test client: no HTTP, no
gunicorn) on the same Redis keys the benchmark served, timed, then run under cProfile. The
profile is summed by kind of work (Redis round trips, templates, URL building, the session
cookie, ...) so that the fix can be read off it, and the top functions are listed.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Kinds of work, matched in order against "<file>:<function>" of each profiled function.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Redis round trips", ("redis/", "_socket.socket", "hiredis")),
    ("templates (Jinja)", ("jinja2/", "markupsafe/", ".html:")),
    ("URL building", ("routing/map.py", "routing/rules.py", ":url_for", "urllib/parse.py")),
    ("session cookie", ("itsdangerous/", "sessions.py", "zlib", "hmac.py", "/tag.py")),
    ("JSON", ("msgspec", "json/")),
    ("compression (zstd)", ("zstandard", "packing.py")),
    ("search and store (app)", ("app/manifest/",)),
    ("views and helpers (app)", ("app/",)),
    ("Flask and Werkzeug", ("flask/", "werkzeug/")),
)
OTHER = "other"


@dataclass
class RequestProfile:
    """One endpoint replayed in process: its mean time, and that time split by kind of work."""

    label: str
    mean_us: float
    kinds_us: dict[str, float]
    listing: str


def kind_of(filename: str, function: str) -> str:
    where = f"{filename}:{function}"
    for kind, needles in KINDS:
        if any(needle in where for needle in needles):
            return kind
    return OTHER


def split_by_kind(stats: pstats.Stats, calls: int) -> dict[str, float]:
    """Return the profiled own time per call, in microseconds, summed by kind of work."""
    kinds: dict[str, float] = {}
    # typeshed's pstats.Stats omits `stats`, the raw table every Stats method reads.
    for (filename, _, function), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        kind = kind_of(filename, function)
        kinds[kind] = kinds.get(kind, 0.0) + own
    total = sum(kinds.values()) or 1.0
    return {
        kind: seconds / calls * 1e6
        for kind, seconds in sorted(kinds.items(), key=lambda kv: -kv[1])
        if seconds / total >= 0.01
    }


def listing(stats: pstats.Stats, lines: int = 18, sort: str = "cumulative") -> str:
    """Return the top of a profile by `sort` (cumulative, or tottime: own time), header included."""
    text = io.StringIO()
    # typeshed's pstats.Stats omits `stream`, where print_stats writes (set by __init__).
    stats.stream = text  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats(sort).print_stats(lines)
    body = text.getvalue()
    return body[body.index("   ncalls") :] if "   ncalls" in body else body


def profile_call(
    label: str, call: Callable[[], Any], rounds: int, sort: str = "cumulative"
) -> RequestProfile:
    """Time `call` over `rounds`, then profile as many more; return both (listed by `sort`)."""
    for _ in range(min(rounds, 50)):
        call()
    started = time.perf_counter()
    for _ in range(rounds):
        call()
    mean_us = (time.perf_counter() - started) / rounds * 1e6
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    kinds = split_by_kind(stats, rounds)
    return RequestProfile(label, mean_us, kinds, listing(stats, sort=sort))


def print_profiles(profiles: list[RequestProfile]) -> None:
    """Print each endpoint's in-process time and its split by kind of work."""
    for found in profiles:
        shares = ", ".join(f"{kind} {us:.0f}" for kind, us in found.kinds_us.items())
        print(f"    {found.label}: {found.mean_us:.0f} us in process; profiled us: {shares}")


def to_record(found: RequestProfile) -> dict[str, Any]:
    return {
        "label": found.label,
        "mean_us": found.mean_us,
        "kinds_us": found.kinds_us,
        "listing": found.listing,
    }
