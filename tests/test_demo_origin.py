"""The demo origin over real HTTP: Bungie's shapes, determinism, releases, faults, admin API."""

from __future__ import annotations

import http.client
import io
import json
import sqlite3
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import requests

from devtools.demo.control import PROJECT_ROOT
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginError
from devtools.demo.control import DemoOriginProcess
from devtools.demo.data import ITEM_TABLE
from devtools.demo.data import TABLES
from devtools.demo.data import DemoData
from devtools.demo.origin import MAX_SEARCH_BODY

ITEMS = 300
TIMEOUT = (5, 30)
OPENAPI = PROJECT_ROOT.parent / "shared" / "bungie" / "openapi.json"
MANIFEST = "/Platform/Destiny2/Manifest/"
SMALL_SCHEMAS = {
    "DestinyClassDefinition": "Destiny.Definitions.DestinyClassDefinition",
    "DestinyDamageTypeDefinition": "Destiny.Definitions.DestinyDamageTypeDefinition",
    "DestinyInventoryBucketDefinition": "Destiny.Definitions.DestinyInventoryBucketDefinition",
    "DestinyItemTierTypeDefinition": "Destiny.Definitions.Items.DestinyItemTierTypeDefinition",
    "DestinyStatDefinition": "Destiny.Definitions.DestinyStatDefinition",
    "DestinySandboxPerkDefinition": "Destiny.Definitions.DestinySandboxPerkDefinition",
}


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin() -> Iterator[DemoOriginProcess]:
    with DemoOriginProcess("--items", str(ITEMS)) as process:
        yield process
    # Clients hang up mid-answer in these tests: the origin must take that quietly.
    assert "Traceback" not in process.stderr
    assert process.returncode == 0


@pytest.fixture
def admin(origin: DemoOriginProcess) -> Iterator[DemoAdmin]:
    client = origin.admin
    client.reset()
    yield client
    client.reset()
    client.close()


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    if not OPENAPI.exists():
        pytest.skip(f"Bungie's OpenAPI description is not at {OPENAPI} (see DESIGN.md)")
    return json.loads(OPENAPI.read_text(encoding="utf-8"))


def schema_validator(openapi: dict[str, Any], pointer: str) -> Any:
    """Return a validator for the schema at `pointer` in Bungie's OpenAPI document."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT202012

    resource = referencing.Resource.from_contents(openapi, default_specification=DRAFT202012)
    registry = referencing.Registry().with_resource("urn:bungie-openapi", resource)
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("uint32")(lambda value: not isinstance(value, int) or 0 <= value < 2**32)
    checker.checks("int32")(lambda value: not isinstance(value, int) or -(2**31) <= value < 2**31)
    return jsonschema.Draft202012Validator(
        {"$ref": f"urn:bungie-openapi#{pointer}"}, registry=registry, format_checker=checker
    )


def get(url: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(url + path, timeout=TIMEOUT, **kwargs)


def manifest(url: str, **kwargs: Any) -> dict[str, Any]:
    response = get(url, MANIFEST, **kwargs)
    assert response.status_code == 200
    body = response.json()
    assert body["ErrorCode"] == 1
    return body["Response"]


def table_path(man: dict[str, Any], table: str = ITEM_TABLE, lang: str = "en") -> str:
    return man["jsonWorldComponentContentPaths"][lang][table]


def fetch(url: str, path: str) -> bytes:
    response = get(url, path)
    assert response.status_code == 200, path
    return response.content


def raw_entries(data: bytes) -> dict[str, bytes]:
    """Return each definition's exact bytes, keyed by the table's decimal hash keys."""
    decoded = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    return {key: bytes(raw) for key, raw in decoded.items()}


def raw_request(url: str, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send a GET with http.client, to see exactly what the server sends."""
    address = urlsplit(url)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("GET", path)
    return connection, connection.getresponse()


# -- the manifest ---------------------------------------------------------------------------------


def test_manifest_envelope_validates_against_bungie_openapi(
    origin: DemoOriginProcess, admin: DemoAdmin, openapi: dict[str, Any]
) -> None:
    response = get(origin.url, MANIFEST)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    pointer = (
        "/components/responses/Destiny.Config.DestinyManifest/content/application~1json/schema"
    )
    schema_validator(openapi, pointer).validate(body)
    assert body["ErrorCode"] == 1
    assert body["ErrorStatus"] == "Success"
    assert body["ThrottleSeconds"] == 0
    man = body["Response"]
    assert set(man["jsonWorldComponentContentPaths"]) == {"en", "fr", "de"}
    for lang, tables in man["jsonWorldComponentContentPaths"].items():
        assert list(tables) == list(TABLES)
        for table, path in tables.items():
            assert path.startswith(f"/common/destiny2_content/json/{lang}/{table}-")
            assert path.endswith(".json")
        sqlite_path = man["mobileWorldContentPaths"][lang]
        assert sqlite_path.startswith(f"/common/destiny2_content/sqlite/{lang}/world_sql_content_")
    assert man["version"] == admin.state()["version"]


