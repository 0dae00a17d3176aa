"""Every route of the app, fuzzed: malformed, oversized and wrong-typed path segments,
parameters, methods, headers and bodies. Never a 500; the API answers every error as JSON
`{error, message}` with a 4xx; pages never show a traceback; every answer has the security
headers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from werkzeug.routing import Rule

from app import create_app
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import sync
from config import TestingConfig
from devtools.demo.control import DemoOriginProcess
from tests.conftest import CSRF
from tests.conftest import admin_session
from tests.reliability.conftest import Figures
from tests.reliability.conftest import unique

EXAMPLES = 150
NASTY = [
    "",
    " ",
    "0",
    "-1",
    "--1",
    "+1",
    "1.5",
    "1e3",
    "²",
    "١٢٣",
    "\uff11\uff12",  # fullwidth digits: int() takes them
    "9" * 40,
    "9" * 5000,
    "-" * 3,
    "\x00",
    "\r\nX-Injected: 1",
    "/\r\nLocation: //evil.example",
    "//evil.example",
    "/\\evil.example",
    "https://evil.example/",
    "%",
    "%zz",
    "%00",
    "../../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "{{7*7}}",
    "null",
    "[]",
    "{}",
    "true",
    "Guardian#0001",
    "#",
    "a" * 200,
    "é" * 70,
    "\U0001f600",
    "0123456789abcdef0123456789abcdef",
    "4294967296",
    "-2147483649",
]
PARAMS = ["q", "type", "tier", "class", "page", "per_page", "limit", "name", "task", "next"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "text/plain",
    "application/xml",
]
# Header values a client can send (latin-1, no line breaks): the test client refuses others.
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=300,
)
VALUES = st.one_of(st.sampled_from(NASTY), st.text(max_size=60))


class ServerError(AssertionError):
    """The app answered 5xx or showed a traceback."""


def routes() -> list[Rule]:
    """Every rule of the app as configured for the tests (new routes are fuzzed too)."""
    return sorted(create_app("testing").url_map.iter_rules(), key=lambda r: r.rule)


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home() -> Iterator[None]:
    """Keep Hypothesis's caches in a temporary directory, not in the working tree."""
    home = tempfile.mkdtemp(prefix="reliability-hypothesis-")
    set_hypothesis_home_dir(home)
    yield
    set_hypothesis_home_dir(None)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def fuzz_app(
    origin: DemoOriginProcess, redis_url: str, redis_client: redis.Redis
) -> Iterator[Flask]:
    """The app with a filled cache; limits raised so that fuzzing reaches past them."""
    prefix, queue = unique("fuzz"), unique("fuzz")
    overrides = {
        "REDIS_URL": redis_url,
        "BUNGIE_BASE_URL": origin.url,
        "MANIFEST_KEY_PREFIX": prefix,
        "CELERY_QUEUE": queue,
        "TRIGGER_RATE_LIMIT": 10**6,
        "LOGIN_RATE_LIMIT": 10**6,
        "LOGIN_ACCOUNT_RATE_LIMIT": 10**6,
    }
    app = create_app("testing", overrides)
    with app.app_context():
        assert sync.run(get_store(), get_bungie()).outcome == sync.UPDATED
    yield app
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.unlink(*keys)
    redis_client.delete(queue)


@st.composite
def requests(draw: st.DrawFn, rule: Rule) -> dict[str, Any]:
    """A request aimed at `rule`: its path filled with hostile segments, the rest random."""
    path = rule.rule
    for argument in rule.arguments:
        converter = type(rule._converters[argument]).__name__
        value = draw(VALUES.filter(bool))
        safe = "/" if converter == "PathConverter" else ""
        path = path.replace(f"<{'path:' if safe else ''}{argument}>", quote(value, safe=safe))
    allowed = sorted(rule.methods or {"GET"})
    method = draw(st.one_of(st.sampled_from(allowed), st.sampled_from(METHODS)))
    keys = st.one_of(st.sampled_from(PARAMS), st.sampled_from(PARAMS), st.text(max_size=8))
    query = draw(st.dictionaries(keys, VALUES, max_size=6))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        token = TestingConfig.API_TOKEN
        headers["Authorization"] = draw(
            st.one_of(st.just(f"Bearer {token}"), st.just(f"Bearer {token[:-1]}"), HEADER_TEXT)
        )
    for name in ("X-Request-ID", "X-CSRF-Token", "X-Forwarded-For", "Accept"):
        if draw(st.booleans()):
            headers[name] = draw(HEADER_TEXT)
    content_type = draw(st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), HEADER_TEXT))
    body = draw(
        st.one_of(
            st.none(),
            st.binary(max_size=512),
            st.sampled_from([b"{", b"[]", b'{"csrf_token": 1}', b"csrf_token=" + CSRF.encode()]),
            st.just(b"x" * (70 * 1024)),
        )
    )
    return {
        "path": path,
        "method": method,
        "query_string": query,
        "headers": headers,
        "content_type": content_type,
        "data": body,
        "signed_in": draw(st.booleans()),
    }


