"""The explanations `make bench` shows for missed targets: each one is written in the docs."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.processes import PROJECT_ROOT

PAGES = ("/items?q=word", "/api/v1/items?per_page=200", "/players/3/4611686018467284386")


def load_fixes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fixes", PROJECT_ROOT / "bench" / "fixes.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("scope", PAGES)
def test_every_missed_target_has_its_explanation_written(scope: str) -> None:
    fixes = load_fixes()
    costs = {"GET": {"client_cpu_us": 97.0, "redis_cpu_us": 39.0}}
    for figures in ({}, {"round_trips": costs, "healthz": {"rps": 2876.0}, "cpus": 2}):
        for name, explainer in fixes.EXPLAINERS.items():
            text = explainer({"target": name, "scope": scope}, figures)
            assert text.endswith(".\n"), name
            assert "{" not in text, name
