"""The Manifest Syncer command line: `python manage.py --help`."""

from __future__ import annotations

from flask.cli import FlaskGroup

from app import create_app
from app.cli import manifest_cli
from app.demo.cli import demo_origin_command

cli = FlaskGroup(create_app=create_app, help=__doc__)
cli.add_command(demo_origin_command)
cli.add_command(manifest_cli)

if __name__ == "__main__":
    cli()
