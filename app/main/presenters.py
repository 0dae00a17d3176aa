"""What the pages' templates are given besides a view's values: the site's links, item and
equipment rows, a player's rendered characters, and the filters and globals that make them."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote
from urllib.parse import urlencode

import msgspec
from flask import Blueprint
from flask import current_app
from flask import g
from flask import render_template
from flask import request
from flask import url_for
from markupsafe import Markup

from app.auth import current_user
from app.extensions import get_settings
from app.main.filters import FILTERS
from app.manifest.items import CLASSES
from app.manifest.items import ITEM_TYPES
from app.manifest.items import TIERS
from app.manifest.items import ItemSummary
from app.manifest.items import decode_item
from app.manifest.items import label
from app.manifest.store import ITEM_TABLE
from app.players import CharacterSheet
from app.players import ItemSlot
from app.queries import FILTER_CHOICES

# Players' characters kept rendered per process: the last this many different ones.
CHARACTER_SECTIONS_KEPT = 64
# Filled in by the `fill` filter, Links and progress.js with the id of what a link points to.
ID_PLACEHOLDER = "__id__"
# Filled in by Links with the table of a definition page's link.
TABLE_PLACEHOLDER = "__table__"

# The links every page shows: name -> (endpoint, values).
SITE_LINKS: dict[str, tuple[str, dict[str, Any]]] = {
    "favicon": ("static", {"filename": "favicon.svg"}),
    "stylesheet": ("static", {"filename": "style.css"}),
    "dashboard": ("main.dashboard", {}),
    "items": ("main.items", {}),
    "players": ("main.players", {}),
    "history": ("main.history", {}),
    "check_now": ("main.update_manifest", {}),
    "logout": ("main.logout", {}),
    "progress_script": ("static", {"filename": "progress.js"}),
    # Patterns: ID_PLACEHOLDER is filled in.
    "item_page": ("main.item", {"item_hash": ID_PLACEHOLDER}),
    "definition_page": (
        "main.definition",
        {"table": TABLE_PLACEHOLDER, "definition_hash": ID_PLACEHOLDER},
    ),
    "release_page": ("main.release", {"release_id": ID_PLACEHOLDER}),
    "sync_page": ("main.update_manifest", {"task": ID_PLACEHOLDER}),
    "task_status": ("api.task_status", {"task_id": ID_PLACEHOLDER}),
}


def register(bp: Blueprint) -> None:
    """Give every template of the app (through `bp`) its context, filters and globals."""
    bp.app_context_processor(page_globals)
    for name, template_filter in FILTERS.items():
        bp.add_app_template_filter(template_filter, name)
    bp.add_app_template_filter(fill, "fill")
    for template_global in (
        choice_options,
        diff_names,
        item_url,
        definition_url,
        bungie_image,
        item_facts,
        item_rows,
        equipment_rows,
    ):
        bp.add_app_template_global(template_global)


def page_globals() -> dict[str, Any]:
    """Give every template the signed-in user and the site's links."""
    return {"user": current_user(), "site": site_links()}


# -- links ----------------------------------------------------------------------------------


def site_links() -> SimpleNamespace:
    """Return the links every page shows: built once per process and mount point (the same
    on every page, they would otherwise be a good part of a page's url_for calls)."""
    made: dict[str, SimpleNamespace] = current_app.extensions.setdefault("site_links", {})
    links = made.get(request.script_root)
    if links is None:
        urls = {name: url_for(endpoint, **args) for name, (endpoint, args) in SITE_LINKS.items()}
        links = made[request.script_root] = SimpleNamespace(**urls)
    return links


@dataclass(frozen=True, slots=True)
class Links:
    """Links a page builds many times over: worked out once per request, then filled in
    (rather than a url_for per row)."""

    item_pattern: str
    image_base: str
    definition_pattern: str

    def item(self, item_hash: int | str) -> str:
        """Return an item page's URL."""
        return fill(self.item_pattern, item_hash)

    def definition(self, table: str, definition_hash: int | str) -> str:
        """Return the URL of the page of a definition of `table`: an item's page for an item."""
        if table == ITEM_TABLE:
            return self.item(definition_hash)
        pattern = self.definition_pattern.replace(TABLE_PLACEHOLDER, quote(table, safe=""))
        return fill(pattern, definition_hash)

    def image(self, path: str | None) -> str | None:
        """Return an image's URL on Bungie's host; None for anything but a plain path.

        Anything else is not shown (and the CSP would block it).
        """
        if not path or not path.startswith("/") or path.startswith("//"):
            return None
        return self.image_base + path


def links() -> Links:
    """Return this request's Links (item links keep the language `keep_lang` was given)."""
    made = g.get("links")
    if made is None:
        kept = g.get("kept_lang")
        query = f"?{urlencode(kept)}" if kept else ""
        site = site_links()
        made = g.links = Links(
            item_pattern=site.item_page + query,
            image_base=current_app.config["BUNGIE_BASE_URL"].rstrip("/"),
            definition_pattern=site.definition_page + query,
        )
    return made


def keep_lang(lang: str | None) -> dict[str, str]:
    """Return the query values that keep `lang` in a page's links (none for the first cached
    language, the default), and have this request's item links keep it too."""
    kept = {} if lang in (None, get_settings().languages[0]) else {"lang": str(lang)}
    g.kept_lang = kept
    g.pop("links", None)
    return kept


