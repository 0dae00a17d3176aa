"""Content paths come from a remote response: only plain paths under the content prefix pass."""

from __future__ import annotations

import pytest

from app.manifest.client import content_url
from app.manifest.errors import UnsafeContentPath

BASE = "https://www.bungie.net"


@pytest.mark.parametrize(
    "path",
    [
        "/common/destiny2_content/json/en/DestinyInventoryItemDefinition-6e0b5a62-5b2c.json",
        "/common/destiny2_content/sqlite/en/world_sql_content_0123456789abcdef.content",
    ],
)
def test_plain_content_paths_join_the_base_url(path: str) -> None:
    assert content_url(BASE, path) == BASE + path
    assert content_url(BASE + "/", path) == BASE + path


@pytest.mark.parametrize(
    "path",
    [
        "https://evil.example.com/common/destiny2_content/json/en/x.json",
        "//evil.example.com/common/destiny2_content/json/en/x.json",
        "/common/destiny2_content//evil.example.com/x.json",
        "/common/destiny2_content/../../../etc/passwd",
        "/common/destiny2_content/json/./x.json",
        "/common/destiny2_content/%2e%2e/%2e%2e/secret.json",
        "/common/destiny2_content/%2E%2E/secret.json",
        "/common/destiny2_content@evil.example.com/x.json",
        "/common/destiny2_content/json/en/x.json@evil.example.com",
        "/common/destiny2_content/json/en/x.json?redirect=https://evil.example.com",
        "/common/destiny2_content/json/en/x.json#frag",
        "/common/destiny2_content\\..\\secret.json",
        "/Platform/Destiny2/Manifest/",
        "common/destiny2_content/json/en/x.json",
        "/common/destiny2_content/",
        "/common/destiny2_content/json/en/x.json\n",
        "",
        None,
        42,
    ],
)
def test_hostile_paths_are_refused(path: object) -> None:
    with pytest.raises(UnsafeContentPath):
        content_url(BASE, path)
