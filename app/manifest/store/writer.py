"""Writing a release beside the live one: staging, table writes, the commit that flips the live
pointer, and collecting what dead runs left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import msgspec
import zstandard
from redis.exceptions import WatchError

from app.manifest.changes import ChangeLog
from app.manifest.diff import TableDiff
from app.manifest.ingest import Batch
from app.manifest.items import definition_name
from app.manifest.packing import FORMAT
from app.manifest.packing import Packer
from app.manifest.packing import Unpacker
from app.manifest.packing import train
from app.manifest.release import Release
from app.manifest.replies import raw
from app.manifest.replies import text
from app.manifest.replies import texts
from app.manifest.store.lock import LockLost
from app.manifest.store.lock import SyncLock
from app.manifest.store.records import ReleaseInfo
from app.manifest.store.records import ReleaseRecords
from app.manifest.store.records import logged_release

WRITE_BATCH = 500

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode

# Unlink a staged release's keys and drop its staging entry, if the lock names this run or
# nobody holds it, and the entry still lists what was read (no commit took it meanwhile). One
# script: nothing can take the lock between the look and the deletes. No flags, so it runs over
# maxmemory too (Redis refuses only commands that grow memory then), when deletes are needed.
# KEYS: the lock, staging, then the staged keys; ARGV: this run, the release id, its entry.
_DISCARD_IF_OURS = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
for i = 3, #KEYS do redis.call('UNLINK', KEYS[i]) end
return redis.call('HDEL', KEYS[2], ARGV[2])
"""


# Write a batch of a staged table (and its dictionary, the first time) only while the lock names
# this run: a run that lost the lock (paused past its heartbeat) must not write into keys that
# the run that took over is rebuilding, nor recreate keys no staging entry lists any more.
# KEYS: the lock, the hash, the dictionary; ARGV: this run, the dictionary ("" for none), then
# field, value, ... Returns 0, writing nothing, if the lock is another run's or nobody's.
_WRITE_IF_OURS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2]) end
for i = 3, #ARGV, 1000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""


class ReleaseWriter(ReleaseRecords):
    """Stage a release under its own keys, write its tables, then make it live in one step."""

    def lock(self, run_id: str) -> SyncLock:
        """Return the sync lock as run `run_id` would hold it."""
        return SyncLock(self.redis, self.keys.lock, run_id, self.settings.lock_timeout)

    def data_keys(self, release: Release, store_format: int = FORMAT) -> list[str]:
        """Return every key holding a release's data, as the format it was written in has them."""
        keys = self._keys(release, self.keys.table)
        if store_format < FORMAT:
            return keys + self._keys(release, self.keys.legacy_digests)
        return keys + self._keys(release, self.keys.dictionary)

    @staticmethod
    def _keys(release: Release, key: Callable[[str, str, str], str]) -> list[str]:
        return [
            key(release.id, lang, table) for lang in release.languages for table in release.tables
        ]

    def stage(self, release: Release) -> None:
        """Prepare to write `release`, dropping leftovers of a run that died building it."""
        keys = [*self.data_keys(release), self.keys.changes(release.id)]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.unlink(*keys)
            pipe.hset(self.keys.staging, release.id, _json_encode(keys))
            pipe.execute()

    def discard(self, release_id: str, lock: SyncLock) -> bool:
        """Delete the data of a staged release that will not be committed; say whether it went.

        Only while `lock` is held or nobody holds the lock: a run that took the lock over
        stages the same release under the same keys, and its data is not ours to delete.
        """
        entry = self.redis.hget(self.keys.staging, release_id)
        return entry is not None and self._discard_entry(release_id, entry, lock)

    def collect_garbage(self, lock: SyncLock) -> int:
        """Delete staged data of runs that died; call only while holding the sync lock."""
        staged = self.redis.hgetall(self.keys.staging)
        for release_id, entry in staged.items():
            self._discard_entry(text(release_id), entry, lock)
        return len(staged)

    def _discard_entry(self, release_id: str, entry: bytes | str, lock: SyncLock) -> bool:
        """Delete the keys a staging entry lists, in one script that checks the lock first."""
        staged = [self.keys.lock, self.keys.staging, *_json_decode(entry)]
        script = self.redis.register_script(_DISCARD_IF_OURS)
        return bool(script(keys=staged, args=[lock.run_id, release_id, entry]))

    def commit(self, info: ReleaseInfo, history: Mapping[str, Any], lock: SyncLock) -> None:
        """Make `info` the live release in one transaction; drop releases older than the previous.

        Raises LockLost if another run took the lock meanwhile, PrimaryChanged if Redis failed
        over since the lock was taken: then nothing changes.
        """
        self._flip(info.id, history, lock, record=info)

    def activate(self, release: Release, history: Mapping[str, Any], lock: SyncLock) -> None:
        """Make a kept release live again without downloading it (a rollback): a pointer flip."""
        self._flip(release.id, history, lock, record=None)

    def _flip(
        self,
        release_id: str,
        history: Mapping[str, Any],
        lock: SyncLock,
        record: ReleaseInfo | None,
    ) -> None:
        keys = self.keys
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(keys.lock, keys.current, keys.releases)
                    holder = pipe.get(keys.lock)
                    if holder is None or text(holder) != lock.run_id:
                        raise LockLost("The sync lock was lost before the commit")
                    # On the connection the commit goes through: a failover since the lock was
                    # taken may have lost some of what the run staged (replication is async).
                    lock.check_server(pipe)
                    live = pipe.get(keys.current)
                    keep = {release_id, text(live)} if live else {release_id}
                    old = texts(pipe.zrange(keys.releases, 0, -1))
                    drop = [r for r in old if r not in keep]
                    drop_keys = [keys.release(r) for r in drop]
                    for r in drop:
                        info = self.release_info(r)
                        if info is not None:
                            drop_keys += self.data_keys(info.release, info.format)
                    drop_keys += self._stale_change_logs(pipe, history)
                    pipe.multi()
                    if record is not None:
                        pipe.hset(keys.release(release_id), mapping=record.to_fields())
                        pipe.hdel(keys.staging, release_id)
                    pipe.set(keys.current, release_id)
                    pipe.zadd(keys.releases, {release_id: time.time()})
                    if drop:
                        pipe.zrem(keys.releases, *drop)
                    if drop_keys:
                        pipe.unlink(*drop_keys)
                    pipe.lpush(keys.history, _json_encode(history))
                    pipe.ltrim(keys.history, 0, self.settings.history_length - 1)
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def _stale_change_logs(self, pipe: Any, history: Mapping[str, Any]) -> list[str]:
        """Return the change logs no entry of the history names once `history` is pushed."""
        entries = [_json_decode(entry) for entry in pipe.lrange(self.keys.history, 0, -1)]
        kept = [history, *entries][: self.settings.history_length]
        named = {logged_release(entry) for entry in kept}
        stale = {logged_release(entry) for entry in entries} - named
        return [self.keys.changes(r) for r in stale if r is not None]


