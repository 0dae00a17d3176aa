"""Reliability and security: faults, crashes, load and hostile input (issue 8)."""
