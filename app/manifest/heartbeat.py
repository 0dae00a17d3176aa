"""A sync's heartbeat: a short-lived key that a thread of the run sets again while the run works,
so that a run killed at any moment reads as dead within seconds; and the lock a dead run left.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import redis

from app.keys import Keys
from app.manifest.store import SyncLock

log = logging.getLogger(__name__)

# A beat says "alive" for this long. Three beats a life: two can go missing (a Redis that is
# slow to answer, a long call holding the interpreter) before a run that works reads as dead.
HEARTBEAT_SECONDS = 6.0
BEATS_PER_LIFE = 3

# Delete the lock if it still names `holder` and that holder is dead: its heartbeat stopped, or
# it is this very run (an earlier attempt of it died holding the lock).
# KEYS: lock, the holder's heartbeat; ARGV: holder, this run.
_FREE_DEAD_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[1] ~= ARGV[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('DEL', KEYS[1])
"""


class Heartbeat:
    """Say that run `run_id` is alive while the `with` block runs, from a thread of its own.

    A thread rather than the run's progress: a run blocked in one long call (a slow answer from
    Bungie, a Retry-After wait) reports no progress and must still read as alive. A beat lives
    HEARTBEAT_SECONDS, or the lock's timeout if shorter: a dead run never blocks the next one
    for longer than its lock would. With `lingers`, the last beat is left to lapse when the
    block ends, for a caller that still tells the run's outcome after it (a task stores its
    result once its body has returned); else the heartbeat is deleted then.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        run_id: str,
        *,
        lock_timeout: float,
        lingers: bool = False,
    ) -> None:
        self._redis = client
        self.key = keys.heartbeat(run_id)
        self.seconds = min(HEARTBEAT_SECONDS, lock_timeout)
        self.lingers = lingers
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._beat_until_stopped, name=f"heartbeat-{run_id[:12]}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._beat(self.seconds)  # alive from the block's first line, not a beat later
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        stopped = self._stopped.is_set()
        self.stop()
        if not (stopped or self.lingers):
            with contextlib.suppress(redis.RedisError):  # it lapses by itself then
                self._redis.delete(self.key)

    def stop(self, *, lasting: float | None = None) -> None:
        """Stop beating, and when `lasting` is given, say alive for that long still.

        A task waiting for its retry stays alive so, until the retry is due.
        """
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        if lasting is not None:
            self._beat(lasting)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self.seconds / BEATS_PER_LIFE):
            self._beat(self.seconds)

    def _beat(self, seconds: float) -> None:
        try:
            self._redis.set(self.key, 1, px=max(1, round(seconds * 1000)))
        except redis.RedisError as exc:
            # The run goes on; if Redis stays away, the run fails by itself soon enough.
            log.warning("Could not renew the heartbeat %s: %s", self.key, exc)


@contextlib.contextmanager
def holding_lock(
    lock: SyncLock, client: redis.Redis, keys: Keys, *, beating: bool
) -> Iterator[bool]:
    """Hold the sync lock for the block, if it is free or its holder died; yield whether held.

    The run beats meanwhile (every holder does: a dead one is known by that), unless its
    caller keeps its heartbeat already (`beating`).
    """
    with contextlib.ExitStack() as stack:
        if not beating:
            stack.enter_context(Heartbeat(client, keys, lock.run_id, lock_timeout=lock.timeout))
        if not _take_lock(lock, client, keys):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()


def _take_lock(lock: SyncLock, client: redis.Redis, keys: Keys) -> bool:
    """Take the sync lock, also from a holder that died holding it; say whether this run has it.

    A dead holder is known by its stopped heartbeat, within seconds of its death, where its
    lock would block every sync until it lapsed (MANIFEST_LOCK_TIMEOUT).
    """
    if lock.acquire():
        return True
    holder = lock.holder()
    if holder is not None:
        beat = keys.heartbeat(holder)
        if not client.eval(_FREE_DEAD_LOCK, 2, lock.key, beat, holder, lock.run_id):
            return False
        log.warning("Sync %s died holding the lock; sync %s takes it over", holder, lock.run_id)
    return lock.acquire()
