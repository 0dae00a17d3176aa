"""Every setting can be set in the environment by its name (or FLASK_ and its name), as README
says, except the session cookie's security flags, which config.py fixes on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from app import create_app
from config import Config
from config import ProductionConfig
from config import prefixed_settings
from config import settings_dict
from tests.processes import PROJECT_ROOT
from tests.test_config import PRODUCTION

COOKIE_FLAGS = ("SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "SESSION_COOKIE_SECURE")


def another_value(default: Any) -> tuple[str, Any]:
    """Return a value unlike `default` of its setting's type: as text, and as read."""
    if isinstance(default, bool):
        return str(not default).lower(), not default
    if isinstance(default, int):
        return str(default + 7), default + 7
    if isinstance(default, float):
        return str(default + 0.5), default + 0.5
    if isinstance(default, tuple):
        return "SetByName, Another", ["SetByName", "Another"]
    if isinstance(default, dict):
        return '{"SetByName": ["hash"]}', {"SetByName": ["hash"]}
    return "set-by-name", "set-by-name"


def config_read_with(env: dict[str, str]) -> dict[str, Any]:
    """Return the settings of Config, and production's cookie flag, as a fresh process reads
    them from `env`."""
    script = (
        "import json, config\n"
        "found = config.settings_dict(config.Config)\n"
        "found['SESSION_COOKIE_SECURE'] = config.ProductionConfig.SESSION_COOKIE_SECURE\n"
        "print(json.dumps(found, default=list))\n"
    )
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_every_setting_but_the_cookie_flags_is_read_by_its_name() -> None:
    wanted = {
        name: another_value(default)
        for name, default in settings_dict(Config).items()
        if name not in COOKIE_FLAGS
    }
    env = {name: text for name, (text, _) in wanted.items()}
    found = config_read_with(env)
    not_read = [name for name, (_, value) in wanted.items() if found[name] != value]
    assert not_read == []


def test_the_cookie_flags_are_fixed_whatever_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off = {"SESSION_COOKIE_HTTPONLY": "false", "SESSION_COOKIE_SAMESITE": "None"}
    off["SESSION_COOKIE_SECURE"] = "false"
    found = config_read_with(off)
    for name, value in off.items():
        monkeypatch.setenv(f"FLASK_{name}", value)
    app = create_app("production", PRODUCTION)

    assert [found[name] for name in COOKIE_FLAGS] == [True, "Lax", True]
    assert [app.config[name] for name in COOKIE_FLAGS] == [True, "Lax", True]
    assert not set(COOKIE_FLAGS) & set(prefixed_settings(ProductionConfig))
