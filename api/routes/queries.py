from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import CollectionDep, OrjsonRoute, TenantDep
from api.models.common import encode_vector_b64, vector_field
from api.models.queries import (
    AdminQueryRequest,
    BatchQueryRequest,
    BatchQueryResponse,
    QueryRequest,
    QueryResponse,
)
from server.collection import Collection
from server.model import QueryResult

JSON = "application/json"

router = APIRouter(prefix="/v1/collections/{collection}", tags=["queries"], route_class=OrjsonRoute)


def _result(result: QueryResult, explain: bool, b64: bool = False) -> dict[str, Any]:
    """A `QueryResponse` as plain data: encoded by orjson straight away, without building
    and re-validating response models on the hot path (the OpenAPI schema still declares
    `QueryResponse`; tests/api check the shape). `b64`: vectors as `vector_b64`."""
    hits = []
    for hit in result.hits:
        out: dict[str, Any] = {"id": hit.point_id, "owner": hit.owner, "distance": hit.distance}
        if hit.attributes is not None:
            out["attributes"] = hit.attributes
        if hit.vector is not None:
            if b64:
                out["vector_b64"] = encode_vector_b64(hit.vector)
            else:
                out["vector"] = hit.vector
        hits.append(out)
    body: dict[str, Any] = {"results": hits}
    if explain:
        plan = result.plan
        body["plan"] = {
            "strategy": plan.strategy,
            "chosen": plan.chosen,
            "fallback": plan.fallback,
            "candidates": plan.candidates,
            "sequential_candidates": plan.sequential_candidates,
            "estimates_us": plan.estimates_us,
            "below_recall": plan.below_recall,
            "nodes_visited": plan.nodes_visited,
            "shortlists_scanned": plan.shortlists_scanned,
            "distances_computed": plan.distances_computed,
            "timings_ms": plan.timings_ms,
        }
    return body


def json_bytes(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _json(body: dict[str, Any]) -> Response:
    return Response(json_bytes(body), media_type=JSON)


def _wants_vector(include: list[str]) -> bool:
    return "vector" in include or "vector_b64" in include


def _options(body: QueryRequest) -> dict[str, Any]:
    """The keyword arguments of `Collection.query` and `admin_query` a request sets."""
    return {
        "include_attributes": "attributes" in body.include,
        "include_vector": _wants_vector(body.include),
        "vector_paths": [vector_field(body.vector_b64)],
        "exact": body.exact,
        "ef": body.ef,
        "raw_filter": body.filter,
        "strategy": body.strategy,
        "explain": body.explain,
    }


def run_query(body: QueryRequest, collection: Collection, tenant: str) -> dict[str, Any]:
    [result] = collection.query(tenant, [body.vector], body.k, **_options(body))
    return _result(result, body.explain, "vector_b64" in body.include)


def run_batch(body: BatchQueryRequest, collection: Collection, tenant: str) -> dict[str, Any]:
    # Queries with equal options share one plan (and an exact scan, one matrix product).
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, q in enumerate(body.queries):
        key = (
            q.k,
            "attributes" in q.include,
            _wants_vector(q.include),
            q.exact,
            q.ef,
            q.strategy,
            orjson.dumps(q.filter, option=orjson.OPT_SORT_KEYS),
        )
        groups.setdefault(key, []).append(i)
    responses: list[dict[str, Any] | None] = [None] * len(body.queries)
    for (k, attributes, vector, exact, ef, strategy, _), indexes in groups.items():
        first = body.queries[indexes[0]]
        queries = [body.queries[i] for i in indexes]
        paths = [
            f"queries[{i}].{vector_field(q.vector_b64)}"
            for i, q in zip(indexes, queries, strict=True)
        ]
        results = collection.query(
            tenant,
            [q.vector for q in queries],
            k,
            attributes,
            vector,
            paths,
            exact,
            ef,
            raw_filter=first.filter,
            strategy=strategy,
            filter_path=f"queries[{indexes[0]}].filter",
            explain=any(q.explain for q in queries),
        )
        for i, q, result in zip(indexes, queries, results, strict=True):
            responses[i] = _result(result, q.explain, "vector_b64" in q.include)
    return {"queries": [r for r in responses if r is not None]}


def run_admin_query(body: AdminQueryRequest, collection: Collection) -> dict[str, Any]:
    [result] = collection.admin_query([body.vector], body.k, body.tenants, **_options(body))
    return _result(result, body.explain, "vector_b64" in body.include)


# The two tenant query routes are served by the lean lane (api/lean.py) in a running server;
# these declarations give them their OpenAPI description and serve them when the lane is off.


@router.post(
    "/tenants/{tenant}/query",
    response_model=QueryResponse,
    summary="Nearest points among those the tenant can read",
)
async def query(body: QueryRequest, collection: CollectionDep, tenant: TenantDep) -> Response:
    # On the event loop: one query is a fraction of a millisecond of work, less than a
    # hand-off to a worker thread costs (bench/serving.py, docs/benchmarks.md "Serving").
    return _json(run_query(body, collection, tenant))


@router.post(
    "/tenants/{tenant}/query/batch",
    response_model=BatchQueryResponse,
    summary="Several queries in one request (exact ones with equal options: one matrix product)",
)
async def query_batch(
    body: BatchQueryRequest, collection: CollectionDep, tenant: TenantDep
) -> Response:
    # Up to 100 queries: worth a worker thread, so the event loop keeps serving meanwhile.
    return _json(await run_in_threadpool(run_batch, body, collection, tenant))


@router.post(
    "/query",
    response_model=QueryResponse,
    summary="Admin: nearest points across all tenants, or the ones listed",
)
async def admin_query(body: AdminQueryRequest, collection: CollectionDep) -> Response:
    # A scan over every point can take milliseconds: on a worker thread.
    return _json(await run_in_threadpool(run_admin_query, body, collection))