def test_manifest_ignores_query_and_accepts_missing_slash(origin: DemoOriginProcess) -> None:
    assert manifest(origin.url) == get(origin.url, MANIFEST + "?cb=5").json()["Response"]
    assert get(origin.url, MANIFEST.rstrip("/")).json()["ErrorCode"] == 1


# -- tables ---------------------------------------------------------------------------------------


def test_item_table_is_compact_json_keyed_by_hash(origin: DemoOriginProcess) -> None:
    man = manifest(origin.url)
    response = get(origin.url, table_path(man))
    small = {table: fetch(origin.url, table_path(man, table)) for table in TABLES[1:]}

    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.content)
    items = response.json()
    assert len(items) == ITEMS
    # Compact: what a compact encoder makes of the parsed table is the same bytes.
    assert json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode() == response.content
    buckets = {int(h) for h in json.loads(small["DestinyInventoryBucketDefinition"])}
    tiers = {int(h) for h in json.loads(small["DestinyItemTierTypeDefinition"])}
    stats = set(json.loads(small["DestinyStatDefinition"]))
    damage_types = {int(h) for h in json.loads(small["DestinyDamageTypeDefinition"])}
    for key, item in items.items():
        assert key == str(item["hash"])
        assert 0 < item["hash"] < 2**32
        assert item["redacted"] in (False, True)
        assert item["blacklisted"] is False
        # A redacted item (a few are, as in Bungie's data) has a blank name and description.
        assert bool(item["displayProperties"]["name"]) is not item["redacted"]
        assert bool(item["displayProperties"]["description"]) is not item["redacted"]
        assert item["displayProperties"]["icon"].startswith("/common/destiny2_content/icons/")
        assert item["inventory"]["bucketTypeHash"] in buckets
        assert item["inventory"]["tierTypeHash"] in tiers
        assert set(item["stats"]["stats"]) <= stats
        for stat_hash, stat in item["stats"]["stats"].items():
            assert stat["statHash"] == int(stat_hash)
        assert set(item["damageTypeHashes"]) <= damage_types
        if item["itemType"] == 2:
            assert item["classType"] in (0, 1, 2)
            assert item["stats"]["stats"]
        else:
            assert item["classType"] == 3 or item["itemType"] == 16
        if item["itemType"] == 3:
            assert item["stats"]["stats"]
            assert item["sockets"]["socketEntries"]
            assert item["defaultDamageTypeHash"] in damage_types
    assert len({item["index"] for item in items.values()}) == ITEMS
    assert 0 < sum(item["redacted"] for item in items.values()) <= ITEMS // 100
    tier_types = [item["inventory"]["tierType"] for item in items.values()]
    assert tier_types.count(5) > tier_types.count(6) > 0
    item_types = {item["itemType"] for item in items.values()}
    assert {2, 3, 19} <= item_types


def test_definitions_validate_against_bungie_openapi(
    origin: DemoOriginProcess, openapi: dict[str, Any]
) -> None:
    man = manifest(origin.url)
    items = json.loads(fetch(origin.url, table_path(man)))
    item_schema = schema_validator(
        openapi, "/components/schemas/Destiny.Definitions.DestinyInventoryItemDefinition"
    )

    by_type: dict[int, list[Any]] = {}
    for item in items.values():
        by_type.setdefault(item["itemType"], []).append(item)
    for definitions in by_type.values():
        for item in definitions[:5]:
            item_schema.validate(item)
    for table, schema in SMALL_SCHEMAS.items():
        validator = schema_validator(openapi, f"/components/schemas/{schema}")
        for definition in json.loads(fetch(origin.url, table_path(man, table))).values():
            validator.validate(definition)


def test_small_tables_have_the_documented_entries(origin: DemoOriginProcess) -> None:
    man = manifest(origin.url)

    def table(name: str) -> dict[str, Any]:
        return json.loads(fetch(origin.url, table_path(man, name)))

    classes = table("DestinyClassDefinition").values()
    assert {(c["displayProperties"]["name"], c["classType"]) for c in classes} == {
        ("Titan", 0),
        ("Hunter", 1),
        ("Warlock", 2),
    }
    damage = {
        d["displayProperties"]["name"]: d["enumValue"]
        for d in table("DestinyDamageTypeDefinition").values()
    }
    assert damage == {"Kinetic": 1, "Arc": 2, "Solar": 3, "Void": 4, "Stasis": 6, "Strand": 7}
    buckets = {
        b["displayProperties"]["name"] for b in table("DestinyInventoryBucketDefinition").values()
    }
    assert {"Kinetic Weapons", "Energy Weapons", "Power Weapons", "Helmet", "Ghost"} <= buckets
    assert len(buckets) >= 20
    tiers = {
        t["displayProperties"]["name"] for t in table("DestinyItemTierTypeDefinition").values()
    }
    assert {"Basic", "Common", "Rare", "Legendary", "Exotic"} <= tiers
    assert len(table("DestinyStatDefinition")) >= 24
    assert len(table("DestinySandboxPerkDefinition")) >= 24
    for name in TABLES[1:]:
        for key, definition in table(name).items():
            assert key == str(definition["hash"])
            assert {"index", "redacted", "blacklisted", "displayProperties"} <= set(definition)


