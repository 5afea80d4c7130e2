from __future__ import annotations

from pydantic import BaseModel, Field


class TenantOut(BaseModel):
    name: str
    points: int = Field(description="Points the tenant owns.")
    shared_with_it: int = Field(description="Points of other tenants it can read.")


class TenantList(BaseModel):
    tenants: list[TenantOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class TenantDeleted(BaseModel):
    deleted: bool = True
    points_deleted: int
