"""One validated settings object: defaults, then `SHOAL_*` environment, then CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A shorter admin key is guessable by brute force over the network; `openssl rand -hex 32`.
MIN_SECRET_CHARS = 16


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
        8,
        ge=1,
        description="Worker threads for blocking requests (upserts waiting for the WAL sync, "
        "admin queries, scrolls), and as many again for batch queries.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="uvicorn's event loop. uvloop measured faster here (docs/benchmarks.md, "
        "Serving).",
    )
    http_parser: Literal["httptools", "h11"] = Field(
        "httptools",
        description="uvicorn's HTTP/1.1 parser. httptools measured faster here "
        "(docs/benchmarks.md, Serving).",
    )
    lean_lane: bool = Field(
        True,
        description="Serve query, batch query and upsert through the lean lane (api/lean.py: "
        "same checks, validation and answers, without FastAPI's per-request machinery); off: "
        "through FastAPI, for diagnosis.",
    )
    read_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that serve queries beside the writer, on the same port, each "
        "with its own copy of the indexes kept in step with every write (docs/operations.md, "
        "Read workers). 0: the one process serves everything.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Server log level."
    )
    # -- security (docs/security.md) ------------------------------------------------------
    admin_key: SecretStr | None = Field(
        None,
        description="The admin API key; unset (and no `admin_key_file`): no authentication, "
        "loopback only.",
    )
    admin_key_file: Path | None = Field(
        None, description="A file holding the admin key (a mounted secret); read at start."
    )
    metrics_key: SecretStr | None = Field(
        None, description="A key that may read /metrics only (besides the admin key)."
    )
    metrics_key_file: Path | None = Field(None, description="A file holding the metrics key.")
    metrics_public: bool = Field(
        False, description="Serve /metrics without a key (when the network already guards it)."
    )
    insecure: bool = Field(
        False, description="Allow listening beyond loopback without an admin key (no auth)."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve HTTPS.")
    tls_key: Path | None = Field(None, description="PEM private key of `tls_cert`.")
    # -- default quotas of every tenant (docs/security.md#quotas); unset: unlimited --------
    quota_max_points: int | None = Field(
        None, ge=0, description="Default most points a tenant may own."
    )
    quota_max_upsert_batch: int | None = Field(
        None, ge=1, description="Default most points in one upsert of a tenant."
    )
    quota_query_rate: float | None = Field(
        None, gt=0, description="Default read requests per second of a tenant (token bucket)."
    )
    quota_query_burst: int | None = Field(
        None, ge=1, description="Default read bucket size (default: the rate, rounded up)."
    )
    quota_write_rate: float | None = Field(
        None, gt=0, description="Default write requests per second of a tenant (token bucket)."
    )
    quota_write_burst: int | None = Field(
        None, ge=1, description="Default write bucket size (default: the rate, rounded up)."
    )

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        self.admin_key = _secret("admin_key", self.admin_key, self.admin_key_file)
        self.metrics_key = _secret("metrics_key", self.metrics_key, self.metrics_key_file)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


def _secret(name: str, value: SecretStr | None, path: Path | None) -> SecretStr | None:
    """The key given directly or read from `path` (surrounding whitespace dropped)."""
    if value is not None and not value.get_secret_value():
        value = None  # `SHOAL_ADMIN_KEY=` (compose passes an unset host variable so): unset
    if value is not None and path is not None:
        raise ValueError(f"give {name} or {name}_file, not both")
    if path is not None:
        try:
            value = SecretStr(path.read_text().strip())
        except OSError as exc:
            raise ValueError(f"{name}_file: cannot read {path}: {exc.strerror}") from None
    if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
        raise ValueError(f"{name} must be at least {MIN_SECRET_CHARS} characters")
    return value
