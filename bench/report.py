"""Render docs/BENCHMARKS.md from the figures of one run of bench/run_all.py.

Every number in the document comes from the run's figures. The explanations of missed
targets (why, and what would fix it) are written in docs/BENCHMARK_FIXES.md, and shown (by
bench/fixes.py) only when that target is missed in the run, next to the profile the run took.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fixes

MIB = 1024 * 1024
MB = 1_000_000


def render(
    run: dict[str, Any], reports: dict[str, dict[str, Any]], drawn: list[Path], folder: Path
) -> str:
    """Return the whole document."""
    plots = {path.name: os.path.relpath(path, folder) for path in drawn}
    parts = [header(run), summary(reports)]
    sections = {
        "ingest": ingest_section,
        "footprint": footprint_section,
        "unchanged": unchanged_section,
        "trigger_load": trigger_section,
        "reading": reading_section,
        "swap_readers": swap_section,
        "change_log": change_log_section,
        "mirror": mirror_section,
        "metrics": metrics_section,
    }
    for name, figures in reports.items():
        parts.append(sections[name](figures, plots))
    return "\n".join(parts).rstrip() + "\n"


# -- the frame ------------------------------------------------------------------------------


def header(run: dict[str, Any]) -> str:
    machine = run["machine"]
    before = " ".join(f"{x:.2f}" for x in machine["load_before"])
    after = " ".join(f"{x:.2f}" for x in machine["load_after"])
    quick = (
        "\n**This is a quick smoke run (small sizes, short loads): its figures are not the "
        "benchmark.**\n"
        if run["quick"]
        else ""
    )
    return f"""# Benchmarks

Written by `{run["command"]}` on {run["date"]}; the run took {run["minutes"]:.1f}
minutes. Every figure below comes from that one run: re-run `make bench`
to refresh this page and the plots in `docs/bench/`. Each workload is a script in `bench/` that
can also be run alone (its docstring says how). Targets are those of issues 7, 15-17 and of
`../shared/DESIGN.md` ("Performance"): ratios measured in the same run, or counts, because
absolute times on these machines move with whatever else runs; but for issue 19's budget of a
/metrics scrape, an absolute time.
{quick}
**Machine**: {machine["nproc"]} CPUs ({machine["cpu"]}), {machine["memory_gib"]} GiB,
{machine["platform"]}; {machine["python"]}; Redis {machine["redis"]} on loopback
({machine["redis_url"]}); msgspec {machine["msgspec"]}, zstandard {machine["zstandard"]},
redis-py {machine["redis_py"]}. Load average before the run
{before}, after it {after} (other work shares this machine).
"""


def summary(reports: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, figures in reports.items():
        if "error" in figures:
            rows.append(f"| {TITLES[name]} | (the workload failed) | | | FAILED |")
        for target in figures["targets"]:
            rows.append(
                f"| {TITLES[name]} | {target['target']} {target['rule']} | {target['scope']} "
                f"| {target['shown']} | {badge(target['verdict'])} |"
            )
    met = sum(1 for f in reports.values() for t in f["targets"] if t["verdict"] == "MET")
    total = sum(len(f["targets"]) for f in reports.values())
    return (
        f"## Summary: {met} of {total} targets met\n\n"
        "| workload | target | scope | figure | verdict |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n"
    )


TITLES = {
    "ingest": "1. sync time and memory",
    "footprint": "2. Redis memory",
    "unchanged": "3. unchanged check",
    "trigger_load": "4. triggers under load",
    "reading": "5. reading pages",
    "swap_readers": "6. readers during a swap",
    "change_log": "7. the change log",
    "mirror": "8. the mirror and conditional GETs",
    "metrics": "9. the /metrics scrape",
}


def badge(verdict: str) -> str:
    return {"MET": "met", "MISSED": "**MISSED**"}.get(verdict, verdict)


def targets_table(figures: dict[str, Any]) -> str:
    rows = [
        f"| {t['target']} {t['rule']} | {t['scope']} | {t['shown']} | {badge(t['verdict'])} |"
        for t in figures["targets"]
    ]
    return (
        "| target | scope | figure | verdict |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n"
    )


def section(name: str, figures: dict[str, Any], how: str, body: str) -> str:
    """Frame a workload's section: how it was measured, its figures, its targets, the misses."""
    script = f"bench/{name}.py"
    argv = " ".join(figures.get("argv", [])[:-2])
    command = f"`.venv/bin/python {script}{' ' + argv if argv else ''}`"
    took = f"{figures.get('wall_seconds', 0):.0f} s"
    if "error" in figures:
        return (
            f"## {TITLES[name]}\n\n{command} failed after {took}: `{figures['error']}`. See the "
            "output of `make bench` for the traceback.\n"
        )
    missed = [t for t in figures["targets"] if t["verdict"] == "MISSED"]
    out = [f"## {TITLES[name]}\n", f"{command} ({took}). {how}\n", body, targets_table(figures)]
    if missed:
        out.append(fixes.explain(name, missed, figures))
    return "\n".join(out)


