"""The Manifest Syncer Flask application: create_app() wires configuration and extensions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from config import get_config


def create_app(config_name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Flask:
    """Create the application for `config_name` (else FLASK_CONFIG, default development).

    Settings come from config.py, then FLASK_-prefixed environment variables, then `overrides`.
    """
    app = Flask(__name__)
    app.config.from_object(get_config(config_name))
    app.config.from_prefixed_env()
    if overrides:
        app.config.update(overrides)

    from app import cli
    from app import extensions

    extensions.init_app(app)
    app.cli.add_command(cli.manifest_cli)
    return app
