"""Reading request parameters for items: one parser for the pages and the API, clear 400s."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from werkzeug.exceptions import BadRequest

from app.extensions import get_store
from app.manifest.items import CLASSES
from app.manifest.items import ITEM_TYPES
from app.manifest.items import TIERS
from app.manifest.store import SearchPage

# The item filters by their parameter name.
FILTER_CHOICES = {"type": ITEM_TYPES, "tier": TIERS, "class": CLASSES}

MAX_QUERY_LENGTH = 100
MAX_PAGE = 10_000
PER_PAGE = 50
MAX_HASH = 2**32 - 1
_DECIMAL = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True)
class ItemQuery:
    """A validated item search: name substring, filters and page."""

    q: str = ""
    item_type: int | None = None
    tier: int | None = None
    class_type: int | None = None
    page: int = 1
    per_page: int = PER_PAGE
    # A cached language; None: the first cached one.
    lang: str | None = None


def parse_item_query(args: Mapping[str, str]) -> ItemQuery:
    """Read q, type, tier, class, page, per_page and lang; raise BadRequest naming the bad one."""
    q = args.get("q", "").strip()
    if len(q) > MAX_QUERY_LENGTH:
        raise BadRequest(f"q is at most {MAX_QUERY_LENGTH} characters")
    return ItemQuery(
        q=q,
        item_type=_choice(args, "type", ITEM_TYPES),
        tier=_choice(args, "tier", TIERS),
        class_type=_choice(args, "class", CLASSES),
        page=_number(args, "page", 1, 1, MAX_PAGE),
        per_page=_number(args, "per_page", PER_PAGE, 1, 200),
        lang=parse_lang(args),
    )


def search_items(query: ItemQuery, definitions: bool = True) -> SearchPage:
    """Run an item search on the live release (see `ManifestStore.search`)."""
    return get_store().search(
        query.q,
        item_type=query.item_type,
        tier=query.tier,
        class_type=query.class_type,
        page=query.page,
        per_page=query.per_page,
        lang=query.lang,
        definitions=definitions,
    )


def parse_hash(value: str) -> int:
    """Read a definition hash: a decimal unsigned 32-bit number (a signed one is converted)."""
    # Digits only (and a minus sign): int() alone would take "+12", " 12" and "1_000" too.
    if not _DECIMAL.fullmatch(value):
        raise BadRequest(f"{value[:40]!r} is not a definition hash (a whole number)")
    number = int(value)
    if not -(2**31) <= number <= MAX_HASH:
        raise BadRequest(f"{number} is not a 32-bit definition hash")
    return number & MAX_HASH


def parse_lang(args: Mapping[str, str]) -> str:
    """Read `lang`: one of the cached languages, else the first; raise BadRequest naming them."""
    languages = get_store().settings.languages
    raw = args.get("lang", "").strip()
    if raw == "":
        return languages[0]
    # Language codes are read in any case: "FR" means "fr", "pt-BR" Bungie's "pt-br".
    chosen = next((lang for lang in languages if lang.casefold() == raw.casefold()), None)
    if chosen is None:
        cached = ", ".join(languages)
        raise BadRequest(
            f"lang {raw[:20]!r} is not cached here; the cached languages are: {cached}"
        )
    return chosen


def _choice(args: Mapping[str, str], name: str, known: Mapping[int, str]) -> int | None:
    raw = args.get(name, "").strip()
    if raw == "":
        return None
    number = _to_int(raw, name)
    if number not in known:
        raise BadRequest(f"{name} must be one of {', '.join(map(str, known))}")
    return number


def _number(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name, "").strip()
    if raw == "":
        return default
    number = _to_int(raw, name)
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number


def _to_int(raw: str, name: str) -> int:
    if len(raw) > 12 or not re.fullmatch(r"-?[0-9]+", raw):
        raise BadRequest(f"{name} must be a whole number")
    return int(raw)
