"""One validated settings object: defaults, then `SHOAL_*` environment, then CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="forbid")

    data_dir: Path = Field(Path("./data"), description="Directory of the RocksDB store.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    durability: Literal["fsync", "os"] = Field(
        "fsync",
        description="`fsync`: a write is acknowledged after its WAL is synced to disk (survives "
        "power loss). `os`: after it reaches the OS (survives a process crash, not power loss).",
    )
    max_batch_points: int = Field(
        1000, ge=1, description="Most points one upsert request may carry (413 above)."
    )
    max_delete_points: int = Field(
        100_000,
        ge=1,
        description="Most points one delete-by-filter request may remove (413 above).",
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_attributes_bytes: int = Field(
        65536, ge=16, description="Largest attributes object of one point, as JSON (422 above)."
    )
    query_threads: int = Field(
        8, ge=1, description="Worker threads for requests (search releases the GIL in numpy)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Server log level."
    )
