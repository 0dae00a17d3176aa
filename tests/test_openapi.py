"""The API's OpenAPI 3.1 description is kept true: it validates, it names exactly the routes of
/api/v1, and a schema-driven fuzzer (schemathesis) run against the app over HTTP finds no 5xx and
no answer that breaks it."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests
import schemathesis
from flask import Flask
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from app import create_app
from app.api import openapi
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from app.triggers import request_sync
from devtools.demo.control import DemoAdmin
from devtools.demo.control import DemoOriginProcess
from tests.conftest import drop_keys
from tests.processes import ProjectProcess
from tests.processes import flask_env
from tests.processes import http_ok
from tests.reliability.servers import free_port
from tests.reliability.servers import wait_until

API = "/api/v1"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
# Examples per operation in the fuzzing phase: bounded, so the whole run stays well under a
# minute (each phase of each operation also tries the schema's own examples and edge values).
FUZZ_EXAMPLES = 100
# What a fuzzed answer must be: never a 5xx, a status the description lists, the content type
# it names, and a body its schema takes (an error: `{error, message}`).
FUZZ_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


def document() -> dict[str, Any]:
    return json.loads(openapi.DOCUMENT)


# -- the document ---------------------------------------------------------------------------------


def test_the_description_validates_as_openapi_3_1() -> None:
    described = document()

    assert described["openapi"].startswith("3.1.")
    validate(described)  # raises, naming what is wrong


def test_a_broken_description_is_refused_by_the_validator() -> None:
    # The validator above can fail: a response without its description is not OpenAPI.
    broken = document()
    del broken["paths"]["/manifest"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def flask_path(rule: str) -> str:
    """Return a Flask rule's path as OpenAPI writes it, under the API's server URL."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.removeprefix(API))