# -- the workloads --------------------------------------------------------------------------


def ingest_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    sizes = sorted(figures.get("sizes", []), key=lambda s: s["items"])
    routes = list(sizes[0]["routes"]) if sizes else []
    head = "| route | " + " | ".join(f"{s['items']:,}" for s in sizes) + " |"
    rule = "| --- |" + " --- |" * len(sizes)

    def table(field: str, unit: str, digits: int) -> str:
        rows = []
        for route in routes:
            cells = []
            for size in sizes:
                found = size["routes"][route]
                cells.append(f"{found[field]:.{digits}f}" if field in found else found["status"])
            rows.append(f"| {route} | " + " | ".join(cells) + " |")
        return f"{unit}\n\n{head}\n{rule}\n" + "\n".join(rows) + "\n"

    raw = " | ".join(f"{s['raw_bytes'] / MIB:.1f} MiB" for s in sizes)
    share = " | ".join(
        f"{s['engine_table_bytes'] / s['raw_bytes']:.1%}" if s.get("engine_table_bytes") else "-"
        for s in sizes
    )
    body = (
        "| table | " + " | ".join(f"{s['items']:,}" for s in sizes) + " |\n"
        f"{rule}\n| raw JSON | {raw} |\n"
        f"| engine's item table in Redis (hash + dictionary) / raw | {share} |\n\n"
        + table(
            "seconds", "Time from the start of the download to the last write (s), best run:", 2
        )
        + "\n"
        + table("process_seconds", "Whole process, start to exit (s), best run:", 2)
        + "\n"
        + table("peak_rss_mib", "Peak RSS (VmHWM, MiB), highest run:", 1)
        + "\n"
        + route_timings(sizes)
        + plot_lines(plots, "ingest_time.png", "ingest_rss.png")
    )
    how = (
        "Each route runs as a process of its own against a demo origin on loopback and ends "
        f"with every item definition, whole, in Redis; {figures.get('repeat', 1)} rounds of "
        f"every route (dvr: {figures.get('dvr_rounds', figures.get('repeat', 1))}), "
        "interleaved, best time and highest RSS kept. engine = this app's `sync.run`; floor = "
        "the same work as a plain script (download the whole file, split it into entries with "
        "msgspec, train a zstd dictionary on the first 2 MiB with packing.py's parameters, "
        "compress every definition with it on 2 threads, pipelined HSET of 500 fields; no "
        "digest, no diff); dvr = the original app's way (whole file, `json.loads`, one SET per "
        "definition)."
    )
    return section("ingest", figures, how, body)


def route_timings(sizes: list[dict[str, Any]]) -> str:
    """Return where the floor's and the engine's time went, as each timed its own steps."""
    lines = []
    for size in sizes:
        for route in ("floor", "engine"):
            runs = size["routes"].get(route, {}).get("runs") or []
            if runs:
                timings = min(runs, key=lambda run: run["seconds"])["timings"]
                steps = ", ".join(f"{name} {value:.2f} s" for name, value in timings.items())
                lines.append(f"- {size['items']:,} items, {route}: {steps}")
    if not lines:
        return ""
    return "Each route's own steps, best run:\n\n" + "\n".join(lines) + "\n\n"