def test_languages_share_hashes_with_translated_names(origin: DemoOriginProcess) -> None:
    man = manifest(origin.url)
    english = json.loads(fetch(origin.url, table_path(man, lang="en")))
    french = json.loads(fetch(origin.url, table_path(man, lang="fr")))

    assert list(french) == list(english)
    for key, item in english.items():
        name = item["displayProperties"]["name"]
        assert french[key]["displayProperties"]["name"] == (f"[fr] {name}" if name else "")
        assert french[key]["inventory"]["tierTypeHash"] == item["inventory"]["tierTypeHash"]


def test_sqlite_zip_holds_the_same_definitions_with_signed_ids(
    origin: DemoOriginProcess, tmp_path: Path
) -> None:
    man = manifest(origin.url)
    path = man["mobileWorldContentPaths"]["en"]
    response = get(origin.url, path)
    json_items = raw_entries(fetch(origin.url, table_path(man)))

    assert response.headers["Content-Type"] == "application/octet-stream"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert names == [path.rsplit("/", 1)[1]]
        database = tmp_path / "world.sqlite"
        database.write_bytes(archive.read(names[0]))
    connection = sqlite3.connect(database)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        rows = connection.execute("SELECT id, json FROM DestinyInventoryItemDefinition").fetchall()
    finally:
        connection.close()
    assert set(TABLES) <= tables
    assert len(rows) == ITEMS
    assert any(row_id < 0 for row_id, _ in rows)
    for row_id, definition in rows:
        assert -(2**31) <= row_id < 2**31
        key = str(row_id & 0xFFFFFFFF)
        data = definition.encode() if isinstance(definition, str) else definition
        assert data == json_items[key]


def test_aggregate_file_holds_every_table(origin: DemoOriginProcess) -> None:
    man = manifest(origin.url)
    aggregate = json.loads(fetch(origin.url, man["jsonWorldContentPaths"]["de"]))

    assert list(aggregate) == list(TABLES)
    assert aggregate[ITEM_TABLE] == json.loads(fetch(origin.url, table_path(man, lang="de")))


def test_content_lookup_ignores_the_query_and_404s_unknown_paths(
    origin: DemoOriginProcess,
) -> None:
    path = table_path(manifest(origin.url), "DestinyClassDefinition")

    assert fetch(origin.url, path + "?cb=123") == fetch(origin.url, path)
    assert get(origin.url, path.replace(".json", "0.json")).status_code == 404
    assert get(origin.url, "/common/destiny2_content/../../etc/passwd").status_code == 404
    assert get(origin.url, "/nothing/here").status_code == 404


