"""The Bungie-compatible mirror: a client written for Bungie's API reads the app as it reads
Bungie (over real HTTP, gunicorn) and gets exactly what the demo origin sent; caching, CORS,
dropped releases and Bungie's error envelopes."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import redis
import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from app.manifest.store import ManifestStore
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import drop_keys
from tests.processes import ProjectProcess
from tests.processes import flask_env
from tests.processes import http_ok
from tests.reliability.servers import closed_port_url
from tests.reliability.servers import free_port
from tests.reliability.servers import wait_until
from tests.test_demo_origin import OPENAPI
from tests.test_demo_origin import schema_validator

LANGUAGES = ("en", "fr")
CACHED_TABLES = tuple(TestingConfig.MANIFEST_TABLES)
CLASS_TABLE = "DestinyClassDefinition"
# Served by the demo origin, not cached by the app.
UNCACHED_TABLE = "DestinySandboxPerkDefinition"
MANIFEST = "/Platform/Destiny2/Manifest/"
TIMEOUT = (5, 30)
RESPONSE_SCHEMA = "/components/responses/{}/content/application~1json/schema"
CDN_404 = b"<h1>404 Not Found</h1>"


class Envelope(msgspec.Struct):
    """Bungie's envelope, its Response kept as the exact bytes sent."""

    ErrorCode: int
    ErrorStatus: str
    Message: str
    ThrottleSeconds: int
    MessageData: dict[str, str]
    # Empty when the envelope has no Response (an error).
    Response: msgspec.Raw = msgspec.Raw()


@dataclass
class Mirror:
    """The app serving a synced cache over HTTP, and what the origin served when it synced."""

    url: str
    release_id: str
    version: str
    origin_url: str
    # The origin's jsonWorldComponentContentPaths for the synced release.
    origin_paths: dict[str, dict[str, str]]

    def origin_entries(self, lang: str, table: str) -> dict[str, bytes]:
        """Return a table as the origin sent it: each definition's exact bytes, by hash."""
        response = requests.get(self.origin_url + self.origin_paths[lang][table], timeout=TIMEOUT)
        response.raise_for_status()
        return raw_entries(response.content)


class BungieStyleClient:
    """What a program written for Bungie does, its host the only setting: read the manifest
    with its API key, then fetch the files it names from the same host."""

    def __init__(self, host: str, api_key: str | None = "a-key-issued-by-bungie") -> None:
        self.host = host
        self.session = requests.Session()
        if api_key is not None:
            self.session.headers["X-API-Key"] = api_key

    def platform(self, path: str) -> Envelope:
        """GET a Platform route; return its envelope."""
        response = self.session.get(f"{self.host}/Platform{path}", timeout=TIMEOUT)
        return msgspec.json.decode(response.content, type=Envelope)

    def manifest(self) -> dict[str, Any]:
        """Return the manifest (GetDestinyManifest), failing on an error envelope."""
        envelope = self.platform("/Destiny2/Manifest/")
        assert envelope.ErrorCode == 1, envelope.Message
        return json.loads(bytes(envelope.Response))

    def content(self, path: str) -> bytes:
        """Download a content file the manifest names."""
        response = self.session.get(self.host + path, timeout=TIMEOUT)
        response.raise_for_status()
        return response.content

    def definition(self, entity_type: str, number: int | str, lc: str | None = None) -> bytes:
        """Return one definition (GetDestinyEntityDefinition), as the bytes sent; `lc` picks
        the language, as on Bungie."""
        query = f"?lc={lc}" if lc else ""
        envelope = self.platform(f"/Destiny2/Manifest/{entity_type}/{number}/{query}")
        assert envelope.ErrorCode == 1, envelope.Message
        return bytes(envelope.Response)


def raw_entries(data: bytes) -> dict[str, bytes]:
    """Return each definition's exact bytes, keyed by the table's decimal hash keys."""
    decoded = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    return {key: bytes(raw) for key, raw in decoded.items()}


