"""What the store remembers about releases and checks: release records, history, check outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import msgspec
import redis
from redis.typing import EncodableT

from app.keys import Keys
from app.manifest.diff import TableDiff
from app.manifest.live import Unknown
from app.manifest.live import tracked_value
from app.manifest.packing import FORMAT
from app.manifest.release import Release
from app.manifest.replies import optional_text
from app.manifest.replies import text
from app.manifest.replies import texts
from app.manifest.settings import ManifestSettings

CHECKS_KEPT = 50

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode

# A check's one round trip: the live release id, the last check and a release's counts; and,
# when that release is live and a record is given, the record as the new last check.
# KEYS: current, last_check, checks; ARGV: release id, its record key, check record, kept.
_RECORD_CHECK_IF_LIVE = """
local live = redis.call('GET', KEYS[1])
local before = redis.call('GET', KEYS[2])
local counts = redis.call('HGET', ARGV[2], 'counts')
if live == ARGV[1] and ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
end
return {live, before, counts}
"""


@dataclass
class ReleaseInfo:
    """A committed release with what the app knows about it."""

    release: Release
    counts: dict[str, dict[str, int]]
    synced_at: float
    duration: float
    diffs: list[TableDiff] = field(default_factory=list)
    change: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    trigger: dict[str, Any] = field(default_factory=dict)
    # How its definitions are stored (packing.FORMAT); 1: projections, from before whole ones.
    format: int = FORMAT
    # What its change log kept and cut ({"kept", "cut", "bytes"}); None: no log (a first
    # release, or one built on a release of another format).
    changes: dict[str, int] | None = None

    @property
    def id(self) -> str:
        """Return the release's id."""
        return self.release.id

    def to_record(self) -> dict[str, Any]:
        """Return plain data for JSON (pages, API, history)."""
        return {
            **self.release.to_record(),
            "counts": self.counts,
            "synced_at": self.synced_at,
            "duration": self.duration,
            "diff": [d.to_record() for d in self.diffs],
            "change": self.change,
            "base": self.base,
            "trigger": self.trigger,
            "format": self.format,
            "changes": self.changes,
        }

    def to_fields(self) -> dict[EncodableT, EncodableT]:
        """Return the fields of the release's record hash, each value as JSON."""
        fields: dict[EncodableT, EncodableT] = {
            "release": _json_encode(self.release.to_record()),
            "counts": _json_encode(self.counts),
            "synced_at": _json_encode(self.synced_at),
            "duration": _json_encode(self.duration),
            "diff": _json_encode([d.to_record() for d in self.diffs]),
            "change": _json_encode(self.change),
            "base": _json_encode(self.base),
            "trigger": _json_encode(self.trigger),
            "format": _json_encode(self.format),
            "changes": _json_encode(self.changes),
        }
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> ReleaseInfo:
        """Rebuild a release's info from the fields of its record hash (`to_fields`)."""
        record = {text(key): _json_decode(value) for key, value in fields.items()}
        return cls(
            release=Release.from_record(record["release"]),
            counts=record["counts"],
            synced_at=record["synced_at"],
            duration=record["duration"],
            diffs=[TableDiff.from_record(d) for d in record["diff"]],
            change=record["change"],
            base=record["base"],
            trigger=record["trigger"],
            # Records written before whole definitions have no format: theirs is 1.
            format=record.get("format", 1),
            changes=record.get("changes"),
        )


class ReleaseRecords:
    """The live pointer, the kept releases' records, the history of commits and of checks."""

    redis: redis.Redis
    settings: ManifestSettings
    keys: Keys

    def live_id(self) -> str | None:
        """Return the id of the live release, if there is one."""
        value = self.redis.get(self.keys.current)
        return optional_text(value) if value else None

    def glance(
        self, release_id: str, *, record_if_live: Mapping[str, Any] | None = None
    ) -> tuple[str | None, dict[str, Any] | None, dict[str, dict[str, int]] | None]:
        """Return the live release id, the last check, and `release_id`'s counts if it is kept.

        One round trip: what a check needs to tell "unchanged" without taking the lock. With
        `record_if_live`, that check record is also recorded (as `record_check` does) when
        `release_id` is the live release, in the same round trip; the last check returned is
        then the one from before.
        """
        record = _json_encode(record_if_live) if record_if_live is not None else b""
        keys = [self.keys.current, self.keys.last_check, self.keys.checks]
        # Registered here, not in __init__: a store is made per request, a check once a sync.
        script = self.redis.register_script(_RECORD_CHECK_IF_LIVE)
        live, check, counts = script(
            keys=keys,
            args=[release_id, self.keys.release(release_id), record, CHECKS_KEPT],
        )
        return (
            live.decode() if live else None,
            _json_decode(check) if check else None,
            _json_decode(counts) if counts else None,
        )

    def release_info(self, release_id: str) -> ReleaseInfo | None:
        """Return what is known of a kept release (the live one or the previous one)."""
        fields = self.redis.hgetall(self.keys.release(release_id))
        return ReleaseInfo.from_fields(fields) if fields else None

    def live_release(self) -> ReleaseInfo | None:
        """Return the live release, if there is one."""
        live = self.live_id()
        return self.release_info(live) if live else None

    def kept_ids(self) -> list[str]:
        """Return the ids of releases whose data is kept, newest commit first."""
        return texts(self.redis.zrevrange(self.keys.releases, 0, -1))

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the newest release records (updates and rollbacks), newest first."""
        return [_json_decode(v) for v in self.redis.lrange(self.keys.history, 0, limit - 1)]

    def history_entry(self, release_id: str) -> dict[str, Any] | None:
        """Return the newest history record of a release, also one whose data is gone."""
        for entry in self.history(self.settings.history_length):
            if entry["id"] == release_id:
                return entry
        return None

    def last_check(self) -> dict[str, Any] | None:
        """Return the outcome of the latest check, if any.

        Kept by this process while Redis vouches for it (see `live.py`): pages and the API ask
        for it on every request, and it changes once a check.
        """
        tracked = tracked_value(self.redis, self.keys.last_check, self.settings.track_live)
        value = self.redis.get(self.keys.last_check) if isinstance(tracked, Unknown) else tracked
        return _json_decode(value) if value else None

    def recent_checks(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the latest check outcomes, newest first."""
        return [_json_decode(v) for v in self.redis.lrange(self.keys.checks, 0, limit - 1)]

    def record_check(self, check: Mapping[str, Any]) -> None:
        """Remember the outcome of a check (the dashboard's "last check")."""
        data = _json_encode(check)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.last_check, data)
            pipe.lpush(self.keys.checks, data)
            pipe.ltrim(self.keys.checks, 0, CHECKS_KEPT - 1)
            pipe.execute()


def logged_release(entry: Mapping[str, Any]) -> str | None:
    """Return the release whose change log a history entry shows; None if it shows none."""
    log = shown_log(entry)
    return log[0] if log else None


def shown_log(entry: Mapping[str, Any]) -> tuple[str, bool] | None:
    """Return the release whose change log a history entry shows, and whether inverted.

    Entries from before `log` was recorded: a rollback shows the undone release's, inverted.
    """
    if "log" in entry:
        log = entry["log"]
        return (str(log["release"]), bool(log["inverse"])) if log else None
    if entry.get("rollback"):
        return (str(entry["previous"]), True) if entry.get("previous") else None
    return str(entry["id"]), False
