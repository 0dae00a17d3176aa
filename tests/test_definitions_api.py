"""Whole definitions over the API (/api/v1/definitions), and ?lang= on the item pages and API:
what a client gets, checked against what the demo origin serves."""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import msgspec
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin

CLASS_TABLE = "DestinyClassDefinition"
# Served by the demo origin, not cached by the app.
UNCACHED_TABLE = "DestinySandboxPerkDefinition"
LANGUAGES = ("en", "fr")
CACHED_LANGUAGES = "en, fr"


@pytest.fixture
def app_overrides(app_overrides: dict[str, Any]) -> dict[str, Any]:
    """The app caches two languages (the demo origin serves en, fr and de)."""
    return {**app_overrides, "MANIFEST_LANGUAGES": LANGUAGES}


@pytest.fixture
def synced(app: Flask) -> sync.SyncResult:
    """Fill the cache from the demo origin, as a worker would."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    return result


def origin_table(admin: DemoAdmin, table: str, lang: str) -> dict[str, bytes]:
    """Return a table as the demo origin serves it now: each entry's JSON as sent, by hash."""
    path = admin.state()["paths"]["jsonWorldComponentContentPaths"][lang][table]
    response = requests.get(admin.url + path, timeout=30)
    response.raise_for_status()
    entries = msgspec.json.decode(response.content, type=dict[str, msgspec.Raw])
    return {key: bytes(value) for key, value in entries.items()}


def sample(entries: dict[str, bytes]) -> list[str]:
    """Return a few hashes of a table: its first ten, and one past 2**31 if it has one."""
    chosen = list(entries)[:10]
    chosen += [h for h in entries if int(h) >= 2**31][:1]
    return list(dict.fromkeys(chosen))


def name(definition: bytes | dict[str, Any]) -> str:
    found = json.loads(definition) if isinstance(definition, bytes) else definition
    return str(found["displayProperties"]["name"])


