"""Generic webhooks (`WEBHOOK_URLS`): a signed JSON body per release or alert, and the HTTP rules
every webhook-like destination shares (timeouts, 429 -> DeliveryThrottled, 5xx transient).

A receiver checks `X-Manifest-Signature-256` (HMAC-SHA256 of "<timestamp>.<raw body>" with
`WEBHOOK_SECRET`) and refuses stale timestamps: see README, "Webhooks".
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec
import requests

from app.manifest import changes
from app.notify.destinations import AlertNews
from app.notify.destinations import Delivery
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryThrottled
from app.notify.destinations import ReleaseNews

RELEASE = "release"
EVENT_HEADER = "X-Manifest-Event"
DELIVERY_HEADER = "X-Manifest-Delivery"
TIMESTAMP_HEADER = "X-Manifest-Timestamp"
SIGNATURE_HEADER = "X-Manifest-Signature-256"
USER_AGENT = "manifest-syncer-webhook/1"
CHANGES_LISTED = 20
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# A 429 that says nothing of when to come back is retried after this long.
DEFAULT_RETRY_AFTER = 30.0
# What is read of an answer (an error's detail, a 429's retry_after): a receiver's body is not
# ours to hold whole.
ANSWER_BYTES = 64 * 1024
DETAIL_CHARS = 200
# Delivery ids are UUIDs derived from what they deliver, so a payload built again for the same
# news (a later check queueing it anew) carries the same id and a receiver can drop it.
_DELIVERY_IDS = uuid.UUID("8f5d3c1e-2b7a-5e64-9c0d-6a1f4b2e7d93")
_CHECK_FIELDS = ("at", "outcome", "error", "message", "transient")


# -- the body -----------------------------------------------------------------------------


def url_id(url: str) -> str:
    """Return a short, stable id of a URL that tells nothing of it (the URL may hold a token)."""
    return hashlib.sha256(url.encode()).hexdigest()[:8]


def delivery_id(name: str, event: str, key: str) -> str:
    """Return the id of one delivery: the same destination, event and news give the same id."""
    return str(uuid.uuid5(_DELIVERY_IDS, f"{name}/{event}/{key}"))


def release_body(name: str, news: ReleaseNews, listed: int = CHANGES_LISTED) -> dict[str, Any]:
    """Build the JSON body of a release: who, counts per table and kind, the first changes.

    The changes are the change log's records as they are (field paths, old and new values), in
    its order, each with its page; the rest is at `links.changes` (the change-log API).
    """
    entry = news.entry
    counts = {
        d["table"]: {kind: int(d.get(kind) or 0) for kind in changes.KINDS}
        for d in entry.get("diff") or []
    }
    totals = {kind: sum(c[kind] for c in counts.values()) for kind in changes.KINDS}
    first = [
        {**change, "url": news.page_url(change["table"], change["hash"])}
        for change in news.changes[:listed]
    ]
    log = entry.get("changes") or {}
    return {
        "event": RELEASE,
        "delivery": delivery_id(name, RELEASE, f"{entry['id']}/{entry.get('at')}"),
        "release_id": entry["id"],
        "version": entry.get("version"),
        "previous_release_id": entry.get("previous"),
        "previous_version": entry.get("previous_version"),
        "rollback": bool(entry.get("rollback")),
        "at": entry.get("at"),
        "counts": counts,
        "totals": totals,
        "changes": first,
        "changes_total": len(news.changes),
        "changes_cut": int(log.get("cut") or 0),
        "links": {"release": news.release_url, "changes": news.changes_api_url},
    }


def alert_body(name: str, alert: AlertNews) -> dict[str, Any]:
    """Build the JSON body of a trouble or recovered alert."""
    return {
        "event": alert.kind,
        "delivery": delivery_id(name, alert.kind, str(alert.since)),
        "since": alert.since,
        "message": alert.message,
        "check": {key: alert.check[key] for key in _CHECK_FIELDS if key in alert.check},
        "links": {"dashboard": alert.dashboard_url},
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return the signature header's value: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# -- sending (shared with Discord) --------------------------------------------------------


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    who: str,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
) -> None:
    """POST `body` to `url`; return once a 2xx came back, else raise DeliveryThrottled/Failed.

    Messages name `who`, never the URL (it may hold a token): requests' own exceptions do,
    so they are replaced, not chained.
    """
    try:
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout:
        raise DeliveryFailed(f"{who} did not answer in time") from None
    except requests.ConnectionError:
        raise DeliveryFailed(f"{who} could not be reached") from None
    except requests.RequestException as exc:
        # An invalid URL or the like: the setting is wrong, retrying will not help.
        raise DeliveryFailed(f"{who}: {type(exc).__name__}", transient=False) from None
    with response:
        check_answer(response, who, url)


def check_answer(response: requests.Response, who: str, url: str) -> None:
    """Return for a 2xx; raise DeliveryThrottled for a 429 and DeliveryFailed otherwise."""
    status = response.status_code
    if 200 <= status < 300:
        return
    raw = _read_some(response)
    if status == 429:
        raise DeliveryThrottled(retry_after(raw, response.headers), f"{who} answered HTTP 429")
    detail = _detail(raw, url)
    message = f"{who} answered HTTP {status}" + (f": {detail}" if detail else "")
    # A request timeout is the receiver's trouble; any other 4xx (or a redirect) refuses the
    # payload or the URL for good.
    raise DeliveryFailed(message, transient=status >= 500 or status == 408)


def retry_after(raw: bytes, headers: Mapping[str, str]) -> float:
    """Return how long a 429 asks to wait, in seconds: the JSON body's `retry_after` (Discord's,
    a float), else the `Retry-After` header (seconds or an HTTP date), else a default."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = None
    wait = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait >= 0:
        return float(wait)
    header = (headers.get("Retry-After") or "").strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return DEFAULT_RETRY_AFTER


