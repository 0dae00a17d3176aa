"""What each web process counts itself: triggers by outcome, rate-limit refusals, requests.

Under gunicorn (gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker imports
prometheus_client) each worker writes its counts to a file of its own in that folder and a
scrape adds every worker's up; without the variable (flask run, tests) they live in this
process's default registry. Every label comes from a closed set, so the series stay few.
"""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client import values

# prometheus_client chose how values are kept (files or memory) when it was first imported,
# from PROMETHEUS_MULTIPROC_DIR: a scrape asks it which, and reads the same place.
MULTIPROCESS = values.ValueClass is not values.MutexValue

TRIGGERS = ("web", "dashboard", "api", "players", "beat", "cli", "manual")
TRIGGER_OUTCOMES = ("queued", "joined", "rate_limited", "refused")
# The rate limits (app/auth.py): sync triggers, sign-in attempts per client and per account
# named, player lookups.
LIMITS = ("trigger", "login", "login_account", "players")
OTHER = "other"

triggers = Counter(
    "manifest_triggers",
    "Requests for a sync made through this app's web processes (pages, API, player pages), by "
    "what asked and what came of it: queued a new sync, joined the one queued or running, "
    "refused by the rate limit, or refused because Redis or the broker did not answer.",
    ["trigger", "outcome"],
)
rate_limited = Counter(
    "manifest_rate_limited",
    "Requests answered 429 by a rate limit, by limit: trigger (sync triggers per client), "
    "login (sign-in attempts per client), login_account (per account named), players "
    "(player lookups).",
    ["what"],
)
http_requests = Counter(
    "manifest_http_requests",
    "HTTP requests the web processes answered, by route (Flask endpoint; none: no route "
    "matched) and status code.",
    ["endpoint", "status"],
)


def closed(value: str, known: tuple[str, ...]) -> str:
    """Return `value` when it is one of `known`, else "other": labels stay a closed set."""
    return value if value in known else OTHER


def count_trigger(trigger: str, outcome: str) -> None:
    """Count one request for a sync and what came of it."""
    triggers.labels(closed(trigger, TRIGGERS), closed(outcome, TRIGGER_OUTCOMES)).inc()


def count_rate_limited(what: str) -> None:
    """Count one request refused by the rate limit `what`."""
    rate_limited.labels(closed(what, LIMITS)).inc()


def count_request(endpoint: str | None, status: int) -> None:
    """Count one answered HTTP request (endpoints are the app's own routes: a closed set)."""
    http_requests.labels(endpoint or "none", str(status)).inc()
