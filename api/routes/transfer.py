"""Tenant export and import as NDJSON (the format is described in server/transfer.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import CollectionDep, OrjsonRoute, TenantDep
from server.transfer import export_tenant, import_tenant

NDJSON = "application/x-ndjson"

router = APIRouter(
    prefix="/v1/collections/{collection}/tenants/{tenant}",
    tags=["transfer"],
    route_class=OrjsonRoute,
)


class ImportResponse(BaseModel):
    imported: int = Field(description="Points upserted into the tenant.")


@router.get(
    "/export",
    summary="Export the points the tenant owns as NDJSON (streamed)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {NDJSON: {"schema": {"type": "string"}}},
            "description": "A header line, one line per owned point, an end line.",
        }
    },
)
def export(collection: CollectionDep, tenant: TenantDep) -> StreamingResponse:
    # export_tenant checks the tenant before the response starts: an unknown one is a 404.
    return StreamingResponse(export_tenant(collection, tenant), media_type=NDJSON)


@router.post(
    "/import",
    summary="Import an NDJSON export into the tenant (upserts; validated whole first)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {NDJSON: {"schema": {"type": "string"}}},
        }
    },
)
async def import_(request: Request, collection: CollectionDep, tenant: TenantDep) -> ImportResponse:
    body = await request.body()
    imported = await run_in_threadpool(import_tenant, collection, tenant, body.splitlines())
    return ImportResponse(imported=imported)
