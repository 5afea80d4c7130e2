"""The one place where core errors become HTTP statuses, and every error gets one shape:

{"error": {"code": "...", "message": "..."}}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.errors import OverQuota, ShoalError, Unauthorized

log = logging.getLogger("shoal.api")

STATUS_BY_CODE: dict[str, int] = {
    "malformed": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "invalid": 422,
    "over_quota": 429,
    "internal": 500,
    "not_ready": 503,
    "unavailable": 503,
}
_CODE_BY_STATUS = {status: code for code, status in STATUS_BY_CODE.items()}


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=STATUS_BY_CODE[code],
        headers=headers,
    )


def format_location(loc: Sequence[str | int]) -> str:
    """('body', 'points', 3, 'vector') -> 'points[3].vector'."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "path", "query") else loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or str(loc[0] if loc else "body")


def shoal_error_response(exc: ShoalError) -> JSONResponse:
    headers = None
    if isinstance(exc, OverQuota) and exc.retry_after_s is not None:
        # Whole seconds, at least 1: a 0 would invite a busy retry loop.
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    elif isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="shoal"'}  # RFC 6750
    return error_response(exc.code, exc.message, headers)


async def _shoal_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ShoalError)
    return shoal_error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error_response(list(exc.errors()))


def validation_error_response(errors: list[dict[str, Any]]) -> JSONResponse:
    """400 for a body that is not JSON or missing, else 422 naming the first bad field (pydantic
    errors, their `loc` starting with `body`)."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response("malformed", "the request body is not valid JSON")
    first = errors[0]
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return error_response("malformed", "a JSON request body is required")
    messages = [f"{format_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    return error_response("invalid", messages[0] + more)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "internal")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(code, message, getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response(request.method, request.url.path, exc)


def unexpected_error_response(method: str, path: str, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response("internal", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ShoalError, _shoal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
