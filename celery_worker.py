"""The Celery entry point: `celery -A celery_worker.celery worker` (and `... beat`)."""

from app import create_app
from app.manifest.errors import ManifestConfigError
from config import ConfigurationError

try:
    flask_app = create_app()
except (ConfigurationError, ManifestConfigError) as refused:
    # One line saying what to set, not Celery's "Unable to load celery application" traceback.
    raise SystemExit(str(refused)) from None
celery = flask_app.extensions["celery"]