def sample(entries: dict[str, bytes]) -> list[str]:
    """Return a few hashes of a table: its first five, and one past 2**31 if it has one."""
    chosen = list(entries)[:5] + [h for h in entries if int(h) >= 2**31][:1]
    return list(dict.fromkeys(chosen))


def get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    if not OPENAPI.exists():
        pytest.skip(f"Bungie's OpenAPI description is not at {OPENAPI} (see DESIGN.md)")
    return json.loads(OPENAPI.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mirror(
    origin: DemoOriginProcess, redis_url: str, redis_client: redis.Redis
) -> Iterator[Mirror]:
    """A cache synced from the demo origin (en and fr), served by gunicorn on a free port."""
    admin = DemoAdmin(origin.url)
    state = admin.reset()
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    settings = {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": prefix,
        "CELERY_QUEUE": f"test-{uuid.uuid4().hex[:12]}",
    }
    app = create_app("testing", {**settings, "MANIFEST_LANGUAGES": LANGUAGES})
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    assert result.release_id is not None
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    env = flask_env({**settings, "MANIFEST_LANGUAGES": ",".join(LANGUAGES)})
    try:
        with ProjectProcess([*command, "app:create_app()"], env, ready="Booting worker") as web:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_ok(f"{url}/healthz"), 30, "gunicorn")
            paths = state["paths"]["jsonWorldComponentContentPaths"]
            yield Mirror(url, result.release_id, state["version"], origin.url, paths)
        assert "Traceback" not in web.output(), web.output()[-3000:]
    finally:
        admin.close()
        drop_keys(redis_client, prefix)


# -- over HTTP: what a program written for Bungie sees --------------------------------------------


def test_a_bungie_client_gets_exactly_what_the_origin_sent(mirror: Mirror) -> None:
    client = BungieStyleClient(mirror.url)
    manifest = client.manifest()

    assert manifest["version"] == mirror.version
    assert manifest["mobileWorldContentPaths"] == {}
    components = manifest["jsonWorldComponentContentPaths"]
    assert list(components) == list(LANGUAGES)
    assert list(manifest["jsonWorldContentPaths"]) == list(LANGUAGES)
    for lang, paths in components.items():
        assert list(paths) == list(CACHED_TABLES)
        for path in [*paths.values(), manifest["jsonWorldContentPaths"][lang]]:
            assert path.startswith(f"/common/destiny2_content/json/{lang}/"), path
            assert path.endswith(f"-{mirror.release_id}.json"), path
        aggregate = json.loads(client.content(manifest["jsonWorldContentPaths"][lang]))
        assert list(aggregate) == list(CACHED_TABLES)
        for table, path in paths.items():
            sent = {k: json.loads(v) for k, v in mirror.origin_entries(lang, table).items()}
            assert json.loads(client.content(path)) == sent, (lang, table)
            assert aggregate[table] == sent, (lang, table)

    for lang in LANGUAGES:
        for table in (CLASS_TABLE, ITEM_TABLE):
            entries = mirror.origin_entries(lang, table)
            for number in sample(entries):
                lc = lang if lang != LANGUAGES[0] else None  # the first, by default
                assert client.definition(table, number, lc) == entries[number], (lang, number)
    # A hash past 2**31 asked for in its signed form, as Bungie's SQLite files hold it.
    items = mirror.origin_entries("en", ITEM_TABLE)
    big = next(number for number in items if int(number) >= 2**31)
    assert client.definition(ITEM_TABLE, int(big) - 2**32) == items[big]


def test_no_api_key_or_any_api_key_is_served_alike(mirror: Mirror) -> None:
    keyed = BungieStyleClient(mirror.url).manifest()
    assert BungieStyleClient(mirror.url, api_key=None).manifest() == keyed
    assert BungieStyleClient(mirror.url, api_key="not-a-key").manifest() == keyed
    without_slash = get(mirror.url + MANIFEST.rstrip("/"))
    assert without_slash.status_code == 200
    assert without_slash.json()["Response"] == keyed
    classes = keyed["jsonWorldComponentContentPaths"]["en"][CLASS_TABLE]
    number = next(iter(json.loads(BungieStyleClient(mirror.url).content(classes))))
    for path in (f"{MANIFEST}{CLASS_TABLE}/{number}/", f"{MANIFEST}{CLASS_TABLE}/{number}"):
        answer = get(mirror.url + path)
        assert answer.status_code == 200
        assert answer.json()["ErrorCode"] == 1


