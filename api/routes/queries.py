from __future__ import annotations

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
        strategy=plan.strategy, candidates=plan.candidates, timings_ms=plan.timings_ms
    )
    return QueryResponse(results=hits, plan=plan_out if explain else None)


@router.post(
    "/tenants/{tenant}/query",
    summary="Nearest points among those the tenant can read",
)
def query(body: QueryRequest, collection: CollectionDep, tenant: TenantDep) -> QueryResponse:
    [result] = collection.query(
        tenant, [body.vector], body.k, "attributes" in body.include, "vector" in body.include
    )
    return _response(result, body.explain)


@router.post(
    "/tenants/{tenant}/query/batch",
    summary="Several queries in one request (one matrix product per group of equal options)",
)
def query_batch(
    body: BatchQueryRequest, collection: CollectionDep, tenant: TenantDep
) -> BatchQueryResponse:
    groups: dict[tuple[int, bool, bool], list[int]] = {}
    for i, q in enumerate(body.queries):
        key = (q.k, "attributes" in q.include, "vector" in q.include)
        groups.setdefault(key, []).append(i)
    responses: list[QueryResponse | None] = [None] * len(body.queries)
    for (k, attributes, vector), indexes in groups.items():
        vectors = [body.queries[i].vector for i in indexes]
        paths = [f"queries[{i}].vector" for i in indexes]
        results = collection.query(tenant, vectors, k, attributes, vector, paths)
        for i, result in zip(indexes, results, strict=True):
            responses[i] = _response(result, body.queries[i].explain)
    return BatchQueryResponse(queries=[r for r in responses if r is not None])


@router.post(
    "/query",
    summary="Admin: nearest points across all tenants, or the ones listed",
)
def admin_query(body: AdminQueryRequest, collection: CollectionDep) -> QueryResponse:
    [result] = collection.admin_query(
        [body.vector], body.k, body.tenants, "attributes" in body.include, "vector" in body.include
    )
    return _response(result, body.explain)
