from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.models.common import RequestModel, StrictFloat


class KeyCreate(RequestModel):
    collection: str = Field(description="The collection the key opens.")
    tenant: str = Field(description="The tenant the key acts as (need not exist yet).")
    role: Literal["read", "write"] = Field(description="`read`: reads only; `write`: also writes.")
    expires_at: StrictFloat | None = Field(
        None, description="Unix time (seconds) after which the key is refused; none: never."
    )
    description: str = Field("", max_length=256, description="A note for the admin.")


class KeyOut(BaseModel):
    id: str = Field(description="The key's id, for listing and revoking; not a secret.")
    collection: str
    tenant: str
    role: str
    description: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None = Field(description="When it was revoked; null while it is live.")


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class KeyList(BaseModel):
    keys: list[KeyOut] = Field(description="Every key, revoked ones included, oldest first.")
