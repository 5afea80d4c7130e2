from __future__ import annotations

from fastapi import APIRouter

from api.deps import CollectionDep, DatabaseDep, OrjsonRoute
from api.models.collections import (
    CollectionCreate,
    CollectionList,
    CollectionOut,
    CollectionPatch,
    Deleted,
)
from server.collection import Collection

router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=OrjsonRoute)


def _out(collection: Collection) -> CollectionOut:
    info = collection.info()
    config = info.config
    return CollectionOut(
        name=config.name,
        dim=config.dim,
        metric=config.metric.value,
        schema={name: field.value for name, field in config.schema.items()},
        created_at=config.created_at,
        points=info.points,
        tenants=info.tenants,
        index=config.index.to_dict(),
        curator=info.curator,
        graphs=info.graphs,
        indexing=info.indexing,
    )


@router.post("", status_code=201, response_model_by_alias=True, summary="Create a collection")
def create_collection(body: CollectionCreate, database: DatabaseDep) -> CollectionOut:
    index = body.index.model_dump(exclude_none=True)
    config = database.create_collection(body.name, body.dim, body.metric, dict(body.schema_), index)
    return _out(database.collection(config.name))


@router.get("", summary="List collections")
def list_collections(database: DatabaseDep) -> CollectionList:
    return CollectionList(collections=[_out(c) for c in database.collections()])


@router.get("/{collection}", summary="Describe a collection")
def get_collection(collection: CollectionDep) -> CollectionOut:
    return _out(collection)


@router.patch("/{collection}", summary="Add typed fields to a collection's schema")
def patch_collection(
    body: CollectionPatch, collection: CollectionDep, database: DatabaseDep
) -> CollectionOut:
    if body.schema_:
        database.extend_schema(collection.name, dict(body.schema_))
    return _out(collection)


@router.delete("/{collection}", summary="Delete a collection and everything in it")
def delete_collection(collection: CollectionDep, database: DatabaseDep) -> Deleted:
    database.delete_collection(collection.name)
    return Deleted()
