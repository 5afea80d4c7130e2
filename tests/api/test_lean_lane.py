"""The lean lane (api/lean.py) answers exactly as the FastAPI routes it stands in for.

The lane serves query, batch query and upsert straight from ASGI, skipping FastAPI's router,
so nothing but a test keeps its answers in step with the routes in api/routes. Here two apps
run side by side, one with `lean_lane = true` and one with `lean_lane = false`, set up alike
through the API (a typed collection, tenants, a read and a write key, quotas). A table of
valid and invalid requests goes to both in the same order, so writes leave both stores equal
and rate buckets drain alike; every pair of answers must agree (status, JSON body but the
plan's timings, every header but the request id) and match the table's expected status. A
counting wrapper on `LeanLane._respond` proves which requests the lane served: in the lean
app exactly the JSON requests with a body and a valid key, in the other none. Then
`vector_b64` round trips, and the metrics route label of lean requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api import json_vectors
from api.lean import LeanLane
from server.auth import MALFORMED_HEADER, MISSING_KEY, READ_ONLY
from tests.api.helpers import collection_url, point_url, points_url, tenant_url
from tests.support import app_client, bearer

C = "docs"
DIM = 4
SCHEMA = {"section": "keyword", "size": "integer"}
ADMIN_KEY = "lean-lane-admin-key-0123456789abcdef"  # 36 characters
MAX_BATCH_POINTS = 5  # an upsert of 6 points is a 413
MAX_REQUEST_BYTES = 64 * 1024  # a larger body is a 413 before any route
SETTINGS: dict[str, Any] = {
    "admin_key": ADMIN_KEY,
    "max_batch_points": MAX_BATCH_POINTS,
    "max_request_bytes": MAX_REQUEST_BYTES,
}
# Tenant `limited`: two reads, then 429 for hours. Retry-After is ceil(1/rate - elapsed): the
# same 10000 in both apps as long as under a second passes between their requests to it.
LIMITED_QUOTAS = {"query_rate": 0.0001, "query_burst": 2, "max_upsert_batch": 3}

JSON = "application/json"
QUERY_ROUTE = "/v1/collections/{collection}/tenants/{tenant}/query"
BATCH_ROUTE = QUERY_ROUTE + "/batch"
UPSERT_ROUTE = "/v1/collections/{collection}/tenants/{tenant}/points"
# FastAPI's answer to a body that is JSON but not an object (`null` included).
NOT_AN_OBJECT = "body: Input should be a valid dictionary or object to extract fields from"

Role = Literal["admin", "read", "write", "none", "malformed", "unknown"]
VALID_KEY_ROLES = ("admin", "read", "write")
UNKNOWN_KEY = "shoal_0123456789abcdef_" + "0" * 64


def b64(values: list[float]) -> str:
    """The `vector_b64` encoding: base64 of little-endian float32."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def point(pid: str, vector: list[float], section: str, size: Any, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "vector": vector, "attributes": {"section": section, "size": size}, **extra}


# Distinct directions, so no two distances tie and result order is never a coin toss.
POINTS: dict[str, list[dict[str, Any]]] = {
    "acme": [
        point("a1", [1.0, 0.0, 0.0, 0.0], "games", 10),
        point("a2", [0.9, 0.3, 0.0, 0.1], "net", 20),
        point("a3", [0.2, 1.0, 0.1, 0.0], "games", 30, shared_with=["globex"]),
        point("a4", [0.0, 0.4, 1.0, 0.2], "net", 40),
        point("a5", [0.1, 0.0, 0.3, 1.0], "admin", 50),
    ],
    "globex": [
        point("g1", [0.5, 0.5, 0.1, 0.0], "games", 5),
        point("g2", [0.0, 0.2, 0.7, 0.7], "net", 15),
    ],
    "org/a": [
        point("s1", [0.3, 0.3, 0.9, 0.0], "net", 7),
        point("s2", [0.8, 0.0, 0.0, 0.6], "games", 8),
    ],
    "ops@example.org": [  # sent as ops%40example.org: an escape the lane takes
        point("e1", [0.0, 0.0, 0.5, 0.5], "net", 3),
        point("e2", [0.6, 0.1, 0.0, 0.2], "games", 4),
    ],
    "limited": [
        point("l1", [1.0, 1.0, 0.0, 0.0], "games", 1),
        point("l2", [0.0, 1.0, 1.0, 0.0], "net", 2),
    ],
}


# -- the two apps -----------------------------------------------------------------------------


@dataclass
class Side:
    """One app of the pair, and the headers of each key role (tenant keys differ per app)."""

    name: str
    client: TestClient
    keys: dict[Role, dict[str, str]]

    def send(
        self,
        method: str,
        path: str,
        body: bytes,
        role: Role = "admin",
        content_type: str | None = JSON,
        request_id: str | None = None,
    ) -> httpx.Response:
        headers = dict(self.keys[role])
        if content_type is not None:
            headers["Content-Type"] = content_type
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        return self.client.request(
            method, path, content=body, headers=headers, follow_redirects=False
        )

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.client.get(path, params=params, headers=self.keys["admin"])


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def set_up(client: TestClient) -> dict[Role, dict[str, str]]:
    """The same collection, points, keys and quotas in either app; the headers of each role."""
    admin = bearer(ADMIN_KEY)
    body = {"name": C, "dim": DIM, "metric": "cosine", "schema": SCHEMA}
    ok(client.post("/v1/collections", json=body, headers=admin), 201)
    for tenant, points in POINTS.items():
        ok(client.put(points_url(C, tenant), json={"points": points}, headers=admin))
    keys: dict[Role, dict[str, str]] = {
        "admin": admin,
        "none": {},
        "malformed": {"Authorization": f"Basic {ADMIN_KEY}"},
        "unknown": bearer(UNKNOWN_KEY),
    }
    for role in ("read", "write"):
        spec = {"collection": C, "tenant": "acme", "role": role}
        keys[role] = bearer(ok(client.post("/v1/keys", json=spec, headers=admin), 201)["key"])
    quotas = {"quotas": LIMITED_QUOTAS}
    ok(client.patch(tenant_url(C, "limited"), json=quotas, headers=admin))
    return keys


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    """(lean, fastapi): the same app and set-up, with the lean lane on and off."""
    with (
        app_client(tmp_path / "lean", lean_lane=True, **SETTINGS) as lean,
        app_client(tmp_path / "fastapi", lean_lane=False, **SETTINGS) as plain,
    ):
        yield Side("lean", lean, set_up(lean)), Side("fastapi", plain, set_up(plain))


