"""Talk to Bungie: the manifest endpoint (with the API key) and content downloads (without it)."""

from __future__ import annotations

import email.utils
import logging
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import msgspec
import requests
import urllib3.exceptions

from app.manifest import errors
from app.manifest.settings import ManifestSettings

log = logging.getLogger(__name__)

MANIFEST_PATH = "/Platform/Destiny2/Manifest/"
CONTENT_PREFIX = "/common/destiny2_content/"
# Content paths come from a remote response: only plain relative paths below CONTENT_PREFIX.
# No scheme, host, userinfo (@), query, fragment, percent-escapes or backslashes can pass.
_SAFE_CONTENT_PATH = re.compile(r"/common/destiny2_content/[A-Za-z0-9_\-./]+")
_CHUNK_SIZE = 1024 * 1024
_OUTAGE_RETRY_AFTER = 60.0
# The Bungie error codes a request is counted under by their number; any other is "other", so
# the labels /metrics shows stay a closed set whatever a response says.
_COUNTED_CODES = frozenset(
    {errors.SUCCESS, errors.SYSTEM_DISABLED, *errors.THROTTLE_CODES, *errors.CONFIG_CODES}
)

# What one request to Bungie is counted as: (kind: "api" or "content", HTTP status or "none"
# when no answer came, Bungie's ErrorCode or "none" when the body was no envelope).
RequestKind = tuple[str, str, str]


def request_kind(kind: str, status: int | None, error_code: object = None) -> RequestKind:
    """Return the closed labels one request is counted under."""
    shown_status = str(status) if status is not None and 100 <= status <= 599 else "none"
    if error_code is None:
        code = "none"
    elif type(error_code) is int and error_code in _COUNTED_CODES:
        code = str(error_code)
    else:
        code = "other"
    return kind, shown_status, code


def content_url(base_url: str, path: object) -> str:
    """Join a content path from Bungie to `base_url`, refusing anything but a plain content path."""
    if (
        not isinstance(path, str)
        or not _SAFE_CONTENT_PATH.fullmatch(path)
        or "//" in path
        or any(part in {".", ".."} for part in path.split("/"))
    ):
        shown = repr(path)[:120]
        raise errors.UnsafeContentPath(f"Refusing content path {shown} from Bungie's manifest")
    url = base_url.rstrip("/") + path
    if urlsplit(url).netloc != urlsplit(base_url).netloc:
        raise errors.UnsafeContentPath(f"Content path {path[:120]!r} leaves {base_url}")
    return url