def footprint_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    projection = figures.get("projection", {})
    body = ""
    if projection:
        body = f"""| figure | demo ({figures["items"]:,} items) | projected: ~136 MB of item JSON |
| --- | --- | --- |
| raw item JSON | {figures["raw_bytes"] / MB:.1f} MB | {projection["real_item_json"] / MB:.0f} MB |
| one release's item table in Redis (hash + dictionary) | {figures["release_bytes"] / MB:.1f} MB \
({figures["share"]:.1%}) | {projection["release"] / MB:.1f} MB |
| at rest: live + previous release | {figures["rest_bytes"] / MB:.1f} MB \
({figures["rest_over_release"]:.2f}x) | {projection["rest"] / MB:.1f} MB |
| during a swap: live + previous + new | {figures["peak_bytes"] / MB:.1f} MB \
({figures["peak_over_release"]:.2f}x) | {projection["peak"] / MB:.1f} MB |
| empty Redis (used_memory_startup) | {figures["used_memory_startup"] / MB:.1f} MB | same |
| broker and results ({projection["polls_kept"]} polls kept a day) | - | \
{projection["broker"] / MB:.2f} MB |

{plot_lines(plots, "redis_projection.png")}"""
    how = (
        "`MEMORY USAGE` (all samples) of a cache on a prefix of its own: after one sync, of "
        "the release's item table (its hash of whole definitions, each an 8-byte digest and a "
        "zstd frame, and its dictionary's key); after two (at rest) and in the progress "
        "callback of the third sync's commit (the peak), summed over every key of the cache; "
        "then scaled to today's real item table and set against a 100 MB plan."
    )
    return section("footprint", figures, how, body)


def unchanged_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    s = figures.get("summary", {})
    body = ""
    if s:
        sent = ", ".join(f"{k} {v:g}" for k, v in s["commands_per_sync"].items())
        executed = ", ".join(f"{k} {v}" for k, v in s["executed_by_command"].items())
        body = f"""| figure | median | p90 |
| --- | --- | --- |
| bare `requests.get` of the manifest | {s["bare_median_ms"]:.2f} ms | {s["bare_p90_ms"]:.2f} ms |
| unchanged sync (new client, `sync.run`) | {s["sync_median_ms"]:.2f} ms \
| {s["sync_p90_ms"]:.2f} ms |

Per unchanged sync: {s["http_requests_max"]} HTTP request (most in any round),
{s["content_requests_max"]} content requests, {s["content_bytes_max"]} content bytes;
Redis commands sent: {s["commands_total"]:g} in {s["round_trips"]:g} round trips ({sent});
executed by Redis (INFO commandstats, Lua's inner commands included, fewest of the rounds):
{s["executed_min"]:g} ({executed}). Outcomes: {s["outcomes"]}.
"""
    how = (
        "A cache is filled and a second release synced (so the live one has a diff); then in "
        "alternating order, a bare GET of /Platform/Destiny2/Manifest/ and an unchanged sync, "
        f"{figures.get('summary', {}).get('rounds', '?')} times. Requests come from the origin's "
        "request log; commands sent are counted in the client's connection (others using the "
        "same Redis do not blur them)."
    )
    return section("unchanged", figures, how, body)


