from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import DatabaseDep
from api.errors import error_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process serves HTTP")
def healthz(database: DatabaseDep) -> JSONResponse:
    if database.failure is not None:
        return error_response("internal", f"recovery failed: {database.failure}")
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: recovery finished, requests are served")
def readyz(database: DatabaseDep) -> JSONResponse:
    if not database.ready:
        return error_response("not_ready", "recovering the store")
    return JSONResponse({"status": "ready"})
