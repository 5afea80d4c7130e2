"""The application factory: `create_app(settings)` builds the FastAPI app around a Database.

Lifespan: BLAS pinned to one thread, then recovery runs on a background thread so that
`/healthz` answers at once and `/readyz` turns 200 when the store is recovered; on shutdown
(after uvicorn drained in-flight requests) the store is synced and closed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from threadpoolctl import threadpool_limits

from api import json_vectors
from api.auth import Authentication, authorize_request
from api.errors import install_error_handlers
from api.forward import LOCAL_PATHS, ToWriter, client_from_worker
from api.lean import LeanLane
from api.middleware import BodyLimit, EncodedSlashes
from api.models.common import ErrorResponse
from api.observability import Observability
from api.routes import collections, health, keys, metrics, points, queries, tenants, transfer
from server.database import Database
from server.follower import Follower, FollowerLost, SharedSequences
from server.metrics import Metrics
from server.settings import Settings
from server.workers import RunDir, WorkerRole

log = logging.getLogger("shoal.app")

_ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "Malformed JSON"),
        (401, "No API key, a malformed header, or an unknown, revoked or expired key"),
        (403, "The key may not do this (admin-only route, read-only key)"),
        (404, "No such collection, tenant or point (or outside the key's scope)"),
        (409, "Conflict"),
        (413, "Body or batch too large"),
        (422, "Invalid input; the message names the field"),
        (429, "Over a quota; `Retry-After` says when to retry"),
        (503, "Not ready (recovering)"),
    ]
}


class ShoalApp(FastAPI):
    """FastAPI, with the lean lane's requests taken before any of FastAPI's own layers; in a
    read worker, what the worker does not serve is forwarded to the writer first of all."""

    lean: LeanLane | None = None
    to_writer: ToWriter | None = None  # a read worker's (api/forward.py)
    has_workers = False  # the writer of a server with read workers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lean, to_writer = self.lean, self.to_writer
        if self.has_workers and scope["type"] == "http":
            client_from_worker(scope)
        if lean is not None and lean.takes(scope):
            if to_writer is not None:
                collection = lean.query_collection(scope)
                if collection is None or not await to_writer.serves(scope, collection):
                    await to_writer.forward(scope, receive, send)
                    return
            await lean.stack(scope, receive, send)
        elif to_writer is not None and scope["type"] == "http" and scope["path"] not in LOCAL_PATHS:
            await to_writer.forward(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, run: RunDir | None = None, worker: WorkerRole | None = None
) -> ShoalApp:
    """`run`: the writer of a server with read workers (server/workers.py): it publishes its
    changes and reports every process's metrics; `worker`: one of its read workers."""
    if worker is not None:
        run = worker.run
    # This app's own registry, passed down: no global state (files shared with the other
    # processes of the server when it has read workers).
    observer = Metrics(run.metrics if run is not None else None)
    shared = SharedSequences(run.sequence, settings.read_workers) if run is not None else None
    follower: Follower | None = None
    if shared is None:
        database = Database(settings, observer)
    elif worker is None:
        database = Database(
            settings, observer, on_change=shared.publish, trim_floor=shared.trim_floor
        )
    else:
        follower_dir = worker.run.follower(os.getpid())
        database = Database(settings, observer, follower_dir=follower_dir)
        follower = Follower(database, shared, worker.slot)
    # Batch queries of the lean lane run here; FastAPI's own worker threads (anyio) serve
    # upserts and the other blocking routes. `query_threads` sizes each.
    query_pool = ThreadPoolExecutor(settings.query_threads, "query")
    observer.watch(database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # On two cores, a second BLAS thread makes single-query products slower, not faster.
        blas_limit = threadpool_limits(limits=1)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.query_threads
        if follower is not None:
            assert worker is not None and app.to_writer is not None
            # A worker listens only once it can answer: the kernel hands a listening process
            # connections, ready or not, and the writer serves meanwhile.
            await anyio.to_thread.run_sync(_open, database)
            follower.opened()
            follower.start(on_lost=_stop_worker)
            try:
                yield
            finally:
                follower.stop()
                await app.to_writer.aclose()
                query_pool.shutdown(wait=True)
                database.close()
                blas_limit.restore_original_limits()
            return
        recovery = threading.Thread(target=_recover, args=(database,), name="recovery", daemon=True)
        recovery.start()
        try:
            yield
        finally:
            recovery.join()
            query_pool.shutdown(wait=True)  # no batch still reading the store
            database.close()
            blas_limit.restore_original_limits()
            if shared is not None:
                shared.close()
            log.info("store closed")

    app = ShoalApp(
        title="Shoal",
        version="0.1.0",
        summary="Multi-tenant vector database",
        lifespan=lifespan,
        responses=_ERRORS,
        # Shoal exports its own metrics and logs; FastAPI's OpenTelemetry hooks would only
        # add a check per request (about 12 us, bench.serving_quick --profile).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.database = database
    app.state.settings = settings
    app.state.metrics = observer
    install_error_handlers(app)
    app.include_router(health.router)  # probes: no key, no scope
    for module in (metrics, keys, collections, tenants, points, queries, transfer):
        app.include_router(module.router, dependencies=[Depends(authorize_request)])
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    public = ["/healthz", "/readyz"]  # probes
    # The API's own description and its pages: the same for everyone, and a browser loads
    # them without a key.
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    public += [path for path in docs if path]
    if settings.metrics_public:
        public.append("/metrics")
    authenticator = database.authenticator
    app.add_middleware(Authentication, authenticator=authenticator, public_paths=public)
    app.add_middleware(EncodedSlashes)
    app.add_middleware(Observability, metrics=observer)  # outermost: sees every response

    def lean_stack(lane: ASGIApp) -> ASGIApp:
        """The layers of the FastAPI stack that apply to the lane's requests (the others,
        body limit and escaped slashes, are settled by `LeanLane.takes`), in its order."""
        authenticated = Authentication(lane, authenticator=authenticator, public_paths=public)
        observed = Observability(authenticated, metrics=observer)
        return ServerErrorMiddleware(observed, handler=app.exception_handlers[Exception])

    if settings.lean_lane:
        app.lean = LeanLane(database, query_pool, settings.max_request_bytes, lean_stack)
    if follower is not None:
        assert run is not None
        tls = settings.tls_cert is not None
        max_bytes = settings.max_request_bytes
        app.to_writer = ToWriter(follower, database.quotas, run.writer_socket, max_bytes, tls)
    app.has_workers = run is not None and worker is None
    return app


def _stop_worker(lost: FollowerLost) -> None:
    """A read worker shuts down as on SIGTERM (requests drained); its supervisor starts
    another, which recovers from the store."""
    log.error("this read worker lost its place in the change feed: %s; restarting", lost)
    os.kill(os.getpid(), signal.SIGTERM)


def _open(database: Database) -> None:
    """Recovery, after the request parser's kernel (the store's are compiled by `open`)."""
    json_vectors.warm_up()
    database.open()


def _recover(database: Database) -> None:
    try:
        _open(database)
    except BaseException:
        log.exception("recovery failed; /healthz reports it and no request is served")
