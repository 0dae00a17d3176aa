"""What the pages, the API and the mirror read through, and how they read items: the store on the
read replica (the primary's while the replica cannot serve), the one judge of how the replica
stands (reads and /readyz follow it), and one parser of item queries."""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields as dataclass_fields
from typing import Any
from typing import ParamSpec
from typing import TypeVar

import redis
from flask import g
from werkzeug.exceptions import BadRequest

from app.extensions import ReplicaUnavailable
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
    cannot serve (see `look_at_replica`), as this process last found it, and for the rest of a
    request whose read failed on the replica. Never write through it."""
    replica = get_read_redis()
    if replica is get_redis() or g.get("replica_failed") or not _fit(get_redis(), replica):
        return get_store()
    g.read_on_replica = True
    return get_reader()


def read_view(view: Callable[P, R]) -> Callable[P, R]:
    """Mark a view that only reads: if the replica fails it (no connection, a timeout), the
    view runs once more, on the primary, and reads stay there a while.

    For views that write nothing: run again, a write would be made twice.
    """

    @functools.wraps(view)
    def reading(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return view(*args, **kwargs)
        except Exception as exc:
            failure = replica_failure(exc)
            if failure is None or not g.pop("read_on_replica", False):
                raise  # not the replica's failure (the primary's: the app's 503), or a 404
            replica_failed(failure)
            return view(*args, **kwargs)

    return reading


def replica_failure(exc: BaseException) -> ReplicaUnavailable | None:
    """Return the replica's failure `exc` is, or was raised from or while handling (its
    __cause__ and __context__); None if it is none. The read client's connections raise
    ReplicaUnavailable where they fail: a view may read the primary too (the dashboard's
    sync and destinations), and only the replica's failure reruns it."""
    seen: set[int] = set()
    step: BaseException | None = exc
    while step is not None and id(step) not in seen:
        if isinstance(step, ReplicaUnavailable):
            return step
        seen.add(id(step))
        step = step.__cause__ or step.__context__
    return None


def replica_failed(failure: ReplicaUnavailable) -> None:
    """Record that a read on the replica failed: reads go to the primary for a while, and for
    the rest of this request.

    The failed read is the verdict: asking the replica how it stands now could cost the
    request a second timeout. The periodic look brings reads back later.
    """
    name = failure.error
    failed = ReplicaLook(answers=False, error=name, problem=f"a read on it failed ({name})")
    _judge(_state(get_read_redis()), failed)
    g.replica_failed = True


@dataclass(frozen=True)
class ReplicaLook:
    """What one look at a read replica found (INFO replication on it and on the primary; a
    read that failed on it is one too: it did not answer).

    `problem` is the verdict reads follow: why it should not serve now, None if it may. The
    rest is what /readyz shows: no address, the answer is public.
    """

    answers: bool
    problem: str | None = None
    # What it raised: to INFO (no answer, or a refusal: an ACL), or to a read.
    error: str | None = None
    # "replica", or "primary": Sentinel reads from the primary while it has no replica.
    role: str | None = None
    # Its link to its primary (master_link_status), and when it last heard from it.
    link: str | None = None
    last_heard_seconds: int | None = None
    # Whether it shares the primary's replication id; None: the primary did not answer.
    replicates_primary: bool | None = None
    # How much of the primary's replication stream it has yet to apply.
    behind_bytes: int | None = None