def test_answers_validate_against_bungie_openapi(mirror: Mirror, openapi: dict[str, Any]) -> None:
    manifest = get(mirror.url + MANIFEST)
    assert manifest.status_code == 200
    assert manifest.headers["Content-Type"] == "application/json; charset=utf-8"
    manifest_schema = RESPONSE_SCHEMA.format("Destiny.Config.DestinyManifest")
    schema_validator(openapi, manifest_schema).validate(manifest.json())

    definition_schema = RESPONSE_SCHEMA.format("Destiny.Definitions.DestinyDefinition")
    validator = schema_validator(openapi, definition_schema)
    item = next(iter(mirror.origin_entries("en", ITEM_TABLE)))
    found = get(f"{mirror.url}{MANIFEST}{ITEM_TABLE}/{item}/").json()
    validator.validate(found)
    items = schema_validator(
        openapi, "/components/schemas/Destiny.Definitions.DestinyInventoryItemDefinition"
    )
    items.validate(found["Response"])
    for path in (f"{ITEM_TABLE}/1/", f"{UNCACHED_TABLE}/1/", f"{ITEM_TABLE}/x/"):
        validator.validate(get(f"{mirror.url}{MANIFEST}{path}").json())


@pytest.mark.parametrize(
    ("path", "status", "code", "named"),
    [
        (f"{ITEM_TABLE}/1/", 200, (21, "NotFound"), ["1"]),
        (f"{ITEM_TABLE}/1", 200, (21, "NotFound"), ["1"]),
        (f"{UNCACHED_TABLE}/1/", 400, (18, "InvalidParameters"), [UNCACHED_TABLE, CLASS_TABLE]),
        (f"{ITEM_TABLE}/twelve/", 400, (7, "ParameterParseFailure"), ["twelve"]),
        (f"{ITEM_TABLE}/4294967296/", 400, (7, "ParameterParseFailure"), ["4294967296"]),
        (f"{ITEM_TABLE}/1/?lc=de", 400, (18, "InvalidParameters"), ["de", "en, fr"]),
    ],
)
def test_unknown_types_and_hashes_answer_bungie_error_codes(
    mirror: Mirror, path: str, status: int, code: tuple[int, str], named: list[str]
) -> None:
    answer = get(f"{mirror.url}{MANIFEST}{path}", **{"X-API-Key": "any"})

    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    body = answer.json()
    assert (body["ErrorCode"], body["ErrorStatus"]) == code
    assert "Response" not in body
    assert body["ThrottleSeconds"] == 0
    for part in named:
        assert part in body["Message"], body["Message"]


def test_routes_the_mirror_does_not_serve_answer_as_bungie_would(mirror: Mirror) -> None:
    other = get(f"{mirror.url}/Platform/Destiny2/3/Profile/4611686018400000000/?components=100")
    assert other.status_code == 404
    assert (other.json()["ErrorCode"], other.json()["ErrorStatus"]) == (21, "NotFound")
    assert MANIFEST in other.json()["Message"]

    release = mirror.release_id
    for path in (
        f"/common/destiny2_content/json/en/{ITEM_TABLE}-0123456789abcdef.json",
        f"/common/destiny2_content/json/de/{ITEM_TABLE}-{release}.json",
        f"/common/destiny2_content/json/en/{UNCACHED_TABLE}-{release}.json",
        f"/common/destiny2_content/json/en/{ITEM_TABLE}.json",
        f"/common/destiny2_content/sqlite/en/world_sql_content_{release}.content",
    ):
        answer = get(mirror.url + path)
        assert answer.status_code == 404, path
        assert answer.content == CDN_404, path