def trigger_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    body = ""
    if "healthz" in figures:
        rows = []
        for name, label in (
            ("healthz", "GET /healthz"),
            ("api", "POST /api/v1/manifest/sync"),
            ("page", "GET /updateManifest"),
        ):
            g = figures[name]
            rows.append(
                f"| {label} | {g['requests']:,} | {g['rps']:.0f} | {g['p50_ms']:.1f} | "
                f"{g['p99_ms']:.1f} | {g['max_ms']:.0f} | {g['statuses']} |"
            )
        body = (
            "| endpoint | requests | req/s | p50 ms | p99 ms | max ms | statuses |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
            f"The triggers together: {figures['trigger_rps']:.0f} requests/s, "
            f"{figures['ratio']:.0%} of /healthz. The sync's download was dripped over "
            f"{figures['download_seconds']:.0f} s; it was "
            f"{'still running' if figures['sync_running_after_load'] else 'over'} when the "
            f"load ended and ended `{figures['sync_outcome']}`. Syncs started: "
            f"{figures['item_downloads']} item-table download(s) in the origin's log, "
            f"{figures['task_records']} task record(s), {figures['worker_received']} "
            f"`manifest.sync` task(s) received by the worker, {len(figures['api_task_ids'])} "
            "task id(s) in the API's answers.\n\n" + plot_lines(plots, "web_throughput.png")
        )
    how = (
        "gunicorn (2 sync workers) and a Celery worker on a prefix and queue of their own; the "
        f"load generator (`bench/loadgen.py`, its own process, {figures.get('connections', '?')} "
        f"connections) takes turns, {figures.get('rounds', '?')} times, between /healthz and "
        f"the triggers ({figures.get('seconds', '?'):g} s each in all; half the connections on "
        "each trigger) while one sync, its download slowed, runs. The rate limit is raised for "
        "the load; any 429 is counted apart."
    )
    return section("trigger_load", figures, how, body)


def reading_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    body = ""
    if "healthz" in figures:
        rows = []
        for page in (figures["healthz"], *figures["pages"].values()):
            ratio = f"{page['ratio']:.0%}" if "ratio" in page else "-"
            rows.append(
                f"| {page['label']} | {page['requests']:,} | {page['rps']:.0f} | {ratio} | "
                f"{page['p50_ms']:.1f} | {page['p99_ms']:.1f} | {page['statuses']} |"
            )
        s = figures["search"]
        body = (
            "| endpoint | requests | req/s | vs /healthz | p50 ms | p99 ms | statuses |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n"
            + "\n".join(rows)
            + "\n\n"
            + batch_lines(figures)
            + f"`store.search` in process: the index is built in {s['index_build_ms']:.0f} ms "
            f"(once per process and release); then {s['calls']} searches over "
            f"{s['distinct_queries']} queries (words, fragments, misses, filters; median "
            f"{s['median_hits']:g} hits): p50 {s['p50_ms']:.2f} ms, p90 {s['p90_ms']:.2f} ms, "
            f"p99 {s['p99_ms']:.2f} ms, max {s['max_ms']:.2f} ms.\n\n"
            + plot_lines(plots, "web_throughput.png")
        )
    how = (
        "A cache of the demo release on a prefix of its own, served by gunicorn (2 sync "
        f"workers); the load generator (its own process, {figures.get('connections', '?')} "
        f"connections) takes turns, {figures.get('rounds', '?')} times, between the endpoints "
        f"({figures.get('seconds', '?'):g} s each in all), paths varied (search words, result "
        "pages, random hashes of the live release for the definitions; the batches, 200 random "
        "hashes each, taken in turn)."
    )
    return section("reading", figures, how, body)


def batch_lines(figures: dict[str, Any]) -> str:
    """Return what the batch of 200 definitions served, and what unpacking them costs."""
    batch = figures["pages"].get("batch200")
    if not batch or "definition_mb_s" not in batch:
        return ""
    text = (
        f"The batch (`POST /api/v1/definitions`, 200 hashes) served "
        f"{batch['definition_mb_s']:.1f} MB/s of definition JSON (10^6 bytes; the definitions' "
        f"own bytes, {batch['mean_definition_bytes']:,.0f} a definition), "
        f"{batch['wire_mb_s']:.1f} MB/s of answers."
    )
    unpacking = figures.get("unpacking")
    if unpacking:
        text += (
            f" Unpacking {unpacking['definitions']} stored definitions in one process takes "
            f"{unpacking['us_per_definition']:.1f} us each ({unpacking['json_mb_s']:.0f} MB/s "
            f"of JSON on one core; {unpacking['stored_bytes']:,} bytes stored for "
            f"{unpacking['json_bytes']:,} of JSON)."
        )
    return text + "\n\n"


