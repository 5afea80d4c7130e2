from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format 0.0.4)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "The metrics, as text"}},
)
def scrape(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
