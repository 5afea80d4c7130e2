"""Dependencies: the database, the collection named in the path, decoded path names."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute

from api.middleware import restore_slashes
from server.collection import Collection
from server.database import Database

# Every dependency is `async def`: FastAPI runs a plain `def` dependency on the thread pool,
# and that hand-off cost more than a whole query (bench/serving.py profile).


async def get_database(request: Request) -> Database:
    return request.app.state.database


DatabaseDep = Annotated[Database, Depends(get_database)]


async def get_collection(
    database: DatabaseDep, collection: Annotated[str, Path(description="Collection name.")]
) -> Collection:
    return database.collection(collection)


async def _tenant(tenant: Annotated[str, Path(description="Tenant name, percent-encoded.")]) -> str:
    return restore_slashes(tenant)


_PointIdPath = Annotated[str, Path(description="Point id, percent-encoded.")]
_OtherPath = Annotated[str, Path(description="The grantee tenant, percent-encoded.")]


async def _point_id(point_id: _PointIdPath) -> str:
    return restore_slashes(point_id)


async def _other(other: _OtherPath) -> str:
    return restore_slashes(other)


CollectionDep = Annotated[Collection, Depends(get_collection)]
TenantDep = Annotated[str, Depends(_tenant)]
PointIdDep = Annotated[str, Depends(_point_id)]
OtherTenantDep = Annotated[str, Depends(_other)]


class _OrjsonRequest(Request):
    # The parsed body stays on the request as `_json`: api/auth.py reads batch sizes from it.
    async def json(self):  # type: ignore[no-untyped-def]
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    """Parse JSON bodies with orjson: several times faster than the stdlib on vectors, and it
    rejects the non-standard NaN/Infinity literals that `json.loads` lets through."""

    def get_route_handler(self):  # type: ignore[no-untyped-def]
        handler = super().get_route_handler()

        async def route(request: Request):  # type: ignore[no-untyped-def]
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route
