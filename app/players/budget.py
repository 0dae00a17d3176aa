"""The share of the Bungie API key the player pages may spend: calls per client and from all
clients together in a window, and a pause while Bungie throttles player calls. Syncs never wait
on any of it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from app.manifest.store import ManifestStore
from app.players.profiles import PlayerError

# One player call, counted in one round trip. Nothing is counted while player calls are paused
# (KEYS[1] lives); a call refused for its client is not counted for everyone.
# KEYS: pause, client window, all-clients window.
# ARGV: client window expiry, client limit, all-clients window expiry, all-clients limit.
# Returns {PAUSED, milliseconds left} | {CLIENT_FULL, 0} | {ALL_FULL, 0} | {SPENT, 0}.
_SPEND = """
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then return {1, paused} end
local mine = redis.call('INCR', KEYS[2])
if mine == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
if mine > tonumber(ARGV[2]) then return {2, 0} end
local everyone = redis.call('INCR', KEYS[3])
if everyone == 1 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
if everyone > tonumber(ARGV[4]) then return {3, 0} end
return {0, 0}
"""
SPENT, PAUSED, CLIENT_FULL, ALL_FULL = 0, 1, 2, 3


class LookupsLimited(PlayerError):
    """No call to Bungie for a player now; the visitor may retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class CallBudget:
    """What one client's player lookups may spend of the Bungie key, in calls per window."""

    store: ManifestStore
    client: str
    per_client: int
    client_window: int
    for_all: int
    all_window: int

    def spend(self) -> None:
        """Count one call to Bungie; raise LookupsLimited if it may not be made now."""
        keys = self.store.keys
        now = int(time.time())
        client_start = now - now % self.client_window
        all_start = now - now % self.all_window
        script = self.store.redis.register_script(_SPEND)
        outcome, paused_ms = script(
            keys=[
                keys.player_backoff,
                keys.rate_window("players", self.client, client_start),
                keys.player_calls(all_start),
            ],
            args=[self.client_window + 1, self.per_client, self.all_window + 1, self.for_all],
        )
        if outcome == PAUSED:
            raise self.paused(int(paused_ms) / 1000)
        if outcome == CLIENT_FULL:
            wait = client_start + self.client_window - now
            raise LookupsLimited(
                f"Too many player lookups from your address: at most {self.per_client} per "
                f"{self.client_window}s. Retry in {wait} seconds.",
                max(1, wait),
            )
        if outcome == ALL_FULL:
            wait = all_start + self.all_window - now
            raise LookupsLimited(
                f"Too many player lookups on this site right now. Retry in {wait} seconds.",
                max(1, wait),
            )

    def back_off(self, seconds: float) -> LookupsLimited:
        """Pause every player call for `seconds` (Bungie throttled one); return the error to
        raise for it."""
        wait = max(1, math.ceil(seconds))
        self.store.redis.set(self.store.keys.player_backoff, 1, ex=wait)
        return self.paused(wait)

    @staticmethod
    def paused(seconds: float) -> LookupsLimited:
        """Return the error of a lookup while player calls are paused for `seconds` more."""
        wait = max(1, math.ceil(seconds))
        return LookupsLimited(
            f"Bungie asks this site to slow down: player lookups resume in {wait} seconds.", wait
        )
