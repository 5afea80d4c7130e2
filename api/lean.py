"""The lean lane: query, batch query and upsert served straight from ASGI.

These three routes carry nearly all of a busy server's requests, and a query's search takes a
tenth of a millisecond; FastAPI's layers, routing, dependency solving and request objects cost
several times that (bench/serving.py profiles, docs/benchmarks.md "Serving"). The app
(`api.app.ShoalApp`) hands the lane a request before any of FastAPI's own layers when
`LeanLane.takes` it: one of the three routes, a path without an escaped '/', an
`application/json` body whose declared length is within the body limit. The lane wraps it in
the same middlewares the FastAPI stack has (error guard, request id, metrics and access log,
authentication) and then does what the FastAPI route does, in the same order, with the same
functions:

    JSON body (400) -> `api.auth.admit` (401/403/404/429) -> the collection (404)
        -> the request model's validation (422, same pydantic model, same message)
        -> `run_*` of api/routes (shared with the FastAPI route) -> orjson response

The vectors of all three are read from the body's bytes straight into numpy arrays
(api/json_vectors.py: 40 -> 20 us per 384-d vector of an upsert), the rest by orjson; a body
that module cannot vouch for is parsed by orjson whole, and a model error is always
reported from that ordinary parse, so the answers are FastAPI's either way.

A query runs on the event loop: handing it to a worker thread so that its search (which
releases the GIL) could overlap other requests cost more than it gained, 1.37x fewer queries
per second at 4 clients (GIL hand-offs between the loop and the workers; bench.serving_quick
--ab, docs/benchmarks.md "Serving"). A batch runs on a query thread, an upsert on FastAPI's
worker threads (it waits for the WAL sync).

Anything else (another content type, no or a zero `Content-Length`, an escaped '/', a body
over the limit) goes through FastAPI as before, so it answers exactly as it always did; the
FastAPI routes stay declared, which keeps the OpenAPI schema, and serve everything when the
lane is off (`lean_lane = false`). A test sends the same valid and invalid requests both ways
and compares the answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api import json_vectors
from api.access import P, Rule, T, rule_for
from api.auth import admit
from api.errors import (
    shoal_error_response,
    unexpected_error_response,
    validation_error_response,
)
from api.middleware import read_body, routes_as_is, send_error, too_large
from api.models.points import UpsertRequest
from api.models.queries import BatchQueryRequest, QueryRequest
from api.routes import points, queries
from api.routes.points import run_upsert
from api.routes.queries import json_bytes, run_batch, run_query
from server.collection import Collection
from server.database import Database
from server.errors import ShoalError

Runner = Callable[[Any, Collection, str], dict[str, Any]]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_LANE = "shoal.lane"  # the ASGI scope key `takes` sets: (lane, path parameters)


@dataclass(frozen=True)
class RouteLabel:
    """What the metrics label (`path`) and the audit log (`name`) know a route by: the
    FastAPI route's template and endpoint name, as its own routing would put in the scope."""

    path: str
    name: str


@dataclass(frozen=True)
class _Lane:
    pattern: re.Pattern[str]
    route: RouteLabel
    rule: Rule
    model: type[BaseModel]
    run: Runner
    handoff: str  # "inline", "batch" (a query thread), "write" (FastAPI's worker threads)
    vectors: str | None  # where the vectors are: the body's `vector` (None), or this list's


# (method, route template, FastAPI endpoint, request model, runner, hand-off: see `_respond`,
# the list whose members hold the vectors, None for the body's own `vector`)
_LANES: list[tuple[str, str, Callable[..., Any], type[BaseModel], Runner, str, str | None]] = [
    ("POST", T + "/query", queries.query, QueryRequest, run_query, "inline", None),
    (
        "POST",
        T + "/query/batch",
        queries.query_batch,
        BatchQueryRequest,
        run_batch,
        "batch",
        "queries",
    ),
    ("PUT", P, points.upsert_points, UpsertRequest, run_upsert, "write", "points"),
]


def _pattern(template: str) -> re.Pattern[str]:
    """Starlette's own rule for `{name}`: one path segment."""
    return re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + r"\Z")