def test_concurrent_downloads_get_the_same_bytes(origin: DemoOriginProcess) -> None:
    path = table_path(manifest(origin.url))
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: fetch(origin.url, path), range(8)))
    assert len(set(bodies)) == 1


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_gives_same_paths_and_bytes_other_seed_differs(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    with (
        DemoOriginProcess("--items", str(ITEMS)) as twin,
        DemoOriginProcess("--items", str(ITEMS), "--seed", "2") as other,
    ):
        ours, theirs, others = manifest(origin.url), manifest(twin.url), manifest(other.url)
        assert theirs == ours
        for table in TABLES:
            assert fetch(twin.url, table_path(theirs, table)) == fetch(
                origin.url, table_path(ours, table)
            )
        sqlite_path = ours["mobileWorldContentPaths"]["fr"]
        assert fetch(twin.url, sqlite_path) == fetch(origin.url, sqlite_path)

        assert table_path(others) != table_path(ours)
        assert others["version"] != ours["version"]
        assert fetch(other.url, table_path(others)) != fetch(origin.url, table_path(ours))

        # The same publish history gives the same release again.
        published = admin.publish(added=4, changed=3)
        twin_published = twin.admin.publish(added=4, changed=3)
        assert twin_published["paths"] == published["paths"]
        assert twin_published["added"] == published["added"]
        path = table_path(manifest(origin.url))
        assert fetch(twin.url, path) == fetch(origin.url, path)


# -- releases -------------------------------------------------------------------------------------


def test_publish_changes_paths_version_and_items(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    before = manifest(origin.url)
    old = raw_entries(fetch(origin.url, table_path(before)))

    result = admin.publish()

    after = manifest(origin.url)
    assert result["generation"] == 2
    assert after["version"] == result["version"] != before["version"]
    for lang in ("en", "fr", "de"):
        for table in TABLES:
            assert table_path(after, table, lang) != table_path(before, table, lang)
        assert after["mobileWorldContentPaths"][lang] != before["mobileWorldContentPaths"][lang]
    added, removed, changed = result["added"], result["removed"], result["changed"]
    assert (len(added), len(removed), len(changed)) == (3, 2, 6)
    new = raw_entries(fetch(origin.url, table_path(after)))
    assert set(new) == (set(old) - {str(h) for h in removed}) | {str(h) for h in added}
    assert len(new) == ITEMS + 1 == result["items"]
    for key, definition in new.items():
        if int(key) in changed:
            assert definition != old[key]
            was, now = json.loads(old[key]), json.loads(definition)
            assert (
                was["displayProperties"] != now["displayProperties"]
                or was["inventory"]["tierType"] != now["inventory"]["tierType"]
            )
        elif key in old:
            # A release renumbers each definition's index (as Bungie's do), and nothing else.
            assert {**json.loads(definition), "index": 0} == {**json.loads(old[key]), "index": 0}
    # The old release's files stay where they were, as on Bungie's CDN.
    assert raw_entries(fetch(origin.url, table_path(before))) == old
    # The same publish after a reset is the same release again.
    admin.reset()
    admin.publish()
    assert manifest(origin.url) == after


def test_publish_with_tables_and_version_keeps_the_rest(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    before = manifest(origin.url)

    result = admin.publish(
        tables=["DestinyClassDefinition"], version=before["version"], renumber=False
    )

    after = manifest(origin.url)
    assert after["version"] == before["version"]
    assert result["published_tables"] == ["DestinyClassDefinition"]
    assert result["added"] == result["removed"] == result["changed"] == []
    for lang in ("en", "fr", "de"):
        for table in TABLES:
            moved = table_path(after, table, lang) != table_path(before, table, lang)
            assert moved == (table == "DestinyClassDefinition")
    assert fetch(origin.url, table_path(after, "DestinyClassDefinition")) == fetch(
        origin.url, table_path(before, "DestinyClassDefinition")
    )

    admin.publish(added=0, removed=5, changed=0, version="1.0-lower")
    assert manifest(origin.url)["version"] == "1.0-lower"
    assert len(json.loads(fetch(origin.url, table_path(manifest(origin.url))))) == ITEMS - 5


def test_rollback_restores_the_exact_previous_release(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    first = manifest(origin.url)
    first_items = fetch(origin.url, table_path(first))
    admin.publish()
    second = manifest(origin.url)
    admin.publish(tables=[ITEM_TABLE])

    assert admin.rollback()["generation"] == 2
    assert manifest(origin.url) == second
    state = admin.rollback()
    assert state["generation"] == 1
    assert state["history"] == [1]
    assert manifest(origin.url) == first
    assert fetch(origin.url, table_path(first)) == first_items
    with pytest.raises(DemoOriginError, match="400"):
        admin.rollback()
    # A publish after a rollback is a new release, never a reused path.
    again = admin.publish()
    assert again["generation"] == 4
    assert table_path(manifest(origin.url)) != table_path(second)


@pytest.mark.parametrize(
    "options",
    [
        {"tables": ["NoSuchDefinition"]},
        {"tables": []},
        {"added": -1},
        {"added": "3"},
        {"removed": ITEMS},
        {"colour": "blue"},
        {"version": ""},
        {"tables": ["DestinyClassDefinition"], "added": 2},
    ],
)
def test_publish_refuses_bad_options(admin: DemoAdmin, options: dict[str, Any]) -> None:
    with pytest.raises(DemoOriginError, match="400"):
        admin.publish(**options)
    assert admin.state()["generation"] == 1


# -- manifest faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "status", "check"),
    [
        (
            "maintenance",
            {},
            503,
            lambda r: (
                r.json()["ErrorCode"] == 5
                and r.json()["ErrorStatus"] == "SystemDisabled"
                and r.json()["ThrottleSeconds"] == 30
            ),
        ),
        ("maintenance", {"throttle_seconds": 7}, 503, lambda r: r.json()["ThrottleSeconds"] == 7),
        (
            "throttle",
            {},
            200,
            lambda r: (
                r.json()["ErrorCode"] == 36
                and r.json()["ErrorStatus"] == "ThrottleLimitExceededMomentarily"
                and r.json()["ThrottleSeconds"] == 2
            ),
        ),
        (
            "html_503",
            {},
            503,
            lambda r: r.headers["Content-Type"].startswith("text/html") and b"<html" in r.content,
        ),
        (
            "oauth_error",
            {},
            400,
            lambda r: r.json()["error"] == "server_error" and r.json()["error_description"],
        ),
        ("http_500", {}, 500, lambda r: r.content == b""),
        (
            "http_429",
            {},
            429,
            lambda r: r.headers["Retry-After"] == "1" and r.content == b"",
        ),
        ("http_429", {"retry_after": 9}, 429, lambda r: r.headers["Retry-After"] == "9"),
        (
            "bad_api_key",
            {},
            401,
            lambda r: (
                r.json()["ErrorCode"] == 2101
                and r.json()["ErrorStatus"] == "ApiInvalidOrExpiredKey"
            ),
        ),
    ],
)
def test_manifest_fault_fires_count_times(
    origin: DemoOriginProcess,
    admin: DemoAdmin,
    name: str,
    options: dict[str, Any],
    status: int,
    check: Any,
) -> None:
    admin.fault(name, count=2, **options)

    for _ in range(2):
        response = get(origin.url, MANIFEST)
        assert response.status_code == status
        assert check(response)
    assert admin.state()["faults"] == {}
    assert manifest(origin.url)["version"]


def test_persistent_fault_lasts_until_cleared(origin: DemoOriginProcess, admin: DemoAdmin) -> None:
    admin.fault("maintenance")
    assert admin.state()["faults"]["maintenance"]["count"] is None

    assert [get(origin.url, MANIFEST).status_code for _ in range(3)] == [503] * 3
    admin.clear_faults()
    assert get(origin.url, MANIFEST).status_code == 200


# -- manifest path faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "absolute_path",
            lambda p: p.startswith("https://evil.example.com/common/destiny2_content/"),
        ),
        (
            "protocol_relative_path",
            lambda p: p.startswith("//evil.example.com/common/destiny2_content/"),
        ),
        ("dotdot_path", lambda p: p == "/common/destiny2_content/../../../etc/passwd"),
        ("encoded_dot_path", lambda p: p == "/common/destiny2_content/%2e%2e/%2e%2e/secret.json"),
        ("at_path", lambda p: p == "/common/destiny2_content@evil.example.com/x.json"),
    ],
)
def test_hostile_path_faults(
    origin: DemoOriginProcess, admin: DemoAdmin, name: str, expected: Any
) -> None:
    honest = manifest(origin.url)
    admin.fault(name, count=1)

    hostile = manifest(origin.url)

    for lang in ("en", "fr", "de"):
        for table in TABLES:
            assert expected(table_path(hostile, table, lang))
        assert expected(hostile["mobileWorldContentPaths"][lang])
    if name in ("absolute_path", "protocol_relative_path"):
        assert table_path(hostile).endswith(table_path(honest))
    assert manifest(origin.url) == honest


