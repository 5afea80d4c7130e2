from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import PrincipalDep
from api.deps import CollectionDep, DatabaseDep, OrjsonRoute, TenantDep
from api.models.quotas import QuotasOut, QuotasPatch, QuotasResponse
from api.models.tenants import TenantDeleted, TenantList, TenantOut
from server.errors import NotFound
from server.model import TenantInfo

router = APIRouter(
    prefix="/v1/collections/{collection}/tenants", tags=["tenants"], route_class=OrjsonRoute
)


@router.get("", summary="List tenants with point counts, by name (a tenant key: itself)")
def list_tenants(
    collection: CollectionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> TenantList:
    if principal.tenant is not None:  # a tenant key lists itself, and nobody else
        infos, next_cursor = _own_page(collection, principal.tenant, cursor), None
    else:
        infos, next_cursor = collection.list_tenants(cursor, limit)
    tenants = [
        TenantOut(name=i.name, points=i.points, shared_with_it=i.shared_with_it) for i in infos
    ]
    return TenantList(tenants=tenants, next_cursor=next_cursor)


def _own_page(collection: CollectionDep, tenant: str, cursor: str | None) -> list[TenantInfo]:
    if cursor is not None and cursor >= tenant:
        return []
    try:
        return [collection.tenant_info(tenant)]
    except NotFound:
        return []


@router.get("/{tenant}", summary="Describe a tenant")
def get_tenant(collection: CollectionDep, tenant: TenantDep) -> TenantOut:
    info = collection.tenant_info(tenant)
    return TenantOut(name=info.name, points=info.points, shared_with_it=info.shared_with_it)


@router.put("/{tenant}", summary="Create a tenant (201), or confirm it exists (200)")
def put_tenant(collection: CollectionDep, tenant: TenantDep, response: Response) -> TenantOut:
    if collection.ensure_tenant(tenant):
        response.status_code = 201
    return get_tenant(collection, tenant)


@router.patch("/{tenant}", summary="Admin: set the tenant's quotas (it need not exist yet)")
def patch_tenant(
    body: QuotasPatch, collection: CollectionDep, tenant: TenantDep, database: DatabaseDep
) -> QuotasResponse:
    patch = body.quotas.model_dump(exclude_unset=True)
    quotas = database.quotas.set_tenant(collection, tenant, patch)
    return QuotasResponse(quotas=QuotasOut(**quotas.to_dict()))


@router.delete("/{tenant}", summary="Delete a tenant, the points it owns and grants to it")
def delete_tenant(collection: CollectionDep, tenant: TenantDep) -> TenantDeleted:
    return TenantDeleted(points_deleted=collection.delete_tenant(tenant))
