"""Targets of the benchmarks (issues 7, 15 and 19, DESIGN.md "Performance") and the verdicts on
them.

Every target is a ratio measured in one run, or a count: these machines are too noisy for
absolute times. One exception: issue 19 sets a budget in milliseconds for a /metrics scrape
(bench/metrics.py), judged at the 95th percentile of many scrapes so that one slow one does not
decide. A verdict holds the figure, how it is shown, and whether the target is met.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """What is compared, and the limit it must stay within."""

    name: str
    rule: str
    limit: float
    at_most: bool


@dataclass(frozen=True)
class Verdict:
    """A target judged in one scope (a size, an endpoint); no value when it could not be run."""

    target: Target
    scope: str
    value: float | None
    shown: str

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        limit = self.target.limit
        return self.value <= limit if self.target.at_most else self.value >= limit

    @property
    def word(self) -> str:
        return {None: "n/a", True: "MET", False: "MISSED"}[self.met]

    def to_record(self) -> dict[str, Any]:
        return {
            "target": self.target.name,
            "rule": self.target.rule,
            "scope": self.scope,
            "value": self.value,
            "shown": self.shown,
            "verdict": self.word,
        }


def print_verdicts(found: list[Verdict], heading: str) -> None:
    """Print one line per verdict under `heading`."""
    print()
    print(f"== targets: {heading} ==")
    for verdict in found:
        target = f"{verdict.target.name} {verdict.target.rule}"
        print(f"  {target:<44} {verdict.scope:<26} {verdict.word:<7} {verdict.shown}")


def percentile(values: list[float], share: float) -> float:
    """Return the `share` (0..1) percentile of `values` by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))
    return ordered[min(len(ordered), int(rank)) - 1]
