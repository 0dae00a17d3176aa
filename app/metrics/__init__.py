"""Metrics for Prometheus: GET /metrics (`views`), the web processes' own counts (`counters`),
what the Celery workers count in Redis (`ledger`) and what a scrape reads there (`collector`).

Kept light: app/auth.py and app/triggers.py import `counters` from here.
"""
