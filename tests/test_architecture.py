"""The map of the house, kept true: what each package of app/ may import, read with ast."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
MAX_LINES = 400
KEY_REGISTRY = "app.keys"
MAP = ROOT / "docs" / "ARCHITECTURE.md"
STANDARD_LIBRARY = sys.stdlib_module_names | {"__future__"}


@dataclass(frozen=True)
class Module:
    """One module of app/: its dotted name, its file and its syntax tree."""

    name: str
    path: Path
    tree: ast.Module

    @property
    def package(self) -> str:
        """Return the package relative imports start from."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]

    def within(self, package: str) -> bool:
        """Say whether this module is `package` or lies below it."""
        return self.name == package or self.name.startswith(package + ".")


@cache
def app_modules() -> tuple[Module, ...]:
    """Return every module of app/, parsed, not imported."""
    found = []
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append(Module(name, path, ast.parse(path.read_text(), filename=str(path))))
    return tuple(found)


def imports(module: Module) -> Iterator[str]:
    """Yield the dotted names `module` imports: for `from a import b`, both `a` and `a.b` (b
    may be a module or a name in it)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.package.split(".")
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def is_module(name: str) -> bool:
    """Say whether a dotted name of the project is a module or package on disk."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def offenders(modules: Iterator[Module], forbidden: Callable[[str], bool]) -> dict[str, list[str]]:
    """Return, by module, the forbidden names each imports."""
    found = {}
    for module in modules:
        names = sorted({name for name in imports(module) if forbidden(name)})
        if names:
            found[module.name] = names
    return found


def under(name: str, *packages: str) -> bool:
    """Say whether `name` is one of `packages` or lies below one."""
    return any(name == package or name.startswith(package + ".") for package in packages)


def test_the_engine_is_plain_python() -> None:
    engine = (m for m in app_modules() if m.within("app.manifest"))
    found = offenders(engine, lambda name: under(name, "flask", "celery", "app.extensions"))
    assert found == {}, f"app/manifest imports Flask, Celery or app.extensions: {found}"


def test_the_engine_takes_from_the_app_only_itself_and_the_key_registry() -> None:
    engine = (m for m in app_modules() if m.within("app.manifest"))
    found = offenders(
        engine, lambda name: under(name, "app") and not under(name, "app.manifest", KEY_REGISTRY)
    )
    assert found == {}, f"app/manifest imports other parts of app/: {found}"


def test_the_key_registry_and_the_dates_need_the_standard_library_only() -> None:
    plain = (m for m in app_modules() if m.name in (KEY_REGISTRY, "app.dates"))
    found = offenders(plain, lambda name: name.split(".")[0] not in STANDARD_LIBRARY)
    assert found == {}, f"these import beyond the standard library: {found}"


def test_the_product_does_not_import_its_tools() -> None:
    found = offenders(iter(app_modules()), lambda name: under(name, "fakeredis", "devtools"))
    assert found == {}, f"app/ imports fakeredis or devtools: {found}"


def test_views_use_the_store_not_its_internals() -> None:
    def internal(name: str) -> bool:
        return name.startswith("app.manifest.store.") and is_module(name)

    views = (m for m in app_modules() if m.within("app.main") or m.within("app.api"))
    found = offenders(views, internal)
    assert found == {}, f"blueprints import modules inside app.manifest.store: {found}"


def test_no_module_of_the_app_is_over_400_lines() -> None:
    lengths = {m.name: len(m.path.read_text().splitlines()) for m in app_modules()}
    long = {name: lines for name, lines in lengths.items() if lines > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def map_rules() -> dict[str, tuple[str, ...]]:
    """Return, from docs/ARCHITECTURE.md's table of packages, each place of app/ (a module or
    a package, dotted) and the parts of app/ it may import (`app`: any; none listed: none)."""
    rules: dict[str, tuple[str, ...]] = {}
    for line in MAP.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`app"):
            continue
        allowed = tuple(re.findall(r"`(app[a-z_.]*)`", cells[2]))
        for place in re.findall(r"`(app[a-z_/.]*)`", cells[0]):
            rules[
                place.removesuffix(".py").removesuffix("/__init__").rstrip("/").replace("/", ".")
            ] = allowed
    return rules


def test_every_module_imports_only_what_the_map_allows() -> None:
    rules = map_rules()
    assert "app.manifest" in rules, "docs/ARCHITECTURE.md lost its table of packages"
    unmapped, found = [], {}
    for module in app_modules():
        places = [place for place in rules if module.within(place)]
        if not places:
            unmapped.append(module.name)
            continue
        place = max(places, key=len)  # the most specific row speaks for the module
        allowed = (place, *rules[place])
        names = sorted(
            name
            for name in imports(module)
            if name != "app"
            and under(name, "app")
            and is_module(name)
            and not under(name, *allowed)
            and "app" not in rules[place]
        )
        if names:
            found[module.name] = names
    assert unmapped == [], f"modules docs/ARCHITECTURE.md does not place: {unmapped}"
    assert found == {}, f"imports docs/ARCHITECTURE.md does not allow: {found}"