def assert_json_error(response: Any, status: int, *named: str) -> str:
    """Check a JSON error's status and shape, and that its message names each of `named`."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message"}
    message = str(body["message"])
    for part in named:
        assert part in message, message
    assert "Traceback" not in message
    return message


# -- GET /definitions/<table>/<hash> --------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("table", [CLASS_TABLE, ITEM_TABLE])
def test_a_definition_is_the_one_the_origin_serves(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult, table: str, lang: str
) -> None:
    served = origin_table(admin, table, lang)
    query = {} if lang == "en" else {"lang": lang}

    for definition_hash in sample(served):
        response = client.get(f"/api/v1/definitions/{table}/{definition_hash}", query_string=query)

        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "application/json"
        assert response.headers["X-Manifest-Release"] == synced.release_id
        assert response.headers["Content-Language"] == lang
        assert response.get_json() == json.loads(served[definition_hash])


def test_a_definition_is_passed_through_as_bungie_sent_it(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    served = origin_table(admin, ITEM_TABLE, "fr")
    definition_hash = sample(served)[0]

    response = client.get(f"/api/v1/definitions/{ITEM_TABLE}/{definition_hash}?lang=fr")

    assert response.get_data() == served[definition_hash]


def test_the_languages_differ_and_the_default_is_the_first(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    english = origin_table(admin, ITEM_TABLE, "en")
    definition_hash = next(h for h in english if name(english[h]))
    url = f"/api/v1/definitions/{ITEM_TABLE}/{definition_hash}"

    default, en, fr = client.get(url), client.get(f"{url}?lang=en"), client.get(f"{url}?lang=FR")

    assert default.get_data() == en.get_data()
    assert name(en.get_data()) == name(english[definition_hash])
    assert name(fr.get_data()) == f"[fr] {name(english[definition_hash])}"


def test_a_signed_hash_reads_the_same_definition(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    big = next(int(h) for h in origin_table(admin, ITEM_TABLE, "en") if int(h) >= 2**31)

    signed = client.get(f"/api/v1/definitions/{ITEM_TABLE}/{big - 2**32}")
    unsigned = client.get(f"/api/v1/definitions/{ITEM_TABLE}/{big}")

    assert signed.status_code == 200
    assert signed.get_data() == unsigned.get_data()
    assert signed.get_json()["hash"] == big


def test_an_unknown_hash_is_404_naming_table_and_hash(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    response = client.get(f"/api/v1/definitions/{CLASS_TABLE}/12345")
    assert_json_error(response, 404, CLASS_TABLE, "12345")


@pytest.mark.parametrize(
    ("path", "named"),
    [
        (f"{UNCACHED_TABLE}/1", (UNCACHED_TABLE, ITEM_TABLE, CLASS_TABLE)),
        ("nonsense/1", ("nonsense", ITEM_TABLE)),
        (f"{CLASS_TABLE}/1?lang=de", ("'de'", CACHED_LANGUAGES)),
        (f"{CLASS_TABLE}/1?lang=xx-yy", ("'xx-yy'", CACHED_LANGUAGES)),
        (f"{CLASS_TABLE}/abc", ("'abc'", "hash")),
        (f"{CLASS_TABLE}/1.5", ("'1.5'",)),
        (f"{CLASS_TABLE}/{2**32}", (str(2**32), "32-bit")),
        (f"{CLASS_TABLE}/{-(2**31) - 1}", (str(-(2**31) - 1), "32-bit")),
    ],
)
def test_bad_parameters_are_400_naming_the_problem(
    client: FlaskClient, synced: sync.SyncResult, path: str, named: tuple[str, ...]
) -> None:
    assert_json_error(client.get(f"/api/v1/definitions/{path}"), 400, *named)


def test_before_any_sync_a_definition_is_503(client: FlaskClient) -> None:
    response = client.get(f"/api/v1/definitions/{CLASS_TABLE}/1")
    assert_json_error(response, 503, "No release is cached yet")


@pytest.mark.budget
def test_budget_a_definition_is_one_round_trip(
    client: FlaskClient,
    admin: DemoAdmin,
    synced: sync.SyncResult,
    round_trips: list[list[tuple[str, ...]]],
) -> None:
    hashes = sample(origin_table(admin, ITEM_TABLE, "en"))
    client.get(f"/api/v1/definitions/{ITEM_TABLE}/{hashes[0]}")  # this process sees the release
    round_trips.clear()

    one = client.get(f"/api/v1/definitions/{ITEM_TABLE}/{hashes[1]}?lang=fr")
    one_trips = list(round_trips)
    round_trips.clear()
    batch = client.post("/api/v1/definitions", json={ITEM_TABLE: hashes, CLASS_TABLE: [1, 2]})

    assert one.status_code == batch.status_code == 200
    assert len(one_trips) == 1
    assert [c[0] for c in one_trips[0]].count("HMGET") == 1
    assert len(round_trips) == 1
    assert [c[0] for c in round_trips[0]].count("HMGET") == 2


# -- POST /definitions ----------------------------------------------------------------------


def test_a_batch_answers_every_definition_and_lists_the_missing(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    items = origin_table(admin, ITEM_TABLE, "fr")
    classes = origin_table(admin, CLASS_TABLE, "fr")
    item_hashes = sample(items)
    big = next(int(h) for h in item_hashes if int(h) >= 2**31)
    asked = {
        # Numbers and decimal strings, a signed hash, duplicates, and two hashes not cached.
        ITEM_TABLE: [int(h) for h in item_hashes] + [item_hashes[0], big - 2**32, 12345],
        CLASS_TABLE: [*classes, 7, 7],
    }

    # No token, no session, no CSRF token: a public read.
    response = client.post("/api/v1/definitions?lang=fr", json=asked)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Manifest-Release"] == synced.release_id
    body = response.get_json()
    assert body["release_id"] == synced.release_id
    assert body["lang"] == "fr"
    found = body["definitions"]
    assert set(found) == {ITEM_TABLE, CLASS_TABLE}
    assert list(found[ITEM_TABLE]) == item_hashes
    assert found[ITEM_TABLE] == {h: json.loads(items[h]) for h in item_hashes}
    assert found[CLASS_TABLE] == {h: json.loads(v) for h, v in classes.items()}
    assert body["missing"] == {ITEM_TABLE: [12345], CLASS_TABLE: [7]}


def test_a_batch_passes_the_definitions_through_as_bungie_sent_them(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    items = origin_table(admin, ITEM_TABLE, "en")
    hashes = sample(items)

    body = client.post("/api/v1/definitions", json={ITEM_TABLE: hashes}).get_data()

    for definition_hash in hashes:
        assert b'"%s":%s' % (definition_hash.encode(), items[definition_hash]) in body


def test_a_batch_reads_the_first_language_by_default(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    classes = origin_table(admin, CLASS_TABLE, "en")
    asked = json.dumps({CLASS_TABLE: list(classes)})

    # As `curl -d` sends it: a form's content type, a JSON body.
    response = client.post(
        "/api/v1/definitions", data=asked, content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["lang"] == "en"
    assert body["definitions"][CLASS_TABLE] == {h: json.loads(v) for h, v in classes.items()}
    assert body["missing"] == {}


def test_duplicates_collapse_before_the_limit(client: FlaskClient, synced: sync.SyncResult) -> None:
    hashes = list(range(1, 1001))
    asked = {ITEM_TABLE: hashes + [str(h) for h in hashes]}

    response = client.post("/api/v1/definitions", json=asked)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["missing"] == {ITEM_TABLE: hashes}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"not json", ("not JSON",)),
        (b"", ("not JSON",)),
        (b"[1, 2]", ("JSON object of table name",)),
        (b"{}", ("JSON object of table name",)),
        (b'{"DestinySandboxPerkDefinition": [1]}', (UNCACHED_TABLE, ITEM_TABLE, CLASS_TABLE)),
        (b'{"DestinyInventoryItemDefinition": 5}', (ITEM_TABLE, "list of hashes")),
        (b'{"DestinyInventoryItemDefinition": {"1": 1}}', ("list of hashes", "an object")),
        (b'{"DestinyInventoryItemDefinition": [1.5]}', (ITEM_TABLE, "1.5")),
        (b'{"DestinyInventoryItemDefinition": [true]}', ("a boolean",)),
        (b'{"DestinyInventoryItemDefinition": [null]}', ("null",)),
        (b'{"DestinyInventoryItemDefinition": ["abc"]}', ("'abc'",)),
        (b'{"DestinyInventoryItemDefinition": [4294967296]}', ("4294967296", "32-bit")),
        (b'{"DestinyInventoryItemDefinition": [-2147483649]}', ("-2147483649", "32-bit")),
        (b'{"DestinyInventoryItemDefinition": []}', ("no definition",)),
        (json.dumps({ITEM_TABLE: list(range(1001))}).encode(), ("at most 1,000",)),
        (
            json.dumps(
                {ITEM_TABLE: list(range(600)), CLASS_TABLE: list(range(600, 1001))}
            ).encode(),
            ("at most 1,000",),
        ),
    ],
)
def test_a_bad_batch_is_400_naming_the_problem(
    client: FlaskClient, synced: sync.SyncResult, body: bytes, named: tuple[str, ...]
) -> None:
    response = client.post("/api/v1/definitions", data=body, content_type="application/json")
    assert_json_error(response, 400, *named)


def test_a_batch_in_a_language_not_cached_is_400(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    response = client.post("/api/v1/definitions?lang=de", json={CLASS_TABLE: [1]})
    assert_json_error(response, 400, "'de'", CACHED_LANGUAGES)


def test_a_batch_over_the_body_limit_is_413(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/definitions",
        data=b" " * (TestingConfig.MAX_CONTENT_LENGTH + 1),
        content_type="application/json",
    )
    assert_json_error(response, 413)


def test_before_any_sync_a_batch_is_503(client: FlaskClient) -> None:
    response = client.post("/api/v1/definitions", json={CLASS_TABLE: [1]})
    assert_json_error(response, 503, "No release is cached yet")


def test_the_sync_trigger_still_wants_its_token(client: FlaskClient) -> None:
    # The batch read is a POST without a token; the trigger beside it is not opened by it.
    assert_json_error(client.post("/api/v1/manifest/sync", json={CLASS_TABLE: [1]}), 401)


# -- ?lang= on the item pages and the item API ----------------------------------------------


def test_the_item_page_shows_the_french_name(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    french = origin_table(admin, ITEM_TABLE, "fr")
    definition_hash = next(h for h in french if name(french[h]).startswith("[fr] "))

    page = client.get(f"/items/{definition_hash}?lang=fr")
    english = client.get(f"/items/{definition_hash}")

    assert page.status_code == 200
    assert f"<h1>{html.escape(name(french[definition_hash]))}</h1>" in page.get_data(as_text=True)
    assert "[fr]" not in english.get_data(as_text=True)
    # Back to the search, in French.
    assert 'href="/items?lang=fr"' in page.get_data(as_text=True)


def test_the_item_search_reads_french_and_its_links_keep_it(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    french = origin_table(admin, ITEM_TABLE, "fr")
    named = {h for h, v in french.items() if "[fr]" in name(v)}
    assert len(named) > 5

    page = client.get("/items", query_string={"q": "[FR]", "lang": "fr", "per_page": 5})
    in_english = client.get("/items", query_string={"q": "[FR]", "per_page": 5})

    shown = page.get_data(as_text=True)
    assert f"{len(named):,} items found, page 1 of" in shown
    assert shown.count('?lang=fr">[fr] ') == 5  # every item link keeps the language
    following = re.search(r'<a rel="next" href="([^"]+)"', shown)
    assert following is not None
    query = parse_qs(urlsplit(html.unescape(following.group(1))).query)
    assert query == {"q": ["[FR]"], "per_page": ["5"], "lang": ["fr"], "page": ["2"]}
    assert '<input type="hidden" name="lang" value="fr">' in shown
    assert "0 items found" in in_english.get_data(as_text=True)


def test_a_language_not_cached_is_a_400_page_naming_the_cached_ones(
    client: FlaskClient, synced: sync.SyncResult
) -> None:
    for path in ("/items?lang=de", "/items/1?lang=de"):
        response = client.get(path)
        assert response.status_code == 400
        assert response.mimetype == "text/html"
        assert f"the cached languages are: {CACHED_LANGUAGES}" in response.get_data(as_text=True)


def test_the_item_api_reads_the_language_asked_for(
    client: FlaskClient, admin: DemoAdmin, synced: sync.SyncResult
) -> None:
    french = origin_table(admin, ITEM_TABLE, "fr")
    named = {int(h) for h, v in french.items() if "[fr]" in name(v)}
    definition_hash = min(named)

    query = {"q": "[fr]", "lang": "fr", "per_page": 200}
    found = [client.get("/api/v1/items", query_string={**query, "page": p}) for p in (1, 2)]
    one = client.get(f"/api/v1/items/{definition_hash}?lang=fr")
    english = client.get(f"/api/v1/items/{definition_hash}")

    assert found[0].get_json()["total"] == len(named)
    assert {item["hash"] for page in found for item in page.get_json()["items"]} == named
    assert name(one.get_json()) == name(french[str(definition_hash)])
    assert one.headers["X-Manifest-Release"] == synced.release_id
    assert name(english.get_json()) == name(french[str(definition_hash)]).removeprefix("[fr] ")


@pytest.mark.parametrize("path", ["/api/v1/items?lang=de", "/api/v1/items/1?lang=xx"])
def test_the_item_api_refuses_a_language_not_cached(
    client: FlaskClient, synced: sync.SyncResult, path: str
) -> None:
    assert_json_error(client.get(path), 400, CACHED_LANGUAGES)
