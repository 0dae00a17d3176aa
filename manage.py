"""The Manifest Syncer command line: `python manage.py --help`."""

from __future__ import annotations

from typing import Any

import click
import redis
from flask import Flask
from flask.cli import FlaskGroup
from flask.cli import NoAppException

from app import create_app
from app.extensions import redis_clients
from config import ConfigurationError
from config import DevelopmentConfig
from config import effective_settings
from config import env_str
from config import get_config
from devtools.demo.cli import demo_origin_command


def create_cli_app() -> Flask:
    """Create the app the commands run in; a refused configuration is one line, not a traceback."""
    try:
        return create_app()
    except ConfigurationError as refused:
        raise NoAppException(
            f"{refused} For a local command: FLASK_CONFIG=development python manage.py ..."
        ) from None


cli = FlaskGroup(create_app=create_cli_app, help=__doc__)


@cli.command("dev", with_appcontext=False)
@click.option("--port", default=5000, show_default=True, help="Port of the web server.")
@click.option(
    "--demo-items", default=2000, show_default=True, help="Items in the demo origin's manifest."
)
def dev_command(port: int, demo_items: int) -> None:
    """Run everything on embedded defaults: Redis, the demo origin, worker, beat and web."""
    from devtools import devstack

    settings = effective_settings(DevelopmentConfig)
    configured = {
        name: settings[name] for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    }
    # Config's BUNGIE_BASE_URL defaults to the demo origin's address: only a set one counts.
    bungie = env_str("FLASK_BUNGIE_BASE_URL") or env_str("BUNGIE_BASE_URL")
    try:
        devstack.run(port, {**configured, "BUNGIE_BASE_URL": bungie}, demo_items=demo_items)
    except devstack.DevError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("check-redis", with_appcontext=False)
def check_redis_command() -> None:
    """Say whether the Redis of REDIS_URL (or Sentinel's primary) answers; exit 1 when it does
    not (Startup.bat asks)."""
    from devtools import devstack

    settings = effective_settings(get_config())
    if settings["REDIS_SENTINEL_URLS"]:
        _check_sentinel_primary(settings)
        return
    url = settings["REDIS_URL"]
    if not url:
        raise click.ClickException("REDIS_URL is not set")
    if not devstack.answers(url):
        raise click.ClickException(f"Redis does not answer at {devstack.shown(url)}")
    click.echo(f"Redis answers at {devstack.shown(url)}")


def _check_sentinel_primary(settings: dict[str, Any]) -> None:
    """Ask the sentinels for the primary and ping it; say which it is, never a password."""
    name = settings["REDIS_SENTINEL_MASTER"]
    try:
        primary, _ = redis_clients(settings)
        primary.ping()
    except ConfigurationError as refused:
        raise click.ClickException(str(refused)) from None
    except (redis.RedisError, OSError) as exc:
        raise click.ClickException(
            f"Redis does not answer as Sentinel's primary {name!r} ({type(exc).__name__})"
        ) from None
    click.echo(f"Redis answers as Sentinel's primary {name!r}")


cli.add_command(demo_origin_command)

if __name__ == "__main__":
    cli()
