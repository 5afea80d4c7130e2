from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.models.common import RequestModel, StrictInt

FieldTypeName = Literal["keyword", "integer", "float", "boolean", "keyword[]", "datetime"]


class CollectionCreate(RequestModel):
    name: str = Field(description="1-128 of letters, digits, `_`, `-`, `.`.")
    dim: StrictInt = Field(description="Vector dimension, 1..4096.")
    metric: Literal["cosine", "l2", "ip"] = Field("cosine", description="Distance metric.")
    schema_: dict[str, FieldTypeName] = Field(
        default_factory=dict,
        alias="schema",
        description="Typed attribute fields; values of these fields are checked on write.",
    )


class CollectionOut(BaseModel):
    name: str
    dim: int
    metric: str
    schema_: dict[str, str] = Field(alias="schema", serialization_alias="schema")
    created_at: float
    points: int
    tenants: int


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class Deleted(BaseModel):
    deleted: bool = True
