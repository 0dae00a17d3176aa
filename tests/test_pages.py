"""The HTML pages: what a visitor sees on the dashboard, progress, items, history and sign-in."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import create_app
from app import triggers
from app.extensions import get_bungie
from app.extensions import get_keys
from app.extensions import get_store
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from config import TestingConfig
from devtools.demo.control import DemoAdmin
from tests.conftest import CSRF
from tests.conftest import DEMO_ITEMS
from tests.conftest import admin_session

NO_WORKER = "No worker answered: syncs will wait in the queue"
DOWN = "redis://127.0.0.1:1/0"


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def run_sync(app: Flask) -> sync.SyncResult:
    """Run the sync engine in-process, as a worker would."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test", requested_by="tester")
    assert result.ok, result.summary()
    return result


def form_token(client: FlaskClient) -> str:
    """Open the sign-in page like a browser and read the CSRF token from its form."""
    page = text(client.get("/login"))
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def pending_task(app: Flask) -> str | None:
    with app.app_context():
        value = get_store().redis.get(get_keys().queued_sync)
    assert value is None or isinstance(value, bytes)
    return value.decode() if value else None


def workers_answer(app: Flask, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    """Make the Celery ping see these workers (other test sessions may run real ones)."""
    replies = [{name: {"ok": "pong"}} for name in names]
    monkeypatch.setattr(app.extensions["celery"].control, "ping", lambda **_: replies)


@pytest.fixture
def published(app: Flask, admin: DemoAdmin) -> dict[str, Any]:
    """Sync the first release, publish a second at the origin, sync it; return the publish."""
    run_sync(app)
    change = admin.publish()
    run_sync(app)
    return change


# -- dashboard ------------------------------------------------------------------------------


def test_dashboard_before_any_sync(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    workers_answer(app, monkeypatch, [])

    page = text(client.get("/"))

    assert "Nothing synced yet" in page
    assert NO_WORKER in page
    assert "Sign in to check now" in page
    assert 'action="/sync"' not in page


def test_dashboard_shows_the_live_release_and_the_last_change(
    app: Flask, signed_in: FlaskClient, published: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    workers_answer(app, monkeypatch, ["celery@one"])
    with app.app_context():
        live = get_store().live_release()
    assert live is not None

    response = signed_in.get("/")
    page = text(response)

    assert response.status_code == 200
    assert live.release.version in page
    assert f"/releases/{live.id}" in page
    assert f">{DEMO_ITEMS + len(published['added']) - len(published['removed'])}<" in page
    assert any(f'href="/items/{h}"' in page for h in published["added"] + published["changed"])
    assert "1 worker(s) answered at" in page
    assert NO_WORKER not in page
    assert 'action="/sync"' in page
    assert f'value="{CSRF}"' in page


def test_dashboard_shows_a_failing_check(app: Flask, client: FlaskClient, admin: DemoAdmin) -> None:
    run_sync(app)
    admin.fault("maintenance")
    with app.app_context():
        sync.run(get_store(), get_bungie())

    page = text(client.get("/"))

    assert "unavailable" in page
    assert "BungieMaintenance" in page
    assert "Failing since" in page


def test_dashboard_links_to_a_queued_sync(app: Flask, signed_in: FlaskClient) -> None:
    signed_in.get("/updateManifest")

    page = text(signed_in.get("/"))

    assert f"/updateManifest?task={pending_task(app)}" in page


# -- check now and /updateManifest ----------------------------------------------------------


def test_check_now_needs_sign_in(app: Flask, client: FlaskClient) -> None:
    with client.session_transaction() as session:
        session["csrf_token"] = CSRF

    response = client.post("/sync", data={"csrf_token": CSRF})

    assert response.status_code == 302
    assert response.location.startswith("/login?next=")
    assert pending_task(app) is None


@pytest.mark.parametrize("form", [{}, {"csrf_token": "forged"}])
def test_check_now_needs_the_form_token(
    app: Flask, signed_in: FlaskClient, form: dict[str, str]
) -> None:
    response = signed_in.post("/sync", data=form)

    assert response.status_code == 400
    assert "The form expired or did not come from this site" in text(response)
    assert pending_task(app) is None


def test_check_now_queues_a_sync_and_shows_its_progress(app: Flask, signed_in: FlaskClient) -> None:
    response = signed_in.post("/sync", data={"csrf_token": CSRF})

    assert response.status_code == 303
    task_id = pending_task(app)
    assert task_id is not None
    assert response.location == f"/updateManifest?task={task_id}"
    with app.app_context():
        task = triggers.known_task(task_id)
    assert task is not None
    assert task["trigger"] == "dashboard"
    assert task["requested_by"] == f"{TestingConfig.ADMIN_USERNAME} from 127.0.0.1"
    page = text(signed_in.get(response.location))
    assert task_id in page
    assert "Following a sync" in page


def test_update_manifest_asks_to_sign_in_then_comes_back(app: Flask, client: FlaskClient) -> None:
    response = client.get("/updateManifest")
    assert response.status_code == 302
    assert response.location == "/login?next=/updateManifest"
    assert 'name="next" value="/updateManifest"' in text(client.get(response.location))

    landed = client.post(
        "/login",
        data={
            "username": TestingConfig.ADMIN_USERNAME,
            "password": TestingConfig.ADMIN_PASSWORD,
            "next": "/updateManifest",
            "csrf_token": form_token(client),
        },
        follow_redirects=True,
    )

    assert landed.request.path == "/updateManifest"
    assert landed.status_code == 200
    task_id = pending_task(app)
    assert task_id is not None
    assert task_id in text(landed)


def test_update_manifest_starts_a_sync_then_joins_it(app: Flask, signed_in: FlaskClient) -> None:
    first = text(signed_in.get("/updateManifest"))
    task_id = pending_task(app)
    assert task_id is not None
    second = text(signed_in.get("/updateManifest"))

    assert "Started a new sync" in first
    assert f'data-task-id="{task_id}"' in first
    assert 'data-status-url="/api/v1/tasks/__id__"' in first
    assert '<progress id="sync-bar"' in first
    assert "<noscript>" in first
    assert f"/api/v1/tasks/{task_id}" in first
    assert "you joined it" in second
    assert f'data-task-id="{task_id}"' in second
    with app.app_context():
        task = triggers.known_task(task_id)
    assert task is not None
    assert task["trigger"] == "web"


def test_update_manifest_with_an_unknown_task_is_a_404_page(
    app: Flask, signed_in: FlaskClient
) -> None:
    response = signed_in.get("/updateManifest?task=0123456789abcdef")

    assert response.status_code == 404
    assert "No sync with this id" in text(response)
    assert pending_task(app) is None


@pytest.mark.usefixtures("steady_rate_windows")
def test_triggers_are_rate_limited(signed_in: FlaskClient) -> None:
    limit = TestingConfig.TRIGGER_RATE_LIMIT
    statuses = [signed_in.get("/updateManifest").status_code for _ in range(limit + 1)]

    assert statuses == [200] * limit + [429]
    response = signed_in.get("/updateManifest")
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many requests" in text(response)


def test_a_broker_that_is_down_answers_503_and_leaves_nothing(
    app_overrides: dict[str, Any], redis_client: redis.Redis
) -> None:
    app = create_app("testing", {**app_overrides, "CELERY_BROKER_URL": DOWN})
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(admin_session(app))
        session["csrf_token"] = CSRF

    page = client.get("/updateManifest")
    form = client.post("/sync", data={"csrf_token": CSRF})

    for response in (page, form):
        assert response.status_code == 503
        assert "The task queue is not answering" in text(response)
    prefix = app_overrides["MANIFEST_KEY_PREFIX"]
    assert list(redis_client.scan_iter(match=f"{prefix}:task*")) == []


def test_redis_that_is_down_answers_a_503_page(app_overrides: dict[str, Any]) -> None:
    app = create_app("testing", {**app_overrides, "REDIS_URL": DOWN})

    response = app.test_client().get("/")

    assert response.status_code == 503
    assert "Redis is not answering" in text(response)


# -- items ----------------------------------------------------------------------------------


def test_items_before_any_sync(client: FlaskClient) -> None:
    response = client.get("/items")

    assert response.status_code == 200
    assert "Nothing synced yet" in text(response)


def test_items_are_found_by_name_in_any_case(app: Flask, client: FlaskClient) -> None:
    run_sync(app)
    with app.app_context():
        item = next(
            i
            for i in get_store().search(per_page=50).items
            if " " in i["displayProperties"]["name"]
        )
    name = item["displayProperties"]["name"]
    word = name.split()[-1]

    page = text(client.get("/items", query_string={"q": word.upper()}))

    assert f'href="/items/{item["hash"]}">{html.escape(name)}</a>' in page
    assert "found" in page


def test_item_filters_and_pages_keep_the_filters(app: Flask, client: FlaskClient) -> None:
    run_sync(app)
    with app.app_context():
        legendary = get_store().search(tier=5, per_page=200).total
    pages = -(-legendary // 5)

    first = text(client.get("/items", query_string={"tier": "5", "per_page": "5"}))

    assert f"{legendary} items found, page 1 of {pages}" in first
    assert set(re.findall(r'class="tier (tier-\d)"', first)) == {"tier-5"}
    assert '<option value="5" selected>Legendary</option>' in first
    next_match = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert next_match is not None
    next_link = html.unescape(next_match.group(1))
    assert "tier=5" in next_link
    assert "per_page=5" in next_link
    second = text(client.get(next_link))
    assert f"page 2 of {pages}" in second
    prev_match = re.search(r'<a rel="prev" href="([^"]+)"', second)
    assert prev_match is not None
    previous = html.unescape(prev_match.group(1))
    assert "tier=5" in previous


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"tier": "99"}, "tier must be one of"),
        ({"type": "weapon"}, "type must be a whole number"),
        ({"page": "0"}, "page must be between 1 and"),
        ({"q": "x" * 101}, "q is at most 100 characters"),
    ],
)
def test_bad_item_search_parameters_answer_a_400_page(
    client: FlaskClient, args: dict[str, str], message: str
) -> None:
    response = client.get("/items", query_string=args)

    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert message in text(response)
    assert "Traceback" not in text(response)


