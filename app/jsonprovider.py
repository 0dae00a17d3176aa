"""JSON responses encoded by msgspec: the API's item pages are mostly JSON encoding."""

from __future__ import annotations

from typing import Any

import msgspec
from flask import Flask
from flask import Response
from flask.json.provider import DefaultJSONProvider


class MsgspecJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, encoding and decoding with msgspec (several times faster)."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        # The class, not the app: the app keeps its provider, and this keeps no cycle.
        self._response_class = app.response_class
        self._encode = msgspec.json.Encoder(enc_hook=self.default).encode

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return self._encode(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return msgspec.json.decode(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """Return `jsonify`'s response (compact JSON): msgspec's bytes and a newline.

        Flask's own goes through a str (the bytes decoded, copied with the newline, encoded
        again); this encodes once, to bytes.
        """
        body = self._encode(_jsonified(args, kwargs))
        return self._response_class(body + b"\n", mimetype=self.mimetype)


def _jsonified(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Return what `jsonify(*args, **kwargs)` serializes, by Flask's documented rules.

    No arguments give null; one argument is itself; several are a list; keywords are an object.
    """
    if args and kwargs:
        raise TypeError("app.json.response() takes either args or kwargs, not both")
    if not args:
        return kwargs or None
    return args[0] if len(args) == 1 else args
