from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.models.common import RequestModel, StrictFloat, StrictInt
from api.models.common import absent as _absent
from api.models.quotas import QuotasIn, QuotasOut

FieldTypeName = Literal["keyword", "integer", "float", "boolean", "keyword[]", "datetime"]


class IndexSettingsIn(RequestModel):
    curator_min_points: StrictInt | None = Field(
        None, description="Train the Curator tree once the collection has this many points."
    )
    curator_min_tenant_points: StrictInt | None = Field(
        None, description="Tenants that can read fewer points are searched exactly."
    )
    branching: StrictInt | None = Field(None, description="Children per tree node.")
    depth: StrictInt | None = Field(None, description="Levels of the tree below the root.")
    max_shortlist: StrictInt | None = Field(None, description="Longest shortlist before a split.")
    training_sample: StrictInt | None = Field(None, description="Points sampled to train.")
    ef: StrictInt | None = Field(None, description="Default search effort.")
    patience: StrictInt | None = Field(
        None, description="Non-improving shortlists scanned before a search stops."
    )
    retrain_drift: StrictFloat | None = Field(
        None, description="Retrain when new points sit this many times farther from leaves."
    )
    shared_graph_min_points: StrictInt | None = Field(
        None, description="Build the collection's shared HNSW graph from this many points."
    )
    tenant_graph_min_points: StrictInt | None = Field(
        None,
        description="A tenant that can read this many points gets its own HNSW graph "
        "(dropped below half of it).",
    )
    hnsw_m: StrictInt | None = Field(None, description="HNSW links per node (M).")
    hnsw_ef_construction: StrictInt | None = Field(
        None, description="HNSW build effort (ef_construction)."
    )
    graph_rebuild_tombstones: StrictFloat | None = Field(
        None, description="Rebuild a graph once this share of its slots are deleted points."
    )


class CollectionCreate(RequestModel):
    name: str = Field(description="1-128 of letters, digits, `_`, `-`, `.`.")
    dim: StrictInt = Field(description="Vector dimension, 1..4096.")
    metric: Literal["cosine", "l2", "ip"] = Field("cosine", description="Distance metric.")
    schema_: dict[str, FieldTypeName] = Field(
        default_factory=dict,
        alias="schema",
        description="Typed attribute fields; values of these fields are checked on write.",
    )
    index: IndexSettingsIn = Field(
        default_factory=IndexSettingsIn, description="Curator index settings (defaults apply)."
    )


class CollectionOut(BaseModel):
    name: str
    dim: int
    metric: str
    schema_: dict[str, str] = Field(alias="schema", serialization_alias="schema")
    created_at: float
    index: dict[str, float | int] = Field(description="Curator settings in force.")
    # Collection-wide figures: left out for tenant keys, which must not learn about others.
    points: int | None = Field(None, exclude_if=_absent, description="Points (admin only).")
    tenants: int | None = Field(None, exclude_if=_absent, description="Tenants (admin only).")
    curator: dict[str, float | int | bool] | None = Field(
        None,
        exclude_if=_absent,
        description="Curator state: `trained`, `pairs`, `memory_bytes`, `drift` (admin only).",
    )
    graphs: dict[str, float | int | bool] | None = Field(
        None,
        exclude_if=_absent,
        description="HNSW state: `shared_graph`, `shared_graph_points`, `tenant_graphs`, "
        "`pending` (labels not yet applied), `building`, `memory_bytes` (admin only).",
    )
    indexing: list[str] = Field(
        description="Schema fields still being indexed (filters on them answer 503)."
    )
    quotas: QuotasOut | None = Field(
        None, exclude_if=_absent, description="The collection's quotas (PATCH responses only)."
    )


class CollectionPatch(RequestModel):
    schema_: dict[str, FieldTypeName] | None = Field(
        None,
        alias="schema",
        description="Fields to add to the schema; declared fields keep their type. Points "
        "already stored are indexed for them in the background.",
    )
    quotas: QuotasIn | None = Field(
        None, description="Quotas of the collection (all its tenants together) to change."
    )


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class Deleted(BaseModel):
    deleted: bool = True
