"""The Celery entry point: `celery -A celery_worker.celery worker` (and `... beat`)."""

from __future__ import annotations

from celery import Celery


def celery_app() -> Celery:
    """Build the Flask app and return its Celery app; refuse bad settings in one line.

    One line saying what to set, not Celery's "Unable to load celery application" traceback.
    """
    try:
        # A malformed setting is refused as config.py is read: a ValueError naming it.
        from app import create_app
        from app.manifest.errors import ManifestConfigError
        from config import ConfigurationError
    except ValueError as refused:
        raise SystemExit(str(refused)) from None
    try:
        flask_app = create_app()
    except (ValueError, ConfigurationError, ManifestConfigError) as refused:
        raise SystemExit(str(refused)) from None
    celery: Celery = flask_app.extensions["celery"]
    return celery


celery = celery_app()