def swap_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    rows = []
    for swap in figures.get("swaps", []):
        lookup, hmget = swap["by_kind"]["lookup"], swap["by_kind"]["hmget"]
        rows.append(
            f"| {swap['swap']} | {swap['sync_seconds']:.2f} s | {swap['commit_ms']:.0f} ms | "
            f"{swap['reads']:,} ({swap['reads_during_sync']:,}) | {swap['mixed']} | "
            f"{lookup['p50_ms']:.2f} / {lookup['p99_ms']:.2f} / {lookup['max_ms']:.1f} | "
            f"{hmget['p50_ms']:.2f} / {hmget['p99_ms']:.2f} / {hmget['max_ms']:.1f} | "
            f"{swap['worst_near_commit_ms']:.1f} ms |"
        )
    body = (
        "| swap | sync | commit | reads (while syncing) | mixed | lookup p50 / p99 / max ms "
        "| GET+HMGET p50 / p99 / max ms | worst around the commit |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n\n"
        + plot_lines(plots, "swap_latency.png")
    )
    how = (
        "For each swap the origin publishes a release; a reader process reads 200 items "
        "(some changed, added, removed by the new release) in a tight loop, in turns through "
        "`store.lookup` (an HMGET of the release Redis vouches is live) and a plain GET + HMGET, "
        "while this process syncs "
        "and commits. Every read's values are checked against the release it names. The reader "
        "keeps its figures in flat arrays and freezes its imports out of the garbage collector, "
        "whose full collections would otherwise add 30-90 ms pauses of its own."
    )
    return section("swap_readers", figures, how, body)


def change_log_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    routes = figures.get("routes", {})
    rows = []
    for name, label in (("log", "with the change log"), ("nolog", "without (ChangeLog -> None)")):
        route = routes.get(name, {})
        if "seconds" not in route:
            rows.append(f"| {label} | - | - | - | - | BROKEN: {route.get('error')} |")
            continue
        best = min(route["runs"], key=lambda run: run["seconds"])
        logged = best["changes"]["kept"] if best["changes"] else "-"
        rows.append(
            f"| {label} | {route['seconds']:.2f} | {route['process_seconds']:.2f} | "
            f"{route['peak_rss_mib']:.1f} | {best['diff']['changed']:,} / {logged} | "
            f"{best['changes_bytes'] / 1024:.1f} KiB |"
        )
    body = (
        "| sync of the second release | sync.run s (best) | whole process s (best) | peak RSS "
        "MiB (highest) | changed / logged | change log in Redis |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
    )
    page = figures.get("page")
    if page:
        h, p = page["healthz"], page["page"]
        body += (
            "| endpoint | requests | req/s | vs /healthz | p50 ms | p99 ms | statuses |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n"
            f"| GET /healthz | {h['requests']:,} | {h['rps']:.0f} | - | {h['p50_ms']:.1f} | "
            f"{h['p99_ms']:.1f} | {h['statuses']} |\n"
            f"| GET /releases/<id> ({page['changed']:,} changes) | {p['requests']:,} | "
            f"{p['rps']:.0f} | {p['ratio']:.0%} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
            f"{p['statuses']} |\n\n"
            f"The page's first answer: {page['page_bytes']:,} bytes of HTML, naming "
            f"{page['names_shown']:,} of the {page['names']:,} changed definitions' names.\n\n"
        )
    how = (
        f"A demo origin of {figures.get('items', 0):,} items; release 1 synced on a base prefix "
        "(every table TestingConfig caches, one language), then release 2 published: every "
        f"`index` renumbered, {figures.get('changed') or 0:,} items (2%) changed for real. In "
        f"{figures.get('repeat', '?')} rounds, alternating the order, each route copies the base "
        "prefix (COPY) and syncs release 2 as a process of its own: with the change log, and "
        "without it (in that process `app.manifest.sync.ChangeLog` is patched to return None: "
        "the diff is counted by digests only). Best time, highest RSS. The change log's share is "
        "`MEMORY USAGE` of the release's change-log hash over its tables and dictionaries. Then a "
        f"release with {(page or {}).get('changed', 0):,} changed items is synced on top of "
        "release 2 and gunicorn (2 sync workers) serves its page while the load generator "
        f"({figures.get('connections', '?')} connections) takes turns with /healthz, "
        f"{figures.get('rounds', '?')} times ({figures.get('seconds', 0):g} s each in all)."
    )
    return section("change_log", figures, how, body)