def test_item_page_shows_the_item_and_its_stored_json(app: Flask, client: FlaskClient) -> None:
    run_sync(app)
    with app.app_context():
        item = get_store().search(tier=6, per_page=1).items[0]

    response = client.get(f"/items/{item['hash']}")
    page = html.unescape(text(response))

    assert response.status_code == 200
    assert item["displayProperties"]["name"] in page
    assert "Exotic" in page
    assert 'class="tier tier-6"' in page
    assert f'"hash": {item["hash"]}' in page
    assert "<pre" in page


def test_an_unknown_item_is_a_404_page(app: Flask, client: FlaskClient) -> None:
    run_sync(app)

    response = client.get("/items/12345")

    assert response.status_code == 404
    assert "There is no item 12345 in the live release" in text(response)


def test_a_garbage_item_hash_is_a_400_page(client: FlaskClient) -> None:
    response = client.get("/items/abc")

    assert response.status_code == 400
    assert "is not a definition hash" in text(response)


# -- history and releases -------------------------------------------------------------------


def test_history_lists_every_release_and_the_checks(
    app: Flask, client: FlaskClient, admin: DemoAdmin, published: dict[str, Any]
) -> None:
    admin.rollback()
    run_sync(app)
    with app.app_context():
        entries = get_store().history()

    page = text(client.get("/history"))

    assert [e["rollback"] for e in entries] == [True, False, False]
    for entry in entries:
        assert f'href="/releases/{entry["id"]}"' in page
        assert entry["version"] in page
    assert page.count('class="badge rollback"') == 1
    assert "Recent checks" in page
    assert "updated" in page
    assert "by tester" not in page  # who asked: for the signed-in admin (test_who_asked.py)