@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the requests that reached `LeanLane._respond` from now on (either app's)."""
    calls: list[str] = []
    respond: Callable[..., Awaitable[Any]] = LeanLane._respond

    async def counting(self: LeanLane, *args: Any) -> Any:
        calls.append(args[2]["path"])  # (lane, params, scope, raw)
        return await respond(self, *args)

    monkeypatch.setattr(LeanLane, "_respond", counting)
    return calls


# -- the table --------------------------------------------------------------------------------


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


def qpath(tenant: str = "acme", collection: str = C) -> str:
    return f"{tenant_url(collection, tenant)}/query"


def bpath(tenant: str = "acme", collection: str = C) -> str:
    return f"{tenant_url(collection, tenant)}/query/batch"


V = [1.0, 0.1, 0.0, 0.0]  # a query vector
ONE = {"queries": [{"vector": V}]}  # a batch of one
Q, B, P = qpath(), bpath(), points_url(C, "acme")
ADMIN_QUERY = f"{collection_url(C)}/query"  # not a lean route: FastAPI in both apps


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: bytes
    status: int  # what both apps must answer
    message: str | None = None  # how FastAPI's error message starts, when given
    role: Role = "admin"
    content_type: str | None = JSON


def _json_case(method: str, default_path: str) -> Callable[..., Case]:
    def make(
        name: str,
        body: Any,
        status: int,
        message: str | None = None,
        *,
        path: str = default_path,
        role: Role = "admin",
        content_type: str | None = JSON,
    ) -> Case:
        return Case(name, method, path, j(body), status, message, role, content_type)

    return make


query = _json_case("POST", Q)
batch = _json_case("POST", B)
upsert = _json_case("PUT", P)


def new_points(prefix: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        point(f"{prefix}{i}", [0.1 * i, 1.0, 0.2, 0.05 * i], "net", 100 + i, **extra)
        for i in range(n)
    ]


def batch_of(*queries: dict[str, Any]) -> dict[str, Any]:
    return {"queries": list(queries)}


def points_of(*points: dict[str, Any]) -> dict[str, Any]:
    return {"points": list(points)}


CASES: list[Case] = [
    # -- valid queries
    query("plain", {"vector": V}, 200),
    query("k1", {"vector": V, "k": 1}, 200),
    query("filter-eq", {"vector": V, "filter": {"section": "games"}}, 200),
    query("filter-range", {"vector": V, "filter": {"size": {"$gte": 20, "$lt": 50}}}, 200),
    query("filter-or", {"vector": V, "filter": {"$or": [{"size": 10}, {"section": "net"}]}}, 200),
    query("explain", {"vector": V, "explain": True}, 200),
    query("explain-filter", {"vector": V, "explain": True, "filter": {"section": "net"}}, 200),
    query("include-none", {"vector": V, "include": []}, 200),
    query("include-vector", {"vector": V, "include": ["vector", "attributes"]}, 200),
    query("include-b64", {"vector": V, "include": ["vector_b64"]}, 200),
    query("ef", {"vector": V, "ef": 50}, 200),
    query("exact", {"vector": V, "exact": True, "explain": True}, 200),
    query("strategy-exact", {"vector": V, "strategy": "exact", "explain": True}, 200),
    query("vector-b64", {"vector_b64": b64(V), "include": ["vector"]}, 200),
    query("vector-big-int", {"vector": [1, 2**62, 0, 0]}, 200),  # in float32's range
    query("read-key", {"vector": V}, 200, role="read"),
    query("write-key", {"vector": V}, 200, role="write"),
    query("charset", {"vector": V}, 200, content_type="application/json; charset=utf-8"),
    query("upper-case-type", {"vector": V}, 200, content_type="Application/JSON"),
    query("shared-point", {"vector": [0.2, 1.0, 0.1, 0.0]}, 200, path=qpath("globex")),
    query("slash-tenant", {"vector": V}, 200, path=qpath("org/a")),
    query("escaped-at-tenant", {"vector": V}, 200, path=qpath("ops@example.org")),
    upsert(
        "escaped-at-upsert",
        {"points": new_points("at", 2)},
        200,
        path=points_url(C, "ops@example.org"),
    ),
    # -- bodies that are not JSON, or not an object
    Case("json-invalid", "POST", Q, b'{"vector": [1, 2', 400, "the request body is not valid"),
    Case("json-trailing", "POST", Q, b'{"vector": [1, 0, 0, 0]} x', 400, "the request body"),
    Case("json-whitespace", "POST", Q, b"  ", 400, "the request body is not valid JSON"),
    Case("json-nan", "POST", Q, b'{"vector": [NaN, 1, 1, 1]}', 400, "the request body is not"),
    Case("body-not-utf8", "POST", Q, b'{"vector": [1, 0, 0, 0], "x": "\xff"}', 400),
    # `null` is a present body to FastAPI: 422 like any other non-object, not a missing body
    Case("json-null", "POST", Q, b"null", 422, NOT_AN_OBJECT),
    query("json-list", [V], 422, NOT_AN_OBJECT),
    query("json-string", "query", 422, NOT_AN_OBJECT),
    query("json-number", 7, 422, NOT_AN_OBJECT),
    # -- invalid fields (the request model)
    query("no-vector", {"k": 3}, 422, "vector: Field required"),
    query("vector-string", {"vector": [1.0, "0.5", 0.0, 0.0]}, 422, "vector[1]"),
    query("vector-bool", {"vector": [1.0, True, 0.0, 0.0]}, 422, "vector[1]"),
    query("vector-null", {"vector": [1.0, None, 0.0, 0.0]}, 422, "vector[1]"),
    query("vector-not-list", {"vector": "1,0,0,0"}, 422, "vector"),
    query("k0", {"vector": V, "k": 0}, 422, "k:"),
    query("k1001", {"vector": V, "k": 1001}, 422, "k:"),
    query("k-string", {"vector": V, "k": "10"}, 422, "k:"),
    query("k-bool", {"vector": V, "k": True}, 422, "k:"),
    query("unknown-field", {"vector": V, "top_k": 3}, 422, "top_k"),
    query("include-string", {"vector": V, "include": "vector"}, 422, "include:"),
    query("include-bad", {"vector": V, "include": ["attributes", "score"]}, 422, "include[1]"),
    query("ef0", {"vector": V, "ef": 0}, 422, "ef:"),
    query("filter-not-object", {"vector": V, "filter": "x"}, 422, "filter:"),
    query("strategy-bad", {"vector": V, "strategy": "fastest"}, 422, "strategy:"),
    query("several-errors", {"k": 0, "ef": 0}, 422, "vector: Field required"),
    query("both-vectors", {"vector": V, "vector_b64": b64(V)}, 422, "vector: give either"),
    query("b64-bad", {"vector_b64": "not base64!"}, 422, "vector_b64: not valid base64"),
    query("b64-length", {"vector_b64": "AAAAAAAA"}, 422, "vector_b64: decodes to 6 bytes"),
    query("b64-empty", {"vector_b64": ""}, 422, "vector_b64"),
    query("b64-number", {"vector_b64": 12}, 422, "vector_b64"),
    # -- invalid values (the server's checks, after the model's)
    query("wrong-dims", {"vector": [1.0, 0.0, 0.0]}, 422, "vector"),
    query("huge-value", {"vector": [1e39, 0.0, 0.0, 0.0]}, 422, "vector: contains NaN"),
    query("huge-int", {"vector": [1, 0, 0, 10**40]}, 422, "vector: contains NaN"),
    query("zero-vector", {"vector": [0.0, 0.0, 0.0, 0.0]}, 422, "vector"),
    query("b64-wrong-dims", {"vector_b64": b64([1.0, 0.0, 0.0])}, 422, "vector_b64"),
    query("b64-nan", {"vector_b64": b64([math.nan, 1.0, 0.0, 0.0])}, 422, "vector_b64"),
    query("b64-zero", {"vector_b64": b64([0.0] * DIM)}, 422, "vector_b64"),
    query("filter-undeclared", {"vector": V, "filter": {"colour": "red"}}, 422, "filter.colour"),
    query("filter-bad-op", {"vector": V, "filter": {"size": {"$foo": 1}}}, 422, "filter.size.$"),
    query("filter-type", {"vector": V, "filter": {"size": "big"}}, 422, "filter.size"),
    query("strategy-unavailable", {"vector": V, "strategy": "curator"}, 422, "strategy"),
    # -- handed to FastAPI by the lane, or never reaching it
    query("text-plain", {"vector": V}, 422, NOT_AN_OBJECT, content_type="text/plain"),
    query("no-content-type", {"vector": V}, 422, NOT_AN_OBJECT, content_type=None),
    query("json-suffix-type", {"vector": V}, 200, content_type="application/vnd.api+json"),
    Case("empty-body", "POST", Q, b"", 400, "a JSON request body is required"),
    Case("empty-body-upsert", "PUT", P, b"", 400, "a JSON request body is required"),
    Case("too-large", "POST", Q, j({"vector": [0.5] * 20_000}), 413, "request body of"),
    Case("get", "GET", Q, b"", 405, "method GET is not allowed"),
    query("trailing-slash", {"vector": V}, 307, path=Q + "/"),
    query(
        "admin-query-b64", {"vector_b64": b64(V), "include": ["vector_b64"]}, 200, path=ADMIN_QUERY
    ),
    query("admin-query-b64-dims", {"vector_b64": b64([1.0])}, 422, "vector_b64", path=ADMIN_QUERY),
    query(
        "admin-query-both", {"vector": V, "vector_b64": b64(V)}, 422, "vector:", path=ADMIN_QUERY
    ),
    # -- collection, tenant, key (in that order, before the body's fields)
    query("unknown-collection", {"vector": V}, 404, path=qpath("acme", "nope")),
    query("unknown-collection-bad-body", {"k": 0}, 404, path=qpath("acme", "nope")),
    Case("unknown-collection-bad-json", "POST", qpath("acme", "nope"), b"[", 400),
    query("unknown-tenant", {"vector": V}, 404, path=qpath("ghost")),
    query("unknown-tenant-bad-body", {"k": 0}, 422, "vector", path=qpath("ghost")),
    query("no-key", {"vector": V}, 401, MISSING_KEY, role="none"),
    Case("no-key-bad-json", "POST", Q, b"{", 401, MISSING_KEY, role="none"),
    query("malformed-key", {"vector": V}, 401, MALFORMED_HEADER, role="malformed"),
    query("unknown-key", {"vector": V}, 401, role="unknown"),
    query("other-tenant", {"vector": V}, 404, role="read", path=qpath("globex")),
    query("other-tenant-bad-body", {"k": 0}, 404, role="read", path=qpath("globex")),
    query("other-collection", {"vector": V}, 404, role="read", path=qpath("acme", "nope")),
    # -- query vectors read from the bytes (api/json_vectors.py), or left to orjson
    Case("query-forms", "POST", Q, b'{"vector":[1,-0,1E-1,0.0e0],"k":3}', 200),
    Case("query-pretty", "POST", Q, b'{\n "k" : 3 ,\n "vector" : [ 1.0 ,\n 0.1, 0 , 0 ]\n}', 200),
    Case("query-escaped-key", "POST", Q, b'{"vec\\u0074or":[1.0,0.1,0.0,0.0],"k":3}', 200),
    Case("query-duplicate-key", "POST", Q, b'{"vector":[1,0,0,0],"vector":[0,1,0,0],"k":3}', 200),
    Case("query-vector-empty", "POST", Q, b'{"vector":[]}', 422, "vector"),
    Case("query-vector-nested", "POST", Q, b'{"vector":[[1.0],[0],[0],[0]]}', 422),
    Case("query-vector-string", "POST", Q, b'{"vector":[1.0,"0",0,0]}', 422),
    Case("query-vector-comma", "POST", Q, b'{"vector":[1.0,0,0,0,]}', 400),
    Case("query-vector-overflow", "POST", Q, b'{"vector":[1e400,0,0,0]}', 400),
    Case("query-vector-beyond-float32", "POST", Q, b'{"vector":[1e39,0,0,0]}', 422, "vector"),
    Case(
        "query-filter-vector", "POST", Q, b'{"vector":[1.0,0,0,0],"filter":{"vector":[1.0]}}', 422
    ),
    Case(
        "batch-forms",
        "POST",
        B,
        b'{"queries":[{"vector":[1,-0,1E-1,0.0e0]},{"vector":[0.5,0.5,0,0]}]}',
        200,
    ),
    Case(
        "batch-duplicate-key",
        "POST",
        B,
        b'{"queries":[{"vector":[1,0,0,0],"vector":[0,1,0,0]}]}',
        200,
    ),
    Case("batch-escaped-key", "POST", B, b'{"queries":[{"vec\\u0074or":[1.0,0.1,0,0]}]}', 200),
    Case("batch-vector-empty", "POST", B, b'{"queries":[{"vector":[1,0,0,0]},{"vector":[]}]}', 422),
    # -- batch queries
    batch("batch", batch_of({"vector": V}, {"vector": [0.0, 1.0, 0.0, 0.0], "k": 2}), 200),
    batch(
        "batch-mixed",
        batch_of(
            {"vector": V, "explain": True, "filter": {"section": "games"}},
            {"vector_b64": b64([0.0, 0.0, 1.0, 0.0]), "include": ["vector_b64"]},
            {"vector": V, "exact": True, "k": 3},
            {"vector": [0.3, 0.3, 0.3, 0.3], "explain": True, "filter": {"section": "games"}},
        ),
        200,
    ),
    batch("batch-read-key", ONE, 200, role="read"),
    batch("batch-slash-tenant", ONE, 200, path=bpath("org/a")),
    batch("batch-empty", {"queries": []}, 422, "queries:"),
    batch("batch-101", {"queries": [{"vector": V}] * 101}, 422, "queries:"),
    batch("batch-missing", {}, 422, "queries: Field required"),
    batch("batch-not-list", {"queries": {"vector": V}}, 422, "queries:"),
    batch("batch-list-body", [{"vector": V}], 422, NOT_AN_OBJECT),
    batch("batch-item-not-object", {"queries": [{"vector": V}, "x"]}, 422, "queries[1]:"),
    batch("batch-item-k", batch_of({"vector": V}, {"vector": V, "k": "3"}), 422, "queries[1].k"),
    batch("batch-item-unknown", batch_of({"vector": V, "kk": 1}), 422, "queries[0].kk"),
    batch("batch-item-both", batch_of({"vector": V, "vector_b64": b64(V)}), 422, "queries[0]."),
    batch("batch-item-dims", batch_of({"vector": V}, {"vector": [1.0]}), 422, "queries[1].vector"),
    batch(
        "batch-item-b64-dims", batch_of({"vector_b64": b64([1.0])}), 422, "queries[0].vector_b64"
    ),
    batch(
        "batch-item-b64-nan",
        batch_of({"vector": V}, {"vector_b64": b64([math.nan] * DIM)}),
        422,
        "queries[1].vector_b64",
    ),
    batch(
        "batch-filter",
        batch_of({"vector": V}, {"vector": V, "filter": {"colour": "x"}}),
        422,
        "queries[1].filter.colour",
    ),
    batch("batch-unknown-tenant", ONE, 404, path=bpath("ghost")),
    batch("batch-no-key", ONE, 401, MISSING_KEY, role="none"),
    batch("batch-other-tenant", ONE, 404, role="write", path=bpath("globex")),
    Case("batch-json-invalid", "POST", B, b'{"queries": [', 400, "the request body is not valid"),
    batch("batch-text-plain", ONE, 422, content_type="text/plain"),
    # -- upserts (applied to both apps in turn: their stores stay equal)
    upsert("upsert-new", {"points": new_points("n", 2)}, 200, role="write"),
    upsert("upsert-update", {"points": new_points("n", 3)}, 200, role="write"),
    upsert("upsert-b64", points_of({"id": "b1", "vector_b64": b64([0.4, 0.4, 0.1, 0.9])}), 200),
    upsert("upsert-shared", {"points": new_points("sh", 1, shared_with=["globex", "new"])}, 200),
    upsert("upsert-new-tenant", {"points": new_points("t", 2)}, 200, path=points_url(C, "fresh")),
    upsert("upsert-slash-tenant", {"points": new_points("x", 1)}, 200, path=points_url(C, "org/a")),
    upsert(
        "upsert-long-tenant",
        {"points": new_points("y", 1)},
        422,
        "tenant",
        path=points_url(C, "t" * 300),
    ),
    upsert("upsert-missing-points", {}, 422, "points: Field required"),
    upsert("upsert-no-points", {"points": []}, 422, "points: at least one point is required"),
    upsert("upsert-missing-id", points_of({"vector": V}), 422, "points[0].id: Field required"),
    upsert("upsert-missing-vector", points_of({"id": "m"}), 422, "points[0].vector: Field"),
    upsert(
        "upsert-duplicate-ids",
        points_of({"id": "d", "vector": V}, {"id": "d", "vector": V}),
        422,
        "points[1].id: duplicate id",
    ),
    upsert(
        "upsert-wrong-dims",
        points_of({"id": "w", "vector": V}, {"id": "w2", "vector": [1.0]}),
        422,
        "points[1].vector",
    ),
    upsert("upsert-zero", points_of({"id": "z", "vector": [0.0] * DIM}), 422, "points[0].vector"),
    upsert("upsert-huge", points_of({"id": "h", "vector": [1e39, 0, 0, 1]}), 422, "points[0]."),
    upsert(
        "upsert-b64-dims",
        points_of({"id": "e", "vector_b64": b64([1.0] * 8)}),
        422,
        "points[0].vector_b64",
    ),
    upsert(
        "upsert-b64-nan",
        points_of({"id": "e", "vector_b64": b64([1.0, math.nan, 0.0, 0.0])}),
        422,
        "points[0].vector_b64",
    ),
    upsert("upsert-b64-bad", points_of({"id": "e", "vector_b64": "@@@@"}), 422, "points[0].vec"),
    upsert(
        "upsert-both",
        points_of({"id": "e", "vector": V, "vector_b64": b64(V)}),
        422,
        "points[0].vector: give either",
    ),
    upsert(
        "upsert-attribute-type",
        points_of(point("e", V, "net", "big")),
        422,
        "points[0].attributes.size",
    ),
    upsert("upsert-unknown-field", points_of({"id": "e", "vector": V, "vectr": V}), 422, "points"),
    upsert("upsert-too-many", {"points": new_points("big", MAX_BATCH_POINTS + 1)}, 413, "points:"),
    upsert("upsert-read-key", {"points": new_points("r", 1)}, 403, READ_ONLY, role="read"),
    upsert("upsert-read-key-bad-body", {"points": 5}, 403, READ_ONLY, role="read"),
    Case("upsert-read-key-bad-json", "PUT", P, b"{", 400, "the request body is not", role="read"),
    upsert(
        "upsert-other-tenant",
        {"points": new_points("o", 1)},
        404,
        role="write",
        path=points_url(C, "globex"),
    ),
    upsert(
        "upsert-unknown-collection",
        {"points": new_points("u", 1)},
        404,
        path=points_url("nope", "acme"),
    ),
    upsert("upsert-no-key", {"points": new_points("k", 1)}, 401, MISSING_KEY, role="none"),
    upsert("upsert-text-plain", {"points": new_points("p", 1)}, 422, content_type="text/plain"),
    Case("upsert-json-invalid", "PUT", P, b"{points", 400, "the request body is not valid JSON"),
    Case("upsert-json-null", "PUT", P, b"null", 422, NOT_AN_OBJECT),
    upsert("upsert-json-list", [{"id": "l", "vector": V}], 422, NOT_AN_OBJECT),
    upsert("upsert-point-not-object", {"points": [["l", V]]}, 422, "points[0]:"),
    # -- vectors the lane reads from the bytes (api/json_vectors.py) or leaves to orjson: the
    # same answers, and (below, "after-writes") the same stored float32 values
    upsert(
        "upsert-forms", points_of({"id": "f1", "vector": [3, 0.1, 1e-3, 0.30000000000000004]}), 200
    ),
    Case(
        "upsert-raw-forms", "PUT", P, b'{"points":[{"id":"f2","vector":[-0,1E-3,-0.0e0,2]}]}', 200
    ),
    Case(
        "upsert-pretty",
        "PUT",
        P,
        b'{\n "points" : [ {\n  "id" : "f3" ,\n  "vector" :\n [ 0.25 ,0.5\n , 0.125 , 1e0 ] } ]\n}',
        200,
    ),
    Case(
        "upsert-escaped-key",
        "PUT",
        P,
        b'{"points":[{"id":"f4","vec\\u0074or":[0.1,0.2,0.3,0.4]}]}',
        200,
    ),
    Case(
        "upsert-duplicate-key",
        "PUT",
        P,
        b'{"points":[{"id":"f5","vector":[1,0,0,0],"vector":[0,1,0,0.5]}]}',
        200,
    ),
    upsert("upsert-tiny", points_of({"id": "f6", "vector": [5e-324, 0.0, 1e-310, 1.0]}), 200),
    upsert("upsert-big-int", points_of({"id": "f7", "vector": [12345678901234567, 0, 0, 1]}), 200),
    upsert(
        "upsert-attribute-vector",
        points_of({"id": "f8", "vector": V, "attributes": {"vector": [1.0]}}),
        200,
    ),
    upsert("upsert-vector-empty", points_of({"id": "f9", "vector": []}), 422, "points[0].vector"),
    upsert(
        "upsert-vector-nested", points_of({"id": "fa", "vector": [[1.0], [0.0], [0.0], [1.0]]}), 422
    ),
    upsert("upsert-vector-string", points_of({"id": "fb", "vector": ["1.0", 0, 0, 1]}), 422),
    upsert("upsert-vector-bool", points_of({"id": "fc", "vector": [True, 0, 0, 1.0]}), 422),
    Case(
        "upsert-vector-trailing-comma",
        "PUT",
        P,
        b'{"points":[{"id":"fd","vector":[1.0,0,0,1,]}]}',
        400,
    ),
    Case(
        "upsert-vector-leading-zero",
        "PUT",
        P,
        b'{"points":[{"id":"fe","vector":[01.0,0,0,1]}]}',
        400,
    ),
    Case(
        "upsert-vector-overflow", "PUT", P, b'{"points":[{"id":"ff","vector":[1e400,0,0,1]}]}', 400
    ),
    # -- after the writes: the stores still answer alike
    query("after-writes", {"vector": [0.2, 1.0, 0.2, 0.1], "k": 50, "include": ["vector"]}, 200),
    query("after-writes-shared", {"vector": V, "k": 20}, 200, path=qpath("globex")),
    query("after-writes-new-tenant", {"vector": V, "explain": True}, 200, path=qpath("new")),
    # -- quotas: `limited` reads twice, then 429 before validation; writes have their own
    # bucket, and the batch quota is checked before validation too
    query("rate-1", {"vector": V}, 200, path=qpath("limited")),
    query("rate-2", {"vector": V, "k": 1}, 200, path=qpath("limited")),
    query("rate-429", {"vector": V}, 429, "query_rate: tenant 'limited'", path=qpath("limited")),
    query("rate-429-bad-body", {"k": 0}, 429, "query_rate", path=qpath("limited")),
    batch("rate-429-batch", ONE, 429, "query_rate", path=bpath("limited")),
    Case("rate-bad-json", "POST", qpath("limited"), b"{", 400, "the request body is not valid"),
    upsert(
        "batch-quota-429",
        {"points": new_points("q", 4)},
        429,
        "max_upsert_batch",
        path=points_url(C, "limited"),
    ),
    upsert(
        "batch-quota-429-bad-body",
        {"points": [{}] * 4},
        429,
        "max_upsert_batch",
        path=points_url(C, "limited"),
    ),
    upsert("batch-quota-ok", {"points": new_points("q", 3)}, 200, path=points_url(C, "limited")),
]

LANE_PATHS = {
    "POST": re.compile(r"/v1/collections/[^/]+/tenants/[^/]+/query(/batch)?"),
    "PUT": re.compile(r"/v1/collections/[^/]+/tenants/[^/]+/points"),
}


def served_by_lane(case: Case) -> bool:
    """The lane takes a request to one of its routes with no escaped '/' in its path, an
    `application/json` body within the limit, and a valid key (Authentication answers the
    others in front of it); the rest goes to FastAPI as it came."""
    media = (case.content_type or "").split(";")[0].strip().lower()
    pattern = LANE_PATHS.get(case.method)
    return (
        pattern is not None
        and pattern.fullmatch(case.path) is not None
        and "%2f" not in case.path.lower()
        and case.role in VALID_KEY_ROLES
        and media == JSON
        and bool(case.body)
        and len(case.body) <= MAX_REQUEST_BYTES
    )


# -- comparing answers --------------------------------------------------------------------------


def comparable(response: httpx.Response) -> Any:
    """The JSON body without the plan's timings (the one part that varies run to run); the raw
    bytes of any other body (a redirect's)."""
    if not response.headers.get("content-type", "").startswith(JSON):
        return response.content
    body = response.json()
    answers = body.get("queries", [body]) if isinstance(body, dict) else []
    for answer in answers:
        if isinstance(answer, dict) and isinstance(answer.get("plan"), dict):
            assert set(answer["plan"]["timings_ms"]) >= {"validate", "search", "fetch"}
            del answer["plan"]["timings_ms"]
    return body


def same(a: Any, b: Any) -> bool:
    """Equal, floats up to float32 rounding (distances come out of numpy in either app)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


OWN_HEADERS = {"x-request-id", "content-length"}  # the request id is checked on its own


def differences(case: Case, lean: httpx.Response, plain: httpx.Response) -> list[str]:
    """What differs between the two answers, or from what the table expects of both."""
    found = []
    statuses = (lean.status_code, plain.status_code)
    if statuses != (case.status, case.status):
        found.append(f"status lean={statuses[0]} fastapi={statuses[1]}, expected {case.status}")
    lean_body, plain_body = comparable(lean), comparable(plain)
    if not same(lean_body, plain_body):
        found.append(f"body\n    lean:    {lean_body}\n    fastapi: {plain_body}")
    # Every header alike: content-type, Retry-After, WWW-Authenticate, Location...
    lean_headers, plain_headers = (
        {k: v for k, v in answer.headers.items() if k not in OWN_HEADERS}
        for answer in (lean, plain)
    )
    if lean_headers != plain_headers:
        found.append(f"headers lean={lean_headers} fastapi={plain_headers}")
    if case.status >= 400:
        error = plain_body.get("error") if isinstance(plain_body, dict) else None
        if not (isinstance(error, dict) and set(error) == {"code", "message"}):
            found.append(f"not the error envelope: {plain_body!r}")
        elif case.message is not None and not error["message"].startswith(case.message):
            found.append(f"message {error['message']!r} does not start with {case.message!r}")
    return found


def http_counts(client: TestClient) -> dict[tuple[str, str, str], float]:
    """`shoal_http_requests_total` of the lean routes' templates, by (method, route, status)."""
    exposition = client.get("/metrics", headers=bearer(ADMIN_KEY))
    assert exposition.status_code == 200, exposition.text
    counts = {}
    for family in text_string_to_metric_families(exposition.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "shoal_http_requests_total" and labels["route"] in (
                QUERY_ROUTE,
                BATCH_ROUTE,
                UPSERT_ROUTE,
            ):
                counts[labels["method"], labels["route"], labels["status"]] = sample.value
    return counts


# -- the tests ----------------------------------------------------------------------------------


def test_the_table_covers_each_lean_route() -> None:
    assert len(CASES) >= 50 and len({case.name for case in CASES}) == len(CASES)
    for method, suffix, statuses in [
        ("POST", "/query", {200, 400, 401, 404, 413, 422, 429}),
        ("POST", "/query/batch", {200, 400, 401, 404, 422, 429}),
        ("PUT", "/points", {200, 400, 401, 403, 404, 413, 422, 429}),
    ]:
        cases = [c for c in CASES if c.method == method and c.path.endswith(suffix)]
        assert {c.status for c in cases} >= statuses, suffix
        assert any(served_by_lane(c) for c in cases) and not all(served_by_lane(c) for c in cases)


def test_the_lean_lane_answers_as_fastapi_does(
    pair: tuple[Side, Side], lane_calls: list[str]
) -> None:
    lean, plain = pair
    mismatches: list[str] = []
    for number, case in enumerate(CASES):
        request = (case.method, case.path, case.body, case.role, case.content_type)
        request_id = f"case-{number}-{case.name}"
        before = len(lane_calls)
        plain_answer = plain.send(*request, request_id=request_id)
        assert len(lane_calls) == before, f"{case.name}: a lane served the app without one"
        lean_answer = lean.send(*request, request_id=request_id)
        served = len(lane_calls) - before
        assert served == served_by_lane(case), f"{case.name}: the lane served it {served} times"
        for answer in (lean_answer, plain_answer):
            assert answer.headers.get("x-request-id") == request_id, case.name
        for difference in differences(case, lean_answer, plain_answer):
            mismatches.append(f"{case.name} ({case.method} {case.path}): {difference}")
    assert len(lane_calls) == sum(served_by_lane(case) for case in CASES)
    # The same traffic leaves the same counts under the same route labels.
    lean_counts, plain_counts = http_counts(lean.client), http_counts(plain.client)
    for labels in sorted(lean_counts.keys() | plain_counts.keys()):
        if lean_counts.get(labels) != plain_counts.get(labels):
            counts = f"lean={lean_counts.get(labels)} fastapi={plain_counts.get(labels)}"
            mismatches.append(f"metrics {labels}: {counts}")
    assert not mismatches, "the lean lane and FastAPI differ:\n" + "\n".join(mismatches)


def test_vector_b64_round_trips(pair: tuple[Side, Side]) -> None:
    vector = [0.1, -2.5, 1e-3, 3.25]  # 0.1 and 1e-3 are not float32-exact: the bytes are
    stored = b64(vector)
    as_floats = np.frombuffer(base64.b64decode(stored), "<f4").tolist()
    for side in pair:
        upserted = points_of({"id": "v", "vector_b64": stored, "attributes": {"size": 1}})
        created = ok(side.send("PUT", points_url(C, "b64"), j(upserted)))
        assert created == {"created": 1, "updated": 0}, side.name

        fetched = ok(side.get(point_url(C, "b64", "v"), with_vector_b64="true"))
        assert fetched["vector_b64"] == stored and "vector" not in fetched, side.name
        assert ok(side.get(point_url(C, "b64", "v"), with_vector="true"))["vector"] == as_floats

        by_list = ok(side.send("POST", Q, j({"vector": vector, "k": 5, "explain": True})))
        by_b64 = ok(side.send("POST", Q, j({"vector_b64": stored, "k": 5, "explain": True})))
        assert len(by_list["results"]) == 5 and by_list["results"][0]["id"] == "a5"
        assert comparable_results(by_b64) == comparable_results(by_list), side.name

        wanted = {"vector": vector, "k": 1, "include": ["vector_b64"]}
        [hit] = ok(side.send("POST", qpath("b64"), j(wanted)))["results"]
        assert hit == {"id": "v", "owner": "b64", "distance": hit["distance"], "vector_b64": stored}
        assert hit["distance"] < 1e-6

        scroll = j({"with_vector_b64": True})
        [scrolled] = ok(side.send("POST", f"{points_url(C, 'b64')}/scroll", scroll))["points"]
        assert scrolled["vector_b64"] == stored and "vector" not in scrolled, side.name
        # Points written as JSON lists come back as their float32 bytes too.
        acme = ok(side.send("POST", f"{points_url(C, 'acme')}/scroll", scroll))["points"]
        written = {p["id"]: b64(p["vector"]) for p in POINTS["acme"]}
        assert {p["id"]: p["vector_b64"] for p in acme} == written, side.name


def comparable_results(answer: dict[str, Any]) -> dict[str, Any]:
    plan = {k: v for k, v in answer["plan"].items() if k != "timings_ms"}
    return {"results": answer["results"], "plan": plan}


def test_lean_requests_are_counted_under_their_route_templates(
    pair: tuple[Side, Side], lane_calls: list[str]
) -> None:
    lean, _ = pair
    before = http_counts(lean.client)
    # The lane serves the first; FastAPI the escaped one, under the same template (the
    # encoded slash is not in the label).
    for path in (Q, qpath("org/a")):
        answer = lean.send("POST", path, j({"vector": V}))
        assert answer.status_code == 200, answer.text
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])  # one is made up
    ok(lean.send("POST", B, j(ONE)))
    assert len(lane_calls) == 2
    after = http_counts(lean.client)
    assert after[("POST", QUERY_ROUTE, "200")] == before.get(("POST", QUERY_ROUTE, "200"), 0) + 2
    assert after[("POST", BATCH_ROUTE, "200")] == before.get(("POST", BATCH_ROUTE, "200"), 0) + 1
    assert before[("PUT", UPSERT_ROUTE, "200")] == len(POINTS)  # the set-up's upserts


