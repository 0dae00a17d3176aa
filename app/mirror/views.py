"""Bungie's manifest routes, answered from the cache: the manifest, each table's file and the
aggregate (streamed), and single definitions, in Bungie's shapes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
from flask import Response
from flask import request
from flask import stream_with_context
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from app.manifest.store import KeptRelease
from app.manifest.store import ManifestStore
from app.mirror import bp
from app.mirror.bungie import IMMUTABLE
from app.mirror.bungie import INVALID_PARAMETERS
from app.mirror.bungie import NO_SUCH_ROUTE
from app.mirror.bungie import NOT_FOUND
from app.mirror.bungie import PARAMETER_PARSE_FAILURE
from app.mirror.bungie import RELEASE_HEADER
from app.mirror.bungie import SYSTEM_DISABLED
from app.mirror.bungie import content_not_found
from app.mirror.bungie import not_modified
from app.mirror.bungie import platform_error
from app.mirror.bungie import platform_ok
from app.queries import parse_hash
from app.queries import read_view
from app.queries import reader
from app.queries import replica_failed
from app.queries import replica_failure

MANIFEST_ROUTE = "/Platform/Destiny2/Manifest/"
CONTENT_ROOT = "/common/destiny2_content/json"
# The file holding every table of a language, as Bungie names it.
AGGREGATE = "aggregate"
_RELEASE_ID = re.compile(r"[0-9A-Za-z]{1,64}")
NOTHING_CACHED = "No release is cached yet: the first sync has not finished. Retry once it has."
NOT_WHOLE = (
    "The live release was cached before definitions were kept whole: this mirror serves "
    "the next release Bungie publishes."
)
ROUTES_SERVED = (
    "This mirror answers Bungie's manifest routes only: GET /Platform/Destiny2/Manifest/ "
    "and GET /Platform/Destiny2/Manifest/{entityType}/{hashIdentifier}/."
)


@bp.get(MANIFEST_ROUTE, strict_slashes=False)
@read_view
def manifest() -> ResponseReturnValue:
    """Answer Bungie's GetDestinyManifest for the live release, its files on this server."""
    kept = live_release(reader())
    if kept is None:
        return platform_error(SYSTEM_DISABLED, NOTHING_CACHED)
    if not kept.whole:
        return platform_error(SYSTEM_DISABLED, NOT_WHOLE)
    return platform_ok(manifest_of(kept), kept.release.id)


@bp.get(MANIFEST_ROUTE + "<entity_type>/<hash_identifier>/", strict_slashes=False)
@read_view
def entity_definition(entity_type: str, hash_identifier: str) -> ResponseReturnValue:
    """Answer Bungie's GetDestinyEntityDefinition: one whole definition of the live release,
    passed through as stored (`?lc=` picks a cached language, as Bungie's `lc` does)."""
    store = reader()
    settings = store.settings
    if entity_type not in settings.tables:
        return platform_error(
            INVALID_PARAMETERS,
            f"{entity_type[:80]!r} is not a definition type this mirror caches; it caches "
            f"{', '.join(settings.tables)}.",
        )
    try:
        number = parse_hash(hash_identifier)
    except BadRequest as exc:
        return platform_error(PARAMETER_PARSE_FAILURE, f"hashIdentifier: {exc.description}")
    lang = request.args.get("lc") or settings.languages[0]
    if lang not in settings.languages:
        return platform_error(
            INVALID_PARAMETERS,
            f"lc={lang[:20]!r} is not a cached language; they are {', '.join(settings.languages)}.",
        )
    release_id, found = store.lookup_raw({entity_type: [number]}, lang)
    if release_id is None:
        return platform_error(SYSTEM_DISABLED, NOTHING_CACHED)
    stored = found[entity_type].get(number)
    if stored is None:
        return platform_error(
            NOT_FOUND, f"No {entity_type} with hash {number} in release {release_id} ({lang})."
        )
    return platform_ok(msgspec.Raw(stored), release_id)


@bp.get("/Platform/<path:route>")
def other_platform_route(route: str) -> ResponseReturnValue:
    """Answer a Platform route the mirror does not serve in Bungie's envelope, not as a page."""
    return platform_error(NO_SUCH_ROUTE, ROUTES_SERVED)


