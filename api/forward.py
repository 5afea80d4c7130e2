"""A read worker's front: serve a query here, or pass the request to the writer.

A read worker (`shoal serve --read-workers N`, server/workers.py) shares the writer's port,
so any request can reach it. It serves only the lean lane's query and batch query
(api/lean.py), in a collection where no query rate applies (the writer alone holds the rate
buckets: a bucket per process would multiply a tenant's rate by the process count), and its
own probes. Before serving it applies the writer's changes published so far
(`Follower.catch_up`, on a worker thread when there are any), so a write acknowledged to any
client is in every answer that starts after it.

Everything else (writes, admin routes, point reads, /metrics, the docs) is forwarded to the
writer over its Unix socket: method, request target (byte for byte), headers and body as
received, less the connection's own headers, plus the client's address in
`X-Shoal-Client`, which the writer believes only from that socket (`client_from_worker`).
The writer's answer is relayed as it comes. A body over the limit is refused here, as the
writer would (413); if the writer cannot be reached the answer is 503 with `Retry-After`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import httpcore
from starlette.types import Receive, Scope, Send

from api.middleware import send_error, too_large
from server.follower import Follower, FollowerLost
from server.quotas import QuotaBook

log = logging.getLogger("shoal.forward")

LOCAL_PATHS = frozenset({"/healthz", "/readyz"})  # a worker's own state
CLIENT_HEADER = b"x-shoal-client"
# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the request's; the writer
# stamps its own date and server on the answer, which the worker's uvicorn would repeat.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        CLIENT_HEADER,
    }
)
_NOT_RELAYED = _HOP_BY_HOP | {b"date", b"server"}
_RETRY_AFTER_S = b"1"
# Connecting and waiting for a pooled connection are local and quick unless the writer is
# stuck; reading has no limit (an export streams for as long as it takes).
_TIMEOUTS = {"connect": 5.0, "pool": 30.0, "write": 30.0, "read": None}


class ToWriter:
    """Decides per request (`serves`) and forwards what it does not serve (`forward`)."""

    def __init__(
        self,
        follower: Follower,
        quotas: QuotaBook,
        writer_socket: Path,
        max_bytes: int,
        tls: bool = False,
    ):
        self.follower = follower
        self.quotas = quotas
        self.max_bytes = max_bytes
        context = None
        if tls:
            # The socket lives in a directory only the server's user can open: the writer's
            # certificate, which names a host and not a socket, adds nothing there.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._scheme = b"https" if tls else b"http"
        # Idle connections are dropped before the writer's keep-alive timeout (5 s) would:
        # a request sent on a connection the writer is closing fails.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, uds=str(writer_socket), keepalive_expiry=2.0, retries=1
        )

    async def serves(self, scope: Scope, collection: str) -> bool:
        """A lean-lane query of `collection`: served here, after catching up, unless a rate
        applies there or this worker lost its place in the change feed."""
        follower = self.follower
        if follower.lost is not None:
            return False  # the writer answers until the supervisor replaces this worker
        if follower.behind:
            # Off the event loop: a record can take long to apply (a collection to load, a
            # Curator tree to index), and the loop serves every other connection meanwhile.
            try:
                await anyio.to_thread.run_sync(follower.catch_up)
            except FollowerLost:
                return False
        # After catching up: a quota set just now is among the changes.
        return not self.quotas.limits_queries(collection)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await send_error(send, "too_large", too_large(int(length), self.max_bytes))
            return
        named = {
            name.strip().lower().encode()
            for k, v in headers
            if k == b"connection"
            for name in v.decode("latin-1").split(",")
        }
        outgoing = [(k, v) for k, v in headers if k not in _HOP_BY_HOP and k not in named]
        if not any(k == b"host" for k, _ in outgoing):
            outgoing.append((b"host", b"writer"))  # HTTP/1.0 may omit it; HTTP/1.1 needs it
        client = scope.get("client")
        if client:
            outgoing.append((CLIENT_HEADER, f"{client[0]}:{client[1]}".encode()))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in headers)
        url = httpcore.URL(scheme=self._scheme, host=b"writer", port=None, target=target)
        started = False
        try:
            async with self._pool.stream(
                scope["method"],
                url,
                headers=outgoing,
                content=_body(receive) if has_body else None,
                extensions={"timeout": _TIMEOUTS},
            ) as response:
                relayed = [(k.lower(), v) for k, v in response.headers]
                relayed = [(k, v) for k, v in relayed if k not in _NOT_RELAYED]
                await send(
                    {"type": "http.response.start", "status": response.status, "headers": relayed}
                )
                started = True
                async for chunk in response.aiter_stream():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
            if started:
                raise  # cut off mid-answer: the client's connection is closed, as it would be
            log.warning("the writer is not reachable: %r", exc)
            message = "the writer process is not reachable; retry"
            await send_error(send, "unavailable", message, ((b"retry-after", _RETRY_AFTER_S),))

    async def aclose(self) -> None:
        await self._pool.aclose()


def client_from_worker(scope: Scope) -> None:
    """The writer: a request that came over the workers' Unix socket carries the client's
    address in `X-Shoal-Client` (for the audit log); from anywhere else the header is a
    client's own claim and is dropped."""
    headers = scope["headers"]
    if not any(k == CLIENT_HEADER for k, _ in headers):
        return
    server = scope.get("server")
    through_socket = server is not None and server[1] is None  # a Unix socket has no port
    if through_socket:
        claimed = next(v for k, v in headers if k == CLIENT_HEADER).decode("latin-1")
        host, _, port = claimed.rpartition(":")
        if host and port.isdigit():
            scope["client"] = (host, int(port))
    scope["headers"] = [(k, v) for k, v in headers if k != CLIENT_HEADER]


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
