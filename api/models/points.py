from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from api.models.common import RequestModel, StrictInt, Vector, VectorB64, one_vector
from api.models.common import absent as _absent


class PointIn(RequestModel):
    id: str = Field(description="1..256 bytes of UTF-8, unique per owner tenant.")
    vector_b64: VectorB64 | None = None
    vector: Vector | None = Field(
        None, validate_default=True, description="Required unless `vector_b64` is given."
    )
    attributes: dict[str, Any] | None = Field(None, description="JSON object; replaces the old.")
    shared_with: list[str] | None = Field(
        None,
        description="Tenants that may read the point. Omitted: an existing point keeps its "
        "grants; given: the grants become exactly this list.",
    )

    _one_vector = field_validator("vector")(one_vector)


class UpsertRequest(RequestModel):
    points: list[PointIn]


class UpsertResponse(BaseModel):
    created: int
    updated: int


class PointOut(BaseModel):
    id: str
    owner: str
    attributes: dict[str, Any]
    vector: list[float] | None = Field(None, exclude_if=_absent, description="With `with_vector`.")
    vector_b64: str | None = Field(
        None, exclude_if=_absent, description="With `with_vector_b64`: little-endian float32."
    )
    shared_with: list[str] | None = Field(
        None, exclude_if=_absent, description="Grantees; shown to the owner only."
    )


class PatchRequest(RequestModel):
    attributes: dict[str, Any] = Field(description="Merged in (RFC 7386): null removes a key.")


class DeleteRequest(RequestModel):
    ids: list[str] | None = Field(None, description="The tenant's point ids to delete.")
    filter: dict[str, Any] | None = Field(
        None, description="Delete the tenant's own points matching this filter instead."
    )


class DeleteResponse(BaseModel):
    deleted: int
    not_found: list[str]


class GrantRequest(RequestModel):
    tenant: str = Field(description="The tenant the point is shared with (created if new).")


class ScrollRequest(RequestModel):
    limit: StrictInt = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, description="`next_cursor` of the previous page.")
    with_vector: bool = False
    with_vector_b64: bool = Field(False, description="Return vectors base64-encoded instead.")
    filter: dict[str, Any] | None = Field(None, description="Only points matching it.")


class ScrollResponse(BaseModel):
    points: list[PointOut]
    next_cursor: str | None


class CountRequest(RequestModel):
    filter: dict[str, Any] | None = Field(None, description="Count only points matching it.")


class CountResponse(BaseModel):
    count: int
