"""The Celery entry point: `celery -A celery_worker.celery worker` (and `... beat`)."""

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