def test_files_are_cached_for_good_and_streamed(mirror: Mirror) -> None:
    manifest = BungieStyleClient(mirror.url).manifest()
    table = manifest["jsonWorldComponentContentPaths"]["fr"][ITEM_TABLE]
    aggregate = manifest["jsonWorldContentPaths"]["en"]
    for path in (table, aggregate):
        first = get(mirror.url + path)
        assert first.status_code == 200
        assert first.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert mirror.release_id in first.headers["ETag"]
        # Streamed: sent as it is read, its length unknown when it starts.
        assert first.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in first.headers
        again = get(mirror.url + path, **{"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["ETag"] == first.headers["ETag"]
        other = get(mirror.url + path, **{"If-None-Match": '"something-else"'})
        assert other.status_code == 200
        assert other.content == first.content
    assert get(mirror.url + table).headers["ETag"] != get(mirror.url + aggregate).headers["ETag"]


def test_platform_answers_revalidate_by_etag(mirror: Mirror) -> None:
    number = next(iter(mirror.origin_entries("en", CLASS_TABLE)))
    for path in (MANIFEST, f"{MANIFEST}{CLASS_TABLE}/{number}/"):
        first = get(mirror.url + path)
        assert first.status_code == 200
        assert first.headers["Cache-Control"] == "no-cache"
        assert first.headers["X-Manifest-Release"] == mirror.release_id
        again = get(mirror.url + path, **{"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304
        assert again.content == b""


def test_any_origin_may_read_and_preflights_are_answered_for_reads_only(mirror: Mirror) -> None:
    manifest = BungieStyleClient(mirror.url).manifest()
    site = {"Origin": "https://clan-site.example"}
    number = next(iter(mirror.origin_entries("en", CLASS_TABLE)))
    paths = [
        MANIFEST,
        f"{MANIFEST}{CLASS_TABLE}/{number}/",
        f"{MANIFEST}{UNCACHED_TABLE}/1/",
        manifest["jsonWorldComponentContentPaths"]["en"][CLASS_TABLE],
        manifest["jsonWorldContentPaths"]["en"],
    ]
    for path in paths:
        read = get(mirror.url + path, **site, **{"X-API-Key": "theirs"})
        assert read.headers["Access-Control-Allow-Origin"] == "*", path
        assert "ETag" in read.headers["Access-Control-Expose-Headers"]
        preflight = requests.options(
            mirror.url + path,
            headers={
                **site,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-api-key, if-none-match",
            },
            timeout=TIMEOUT,
        )
        assert preflight.status_code == 200, path
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
        allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
        assert "x-api-key" in allowed
        assert "if-none-match" in allowed
    refused = requests.options(
        mirror.url + MANIFEST,
        headers={**site, "Access-Control-Request-Method": "POST"},
        timeout=TIMEOUT,
    )
    assert "Access-Control-Allow-Origin" not in refused.headers


# -- the app itself: releases coming and going ----------------------------------------------------


def sync_now(app: Flask) -> str:
    """Sync the app's cache from the demo origin, as a worker would; return the release id."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    assert result.release_id is not None
    return result.release_id


def table_path(lang: str, table: str, release_id: str) -> str:
    return f"/common/destiny2_content/json/{lang}/{table}-{release_id}.json"


def test_nothing_cached_answers_system_disabled(app: Flask) -> None:
    client = app.test_client()
    for path in (MANIFEST, f"{MANIFEST}{CLASS_TABLE}/1/"):
        answer = client.get(path)
        assert answer.status_code == 503
        body = answer.get_json()
        assert (body["ErrorCode"], body["ErrorStatus"]) == (5, "SystemDisabled")
        assert "No release is cached yet" in body["Message"]
        assert body["ThrottleSeconds"] > 0
        assert answer.headers["Retry-After"] == str(body["ThrottleSeconds"])
    assert client.get(table_path("en", CLASS_TABLE, "0123456789abcdef")).data == CDN_404


def test_table_files_are_streamed_not_built_whole(app: Flask) -> None:
    release = sync_now(app)
    sent = {}
    for name in (ITEM_TABLE, "aggregate"):
        with app.test_request_context(table_path("en", name, release)):
            response = app.full_dispatch_request()
            assert response.status_code == 200
            # An iterator read as it is sent, not a body made whole first.
            assert response.is_streamed
            sent[name] = json.loads(b"".join(response.iter_encoded()))
            response.close()
    assert sent["aggregate"][ITEM_TABLE] == sent[ITEM_TABLE]
    assert list(sent["aggregate"]) == list(CACHED_TABLES)
    with app.test_request_context(MANIFEST):
        assert not app.full_dispatch_request().is_streamed


def test_a_dropped_release_answers_the_cdn_404(app: Flask, admin: DemoAdmin) -> None:
    client = app.test_client()
    first = sync_now(app)
    old = table_path("en", CLASS_TABLE, first)
    etag = client.get(old).headers["ETag"]
    admin.publish(tables=[CLASS_TABLE])
    second = sync_now(app)
    assert client.get(old).status_code == 200  # the previous release is kept
    admin.publish(tables=[CLASS_TABLE])
    sync_now(app)

    for path in (old, table_path("en", "aggregate", first)):
        gone = client.get(path, headers={"If-None-Match": etag})
        assert gone.status_code == 404
        assert gone.data == CDN_404
    assert client.get(table_path("en", CLASS_TABLE, second)).status_code == 200


def test_a_release_dropped_mid_stream_ends_the_body_short(
    app: Flask, admin: DemoAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commits land between two slices of a table being sent: the release's keys go, the
    client's body ends short (an HTTP error), never a mix of two releases."""
    first = sync_now(app)
    # Slices of 20 definitions, each sent on its own: the table takes many round trips.
    monkeypatch.setattr("app.manifest.store.tables.SLICE", 20)
    monkeypatch.setattr("app.manifest.store.tables.CHUNK_BYTES", 1)
    read_slice = ManifestStore._slice
    dropped = threading.Event()

    def commits_land_between_slices(
        store: ManifestStore, release_id: str, lang: str, table: str, cursor: int
    ) -> Any:
        if cursor != 0 and not dropped.is_set():
            dropped.set()
            for _ in range(2):
                admin.publish()
                sync_now(app)
        return read_slice(store, release_id, lang, table, cursor)

    monkeypatch.setattr(ManifestStore, "_slice", commits_land_between_slices)
    server = make_server_thread(app)
    try:
        url = f"http://127.0.0.1:{server.server_port}{table_path('en', ITEM_TABLE, first)}"
        with requests.get(url, stream=True, timeout=TIMEOUT) as answer:
            assert answer.status_code == 200
            received = bytearray()
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                read_into(received, answer)
    finally:
        server.shutdown()
    assert dropped.is_set()
    with pytest.raises(json.JSONDecodeError):
        json.loads(received)
    assert app.test_client().get(table_path("en", ITEM_TABLE, first)).status_code == 404


def read_into(received: bytearray, answer: requests.Response) -> None:
    """Read a streamed body into `received`, as far as it goes."""
    for chunk in answer.iter_content(64 * 1024):
        received += chunk


def make_server_thread(app: Flask) -> BaseWSGIServer:
    """Serve `app` with Werkzeug's threaded server (as `flask run`) in a thread of this process."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_redis_not_answering_answers_in_bungie_shapes(app_overrides: dict[str, Any]) -> None:
    app = create_app("testing", {**app_overrides, "REDIS_URL": closed_port_url()})
    client = app.test_client()
    platform = client.get(MANIFEST)
    assert platform.status_code == 503
    assert (platform.get_json()["ErrorCode"], platform.get_json()["ErrorStatus"]) == (
        5,
        "SystemDisabled",
    )
    content = client.get(table_path("en", CLASS_TABLE, "0123456789abcdef"))
    assert content.status_code == 503
    assert content.mimetype == "text/html"
    assert b"Traceback" not in content.data
