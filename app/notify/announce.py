"""What Slack has been told, kept in Redis: each release once, each trouble episode once.

The keys are app.keys' announcement ones: a release's message queued, being sent, sent; and
the trouble episode Slack was told about.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from app.keys import Keys
from app.notify.slack import Message
from app.notify.slack import Sender

SENT = "sent"
ALREADY = "already sent"
SENDING_ELSEWHERE = "being sent elsewhere"
NOTHING = "nothing to announce"

TROUBLE = "trouble"
RECOVERED = "recovered"

QUEUED_SECONDS = 6 * 3600
SENDING_SECONDS = 120
ANNOUNCED_SECONDS = 180 * 86400


@dataclass(frozen=True)
class Alert:
    """A trouble or recovered message to send, with when the trouble started."""

    kind: str
    since: float


class Announcements:
    """The Slack bookkeeping of one manifest cache."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    # -- releases --------------------------------------------------------------------------

    def should_queue(self, release_id: str) -> bool:
        """Claim the right to queue the message for a release (False: sent, or already queued)."""
        if self.redis.exists(self.keys.announced(release_id)):
            return False
        queued = self.keys.announcement_queued(release_id)
        return bool(self.redis.set(queued, 1, nx=True, ex=QUEUED_SECONDS))

    def unqueue(self, release_id: str) -> None:
        """Forget that the release's message is queued: it was sent, or given up on."""
        self.redis.delete(self.keys.announcement_queued(release_id))

    def announce(self, release_id: str, build: Callable[[], Message | None], sender: Sender) -> str:
        """Send the release's message unless Slack already has it; mark it only once accepted."""
        if self.redis.exists(self.keys.announced(release_id)):
            return ALREADY
        sending = self.keys.announcement_sending(release_id)
        if not self.redis.set(sending, 1, nx=True, ex=SENDING_SECONDS):
            return SENDING_ELSEWHERE
        try:
            message = build()
            if message is None:
                return NOTHING
            sender.send(message)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.announced(release_id), int(time.time()), ex=ANNOUNCED_SECONDS)
                pipe.delete(self.keys.announcement_queued(release_id))
                pipe.execute()
            return SENT
        finally:
            self.redis.delete(sending)

    # -- trouble ---------------------------------------------------------------------------

    def alert_for(self, check: Mapping[str, Any], alert_after: float) -> Alert | None:
        """Decide what one check means for Slack: trouble, recovered, or nothing to say.

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
