"""GET /metrics: every figure in Prometheus' text format, behind METRICS_TOKEN when it is set;
and the count of every request the web process answers."""

from __future__ import annotations

import hmac

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client import multiprocess

from app.extensions import get_keys
from app.extensions import get_redis
from app.metrics import counters
from app.metrics.collector import CacheFigures
from app.notify import policy

bp = Blueprint("metrics", __name__)

# A figure is true the moment it is read: no cache, no proxy, keeps one.
NOT_KEPT = {"Cache-Control": "no-store"}


@bp.get("/metrics")
def metrics() -> Response:
    """Answer every figure: the web processes' own counts, and what Redis holds."""
    if not _authorised():
        return Response(
            "Send Authorization: Bearer <METRICS_TOKEN>.\n",
            401,
            {**NOT_KEPT, "WWW-Authenticate": 'Bearer realm="metrics"'},
            mimetype="text/plain",
        )
    registry = CollectorRegistry(auto_describe=False)
    if counters.MULTIPROCESS:
        # Every gunicorn worker's counts, added up from the files they write.
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(CacheFigures(get_redis(), get_keys(), policy.destination_states))
    headers = {**NOT_KEPT, "Content-Type": CONTENT_TYPE_LATEST}
    return Response(generate_latest(registry), headers=headers)


def _authorised() -> bool:
    """Say whether the request may read the figures: no METRICS_TOKEN set, or it carries it."""
    expected = current_app.config.get("METRICS_TOKEN")
    if not expected:
        return True
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        sent.strip().encode(), expected.encode()
    )


@bp.after_app_request
def count_request(response: Response) -> Response:
    """Count every answered request by route and status."""
    rule = request.url_rule
    counters.count_request(rule.endpoint if rule is not None else None, response.status_code)
    return response
