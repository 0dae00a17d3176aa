"""What an origin sends (versions, table and item names, error messages) reaches Slack as text:
`&`, `<` and `>` escaped in the fallback text and in every mrkdwn field, so no mention, link or
markup of its own makes it through."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from app.manifest.store import ITEM_TABLE
from app.notify import slack

HOSTILE = "<!channel> & <https://evil.example|click me> <@U123> <!here>"
OUR_LINK = re.compile(r"<https://syncer\.example/[^<>|]*\|[^<>]*>")


def item_link(table: str, number: int) -> str:
    # As url_for builds it: the table percent-encoded in the path.
    return f"https://syncer.example/definitions/{quote(table, safe='')}/{number}"


def hostile_entry(**changes: Any) -> dict[str, Any]:
    diff = {
        "table": f"{ITEM_TABLE}{HOSTILE}",
        "added": 1,
        "changed": 1,
        "removed": 0,
        "total": 10,
        "added_names": [[1, HOSTILE]],
        "changed_names": [[2, "Gjallarhorn"]],
    }
    return {
        "id": "abc",
        "version": f"9.9 {HOSTILE}",
        "previous": "def",
        "previous_version": f"1.0 {HOSTILE}",
        "rollback": False,
        "diff": [diff],
        **changes,
    }


def parsed_fields(message: dict[str, Any]) -> list[str]:
    """Return every field Slack reads as mrkdwn: the fallback text and mrkdwn sections."""
    fields = [message["text"]]
    for block in message["blocks"]:
        text = block.get("text") or {}
        if text.get("type") == "mrkdwn":
            fields.append(text["text"])
    return fields


def assert_escaped(message: dict[str, Any]) -> None:
    for field in parsed_fields(message):
        markup = OUR_LINK.sub("", field).replace(" -> ", " ")  # our links and arrows
        assert "<" not in markup, field
        assert ">" not in markup, field
        assert re.search(r"&(?!amp;|lt;|gt;)", markup) is None, field


@pytest.mark.parametrize("rollback", [False, True])
def test_a_release_message_escapes_what_the_origin_sent(rollback: bool) -> None:
    message = slack.release_message(
        hostile_entry(rollback=rollback), item_link, "https://syncer.example/releases/abc"
    )

    assert_escaped(message)
    assert "9.9 &lt;!channel&gt; &amp; &lt;https://evil.example|click me&gt;" in message["text"]
    assert f"{ITEM_TABLE}&lt;!channel&gt;" in message["text"]
    assert "<https://syncer.example/releases/abc|See the whole release>" in str(message)


def test_a_trouble_message_escapes_the_error_it_carries() -> None:
    check = {"at": 7200.0, "outcome": "unavailable", "error": HOSTILE, "message": HOSTILE}

    message = slack.trouble_message({**check, "failing_since": 0.0}, "https://syncer.example/")

    assert_escaped(message)
    assert "&lt;!channel&gt;" in message["text"]


def test_a_recovered_message_escapes_the_outcome_it_carries() -> None:
    message = slack.recovered_message(
        {"at": 7200.0, "outcome": HOSTILE}, 0.0, "https://syncer.example/"
    )

    assert_escaped(message)
    assert "&lt;!channel&gt;" in message["text"]
