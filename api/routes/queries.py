from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter

from api.deps import CollectionDep, OrjsonRoute, TenantDep
from api.models.queries import (
    AdminQueryRequest,
    BatchQueryRequest,
    BatchQueryResponse,
    HitOut,
    PlanOut,
    QueryRequest,
    QueryResponse,
)
from server.model import QueryResult

router = APIRouter(prefix="/v1/collections/{collection}", tags=["queries"], route_class=OrjsonRoute)


def _response(result: QueryResult, explain: bool) -> QueryResponse:
    hits = [
        HitOut(
            id=hit.point_id,
            owner=hit.owner,
            distance=hit.distance,
            attributes=hit.attributes,
            vector=None if hit.vector is None else hit.vector.tolist(),
        )
        for hit in result.hits
    ]
    plan = result.plan
    plan_out = PlanOut(
        strategy=plan.strategy,
        chosen=plan.chosen,
        fallback=plan.fallback,
        candidates=plan.candidates,
        estimates_us=plan.estimates_us,
        nodes_visited=plan.nodes_visited,
        shortlists_scanned=plan.shortlists_scanned,
        distances_computed=plan.distances_computed,
        timings_ms=plan.timings_ms,
    )
    return QueryResponse(results=hits, plan=plan_out if explain else None)


@router.post(
    "/tenants/{tenant}/query",
    summary="Nearest points among those the tenant can read",
)
def query(body: QueryRequest, collection: CollectionDep, tenant: TenantDep) -> QueryResponse:
    [result] = collection.query(
        tenant,
        [body.vector],
        body.k,
        "attributes" in body.include,
        "vector" in body.include,
        exact=body.exact,
        ef=body.ef,
        raw_filter=body.filter,
        strategy=body.strategy,
    )
    return _response(result, body.explain)


@router.post(
    "/tenants/{tenant}/query/batch",
    summary="Several queries in one request (exact ones with equal options: one matrix product)",
)
def query_batch(
    body: BatchQueryRequest, collection: CollectionDep, tenant: TenantDep
) -> BatchQueryResponse:
    # Queries with equal options share one plan (and an exact scan, one matrix product).
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, q in enumerate(body.queries):
        key = (
            q.k,
            "attributes" in q.include,
            "vector" in q.include,
            q.exact,
            q.ef,
            q.strategy,
            orjson.dumps(q.filter, option=orjson.OPT_SORT_KEYS),
        )
        groups.setdefault(key, []).append(i)
    responses: list[QueryResponse | None] = [None] * len(body.queries)
    for (k, attributes, vector, exact, ef, strategy, _), indexes in groups.items():
        first = body.queries[indexes[0]]
        vectors = [body.queries[i].vector for i in indexes]
        paths = [f"queries[{i}].vector" for i in indexes]
        results = collection.query(
            tenant,
            vectors,
            k,
            attributes,
            vector,
            paths,
            exact,
            ef,
            raw_filter=first.filter,
            strategy=strategy,
            filter_path=f"queries[{indexes[0]}].filter",
        )
        for i, result in zip(indexes, results, strict=True):
            responses[i] = _response(result, body.queries[i].explain)
    return BatchQueryResponse(queries=[r for r in responses if r is not None])


@router.post(
    "/query",
    summary="Admin: nearest points across all tenants, or the ones listed",
)
def admin_query(body: AdminQueryRequest, collection: CollectionDep) -> QueryResponse:
    [result] = collection.admin_query(
        [body.vector],
        body.k,
        body.tenants,
        "attributes" in body.include,
        "vector" in body.include,
        exact=body.exact,
        ef=body.ef,
        raw_filter=body.filter,
        strategy=body.strategy,
    )
    return _response(result, body.explain)
