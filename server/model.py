"""Service-level value types (dataclasses): what the API hands in and gets back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from index.arena import Metric
from server.validation import FieldType


@dataclass(frozen=True)
class IndexSettings:
    """Per-collection Curator settings (the `index` object of a collection)."""

    curator_min_points: int = 10_000  # train the tree once the collection holds this many
    curator_min_tenant_points: int = 1_000  # smaller readable sets are scanned exactly
    branching: int = 32
    depth: int = 2
    max_shortlist: int = 256
    training_sample: int = 20_000
    ef: int = 128  # default search effort; a query's `ef` overrides it
    patience: int = 5  # consecutive non-improving shortlists before the search stops
    retrain_drift: float = 1.5  # retrain when new points sit this much farther from leaves
    shared_graph_min_points: int = 10_000  # build the collection's HNSW graph from this size
    tenant_graph_min_points: int = 10_000  # a tenant reading this many gets its own graph
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    graph_rebuild_tombstones: float = 0.25  # rebuild a graph once this share is deleted

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class CollectionConfig:
    name: str
    cid: int
    dim: int
    metric: Metric
    schema: dict[str, FieldType] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    index: IndexSettings = field(default_factory=IndexSettings)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "name": self.name,
                "cid": self.cid,
                "dim": self.dim,
                "metric": self.metric.value,
                "schema": {k: v.value for k, v in self.schema.items()},
                "created_at": self.created_at,
                "index": self.index.to_dict(),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> CollectionConfig:
        data = orjson.loads(raw)
        return cls(
            name=data["name"],
            cid=data["cid"],
            dim=data["dim"],
            metric=Metric(data["metric"]),
            schema={k: FieldType(v) for k, v in data["schema"].items()},
            created_at=data["created_at"],
            index=IndexSettings(**data.get("index", {})),
        )


@dataclass(frozen=True, slots=True)
class PointWrite:
    """One validated point of an upsert. `shared_with=None` keeps an existing point's grants."""

    point_id: str
    attributes: dict[str, Any]
    attributes_json: bytes
    shared_with: list[str] | None


@dataclass(frozen=True, slots=True)
class PointView:
    point_id: str
    owner: str
    attributes: dict[str, Any]
    vector: np.ndarray | None = None
    shared_with: list[str] | None = None  # shown to the owner only


@dataclass(slots=True)  # not frozen: made ten times a query, and frozen fields cost to set
class Hit:
    point_id: str
    owner: str
    distance: float
    attributes: dict[str, Any] | None = None
    vector: np.ndarray | None = None


@dataclass(slots=True)
class QueryPlan:
    strategy: str  # the plan that produced the hits (`exact` after a fallback)
    candidates: int  # points the query may return: readable set and filter, counted exactly
    timings_ms: dict[str, float]
    nodes_visited: int = 0
    shortlists_scanned: int = 0
    distances_computed: int = 0
    estimates_us: dict[str, float] = field(default_factory=dict)  # every plan considered
    chosen: str = ""  # the planner's choice
    fallback: bool = False  # the chosen plan came back short and an exact scan answered
    below_recall: list[str] = field(default_factory=list)  # estimated, not eligible
    sequential_candidates: int = 0  # candidates the scan reads as a run's continuation


@dataclass(slots=True)
class QueryResult:
    hits: list[Hit]
    plan: QueryPlan


@dataclass(frozen=True, slots=True)
class UpsertResult:
    created: int
    updated: int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    not_found: list[str]


@dataclass(frozen=True, slots=True)
class TenantInfo:
    name: str
    points: int  # owned
    shared_with_it: int  # points of other tenants it can read


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    config: CollectionConfig
    points: int
    tenants: int
    curator: dict[str, float | int | bool]
    graphs: dict[str, float | int | bool]
    indexing: list[str]  # schema fields still being indexed


@dataclass(frozen=True, slots=True)
class PointInput:
    """One point of an upsert as the client sent it, before validation."""

    point_id: str
    vector: Any  # list of numbers or a float32 array
    attributes: Any = None
    shared_with: list[str] | None = None
    vector_field: str = "vector"  # the request field it came in (`vector_b64`), for errors


@dataclass(frozen=True, slots=True)
class Limits:
    max_batch_points: int = 1000
    max_attributes_bytes: int = 65536
    max_delete_points: int = 100_000