def mirror_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    stream = figures.get("stream")
    body = ""
    if stream:
        rates = ", ".join(f"{run['mb_s']:.0f}" for run in stream["downloads"])
        workers = "; ".join(
            f"{pid}: {before['peak_rss_mib']:.1f} -> "
            f"{stream['workers_after'][pid]['peak_rss_mib']:.1f} MiB "
            f"(now {stream['workers_after'][pid]['rss_mib']:.1f})"
            for pid, before in stream["workers_before"].items()
            if pid in stream["workers_after"]
        )
        body = (
            f"The item file (`{stream['path']}`, from the mirror's manifest): "
            f"{stream['body_bytes'] / MB:.1f} MB, {stream['entries']:,} entries, each keyed by "
            f"its own hash (checked once, untimed). {len(stream['downloads'])} downloads, one at "
            f"a time, request to last byte: {rates} MB/s (median "
            f"{stream['median_mb_s']:.0f}, best {stream['best_mb_s']:.0f}; 10^6 bytes a MB). "
            f"The gunicorn workers' peak RSS (VmHWM), before -> after the downloads: "
            f"{workers}.\n\n"
        )
    healthz = figures.get("healthz")
    if healthz:
        rows = []
        for row in (healthz, *figures["routes"].values()):
            ratio = f"{row['ratio']:.0%}" if "ratio" in row else "-"
            rows.append(
                f"| {row['label']} | {row['requests']:,} | {row['ok_rps']:.0f} | {ratio} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['statuses']} |"
            )
        body += (
            "| endpoint | requests | expected answers/s | vs /healthz | p50 ms | p99 ms | "
            "statuses |\n| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        )
    for label, reason in figures.get("skipped", {}).items():
        body += f"Not loaded: {label}: {reason}.\n\n"
    how = (
        f"A cache of the demo release ({figures.get('items', 0):,} items) on a prefix of its "
        "own, served by gunicorn (2 sync workers) on loopback. The item table's file is "
        "downloaded whole, one download at a time (`http.client`, the body read and dropped); "
        "the workers are the gunicorn master's children, their VmHWM read from /proc. Then "
        "each route is asked once per path for its ETag, and the load generator (its own "
        f"process, {figures.get('connections', '?')} connections) takes turns, "
        f"{figures.get('rounds', '?')} times, between /healthz and GETs naming that ETag in "
        f"If-None-Match ({figures.get('seconds', 0):g} s each in all; 304 expected, only 304s "
        "counted)."
    )
    return section("mirror", figures, how, body)


def metrics_section(figures: dict[str, Any], plots: dict[str, str]) -> str:
    s = figures.get("summary")
    body = ""
    if s:
        body = (
            f"{s['scrapes']} scrapes, one after the other: median {s['median_ms']:.1f} ms, p95 "
            f"{s['p95_ms']:.1f} ms, fastest {s['min_ms']:.1f} ms, slowest {s['max_ms']:.1f} ms. "
            f"Each answer: {s['answer_bytes']:,} bytes, {s['answer_families']} families, "
            f"{s['answer_samples']} samples; the history held {s['history_entries']} entries and "
            f"the workers' counts in Redis {s['answer_syncs_counted']:g} syncs (built in "
            f"{s['build_seconds']:.0f} s).\n\n"
        )
    how = (
        f"A cache of the demo release ({figures.get('items', 0):,} items) on a prefix of its "
        f"own, then {figures.get('releases', '?')} more releases published and synced, each "
        "counted in Redis as the sync task counts it. gunicorn (2 sync workers, its "
        "gunicorn.conf.py: multiprocess mode) serves it on loopback, Slack and a webhook "
        "configured; after 200 requests to /healthz and 5 warm-up scrapes, each scrape is "
        "timed over real HTTP on a new connection, from the request sent to the body "
        "read."
    )
    return section("metrics", figures, how, body)


def plot_lines(plots: dict[str, str], *names: str) -> str:
    return "".join(f"![{name}]({plots[name]})\n" for name in names if name in plots)
