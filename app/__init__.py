"""The Manifest Syncer Flask application: create_app() wires configuration, extensions, views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.jsonprovider import MsgspecJSONProvider
from config import ConfigurationError
from config import check
from config import get_config
from config import prefixed_settings
from config import retired_settings_set


def create_app(config_name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Flask:
    """Create the application for `config_name`, else FLASK_CONFIG, else production
    (development under `flask run --debug`: see config.get_config).

    Settings come from config.py, then FLASK_-prefixed environment variables, then `overrides`.
    """
    config = get_config(config_name)
    app = Flask(__name__)
    app.json = MsgspecJSONProvider(app)
    app.config.from_object(config)
    app.config.update(prefixed_settings(config))
    if overrides:
        app.config.update(overrides)
    check(app.config, config)
    if app.config["PROXY_FIX_HOPS"]:
        hops = app.config["PROXY_FIX_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    from app import api
    from app import auth
    from app import cli
    from app import extensions
    from app import health
    from app import logs
    from app import main
    from app import mirror
    from app import tasks  # noqa: F401 - registers the Celery tasks
    from app import web
    from app.metrics import views as metrics
    from app.notify import policy

    logs.init_app(app)
    extensions.init_app(app)
    auth.init_app(app)
    web.init_app(app)
    app.register_blueprint(main.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.register_blueprint(health.bp)
    app.register_blueprint(mirror.bp)
    app.register_blueprint(metrics.bp)
    cli.init_app(app)
    for retired in retired_settings_set():
        app.logger.warning(retired)
    try:
        destinations = policy.destinations(app.config)
    except ValueError as exc:  # a filter or webhook setting that cannot work: say so at start
        raise ConfigurationError(str(exc)) from None
    if "slack" not in destinations:
        app.logger.info("Slack is off: set SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN and SLACK_CHANNEL")
    return app