def look_at_replica(primary: redis.Redis, replica: redis.Redis) -> ReplicaLook:
    """Look at how `replica` stands now, and judge whether it may serve reads.

    It may not when it does not answer, when it follows another server than `primary`, or
    when its link to `primary` is down or silent: it then serves what it last heard, and the
    primary is newer. Unless the primary does not answer either: the replica is all there is.
    """
    try:
        mine = replica.info("replication")
    except redis.ResponseError as exc:
        # It answers, but refuses INFO: nothing to judge it by, so it serves.
        return ReplicaLook(answers=True, error=type(exc).__name__)
    except (redis.RedisError, OSError) as exc:
        # The name redis-py gave it: the read client's connections raise their own kind.
        name = exc.error if isinstance(exc, ReplicaUnavailable) else type(exc).__name__
        return ReplicaLook(answers=False, error=name, problem=f"it does not answer ({name})")
    is_replica = mine.get("role") == "slave"
    link = mine.get("master_link_status") if is_replica else None
    heard = int(mine.get("master_last_io_seconds_ago", -1)) if is_replica else None
    try:
        theirs = primary.info("replication")
    except (redis.RedisError, OSError):
        theirs = None
    # A replica takes its primary's replication id; the primary itself has its own.
    same = None if theirs is None else mine.get("master_replid") == theirs.get("master_replid")
    behind = None
    if theirs is not None and same and is_replica:
        applied = int(mine.get("slave_repl_offset", 0))
        behind = max(0, int(theirs.get("master_repl_offset", 0)) - applied)
    return ReplicaLook(
        answers=True,
        problem=_problem(same, link, heard),
        role="replica" if is_replica else "primary",
        link=link,
        last_heard_seconds=heard,
        replicates_primary=same,
        behind_bytes=behind,
    )


def _problem(same: bool | None, link: str | None, heard: int | None) -> str | None:
    if same is None:
        return None  # the primary does not answer: stale beats a 503
    if not same:
        return "it does not replicate the primary (another replication id)"
    if link is None:
        return None  # the primary itself
    if link != "up":
        return f"its link to the primary is {link}"
    if heard is not None and heard > REPLICA_SILENT_SECONDS:
        return f"it has heard nothing from the primary for {heard}s"
    return None


def replica_standing(replica: redis.Redis) -> dict[str, Any]:
    """Return how this process last found `replica`, for /readyz: the fields of the last
    `ReplicaLook` (a failed read is one: it did not answer), its verdict under `problem`,
    `seen_seconds_ago`, and `reads_on_replica`, where reads go now. It never looks itself
    (`reader` does, when its look is stale): a probe's timeout is short, and a hung replica
    must not cost it one. Before the first look, every field is None but `reads_on_replica`
    (the first read looks first)."""
    state = _state(replica)
    with _replicas_lock:
        seen, seen_at, fit = state.seen, state.seen_at, state.fit
    if seen is None:
        fields = dict.fromkeys(f.name for f in dataclass_fields(ReplicaLook))
        return {**fields, "seen_seconds_ago": None, "reads_on_replica": fit}
    age = int(time.monotonic() - seen_at)
    return {**asdict(seen), "seen_seconds_ago": age, "reads_on_replica": fit}


@dataclass
class _Replica:
    """How this process last found a replica: fit to serve reads, what it saw and when, and
    when to look again."""

    fit: bool = True
    next_check: float = 0.0
    # How many verdicts were recorded: a look that began before the last one is not newer.
    verdicts: int = 0
    seen: ReplicaLook | None = None
    seen_at: float = 0.0
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
                began = state.verdicts
                _judge(state, look_at_replica(primary, replica), began)
        finally:
            state.checking.release()
    return state.fit


def _judge(state: _Replica, seen: ReplicaLook, began: int | None = None) -> None:
    """Record what a look or a read found; say so once when reads move to the primary or come
    back. A look that `began` before another verdict was recorded (a read that failed while
    it waited for its answers) is older news: dropped."""
    with _replicas_lock:
        if began is not None and began != state.verdicts:
            return
        now = time.monotonic()
        state.verdicts += 1
        state.seen, state.seen_at = seen, now
        if seen.problem is None:
            if not state.fit:
                log.info("The read replica serves again: reads go back to it")
            state.fit, state.next_check = True, now + REPLICA_CHECK_SECONDS
            return
        if state.fit:
            log.warning(
                "The read replica cannot serve: %s. Reads go to the primary, for %ds at least",
                seen.problem,
                REPLICA_REST_SECONDS,
            )
        state.fit, state.next_check = False, now + REPLICA_REST_SECONDS
