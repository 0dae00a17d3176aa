"""The pages of what changed: a release's changes (filters, pages, field diffs), an item's and
any definition's history, and links that go to a page that exists for the table."""

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
from app.extensions import get_bungie
from app.extensions import get_store
from app.manifest import changes
from app.manifest import sync
from app.manifest.store import ITEM_TABLE
from app.manifest.store import WHOLE_TABLE
from devtools.demo.control import DemoAdmin

CLASS_TABLE = "DestinyClassDefinition"
PUBLISH = {"added": 2, "removed": 1, "changed": 3, "renamed": 1, "restatted": 1, "revealed": 1}
LONG_LORE = "A story of the Traveler and the Darkness, told again and again. " * 8


def page(response: TestResponse) -> str:
    """Return a page's text as a reader sees it: entities decoded, runs of spaces one."""
    return re.sub(r"\s+", " ", html.unescape(response.get_data(as_text=True)))


def change_row(text: str, number: int) -> str:
    """Return the part of a release page that lists one item's change: from its link to the
    next change's kind (or the end of the list)."""
    row = text[text.index(f'href="/items/{number}"') :]
    ends = [row.find(mark) for mark in ('class="badge kind-', "</section>") if mark in row]
    return row[: min(ends)]


def run_sync(app: Flask) -> str:
    """Run the sync engine in-process, as a worker would; return the live release id."""
    with app.app_context():
        result = sync.run(get_store(), get_bungie(), trigger="test")
    assert result.outcome == sync.UPDATED, result.summary()
    assert result.release_id is not None
    return result.release_id


@pytest.fixture
def first(app: Flask) -> str:
    return run_sync(app)


@pytest.fixture
def published(app: Flask, admin: DemoAdmin, first: str) -> dict[str, Any]:
    """Publish a release that changes known items, sync it; return what the origin did."""
    change = admin.publish(**PUBLISH)
    change["release_id"] = run_sync(app)
    return change


def test_the_release_page_lists_every_change_with_its_field_diff(
    client: FlaskClient, published: dict[str, Any]
) -> None:
    (renamed,) = published["renamed"]
    (restatted,) = published["restatted"]

    response = client.get(f"/releases/{published['release_id']}")
    text = page(response)

    assert response.status_code == 200
    for number in published["added"] + published["removed"] + published["changed"]:
        assert f'href="/items/{number}"' in text
    row = change_row(text, renamed["hash"])
    assert f">{renamed['new']}</a>" in row
    assert '<details class="fields"><summary>1 field</summary>' in row
    assert "<code>displayProperties.name</code>" in row
    assert f'<code>"{renamed["old"]}"</code>' in row
    assert f'<code>"{renamed["new"]}"</code>' in row
    assert f"<code>{restatted['path']}</code>" in text
    assert "9 changes, page 1 of 1." in text
    for count in ("+2", "\N{MINUS SIGN}1", "~5"):
        assert count in text
    assert "not kept (MANIFEST_CHANGES_MAX_BYTES)" not in text


def test_the_filters_pick_a_table_a_kind_and_a_name(
    client: FlaskClient, published: dict[str, Any]
) -> None:
    release_id = published["release_id"]
    (renamed,) = published["renamed"]

    added = page(client.get(f"/releases/{release_id}?kind=added"))
    named = page(client.get(f"/releases/{release_id}", query_string={"q": renamed["new"].upper()}))
    classes = page(client.get(f"/releases/{release_id}?table={CLASS_TABLE}"))

    assert all(f'href="/items/{h}"' in added for h in published["added"])
    assert f'href="/items/{published["removed"][0]}"' not in added
    assert '<option value="added" selected>' in added
    assert "2 changes match, page 1 of 1." in added
    assert f'href="/items/{renamed["hash"]}"' in named
    assert f'value="{renamed["new"].upper()}"' in named
    assert "No change matches." in classes
    assert f'<option value="{CLASS_TABLE}" selected>' in classes


def test_pages_of_changes_link_to_each_other(
    client: FlaskClient, published: dict[str, Any]
) -> None:
    release_id = published["release_id"]

    first_page = page(client.get(f"/releases/{release_id}?per_page=4&kind=changed"))
    second_page = page(client.get(f"/releases/{release_id}?per_page=4&kind=changed&page=2"))

    assert "5 changes match, page 1 of 2." in first_page
    assert 'rel="next" href="/releases/' in first_page
    assert f'href="/releases/{release_id}?kind=changed&per_page=4&page=2"' in first_page
    assert "page 2 of 2" in second_page
    assert f'href="/releases/{release_id}?kind=changed&per_page=4&page=1"' in second_page
    rows = re.findall(r'href="/items/(\d+)"', first_page + second_page)
    assert len(rows) == len(set(rows)) == 5


def test_a_bad_filter_is_a_400_page(client: FlaskClient, first: str) -> None:
    response = client.get(f"/releases/{first}?kind=renamed")

    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "kind 'renamed' is not one of" in page(response)


def test_a_first_release_says_it_has_no_change_log(client: FlaskClient, first: str) -> None:
    text = page(client.get(f"/releases/{first}"))

    assert "A first release has no change log: everything in it is new." in text
    assert 'id="changes"' not in text


