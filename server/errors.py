"""Typed errors of the core. Each has a stable `code`; api/errors.py maps codes to HTTP statuses."""

from __future__ import annotations


class ShoalError(Exception):
    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(ShoalError):
    """The request is well-formed JSON but says something impossible; `path` names the field."""

    code = "invalid"

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class NotFound(ShoalError):
    code = "not_found"


def collection_not_found(collection: str) -> NotFound:
    """The one message for a collection that does not exist or is outside the key's scope."""
    return NotFound(f"collection {collection!r} not found")


def tenant_not_found(tenant: str, collection: str) -> NotFound:
    """The one message for a tenant that does not exist or is outside the key's scope."""
    return NotFound(f"tenant {tenant!r} not found in collection {collection!r}")


class Unauthorized(ShoalError):
    """No key, a malformed header, or a key that is unknown, revoked or expired."""

    code = "unauthorized"


class Conflict(ShoalError):
    code = "conflict"


class Forbidden(ShoalError):
    code = "forbidden"


class TooLarge(ShoalError):
    code = "too_large"


class OverQuota(ShoalError):
    """Over a quota; `retry_after_s` says when a retry can succeed (the Retry-After header)."""

    code = "over_quota"

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ShoalError):
    code = "not_ready"


class Unavailable(ShoalError):
    """The store can no longer promise durability (a WAL sync failed); restart to recover."""

    code = "unavailable"
