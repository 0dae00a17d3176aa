"""Logging: one format, one handler, the level from LOG_LEVEL, in every process."""

from __future__ import annotations

import logging

from flask import Flask
from flask.logging import default_handler

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def init_app(app: Flask) -> None:
    """Send the app's records to the root logger, with one handler, at LOG_LEVEL."""
    # The package is called "app", so Flask's app.logger is this package's logger: without
    # this, every module's records would also go through Flask's own stderr handler, and
    # Celery, which captures stderr, would print them twice.
    app.logger.removeHandler(default_handler)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    logging.getLogger("app").setLevel(app.config["LOG_LEVEL"])
    # urllib3 logs each request's path at DEBUG: a Discord or webhook URL's path is its token.
    logging.getLogger("urllib3.connectionpool").setLevel(max(logging.INFO, root.level))
