"""Who is calling (`authenticate`) and whether they may do it (`authorize`).

Principals: the admin (the `admin_key` setting), the metrics key (reads /metrics only), a
tenant key (one collection, one tenant, role `read` or `write`; see server/apikeys.py), and
`open` when no admin key is configured (no authentication: the server then listens on
loopback only, see `check_listen`).

Scope rules, for a tenant key:
- a path naming another collection or another tenant is a 404 with the very message a
  nonexistent one gets (`collection_not_found`, `tenant_not_found`): existence never leaks;
- an admin route is a 403, and so is a write with a `read` key;
- listings and collection-wide figures are narrowed by the routes (`sees_collection`).
The route -> access table is `api/access.py`; docs/security.md renders it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import SecretStr

from server.apikeys import KeyStore, Role, digest
from server.errors import Forbidden, Unauthorized, collection_not_found, tenant_not_found
from server.settings import Settings

MISSING_KEY = "missing API key: send `Authorization: Bearer <key>`"
MALFORMED_HEADER = "malformed Authorization header: expected `Bearer <key>`"
ADMIN_ONLY = "this route needs the admin key"
READ_ONLY = "this API key is read-only"
METRICS_ONLY = "the metrics key can only read /metrics"
METRICS_KEYS = "/metrics needs the admin key or the metrics key"


class Access(StrEnum):
    """What a route needs. Ordered from open to closed in the scope table."""

    PUBLIC = "public"  # no key at all (probes)
    METRICS = "metrics"  # the admin key or the metrics key
    # Admin, or a tenant key (of the collection the path names, if it names one): the route
    # narrows what a tenant key sees to its own collection and tenant.
    COLLECTION = "collection"
    TENANT_READ = "tenant read"  # admin, or a key of this (collection, tenant)
    TENANT_WRITE = "tenant write"  # admin, or a `write` key of this (collection, tenant)
    ADMIN = "admin"  # the admin key only


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["open", "admin", "metrics", "tenant"]
    key_id: str | None = None
    collection: str | None = None
    tenant: str | None = None
    role: Role | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind in ("open", "admin")

    @property
    def actor(self) -> str:
        """Who, for the audit log: never a secret."""
        return f"key:{self.key_id}" if self.kind == "tenant" else self.kind

    def sees_collection(self, collection: str) -> bool:
        return self.is_admin or self.collection == collection


OPEN = Principal("open")
ADMIN = Principal("admin")
METRICS = Principal("metrics")


def authorize(
    principal: Principal, access: Access, collection: str | None, tenant: str | None
) -> None:
    """Raise Forbidden (403) or NotFound (404, out of scope) unless `principal` may call a
    route of `access` on `collection`/`tenant` (the path's, when it names them)."""
    if access is Access.PUBLIC or principal.is_admin:
        return
    if access is Access.METRICS:
        if principal.kind != "metrics":
            raise Forbidden(METRICS_KEYS)
        return
    if principal.kind == "metrics":
        raise Forbidden(METRICS_ONLY)
    if access is Access.ADMIN:
        raise Forbidden(ADMIN_ONLY)
    if collection is not None and collection != principal.collection:
        raise collection_not_found(collection)
    if access in (Access.TENANT_READ, Access.TENANT_WRITE):
        assert collection is not None and tenant is not None, "a tenant route names both"
        if tenant != principal.tenant:
            raise tenant_not_found(tenant, collection)
        if access is Access.TENANT_WRITE and principal.role is not Role.WRITE:
            raise Forbidden(READ_ONLY)


class Authenticator:
    """Maps an `Authorization` header to a Principal (or raises Unauthorized)."""

    def __init__(self, settings: Settings, keys: KeyStore):
        self.keys = keys
        self.required = settings.admin_key is not None
        self._admin = _digest_of(settings.admin_key)
        self._metrics = _digest_of(settings.metrics_key)

    def authenticate(self, header: str | None) -> Principal:
        if not self.required:
            return OPEN
        if header is None:
            raise Unauthorized(MISSING_KEY)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthorized(MALFORMED_HEADER)
        presented = digest(token)
        # Digests of equal length, compared in constant time: nothing about the admin key's
        # length or prefix shows in the response time.
        if self._admin is not None and hmac.compare_digest(presented, self._admin):
            return ADMIN
        if self._metrics is not None and hmac.compare_digest(presented, self._metrics):
            return METRICS
        record = self.keys.verify(token, presented)
        return Principal("tenant", record.key_id, record.collection, record.tenant, record.role)


def _digest_of(secret: SecretStr | None) -> bytes | None:
    return None if secret is None else hashlib.sha256(secret.get_secret_value().encode()).digest()


# -- where the server may listen ----------------------------------------------------------


class InsecureListen(Exception):
    """A non-loopback address without an admin key and without `insecure`."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_listen(settings: Settings) -> str | None:
    """The warning to log at start (None: none), or InsecureListen if it must not start."""
    if settings.admin_key is not None:
        return None
    if is_loopback(settings.host):
        return (
            f"no admin key: authentication is off; listening on loopback ({settings.host}) "
            "only. Set SHOAL_ADMIN_KEY (or SHOAL_ADMIN_KEY_FILE) to serve beyond it."
        )
    if not settings.insecure:
        raise InsecureListen(
            f"refusing to listen on {settings.host} without an admin key: anyone who can "
            "reach it could read and change every tenant's data. Set SHOAL_ADMIN_KEY (or "
            "SHOAL_ADMIN_KEY_FILE), listen on 127.0.0.1, or pass --insecure (SHOAL_INSECURE=1) "
            "to run without authentication anyway."
        )
    return (
        f"INSECURE: listening on {settings.host} WITHOUT AUTHENTICATION (--insecure): anyone "
        "who can reach this port can read, change and delete every tenant's data"
    )
