# Manifest Syncer: one image for web (gunicorn), worker, beat and the demo origin.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/manifest-syncer

# Dependencies in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
    && pip install -r /tmp/requirements.txt

COPY . .
RUN useradd --create-home --uid 10001 syncer
USER syncer

EXPOSE 8000
# No FLASK_CONFIG needed: the app runs as production, which refuses to start without secrets.
# gunicorn reads ./gunicorn.conf.py from the working directory by itself: its workers' counts
# add up in /metrics. The same image runs the workers and beat (docker-compose.yml).
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-", "app:create_app()"]
