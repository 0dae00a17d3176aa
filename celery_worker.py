"""The Celery entry point: `celery -A celery_worker.celery worker` (and `... beat`)."""

from __future__ import annotations

from celery import Celery

# How often a worker tries again to store a result (see celery_app).
RESULT_RETRIES = 15


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
    # A worker stores results and a sync's progress through a Redis restart or failover: it
    # tries again, backing off up to 10 s, for a minute or so (Sentinel names the new primary
    # after its down-after-milliseconds, 30 s by default), rather than lose a task's outcome.
    # Only here: a web process answers the task status API with 503 at once instead.
    celery.conf.update(
        result_backend_always_retry=True,
        result_backend_max_retries=RESULT_RETRIES,
        result_backend_max_sleep_between_retries_ms=10_000,
    )
    return celery


celery = celery_app()