def parse_retry_after(value: str | None) -> float | None:
    """Return the seconds a Retry-After header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class BungieClient:
    """Bungie's /Platform endpoints and content files, with timeouts, retries and typed errors."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        max_retry_wait: float = 30.0,
        max_bytes: int = 512 * 1024 * 1024,
        download_deadline: float = 600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.session = session or requests.Session()
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_retry_wait = max_retry_wait
        self.max_bytes = max_bytes
        self.download_deadline = download_deadline
        # Every request made, by kind: counted here, in memory, and handed over by
        # take_requests() to whoever reports them (a sync task: once per sync, not per request).
        self.requests: Counter[RequestKind] = Counter()

    @classmethod
    def from_settings(
        cls, settings: ManifestSettings, session: requests.Session | None = None
    ) -> BungieClient:
        """Build a client from the engine's settings."""
        return cls(
            settings.base_url,
            settings.api_key,
            session=session,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries=settings.retries,
            backoff_seconds=settings.backoff_seconds,
            max_retry_wait=settings.max_retry_wait,
            max_bytes=settings.max_bytes,
            download_deadline=settings.download_deadline,
        )

    def __repr__(self) -> str:
        # Never show the key, not even in a debugger or a traceback's locals.
        return f"<BungieClient {self.base_url}>"

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def take_requests(self) -> Counter[RequestKind]:
        """Return the requests counted since the last call, and start counting afresh."""
        taken, self.requests = self.requests, Counter()
        return taken

    # -- the API ---------------------------------------------------------------------------

    def get_manifest(self) -> dict[str, Any]:
        """Return the `Response` of GET /Platform/Destiny2/Manifest/, or raise a BungieError."""
        if not self._api_key:
            raise errors.BungieConfigError("BUNGIE_API_KEY is not set", error_code=2102)
        return self.get_platform(MANIFEST_PATH)

    def get_platform(self, path: str) -> Any:
        """GET a /Platform path with the API key; unwrap Bungie's envelope or raise its error."""
        return self._call("GET", path)

    def post_platform(self, path: str, body: Any) -> Any:
        """POST `body` as JSON to a /Platform path, unwrapped like get_platform.

        Retried like a GET: only for requests that read, such as Bungie's searches.
        """
        return self._call("POST", path, json=body)

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        """Send one API request, retrying outages; return the envelope's Response or raise."""
        url = self.base_url + path
        last: errors.BungieUnavailable | None = None
        wait: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt, wait)
            wait = None
            try:
                response = self.session.request(
                    method,
                    url,
                    headers={"X-API-Key": self._api_key or "", "Accept": "application/json"},
                    json=json,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                self.requests[request_kind("api", None)] += 1
                last = errors.BungieOutage(
                    f"Could not reach Bungie at {self.base_url} ({type(exc).__name__})",
                    retry_after=_OUTAGE_RETRY_AFTER,
                )
                continue
            with response:
                try:
                    return self._unwrap(response)
                except errors.BungieOutage as exc:
                    last = exc
                except errors.BungieThrottled as exc:
                    # An HTTP 429 asking for a short wait is waited out here; a long one, or
                    # an envelope throttle code, goes back to the caller to schedule.
                    if response.status_code != 429 or (exc.retry_after or 0) > self.max_retry_wait:
                        raise
                    last, wait = exc, exc.retry_after
        assert last is not None
        raise last

    def _unwrap(self, response: requests.Response) -> Any:
        status = response.status_code
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            body = None
        code = body.get("ErrorCode") if isinstance(body, dict) else None
        self.requests[request_kind("api", status, code)] += 1
        if isinstance(body, dict) and "ErrorCode" in body:
            return self._unwrap_envelope(body)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After")) or 1.0
            raise errors.BungieThrottled(
                f"Bungie answered HTTP 429 Too Many Requests (retry after {retry_after:.0f}s)",
                retry_after=retry_after,
            )
        if isinstance(body, dict) and "error" in body:
            detail = str(body.get("error_description") or body["error"])[:200]
            raise errors.BungieOutage(
                f"Bungie answered HTTP {status} with an error body: {detail}",
                retry_after=_OUTAGE_RETRY_AFTER,
            )
        kind = "an HTML page" if b"<html" in response.content[:2048].lower() else "no JSON"
        raise errors.BungieOutage(
            f"Bungie answered HTTP {status} with {kind} instead of its API envelope",
            retry_after=_OUTAGE_RETRY_AFTER,
        )

    @staticmethod
    def _unwrap_envelope(body: dict[str, Any]) -> Any:
        code = body.get("ErrorCode")
        status = str(body.get("ErrorStatus") or "")
        message = str(body.get("Message") or status)[:300]
        throttle = float(body.get("ThrottleSeconds") or 0)
        if code == errors.SUCCESS:
            return body.get("Response")
        if code == errors.SYSTEM_DISABLED:
            raise errors.BungieMaintenance(
                f"Bungie's API is down for maintenance: {message}",
                retry_after=max(throttle, _OUTAGE_RETRY_AFTER),
                error_code=code,
                status=status,
            )
        if code in errors.THROTTLE_CODES:
            raise errors.BungieThrottled(
                f"Bungie is throttling this app ({status}): retry after {throttle:.0f}s",
                retry_after=max(throttle, 1.0),
                error_code=code,
                status=status,
            )
        if code in errors.CONFIG_CODES:
            raise errors.BungieConfigError(
                f"Bungie refused the API key ({status}): {message}", error_code=code, status=status
            )
        raise errors.BungieError(
            f"Bungie answered ErrorCode {code} {status}: {message}", error_code=code, status=status
        )

    def _pause(self, attempt: int, wait: float | None) -> None:
        backoff = self.backoff_seconds * 2 ** (attempt - 1)
        delay = max(wait or 0.0, backoff * random.uniform(0.5, 1.5))
        time.sleep(min(delay, self.max_retry_wait))

    # -- content ---------------------------------------------------------------------------

    def download(self, path: str) -> ContentDownload:
        """Open a content file for streaming; iterate the result for its bytes, then close it."""
        url = content_url(self.base_url, path)
        deadline = time.monotonic() + self.download_deadline
        return ContentDownload(self, path, self._open_content(url, path), deadline)

    def _open_content(self, url: str, path: str) -> requests.Response:
        # A 404 right after a release can be an error cached by the CDN: ask once more with a
        # query string the CDN has never seen.
        for target in (url, f"{url}?cb={secrets.token_hex(6)}"):
            response = self._get_content(target, path)
            if response.status_code == 404:
                response.close()
                continue
            if response.is_redirect or 300 <= response.status_code < 400:
                response.close()
                raise errors.ContentRedirected(
                    f"{path} answered a redirect (HTTP {response.status_code}); not followed"
                )
            if response.status_code != 200:
                response.close()
                raise errors.ContentUnavailable(f"{path} answered HTTP {response.status_code}")
            return response
        raise errors.ContentNotFound(f"{path} answered 404, also with a cache-busting query")

    def _get_content(self, url: str, path: str) -> requests.Response:
        wait: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt, wait)
            try:
                # No API key here: content is public and may be served by a CDN.
                response = self.session.get(
                    url, timeout=self.timeout, stream=True, allow_redirects=False
                )
            except requests.RequestException as exc:
                self.requests[request_kind("content", None)] += 1
                failure = f"could not be fetched ({type(exc).__name__})"
                continue
            self.requests[request_kind("content", response.status_code)] += 1
            if response.status_code == 429 or response.status_code >= 500:
                wait = parse_retry_after(response.headers.get("Retry-After"))
                failure = f"answered HTTP {response.status_code}"
                response.close()
                continue
            return response
        raise errors.ContentUnavailable(f"{path} {failure} after {self.retries + 1} attempts")


