"""`manage.py demo-origin`: run the local Bungie-compatible origin until SIGTERM or Ctrl+C."""

from __future__ import annotations

import logging
import re
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import click

from devtools.demo.data import DemoData
from devtools.demo.origin import FAULTS
from devtools.demo.origin import DemoHTTPServer
from devtools.demo.origin import DemoOrigin

_LANGUAGE = re.compile(r"[a-z]{2}(-[a-z]{2,4})?")


def _languages(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    languages = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not languages or not all(_LANGUAGE.fullmatch(lang) for lang in languages):
        raise click.BadParameter("give language codes separated by commas, e.g. en,fr,de")
    return languages


def _stop(signum: int, frame: FrameType | None) -> None:
    # serve_forever() runs in the main thread: unwinding it is the clean way out. A second
    # signal must not interrupt the clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


@click.command("demo-origin")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--items",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Definitions in DestinyInventoryItemDefinition.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of all generated data.")
@click.option(
    "--languages",
    default="en,fr,de",
    show_default=True,
    callback=_languages,
    help="Languages to serve, separated by commas.",
)
@click.option("--api-key", default=None, help="Require exactly this X-API-Key on the manifest.")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    type=click.Choice(FAULTS),
    help="Start with this fault active until cleared (repeatable).",
)
@click.option("--verbose", is_flag=True, help="Log every request on stderr.")
def demo_origin_command(
    host: str,
    port: int,
    items: int,
    seed: int,
    languages: tuple[str, ...],
    api_key: str | None,
    faults: tuple[str, ...],
    verbose: bool,
) -> None:
    """Serve a local stand-in for Bungie's manifest API and content files."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    directory = Path(tempfile.mkdtemp(prefix="demo-origin-"))
    data = DemoData(directory, seed=seed, items=items, languages=languages)
    try:
        origin = DemoOrigin(data, api_key=api_key, faults=faults)
        server = DemoHTTPServer((host, port), origin)
        try:
            click.echo(f"Demo origin listening on http://{host}:{server.port}")
            sys.stdout.flush()
            server.serve_forever()
        finally:
            server.server_close()
    except KeyboardInterrupt:
        pass
    finally:
        data.files.remove_all()