class LeanLane:
    """Takes the lane's requests (`takes`) and serves them (`__call__`) through `stack`: the
    middlewares FastAPI's stack has for them, around the lane itself."""

    def __init__(
        self,
        database: Database,
        pool: concurrent.futures.ThreadPoolExecutor,
        max_bytes: int,
        wrap: Callable[[ASGIApp], ASGIApp],
    ):
        self.database = database
        self.max_bytes = max_bytes
        self.lanes: dict[str, list[_Lane]] = {}
        self._pool = pool  # the app's query threads, shut down with the app
        for method, template, endpoint, model, run, handoff, vectors in _LANES:
            lane = _Lane(
                _pattern(template),
                RouteLabel(template, endpoint.__name__),
                rule_for(method, template),
                model,
                run,
                handoff,
                vectors,
            )
            self.lanes.setdefault(method, []).append(lane)
        self.stack = wrap(self)

    def takes(self, scope: Scope) -> bool:
        """True for a request the lane serves as FastAPI would; it notes the lane in `scope`.
        Decided from the request line and headers only, before the body is read."""
        if scope["type"] != "http":
            return False
        lanes = self.lanes.get(scope["method"])
        raw = scope.get("raw_path")
        if not lanes or not raw or not routes_as_is(raw):
            return False  # an encoded '/' or a control character: EncodedSlashes' business
        for lane in lanes:
            match = lane.pattern.match(scope["path"])
            if match is not None:
                break
        else:
            return False
        media, length = None, 0
        for name, value in scope["headers"]:
            if name == b"content-type" and media is None:  # the first, as Starlette reads it
                media = value.split(b";", 1)[0].strip().lower()
            elif name == b"content-length":
                # (At most 18 digits: `int` refuses very long strings; the parser's business.)
                length = int(value) if value.isdigit() and len(value) <= 18 else 0
            elif name == b"transfer-encoding":
                return False  # chunked: the length is known only at the end (BodyLimit's)
        # Exactly the bodies FastAPI parses as JSON: `application/json`, with parameters or
        # not (other `+json` types take FastAPI's own path).
        if media != b"application/json" or not 0 < length <= self.max_bytes:
            return False  # FastAPI's answer: 413, 400 for no body, 422 for another type
        scope[_LANE] = (lane, match.groupdict())
        return True

    @staticmethod
    def query_collection(scope: Scope) -> str | None:
        """The collection of a query or batch query `takes` took (None: an upsert)."""
        lane, params = scope[_LANE]
        return None if lane.handoff == "write" else params["collection"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane, params = scope[_LANE]
        body = await read_body(receive, self.max_bytes)
        if body is None:
            return  # the client went away
        if isinstance(body, int):  # more than Content-Length said: no parser should allow it
            await send_error(send, "too_large", too_large(body, self.max_bytes))
            return
        scope["route"] = lane.route
        try:
            response = await self._respond(lane, params, scope, body)
        except ShoalError as exc:
            await shoal_error_response(exc)(scope, receive, send)
            return
        except Exception as exc:
            await unexpected_error_response(scope["method"], scope["path"], exc)(
                scope, receive, send
            )
            return
        if isinstance(response, JSONResponse):
            await response(scope, receive, send)
            return
        headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(response))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": response})

    async def _respond(
        self, lane: _Lane, params: dict[str, str], scope: Scope, raw: bytes
    ) -> bytes | JSONResponse:
        body = json_vectors.loads(raw, lane.vectors)
        fast = body is not None
        if not fast:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return validation_error_response([{"type": "json_invalid", "loc": ("body", 0)}])
        collection_name, tenant = params["collection"], params["tenant"]
        database = self.database
        admit(database, scope, lane.rule, lane.route.name, collection_name, tenant, body)
        collection = database.collection(collection_name)
        try:
            # `from_attributes`: how FastAPI validates a body, so a non-object gets its message.
            request = lane.model.model_validate(body, from_attributes=True)
        except ValidationError as exc:
            if not fast:
                return _invalid(exc)
            # An error message can quote the input: the ordinary parse's, as FastAPI's.
            try:
                request = lane.model.model_validate(orjson.loads(raw), from_attributes=True)
            except ValidationError as exc:
                return _invalid(exc)
        if lane.handoff == "batch":
            # Up to 100 queries: on a query thread, so that the event loop serves others.
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()  # the request id, for log lines
            answer = await loop.run_in_executor(
                self._pool, context.run, lane.run, request, collection, tenant
            )
        elif lane.handoff == "write":
            # Writes wait for the WAL sync on the threads FastAPI's own routes use, apart from
            # the query threads, so that writers waiting on the disk never hold up queries.
            answer = await run_in_threadpool(lane.run, request, collection, tenant)
        else:
            answer = lane.run(request, collection, tenant)
        return json_bytes(answer)


def _invalid(exc: ValidationError) -> JSONResponse:
    return validation_error_response([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])