def test_the_first_content_type_decides_as_in_fastapi(
    pair: tuple[Side, Side], lane_calls: list[str]
) -> None:
    """Two Content-Type headers: Starlette reads the first, and so does the lane's choice."""
    answers = []
    for side in pair:
        headers = [*side.keys["admin"].items(), ("content-type", "text/plain")]
        headers.append(("content-type", JSON))
        answers.append(side.client.post(Q, content=j({"vector": V}), headers=headers))
    lean, plain = answers
    assert lean.status_code == plain.status_code == 422, (lean.text, plain.text)
    assert lean.json() == plain.json()
    assert lane_calls == []  # FastAPI answered in both apps


JSON_TYPE = (b"content-type", b"application/json")


def query_scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    """An ASGI scope of a tenant query with these headers, as `LeanLane.takes` sees it."""
    return {"type": "http", "method": "POST", "path": Q, "raw_path": Q.encode(),
            "headers": list(headers)}  # fmt: skip


def test_bodies_whose_length_is_not_declared_up_front_go_to_fastapi(
    pair: tuple[Side, Side],
) -> None:
    """`takes` decides from the headers: a chunked body (with or without a Content-Length
    beside it, which h11 would let through) is left to FastAPI's body limit."""
    lane = pair[0].client.app.lean  # type: ignore[attr-defined]
    declared = (b"content-length", b"10")
    chunked = (b"transfer-encoding", b"chunked")
    assert lane.takes(query_scope(JSON_TYPE, declared))
    assert not lane.takes(query_scope(JSON_TYPE, chunked))
    assert not lane.takes(query_scope(JSON_TYPE, declared, chunked))
    assert not lane.takes(query_scope(JSON_TYPE, (b"content-length", b"%d" % (1 << 30))))
    absurd = (b"content-length", b"9" * 5000)
    assert not lane.takes(query_scope(JSON_TYPE, absurd))  # no ValueError from int()


