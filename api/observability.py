"""Per-request observability: a request id, HTTP metrics by route template, an access log line.

The outermost of our middlewares, so responses made by the others (413, bad paths) are counted
and carry the request id too. The route label is the template the router matched (Starlette
puts it in `scope["route"]`), `unmatched` when none did: the label stays bounded whatever the
paths clients send.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.logs import REQUEST_ID, info_line
from server.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")

access_log = logging.getLogger("shoal.access")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if it is 1-128 of [A-Za-z0-9._-], else a new uuid4 (hex)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _CLIENT_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class Observability:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        # Not reset afterwards: each request runs in a task of its own, and the error log of an
        # unhandled exception (written by the error middleware outside this one) needs it.
        REQUEST_ID.set(request_id)
        status = 500  # if the app raises before answering, the error middleware sends a 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"]
            self.metrics.http_request(method, route_template(scope), status, seconds)
            raw = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string", b"")
            path = (raw + b"?" + query if query else raw).decode("latin-1")
            fields = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1e3, 3),
            }
            info_line(access_log, f"{method} {path} {status}", fields)
