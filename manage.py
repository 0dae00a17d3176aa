"""The Manifest Syncer command line: `python manage.py --help`."""

from __future__ import annotations

from flask.cli import FlaskGroup

from app import create_app
from app.demo.cli import demo_origin_command

cli = FlaskGroup(create_app=create_app, help=__doc__)


@cli.command("dev")
def dev_command() -> None:
    """Run everything on embedded defaults (not yet: the web app comes next)."""
    raise SystemExit(
        "`make dev` is not ready yet: the web app and worker are the next step.\n"
        "Meanwhile: `python manage.py demo-origin` in one terminal, then "
        "`python manage.py manifest sync` and `python manage.py manifest status`."
    )


cli.add_command(demo_origin_command)

if __name__ == "__main__":
    cli()