def test_a_body_longer_than_the_limit_is_refused_by_the_lane_itself(
    pair: tuple[Side, Side],
) -> None:
    """Should a parser ever deliver more than the declared length, the lane stops reading at
    the limit and answers the body limit's 413, without parsing anything."""
    lane = pair[0].client.app.lean  # type: ignore[attr-defined]
    scope = query_scope(JSON_TYPE, (b"content-length", b"10"))
    assert lane.takes(scope)
    chunk = b" " * (MAX_REQUEST_BYTES // 2 + 1)
    messages = iter([{"type": "http.request", "body": chunk, "more_body": True}] * 3)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    assert sent[0]["status"] == 413
    body = json.loads(sent[1]["body"])
    assert body["error"]["code"] == "too_large"
    assert f"exceeds the limit of {MAX_REQUEST_BYTES} bytes" in body["error"]["message"]


def test_the_lane_reads_vectors_from_the_bytes(
    pair: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane's query, batch and upsert take their vectors from api/json_vectors.py (the
    table above shows the answers are FastAPI's); a body it cannot vouch for is parsed whole
    by orjson."""
    parses: list[bool] = []

    def recording(raw: bytes, items: str | None) -> Any:
        body = with_vectors_parsed(raw, items)
        parses.append(body is not None)
        return body

    with_vectors_parsed = json_vectors.loads
    monkeypatch.setattr(json_vectors, "loads", recording)
    lean, _ = pair
    upserted = points_of(point("bytes-1", [0.5, 0.25, 0.0, 1.0], "net", 1))
    ok(lean.send("PUT", points_url(C, "bytes"), j(upserted)))
    [hit] = ok(lean.send("POST", qpath("bytes"), j({"vector": V, "k": 1})))["results"]
    batch = {"queries": [{"vector": V, "k": 1}]}
    [answer] = ok(lean.send("POST", bpath("bytes"), j(batch)))["queries"]
    [batch_hit] = answer["results"]
    escaped = b'{"vec\\u0074or": [1.0, 0.1, 0.0, 0.0], "k": 1}'
    [escaped_hit] = ok(lean.send("POST", qpath("bytes"), escaped))["results"]
    assert parses == [True, True, True, False]
    assert hit == batch_hit == escaped_hit and hit["id"] == "bytes-1"
    fetched = ok(lean.get(point_url(C, "bytes", "bytes-1"), with_vector="true"))
    assert fetched["vector"] == [0.5, 0.25, 0.0, 1.0]