def test_release_page_shows_the_diff_and_the_names(
    app: Flask, client: FlaskClient, published: dict[str, Any]
) -> None:
    with app.app_context():
        entry = get_store().history()[0]

    response = client.get(f"/releases/{entry['id']}")
    page = text(response)

    assert response.status_code == 200
    assert entry["version"] in page
    assert entry["previous_version"] in page
    items = next(d for d in entry["diff"] if d["table"] == ITEM_TABLE)
    assert f"+{items['added']:,}" in page
    assert f"\N{MINUS SIGN}{items['removed']:,}" in page
    assert any(f'href="/items/{h}"' in page for h in published["added"])


def test_an_unknown_release_is_a_404_page(client: FlaskClient) -> None:
    response = client.get("/releases/0123456789abcdef")

    assert response.status_code == 404
    assert "There is no release 0123456789abcdef in the history" in text(response)


# -- sign-in and sign-out -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [(TestingConfig.ADMIN_USERNAME, "wrong"), ("someone", TestingConfig.ADMIN_PASSWORD)],
)
def test_wrong_credentials_get_the_form_again_with_401(
    client: FlaskClient, username: str, password: str
) -> None:
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": form_token(client)},
    )

    assert response.status_code == 401
    page = text(response)
    assert "Wrong username or password" in page
    assert 'name="password"' in page
    assert "Sign out" not in page


@pytest.mark.usefixtures("steady_rate_windows")
def test_sign_in_is_rate_limited(client: FlaskClient) -> None:
    token = form_token(client)
    attempts = [
        client.post("/login", data={"username": "admin", "password": "x", "csrf_token": token})
        for _ in range(TestingConfig.LOGIN_RATE_LIMIT + 1)
    ]

    assert [a.status_code for a in attempts] == [401] * TestingConfig.LOGIN_RATE_LIMIT + [429]
    assert "Too many requests" in text(attempts[-1])
    assert int(attempts[-1].headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("wanted", "landing"),
    [("/history", "/history"), ("https://evil.example", "/"), ("//evil.example", "/")],
)
def test_sign_in_goes_on_to_a_local_next_only(
    client: FlaskClient, wanted: str, landing: str
) -> None:
    response = client.post(
        "/login",
        data={
            "username": TestingConfig.ADMIN_USERNAME,
            "password": TestingConfig.ADMIN_PASSWORD,
            "next": wanted,
            "csrf_token": form_token(client),
        },
    )

    assert response.status_code == 303
    assert response.location == landing
    assert "Signed in as admin" in text(client.get(landing))


