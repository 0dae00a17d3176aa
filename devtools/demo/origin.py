"""The demo origin's HTTP server: Bungie's manifest, player search and profiles, content files,
faults, an admin API.

One process, many threads: requests are served concurrently, and the origin's state (the
current generation, active faults, the request log) changes only under a lock.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from typing import BinaryIO
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import msgspec

from devtools.demo.data import CONTENT_PREFIX
from devtools.demo.data import ITEM_CHANGES
from devtools.demo.data import ITEM_TABLE
from devtools.demo.data import PROFILE_COMPONENTS
from devtools.demo.data import TABLES
from devtools.demo.data import ContentFile
from devtools.demo.data import DemoData
from devtools.demo.data import Generation

log = logging.getLogger(__name__)

MANIFEST_PATH = "/Platform/Destiny2/Manifest/"
SEARCH_PATH = re.compile(r"/Platform/Destiny2/SearchDestinyPlayerByBungieName/([^/]+)/?")
PROFILE_PATH = re.compile(r"/Platform/Destiny2/([^/]+)/Profile/([^/]+)/?")
ALL_MEMBERSHIPS = -1
MAX_SEARCH_BODY = 64 * 1024
ADMIN_PREFIX = "/_demo/"
ELSEWHERE_PREFIX = "/elsewhere"
EVIL_HOST = "evil.example.com"

# Faults that replace the answer of every /Platform endpoint, checked in this order.
MANIFEST_FAULTS = (
    "maintenance",
    "html_503",
    "http_500",
    "http_429",
    "oauth_error",
    "throttle",
    "bad_api_key",
)
# Faults that change the content paths the manifest advertises.
PATH_FAULTS = (
    "absolute_path",
    "protocol_relative_path",
    "dotdot_path",
    "encoded_dot_path",
    "at_path",
    "shrunk",
    "bad_json",
    "bad_key",
    "sqlite_view_bomb",
)
# Path faults that swap in another copy of one table (a whole table: they need one).
_TABLE_FAULTS = ("shrunk", "bad_json", "bad_key", "sqlite_view_bomb")
# Faults of content requests, checked in this order (the first that applies wins).
CONTENT_FAULTS = (
    "not_found_always",
    "not_found",
    "redirect",
    "oversized",
    "oversized_chunked",
    "truncated",
    "slow_drip",
)
FAULTS = MANIFEST_FAULTS + PATH_FAULTS + CONTENT_FAULTS

# Each fault's options and their defaults; None means "not set".
_FAULT_OPTIONS: dict[str, dict[str, Any]] = {
    **{name: {} for name in MANIFEST_FAULTS},
    "maintenance": {"throttle_seconds": 30},
    "throttle": {"throttle_seconds": 2},
    "http_429": {"retry_after": 1},
    **{name: {"table": None} for name in PATH_FAULTS + CONTENT_FAULTS},
    **{name: {"table": ITEM_TABLE} for name in _TABLE_FAULTS},
    "slow_drip": {"chunk": 1024, "delay": 0.5, "table": None},
}

_HOSTILE_PATHS: dict[str, Callable[[str], str]] = {
    "absolute_path": lambda path: f"https://{EVIL_HOST}{path}",
    "protocol_relative_path": lambda path: f"//{EVIL_HOST}{path}",
    "dotdot_path": lambda path: "/common/destiny2_content/../../../etc/passwd",
    "encoded_dot_path": lambda path: "/common/destiny2_content/%2e%2e/%2e%2e/secret.json",
    "at_path": lambda path: f"/common/destiny2_content@{EVIL_HOST}/x.json",
}

STREAM_CHUNK = 256 * 1024
OVERSIZED_LENGTH = 8 * 1024**3
OVERSIZED_LIMIT = 1024**3
REQUEST_LOG_LENGTH = 10_000
MAX_ADMIN_BODY = 1024 * 1024

JSON_TYPE = "application/json; charset=utf-8"
HTML_503 = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head><body>"
    b"<h1>Service Unavailable</h1><p>The server is temporarily unable to service your request"
    b" due to maintenance downtime or capacity problems. Please try again later.</p><hr>"
    b"<p>Reference&#32;&#35;18&#46;5e3b1402&#46;1732216800&#46;demo</p></body></html>\n"
)


ICON_PREFIX = "/common/destiny2_content/icons/"
_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">'
    '<rect width="96" height="96" rx="8" fill="#{background}"/>'
    '<path d="M48 14 L80 48 L48 82 L16 48 Z" fill="none" stroke="#{foreground}" stroke-width="6"/>'
    '<circle cx="48" cy="48" r="{radius}" fill="#{foreground}"/></svg>'
)


def icon_reply(path: str) -> Reply:
    """Draw the icon at `path`: a small SVG whose colours and shape follow from its name."""
    digest = hashlib.md5(path.encode(), usedforsecurity=False).hexdigest()
    svg = _ICON.format(
        background=digest[:6], foreground=digest[6:12], radius=8 + int(digest[12], 16)
    )
    return Reply(200, svg.encode(), "image/svg+xml", {"Cache-Control": "public, max-age=86400"})


class AdminError(ValueError):
    """Bad input to the admin API (answered with HTTP 400)."""


@dataclass
class Fault:
    """An active fault: how many more times it fires (None: until cleared) and its options."""

    name: str
    count: int | None
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "options": dict(self.options)}


@dataclass(frozen=True)
class Reply:
    """A complete small HTTP answer."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContentPlan:
    """How to answer a content request: a file, maybe with a fault shaping the answer."""

    file: ContentFile | None = None
    reply: Reply | None = None
    mode: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def envelope(
    error_code: int,
    status: str,
    message: str,
    *,
    response: Any = None,
    throttle_seconds: int = 0,
) -> bytes:
    """Encode a Bungie API envelope."""
    body: dict[str, Any] = {}
    if response is not None:
        body["Response"] = response
    body.update(
        {
            "ErrorCode": error_code,
            "ThrottleSeconds": throttle_seconds,
            "ErrorStatus": status,
            "Message": message,
            "MessageData": {},
        }
    )
    return msgspec.json.encode(body)


