"""What each destination has been told, kept in Redis: each release once, each trouble episode once.

The keys are app.keys' delivery ones, per destination and release: queued, being sent, sent
(or filtered); per destination: the releases it is owed and its state (last delivery, failing
since, throttled until). The trouble episode the alert destinations were told about is one key.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from redis.exceptions import NoPermissionError

from app.keys import Keys
from app.notify.destinations import RECOVERED
from app.notify.destinations import TROUBLE
from app.notify.destinations import DeliveryFailed
from app.notify.destinations import DeliveryThrottled

log = logging.getLogger(__name__)

SENT = "sent"
FILTERED = "filtered"
ALREADY = "already sent"
SENDING_ELSEWHERE = "being sent elsewhere"

QUEUED_SECONDS = 6 * 3600
# A queued claim whose task gave no sign of life for this long is taken to be lost (a broker
# that failed over before passing the task on, a queue purged) and the next check queues the
# release again. Twice the longest wait of a live task between two tries (app/tasks.py caps a
# retry's countdown at 15 minutes); a task only slower than that is doubled, not repeated:
# the post itself is taken once (`deliver`).
QUEUED_STALE_SECONDS = 1800
SENDING_SECONDS = 120
# How long a check waits for a replica to hold a release before queueing its posts.
REPLICATED_WAIT_MS = 2000
ANNOUNCED_SECONDS = 180 * 86400
# A release older than this is no longer owed: turning a destination on must not replay last
# month, and a release given up on is queued again by checks only this long.
OWED_SECONDS = 86400
SLACK = "slack"  # its releases sent before issue 18 are marked by Keys.announced

# Queued holds when its task last gave a sign of life; older than stale, it is claimed again.
# KEYS: queued, pending, sent... ARGV: queued's life, commit time, release id, owed since, now,
# stale before.
_CLAIM = """
if redis.call('EXISTS', unpack(KEYS, 3)) > 0 then return 0 end
local alive = tonumber(redis.call('GET', KEYS[1]))
if alive and alive >= tonumber(ARGV[6]) then return 0 end
redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
return 1
"""
# KEYS: sending, queued, sent... ARGV: this sender's token, sending's life, now, queued's life.
# Sent is checked once the right to send is held: a sender that finished in between has
# marked it by then. A try is the task's sign of life: its queued claim is renewed.
_TAKE = """
if redis.call('EXISTS', unpack(KEYS, 3)) > 0 then return 'sent' end
redis.call('SET', KEYS[2], ARGV[3], 'XX', 'EX', ARGV[4])
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 'busy' end
if redis.call('EXISTS', unpack(KEYS, 3)) > 0 then
  redis.call('DEL', KEYS[1])
  return 'sent'
