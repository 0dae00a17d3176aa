"""Turn the reliability suite's figures into the tables of docs/RELIABILITY.md.

    RELIABILITY_RESULTS=/tmp/reliability .venv/bin/python -m pytest tests/reliability
    .venv/bin/python tests/reliability/report.py /tmp/reliability

Each `<!-- figures:NAME -->` ... `<!-- /figures:NAME -->` block of the document is replaced
by the tables of scenario NAME (`run` and `tests` are the run itself); the prose around the
blocks is left as written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "RELIABILITY.md"
RESULTS_FILE = "reliability.json"
BLOCK = re.compile(r"(<!-- figures:([\w-]+) -->\n).*?(<!-- /figures:\2 -->)", re.S)
NOTHING = "_No figures were recorded for this scenario in the last run._\n"


def cell(value: Any) -> str:
    """Format one value for a Markdown table cell."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}: {cell(v)}" for k, v in value.items())
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    if not (text.startswith("`") and text.endswith("`")):
        text = text.replace("<", "&lt;").replace(">", "&gt;")  # not HTML tags: show them
    return text


def table(header: list[str], rows: Iterable[list[Any]]) -> str:
    """Render a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def scenario_tables(figures: Mapping[str, Any]) -> str:
    """Render a scenario: its summary as figure/value pairs, then its rows."""
    parts = []
    summary = figures.get("summary") or {}
    if summary:
        parts.append(table(["figure", "value"], [[k, v] for k, v in summary.items()]))
    rows = figures.get("rows") or []
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        parts.append(table(columns, [[row.get(c, "") for c in columns] for row in rows]))
    return "\n".join(parts) or NOTHING


def run_tables(data: Mapping[str, Any]) -> str:
    """Render the run: where and how long, and each test's outcome and time."""
    run = data.get("run") or {}
    tests = data.get("tests") or {}
    outcomes = Counter(t["outcome"] for t in tests.values())
    summary = table(
        ["figure", "value"],
        [
            ["finished", run.get("finished", "?")],
            ["wall time of the run (s)", run.get("seconds", "?")],
            ["CPUs / Python", f"{run.get('cpus', '?')} / {run.get('python', '?')}"],
            ["tests", ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))],
        ],
    )
    by_module: dict[str, list[float]] = {}
    for node, result in tests.items():
        module = node.split("::")[0].rsplit("/", 1)[-1]
        by_module.setdefault(module, []).append(result["seconds"])
    modules = table(
        ["module", "tests", "seconds"],
        [[m, len(s), round(sum(s), 1)] for m, s in sorted(by_module.items())],
    )
    return summary + "\n" + modules


def render(doc: str, data: Mapping[str, Any]) -> str:
    """Replace every figures block of `doc` with the tables from `data`."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name == "run":
            body = run_tables(data)
        else:
            body = scenario_tables(data.get("scenarios", {}).get(name, {}))
        return f"{match.group(1)}{body}{match.group(3)}"

    return BLOCK.sub(replace, doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results",
        nargs="?",
        default=os.environ.get("RELIABILITY_RESULTS"),
        help="the directory (or JSON file) the suite wrote (default: $RELIABILITY_RESULTS)",
    )
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to fill in")
    args = parser.parse_args(argv)
    if not args.results:
        parser.error("say where the results are (or set RELIABILITY_RESULTS)")
    path = Path(args.results)
    if path.is_dir():
        path = path / RESULTS_FILE
    data = json.loads(path.read_text())
    doc = args.doc.read_text()
    args.doc.write_text(render(doc, data))
    missing = sorted(set(data.get("scenarios", {})) - set(block_names(doc)))
    if missing:
        print(f"figures without a block in {args.doc.name}: {', '.join(missing)}", file=sys.stderr)
    return 0


def block_names(doc: str) -> list[str]:
    """Return the names of the figures blocks in `doc`."""
    return [match.group(2) for match in BLOCK.finditer(doc)]


if __name__ == "__main__":
    raise SystemExit(main())
