"""Telling people what happened: Slack messages and when to send them."""
