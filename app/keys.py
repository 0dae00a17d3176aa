"""Every Redis key of the app: its name, what it holds, its type and how long it lives.

Every key lives under one prefix (`MANIFEST_KEY_PREFIX`), so several deployments can share a
Redis. No other module builds a key name: ask a `Keys` for it. Celery's own keys (the broker's
queues, `celery-task-meta-<id>` results) are named by Celery and are not listed here.

`python -m app.keys` prints the layout that docs/DECISIONS.md shows (a test keeps them equal).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """The names of this app's keys under `prefix`; one line of docs per key, then its life."""

    prefix: str

    # -- releases and their data ---------------------------------------------------------------

    @property
    def current(self) -> str:
        """string: the live release id.

        Kept for good; changed only by a commit or a rollback (one MULTI/EXEC).
        """
        return f"{self.prefix}:current"

    @property
    def releases(self) -> str:
        """zset: ids of the releases whose data is kept (the live one and the previous one).

        Scored by commit time; an id leaves it when a commit makes it older than the previous.
        """
        return f"{self.prefix}:releases"

    def release(self, release_id: str) -> str:
        """hash: a release's record: paths, version, format, counts, diff, change, base, trigger.

        Written by its commit; unlinked with the release's data when it leaves `releases`.
        """
        return f"{self.prefix}:release:{release_id}"

    def table(self, release_id: str, lang: str, table: str) -> str:
        """hash: definition hash -> its digest (8 bytes), then its whole JSON compressed (zstd).

        Built while staging, never changed after its commit; unlinked with its release.
        """
        return f"{self.prefix}:{release_id}:{lang}:{table}"

    def dictionary(self, release_id: str, lang: str, table: str) -> str:
        """string: the zstd dictionary a table of a release is compressed with (none: no key).

        Written with the table's first batch; unlinked with its release.
        """
        return f"{self.table(release_id, lang, table)}:dict"

    def changes(self, release_id: str) -> str:
        """hash: "<table>:<hash>" -> what the commit building a release changed in a definition.

        JSON of kind, name and changed fields (zstd when long). Written while staging; unlinked
        by the commit after which no entry of `history` names the release.
        """
        return f"{self.prefix}:changes:{release_id}"

    def legacy_digests(self, release_id: str, lang: str, table: str) -> str:
        """hash: definition hash -> digest, beside a table of a format 1 release (projections).

        Never written since format 2; unlinked with its release (a release record without
        `format`).
        """
        return f"{self.table(release_id, lang, table)}:sums"

    @property
    def staging(self) -> str:
        """hash: release id -> JSON list of the keys a sync is building for it.

        An entry is removed by its commit or its discard; the next lock holder collects one of a run
        that died or lost the lock.
        """
        return f"{self.prefix}:staging"

    @property
    def history(self) -> str:
        """list: commits (updates and rollbacks), newest first, as JSON.

        Capped at MANIFEST_HISTORY_LENGTH entries; kept for good.
        """
        return f"{self.prefix}:history"

    @property
    def checks(self) -> str:
        """list: outcomes of the latest checks of Bungie, newest first, as JSON.

        Capped at the last 50; kept for good.
        """
        return f"{self.prefix}:checks"

    @property
    def last_check(self) -> str:
        """string: the latest check as JSON (outcome, failing_since, last_success).

        Kept for good; replaced by every check.
        """
        return f"{self.prefix}:last_check"

    @property
    def lock(self) -> str:
        """string: the sync lock; holds the running sync's task id.

        Expires MANIFEST_LOCK_TIMEOUT seconds after the holder last extended it.
        """
        return f"{self.prefix}:lock"

    # -- triggers and sync tasks ---------------------------------------------------------------

    @property
    def queued_sync(self) -> str:
        """string: the task id of the sync queued or running, which every trigger joins.

        Set NX by the trigger that queues it; deleted when that task ends; expires after
        SYNC_TIME_LIMIT + 60 seconds.
        """
        return f"{self.prefix}:task"

    def task(self, task_id: str) -> str:
        """string: JSON record of a sync task this app started (trigger, who asked, when).

        Expires after TASK_RESULT_SECONDS, with the task's result.
        """
        return f"{self.prefix}:task:{task_id}"

    def heartbeat(self, run_id: str) -> str:
        """string: a sync's heartbeat: present while the run works (checking, building, telling).

        A thread of the run sets it again 3 times a life: 6 seconds, or MANIFEST_LOCK_TIMEOUT if
        shorter (so a killed run's lapses within that). Deleted when a run ends, but a task's is
        left to lapse (it stores its outcome after), and kept for the countdown plus 30 seconds
        while the task waits for its retry.
        """
        return f"{self.task(run_id)}:alive"

    def rate_window(self, bucket: str, client: str, window_start: int) -> str:
        """string: requests a client made in one rate-limit window of `bucket` (a counter).

        Expires when the window (RATE_LIMIT_WINDOW seconds) ends.
        """
        return f"{self.prefix}:rate:{bucket}:{client}:{window_start}"

    # -- deliveries: what each destination (slack, discord, webhook:<n>) was told -------------

    def delivery_queued(self, destination: str, release_id: str) -> str:
        """string: a task posting the release to the destination is queued or waiting to retry.

        Set by the check that queues the task, unless a claim that is not stale is there (so
        tasks do not pile up); it holds when its task was last active (each attempt refreshes
        it). A claim silent for 30 minutes (its task lost, say in a failover) is overwritten by
        the next check, which queues the release again. Expires after 6 hours; deleted once the
        release is delivered, filtered, refused or given up on.
        """
        return f"{self.prefix}:delivery:{destination}:queued:{release_id}"

    def delivery_sending(self, destination: str, release_id: str) -> str:
        """string: a worker is posting the release to the destination right now (its token).

        Set NX before the post; expires after 120 seconds (a worker killed mid-send); deleted by
        its holder when the post ends.
        """
        return f"{self.prefix}:delivery:{destination}:sending:{release_id}"

    def delivered(self, destination: str, release_id: str) -> str:
        """string: the destination took the release, or it had nothing for it (JSON: outcome, at).

        Never posted again while it lives: 180 days.
        """
        return f"{self.prefix}:delivery:{destination}:sent:{release_id}"

    def delivery_pending(self, destination: str) -> str:
        """zset: releases owed to the destination (queued, retrying or given up), by commit time.

        A release leaves it when delivered or filtered, or once older than a day (no check
        queues it again); the key goes with its last member.
        """
        return f"{self.prefix}:delivery:{destination}:pending"

    def delivery_state(self, destination: str) -> str:
        """hash: a destination's state: last release taken and when, failing since, throttled
        until, last error.

        Kept for good; every post (release or alert) updates it.
        """
        return f"{self.prefix}:delivery:{destination}"

    def announced(self, release_id: str) -> str:
        """string: when Slack accepted the release's message (unix seconds), before issue 18.

        Never written since every destination has its own (`delivered`); read for Slack, so
        that an upgrade does not repeat a message; expires 180 days after it was written.
        """
        return f"{self.prefix}:notified:{release_id}"

    @property
    def alert(self) -> str:
        """string: the trouble episode the alert destinations (ALERTS_TO) were told about (JSON).

        Kept until the "recovered" message clears it.
        """
        return f"{self.prefix}:alert"

    # -- players -------------------------------------------------------------------------------

    def profile(self, membership_type: int | str, membership_id: str) -> str:
        """string: a player's profile with its page as resolved against a release (JSON).

        Expires after PROFILE_CACHE_SECONDS.
        """
        return f"{self.prefix}:profile:{membership_type}:{membership_id}"

    def player_search(self, name: str) -> str:
        """string: the memberships found for a Bungie name, casefolded (JSON).

        Expires after PROFILE_CACHE_SECONDS.
        """
        return f"{self.prefix}:player:search:{name}"

    def player_sync_claim(self, release_id: str) -> str:
        """string: a player's page asked for a sync for items this release does not know.

        Expires after MANIFEST_POLL_SECONDS (one ask per release and poll interval).
        """
        return f"{self.prefix}:player:sync:{release_id}"

    # -- workers -------------------------------------------------------------------------------

    @property
    def workers(self) -> str:
        """string: the latest ping of the Celery workers (JSON: at, workers).

        Expires after 30 seconds.
        """
        return f"{self.prefix}:workers"

    # -- metrics -------------------------------------------------------------------------------

    @property
    def metrics(self) -> str:
        """hash: what the Celery workers counted for GET /metrics (syncs, durations, requests).

        Kept for good: a few hundred fields (syncs by trigger and outcome, sync duration buckets
        by phase, Bungie requests, deliveries), each label from a closed set; fields only grow,
        in one MULTI/EXEC per sync and one HINCRBY per delivery try.
        """
        return f"{self.prefix}:metrics"

    # -- sessions, sign-in attempts and the player pages' share of the Bungie key ------------

    @property
    def session_version(self) -> str:
        """string: the admin's session version, a random token every session is signed in under.

        Kept for good; set NX when missing (a lost one ends every session). A sign-out and a
        change of the configured credential replace it, which signs out every session from
        before. Web processes track it (no round trip to read) unless MANIFEST_TRACK_LIVE is off.
        """
        return f"{self.prefix}:session_version"

    @property
    def session_credential(self) -> str:
        """string: a digest of the admin credential (keyed with SECRET_KEY) last seen.

        Kept for good; compared once per web process: a different one replaces the version.
        """
        return f"{self.prefix}:session_credential"

    def sign_in_attempts(self, account: str, window_start: int) -> str:
        """string: sign-in attempts naming one account (a digest of the name), all clients.

        A counter; expires when the window (RATE_LIMIT_WINDOW seconds) ends.
        """
        return f"{self.prefix}:sign-in:{account}:{window_start}"

    def player_calls(self, window_start: int) -> str:
        """string: calls the player pages made to Bungie in one window, all clients (a counter).

        Expires when the window (PLAYER_BUDGET_WINDOW seconds) ends.
        """
        return f"{self.prefix}:player:calls:{window_start}"

    @property
    def player_backoff(self) -> str:
        """string: Bungie throttled a player call: the player pages ask nothing while it lives.

        Expires after the ThrottleSeconds (or Retry-After) Bungie gave; syncs never read it.
        """
        return f"{self.prefix}:player:backoff"

    def player_not_found(self, name: str) -> str:
        """string: Bungie found no player by this Bungie name, casefolded.

        Expires after PLAYER_NOT_FOUND_SECONDS.
        """
        return f"{self.prefix}:player:missing:{name}"

    def profile_not_shown(self, membership_type: int | str, membership_id: str) -> str:
        """string: why Bungie showed no profile for this membership: `missing` or `private`.

        Expires after PLAYER_NOT_FOUND_SECONDS.
        """
        return f"{self.prefix}:profile:hidden:{membership_type}:{membership_id}"


def layout(prefix: str = "<p>") -> Iterator[tuple[str, str, str]]:
    """Yield (name pattern, what it holds, how long it lives) for every key, in source order."""
    keys = Keys(prefix)
    for name, member in vars(Keys).items():
        if name.startswith("_") or name == "prefix":
            continue
        if isinstance(member, property):
            pattern = getattr(keys, name)
        elif inspect.isfunction(member):
            params = list(inspect.signature(member).parameters)[1:]
            pattern = member(keys, *(f"<{p}>" for p in params))
        else:
            continue
        what, _, life = inspect.cleandoc(member.__doc__ or "").partition("\n\n")
        yield pattern, what, " ".join(life.split())


def layout_markdown() -> str:
    """Return the layout as the table docs/DECISIONS.md shows under "Redis layout"."""
    rows = ["| key | holds | lives |", "| --- | --- | --- |"]
    rows += [f"| `{pattern}` | {what} | {life} |" for pattern, what, life in layout()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(layout_markdown())
