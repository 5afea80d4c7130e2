from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CollectionDep, OrjsonRoute, OtherTenantDep, PointIdDep, TenantDep
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
from server.errors import Invalid
from server.model import PointInput, PointView

router = APIRouter(
    prefix="/v1/collections/{collection}/tenants/{tenant}/points",
    tags=["points"],
    route_class=OrjsonRoute,
)


def point_out(view: PointView) -> PointOut:
    return PointOut(
        id=view.point_id,
        owner=view.owner,
        attributes=view.attributes,
        vector=None if view.vector is None else view.vector.tolist(),
        shared_with=view.shared_with,
    )


@router.put("", summary="Upsert a batch of points owned by the tenant")
def upsert_points(
    body: UpsertRequest, collection: CollectionDep, tenant: TenantDep
) -> UpsertResponse:
    inputs = [PointInput(p.id, p.vector, p.attributes, p.shared_with) for p in body.points]
    result = collection.upsert(tenant, inputs)
    return UpsertResponse(created=result.created, updated=result.updated)


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
    views, next_cursor = collection.scroll(
        tenant, body.cursor, body.limit, body.with_vector, body.filter
    )
    return ScrollResponse(points=[point_out(v) for v in views], next_cursor=next_cursor)


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
    owner: Annotated[
        str | None, Query(description="Owner of a point shared with the tenant.")
    ] = None,
) -> PointOut:
    return point_out(collection.get_point(tenant, point_id, owner, with_vector))


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
