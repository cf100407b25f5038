"""Bounds on what a REST request may cost before any handler sees it.

The API's bodies are small flat JSON objects, so anything large or deep is
refused up front: a body over :data:`MAX_BODY_BYTES` gets 413 from its
``Content-Length`` header alone, or, when it is sent chunked (no length
announced), as soon as the bytes read so far pass the limit; the rest is never
read. A body nested deeper than :data:`MAX_JSON_DEPTH` is refused before
``json.loads`` would recurse into it (and raise ``RecursionError``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightspeed.errors import DecodeError

MAX_BODY_BYTES = 64 * 1024  # the largest legitimate body (an invoice of 7,089 characters) is ~7 KB
MAX_JSON_DEPTH = 16  # bodies are objects of scalars (depth 1); the margin is for clients' own wrappers

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects in ``raw`` nest (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw))
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def parse_json_body(raw: bytes) -> Any:
    """The body as JSON (``{}`` when empty); DecodeError naming ``body`` otherwise."""
    if not raw:
        return {}
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise DecodeError("body", f"nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except ValueError:  # also UnicodeDecodeError and ints past Python's digit limit
        raise DecodeError("body", "is not valid JSON") from None


class BodyLimit:
    """ASGI middleware: buffer at most ``max_bytes`` of a request body, answer 413 beyond that.

    The buffered body is handed to the app in one message, so the app never
    reads an unbounded stream; a refused body is not read further (the server
    then closes the connection, as HTTP/1.1 requires for an unread body).
    """

    def __init__(self, app: ASGIApp, refuse: Callable[[int, str, str], Response],
                 max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self._refuse, self.max_bytes = app, refuse, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"is larger than {self.max_bytes} bytes"
        lengths = [value for name, value in scope["headers"] if name == b"content-length"]
        for length in lengths:
            if not length.isdigit():
                await self._refuse(400, "is not a number", "content-length")(scope, receive, send)
                return
            if int(length) > self.max_bytes:
                await self._refuse(413, too_large, "body")(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(413, too_large, "body")(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: list[bytes] | None = [b"".join(chunks)]

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                whole, body = body[0], None
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()  # after the body: only http.disconnect can come

        await self.app(scope, replay, send)