def parse_fault(body: Mapping[str, Any]) -> Fault:
    """Validate an admin fault request (`{"name": ..., "count": N or null, ...options}`)."""
    name = body.get("name")
    if name not in _FAULT_OPTIONS:
        raise AdminError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    count = body.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise AdminError("count must be a positive whole number, or null for a persistent fault")
    defaults = _FAULT_OPTIONS[name]
    options = dict(defaults)
    for key, value in body.items():
        if key in ("name", "count"):
            continue
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise AdminError(f"fault {name} has no option {key!r} (options: {allowed})")
        options[key] = _check_option(key, value)
    if name in _TABLE_FAULTS and options["table"] is None:
        raise AdminError(f"fault {name} needs a table")
    return Fault(name, count, options)


def _check_option(key: str, value: Any) -> Any:
    if key == "table":
        if value is not None and value not in TABLES:
            raise AdminError(f"unknown table {value!r}")
        return value
    if key == "delay":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise AdminError("delay must be a number of seconds, 0 or more")
        return float(value)
    minimum = 1 if key == "chunk" else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AdminError(f"{key} must be a whole number, {minimum} or more")
    return value


class DemoOrigin:
    """The origin's state: its generations, active faults and request log, behind one lock."""

    def __init__(
        self, data: DemoData, *, api_key: str | None = None, faults: Iterable[str] = ()
    ) -> None:
        self.data = data
        self.api_key = api_key
        self._lock = threading.RLock()
        # Admin changes that build files take long: one at a time, without blocking readers.
        self._admin_lock = threading.Lock()
        self._initial = data.initial()
        data.materialize(self._initial)
        self._history: list[Generation] = [self._initial]
        self._last_number = 1
        self._faults: dict[str, Fault] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LENGTH)
        self._players = data.sample_players(self._initial)
        self._profiles = {
            (profile.membership_type, profile.membership_id): (player, profile)
            for player in self._players
            for profile in player.profiles
        }
        for name in faults:
            self.set_fault(parse_fault({"name": name}))

    # -- state and admin ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Return what the admin API shows: generation, version, paths, faults."""
        with self._lock:
            generation = self._history[-1]
            faults = {name: fault.to_json() for name, fault in self._faults.items()}
            history = [g.number for g in self._history]
        return {
            "generation": generation.number,
            "version": generation.version,
            "items": len(generation.items),
            "seed": self.data.seed,
            "languages": list(self.data.languages),
            "tables": list(TABLES),
            "paths": self.data.content_paths(generation),
            "faults": faults,
            "history": history,
            "api_key_required": self.api_key is not None,
        }

    def publish(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Make a new generation current (see DemoData.publish for the options)."""
        allowed = {*ITEM_CHANGES, "tables", "version", "renumber"}
        unknown = set(options) - allowed
        if unknown:
            raise AdminError(f"unknown publish options: {', '.join(sorted(unknown))}")
        with self._admin_lock:
            with self._lock:
                current = self._history[-1]
                number = self._last_number + 1
            try:
                result = self.data.publish(current, number, **options)
            except (TypeError, ValueError) as exc:
                raise AdminError(str(exc)) from None
            self.data.materialize(result.generation)
            with self._lock:
                self._last_number = number
                self._history.append(result.generation)
        return {**self.state(), "published_tables": list(result.tables), **result.report()}

    def rollback(self) -> dict[str, Any]:
        """Make the previous generation current again, with its exact paths and bytes."""
        with self._admin_lock, self._lock:
            if len(self._history) < 2:
                raise AdminError("there is no previous generation to roll back to")
            self._history.pop()
        return self.state()

    def reset(self) -> dict[str, Any]:
        """Go back to generation 1 with no faults and an empty request log."""
        with self._admin_lock, self._lock:
            self._history = [self._initial]
            self._last_number = 1
            self._faults.clear()
            self._log.clear()
        return self.state()

    def set_fault(self, fault: Fault) -> dict[str, Any]:
        """Activate `fault` (replacing one of the same name)."""
        with self._lock:
            self._faults[fault.name] = fault
            return self.faults()

    def clear_faults(self, name: str | None = None) -> dict[str, Any]:
        """Clear one fault, or all of them."""
        with self._lock:
            if name is None:
                self._faults.clear()
            else:
                self._faults.pop(name, None)
            return self.faults()

    def faults(self) -> dict[str, Any]:
        """Return the active faults."""
        with self._lock:
            return {"faults": {name: fault.to_json() for name, fault in self._faults.items()}}

    def requests(self) -> list[dict[str, Any]]:
        """Return the log of non-admin requests, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> dict[str, Any]:
        """Empty the request log."""
        with self._lock:
            self._log.clear()
        return {"requests": []}

    def record(self, method: str, path: str, query: str, api_key: bool, status: int) -> None:
        """Log one non-admin request."""
        entry = {
            "method": method,
            "path": path,
            "query": query,
            "api_key": api_key,
            "status": status,
        }
        with self._lock:
            self._log.append(entry)

    def _take(
        self, name: str, *, file_table: str | None = None, scoped: bool = False
    ) -> Fault | None:
        """Return the active fault `name`, spending one use of it.

        With `scoped`, a fault narrowed to one table fires only for a file of that table
        (`file_table` None: a file holding every table, such as a SQLite zip).
        """
        fault = self._faults.get(name)
        if fault is None:
            return None
        wanted = fault.options.get("table")
        if scoped and wanted is not None and wanted != file_table:
            return None
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                del self._faults[name]
        return fault

    # -- /Platform: the gate every request passes, and the manifest ----------------------------

    def _gate(self, api_key: str | None) -> Reply | None:
        """Return the answer a fault or a missing/wrong API key gives a /Platform request."""
        for name in MANIFEST_FAULTS:
            fault = self._take(name)
            if fault is not None:
                return _manifest_fault_reply(fault)
        if self.api_key is not None:
            if not api_key:
                return Reply(
                    401,
                    envelope(
                        2102,
                        "ApiKeyMissingFromRequest",
                        "An API key is required for this request: send it in X-API-Key.",
                    ),
                )
            if api_key != self.api_key:
                return _bad_key_reply()
        return None

    def manifest_reply(self, api_key: str | None) -> Reply:
        """Answer GET /Platform/Destiny2/Manifest/."""
        with self._lock:
            refused = self._gate(api_key)
            if refused is not None:
                return refused
            generation = self._history[-1]
            path_faults = [f for f in (self._take(name) for name in PATH_FAULTS) if f]
        manifest = self.data.manifest(generation)
        for fault in path_faults:
            self._apply_path_fault(manifest, generation, fault)
        return Reply(200, envelope(1, "Success", "Ok", response=manifest))

    # -- players --------------------------------------------------------------------------------

    def search_reply(self, api_key: str | None, membership_type: str, body: bytes) -> Reply:
        """Answer POST /Platform/Destiny2/SearchDestinyPlayerByBungieName/{membershipType}/."""
        with self._lock:
            refused = self._gate(api_key)
        if refused is not None:
            return refused
        wanted = _int(membership_type)
        try:
            request = msgspec.json.decode(body)
        except msgspec.DecodeError:
            request = None
        if wanted is None or not isinstance(request, dict):
            return _invalid("Send a membershipType and a JSON body {displayName, displayNameCode}.")
        name, code = request.get("displayName"), request.get("displayNameCode")
        if not isinstance(name, str) or not isinstance(code, int) or isinstance(code, bool):
            return _invalid("displayName must be a string and displayNameCode a number.")
        cards = [
            self.data.user_info(player, profile)
            for player in self._players
            if player.name.casefold() == name.casefold() and player.code == code
            for profile in player.profiles
            if wanted in (ALL_MEMBERSHIPS, profile.membership_type)
        ]
        return Reply(200, envelope(1, "Success", "Ok", response=cards))

    def profile_reply(
        self, api_key: str | None, membership_type: str, membership_id: str, query: str
    ) -> Reply:
        """Answer GET /Platform/Destiny2/{membershipType}/Profile/{destinyMembershipId}/."""
        with self._lock:
            refused = self._gate(api_key)
            minted = self._history[-1].stamp
        if refused is not None:
            return refused
        kind, number = _int(membership_type), _int(membership_id)
        if kind is None or number is None:
            return Reply(
                400,
                envelope(7, "ParameterParseFailure", "Unable to parse your parameters."),
            )
        components = _components(query)
        if not components:
            return _invalid("You must request at least one component.")
        found = self._profiles.get((kind, number))
        if found is None:
            return _not_a_player()
        player, profile = found
        if player.private:
            return Reply(
                200,
                envelope(
                    1665,
                    "DestinyPrivacyRestriction",
                    "This user has chosen to keep their Destiny data private.",
                ),
            )
        response = self.data.profile_response(player, profile, components, minted)
        return Reply(200, envelope(1, "Success", "Ok", response=response))

    def _apply_path_fault(
        self, manifest: dict[str, Any], generation: Generation, fault: Fault
    ) -> None:
        table: str | None = fault.options.get("table")
        components = manifest["jsonWorldComponentContentPaths"]
        if fault.name == "sqlite_view_bomb":
            table = table or ITEM_TABLE  # parse_fault gives table faults a table
            for lang in manifest["mobileWorldContentPaths"]:
                manifest["mobileWorldContentPaths"][lang] = self.data.view_bomb_sqlite_path(
                    generation, lang, table
                )
            return
        if fault.name in _TABLE_FAULTS:
            table = table or ITEM_TABLE
            variant = self.data.variant_paths(generation, table, fault.name)
            for lang, path in variant.items():
                components[lang][table] = path
                if fault.name == "shrunk":
                    manifest["mobileWorldContentPaths"][lang] = self.data.shrunk_sqlite_path(
                        generation, lang, table
                    )
            return
        hostile = _HOSTILE_PATHS[fault.name]
        for lang, tables in components.items():
            for name in tables:
                if table is None or name == table:
                    tables[name] = hostile(tables[name])
            if table is None:
                for key in ("mobileWorldContentPaths", "jsonWorldContentPaths"):
                    manifest[key][lang] = hostile(manifest[key][lang])

    # -- content --------------------------------------------------------------------------------

    def content_plan(self, path: str, query: str, host: str) -> ContentPlan:
        """Decide how to answer a content request (faults included)."""
        if not path.startswith(CONTENT_PREFIX):
            return ContentPlan(reply=_not_found())
        try:
            table = self.data.files.table(path)
        except KeyError:
            return ContentPlan(reply=_not_found())
        with self._lock:
            for name in CONTENT_FAULTS:
                if name == "not_found" and query:
                    continue
                fault = self._take(name, file_table=table, scoped=True)
                if fault is None:
                    continue
                if name in ("not_found", "not_found_always"):
                    return ContentPlan(reply=_not_found())
                if name == "redirect":
                    target = f"http://{host}{ELSEWHERE_PREFIX}{path}"
                    if query:
                        target += f"?{query}"
                    return ContentPlan(reply=Reply(302, b"", None, {"Location": target}))
                mode, options = name, fault.options
                break
            else:
                mode, options = None, {}
        # Built outside the lock: the first request of a SQLite zip can take seconds.
        return ContentPlan(file=self.data.files.get(path), mode=mode, options=options)

    def elsewhere_plan(self, path: str) -> ContentPlan:
        """Serve a content file under /elsewhere/ (where the `redirect` fault points)."""
        found = self.data.files.get(path) if path.startswith(CONTENT_PREFIX) else None
        return ContentPlan(file=found) if found else ContentPlan(reply=_not_found())


def _manifest_fault_reply(fault: Fault) -> Reply:
    name, options = fault.name, fault.options
    if name == "maintenance":
        body = envelope(
            5,
            "SystemDisabled",
            "This system is temporarily disabled for maintenance.",
            throttle_seconds=options["throttle_seconds"],
        )
        return Reply(503, body)
    if name == "throttle":
        body = envelope(
            36,
            "ThrottleLimitExceededMomentarily",
            "This request has exceeded the allowed request rate; wait and try again.",
            throttle_seconds=options["throttle_seconds"],
        )
        return Reply(200, body)
    if name == "html_503":
        return Reply(503, HTML_503, "text/html")
    if name == "oauth_error":
        body = msgspec.json.encode(
            {
                "error": "server_error",
                "error_description": "The server encountered an unexpected condition.",
            }
        )
        return Reply(400, body)
    if name == "http_500":
        return Reply(500, b"", None)
    if name == "http_429":
        return Reply(429, b"", None, {"Retry-After": str(options["retry_after"])})
    if name == "bad_api_key":
        return _bad_key_reply()
    raise AssertionError(f"not a manifest fault: {name}")


def _int(value: str) -> int | None:
    """Return a path segment as a whole number (Bungie's path parameters), or None."""
    digits = value[1:] if value.startswith("-") else value
    return int(value) if digits.isascii() and digits.isdigit() and len(digits) <= 19 else None


def _components(query: str) -> set[int]:
    """Return the component numbers asked for by ?components= (numbers or names)."""
    asked = ",".join(parse_qs(query).get("components", []))
    numbers = set()
    for part in filter(None, (p.strip() for p in asked.split(","))):
        number = int(part) if part.isascii() and part.isdigit() else None
        numbers.add(number if number is not None else PROFILE_COMPONENTS.get(part.casefold(), 0))
    return numbers - {0}


def _invalid(message: str) -> Reply:
    return Reply(400, envelope(18, "InvalidParameters", message))


def _not_a_player() -> Reply:
    return Reply(
        200,
        envelope(
            1601,
            "DestinyAccountNotFound",
            "We were unable to find your Destiny account information.",
        ),
    )


def _bad_key_reply() -> Reply:
    return Reply(
        401, envelope(2101, "ApiInvalidOrExpiredKey", "Please use a valid, unexpired API key.")
    )


def _not_found() -> Reply:
    return Reply(404, b"<h1>404 Not Found</h1>", "text/html")


def _json(status: int, value: Any) -> Reply:
    return Reply(status, msgspec.json.encode(value))


class DemoHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server holding the origin; quiet about clients that hang up."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], origin: DemoOrigin) -> None:
        self.origin = origin
        super().__init__(address, DemoRequestHandler)

    @property
    def port(self) -> int:
        """Return the bound port (useful when asked for port 0)."""
        return self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up; log anything else."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        log.exception("Error while serving %s", client_address)


class DemoRequestHandler(BaseHTTPRequestHandler):
    """Route one request to the manifest endpoint, a content file or the admin API."""

    protocol_version = "HTTP/1.1"
    server_version = "DemoOrigin/1.0"
    # Headers and body go out in separate writes: with Nagle on, the body waits for the
    # client's delayed ACK (40 ms a response on Linux), which would swamp every timing.
    disable_nagle_algorithm = True
    # Socket timeout: a client that stops reading cannot hold a thread forever.
    timeout = 120
    server: DemoHTTPServer
    # The public request being answered, logged once its status is known: when the answer
    # starts, so that a client that has its answer finds its request in the log.
    unlogged: tuple[str, str, str, bool] | None = None

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s - %s", self.address_string(), format % args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._log_request(code)
        super().send_response(code, message)

    def _log_request(self, status: int) -> None:
        if self.unlogged is not None:
            self.origin.record(*self.unlogged, status)
            self.unlogged = None

    @property
    def origin(self) -> DemoOrigin:
        return self.server.origin

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, url.query
        if path.startswith(ADMIN_PREFIX):
            self._send_reply(self._admin(method, path[len(ADMIN_PREFIX) :], query))
            return
        self.unlogged = (method, path, query, self.headers.get("X-API-Key") is not None)
        try:
            self._public(method, path, query)
        except (ConnectionError, TimeoutError):
            # The client hung up mid-answer: nothing to tell it, nothing to print.
            self.close_connection = True
        finally:
            self._log_request(0)  # no answer was started (a fault hung up): status 0

    def _public(self, method: str, path: str, query: str) -> None:
        api_key = self.headers.get("X-API-Key")
        search = SEARCH_PATH.fullmatch(path)
        profile = PROFILE_PATH.fullmatch(path)
        if method == "POST" and search:
            body = self._read_body()
            if body is None:
                self._send_reply(_invalid(f"The body must be at most {MAX_SEARCH_BODY} bytes."))
            else:
                self._send_reply(self.origin.search_reply(api_key, search.group(1), body))
        elif method != "GET":
            # Its body, if any, is unread: the connection cannot carry another request.
            self.close_connection = True
            self._send_reply(_json(405, {"error": "method not allowed"}))
        elif path in (MANIFEST_PATH, MANIFEST_PATH.rstrip("/")):
            self._send_reply(self.origin.manifest_reply(api_key))
        elif profile:
            membership_type, membership_id = profile.groups()
            self._send_reply(
                self.origin.profile_reply(api_key, membership_type, membership_id, query)
            )
        elif path.startswith(ICON_PREFIX):
            self._send_reply(icon_reply(path))
        else:
            if path.startswith(ELSEWHERE_PREFIX + "/"):
                plan = self.origin.elsewhere_plan(path[len(ELSEWHERE_PREFIX) :])
            else:
                host = self.headers.get("Host") or f"127.0.0.1:{self.server.port}"
                plan = self.origin.content_plan(path, query, host)
            if plan.file is not None:
                self._send_file(plan.file, plan.mode, plan.options)
            else:
                self._send_reply(plan.reply or _not_found())

    def _read_body(self) -> bytes | None:
        """Read a request body of at most MAX_SEARCH_BODY bytes; None (and hang up) if bigger."""
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_SEARCH_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

    # -- answers --------------------------------------------------------------------------------

    def _send_reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def _send_file(self, found: ContentFile, mode: str | None, options: Mapping[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", self._content_type())
        if mode == "oversized_chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            length = OVERSIZED_LENGTH if mode == "oversized" else found.size
            self.send_header("Content-Length", str(length))
        if mode in ("truncated", "oversized", "oversized_chunked"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        with found.file.open("rb") as handle:
            if mode == "truncated":
                self.wfile.write(handle.read(found.size // 2))
            elif mode == "slow_drip":
                self._drip(handle, options["chunk"], options["delay"])
            elif mode in ("oversized", "oversized_chunked"):
                self._flood(handle, chunked=mode == "oversized_chunked")
            else:
                while chunk := handle.read(STREAM_CHUNK):
                    self.wfile.write(chunk)

    def _content_type(self) -> str:
        path = urlsplit(self.path).path
        return "application/json" if path.endswith(".json") else "application/octet-stream"

    def _drip(self, handle: BinaryIO, chunk: int, delay: float) -> None:
        first = True
        while piece := handle.read(chunk):
            if not first:
                time.sleep(delay)
            first = False
            self.wfile.write(piece)

    def _flood(self, handle: BinaryIO, *, chunked: bool) -> None:
        """Send the file, then filler, until a client with no size cap has had 1 GiB."""
        sent = 0
        filler = b" " * STREAM_CHUNK
        while sent < OVERSIZED_LIMIT:
            piece = handle.read(STREAM_CHUNK) or filler
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
            sent += len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    # -- the admin API ----------------------------------------------------------------------------

    def _admin(self, method: str, route: str, query: str) -> Reply:
        try:
            body = self._read_json() if method in ("POST", "DELETE") else {}
            return self._admin_route(method, route.rstrip("/"), query, body)
        except AdminError as exc:
            return _json(400, {"error": str(exc)})

    def _admin_route(self, method: str, route: str, query: str, body: dict[str, Any]) -> Reply:
        origin = self.origin
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "state"): origin.state,
            ("POST", "publish"): lambda: origin.publish(body),
            ("POST", "rollback"): origin.rollback,
            ("POST", "reset"): origin.reset,
            ("POST", "fault"): lambda: origin.set_fault(parse_fault(body)),
            ("DELETE", "fault"): lambda: origin.clear_faults(
                body.get("name") or next(iter(parse_qs(query).get("name", ())), None)
            ),
            ("GET", "requests"): lambda: {"requests": origin.requests()},
            ("DELETE", "requests"): origin.clear_requests,
        }
        action = routes.get((method, route))
        if action is None:
            if any(known == route for _, known in routes):
                return _json(405, {"error": f"{method} is not allowed on /_demo/{route}"})
            return _json(404, {"error": f"no admin route /_demo/{route}"})
        return _json(200, action())

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_ADMIN_BODY:
            self.close_connection = True
            raise AdminError("request body missing a valid length, or too large")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise AdminError(f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise AdminError("body must be a JSON object")
        return body
