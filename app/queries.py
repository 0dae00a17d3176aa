"""What the pages, the API and the mirror read through, and how they read items: the store on the
read replica (the primary's while the replica cannot serve), and one parser of item queries."""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import ParamSpec
from typing import TypeVar

import redis
from flask import g
from werkzeug.exceptions import BadRequest

from app.extensions import get_read_redis
from app.extensions import get_reader
from app.extensions import get_redis
from app.extensions import get_settings
from app.extensions import get_store
from app.manifest.items import CLASSES
from app.manifest.items import ITEM_TYPES
from app.manifest.items import TIERS
from app.manifest.store import ManifestStore
from app.manifest.store import SearchPage

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# The item filters by their parameter name.
FILTER_CHOICES = {"type": ITEM_TYPES, "tier": TIERS, "class": CLASSES}

MAX_QUERY_LENGTH = 100
MAX_PAGE = 10_000
PER_PAGE = 50
MAX_HASH = 2**32 - 1
_DECIMAL = re.compile(r"-?[0-9]{1,20}")

# How often a process looks at how the read replica stands (INFO replication on it and on the
# primary): on the request that finds the last look stale, two round trips a period.
REPLICA_CHECK_SECONDS = 5.0
# How long reads stay on the primary once the replica failed a read or a check.
REPLICA_REST_SECONDS = 30.0
# A replica that heard nothing from its primary for this long serves what it last heard: stale.
# (A primary pings its replicas every 10 s, repl-ping-replica-period; the replica gives up on
# the link after 60 s, repl-timeout.)
REPLICA_SILENT_SECONDS = 30


@dataclass(frozen=True)
class ItemQuery:
    """A validated item search: name substring, filters and page."""

    q: str = ""
    item_type: int | None = None
    tier: int | None = None
    class_type: int | None = None
    page: int = 1
    per_page: int = PER_PAGE
    # A cached language; None: the first cached one.
    lang: str | None = None


def parse_item_query(args: Mapping[str, str]) -> ItemQuery:
    """Read q, type, tier, class, page, per_page and lang; raise BadRequest naming the bad one."""
    q = args.get("q", "").strip()
    if len(q) > MAX_QUERY_LENGTH:
        raise BadRequest(f"q is at most {MAX_QUERY_LENGTH} characters")
    return ItemQuery(
        q=q,
        item_type=_choice(args, "type", ITEM_TYPES),
        tier=_choice(args, "tier", TIERS),
        class_type=_choice(args, "class", CLASSES),
        page=_number(args, "page", 1, 1, MAX_PAGE),
        per_page=_number(args, "per_page", PER_PAGE, 1, 200),
        lang=parse_lang(args),
    )


def search_items(query: ItemQuery, definitions: bool = True) -> SearchPage:
    """Run an item search on the live release (see `ManifestStore.search`)."""
    return reader().search(
        query.q,
        item_type=query.item_type,
        tier=query.tier,
        class_type=query.class_type,
        page=query.page,
        per_page=query.per_page,
        lang=query.lang,
        definitions=definitions,
    )


def parse_hash(value: str) -> int:
    """Read a definition hash: a decimal unsigned 32-bit number (a signed one is converted)."""
    # Digits only (and a minus sign): int() alone would take "+12", " 12" and "1_000" too.
    if not _DECIMAL.fullmatch(value):
        raise BadRequest(f"{value[:40]!r} is not a definition hash (a whole number)")
    number = int(value)
    if not -(2**31) <= number <= MAX_HASH:
        raise BadRequest(f"{number} is not a 32-bit definition hash")
    return number & MAX_HASH


def parse_lang(args: Mapping[str, str]) -> str:
    """Read `lang`: one of the cached languages, else the first; raise BadRequest naming them."""
    languages = get_settings().languages
    raw = args.get("lang", "").strip()
    if raw == "":
        return languages[0]
    # Language codes are read in any case: "FR" means "fr", "pt-BR" Bungie's "pt-br".
    chosen = next((lang for lang in languages if lang.casefold() == raw.casefold()), None)
    if chosen is None:
        cached = ", ".join(languages)
        raise BadRequest(
            f"lang {raw[:20]!r} is not cached here; the cached languages are: {cached}"
        )
    return chosen


def _choice(args: Mapping[str, str], name: str, known: Mapping[int, str]) -> int | None:
    raw = args.get(name, "").strip()
    if raw == "":
        return None
    number = _to_int(raw, name)
    if number not in known:
        raise BadRequest(f"{name} must be one of {', '.join(map(str, known))}")
    return number


