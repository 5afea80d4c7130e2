"""A read worker's front: serve a query here, or pass the request to the writer.

A read worker (`shoal serve --read-workers N`, server/workers.py) shares the writer's port,
so any request can reach it. It serves only what its follower copy answers exactly as the
writer would: the lean lane's query and batch query (api/lean.py), in a collection where no
query rate applies (the writer alone holds the rate buckets: a bucket per process would
multiply a tenant's rate by the process count), and its own probes. Before serving, it
applies the writer's changes published so far (`Follower.catch_up`), so a write acknowledged
to any client is in every answer that follows it.

Everything else (writes, admin routes, point reads, /metrics, the docs) is forwarded to the
writer over its Unix socket, headers and body as received, and the writer's answer is
relayed as it comes: the writer authenticates, validates and answers it as if the client had
called it directly. If the writer cannot be reached the answer is 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.types import Receive, Scope, Send

from api.middleware import send_error
from server.follower import Follower, FollowerLost
from server.quotas import QuotaBook

log = logging.getLogger("shoal.forward")

LOCAL_PATHS = frozenset({"/healthz", "/readyz"})  # a worker's own state
# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the request's.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


class ToWriter:
    """Decides per request (`serves`) and forwards what it does not serve (`forward`)."""

    def __init__(
        self, follower: Follower, quotas: QuotaBook, writer_socket: Path, tls: bool = False
    ):
        self.follower = follower
        self.quotas = quotas
        # The socket lives in a directory only the server's user can open, so the writer's
        # certificate adds nothing there (and names a host, not a socket path).
        transport = httpx.AsyncHTTPTransport(uds=str(writer_socket), verify=False, retries=1)
        self._client = httpx.AsyncClient(
            transport=transport,
            base_url="https://writer" if tls else "http://writer",
            timeout=httpx.Timeout(None, connect=5.0),
        )

    def serves(self, scope: Scope, collection: str) -> bool:
        """A lean-lane query of `collection`: served here, after catching up, unless a rate
        applies there or this worker lost its place in the change feed."""
        if self.follower.lost is not None:
            return False  # the writer answers until the supervisor replaces this worker
        try:
            self.follower.catch_up()  # first: a quota set just now is among the changes
        except FollowerLost:
            return False
        return not self.quotas.limits_queries(collection)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        names = {k for k, _ in scope["headers"]}
        has_body = b"content-length" in names or b"transfer-encoding" in names
        request = self._client.build_request(
            scope["method"], target, headers=headers, content=_body(receive) if has_body else None
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            log.warning("the writer is not reachable: %s", exc)
            await send_error(send, "unavailable", "the writer process is not reachable; retry")
            return
        try:
            relayed = [
                (k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP
            ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": relayed}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


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
