"""Why a target was missed and what would fix it: docs/BENCHMARK_FIXES.md, shown for misses.

Each explanation is a section of that page, its `{name}` fields filled with the run's figures,
shown next to the profile the run took of that workload, and only when its target is missed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

MB = 1_000_000
PROSE = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARK_FIXES.md"

Explainer = Callable[[dict[str, Any], dict[str, Any]], str]


@cache
def sections() -> dict[str, str]:
    """Return the sections of docs/BENCHMARK_FIXES.md by heading, each as one paragraph."""
    text = PROSE.read_text(encoding="utf-8")
    found = {}
    for part in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        found[heading.strip()] = " ".join(body.split())
    return found


def prose(*headings: str, **fields: str) -> str:
    """Return these sections as one paragraph, their `{name}` fields filled from `fields`."""
    return " ".join(sections()[heading] for heading in headings).format_map(fields) + "\n"


def said(*headings: str) -> Explainer:
    """Return an explainer that shows these sections as they are written."""
    return lambda target, figures: prose(*headings)


def explain(workload: str, missed: list[dict[str, Any]], figures: dict[str, Any]) -> str:
    """Return the markdown that explains the missed targets of one workload.

    Targets missed in several scopes (sizes, pages) that share a cause are listed together,
    their explanation given once.
    """
    texts: dict[str, list[dict[str, Any]]] = {}
    for target in missed:
        explainer = EXPLAINERS.get(target["target"])
        # Unexplained targets are not grouped together: each says it has no explanation.
        text = (
            explainer(target, figures)
            if explainer
            else f"No explanation of this target is written yet ({target['target']}).\n"
        )
        texts.setdefault(text, []).append(target)
    parts = ["### Why, and the fix\n"]
    for text, targets in texts.items():
        listed = "; ".join(f"{t['scope']}: {t['shown']}" for t in targets)
        parts.append(f"**{targets[0]['target']} {targets[0]['rule']}** missed ({listed}).\n")
        parts.append(text)
    parts.append(profiles(workload, figures))
    return "\n".join(parts)


def code(text: str) -> str:
    return f"```\n{text.rstrip()}\n```\n"


def profiles(workload: str, figures: dict[str, Any]) -> str:
    """Return the profiles the run took of this workload, as the document shows them."""
    if workload == "ingest":
        found = [s for s in figures.get("sizes", []) if s.get("profile")]
        return "".join(
            f"Profile of one more engine run at {s['items']:,} items (by own time):\n\n"
            + code(s["profile"])
            for s in found
        )
    if workload == "unchanged" and figures.get("profile"):
        rows = "\n".join(
            f"| {label} | {micros:.0f} |" for label, micros in figures["profile"].items()
        )
        return (
            "Where an unchanged sync's time goes (median microseconds of 200 syncs, each step "
            "timed):\n\n| step | us |\n| --- | --- |\n" + rows + "\n"
        )
    if workload == "change_log":
        return change_log_profiles(figures)
    if workload == "mirror":
        return mirror_profiles(figures)
    if workload in ("trigger_load", "reading") and figures.get("profiles"):
        lines = []
        for found in figures["profiles"]:
            kinds = ", ".join(f"{kind} {us:.0f}" for kind, us in found["kinds_us"].items())
            lines.append(f"| {found['label']} | {found['mean_us']:.0f} | {kinds} |")
        worst = max(figures["profiles"], key=lambda p: p["mean_us"])
        return (
            "Each endpoint replayed in process (Flask's test client, same Redis keys, no HTTP): "
            "its mean time, and its profiled time split by kind of work (profiled times run "
            "about twice as long; compare the shares):\n\n"
            "| request | us in process | profiled us by kind of work |\n| --- | --- | --- |\n"
            + "\n".join(lines)
            + f"\n\nThe costliest, {worst['label']}, by cumulative time:\n\n"
            + code(worst["listing"])
        )
    return ""


def change_log_profiles(figures: dict[str, Any]) -> str:
    """Return the profiles bench/change_log.py took: of a sync with the log, of the page."""
    parts = []
    sync = figures.get("profile")
    if sync:
        rows = "\n".join(
            f"| {name} | {found['calls']:,} | {found['cumulative']:.3f} |"
            for name, found in sync["log_functions"].items()
        )
        parts.append(
            f"One more sync with the change log under cProfile ({sync['seconds']:.2f} s); the "
            "log's own functions, cumulative seconds summed over threads:\n\n"
            "| function | calls | s |\n| --- | --- | --- |\n"
            + rows
            + "\n\nBy own time:\n\n"
            + code(sync["listing"])
        )
    for found in figures.get("profiles", []):
        kinds = ", ".join(f"{kind} {us:.0f}" for kind, us in found["kinds_us"].items())
        parts.append(
            f"{found['label']} replayed in process: {found['mean_us']:.0f} us a request; "
            f"profiled us by kind of work: {kinds}. By own time:\n\n" + code(found["listing"])
        )
    return "\n".join(parts)


def mirror_profiles(figures: dict[str, Any]) -> str:
    """Return the profiles bench/mirror.py took: a download of the item file, conditional GETs."""
    parts = []
    for found in figures.get("profiles", []):
        kinds = ", ".join(f"{kind} {us:.0f}" for kind, us in found["kinds_us"].items())
        parts.append(
            f"{found['label']} replayed in process (Flask's test client, same Redis keys, no "
            f"HTTP): {found['mean_us']:.0f} us; profiled us by kind of work: {kinds}.\n\n"
            + code(found["listing"])
        )
    return "\n".join(parts)


# -- workload 1 -----------------------------------------------------------------------------


def floor_ratio(target: dict[str, Any], figures: dict[str, Any]) -> str:
    gaps = []
    for size in figures.get("sizes", []):
        engine = size["routes"].get("engine", {})
        floor = size["routes"].get(size.get("floor_route") or "", {})
        if "seconds" in engine and "seconds" in floor:
            gaps.append(f"{size['items']:,} items: {engine['seconds'] - floor['seconds']:+.2f} s")
    return prose("The engine's work beyond the floor", gaps="; ".join(gaps))


def dvr_ratio(target: dict[str, Any], figures: dict[str, Any]) -> str:
    lines = []
    floor_fast_enough = True
    for size in figures.get("sizes", []):
        dvr = size["routes"].get("dvr", {})
        floor = size["routes"].get(size.get("floor_route") or "", {})
        if "seconds" in dvr and "seconds" in floor:
            floor_over_dvr = dvr["seconds"] / floor["seconds"]
            floor_fast_enough = floor_fast_enough and floor_over_dvr >= 10
            lines.append(
                f"{size['items']:,} items: {dvr['seconds'] / size['items'] * 1e6:.0f} us per "
                f"definition, the floor {floor_over_dvr:.1f}x faster than DVR"
            )
    verdict = (
        "DVR-style: the floor is 10x faster"
        if floor_fast_enough
        else "DVR-style: even the floor is not 10x faster"
    )
    return prose("DVR-style round trips", verdict, per_definition="; ".join(lines))


# -- workload 2 -----------------------------------------------------------------------------


def swap_peak(target: dict[str, Any], figures: dict[str, Any]) -> str:
    two = figures.get("projection", {}).get("peak_if_two", 0) / MB
    return prose("Three releases during a swap", two=f"{two:.1f}")


# -- workload 3 -----------------------------------------------------------------------------


def unchanged_time(target: dict[str, Any], figures: dict[str, Any]) -> str:
    summary = figures.get("summary", {})
    return prose(
        "An unchanged sync's round trips",
        commands=f"{summary.get('commands_total', 0):g}",
        round_trips=f"{summary.get('round_trips', 0):g}",
    )


# -- workload 5 -----------------------------------------------------------------------------


def page_ratio(target: dict[str, Any], figures: dict[str, Any]) -> str:
    label = target["scope"]
    applied = "Reading pages: applied on every page"
    if "/items?q" in label:
        return prose(applied, "Reading pages: the search page")
    if "/definitions/" in label:
        page = "Reading definitions: one by hash"
    elif "per_page=200" in label:
        page = "Reading pages: the API page of 200 definitions"
    else:
        page = "Reading pages: the player page"
    costs = figures.get("round_trips", {})
    healthz_rps = figures.get("healthz", {}).get("rps") or 0
    if not (costs and healthz_rps):
        return prose(applied, page)
    cpus = figures.get("cpus", 2)
    spent = "; ".join(
        f"one {name}: {c['client_cpu_us'] + c['redis_cpu_us']:.0f} us of CPU "
        f"({c['client_cpu_us']:.0f} in the app, {c['redis_cpu_us']:.0f} in Redis)"
        for name, c in costs.items()
    )
    return prose(
        applied,
        "Reading pages: a round trip's cost",
        page,
        spent=spent,
        whole=f"{cpus * 1e6 / healthz_rps:.0f}",
        cpus=str(cpus),
        healthz_rps=f"{healthz_rps:.0f}",
    )


def batch_rate(target: dict[str, Any], figures: dict[str, Any]) -> str:
    unpacking = figures.get("unpacking") or {}
    batch = figures.get("pages", {}).get("batch200") or {}
    return prose(
        "Reading definitions: a batch's rate",
        answer_kb=f"{batch.get('body_bytes', 0) / max(1, batch.get('requests', 0)) / 1000:.0f}",
        stored_kb=f"{unpacking.get('stored_bytes', 0) / 1000:.0f}",
        unpack_us=f"{unpacking.get('us_per_definition', 0):.1f}",
        unpack_mb_s=f"{unpacking.get('json_mb_s', 0):.0f}",
    )


# -- workload 8 -----------------------------------------------------------------------------


def conditional_cost(target: dict[str, Any], figures: dict[str, Any]) -> str:
    found = figures.get("profiles", [])
    spent = "; ".join(f"{p['label']} {p['mean_us']:.0f} us" for p in found if "If-" in p["label"])
    healthz = next((p["mean_us"] for p in found if p["label"] == "GET /healthz"), None)
    if healthz is not None:
        spent += f", against {healthz:.0f} us for GET /healthz"
    return prose("A conditional GET's round trip", spent=spent or "(no profile was taken)")


def stream_memory(target: dict[str, Any], figures: dict[str, Any]) -> str:
    stream = figures.get("stream", {})
    return prose(
        "Streaming a table's memory",
        before=f"{stream.get('peak_rss_before_mib', 0):.0f}",
        after=f"{stream.get('peak_rss_mib', 0):.0f}",
    )


EXPLAINERS: dict[str, Explainer] = {
    "engine time / floor time": floor_ratio,
    "dvr time / engine time": dvr_ratio,
    "engine peak RSS": said("Peak RSS"),
    "engine peak RSS growth": said("Peak RSS"),
    "engine time per item, largest size vs smaller": said("Time per item"),
    "Redis footprint / raw JSON": said("A release's share of the raw JSON"),
    "Redis memory of a release's item table / raw JSON": said("A release's share of the raw JSON"),
    "projected Redis at rest (real manifest)": said("Two releases at rest"),
    "projected Redis during a swap": swap_peak,
    "HTTP requests per unchanged sync": said("An unchanged sync's requests"),
    "content bytes per unchanged sync": said("An unchanged sync's requests"),
    "unchanged sync / bare manifest GET": unchanged_time,
    "trigger requests/s / /healthz requests/s": said("A trigger's cost"),
    "errors (429 apart)": said("Errors under load"),
    "syncs started": said("Syncs started"),
    "page requests/s / /healthz requests/s": page_ratio,
    "one definition's requests/s / /healthz requests/s": page_ratio,
    "definition JSON served by a 200-hash batch": batch_rate,
    "store.search p50": said("Search time"),
    "reads that mixed two releases": said("Reads that mixed two releases"),
    "worst read latency during a swap": said("Slow reads during a swap"),
    "a whole item table streamed from the mirror": said("Streaming a table"),
    "peak RSS of the web workers streaming it": stream_memory,
    "304s/s of a conditional GET / /healthz requests/s": conditional_cost,
}
