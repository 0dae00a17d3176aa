"""The API's whole definitions of the live release: one by table and hash (its ETag: its digest),
or a batch of many, each passed through as stored (Bungie's own JSON), never decoded and encoded
again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from flask import Response
from flask import abort
from flask import current_app
from flask import jsonify
from flask import request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import ServiceUnavailable

from app.api import bp
from app.api.caching import REVALIDATE
from app.api.caching import not_modified
from app.extensions import get_settings
from app.manifest.store import Packed
from app.queries import parse_hash
from app.queries import parse_lang
from app.queries import read_view
from app.queries import reader
from app.release_changes import parse_table

# The most definitions one batch may ask for (distinct hashes, all tables together).
MAX_BATCH = 1000
# The header naming the release an answer was read from.
RELEASE_HEADER = "X-Manifest-Release"
NOTHING_CACHED = (
    "No release is cached yet: the first sync has not finished. "
    "Retry once it has (GET /api/v1/manifest shows the live release)."
)
BATCH_SHAPE = 'a JSON object of table name -> list of hashes, e.g. {"DestinyClassDefinition": [1]}'
# (prefix, release, lang, table, hash) -> the ETag of a definition this process answered. A
# release's stored definitions never change, so while Redis vouches for the live release, a 304
# for a definition asked again costs no round trip. Emptied when full: a few MB at most.
_etags: dict[tuple[str, str, str, str, int], str] = {}
ETAGS_KEPT = 20_000


@bp.get("/definitions/<table>/<definition_hash>")
@read_view
def definition(table: str, definition_hash: str) -> ResponseReturnValue:
    """Show one whole definition of the live release, as Bungie sent it (?lang=, default the
    first cached language)."""
    table = parse_table(table)
    number = parse_hash(definition_hash)
    lang = parse_lang(request.args)
    release_id, answer = send_definition(table, number, lang)
    if release_id is None:
        raise ServiceUnavailable(NOTHING_CACHED)
    if answer is None:
        abort(404, description=f"No {table} with hash {number} in release {release_id} ({lang}).")
    return answer


def send_definition(table: str, number: int, lang: str) -> tuple[str | None, Response | None]:
    """Return the live release id and the answer of one stored definition (None: absent).

    A client that holds it as this process answered it gets its 304 without a round trip;
    else one lookup reads it, and its digest is its ETag.
    """
    cached = held_definition(table, number, lang)
    if cached is not None:
        return cached.headers[RELEASE_HEADER], cached
    release_id, found = reader().lookup_packed({table: [number]}, lang)
    if release_id is None:
        return None, None
    return release_id, definition_answer(found[table].get(number), release_id, lang)


def held_definition(table: str, number: int, lang: str) -> Response | None:
    """Return a 304 if the client holds the definition as this process answered it from the
    live release (which Redis vouches for), without a round trip; else None."""
    if not request.if_none_match:
        return None
    store = reader()
    release_id, vouched = store.reader_live_id()
    if not vouched or release_id is None:
        return None
    etag = _etags.get((store.keys.prefix, release_id, lang, table, number))
    cached = not_modified(etag, REVALIDATE) if etag is not None else None
    if cached is not None:
        cached.headers[RELEASE_HEADER] = release_id
    return cached


def definition_answer(stored: Packed | None, release_id: str, lang: str) -> Response | None:
    """Answer one stored definition: its JSON as stored, or a 304 if the client holds it.

    The ETag is the definition's digest, read without decompressing it: a release that leaves
    the definition as it was leaves its ETag too. Weak: the digest is blind to `index`, which
    Bungie renumbers (docs/DECISIONS.md). None if nothing, or no JSON object, is stored.
    """
    if stored is None:
        return None
    etag = stored.digest.hex()
    if len(_etags) >= ETAGS_KEPT:
        _etags.clear()
    _etags[(get_settings().key_prefix, release_id, lang, stored.table, stored.number)] = etag
    cached = not_modified(etag, REVALIDATE)
    if cached is not None:
        cached.headers[RELEASE_HEADER] = release_id
        return cached
    body = stored.json()
    if body is None:
        return None
    headers = {RELEASE_HEADER: release_id, "Content-Language": lang}
    answer = current_app.response_class(body, mimetype="application/json", headers=headers)
    answer.set_etag(etag, weak=True)
    answer.headers["Cache-Control"] = REVALIDATE
    return answer


@bp.post("/definitions")
@read_view
def definitions() -> ResponseReturnValue:
    """Show many whole definitions of one release: the body maps tables to lists of hashes.

    Each is passed through as stored, keyed by its unsigned hash as a decimal string (as in
    Bungie's table files); the hashes the release does not hold are listed under `missing`.
    No token: a read, like every GET of the API (the blueprint checks no CSRF token).
    """
    lang = parse_lang(request.args)
    wanted = parse_batch(request.get_data(cache=False))
    release_id, found = read_live(wanted, lang)
    shown: dict[str, dict[str, msgspec.Raw]] = {}
    missing: dict[str, list[int]] = {}
    for table, values in found.items():
        shown[table] = {str(h): msgspec.Raw(v) for h, v in values.items() if v is not None}
        absent = [h for h, v in values.items() if v is None]
        if absent:
            missing[table] = absent
    response = jsonify(release_id=release_id, lang=lang, definitions=shown, missing=missing)
    response.headers[RELEASE_HEADER] = release_id
    response.headers["Content-Language"] = lang
    return response


def read_live(
    wanted: Mapping[str, list[int]], lang: str
) -> tuple[str, dict[str, dict[int, bytes | None]]]:
    """Read definitions of the live release in one round trip; raise 503 if none is cached.

    A stored row that is not a JSON object counts as absent (the store's reads see to it).
    """
    release_id, found = reader().lookup_raw(wanted, lang)
    if release_id is None:
        raise ServiceUnavailable(NOTHING_CACHED)
    return release_id, found


def parse_batch(body: bytes) -> dict[str, list[int]]:
    """Read a batch: a JSON object of table name -> list of hashes (numbers, or decimal strings).

    Duplicates collapse (the order asked in is kept); at most MAX_BATCH distinct hashes in all.
    Raise BadRequest naming what is wrong.
    """
    try:
        asked: Any = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The body is not JSON ({exc}); send {BATCH_SHAPE}.") from None
    if not isinstance(asked, dict) or not asked:
        raise BadRequest(f"The body must be {BATCH_SHAPE}.")
    wanted: dict[str, list[int]] = {}
    total = 0
    for name, hashes in asked.items():
        table = parse_table(name)
        if not isinstance(hashes, list):
            raise BadRequest(f"{table} must name a list of hashes, not {_kind(hashes)}.")
        wanted[table] = list(dict.fromkeys(_batch_hash(table, value) for value in hashes))
        total += len(wanted[table])
        if total > MAX_BATCH:
            raise BadRequest(f"A batch asks for at most {MAX_BATCH:,} definitions in all.")
    if total == 0:
        raise BadRequest("The batch asks for no definition: give each table at least one hash.")
    return wanted


def _batch_hash(table: str, value: object) -> int:
    """Read one hash of a batch: a whole number or a decimal string (signed: converted)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{table}: {_kind(value)} is not a hash (a whole number).")
    try:
        return parse_hash(str(value))
    except BadRequest as exc:
        raise BadRequest(f"{table}: {exc.description}") from None


def _kind(value: object) -> str:
    """Name a JSON value's type as a message shows it."""
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, float):
        return f"the number {value!r}"
    names = {bool: "a boolean", dict: "an object", list: "a list"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
