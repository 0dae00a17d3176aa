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
        "at the fixed steps of `sync.run`: see the profile below.\n"
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
        "rollback by pointer flip) and the one being staged; `ManifestStore._flip` drops the "
        "previous one only at the commit. The previous release is not needed once a new one "
        "is being built: a rollback to it is detected before `_build` (the flip-back path), "
        "and readers read the live release atomically.\n\n"
        "Fix, in `app/manifest/sync.py`, `_Sync._build`: before `self.store.stage(release)`, "
        "drop the data of every kept release but the live one (a new `ManifestStore` method "
        "doing what `_flip` does for `drop`: ZREM from `<p>:releases`, UNLINK the data keys "
        "and the release record, under the lock). Expected: the peak falls from three "
        f"releases to two, {two:.1f} MB projected. A prototype of exactly this measured "
        f"78.1 -> 52.3 MB at the commit of the third release ({PROTOTYPED}). The cost: if "
        "that build fails and Bungie then rolls back to the dropped release, it is downloaded "
        "again instead of flipped to.\n"
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
        f"{summary.get('round_trips', 0):g} round trips around the one HTTP request. That is "
        "already the applied fix of this workload's first miss (1.74x): the check takes no "
        'lock, decides "unchanged" from one pipelined read (`ManifestStore.glance`: the '
        "live id, the last check, the candidate's counts) and records the check in one more "
        "round trip, where it made 6 round trips and decoded the whole live release before.\n\n"
        "What is left is work in this process around the request (decoding the envelope, "
        "digesting the content paths into the release id, encoding the check record), about "
        "half a millisecond; the step timings below show where. Not profiled further: "
        "moving the check record to a fire-and-forget write would save one round trip.\n"
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
        "With gunicorn's sync workers a worker waits, idle, through every Redis round trip, "
        "so round trips cost throughput well beyond their CPU time. A trigger takes 2 (API: "
        "the rate limit's MULTI/INCR/EXPIRE/EXEC, then `GET <p>:lock`) or 3 (page: the same, "
        "then `known_task`'s GET); the page also re-signs the session cookie on every request "
        "(Flask refreshes permanent sessions) and renders a template with a dozen `url_for`. "
        "See the in-process profiles below.\n\n"
        "Fixes, by expected gain:\n\n"
        "1. One round trip per trigger: a Lua script in `app/tickets.py` that does the rate "
        "limit's INCR/EXPIRE, reads the lock holder, else the queued task, and that task's "
        'record, called from `auth.limit` for the "trigger" bucket; `_request_sync` and '
        "`known_task` use what it returned (through `flask.g`) instead of reading again. "
        "Measured in process with a prototype "
        f"({PROTOTYPED}): API 562 -> 411 us, page 1067 -> 739 us.\n"
        "2. `SESSION_REFRESH_EACH_REQUEST = False` in `config.Config` (the session still "
        "expires after PERMANENT_SESSION_LIFETIME from sign-in): page 739 -> 660 us on top "
        "of (1).\n"
        "3. In `progress.html` and `base.html`, build the links once per process (they do "
        "not depend on the request) instead of calling `url_for` a dozen times a page.\n\n"
        "Served, a prototype of (1) and (2) measured 37% and 46% in two runs where the app "
        f"as it is measured 37% and 38% ({PROTOTYPED}): a real gain, but within this "
        "machine's noise (the app as it is has measured from 31% to 45% here, run to run, "
        "as Redis round trips slow down with whatever else the machine runs). 50% needs "
        "a trigger's whole cost, HTTP included, under twice /healthz's: beyond (1)-(3), a "
        "gthread worker class (`--threads 4`) would let a worker serve others "
        "while one request waits for Redis; that changes the deployment, not just the code.\n"
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
    if "/items?q" in label:
        return (
            "Applied: the search index is now one joined string of names searched with `str.find`"
            " and `bisect` (`SearchIndex` in `app/manifest/store.py`; `store.search` p50 0.87 ms,"
            " was 8 ms), which took this page from 4% to 17% of /healthz served. What is left is "
            "the template: 50 rows, each with `item_facts` and a `url_for`, about 1.5 ms (profile"
            " below), and two Redis round trips (the live id, then the lookup). Next steps: build"
            " the item link from one `url_for` with a placeholder, compute the image base once "
            "per page, fewer rows a page. "
        )
    if "per_page=200" in label:
        return (
            "Applied: the search index above (an empty query slices the hashes directly) and a "
            "JSON provider on msgspec (`app/jsonprovider.py`), which took this page from 3% to "
            "18% of /healthz served. Past that, the cost is the 200 values' round trip and "
            "decoding, and the response's size: sending the stored JSON through without decoding "
            "and re-encoding it would save the rest of the JSON work. "
        )
    return (
        "The player's page renders every equipped item of every character (10 slots each), "
        "each with `bungie_image` (a configuration lookup) and a `url_for`: the template is "
        "most of its time (see its profile below), the round trips (the cached profile, the "
        "one lookup) the rest. Building the item link from one `url_for` per page (a "
        "placeholder replaced per item, as the progress page already does) and the image "
        "base once per page are the first steps.\n"
    )


def search_p50(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "`store.search` finds names with `str.find` over one joined string of the release's "
        "names (`SearchIndex`); it depends on how many names match and how busy the machine "
        "is. Profile the query mix above if it is missed again.\n"
    )


# -- workload 6 -----------------------------------------------------------------------------


def mixed(target: dict[str, Any], figures: dict[str, Any]) -> str:
    return (
        "A read whose values match neither release it could have read is a broken invariant "
        "(DESIGN.md, invariant 1): the commit must flip `<p>:current` in one MULTI/EXEC "
        "after every key of the new release is written, and `store.lookup` must resolve the "
        "pointer and read in one script. A swap not seen from both sides proves nothing: "
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