end
return 'taken'
"""
_DELETE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Alert:
    """A trouble or recovered message to send, with when the trouble started."""

    kind: str
    since: float


class Announcements:
    """The delivery bookkeeping of one manifest cache, for every destination."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    # -- releases --------------------------------------------------------------------------

    def claim(self, destinations: list[str], release_id: str, committed_at: float) -> list[str]:
        """Claim, for each destination, the right to queue its post of a release; return those
        claimed: not sent, not filtered, no live task queued. A claimed release is owed to the
        destination until it is sent.

        One round trip; a second when something was claimed and the primary has replicas in
        sync (`_online_replicas`): it waits until they hold the claims, and so the release
        (Redis replicates in order). A release a failover could still take back is not
        announced: if no replica holds it within REPLICATED_WAIT_MS, the claims are dropped and
        the next check tries again. A server that refuses WAIT (a proxy, some managed Redis)
        cannot tell: the release is announced. A destination whose own claim fails (its keys
        hold something else) is logged and left out; any other error drops what was claimed
        and is raised.
        """
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.info("replication")
            for name in destinations:
                keys = self._claim_keys(name, release_id)
                pipe.eval(
                    _CLAIM,
                    len(keys),
                    *keys,
                    QUEUED_SECONDS,
                    committed_at,
                    release_id,
                    now - OWED_SECONDS,
                    now,
                    now - QUEUED_STALE_SECONDS,
                )
            info, *claimed = pipe.execute(raise_on_error=False)
        got = [name for name, taken in zip(destinations, claimed, strict=True) if taken == 1]
        failed = {
            name: reply
            for name, reply in zip(destinations, claimed, strict=True)
            if isinstance(reply, Exception)
        }
        replicas = _online_replicas(info)
        everywhere = len(failed) == len(destinations) or any(map(_server_wide, failed.values()))
        if failed and not everywhere:
            # Only these destinations' keys are broken (they hold another type): the others
            # still get the release. A failed script may have made its claim before it stopped
            # (the SET comes before the ZADD): dropped, so the release stays owed to them.
            self._unqueue_all(list(failed), release_id)
            for name, exc in failed.items():
                log.error("Could not claim release %s for %s (Redis: %s)", release_id, name, exc)
        try:
            if failed and everywhere:
                raise next(iter(failed.values()))
            replicated = not (got and replicas) or self._replicated(got, release_id, now, replicas)
        except redis.RedisError:
            # No task will be queued for these claims: left, they would hold the release back
            # until they went stale (QUEUED_STALE_SECONDS).
            self._unqueue_all(got, release_id)
            raise
        if not replicated:
            self._unqueue_all(got, release_id)
            log.warning(
                "Release %s is on no replica yet (%d in sync): its posts wait for the next check",
                release_id,
                replicas,
            )
            return []
        return got

    def _claim_keys(self, destination: str, release_id: str) -> list[str]:
        return [
            self.keys.delivery_queued(destination, release_id),
            self.keys.delivery_pending(destination),
            *self._sent_keys(destination, release_id),
        ]

    def _replicated(self, claimed: list[str], release_id: str, now: float, replicas: int) -> bool:
        """Wait until the `replicas` in sync hold the claims just made (and what came before
        them); True once one does (Sentinel promotes the replica furthest on), and where the
        server refuses WAIT (it cannot tell)."""
        with self.redis.pipeline(transaction=False) as pipe:
            # WAIT counts what its own connection wrote last: so write here first (the claims
            # again, unchanged), and it counts everything written before.
            for name in claimed:
                queued = self.keys.delivery_queued(name, release_id)
                pipe.set(queued, now, xx=True, ex=QUEUED_SECONDS)
            # Every replica in sync, so that the message's link finds the release wherever it
            # is read; WAIT returns as soon as they all have it.
            pipe.wait(max(replicas, 1), REPLICATED_WAIT_MS)
            *written, acknowledged = pipe.execute(raise_on_error=False)
        for reply in written:
            if isinstance(reply, Exception):
                raise reply
        if isinstance(acknowledged, redis.ResponseError):
            _warn_wait_refused(str(acknowledged))
            return True
        return bool(acknowledged)

    def _unqueue_all(self, destinations: list[str], release_id: str) -> None:
        """Drop the queued claims of `destinations`, as far as Redis lets: a claim that stays
        (Redis away) goes stale by itself."""
        if not destinations:
            return
        try:
            self.redis.delete(*[self.keys.delivery_queued(n, release_id) for n in destinations])
        except redis.RedisError as exc:
            log.warning("Could not drop the queued claims of release %s (%s)", release_id, exc)

    def unqueue(self, destination: str, release_id: str) -> None:
        """Forget that a task for the release is queued: given up on, still owed (the next
        check queues it again)."""
        self.redis.delete(self.keys.delivery_queued(destination, release_id))

    def settle(self, destination: str, release_id: str, outcome: str) -> None:
        """Record that the destination is owed nothing more for the release (`outcome`: SENT,
        FILTERED)."""
        record = msgspec.json.encode({"outcome": outcome, "at": time.time()})
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.delivered(destination, release_id), record, ex=ANNOUNCED_SECONDS)
            pipe.delete(self.keys.delivery_queued(destination, release_id))
            pipe.zrem(self.keys.delivery_pending(destination), release_id)
            if outcome == SENT:
                pipe.hset(
                    self.keys.delivery_state(destination),
                    mapping={"last_release": release_id, "last_at": time.time()},
                )
            pipe.execute()

    def deliver(
        self, destination: str, release_id: str, payload: Any, send: Callable[[Any], None]
    ) -> str:
        """Post the release's payload unless the destination has it; mark it only once taken.

        Returns SENT, ALREADY, or SENDING_ELSEWHERE (another worker holds the right to send, or
        held it when it was killed: try again once that right has lapsed). Raises what `send`
        raises (DeliveryThrottled, DeliveryFailed), the destination's state recorded.
        """
        sending = self.keys.delivery_sending(destination, release_id)
        token = uuid.uuid4().hex
        queued = self.keys.delivery_queued(destination, release_id)
        keys = [sending, queued, *self._sent_keys(destination, release_id)]
        taken = self.redis.eval(
            _TAKE, len(keys), *keys, token, SENDING_SECONDS, time.time(), QUEUED_SECONDS
        )
        if taken in (b"sent", "sent"):
            self.unqueue(destination, release_id)
            return ALREADY
        if taken in (b"busy", "busy"):
            return SENDING_ELSEWHERE
        try:
            self.attempt(destination, send, payload)
            self.settle(destination, release_id, SENT)
            return SENT
        finally:
            self.redis.eval(_DELETE_IF_OURS, 1, sending, token)

    def attempt(self, destination: str, send: Callable[[Any], None], payload: Any) -> None:
        """Call `send(payload)` once, recording in the destination's state how it went."""
        state = self.keys.delivery_state(destination)
        try:
            send(payload)
        except DeliveryThrottled as exc:
            until = time.time() + exc.retry_after
            self.redis.hset(state, mapping={"throttled_until": until, "error": str(exc)})
            raise
        except DeliveryFailed as exc:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(state, "failing_since", time.time())
                pipe.hset(state, "error", str(exc))
                pipe.hdel(state, "throttled_until")
                pipe.execute()
            raise
        self.redis.hdel(state, *_TROUBLE_FIELDS)

    def _sent_keys(self, destination: str, release_id: str) -> list[str]:
        sent = [self.keys.delivered(destination, release_id)]
        if destination == SLACK:
            sent.append(self.keys.announced(release_id))
        return sent

    # -- what the dashboard shows ----------------------------------------------------------

    def states(self, destinations: list[str]) -> dict[str, DestinationState]:
        """Return each destination's state, in one round trip."""
        owed_since = time.time() - OWED_SECONDS
        with self.redis.pipeline(transaction=False) as pipe:
            for name in destinations:
                pipe.hgetall(self.keys.delivery_state(name))
                pipe.zcount(self.keys.delivery_pending(name), owed_since, "+inf")
            found = pipe.execute()
        return {
            name: DestinationState.read(name, found[2 * n], found[2 * n + 1])
            for n, name in enumerate(destinations)
        }

    # -- trouble ---------------------------------------------------------------------------

    def alert_for(self, check: Mapping[str, Any], alert_after: float) -> Alert | None:
        """Decide what one check means for the alert destinations: trouble, recovered, or
        nothing to say.

        A failure that will not fix itself (a bad API key) is reported at once; a transient one
        (maintenance, throttling, outages) once it has lasted `alert_after` seconds. One
        episode gets one trouble message, and one "recovered" when a check succeeds again.
        """
        if check["outcome"] in ("updated", "unchanged"):
            episode = self.redis.getdel(self.keys.alert)
            if episode is None:
                return None
            return Alert(RECOVERED, msgspec.json.decode(episode)["since"])
        if check["outcome"] not in ("failed", "unavailable"):
            return None
        since = check.get("failing_since")
        since = check["at"] if since is None else since
        if check.get("transient") and check["at"] - since < alert_after:
            return None
        episode = msgspec.json.encode({"since": since, "error": check["error"]})
        if not self.redis.set(self.keys.alert, episode, nx=True):
            return None
        return Alert(TROUBLE, since)