def _number(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name, "").strip()
    if raw == "":
        return default
    number = _to_int(raw, name)
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number


def _to_int(raw: str, name: str) -> int:
    if len(raw) > 12 or not re.fullmatch(r"-?[0-9]+", raw):
        raise BadRequest(f"{name} must be a whole number")
    return int(raw)


# -- which server the reads go to -------------------------------------------------------------


def reader() -> ManifestStore:
    """Return the store the reading pages, the API and the mirror read through: the replica's
    (REDIS_REPLICA_URL, Sentinel's), else the primary's; the primary's too while the replica
    cannot serve (down, cut off from the primary: see `replica_problem`), as this process last
    found it. Never write through it."""
    replica = get_read_redis()
    if replica is get_redis() or not _fit(get_redis(), replica):
        return get_store()
    g.read_on_replica = True
    return get_reader()


def read_view(view: Callable[P, R]) -> Callable[P, R]:
    """Mark a view that only reads: if the replica fails it (no connection, a timeout) and
    cannot serve, the view runs once more, on the primary, and reads stay there a while.

    For views that write nothing: run again, a write would be made twice.
    """

    @functools.wraps(view)
    def reading(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return view(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError):
            if not g.pop("read_on_replica", False) or not _failed(get_redis(), get_read_redis()):
                raise  # the primary failed (the replica answers): the app's 503
            return view(*args, **kwargs)

    return reading


def replica_problem(primary: redis.Redis, replica: redis.Redis) -> str | None:
    """Return why `replica` should not serve reads now, else None.

    It should not when it does not answer, when it follows another server than `primary`, or
    when its link to `primary` is down or silent: it then serves what it last heard, and the
    primary is newer. Unless the primary does not answer either: the replica is all there is.
    """
    try:
        mine = replica.info("replication")
    except redis.ResponseError:
        return None  # It answers, but refuses INFO (an ACL): nothing to judge it by.
    except (redis.RedisError, OSError) as exc:
        return f"it does not answer ({type(exc).__name__})"
    try:
        theirs = primary.info("replication")
    except (redis.RedisError, OSError):
        return None
    # A replica takes its primary's replication id; the primary itself (Sentinel reads from it
    # while it has no replica) has its own.
    if mine.get("master_replid") != theirs.get("master_replid"):
        return "it does not replicate the primary (another replication id)"
    if mine.get("role") != "slave":
        return None
    link = mine.get("master_link_status")
    if link != "up":
        return f"its link to the primary is {link}"
    silent = int(mine.get("master_last_io_seconds_ago", 0))
    if silent > REPLICA_SILENT_SECONDS:
        return f"it has heard nothing from the primary for {silent}s"
    return None


@dataclass
class _Replica:
    """How this process last found a replica: fit to serve reads, and when to look again."""

    fit: bool = True
    next_check: float = 0.0
    # Held by the one request that looks; the others go on with what was found last.
    checking: threading.Lock = field(default_factory=threading.Lock)


_replicas: weakref.WeakKeyDictionary[redis.Redis, _Replica] = weakref.WeakKeyDictionary()
_replicas_lock = threading.Lock()


def _state(replica: redis.Redis) -> _Replica:
    with _replicas_lock:
        return _replicas.setdefault(replica, _Replica())


def _fit(primary: redis.Redis, replica: redis.Redis) -> bool:
    """Say whether reads go to `replica`, looking at it again when the last look is stale."""
    state = _state(replica)
    if time.monotonic() >= state.next_check and state.checking.acquire(blocking=False):
        try:
            if time.monotonic() >= state.next_check:
                _judge(state, replica_problem(primary, replica))
        finally:
            state.checking.release()
    return state.fit


def _failed(primary: redis.Redis, replica: redis.Redis) -> bool:
    """Look at `replica` after a read on it failed; True if it cannot serve (reads move)."""
    problem = replica_problem(primary, replica)
    _judge(_state(replica), problem)
    return problem is not None


def _judge(state: _Replica, problem: str | None) -> None:
    """Record what a look found; say so once when reads move to the primary or come back."""
    with _replicas_lock:
        now = time.monotonic()
        if problem is None:
            if not state.fit:
                log.info("The read replica serves again: reads go back to it")
            state.fit, state.next_check = True, now + REPLICA_CHECK_SECONDS
            return
        if state.fit:
            log.warning(
                "The read replica cannot serve: %s. Reads go to the primary, for %ds at least",
                problem,
                REPLICA_REST_SECONDS,
            )
        state.fit, state.next_check = False, now + REPLICA_REST_SECONDS
