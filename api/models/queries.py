from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.models.common import RequestModel, StrictInt, Vector
from api.models.common import absent as _absent


class QueryRequest(RequestModel):
    vector: Vector
    k: StrictInt = Field(10, ge=1, le=1000, description="How many nearest points to return.")
    include: list[Literal["attributes", "vector"]] = Field(
        default_factory=lambda: ["attributes"], description="What to return with each hit."
    )
    explain: bool = Field(False, description="Return the plan the query ran with.")
    exact: bool = Field(False, description="Force an exact scan of the readable set.")
    ef: StrictInt | None = Field(
        None,
        ge=1,
        le=10000,
        description="Curator search effort (default: the collection index `ef`).",
    )


class BatchQueryRequest(RequestModel):
    queries: list[QueryRequest] = Field(min_length=1, max_length=100)


class AdminQueryRequest(QueryRequest):
    tenants: list[str] | None = Field(
        None, description="Only points readable by any of these tenants; all when omitted."
    )


class HitOut(BaseModel):
    id: str
    owner: str
    distance: float = Field(description="Smaller is closer: cosine 1-cos, l2 Euclidean, ip 1-dot.")
    attributes: dict[str, Any] | None = Field(None, exclude_if=_absent)
    vector: list[float] | None = Field(None, exclude_if=_absent)


class PlanOut(BaseModel):
    strategy: str = Field(description="`exact` (a scan) or `curator` (the tenant's sub-tree).")
    candidates: int = Field(
        description="Points the query could return (the tenant's readable set)."
    )
    nodes_visited: int = Field(description="Curator tree nodes visited (0 for exact).")
    shortlists_scanned: int = Field(description="Curator shortlists scanned (0 for exact).")
    distances_computed: int = Field(description="Vector distances computed.")
    timings_ms: dict[str, float] = Field(description="Time per stage: validate, search, fetch.")


class QueryResponse(BaseModel):
    results: list[HitOut]
    plan: PlanOut | None = Field(None, exclude_if=_absent, description="With `explain`.")


class BatchQueryResponse(BaseModel):
    queries: list[QueryResponse]