def _read_some(response: requests.Response) -> bytes:
    try:
        return response.raw.read(ANSWER_BYTES, decode_content=True) or b""
    except (requests.RequestException, OSError, ValueError):
        return b""


def _detail(raw: bytes, url: str) -> str:
    """Return what an error answer says, short, printable, and without our URL in it."""
    text = raw.decode("utf-8", "replace").replace(url, "<url>")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


# -- the delivery -------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookDelivery:
    """One of `WEBHOOK_URLS`: posts signed JSON bodies. Its name is `webhook:<url_id>`, so
    logs and the dashboard never show the URL, and the name stays when the list is reordered."""

    url: str = field(repr=False)
    secret: str = field(repr=False)
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)
    listed: int = CHANGES_LISTED

    @property
    def name(self) -> str:
        """Return `webhook:<8 hex digits of the URL's SHA-256>`."""
        return f"webhook:{url_id(self.url)}"

    def release_payload(self, release: ReleaseNews) -> dict[str, Any]:
        """Return the body of a release (signed when sent: a retry gets a fresh timestamp)."""
        return release_body(self.name, release, self.listed)

    def alert_payload(self, alert: AlertNews) -> dict[str, Any]:
        """Return the body of a trouble or recovered alert."""
        return alert_body(self.name, alert)

    def send(self, payload: Any) -> None:
        """Sign `payload` now and post it; raise DeliveryThrottled or DeliveryFailed."""
        body = msgspec.json.encode(payload)
        timestamp = str(int(time.time()))
        headers = {
            EVENT_HEADER: str(payload["event"]),
            DELIVERY_HEADER: str(payload["delivery"]),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self.secret, timestamp, body),
        }
        post(self.url, body, headers, self.name, self.timeout)


def deliveries(config: Mapping[str, Any]) -> list[Delivery]:
    """Return one delivery per URL of `WEBHOOK_URLS` (comma-separated; none: webhooks are off).

    Raises ValueError when URLs are set without `WEBHOOK_SECRET`: an unsigned body would let
    anyone who finds a receiver's URL pass for this app.
    """
    raw = config.get("WEBHOOK_URLS") or ""
    listed = raw.split(",") if isinstance(raw, str) else list(raw)
    urls = list(dict.fromkeys(str(url).strip() for url in listed if str(url).strip()))
    if not urls:
        return []
    secret = config.get("WEBHOOK_SECRET")
    if not secret:
        raise ValueError("WEBHOOK_URLS is set but WEBHOOK_SECRET is not: bodies must be signed")
    read = float(config.get("WEBHOOK_TIMEOUT") or READ_TIMEOUT)
    timeout = (min(CONNECT_TIMEOUT, read), read)
    count = int(config.get("WEBHOOK_CHANGES_LISTED") or CHANGES_LISTED)
    return [WebhookDelivery(url, str(secret), timeout, count) for url in urls]
