"""Telling people what happened: Slack, Discord and webhooks, each told once, and when."""