class TableWriter:
    """Write one table of a staged release in pipelined batches, counting its diff as it goes.

    Its writes land only while `lock` names its run (see `_WRITE_IF_OURS`). The first batch is
    the sample the table's dictionary is trained on; it is stored in that batch's pipeline, and
    every definition is packed with it (packing.py). With a change log, a definition whose
    digest moved is read back from the live release and compared field by field (diff.py), and
    `finish` finds what the live release had that this one lacks.
    """

    def __init__(
        self,
        store: ReleaseWriter,
        release_id: str,
        lang: str,
        table: str,
        diff: TableDiff | None,
        live_id: str | None,
        log: ChangeLog | None = None,
        *,
        lock: SyncLock,
    ) -> None:
        keys = store.keys
        self._redis = store.redis
        self._lock = lock
        self._write_if_ours = self._redis.register_script(_WRITE_IF_OURS)
        self._data_key = keys.table(release_id, lang, table)
        self._dictionary_key = keys.dictionary(release_id, lang, table)
        self._changes_key = keys.changes(release_id)
        self._live_key = keys.table(live_id, lang, table) if live_id and diff else None
        self._packer: Packer | None = None
        self._old: Unpacker | None = None
        if self._live_key and live_id and log is not None:
            dictionary = raw(self._redis.get(keys.dictionary(live_id, lang, table)))
            self._old = Unpacker(dictionary)
        self._log = log if self._old is not None else None
        self.diff = diff
        self.count = 0
        self.dictionary_bytes = 0

    def write(self, batch: Batch) -> None:
        """Pack and write a batch of entries; with a diff, compare them with the live release."""
        if not batch:
            return
        dictionary = None
        if self._packer is None:
            dictionary = train(batch.data)
            self._packer = Packer(dictionary)
            self.dictionary_bytes = len(dictionary or b"")
        values = self._packer.pack(batch.data, batch.digests)
        with self._redis.pipeline(transaction=False) as pipe:
            self._write_if_ours(
                keys=[self._lock.key, self._data_key, self._dictionary_key],
                args=[self._lock.run_id, dictionary or b"", *batch.pairs(values, 0, len(batch))],
                client=pipe,
            )
            if self._live_key:
                pipe.hmget(self._live_key, batch.keys)
            replies = pipe.execute()
        if not replies[0]:
            raise LockLost("The sync lock was taken over while this run wrote a table")
        if self.diff is not None:
            old = replies[-1] if self._live_key else [None] * len(batch)
            unpack = self._old.unpack if self._old is not None else None
            self.diff.count_batch(batch, old, unpack, self._log)
        self.count += len(batch)

    def finish(self, live_count: int | None) -> None:
        """Count what the live release had that this table lacks; store the change records."""
        if self.diff is None:
            return
        if self._log is None or self._old is None or self._live_key is None:
            self.diff.finish(live_count or 0)
            return
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hkeys(self._live_key)
            pipe.hkeys(self._data_key)
            old_keys, new_keys = pipe.execute()
        gone: list[bytes] = sorted(set(old_keys).difference(new_keys), key=int)
        removed = []
        for start in range(0, len(gone), WRITE_BATCH):
            chunk = gone[start : start + WRITE_BATCH]
            stored = map(raw, self._redis.hmget(self._live_key, chunk))
            removed += [
                (int(key), self._old_name(value)) for key, value in zip(chunk, stored, strict=True)
            ]
        self.diff.count_removed(removed, self._log)
        self.flush_log()

    def _old_name(self, stored: bytes | None) -> str:
        """Return the name a live definition had; "" if it is gone or damaged."""
        if not stored or self._old is None:
            return ""
        try:
            return definition_name(self._old.unpack(stored))
        except zstandard.ZstdError:
            return ""

    def flush_log(self) -> None:
        """Write the change records collected so far beside the staged release."""
        pending = self._log.take() if self._log is not None else []
        for start in range(0, len(pending), 2 * WRITE_BATCH):
            written = self._write_if_ours(
                keys=[self._lock.key, self._changes_key, self._changes_key],
                args=[self._lock.run_id, b"", *pending[start : start + 2 * WRITE_BATCH]],
            )
            if not written:
                raise LockLost("The sync lock was taken over before the change log was written")
