"""The news a message tells, gathered from the store once for every destination: a release's
entry, its change log, the words for its first changes and the links; trouble and recovery."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from flask import url_for

from app import dates
from app.manifest import changes
from app.manifest.changes import Change
from app.manifest.errors import ManifestError
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from app.manifest.store import shown_log
from app.notify import wording
from app.notify.destinations import TROUBLE
from app.notify.destinations import AlertNews
from app.notify.destinations import DeliveryFilter
from app.notify.destinations import ReleaseNews

log = logging.getLogger(__name__)


def release_news(
    store: ManifestStore, entry: Mapping[str, Any], filters: Iterable[DeliveryFilter] = ()
) -> ReleaseNews:
    """Gather what any destination may say of a history entry, in a few store reads.

    The words' definitions and stat names cover the changes each filter will pick as well, so
    that narrowing the news per destination reads nothing more.
    """
    logged = store.changes_of(entry)
    listed = wording.pick(logged)
    worded = {_id(c): c for c in listed}
    for narrowed in filters:
        if not narrowed.everything:
            kept = [c for c in logged if narrowed.admits(c["table"], c["kind"])]
            worded.update((_id(c), c) for c in wording.pick(kept))
    definitions, names = _words_for(store, list(worded.values()), entry["id"])
    notes = wording.ChangeNotes(listed, len(logged), definitions, names)
    return ReleaseNews(
        entry=entry,
        changes=logged,
        notes=notes,
        release_url=release_url(entry),
        changes_api_url=changes_api_url(entry),
        page_url=page_url,
    )


def alert_news(kind: str, check: Mapping[str, Any], since: float) -> AlertNews:
    """Say that syncing is failing (TROUBLE) since `since`, or works again after it."""
    if kind == TROUBLE:
        message = (
            f"Manifest sync is failing since {dates.instant(since)}: "
            f"{check.get('error')}: {check.get('message')}"
        )
    else:
        lasted = dates.duration_in_minutes(check["at"] - since)
        message = f"Manifest sync recovered after {lasted}: the last check {check['outcome']}."
    return AlertNews(kind, since, message, dict(check), _url("main.dashboard"))


def page_url(table: str, number: int) -> str:
    """Return the page of a definition (an item's page for an item)."""
    if table == ITEM_TABLE:
        return _url("main.item", item_hash=number)
    return _url("main.definition", table=table, definition_hash=number)


def release_url(entry: Mapping[str, Any]) -> str:
    """Return the page of what a history entry changed (a rollback: what it undid, inverted)."""
    shown = shown_log(entry)
    if entry.get("rollback") and shown is not None and shown[1]:
        return _url("main.release", release_id=shown[0], undone=1)
    return _url("main.release", release_id=entry["id"])


def changes_api_url(entry: Mapping[str, Any]) -> str:
    """Return the change-log API of what a history entry changed (a rollback: the inverse)."""
    shown = shown_log(entry)
    if entry.get("rollback") and shown is not None and shown[1]:
        return _url("api.release_changes_page", release_id=shown[0], undone=1)
    return _url("api.release_changes_page", release_id=entry["id"])


def _id(change: Change) -> tuple[str, int]:
    return change["table"], change["hash"]


def _words_for(
    store: ManifestStore, listed: list[Change], release_id: str
) -> tuple[dict[wording.DefinitionKey, dict[str, Any]], dict[int, str]]:
    """Read the live definitions and the stat names the words for `listed` need."""
    wanted: dict[str, list[int]] = {}
    for change in listed:
        if wording.needs_definition(change):
            wanted.setdefault(change["table"], []).append(change["hash"])
    definitions: dict[wording.DefinitionKey, dict[str, Any]] = {}
    names: dict[int, str] = {}
    try:
        if wanted:
            found = store.lookup(wanted)[1]
            definitions = {
                (table, number): definition
                for table, got in found.items()
                for number, definition in got.items()
                if definition is not None
            }
        stats = wording.stat_hashes(listed, definitions)
        if stats and wording.STAT_TABLE in store.settings.tables:
            got = store.lookup({wording.STAT_TABLE: sorted(stats)})[1][wording.STAT_TABLE]
            names = {n: changes.name_of(d) for n, d in got.items() if changes.name_of(d)}
    except ManifestError:
        # Commits kept landing during the reads: the words give paths instead of stat names.
        log.warning("Could not read stat names for release %s", release_id, exc_info=True)
    return definitions, names


def _url(endpoint: str, **values: Any) -> str:
    return url_for(endpoint, _external=True, **values)
