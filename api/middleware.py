"""ASGI middleware: request body limit (413) and percent-encoded slashes in path segments."""

from __future__ import annotations

from urllib.parse import unquote

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import STATUS_BY_CODE

# Stands in for "/" inside one path segment while routing; names cannot contain control
# characters, so it never collides with a real name (a request that sends it is rejected).
SLASH_IN_SEGMENT = "\x1f"


def restore_slashes(value: str) -> str:
    return value.replace(SLASH_IN_SEGMENT, "/")


async def send_error(
    send: Send, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": STATUS_BY_CODE[code],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def too_large(size: int, max_bytes: int) -> str:
    return f"request body of {size} bytes exceeds the limit of {max_bytes} bytes"


async def read_body(receive: Receive, max_bytes: int) -> bytes | int | None:
    """The whole body; or its size so far once that passes `max_bytes` (the rest is not
    read); or None if the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return size
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def routes_as_is(raw_path: bytes) -> bool:
    """No escaped '/' in a segment and no control character for `EncodedSlashes` to deal
    with: the path the server decoded is the one to route."""
    if SLASH_IN_SEGMENT.encode() in raw_path:
        return False
    if b"%" not in raw_path:
        return True
    lowered = raw_path.lower()
    return b"%2f" not in lowered and b"%1f" not in lowered


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over `body`, already read, as one message, then goes on with
    the real one (for the disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class BodyLimit:
    """Reject bodies over `max_bytes` (declared or streamed) with 413 before any parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(send, "too_large", too_large(int(value), self.max_bytes))
                return
        body = await read_body(receive, self.max_bytes)
        if body is None:
            return  # the client went away
        if isinstance(body, int):
            await send_error(send, "too_large", too_large(body, self.max_bytes))
            return
        await self.app(scope, replay_body(body, receive), send)


class EncodedSlashes:
    """Let tenant names and point ids contain '/', sent percent-encoded as %2F.

    Servers decode the path before routing, which would split such a segment in two; this
    re-decodes the raw path segment by segment and marks slashes inside segments.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw and not routes_as_is(raw):
            lowered = raw.lower()
            if b"%1f" in lowered or SLASH_IN_SEGMENT.encode() in raw:
                await send_error(send, "invalid", "path: names must not contain control characters")
                return
            if b"%2f" in lowered:
                path = raw.split(b"?", 1)[0].decode("utf-8", errors="replace")
                segments = [unquote(s).replace("/", SLASH_IN_SEGMENT) for s in path.split("/")]
                routed = dict(scope, path="/".join(segments))
                try:
                    await self.app(routed, receive, send)
                finally:
                    # The route matched, for the metrics middleware outside (api/observability.py).
                    if "route" in routed:
                        scope["route"] = routed["route"]
                return
        await self.app(scope, receive, send)