def test_every_route_of_the_api_is_described_and_every_description_is_a_route(
    redis_url: str,
) -> None:
    app = create_app("testing", {"REDIS_URL": redis_url})
    routed = {
        (flask_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(API + "/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    described = document()
    listed = {
        (path, method)
        for path, item in described["paths"].items()
        for method in item
        if method in METHODS
    }

    assert described["servers"] == [{"url": API}]
    assert {
        rule.endpoint.split(".")[0]
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(API + "/")
    } == {"api"}
    assert routed == listed
    assert ("/openapi.json", "get") in routed
    assert ("/manifest/sync", "post") in routed


def test_every_path_parameter_is_described() -> None:
    for path, item in document()["paths"].items():
        named = set(re.findall(r"{([a-z_]+)}", path))
        for method, operation in item.items():
            declared = {
                resolve(parameter)["name"]
                for parameter in operation.get("parameters", [])
                if resolve(parameter)["in"] == "path"
            }
            assert declared == named, (method, path)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref of the description."""
    if "$ref" not in node:
        return node
    found: Any = document()
    for part in node["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return dict(found)


def test_the_app_serves_the_description_as_it_is(redis_url: str) -> None:
    client = create_app("testing", {"REDIS_URL": redis_url}).test_client()

    served = client.get(f"{API}/openapi.json")
    again = client.get(f"{API}/openapi.json", headers={"If-None-Match": served.headers["ETag"]})

    assert served.status_code == 200
    assert served.mimetype == "application/json"
    assert served.get_data() == openapi.PATH.read_bytes()
    assert served.headers["Cache-Control"] == "public, max-age=300"
    assert served.headers["Access-Control-Allow-Origin"] == "*"
    assert again.status_code == 304


# -- the fuzzer, against the app over HTTP ---------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """The app serving a synced cache over HTTP, and an app of the same settings in-process."""

    url: str
    app: Flask


@pytest.fixture(scope="module")
def served(
    origin: DemoOriginProcess, redis_url: str, redis_client: redis.Redis
) -> Iterator[Served]:
    """A cache synced from the demo origin, served by gunicorn on a free port; no API token is
    configured, so the sync trigger answers 401 to everyone (the fuzzer starts no sync)."""
    admin = DemoAdmin(origin.url)
    admin.reset()
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    queue = f"test-{uuid.uuid4().hex[:12]}"
    settings = {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": prefix,
        "CELERY_QUEUE": queue,
        "API_TOKEN": "",
        # The fuzzer asks for players far faster than a person: Bungie's share is not the point.
        "PLAYER_RATE_LIMIT": 100_000,
        "PLAYER_BUDGET": 100_000,
    }
    app: Flask = create_app("testing", settings)
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    try:
        with ProjectProcess([*command, "app:create_app()"], flask_env(settings), "Booting") as web:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_ok(f"{url}/healthz"), 30, "gunicorn")
            yield Served(url, app)
        assert "Traceback" not in web.output(), web.output()[-3000:]
    finally:
        admin.close()
        drop_keys(redis_client, prefix)
        redis_client.delete(queue)


def fuzz_config() -> schemathesis.Config:
    """The fuzzer's settings: a fixed seed (a failure replays), a bounded number of examples,
    the checks above, no example database, and no token."""
    return schemathesis.Config.from_dict(
        {
            "seed": 20261206,
            "generation": {"max-examples": FUZZ_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in FUZZ_CHECKS},
            },
        }
    )


# The description the app serves (test_the_app_serves_the_description_as_it_is): read from its
# file, as the operations to fuzz are known before the app listens on its free port.
schema = schemathesis.openapi.from_path(openapi.PATH, config=fuzz_config())


@schema.parametrize()
def test_the_fuzzer_finds_no_server_error_and_no_answer_off_the_description(
    case: schemathesis.Case, served: Served
) -> None:
    case.call_and_validate(base_url=served.url + API)


def test_the_fuzzers_checks_fail_an_answer_off_the_description(served: Served) -> None:
    # What the fuzz run rests on: an answer the description does not take fails its checks.
    described = document()
    described["components"]["schemas"]["ItemPage"]["properties"]["total"] = {"type": "string"}
    broken = schemathesis.openapi.from_dict(described, config=fuzz_config())
    case = broken["/items"]["GET"].Case(query={"per_page": 1})

    with pytest.raises((AssertionError, BaseExceptionGroup)) as failed:
        case.call_and_validate(base_url=served.url + API)
    assert "total" in str(failed.value) or "schema" in str(failed.value).lower()


def test_answers_with_real_data_match_the_description(served: Served) -> None:
    """Every read answered 200 from the synced cache, not only what random input reaches."""
    base = served.url + API
    with served.app.app_context():
        task_id = request_sync("test").task_id  # queued only: no worker runs it
    items = requests.get(f"{base}/items", params={"per_page": 3}, timeout=10).json()
    number = items["items"][0]["hash"]
    release = items["release_id"]
    found = requests.get(f"{base}/players", params={"name": "Guardian#0001"}, timeout=10).json()
    player = found["players"][0]
    operations: list[tuple[str, str, dict[str, Any]]] = [
        ("/manifest", "GET", {}),
        ("/history", "GET", {"query": {"limit": 5}}),
        ("/items", "GET", {"query": {"q": "a", "tier": 5, "per_page": 5}}),
        ("/items/{item_hash}", "GET", {"path_parameters": {"item_hash": str(number)}}),
        (
            "/definitions/{table}/{definition_hash}",
            "GET",
            {"path_parameters": {"table": ITEM_TABLE, "definition_hash": str(number)}},
        ),
        (
            "/definitions/{table}/{definition_hash}/history",
            "GET",
            {"path_parameters": {"table": ITEM_TABLE, "definition_hash": str(number)}},
        ),
        ("/definitions", "POST", {"body": {ITEM_TABLE: [number, 1]}}),
        ("/releases/{release_id}/changes", "GET", {"path_parameters": {"release_id": release}}),
        ("/players", "GET", {"query": {"name": "Guardian#0001"}}),
        (
            "/players/{membership_type}/{membership_id}",
            "GET",
            {
                "path_parameters": {
                    "membership_type": str(player["membership_type"]),
                    "membership_id": player["membership_id"],
                }
            },
        ),
        ("/openapi.json", "GET", {}),
        ("/tasks/{task_id}", "GET", {"path_parameters": {"task_id": task_id}}),
    ]
    for path, method, given in operations:
        case = schema[path][method].Case(**given)
        response = case.call_and_validate(base_url=base)
        assert response.status_code == 200, (path, response.text[:300])
