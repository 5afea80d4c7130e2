from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from api.models.common import RequestModel, StrictInt, Vector, VectorB64, one_vector
from api.models.common import absent as _absent

_VECTOR = "The query vector (required unless `vector_b64` is given)."


class QueryRequest(RequestModel):
    vector_b64: VectorB64 | None = None
    vector: Vector | None = Field(None, validate_default=True, description=_VECTOR)
    k: StrictInt = Field(10, ge=1, le=1000, description="How many nearest points to return.")
    include: list[Literal["attributes", "vector", "vector_b64"]] = Field(
        default_factory=lambda: ["attributes"],
        description="What to return with each hit (`vector_b64`: the vector base64-encoded "
        "as little-endian float32).",
    )
    explain: bool = Field(False, description="Return the plan the query ran with.")
    exact: bool = Field(False, description="Force an exact scan of the readable set.")
    ef: StrictInt | None = Field(
        None,
        ge=1,
        le=10000,
        description="Search effort of the Curator or HNSW plan (default: the collection "
        "index `ef`); higher is slower and closer to exact.",
    )
    filter: dict[str, Any] | None = Field(
        None,
        description="Attribute filter (Mongo-style, over the schema's typed fields); see "
        "docs/api.md, Filters.",
    )
    strategy: Literal["exact", "curator", "tenant_hnsw", "shared_hnsw"] | None = Field(
        None,
        description="Force a plan instead of the planner's choice (422 when that index "
        "cannot answer now). For diagnosis and benchmarks.",
    )

    _one_vector = field_validator("vector")(one_vector)


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
    vector_b64: str | None = Field(None, exclude_if=_absent)


class PlanOut(BaseModel):
    strategy: str = Field(
        description="The plan that produced the results: `exact`, `curator`, `tenant_hnsw` or "
        "`shared_hnsw` (`exact` after a fallback)."
    )
    chosen: str = Field(description="The planner's choice (or the forced `strategy`).")
    fallback: bool = Field(
        description="The chosen plan came back with fewer than k results while k points "
        "matched, and an exact scan of the candidates answered instead."
    )
    candidates: int = Field(
        description="Points the query could return: readable by the tenant and matching the "
        "filter, counted exactly."
    )
    sequential_candidates: int = Field(
        description="Candidates stored right after three others of them (in a run of "
        "consecutive rows), which the exact scan reads at a lower cost than rows read from "
        "new places: how the `exact` estimate was priced."
    )
    estimates_us: dict[str, float] = Field(
        description="Estimated cost in microseconds of every plan the planner considered."
    )
    below_recall: list[str] = Field(
        description="Plans estimated but not eligible: their measured recall@10 in this "
        "query's selectivity band is under 0.95 (a graph's self-check; the Curator's, on "
        "tenants with a graph). They run only when forced with `strategy`."
    )
    nodes_visited: int = Field(description="Curator tree nodes visited (0 for other plans).")
    shortlists_scanned: int = Field(description="Curator shortlists scanned.")
    distances_computed: int = Field(description="Vector distances computed (graph: about ef).")
    timings_ms: dict[str, float] = Field(
        description="Time per stage: validate, filter, plan, search, fetch."
    )


class QueryResponse(BaseModel):
    results: list[HitOut]
    plan: PlanOut | None = Field(None, exclude_if=_absent, description="With `explain`.")


class BatchQueryResponse(BaseModel):
    queries: list[QueryResponse]