@bp.get(CONTENT_ROOT + "/<lang>/<name>.json")
@read_view
def content_file(lang: str, name: str) -> ResponseReturnValue:
    """Send one table of a kept release, or all of them (`aggregate`), as Bungie's JSON file.

    Streamed: a slice of the table is read while the one before is sent. The path names its
    release, so the answer never changes: cached for good, with an ETag for revalidation. A
    release no longer kept, a table or language it does not hold: the CDN's 404. If the
    release is dropped mid-stream, the connection is dropped and the body ends short.
    """
    table, _, release_id = name.rpartition("-")
    store = reader()
    etag = f"{release_id}-{lang}-{table}"
    if _live_and_configured(store, release_id, lang, table):
        # Redis vouches that this is the live release (its tables are the configured ones):
        # a client that holds the file revalidates without a Redis read.
        cached = not_modified(etag, IMMUTABLE, weak=True)
        if cached is not None:
            return cached
    kept = store.kept_release(release_id) if table and _RELEASE_ID.fullmatch(release_id) else None
    if kept is None or not kept.whole or lang not in kept.release.languages:
        return content_not_found()
    if table != AGGREGATE and table not in kept.release.tables:
        return content_not_found()
    cached = not_modified(etag, IMMUTABLE, weak=True)
    if cached is not None:
        return cached
    if table == AGGREGATE:
        chunks = store.aggregate_file(release_id, lang, kept.release.tables)
    else:
        chunks = store.table_file(release_id, lang, table)
    if chunks is None:  # dropped since the look above
        return content_not_found()
    answer = Response(stream_with_context(_judged(chunks)), content_type="application/json")
    # Weak: the same definitions, but their order in the file is Redis's (HSCAN), which a
    # replica or a reloaded server may give otherwise.
    answer.set_etag(etag, weak=True)
    answer.headers["Cache-Control"] = IMMUTABLE
    answer.headers["Content-Language"] = lang
    answer.headers[RELEASE_HEADER] = release_id
    return answer


def _judged(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield `chunks`. A replica that fails mid-stream cuts the body short (sent already, it
    cannot run again on the primary), but is judged as a failed read is in `read_view`: the
    reads that follow go to the primary."""
    try:
        yield from chunks
    except Exception as exc:
        failure = replica_failure(exc)
        if failure is not None:
            replica_failed(failure)
        raise


def _live_and_configured(store: ManifestStore, release_id: str, lang: str, table: str) -> bool:
    """Say whether Redis vouches `release_id` is live, and it holds `lang` and `table`."""
    live, vouched = store.reader_live_id()
    settings = store.settings
    return (
        vouched
        and live == release_id
        and lang in settings.languages
        and (table == AGGREGATE or table in settings.tables)
    )


@bp.get("/common/destiny2_content/<path:path>")
def other_content(path: str) -> ResponseReturnValue:
    """Answer a content path the mirror does not hold as the CDN does, not as a page."""
    return content_not_found()


def live_release(store: ManifestStore) -> KeptRelease | None:
    """Return the live release (read from the pointer itself unless Redis vouches for it)."""
    release_id = store.fresh_live_id()
    kept = store.kept_release(release_id) if release_id else None
    if kept is None and release_id is not None:
        # Dropped between the two reads: commits landed meanwhile, the pointer has moved on.
        release_id = store.live_id()
        kept = store.kept_release(release_id) if release_id else None
    return kept


def manifest_of(kept: KeptRelease) -> dict[str, Any]:
    """Return the DestinyManifest of a release: its version, and its cached files by language.

    What the mirror does not serve (SQLite databases, gear assets, the clan banner database)
    is left empty or out, never pointed elsewhere; every field of Bungie's schema is optional.
    """
    release = kept.release
    return {
        "version": release.version,
        "mobileGearAssetDataBases": [],
        "mobileWorldContentPaths": {},
        "jsonWorldContentPaths": {
            lang: content_path(lang, AGGREGATE, release.id) for lang in release.languages
        },
        "jsonWorldComponentContentPaths": {
            lang: {table: content_path(lang, table, release.id) for table in release.tables}
            for lang in release.languages
        },
        "mobileGearCDN": {},
        "iconImagePyramidInfo": [],
    }


def content_path(lang: str, name: str, release_id: str) -> str:
    """Return the path of a file of a release, relative to this server as Bungie's are to its."""
    return f"{CONTENT_ROOT}/{lang}/{name}-{release_id}.json"