def fill(pattern: str, value: int | str) -> str:
    """Fill a link pattern of SITE_LINKS in with `value` (quoted as a path segment)."""
    filled = str(value) if isinstance(value, int) else quote(value, safe="")
    return pattern.replace(ID_PLACEHOLDER, filled)


def item_url(item_hash: int | str) -> str:
    """Return an item page's URL."""
    return links().item(item_hash)


def definition_url(table: str, definition_hash: int | str) -> str:
    """Return the URL of a definition's page (an item's page for an item)."""
    return links().definition(table, definition_hash)


def bungie_image(path: str | None) -> str | None:
    """Return an image's URL on Bungie's host; None for anything but a plain path."""
    return links().image(path)


# -- search form and releases ---------------------------------------------------------------


@functools.cache
def choice_options(field: str, chosen: int | None) -> Markup:
    """Return the <option>s of an item filter with `chosen` selected.

    The same few fragments on every search page: made once per process, not once per page.
    """
    options = [Markup('<option value="">any</option>')]
    for number, name in FILTER_CHOICES[field].items():
        selected = Markup(" selected") if number == chosen else ""
        options.append(Markup('<option value="{}"{}>{}</option>').format(number, selected, name))
    return Markup("").join(options)


@dataclass(frozen=True, slots=True)
class NamedDefinition:
    """A definition a diff names, with the link to its table's page."""

    table: str
    hash: int
    name: str
    url: str


def diff_names(
    diffs: Iterable[Mapping[str, Any]], kind: str, most: int | None = None
) -> list[NamedDefinition]:
    """Return the definitions of every table a diff names as "added" or "changed" (items
    first), each linked to a page that exists for its table."""
    made = links()
    ordered = sorted(diffs, key=lambda d: d["table"] != ITEM_TABLE)
    named = [
        NamedDefinition(d["table"], int(h), str(name), made.definition(d["table"], h))
        for d in ordered
        for h, name in d.get(f"{kind}_names", ())
    ]
    return named[:most]


# -- items: an item's display fields, decoded, and what a page shows of them -------------------


class ItemFacts(msgspec.Struct, frozen=True):
    """What the pages show of an item (attributes: quick to read in a template's loop)."""

    url: str
    name: str
    description: str
    icon: str | None
    type: str | None
    tier: str | None
    tier_type: int | None
    class_name: str | None
    redacted: bool


def item_facts(item: Mapping[str, Any]) -> ItemFacts:
    """Return what the pages show of an item; any of its fields may be missing."""
    return _facts(decode_item(item), links())


def item_rows(shown: Iterable[ItemSummary]) -> list[ItemFacts]:
    """Return what a list of search results shows, in one call for the whole list (a call
    from a template is slow next to the rest of a row's rendering)."""
    made = links()
    return [_facts(item, made) for item in shown]


def _facts(item: ItemSummary, made: Links) -> ItemFacts:
    number = "" if item.hash is None else item.hash
    return ItemFacts(
        url=made.item(number),
        name=item.name or f"Unnamed item {number}".strip(),
        description=item.description,
        icon=made.image(item.icon),
        type=item.type_name or label(ITEM_TYPES, item.item_type),
        tier=item.tier_name or label(TIERS, item.tier_type),
        tier_type=item.tier_type,
        class_name=label(CLASSES, item.class_type),
        redacted=item.redacted,
    )


# -- players --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EquipmentRow:
    """What a player's page shows of one equipped item."""

    slot: ItemSlot
    url: str | None
    icon: str | None
    details: str


def equipment_rows(slots: Iterable[ItemSlot]) -> list[EquipmentRow]:
    """Return what a character's equipment shows: links, icons, and one line of details."""
    made = links()
    rows = []
    for slot in slots:
        # Type, damage type and slot, each once ("Hand Cannon · Solar · Kinetic Weapons").
        parts: dict[str, str] = {}
        for part in (slot.item_type, slot.damage_type, slot.bucket):
            if part:
                parts.setdefault(part.casefold(), part)
        rows.append(
            EquipmentRow(
                slot=slot,
                url=made.item(slot.item_hash) if slot.known else None,
                icon=made.image(slot.icon),
                details=" \N{MIDDLE DOT} ".join(parts.values()),
            )
        )
    return rows


def rendered_characters(characters: list[CharacterSheet]) -> Markup:
    """Return a player's characters as HTML, rendered once per process for the same ones.

    The key is the characters themselves, encoded, and the links they are shown with: a
    changed profile or release renders anew, and the section shows nothing that depends on
    who asks. Where templates reload when edited (debug), every page renders it, so that an
    edit shows.
    """
    made = links()
    encoded = msgspec.json.encode(characters)
    if current_app.jinja_env.auto_reload:
        return _render_characters(encoded, made.item_pattern, made.image_base)
    render = current_app.extensions.get("characters_html")
    if render is None:
        render = functools.lru_cache(CHARACTER_SECTIONS_KEPT)(_render_characters)
        current_app.extensions["characters_html"] = render
    return render(encoded, made.item_pattern, made.image_base)


def _render_characters(encoded: bytes, item_pattern: str, image_base: str) -> Markup:
    # The links are part of the key only: the template gets them from links(), which gives
    # these for this request.
    characters = msgspec.json.decode(encoded, type=list[CharacterSheet])
    html = render_template("_characters.html", characters=characters)
    return Markup(html)  # noqa: S704 - Jinja's output, every value in it escaped