def check_response(request: dict[str, Any], response: Any) -> None:
    """Hold one answer to the rules every answer keeps."""
    shown = {k: v for k, v in request.items() if k != "data"}
    page = response.get_data(as_text=True)
    if response.status_code >= 500 or "Traceback (most recent call last)" in page:
        raise ServerError(f"{response.status_code} for {shown}: {page[:300]}")
    headers = response.headers
    assert "frame-ancestors 'none'" in headers.get("Content-Security-Policy", ""), shown
    assert headers.get("X-Content-Type-Options") == "nosniff", shown
    assert headers.get("X-Frame-Options") == "DENY", shown
    is_api = request["path"].startswith("/api/")
    if request["method"] in ("HEAD", "OPTIONS") or 300 <= response.status_code < 400:
        return  # No body to speak of (a redirect's is werkzeug's own, for merged slashes).
    if is_api and response.status_code >= 400:
        body = response.get_json(silent=True)
        assert response.mimetype == "application/json", shown
        assert isinstance(body, dict), shown
        assert set(body) == {"error", "message"}, (shown, body)
        assert isinstance(body["error"], str), shown
        assert isinstance(body["message"], str), shown
    elif is_api:
        assert response.mimetype == "application/json", shown
    elif request["path"].startswith("/Platform/") and response.status_code >= 400:
        # The mirror answers as Bungie does: its JSON envelope, never a page.
        body = response.get_json(silent=True)
        assert response.mimetype == "application/json", shown
        assert isinstance(body, dict), shown
        assert isinstance(body.get("ErrorCode"), int), (shown, body)
        assert isinstance(body.get("Message"), str), (shown, body)
    elif response.status_code >= 400:
        assert response.mimetype == "text/html", shown


def send(app: Flask, request: dict[str, Any]) -> Any:
    client = app.test_client()
    if request["signed_in"]:
        with client.session_transaction() as session:
            session.update(admin_session(app))
            session["csrf_token"] = CSRF
    return client.open(
        request["path"],
        method=request["method"],
        query_string=request["query_string"],
        headers=request["headers"],
        content_type=request["content_type"],
        data=request["data"],
    )


def fuzz_cases() -> list[Any]:
    return [pytest.param(rule, id=rule.rule) for rule in routes()]


def seeds(rule: Rule) -> Iterator[dict[str, Any]]:
    """The seed corpus: every nasty value in every path segment and every parameter at once,
    signed in, with the route's own method (deterministic, unlike the random part)."""
    method = "GET" if "GET" in (rule.methods or ()) else "POST"
    for value in NASTY:
        path = rule.rule
        for argument in rule.arguments:
            safe = "/" if type(rule._converters[argument]).__name__ == "PathConverter" else ""
            segment = quote(value or "x", safe=safe)
            path = path.replace(f"<{'path:' if safe else ''}{argument}>", segment)
        fields = {**dict.fromkeys(PARAMS, value), "username": value, "password": value}
        yield {
            "path": path,
            "method": method,
            "query_string": dict.fromkeys(PARAMS, value),
            "headers": {"Authorization": f"Bearer {TestingConfig.API_TOKEN}"},
            "content_type": None,
            "data": {**fields, "csrf_token": CSRF} if method == "POST" else None,
            "signed_in": True,
        }


@pytest.mark.parametrize("rule", fuzz_cases())
def test_route_survives_hostile_requests(fuzz_app: Flask, rule: Rule, figures: Figures) -> None:
    seen: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=requests(rule))
    def fuzz(request: dict[str, Any]) -> None:
        response = send(fuzz_app, request)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        check_response(request, response)

    try:
        for request in seeds(rule):
            response = send(fuzz_app, request)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            check_response(request, response)
        fuzz()
    finally:
        figures.scenario("fuzz")["rows"].append(
            {"route": f"`{rule.rule}`", "requests": sum(seen.values()), "statuses": _statuses(seen)}
        )


def _statuses(seen: dict[int, int]) -> str:
    return ", ".join(f"{code}: {n}" for code, n in sorted(seen.items()))


# The smallest requests that got a 500 when this fuzzer first ran (a `?page=` of non-ASCII
# digits or a double minus passed the number check that int() then refused; a `next` with a
# line break passed the redirect check that the Location header then refused).
ONCE_500 = [
    pytest.param("GET", "/items?page=%C2%B2", False, id="page=²"),
    pytest.param("GET", "/api/v1/items?per_page=--1", False, id="per_page=--1"),
    pytest.param("GET", "/api/v1/items?tier=%C2%B2", False, id="tier=²"),
    pytest.param("GET", "/login?next=/%0D%0AX", True, id="next=CRLF signed in"),
    pytest.param("POST", "/login?next=/%0D%0AX", False, id="next=CRLF sign-in"),
]


@pytest.mark.parametrize(("method", "url", "signed_in"), ONCE_500)
def test_requests_that_once_got_a_500_get_an_answer(
    fuzz_app: Flask, method: str, url: str, signed_in: bool
) -> None:
    form = {
        "username": TestingConfig.ADMIN_USERNAME,
        "password": TestingConfig.ADMIN_PASSWORD,
        "csrf_token": CSRF,
    }
    client = fuzz_app.test_client()
    with client.session_transaction() as session:
        session["csrf_token"] = CSRF
    # Signed in for real: a sign-out fuzzed before has ended every session signed in before.
    if signed_in:
        assert client.post("/login", data=form).status_code == 303
    path, _, query = url.partition("?")
    response = client.open(path, method=method, query_string=query, data=form)
    check_response({"path": path, "method": method}, response)
    assert response.status_code in (302, 303, 400), response.status_code
