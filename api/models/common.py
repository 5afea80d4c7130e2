from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Strict: a JSON string "1.5" or `true` in a vector is a client bug, not a number to coerce.
Vector = list[Annotated[float, Field(strict=True)]]
# Strict too: `true` or "10" where a count belongs is a client bug.
StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True)]  # ints are fine; true and "2" are not


def absent(value: object) -> bool:
    """Optional response fields that were not asked for are left out, not sent as null."""
    return value is None


class RequestModel(BaseModel):
    """Unknown fields are errors: a typo must not silently do nothing."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`, `invalid`.")
    message: str = Field(description="What went wrong, naming the offending field.")


class ErrorResponse(BaseModel):
    error: ErrorBody