def test_sign_in_needs_the_form_token(client: FlaskClient) -> None:
    response = client.post(
        "/login",
        data={"username": TestingConfig.ADMIN_USERNAME, "password": TestingConfig.ADMIN_PASSWORD},
    )

    assert response.status_code == 400
    assert "Sign out" not in text(client.get("/"))


def test_signed_in_visitors_skip_the_sign_in_form(signed_in: FlaskClient) -> None:
    response = signed_in.get("/login?next=/items")

    assert response.status_code == 302
    assert response.location == "/items"


def test_sign_out_needs_the_form_token(signed_in: FlaskClient) -> None:
    refused = signed_in.post("/logout")
    assert refused.status_code == 400
    assert "Sign out" in text(signed_in.get("/"))

    response = signed_in.post("/logout", data={"csrf_token": CSRF})

    assert response.status_code == 303
    assert response.location == "/"
    page = text(signed_in.get("/"))
    assert "Signed out." in page
    assert "Sign in to check now" in page


# -- every page -----------------------------------------------------------------------------


def page_urls(app: Flask) -> list[tuple[str, int]]:
    """Return every kind of page with the status a signed-in visitor gets."""
    with app.app_context():
        store = get_store()
        item_hash = store.search(per_page=1).items[0]["hash"]
        release_id = store.live_id()
    return [
        ("/", 200),
        ("/items", 200),
        ("/items?q=a&tier=5", 200),
        (f"/items/{item_hash}", 200),
        ("/history", 200),
        (f"/releases/{release_id}", 200),
        ("/updateManifest", 200),
        ("/items/abc", 400),
        ("/releases/nope", 404),
        ("/no/such/page", 404),
    ]


def assert_safe_page(response: TestResponse, status: int) -> None:
    """Check a page: HTML, security headers, no inline script, style or event handler."""
    url = response.request.full_path
    page = text(response)
    assert response.status_code == status, url
    assert response.mimetype == "text/html", url
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert 'href="/static/style.css"' in page, url
    for attributes, body in re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S):
        assert 'src="/static/' in attributes, url
        assert body.strip() == "", url
    assert "<style" not in page, url
    assert not re.search(r"\sstyle\s*=", page), url
    assert not re.search(r"\son[a-z]+\s*=", page), url


def test_every_page_is_html_with_security_headers_and_no_inline_code(
    app: Flask, signed_in: FlaskClient, published: dict[str, Any]
) -> None:
    for url, status in page_urls(app):
        assert_safe_page(signed_in.get(url), status)
    visitor = app.test_client()
    assert_safe_page(visitor.get("/"), 200)
    assert_safe_page(visitor.get("/login?next=/history"), 200)
    assert "progress.js" in text(signed_in.get("/updateManifest"))


def test_the_static_files_are_served(client: FlaskClient) -> None:
    for name in ("style.css", "progress.js", "favicon.svg"):
        assert client.get(f"/static/{name}").status_code == 200


def test_links_follow_the_mount_point(app: Flask, client: FlaskClient) -> None:
    run_sync(app)
    # The same process serves the app at / and, behind a proxy, under /sync.
    at_root = client.get("/items?q=a").get_data(as_text=True)
    mounted = client.get("/items?q=a", base_url="http://localhost/sync")
    page = mounted.get_data(as_text=True)

    for found, root in ((at_root, ""), (page, "/sync")):
        assert f'href="{root}/static/style.css"' in found
        assert f'<a href="{root}/players">Players</a>' in found
        assert f'<a href="{root}/items">Items</a>' in found
        assert re.search(rf'<a href="{root}/items/\d+">', found)
    assert 'href="/static/style.css"' not in page


def test_an_item_with_odd_field_types_is_listed_not_fatal(
    app: Flask, client: FlaskClient, redis_client: redis.Redis
) -> None:
    result = run_sync(app)
    assert result.release_id is not None
    with app.app_context():
        table = get_store().keys.table(result.release_id, "en", ITEM_TABLE)
    odd = b'{"hash": 7, "displayProperties": {"name": 12, "icon": ["x"]}, "itemType": "3"}'
    redis_client.hset(table, "7", odd)

    # Nameless, it is listed last (with the redacted items).
    total = client.get("/api/v1/items", query_string={"per_page": 1}).get_json()["total"]
    listing = client.get("/items", query_string={"per_page": 200, "page": -(-total // 200)})
    item = client.get("/items/7")

    assert listing.status_code == item.status_code == 200
    assert 'href="/items/7">Unnamed item 7</a>' in text(listing)
    assert "Unnamed item 7" in text(item)
    assert client.get("/items", query_string={"q": "a"}).status_code == 200
