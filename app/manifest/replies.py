"""Redis replies as the types this app reads them in: its clients answer bytes, never str."""

from __future__ import annotations

from typing import Any


def text(reply: bytes | str) -> str:
    """Return a reply (a key's value, a member) as text."""
    return reply.decode() if isinstance(reply, bytes) else reply


def optional_text(reply: bytes | str | None) -> str | None:
    """Return a reply as text, or None for a missing value."""
    return None if reply is None else text(reply)


def texts(replies: Any) -> list[str]:
    """Return a list reply (members of a set, a range of a list) as texts."""
    return [text(reply) for reply in replies]


def raw(reply: bytes | str | None) -> bytes | None:
    """Return a value as bytes, or None for a missing value."""
    return reply.encode() if isinstance(reply, str) else reply