class ContentDownload:
    """One content file being streamed: its declared size, the bytes so far, and the checks."""

    def __init__(
        self, client: BungieClient, path: str, response: requests.Response, deadline: float
    ) -> None:
        self.path = path
        self._client = client
        self._response = response
        self._deadline = deadline
        declared = response.headers.get("Content-Length", "")
        self.size: int | None = int(declared) if declared.isdigit() else None
        self.received = 0
        if self.size is not None and self.size > client.max_bytes:
            response.close()
            raise errors.ContentTooLarge(
                f"{path} is {self.size:,} bytes, over MANIFEST_MAX_BYTES ({client.max_bytes:,})"
            )

    def __enter__(self) -> ContentDownload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (also when the download was not read to its end)."""
        self._response.close()

    def __iter__(self) -> Iterator[bytes]:
        """Yield the body as it arrives, within the size cap and the deadline."""
        limit = self._client.max_bytes
        raw = self._response.raw
        raw.decode_content = True
        try:
            # read1 returns whatever has arrived, so a slow drip meets the deadline check.
            while chunk := raw.read1(_CHUNK_SIZE):
                self.received += len(chunk)
                if self.received > limit:
                    raise errors.ContentTooLarge(
                        f"{self.path} passed MANIFEST_MAX_BYTES ({limit:,} bytes)"
                    )
                if time.monotonic() > self._deadline:
                    raise errors.DownloadDeadlineExceeded(
                        f"{self.path} took longer than "
                        f"{self._client.download_deadline:.0f}s to download"
                    )
                yield chunk
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise errors.ContentTruncated(
                f"{self.path} broke off while downloading ({type(exc).__name__})"
            ) from exc
        finally:
            self.close()
        encoded = self._response.headers.get("Content-Encoding", "identity") != "identity"
        if self.size is not None and not encoded and self.received != self.size:
            raise errors.ContentTruncated(
                f"{self.path} ended after {self.received:,} of {self.size:,} bytes"
            )
