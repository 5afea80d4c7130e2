"""The scope table: what every route needs, and which rate bucket it draws from.

One row per (method, route template). `authorize` (api/auth.py) looks the matched route up
here; a route missing from the table needs the admin key (fail closed), and a test fails
until it is added. docs/security.md shows the same table, and a test compares the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.auth import Access
from server.quotas import RateKind

C = "/v1/collections/{collection}"
T = C + "/tenants/{tenant}"
P = T + "/points"


def _length_of(field: str) -> Callable[[Any], int]:
    """The size of a list in the JSON body (1 if absent or not a list: validation reports it)."""

    def length(body: Any) -> int:
        items = body.get(field) if isinstance(body, dict) else None
        return len(items) if isinstance(items, list) else 1

    return length


def _one(_: Any) -> int:
    return 1


@dataclass(frozen=True, slots=True)
class Rule:
    access: Access
    rate: RateKind | None = None  # the bucket charged: `query` (reads) or `write`
    cost: Callable[[Any], int] = _one  # tokens, from the parsed JSON body
    batch_points: Callable[[Any], int] | None = None  # checked against `max_upsert_batch`


_READ = Rule(Access.TENANT_READ, "query")
_WRITE = Rule(Access.TENANT_WRITE, "write")
_ADMIN = Rule(Access.ADMIN)

ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(Access.PUBLIC),
    ("GET", "/readyz"): Rule(Access.PUBLIC),
    ("GET", "/metrics"): Rule(Access.METRICS),
    ("POST", "/v1/keys"): _ADMIN,
    ("GET", "/v1/keys"): _ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): _ADMIN,
    ("POST", "/v1/collections"): _ADMIN,
    ("GET", "/v1/collections"): Rule(Access.COLLECTION),
    ("GET", C): Rule(Access.COLLECTION),
    ("PATCH", C): _ADMIN,
    ("DELETE", C): _ADMIN,
    ("POST", C + "/query"): Rule(Access.ADMIN, "query"),
    ("GET", C + "/tenants"): Rule(Access.COLLECTION),
    ("GET", T): _READ,
    ("PUT", T): _WRITE,
    ("PATCH", T): _ADMIN,
    ("DELETE", T): _ADMIN,
    ("GET", T + "/export"): _ADMIN,
    ("POST", T + "/import"): _ADMIN,
    ("PUT", P): Rule(Access.TENANT_WRITE, "write", batch_points=_length_of("points")),
    ("POST", P + "/delete"): _WRITE,
    ("POST", P + "/scroll"): _READ,
    ("POST", P + "/count"): _READ,
    ("GET", P + "/{point_id}"): _READ,
    ("PATCH", P + "/{point_id}"): _WRITE,
    ("POST", P + "/{point_id}/grants"): _WRITE,
    ("DELETE", P + "/{point_id}/grants/{other}"): _WRITE,
    ("POST", T + "/query"): _READ,
    ("POST", T + "/query/batch"): Rule(Access.TENANT_READ, "query", _length_of("queries")),
}

FAIL_CLOSED = _ADMIN


def rule_for(method: str, path: str) -> Rule:
    return ROUTES.get((method, path), FAIL_CLOSED)