def test_path_fault_can_target_one_table(origin: DemoOriginProcess, admin: DemoAdmin) -> None:
    honest = manifest(origin.url)
    admin.fault("at_path", table="DestinyClassDefinition")

    hostile = manifest(origin.url)

    assert table_path(hostile, "DestinyClassDefinition").endswith("@evil.example.com/x.json")
    assert table_path(hostile) == table_path(honest)
    assert hostile["mobileWorldContentPaths"] == honest["mobileWorldContentPaths"]


def test_shrunk_fault_advertises_a_table_with_a_tenth_of_the_items(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    honest = manifest(origin.url)
    full = json.loads(fetch(origin.url, table_path(honest)))
    admin.fault("shrunk", count=1)

    shrunk = manifest(origin.url)

    assert table_path(shrunk) != table_path(honest)
    assert table_path(shrunk, "DestinyClassDefinition") == table_path(
        honest, "DestinyClassDefinition"
    )
    assert shrunk["version"] == honest["version"]
    small = json.loads(fetch(origin.url, table_path(shrunk)))
    assert len(small) == ITEMS // 10
    assert all(full[key] == definition for key, definition in small.items())
    assert shrunk["mobileWorldContentPaths"]["en"] != honest["mobileWorldContentPaths"]["en"]
    assert manifest(origin.url) == honest


def test_bad_json_fault_advertises_a_corrupt_table(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    honest = manifest(origin.url)
    good = fetch(origin.url, table_path(honest))
    admin.fault("bad_json", count=1)

    corrupt_path = table_path(manifest(origin.url))

    assert corrupt_path != table_path(honest)
    corrupt = fetch(origin.url, corrupt_path)
    assert corrupt[:1000] == good[:1000]
    with pytest.raises(json.JSONDecodeError):
        json.loads(corrupt)


# -- content faults -------------------------------------------------------------------------------


def test_not_found_once_then_cache_busting_retry_works(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    path = table_path(manifest(origin.url), "DestinyClassDefinition")
    admin.fault("not_found", count=1)

    assert get(origin.url, path + "?cb=1").status_code == 200
    assert get(origin.url, path).status_code == 404
    assert get(origin.url, path).status_code == 200
    assert admin.state()["faults"] == {}


def test_persistent_not_found_spares_cache_busting_requests(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    path = table_path(manifest(origin.url))
    admin.fault("not_found")

    assert get(origin.url, path).status_code == 404
    assert get(origin.url, path + "?cb=abc").status_code == 200
    assert get(origin.url, path).status_code == 404


def test_not_found_always_and_table_option(origin: DemoOriginProcess, admin: DemoAdmin) -> None:
    man = manifest(origin.url)
    admin.fault("not_found_always", table="DestinyClassDefinition")

    class_path = table_path(man, "DestinyClassDefinition")
    assert get(origin.url, class_path).status_code == 404
    assert get(origin.url, class_path + "?cb=2").status_code == 404
    assert get(origin.url, table_path(man, "DestinyStatDefinition")).status_code == 200
    assert get(origin.url, man["mobileWorldContentPaths"]["en"]).status_code == 200
    admin.clear_faults()
    assert get(origin.url, class_path).status_code == 200


def test_truncated_promises_the_whole_file_and_sends_half(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    path = table_path(manifest(origin.url), "DestinyStatDefinition")
    whole = fetch(origin.url, path)
    admin.fault("truncated", count=1)

    connection, response = raw_request(origin.url, path)
    try:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(whole)
        with pytest.raises(http.client.IncompleteRead) as broken:
            response.read()
    finally:
        connection.close()
    assert broken.value.partial == whole[: len(whole) // 2]
    assert fetch(origin.url, path) == whole


def test_slow_drip_sends_small_pieces(origin: DemoOriginProcess, admin: DemoAdmin) -> None:
    path = table_path(manifest(origin.url), "DestinyInventoryBucketDefinition")
    whole = fetch(origin.url, path)
    admin.fault("slow_drip", count=1, chunk=2000, delay=0.1)

    connection, response = raw_request(origin.url, path)
    try:
        assert int(response.headers["Content-Length"]) == len(whole)
        first = response.read1(len(whole))
        body = first + response.read()
    finally:
        connection.close()
    assert 0 < len(first) <= 2000
    assert body == whole


@pytest.mark.parametrize("name", ["oversized", "oversized_chunked"])
def test_oversized_answers_never_end(
    origin: DemoOriginProcess, admin: DemoAdmin, name: str
) -> None:
    path = table_path(manifest(origin.url), "DestinyClassDefinition")
    whole = fetch(origin.url, path)
    admin.fault(name, count=1)

    connection, response = raw_request(origin.url, path)
    try:
        assert response.status == 200
        if name == "oversized":
            assert response.headers["Content-Length"] == str(8 * 1024**3)
        else:
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert "Content-Length" not in response.headers
        start = response.read(4 * 1024 * 1024)
    finally:
        connection.close()
    assert start.startswith(whole)
    assert len(start) == 4 * 1024 * 1024
    assert fetch(origin.url, path) == whole


def test_redirect_points_elsewhere_and_elsewhere_serves(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    path = table_path(manifest(origin.url), "DestinyClassDefinition")
    whole = fetch(origin.url, path)
    admin.fault("redirect", count=1)
    admin.clear_requests_log()

    response = get(origin.url, path, allow_redirects=False)

    assert response.status_code == 302
    assert response.headers["Location"] == f"{origin.url}/elsewhere{path}"
    assert requests.get(response.headers["Location"], timeout=TIMEOUT).content == whole
    assert [(r["path"], r["status"]) for r in admin.requests_log()] == [
        (path, 302),
        ("/elsewhere" + path, 200),
    ]


# -- the request log and the admin API ------------------------------------------------------------


def test_request_log_records_api_key_presence(origin: DemoOriginProcess, admin: DemoAdmin) -> None:
    path = table_path(manifest(origin.url, headers={"X-API-Key": "k"}), "DestinyClassDefinition")
    get(origin.url, path + "?cb=9")
    admin.state()  # admin calls are not logged

    log = admin.requests_log()

    assert log == [
        {"method": "GET", "path": MANIFEST, "query": "", "api_key": True, "status": 200},
        {"method": "GET", "path": path, "query": "cb=9", "api_key": False, "status": 200},
    ]
    admin.clear_requests_log()
    assert admin.requests_log() == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": "earthquake"},
        {"name": "maintenance", "count": 0},
        {"name": "maintenance", "count": "2"},
        {"name": "maintenance", "colour": "red"},
        {"name": "slow_drip", "delay": -1},
        {"name": "slow_drip", "chunk": 0},
        {"name": "truncated", "table": "NoSuchDefinition"},
    ],
)
def test_bad_fault_requests_are_refused(
    origin: DemoOriginProcess, admin: DemoAdmin, body: Any
) -> None:
    response = requests.post(f"{origin.url}/_demo/fault", json=body, timeout=TIMEOUT)

    assert response.status_code == 400
    assert response.json()["error"]
    assert admin.state()["faults"] == {}


def test_admin_api_refuses_bad_input(origin: DemoOriginProcess, admin: DemoAdmin) -> None:
    post = requests.post(f"{origin.url}/_demo/publish", data=b"{not json", timeout=TIMEOUT)
    assert post.status_code == 400
    assert "JSON" in post.json()["error"]
    listed = requests.post(f"{origin.url}/_demo/publish", json=[1], timeout=TIMEOUT)
    assert listed.status_code == 400
    assert requests.get(f"{origin.url}/_demo/nothing", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{origin.url}/_demo/publish", timeout=TIMEOUT).status_code == 405


def test_reset_restores_generation_one_without_faults_or_log(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    first = manifest(origin.url)
    admin.publish()
    admin.fault("throttle")

    state = admin.reset()

    assert (state["generation"], state["faults"], admin.requests_log()) == (1, {}, [])
    assert manifest(origin.url) == first


# -- the process ----------------------------------------------------------------------------------


def test_api_key_and_startup_faults() -> None:
    with DemoOriginProcess(
        "--items", "50", "--languages", "en", "--api-key", "sekrit", "--fault", "maintenance"
    ) as process:
        admin = process.admin
        assert admin.state()["faults"]["maintenance"]["count"] is None
        assert get(process.url, MANIFEST, headers={"X-API-Key": "sekrit"}).status_code == 503
        admin.clear_faults()

        missing = get(process.url, MANIFEST)
        wrong = get(process.url, MANIFEST, headers={"X-API-Key": "guess"})
        right = get(process.url, MANIFEST, headers={"X-API-Key": "sekrit"})

        assert (missing.status_code, missing.json()["ErrorCode"]) == (401, 2102)
        assert missing.json()["ErrorStatus"] == "ApiKeyMissingFromRequest"
        assert (wrong.status_code, wrong.json()["ErrorCode"]) == (401, 2101)
        assert wrong.json()["ErrorStatus"] == "ApiInvalidOrExpiredKey"
        assert right.json()["ErrorCode"] == 1
        man = right.json()["Response"]
        assert list(man["jsonWorldComponentContentPaths"]) == ["en"]
        # Content needs no key.
        assert len(json.loads(fetch(process.url, table_path(man)))) == 50
        admin.close()
    assert process.returncode == 0


def test_origin_that_cannot_start_reports_its_error() -> None:
    with pytest.raises(DemoOriginError, match="items"), DemoOriginProcess("--items", "0"):
        pass


# -- players --------------------------------------------------------------------------------------

SEARCH = "/Platform/Destiny2/SearchDestinyPlayerByBungieName/-1/"
RESPONSES = "/components/responses"
SEARCH_SCHEMA = f"{RESPONSES}/IEnumerableOfUserInfoCard/content/application~1json/schema"
PROFILE_SCHEMA = (
    f"{RESPONSES}/Destiny.Responses.DestinyProfileResponse/content/application~1json/schema"
)
SAMPLE_NAMES = ("Guardian#0001", "Private#0002", "Guardian#0003", "Wanderer#0004")


def search(url: str, name: str, code: int, path: str = SEARCH) -> requests.Response:
    body = {"displayName": name, "displayNameCode": code}
    return requests.post(url + path, json=body, timeout=TIMEOUT)


def cards(url: str, bungie_name: str) -> list[dict[str, Any]]:
    name, _, code = bungie_name.partition("#")
    response = search(url, name, int(code))
    assert response.status_code == 200
    return response.json()["Response"]


def profile(url: str, card: dict[str, Any], components: str = "100,200,205") -> requests.Response:
    path = f"/Platform/Destiny2/{card['membershipType']}/Profile/{card['membershipId']}/"
    return get(url, path, params={"components": components})


def equipped(url: str, bungie_name: str) -> dict[int, list[dict[str, Any]]]:
    (card,) = cards(url, bungie_name)
    data = profile(url, card).json()["Response"]["characterEquipment"]["data"]
    return {int(cid): inventory["items"] for cid, inventory in data.items()}


def test_player_search_and_profiles_validate_against_bungie_openapi(
    origin: DemoOriginProcess, admin: DemoAdmin, openapi: dict[str, Any]
) -> None:
    search_schema = schema_validator(openapi, SEARCH_SCHEMA)
    profile_schema = schema_validator(openapi, PROFILE_SCHEMA)
    for bungie_name in SAMPLE_NAMES:
        name, _, code = bungie_name.partition("#")
        found = search(origin.url, name, int(code))
        search_schema.validate(found.json())
        for card in found.json()["Response"]:
            assert card["bungieGlobalDisplayName"] == name
            assert card["bungieGlobalDisplayNameCode"] == int(code)
            answer = profile(origin.url, card)
            profile_schema.validate(answer.json())
    nobody = search(origin.url, "Nobody", 9999)
    search_schema.validate(nobody.json())
    assert (nobody.status_code, nobody.json()["Response"]) == (200, [])


def test_profiles_answer_the_components_asked_for(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    (card,) = cards(origin.url, "Guardian#0001")

    full = profile(origin.url, card).json()["Response"]
    named = profile(origin.url, card, "Profiles,characters").json()["Response"]
    none = profile(origin.url, card, "")

    assert {"profile", "characters", "characterEquipment"} <= set(full)
    assert {"profile", "characters"} <= set(named)
    assert "characterEquipment" not in named
    assert (none.status_code, none.json()["ErrorCode"]) == (400, 18)
    data = full["profile"]["data"]
    assert data["userInfo"] == card
    assert [int(c) for c in full["characters"]["data"]] == data["characterIds"]
    classes = sorted(c["classType"] for c in full["characters"]["data"].values())
    assert classes == [0, 1, 2]
    for part in ("profile", "characters", "characterEquipment"):
        assert full[part]["privacy"] == 1


def test_sample_players_wear_items_of_the_current_release(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    man = manifest(origin.url)
    items = json.loads(fetch(origin.url, table_path(man)))
    classes = json.loads(fetch(origin.url, table_path(man, "DestinyClassDefinition")))
    (card,) = cards(origin.url, "Guardian#0001")
    response = profile(origin.url, card).json()["Response"]

    for character_id, character in response["characters"]["data"].items():
        assert classes[str(character["classHash"])]["classType"] == character["classType"]
        worn = response["characterEquipment"]["data"][character_id]["items"]
        buckets = {items[str(i["itemHash"])]["inventory"]["bucketTypeHash"] for i in worn}
        assert len(worn) >= 8
        for item in worn:
            definition = items[str(item["itemHash"])]
            assert definition["inventory"]["bucketTypeHash"] == item["bucketHash"]
        emblem = items[str(character["emblemHash"])]
        assert emblem["itemType"] == 14
        assert character["emblemPath"] == emblem["displayProperties"]["icon"]
        assert len(buckets) == len(worn)


def test_one_player_wears_items_that_only_the_next_release_has(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    before = json.loads(fetch(origin.url, table_path(manifest(origin.url))))
    worn = {
        item["itemHash"]
        for items in equipped(origin.url, "Guardian#0003").values()
        for item in items
    }
    new = {h for h in worn if str(h) not in before}

    published = admin.publish()
    after = json.loads(fetch(origin.url, table_path(manifest(origin.url))))

    assert len(new) >= 2
    assert new <= set(published["added"])
    assert all(str(h) in after for h in worn)
    for items in equipped(origin.url, "Guardian#0001").values():
        assert all(str(i["itemHash"]) in before for i in items)


def test_private_and_unknown_profiles_answer_bungie_errors(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    (private,) = cards(origin.url, "Private#0002")
    unknown = {"membershipType": 3, "membershipId": 4611686018400000001}

    hidden = profile(origin.url, private).json()
    missing = profile(origin.url, unknown).json()
    bad = get(origin.url, "/Platform/Destiny2/3/Profile/nope/", params={"components": "100"})

    assert private["isPublic"] is False
    assert (hidden["ErrorCode"], hidden["ErrorStatus"]) == (1665, "DestinyPrivacyRestriction")
    assert "Response" not in hidden
    assert (missing["ErrorCode"], missing["ErrorStatus"]) == (1601, "DestinyAccountNotFound")
    assert (bad.status_code, bad.json()["ErrorCode"]) == (400, 7)


def test_search_matches_any_case_filters_platforms_and_refuses_bad_bodies(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    both = cards(origin.url, "wanderer#0004")
    steam = search(origin.url, "Wanderer", 4, SEARCH.replace("-1", "3")).json()["Response"]
    garbage = requests.post(origin.url + SEARCH, data=b"{nope", timeout=TIMEOUT)
    wrong = requests.post(origin.url + SEARCH, json={"displayName": "x"}, timeout=TIMEOUT)
    huge = requests.post(origin.url + SEARCH, data=b" " * (MAX_SEARCH_BODY + 1), timeout=TIMEOUT)

    assert sorted(c["membershipType"] for c in both) == [2, 3]
    assert [c["membershipType"] for c in steam] == [3]
    for response in (garbage, wrong, huge):
        assert (response.status_code, response.json()["ErrorCode"]) == (400, 18)


def test_platform_faults_apply_to_player_endpoints(
    origin: DemoOriginProcess, admin: DemoAdmin
) -> None:
    (card,) = cards(origin.url, "Guardian#0001")
    admin.fault("maintenance", count=2)

    searched = search(origin.url, "Guardian", 1)
    looked_up = profile(origin.url, card)

    for response in (searched, looked_up):
        assert (response.status_code, response.json()["ErrorCode"]) == (503, 5)
    assert profile(origin.url, card).json()["ErrorCode"] == 1
    assert [r["status"] for r in admin.requests_log()][-3:] == [503, 503, 200]


def test_sample_players_follow_from_the_seed(tmp_path: Path) -> None:
    def players(seed: int) -> Any:
        data = DemoData(tmp_path / str(seed), seed=seed, items=300, languages=("en",))
        return data.sample_players(data.initial())

    first, again, other = players(1), players(1), players(2)

    assert first == again
    assert [p.bungie_name for p in first] == list(SAMPLE_NAMES)
    ids = {p.profiles[0].membership_id for p in first}
    assert ids.isdisjoint(p.profiles[0].membership_id for p in other)
