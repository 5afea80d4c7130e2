from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CollectionDep, OrjsonRoute, OtherTenantDep, PointIdDep, TenantDep
from api.models.common import encode_vector_b64, vector_field
from api.models.points import (
    CountRequest,
    CountResponse,
    DeleteRequest,
    DeleteResponse,
    GrantRequest,
    PatchRequest,
    PointOut,
    ScrollRequest,
    ScrollResponse,
    UpsertRequest,
    UpsertResponse,
)
from server.collection import Collection
from server.errors import Invalid
from server.model import PointInput, PointView

router = APIRouter(
    prefix="/v1/collections/{collection}/tenants/{tenant}/points",
    tags=["points"],
    route_class=OrjsonRoute,
)


def point_out(view: PointView, b64: bool = False) -> PointOut:
    vector = view.vector
    return PointOut(
        id=view.point_id,
        owner=view.owner,
        attributes=view.attributes,
        vector=None if vector is None or b64 else vector.tolist(),
        vector_b64=encode_vector_b64(vector) if vector is not None and b64 else None,
        shared_with=view.shared_with,
    )


def run_upsert(body: UpsertRequest, collection: Collection, tenant: str) -> dict[str, int]:
    inputs = [
        PointInput(p.id, p.vector, p.attributes, p.shared_with, vector_field(p.vector_b64))
        for p in body.points
    ]
    result = collection.upsert(tenant, inputs)
    return {"created": result.created, "updated": result.updated}


# Served by the lean lane (api/lean.py) in a running server; this declaration gives the
# route its OpenAPI description and serves it when the lane is off.
@router.put("", summary="Upsert a batch of points owned by the tenant")
def upsert_points(
    body: UpsertRequest, collection: CollectionDep, tenant: TenantDep
) -> UpsertResponse:
    return UpsertResponse(**run_upsert(body, collection, tenant))


@router.post("/delete", summary="Delete the tenant's points by id or by filter")
def delete_points(
    body: DeleteRequest, collection: CollectionDep, tenant: TenantDep
) -> DeleteResponse:
    if (body.ids is None) == (body.filter is None):
        raise Invalid("ids", "give either `ids` or `filter`, not both and not neither")
    if body.filter is not None:
        return DeleteResponse(deleted=collection.delete_matching(tenant, body.filter), not_found=[])
    result = collection.delete_points(tenant, body.ids or [])
    return DeleteResponse(deleted=result.deleted, not_found=result.not_found)


@router.post(
    "/scroll",
    summary="Page through the points the tenant can read",
)
def scroll_points(
    body: ScrollRequest, collection: CollectionDep, tenant: TenantDep
) -> ScrollResponse:
    with_vector = body.with_vector or body.with_vector_b64
    views, next_cursor = collection.scroll(
        tenant, body.cursor, body.limit, with_vector, body.filter
    )
    points = [point_out(v, body.with_vector_b64) for v in views]
    return ScrollResponse(points=points, next_cursor=next_cursor)


@router.post("/count", summary="Count the points the tenant can read")
def count_points(
    collection: CollectionDep, tenant: TenantDep, body: CountRequest | None = None
) -> CountResponse:
    return CountResponse(count=collection.count(tenant, body.filter if body else None))


@router.get(
    "/{point_id}",
    summary="Fetch a point the tenant owns, or one shared with it",
)
def get_point(
    collection: CollectionDep,
    tenant: TenantDep,
    point_id: PointIdDep,
    with_vector: bool = False,
    with_vector_b64: Annotated[
        bool, Query(description="Return the vector base64-encoded (little-endian float32).")
    ] = False,
    owner: Annotated[
        str | None, Query(description="Owner of a point shared with the tenant.")
    ] = None,
) -> PointOut:
    view = collection.get_point(tenant, point_id, owner, with_vector or with_vector_b64)
    return point_out(view, with_vector_b64)


@router.patch(
    "/{point_id}",
    summary="Merge attributes into one of the tenant's points",
)
def patch_point(
    body: PatchRequest, collection: CollectionDep, tenant: TenantDep, point_id: PointIdDep
) -> PointOut:
    return point_out(collection.patch_attributes(tenant, point_id, body.attributes))


@router.post(
    "/{point_id}/grants",
    summary="Share one of the tenant's points with another tenant",
)
def grant(
    body: GrantRequest, collection: CollectionDep, tenant: TenantDep, point_id: PointIdDep
) -> PointOut:
    return point_out(collection.grant(tenant, point_id, body.tenant))


@router.delete(
    "/{point_id}/grants/{other}",
    summary="Stop sharing a point with a tenant",
)
def revoke(
    collection: CollectionDep, tenant: TenantDep, point_id: PointIdDep, other: OtherTenantDep
) -> PointOut:
    return point_out(collection.revoke(tenant, point_id, other))