_TROUBLE_FIELDS = ("failing_since", "throttled_until", "error")


def _online_replicas(info: Mapping[str, Any] | Exception) -> int:
    """Count the replicas INFO replication names in sync (`slaveN` with state=online): one
    still in a full resync (wait_bgsave, send_bulk) cannot acknowledge a write until it is
    done, and WAITing for it would hold every release back while it lasts. A server that
    names replicas without listing them is taken at its word (`connected_slaves`)."""
    if isinstance(info, Exception):
        return 0
    listed = [value for key, value in info.items() if _REPLICA_ENTRY.fullmatch(key)]
    if not listed:
        return int(info.get("connected_slaves", 0))
    return sum(1 for value in listed if isinstance(value, dict) and value.get("state") == "online")


_REPLICA_ENTRY = re.compile(r"slave\d+")


def _server_wide(error: Exception) -> bool:
    """Say whether a claim's error says nothing about its destination: the server refused it
    (read-only after a failover, out of memory, an ACL), or no reply came."""
    if not isinstance(error, redis.ResponseError):
        return True
    return isinstance(error, (redis.ReadOnlyError, redis.OutOfMemoryError, NoPermissionError))


@functools.cache  # once per process (and reason): every check would say it again
def _warn_wait_refused(reason: str) -> None:
    """Say that the primary refuses WAIT: releases are then announced without knowing whether
    a replica holds them."""
    log.warning(
        "The Redis primary refuses WAIT (%s): releases are announced without waiting for a "
        "replica to hold them",
        reason,
    )


@dataclass(frozen=True)
class DestinationState:
    """What the dashboard shows of a destination (times in unix seconds, None: never)."""

    name: str
    pending: int
    last_release: str | None = None
    last_at: float | None = None
    failing_since: float | None = None
    throttled_until: float | None = None
    error: str | None = None

    @classmethod
    def read(cls, name: str, fields: Mapping[bytes, bytes], pending: int) -> DestinationState:
        """Build the state from the destination's hash and its count of owed releases."""
        text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        throttled = _number(text.get("throttled_until"))
        return cls(
            name=name,
            pending=int(pending),
            last_release=text.get("last_release"),
            last_at=_number(text.get("last_at")),
            failing_since=_number(text.get("failing_since")),
            # A throttle that has run out is no longer news.
            throttled_until=throttled if throttled and throttled > time.time() else None,
            error=text.get("error"),
        )


def _number(value: str | None) -> float | None:
    return None if value is None else float(value)
