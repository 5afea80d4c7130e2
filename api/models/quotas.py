from __future__ import annotations

from pydantic import BaseModel, Field

from api.models.common import RequestModel, StrictFloat, StrictInt


class QuotasIn(RequestModel):
    """A patch: a field given sets the quota, `null` removes it, an absent one is kept."""

    max_points: StrictInt | None = Field(
        None, ge=0, description="Most points owned (tenant) or held (collection)."
    )
    max_upsert_batch: StrictInt | None = Field(
        None, ge=1, description="Most points in one upsert request."
    )
    query_rate: StrictFloat | None = Field(
        None, gt=0, description="Read requests a second (a batch query counts each query)."
    )
    query_burst: StrictInt | None = Field(
        None, ge=1, description="Read bucket size (default: the rate, rounded up)."
    )
    write_rate: StrictFloat | None = Field(None, gt=0, description="Write requests a second.")
    write_burst: StrictInt | None = Field(
        None, ge=1, description="Write bucket size (default: the rate, rounded up)."
    )


class QuotasOut(BaseModel):
    """Quotas in force; `null` is unlimited."""

    max_points: int | None
    max_upsert_batch: int | None
    query_rate: float | None
    query_burst: int | None
    write_rate: float | None
    write_burst: int | None


class QuotasPatch(RequestModel):
    quotas: QuotasIn = Field(description="The quotas to change.")


class QuotasResponse(BaseModel):
    quotas: QuotasOut
