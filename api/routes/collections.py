from __future__ import annotations

from fastapi import APIRouter

from api.auth import PrincipalDep
from api.deps import CollectionDep, DatabaseDep, OrjsonRoute
from api.models.collections import (
    CollectionCreate,
    CollectionList,
    CollectionOut,
    CollectionPatch,
    Deleted,
)
from api.models.quotas import QuotasOut
from server.auth import Principal
from server.collection import Collection

router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=OrjsonRoute)


def _out(collection: Collection, principal: Principal) -> CollectionOut:
    info = collection.info()
    config = info.config
    out = CollectionOut(
        name=config.name,
        dim=config.dim,
        metric=config.metric.value,
        schema={name: field.value for name, field in config.schema.items()},
        created_at=config.created_at,
        index=config.index.to_dict(),
        indexing=info.indexing,
    )
    if principal.is_admin:  # figures over every tenant: not for a tenant key
        out.points, out.tenants, out.curator = info.points, info.tenants, info.curator
        out.graphs = info.graphs
    return out


@router.post("", status_code=201, response_model_by_alias=True, summary="Create a collection")
def create_collection(
    body: CollectionCreate, database: DatabaseDep, principal: PrincipalDep
) -> CollectionOut:
    index = body.index.model_dump(exclude_none=True)
    config = database.create_collection(body.name, body.dim, body.metric, dict(body.schema_), index)
    return _out(database.collection(config.name), principal)


@router.get("", summary="List collections (a tenant key sees its own)")
def list_collections(database: DatabaseDep, principal: PrincipalDep) -> CollectionList:
    return CollectionList(
        collections=[
            _out(c, principal) for c in database.collections() if principal.sees_collection(c.name)
        ]
    )


@router.get("/{collection}", summary="Describe a collection")
def get_collection(collection: CollectionDep, principal: PrincipalDep) -> CollectionOut:
    return _out(collection, principal)


@router.patch(
    "/{collection}",
    summary="Admin: add typed fields to the schema, set the collection's quotas",
)
def patch_collection(
    body: CollectionPatch, collection: CollectionDep, database: DatabaseDep, principal: PrincipalDep
) -> CollectionOut:
    if body.schema_:
        database.extend_schema(collection.name, dict(body.schema_))
    quotas = database.quotas.collection_quotas(collection.name)
    if body.quotas is not None:
        patch = body.quotas.model_dump(exclude_unset=True)
        quotas = database.quotas.set_collection(collection, patch)
    out = _out(collection, principal)
    out.quotas = QuotasOut(**quotas.to_dict())
    return out


@router.delete("/{collection}", summary="Delete a collection and everything in it")
def delete_collection(collection: CollectionDep, database: DatabaseDep) -> Deleted:
    database.delete_collection(collection.name)
    return Deleted()
