"""Why a target was missed and what would fix it: the text docs/BENCHMARKS.md shows for misses.

Each explanation goes with the profile the run took of that workload, and is shown only when
its target is missed in the run. The causes and fixes were found by profiling this app and
by measuring prototypes of the changes (monkeypatched into a benchmark process, not into the
app); the prototypes' figures are quoted with the day they were measured, the rest of the
figures come from the run itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MB = 1_000_000
PROTOTYPED = "2026-11-21"
MEASURED = "2026-11-22"

Explainer = Callable[[dict[str, Any], dict[str, Any]], str]


def explain(workload: str, missed: list[dict[str, Any]], figures: dict[str, Any]) -> str:
    """Return the markdown that explains the missed targets of one workload.

    Targets missed in several scopes (sizes, pages) that share a cause are listed together,
    their explanation given once.
    """
    texts: dict[str, list[dict[str, Any]]] = {}
    for target in missed:
        explainer = EXPLAINERS.get(target["target"])
        text = explainer(target, figures) if explainer else "No explanation is written yet.\n"
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
    if workload in ("trigger_load", "reading") and figures.get("profiles"):
        rows = []
        for found in figures["profiles"]:
            kinds = ", ".join(f"{kind} {us:.0f}" for kind, us in found["kinds_us"].items())
            rows.append(f"| {found['label']} | {found['mean_us']:.0f} | {kinds} |")
        worst = max(figures["profiles"], key=lambda p: p["mean_us"])
        return (
            "Each endpoint replayed in process (Flask's test client, same Redis keys, no HTTP): "
            "its mean time, and its profiled time split by kind of work (profiled times run "
            "about twice as long; compare the shares):\n\n"
            "| request | us in process | profiled us by kind of work |\n| --- | --- | --- |\n"
            + "\n".join(rows)
            + f"\n\nThe costliest, {worst['label']}, by cumulative time:\n\n"
            + code(worst["listing"])
        )
    return ""


# -- workload 1 -----------------------------------------------------------------------------


def floor_ratio(target: dict[str, Any], figures: dict[str, Any]) -> str:
    gaps = []
    for size in figures.get("sizes", []):
        engine = size["routes"].get("engine", {})
        floor = size["routes"].get(size.get("floor_route") or "", {})
        if "seconds" in engine and "seconds" in floor:
            gaps.append(f"{size['items']:,} items: {engine['seconds'] - floor['seconds']:+.2f} s")
    return (
        "The engine does per-sync work the floor routes do not: the lock, the manifest "
        "request, staging, a digest and a second HSET per definition (for the diff), the "
        "commit and the check record. That part weighs most on small tables; engine minus "
        f"floor here: {'; '.join(gaps)}. A gap that grows with the size points at the "
        "per-definition work (`ingest.py`'s decoding and `TableWriter.write`), a constant one "
        "at the fixed steps of `sync.run`: see the profile below. Applied (2026-11-22): a "
        "batch's entries kept as columns, HSET's arguments built by slicing, and projections "
        "the garbage collector does not track (its passes took a fifth of the decoding); "
        "the 80,000-item sync 1.18 -> 1.00 s (medians of 5, same run). What is left is the "
        "diff's own cost (a digest and an HSET of it per definition, about 0.1 s each at "
        "80,000) and the machine: a run of one route here varies by 20-40%.\n"
    )


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
    text = (
        "DVR-style costs one Redis round trip per definition, so its time is set by the "
        f"loopback round trip of the machine more than by parsing: {'; '.join(lines)}. "
    )
    if floor_fast_enough:
        return text + (
            "The floor is 10x faster than DVR-style here, so what loses the 10x is the "
            "engine's own work beyond the floor's: see the floor ratio above and the profile "
            "below.\n"
        )
    return text + (
        "Where even the floor (download, decode, pipelined HSET, nothing else) is not 10x "
        "faster than DVR-style, no route that writes the same data can be, short of beating "
        "the floor. DESIGN.md's machine measured ~16 s for DVR-style at 40,000 items (~400 us "
        "per definition), where the same engine is ~40x faster. Not a fix in the app: compare "
        "on a machine whose Redis round trip is a real network's.\n"
    )


def rss(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "Peak RSS that grows with the table means the body, or the decoded table, is held "
        "whole somewhere: `ingest.iter_json_table` must keep at most one slab (2 MiB) and its "
        "decoded structs, and `sync._write_all` at most one batch waiting for Redis. See the "
        "profile below for where the time goes, and `tracemalloc` for where the memory does.\n"
    )


def linear(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "Time per item that grows with the size means work that is not linear: a lookup in a "
        "growing structure per definition, or a slab cut that rescans the buffer. See the "
        "profile below; `ingest._cut_slab` and `TableWriter.write` are the usual suspects.\n"
    )


def share(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "Each release keeps the projected JSON of every definition and an 8-byte digest of it "
        "(for the diff), in two hashes. A hash of 40,000 fields is a hashtable: ~50 bytes of "
        "overhead per field. The digests' hash is ~12% of a release: split it into buckets of "
        "at most 128 fields (`hash-max-listpack-entries`), e.g. by `hash % 512`, and Redis "
        "keeps each bucket as a listpack at ~2 bytes of overhead a field, about 2 MiB less per "
        "40,000 items (in `store.TableWriter.write` and the diff's HMGET). Trimming "
        "`config.PROJECTIONS` saves in proportion to the bytes dropped.\n"
    )


# -- workload 2 -----------------------------------------------------------------------------


def swap_peak(target: dict[str, Any], figures: dict[str, Any]) -> str:
    projection = figures.get("projection", {})
    two = projection.get("peak_if_two", 0) / MB
    return (
        "During a sync Redis holds three releases: the live one, the previous one (kept for a "
        "rollback by pointer flip) and the one being staged. Applied: the previous release "
        "keeps its definitions but not its digests (`ManifestStore._flip` unlinks them when a "
        "release stops being live; a rollback works them out again), 100.9 -> 97.3 MB "
        f"projected ({PROTOTYPED}). What is left, if this is missed again: drop the previous "
        "release's definitions too before a build (under the lock, in `_Sync._build`), "
        f"{two:.1f} MB projected, at the price of a download if Bungie rolls back to it "
        "after that build failed; or shrink a release (see the share above).\n"
    )


def at_rest(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "At rest Redis holds the live and the previous release. Keeping only the live one's "
        "data (and the previous one's record) halves it, at the price of a download on a "
        "rollback; shrinking a release (see the share above) helps in proportion.\n"
    )


# -- workload 3 -----------------------------------------------------------------------------


def unchanged_time(target: dict[str, Any], figures: dict[str, Any]) -> str:
    summary = figures.get("summary", {})
    return (
        f"An unchanged sync sends {summary.get('commands_total', 0):g} Redis commands in "
        f"{summary.get('round_trips', 0):g} round trips around the one HTTP request. Applied "
        "so far: no lock for a check (1.74x -> 1.56x), then one round trip that both tells "
        '"unchanged" and records the check (`ManifestStore.glance` with `record_if_live`; '
        f"1.56x -> 1.36x, {PROTOTYPED}). What is left is work in this process around the "
        "request (decoding the envelope, digesting the content paths into the release id, "
        "encoding the check record); the step timings below show where.\n"
    )


def unchanged_requests(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "An unchanged sync must ask Bungie for the manifest only. More requests, or content "
        "bytes, mean the release id came out different although nothing changed: see "
        "`release.py` (the id digests the content paths of the tables and languages used) "
        "and the origin's request log.\n"
    )


# -- workload 4 -----------------------------------------------------------------------------


def trigger_ratio(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        f"Applied ({PROTOTYPED}): one round trip per trigger (a Lua script in "
        "`app/tickets.py` counts the request in its rate window and reads the lock holder, "
        "the ticket and the task's record), no session re-signed on every request, the "
        "progress page's links built once per process. Then (2026-11-22) the benchmark's own "
        "error: its session cookie still carried the sign-in flash, so every /updateManifest "
        "of the load showed it again and re-signed the session, which a browser (that keeps "
        "the cookie it is sent) never does; 48% -> 54%. Measured by process (CPU per "
        "request, gunicorn's workers / Redis): /healthz 350 / 0 us, the API trigger 610 / 50 "
        "us, the page trigger 810 / 55 us: the page's template and session make the rest. "
        "The round trip cannot go: every trigger counts itself in the rate window all "
        "processes share. A gthread worker class (`--threads 4`) would let a worker serve "
        "others while one waits for Redis: that changes the deployment, not the code.\n"
    )


def trigger_errors(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "Errors are answers other than 202 (API), 200 (page, /healthz) and 429, and "
        "requests that failed outright; the statuses and failures above say which. A 503 "
        "means Redis or the broker refused (`BrokerUnavailable`), a 500 an exception in the "
        "worker's log.\n"
    )


def syncs_started(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "More than one sync started means a trigger did not join the running or queued one: "
        "`tickets._request_sync` elects one trigger with `SET NX <p>:task` and the others "
        "must read it or the lock holder. None started means the first trigger's task never "
        "ran: see the worker.\n"
    )


# -- workload 5 -----------------------------------------------------------------------------


def page_ratio(target: dict[str, Any], figures: dict[str, Any]) -> str:
    label = target["scope"]
    applied = (
        "Applied on every page: reads start from the live release id kept in the process, "
        "which Redis says has moved (`CLIENT TRACKING`, `app/manifest/live.py`), so a read is "
        "just its `HMGET`s, with no read of the pointer; lists prepared in one call per list; "
        "links filled into patterns made once per process. "
    )
    costs = figures.get("round_trips", {})
    healthz_rps = figures.get("healthz", {}).get("rps") or 0
    floor = ""
    if costs and healthz_rps:
        whole = figures.get("cpus", 2) * 1e6 / healthz_rps
        spent = "; ".join(
            f"one {name}: {c['client_cpu_us'] + c['redis_cpu_us']:.0f} us of CPU "
            f"({c['client_cpu_us']:.0f} in the app, {c['redis_cpu_us']:.0f} in Redis)"
            for name, c in costs.items()
        )
        floor = (
            f"On this machine a Redis round trip is dear: {spent}, where a whole /healthz "
            f"request costs at most {whole:.0f} us of the machine's CPU "
            f"({figures.get('cpus', 2)} cores at {healthz_rps:.0f} requests/s). "
        )
    if "/items?q" in label:
        return applied + (
            "For this page also: a trigram index (`SearchIndex`; the search's median 780 -> "
            "7 us) that keeps what a result row shows, so the page reads nothing from Redis; "
            f"29% -> 45% on this machine ({MEASURED}). What is left is Jinja's work per row "
            "(about six escaped expressions) and the base template.\n"
        )
    if "per_page=200" in label:
        return (
            applied
            + floor
            + (
                "For this page also: the stored JSON is passed through (`msgspec.Raw`), never "
                "decoded and encoded again, and the body is encoded once, to bytes (Flask's JSON "
                "provider went through a str: 31-35% -> 39%, 2026-11-22). What is left is the "
                "one `HMGET` of 200 definitions "
                "(95 kB from Redis) and the 95 kB response (gunicorn writes it, the load "
                "generator reads it). What would fix it: keep definitions in each process, keyed "
                "by release (a committed release never changes, and the live pointer says when it "
                "moves). Not done: this workload reads every page of the table in turn, so only a "
                "cache of the whole item table (about 19 MB a process at 40,000 items) would serve "
                "it, which turns the shared Redis cache into a copy per process.\n"
            )
        )
    return (
        applied
        + floor
        + (
            "For this page also: the profile cache keeps the page as resolved against a release "
            "(one `GET` while it is live, nothing resolved), and one Bungie client per thread; "
            "the characters rendered once per process for the same characters (33% -> 45-52%, "
            "2026-11-22). What is left is the base template and the one `GET`.\n"
        )
    )


def search_p50(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "`store.search` looks a needle of three characters or more up in the names holding "
        "its rarest trigram, and scans every name (one joined string, `str.find`) for shorter "
        "ones (`SearchIndex`); it depends on how many names match and how busy the machine "
        "is. Profile the query mix above if it is missed again.\n"
    )


# -- workload 6 -----------------------------------------------------------------------------


def mixed(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "A read whose values match neither release it could have read is a broken invariant "
        "(DESIGN.md, invariant 1): the commit must flip `<p>:current` in one MULTI/EXEC "
        "after every key of the new release is written, and a read must take one release's "
        "keys only (`ManifestStore._read`). A swap not seen from both sides proves nothing: "
        "the reader must run across the commit.\n"
    )


def spike(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "A read slower than 50 ms while a sync runs means Redis was busy with one long "
        "command: a pipeline of large HSETs (`store.WRITE_BATCH`), or a DEL of a whole "
        "release where UNLINK belongs. The plot shows when the slow reads happened relative "
        "to the commit; both kinds of reader slow together if Redis is the cause, only one "
        "if the reader process itself paused.\n"
    )


EXPLAINERS: dict[str, Explainer] = {
    "engine time / floor time": floor_ratio,
    "dvr time / engine time": dvr_ratio,
    "engine peak RSS": rss,
    "engine peak RSS growth": rss,
    "engine time per item, largest size vs smaller": linear,
    "Redis footprint / raw JSON": share,
    "Redis footprint of a release / raw JSON": share,
    "projected Redis at rest (real manifest)": at_rest,
    "projected Redis during a swap": swap_peak,
    "HTTP requests per unchanged sync": unchanged_requests,
    "content bytes per unchanged sync": unchanged_requests,
    "unchanged sync / bare manifest GET": unchanged_time,
    "trigger requests/s / /healthz requests/s": trigger_ratio,
    "errors (429 apart)": trigger_errors,
    "syncs started": syncs_started,
    "page requests/s / /healthz requests/s": page_ratio,
    "store.search p50": search_p50,
    "reads that mixed two releases": mixed,
    "worst read latency during a swap": spike,
}