def test_a_cut_log_says_how_many_changes_it_did_not_keep(
    app_overrides: dict[str, Any], admin: DemoAdmin, redis_client: redis.Redis
) -> None:
    small = create_app("testing", {**app_overrides, "MANIFEST_CHANGES_MAX_BYTES": 400})
    run_sync(small)
    admin.publish(added=5, removed=5, changed=5)
    release_id = run_sync(small)
    with small.app_context():
        summary = get_store().release_info(release_id).changes  # type: ignore[union-attr]

    text = page(small.test_client().get(f"/releases/{release_id}"))

    assert summary is not None
    cut = summary["cut"]
    assert cut > 0
    assert f"{cut} more changes were not kept (MANIFEST_CHANGES_MAX_BYTES)" in text
    assert f"{summary['kept']} changes, page 1 of 1." in text


def test_an_item_page_shows_its_history(client: FlaskClient, published: dict[str, Any]) -> None:
    (renamed,) = published["renamed"]
    removed = published["removed"][0]

    item = page(client.get(f"/items/{renamed['hash']}"))
    gone = client.get(f"/items/{removed}")

    history = item[item.index('id="history"') :]
    assert published["version"] in history
    assert f'href="/releases/{published["release_id"]}"' in history
    assert "changed</span>" in history
    assert f'<code>"{renamed["old"]}"</code>' in history
    assert gone.status_code == 200
    assert "This item is not in the live release" in page(gone)
    assert "removed</span>" in page(gone)


def test_an_unknown_item_is_still_a_404(client: FlaskClient, first: str) -> None:
    assert client.get("/items/1").status_code == 404


def test_a_rollback_links_to_what_it_undid(
    app: Flask, client: FlaskClient, admin: DemoAdmin, published: dict[str, Any], first: str
) -> None:
    undone_id = published["release_id"]
    admin.rollback()
    run_sync(app)
    (renamed,) = published["renamed"]

    history = page(client.get("/history"))
    undone = page(client.get(f"/releases/{undone_id}?undone=1"))
    item = page(client.get(f"/items/{published['added'][0]}"))

    assert f'href="/releases/{undone_id}?undone=1">what it undid</a>' in history
    assert "Listed here is what that rollback changed" in undone
    assert f'(<a href="/releases/{undone_id}">as it was built</a>)' in undone
    assert '<input type="hidden" name="undone" value="1">' in undone
    row = change_row(undone, renamed["hash"])
    new_then_old = (f'<code>"{renamed["new"]}"</code>', f'<code>"{renamed["old"]}"</code>')
    assert row.index(new_then_old[0]) < row.index(new_then_old[1])
    kinds = re.findall(r'class="badge kind-(\w+)"', undone)
    assert kinds.count("removed") == len(published["added"])
    assert "rollback</span>" in item


def add_class_change(app: Flask, release_id: str) -> tuple[int, str]:
    """Log a change of a class definition in `release_id` (the demo origin changes items
    only): its name, and a long lore text; return the class's hash and name."""
    with app.app_context():
        store = get_store()
        _, found = store.lookup({CLASS_TABLE: WHOLE_TABLE})
        number, definition = next(iter(found[CLASS_TABLE].items()))
        assert definition is not None
        name = definition["displayProperties"]["name"]
        fields = [
            {"path": "displayProperties.name", "old": f"Old {name}", "new": name},
            {"path": "lore", "new": LONG_LORE},
        ]
        record = changes.record(CLASS_TABLE, number, changes.CHANGED, name, fields)
        store.redis.hset(
            store.keys.changes(release_id), f"{CLASS_TABLE}:{number}", changes.encode_record(record)
        )
    return number, name


def test_a_definition_of_another_table_links_to_its_own_page(
    app: Flask, client: FlaskClient, published: dict[str, Any]
) -> None:
    release_id = published["release_id"]
    number, name = add_class_change(app, release_id)

    listed = page(client.get(f"/releases/{release_id}?table={CLASS_TABLE}"))
    shown = client.get(f"/definitions/{CLASS_TABLE}/{number}")
    api = client.get(f"/api/v1/definitions/{CLASS_TABLE}/{number}/history").get_json()

    assert f'href="/definitions/{CLASS_TABLE}/{number}">{name}</a>' in listed
    assert f'href="/items/{number}"' not in listed
    assert shown.status_code == 200
    text = page(shown)
    assert f"<h1>{name}</h1>" in text
    assert f'"hash": {number}' in text  # the stored definition
    assert f'<code>"Old {name}"</code>' in text  # its history
    assert [h["release_id"] for h in api["history"]] == [release_id]


def test_a_long_value_shows_its_start_and_folds_the_rest(
    app: Flask, client: FlaskClient, published: dict[str, Any]
) -> None:
    release_id = published["release_id"]
    add_class_change(app, release_id)

    text = page(client.get(f"/releases/{release_id}?table={CLASS_TABLE}"))

    start = f'"{LONG_LORE}'[:79] + "\N{HORIZONTAL ELLIPSIS}"
    assert f'<details class="long"><summary><code>{start}</code></summary>' in text
    assert f'<pre class="value">"{LONG_LORE}"</pre>' in text
    assert '<span class="muted">absent</span>' in text


def test_an_item_goes_to_its_own_page_and_a_table_not_cached_is_a_400(
    client: FlaskClient, published: dict[str, Any]
) -> None:
    number = published["changed"][0]

    item = client.get(f"/definitions/{ITEM_TABLE}/{number}")
    uncached = client.get("/definitions/DestinyNopeDefinition/1")
    unknown = client.get(f"/definitions/{CLASS_TABLE}/1")

    assert item.status_code == 302
    assert item.headers["Location"].endswith(f"/items/{number}")
    assert uncached.status_code == 400
    assert "DestinyNopeDefinition" in page(uncached)
    assert unknown.status_code == 404
