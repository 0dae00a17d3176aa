"""The PNG plots of docs/BENCHMARKS.md, drawn from the workloads' figures (matplotlib, no GUI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

ROUTE_STYLES: dict[str, dict[str, Any]] = {
    "engine": {"color": "tab:blue", "marker": "o", "linewidth": 2.5},
    "floor": {"color": "tab:green", "marker": "s"},
    "dvr": {"color": "tab:red", "marker": "x"},
}
MB = 1_000_000


def _route_series(ingest: dict[str, Any], field: str) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for size in sorted(ingest["sizes"], key=lambda s: s["items"]):
        for name, route in size["routes"].items():
            if route["status"] == "ok":
                xs, ys = series.setdefault(name, ([], []))
                xs.append(size["items"])
                ys.append(route[field])
    return series


def ingest_plots(ingest: dict[str, Any], folder: Path) -> list[Path]:
    """Draw the time and the peak RSS of every route against the table's size."""
    drawn = []
    for field, name, label, limit in (
        ("seconds", "ingest_time.png", "time to Redis (s), best run", None),
        ("peak_rss_mib", "ingest_rss.png", "peak RSS (MiB)", 150.0),
    ):
        figure, axes = plt.subplots(figsize=(7, 4.2))
        for route, (xs, ys) in _route_series(ingest, field).items():
            axes.plot(xs, ys, label=route, **ROUTE_STYLES.get(route, {}))
        if limit is not None:
            axes.axhline(limit, color="grey", linestyle="--", linewidth=1)
            axes.annotate("engine target", (axes.get_xlim()[0], limit), va="bottom", color="grey")
        axes.set_xlabel("items in DestinyInventoryItemDefinition")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend()
        axes.set_title(f"Workload 1: {label.split(' (')[0]} vs table size")
        path = folder / name
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        drawn.append(path)
    return drawn


def throughput_plot(
    trigger: dict[str, Any] | None, reading: dict[str, Any] | None, folder: Path
) -> Path | None:
    """Draw each loaded endpoint's requests/s as a share of /healthz's, with its target."""
    # (label, share of /healthz, target share or None: judged otherwise, e.g. MB/s)
    bars: list[tuple[str, float, float | None]] = []
    if trigger:
        bars.append(("triggers (API + page)", trigger["ratio"], 0.5))
    if reading:
        bars += [
            (page["label"], page["ratio"], page.get("target_ratio", 0.35))
            for page in reading["pages"].values()
        ]
    if not bars:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.7 * len(bars) + 1.5))
    names = [b[0] for b in bars]
    values = [b[1] * 100 for b in bars]
    colors = [
        "tab:grey" if b[2] is None else "tab:green" if b[1] >= b[2] else "tab:red" for b in bars
    ]
    axes.barh(names, values, color=colors)
    for row, (_, _, target) in enumerate(bars):
        if target is not None:
            axes.plot([target * 100] * 2, [row - 0.4, row + 0.4], color="black", linewidth=2)
    for row, value in enumerate(values):
        axes.annotate(
            f"{value:.0f}%", (value, row), xytext=(3, 0), textcoords="offset points", va="center"
        )
    axes.set_xlabel("requests/s, % of /healthz's (black: target; grey: judged in MB/s)")
    axes.set_xlim(0, max(100, *values) * 1.1)
    axes.invert_yaxis()
    axes.set_title("Workloads 4 and 5: web throughput")
    path = folder / "web_throughput.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def footprint_plot(footprint: dict[str, Any], folder: Path) -> Path:
    """Draw the projected Redis memory at rest and during a swap against a 100 MB plan."""
    projection = footprint["projection"]
    release = projection["release"] / MB
    base = projection["base"] / MB
    rows = [
        ("at rest", footprint["rest_over_release"]),
        ("during a swap", footprint["peak_over_release"]),
        ("during a swap, two kept", 2.0),
    ]
    figure, axes = plt.subplots(figsize=(7, 2.8))
    for row, (_, releases) in enumerate(rows):
        axes.barh(row, base, color="tab:grey")
        axes.barh(row, release * releases, left=base, color="tab:blue")
        total = base + release * releases
        axes.annotate(
            f"{total:.0f} MB", (total, row), xytext=(3, 0), textcoords="offset points", va="center"
        )
    axes.axvline(100, color="red", linestyle="--")
    axes.set_yticks(range(len(rows)), [r[0] for r in rows])
    axes.set_xlabel("projected MB for ~136 MB of item JSON (grey: Redis itself, broker)")
    axes.set_xlim(0, 120)
    axes.invert_yaxis()
    axes.set_title("Workload 2: the cache against a 100 MB Redis plan")
    path = folder / "redis_projection.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def swap_plot(swaps: dict[str, Any], folder: Path) -> Path:
    """Draw every read's latency over the time of each swap, the commit marked."""
    figure, axes = plt.subplots(figsize=(7, 3.6))
    for swap in swaps["swaps"]:
        xs = [point[0] for point in swap["timeline"]]
        ys = [point[1] for point in swap["timeline"]]
        line = axes.scatter(xs, ys, s=6, label=f"swap {swap['swap']}")
        axes.axvline(swap["commit_offset"], color=line.get_facecolor()[0], linestyle=":")
    axes.axhline(50, color="red", linestyle="--", linewidth=1)
    axes.set_yscale("log")
    axes.set_xlabel("seconds since the sync started (dotted: the commit)")
    axes.set_ylabel("read latency (ms)")
    axes.set_title("Workload 6: reads during a swap (all over 5 ms, a sample below)")
    axes.legend(loc="upper right")
    path = folder / "swap_latency.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def draw_all(reports: dict[str, dict[str, Any]], folder: Path) -> list[Path]:
    """Draw every plot the reports have figures for; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn: list[Path] = []
    if "ingest" in reports:
        drawn += ingest_plots(reports["ingest"], folder)
    if "footprint" in reports:
        drawn.append(footprint_plot(reports["footprint"], folder))
    web = throughput_plot(reports.get("trigger_load"), reports.get("reading"), folder)
    if web is not None:
        drawn.append(web)
    if "swap_readers" in reports:
        drawn.append(swap_plot(reports["swap_readers"], folder))
    return drawn
