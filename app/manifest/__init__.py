"""The manifest sync engine: plain Python (no Flask, no Celery) around a Redis client and HTTP."""
