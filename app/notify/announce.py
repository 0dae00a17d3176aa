"""When to tell Slack: once per release, once per trouble episode, and remembering it in Redis.

Keys (under the manifest prefix):
  notify:pending:<id>   a message for release <id> is queued (keeps retries from piling up)
  notify:sending:<id>   a worker is sending it right now
  notified:<id>         Slack accepted it: never again
  alert                 the trouble episode Slack was told about (cleared by "recovered")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from app.notify.slack import Message
from app.notify.slack import Sender

SENT = "sent"
ALREADY = "already sent"
BUSY = "being sent elsewhere"
NOTHING = "nothing to announce"

TROUBLE = "trouble"
RECOVERED = "recovered"

PENDING_SECONDS = 6 * 3600
SENDING_SECONDS = 120
NOTIFIED_SECONDS = 180 * 86400


@dataclass(frozen=True)
class Alert:
    """A trouble or recovered message to send, with when the trouble started."""

    kind: str
    since: float


class Announcements:
    """The Slack bookkeeping of one manifest cache."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self.alert_key = f"{prefix}:alert"

    def notified_key(self, release_id: str) -> str:
        return f"{self.prefix}:notified:{release_id}"

    def pending_key(self, release_id: str) -> str:
        return f"{self.prefix}:notify:pending:{release_id}"

    def sending_key(self, release_id: str) -> str:
        return f"{self.prefix}:notify:sending:{release_id}"

    # -- releases --------------------------------------------------------------------------

    def should_queue(self, release_id: str) -> bool:
        """Claim the right to queue the message for a release (False: sent, or already queued)."""
        if self.redis.exists(self.notified_key(release_id)):
            return False
        return bool(self.redis.set(self.pending_key(release_id), 1, nx=True, ex=PENDING_SECONDS))

    def unqueue(self, release_id: str) -> None:
        """The queued message is done with (sent, or given up on)."""
        self.redis.delete(self.pending_key(release_id))

    def announce(self, release_id: str, build: Callable[[], Message | None], sender: Sender) -> str:
        """Send the release's message unless Slack already has it; mark it only once accepted."""
        if self.redis.exists(self.notified_key(release_id)):
            return ALREADY
        if not self.redis.set(self.sending_key(release_id), 1, nx=True, ex=SENDING_SECONDS):
            return BUSY
        try:
            message = build()
            if message is None:
                return NOTHING
            sender.send(message)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.notified_key(release_id), int(time.time()), ex=NOTIFIED_SECONDS)
                pipe.delete(self.pending_key(release_id))
                pipe.execute()
            return SENT
        finally:
            self.redis.delete(self.sending_key(release_id))

    # -- trouble ---------------------------------------------------------------------------

    def after_check(self, check: Mapping[str, Any], alert_after: float) -> Alert | None:
        """Decide what one check means for Slack: trouble, recovered, or nothing to say.

        A failure that will not fix itself (a bad API key) is reported at once; a transient one
        (maintenance, throttling, outages) once it has lasted `alert_after` seconds. One
        episode gets one trouble message, and one "recovered" when a check succeeds again.
        """
        if check["outcome"] in ("updated", "unchanged"):
            episode = self.redis.getdel(self.alert_key)
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
        if not self.redis.set(self.alert_key, episode, nx=True):
            return None
        return Alert(TROUBLE, since)
