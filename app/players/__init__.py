"""Players: find them by Bungie name, fetch their profiles (kept briefly in Redis), and show what
their characters wear, resolved through the manifest cache.

profiles.py reads Bungie's answers, page.py resolves a profile into a page, cache.py keeps both,
budget.py says how much of the Bungie key the pages may spend.
"""

from __future__ import annotations

from app.players.budget import CallBudget
from app.players.budget import LookupsLimited
from app.players.cache import Players
from app.players.page import CharacterSheet
from app.players.page import ItemSlot
from app.players.page import PlayerPage
from app.players.profiles import MAX_MEMBERSHIP_ID
from app.players.profiles import MAX_NAME_LENGTH
from app.players.profiles import BungieName
from app.players.profiles import PlayerError
from app.players.profiles import PlayerNotFound
from app.players.profiles import ProfilePrivate

__all__ = [
    "MAX_MEMBERSHIP_ID",
    "MAX_NAME_LENGTH",
    "BungieName",
    "CallBudget",
    "CharacterSheet",
    "ItemSlot",
    "LookupsLimited",
    "PlayerError",
    "PlayerNotFound",
    "PlayerPage",
    "Players",
    "ProfilePrivate",
]
