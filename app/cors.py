"""Letting a page of any origin read: CORS headers for reads, preflights answered for the methods
a blueprint shares, and none for any other (browsers then refuse the request)."""

from __future__ import annotations

import re
from collections.abc import Collection

from flask import Response
from flask import request

# What a preflight may name in Access-Control-Request-Headers to have it echoed back.
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")


def share(response: Response, methods: Collection[str], usual: str, exposed: str) -> Response:
    """Let any origin use `methods` on this request's resource; answer their preflights only.

    `*` is safe for what is shared: an answer with `*` is never shown to a page that sent
    credentials (cookies), and a bearer token is sent only by a page that holds it. `usual`
    is what a preflight is allowed when the headers it names cannot be echoed; `exposed`, what
    a page may read of an answer past the headers CORS always lets it read.
    """
    if request.method == "OPTIONS":
        wanted = request.headers.get("Access-Control-Request-Method", "").upper()
        if wanted not in methods:
            return response
        asked = request.headers.get("Access-Control-Request-Headers", "").strip()
        response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        response.headers["Access-Control-Allow-Headers"] = (
            asked if _HEADER_LIST.fullmatch(asked) else usual
        )
        response.headers["Access-Control-Max-Age"] = "86400"
    elif request.method in methods:
        response.headers["Access-Control-Expose-Headers"] = exposed
    else:
        return response
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
