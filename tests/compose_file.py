"""docker-compose.yml as the tests read it: its services, and the command line each one runs."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from tests.processes import PROJECT_ROOT


def compose() -> dict[str, Any]:
    """Return the whole compose file."""
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    """Return the compose file's services by name."""
    return compose()["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    """Return what the service's container runs: its entrypoint, when the file names one, then
    its command; `$$` read as compose reads it (one `$`, for the shell)."""
    found: list[str] = []
    for part in (service.get("entrypoint"), service.get("command")):
        if part is None:
            continue
        found += shlex.split(part) if isinstance(part, str) else list(part)
    return [argument.replace("$$", "$") for argument in found]
