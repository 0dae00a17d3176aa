"""The Manifest Syncer command line: `python manage.py --help`."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from app import create_app
from config import DevelopmentConfig
from config import env_str
from devtools.demo.cli import demo_origin_command

cli = FlaskGroup(create_app=create_app, help=__doc__)


@cli.command("dev")
@click.option("--port", default=5000, show_default=True, help="Port of the web server.")
@click.option(
    "--demo-items", default=2000, show_default=True, help="Items in the demo origin's manifest."
)
def dev_command(port: int, demo_items: int) -> None:
    """Run everything on embedded defaults: Redis, the demo origin, worker, beat and web."""
    from devtools import devstack

    try:
        devstack.run(
            port,
            configured_redis=DevelopmentConfig.REDIS_URL,
            configured_bungie=env_str("BUNGIE_BASE_URL"),
            demo_items=demo_items,
        )
    except devstack.DevError as exc:
        raise click.ClickException(str(exc)) from None


cli.add_command(demo_origin_command)

if __name__ == "__main__":
    cli()
