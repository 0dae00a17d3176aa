"""The manifest cache in Redis: each release under its own keys, `current` naming the live one.

A commit is one MULTI/EXEC that flips the pointer and records the release, so readers see all
of the old release or all of the new one. The previous release is kept (rollback, readers
mid-request). `ManifestStore` gathers the package's rooms: records.py (release records,
history, checks), reads.py (definitions of the live release), search.py (item search),
changelog.py (what changed, per release and per definition), tables.py (whole tables as
Bungie's files, streamed), writer.py (staging, writes, commit, garbage), lock.py (one sync at a
time) and archive.py (the history and change logs exported and imported).
"""

from __future__ import annotations

import redis

from app.keys import Keys
from app.manifest.settings import ManifestSettings
from app.manifest.store.changelog import ChangeLogs
from app.manifest.store.lock import SyncLock
from app.manifest.store.reads import WHOLE_TABLE
from app.manifest.store.reads import Packed
from app.manifest.store.records import ReleaseInfo
from app.manifest.store.records import shown_log
from app.manifest.store.search import ITEM_TABLE
from app.manifest.store.search import ItemSearch
from app.manifest.store.search import SearchPage
from app.manifest.store.tables import KeptRelease
from app.manifest.store.tables import ReleaseGone
from app.manifest.store.tables import TableFiles
from app.manifest.store.writer import ReleaseWriter
from app.manifest.store.writer import TableWriter

__all__ = [
    "ITEM_TABLE",
    "WHOLE_TABLE",
    "KeptRelease",
    "ManifestStore",
    "Packed",
    "ReleaseGone",
    "ReleaseInfo",
    "SearchPage",
    "SyncLock",
    "TableWriter",
    "shown_log",
]


class ManifestStore(ReleaseWriter, ItemSearch, ChangeLogs, TableFiles):
    """The manifest cache in Redis: write a release beside the live one, flip, read, search."""

    def __init__(self, client: redis.Redis, settings: ManifestSettings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
