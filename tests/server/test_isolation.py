"""Tenant isolation as a property: a seeded random workload over many tenants, with grants,
revokes and tenant deletes, checked after every few steps against a Python model of who owns
what and who was granted what.

Every tenant acts only through its own API keys (a `write` key and a `read` key). For every
tenant route (get, scroll, count, query, batch query, delete by ids, patch, grant, revoke,
tenant info, tenants list, collection info) a key returns or changes only what its tenant owns
or was granted, counts included; probing another tenant (its path, its point ids, its grants)
gets exactly the answer a name that never existed gets.

Filters: `call(...)` takes `body` fields for any route, and `check_reads` takes `extra` (sent
to scroll, count, query and batch query) with `matches`, the model's version of the same
predicate over a point's attributes; `FILTERS` lists the cases every check runs, and
`step_delete_by_filter` deletes with one. A filter narrows a tenant's readable set, never
widens it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support import ADMIN, ADMIN_KEY, app_client, bearer

COLLECTION = "iso"
DIM = 3
N_TENANTS = 10
# A small id pool shared by all tenants: the same id is owned by several tenants at once.
ID_POOL = [f"p{i}" for i in range(8)] + ["shared/id", "ümlaut id"]
GHOST = "ghost-never-created"  # a tenant name no one ever writes
GHOST_ID = "never-written-id"

PointKey = tuple[str, str]  # (owner, point id)


def enc(name: str) -> str:
    return quote(name, safe="")


# -- the routes a tenant key may call, by name ------------------------------------------------

_T = "/v1/collections/{c}/tenants/{t}"
ROUTES: dict[str, tuple[str, str]] = {
    "get": ("GET", _T + "/points/{id}"),
    "patch": ("PATCH", _T + "/points/{id}"),
    "upsert": ("PUT", _T + "/points"),
    "delete": ("POST", _T + "/points/delete"),
    "scroll": ("POST", _T + "/points/scroll"),
    "count": ("POST", _T + "/points/count"),
    "query": ("POST", _T + "/query"),
    "batch": ("POST", _T + "/query/batch"),
    "grant": ("POST", _T + "/points/{id}/grants"),
    "revoke": ("DELETE", _T + "/points/{id}/grants/{other}"),
    "tenant": ("GET", _T),
    "tenants": ("GET", "/v1/collections/{c}/tenants"),
    "collection": ("GET", "/v1/collections/{c}"),
}
# The body each route needs at least; `call(..., body=...)` adds or overrides fields.
BASE_BODIES: dict[str, dict[str, Any]] = {
    "patch": {"attributes": {"touched": True}},
    "upsert": {"points": [{"id": "x", "vector": [1.0, 0.0, 0.0]}]},
    "delete": {"ids": ["x"]},
    "scroll": {"limit": 1000},
    "count": {},
    "query": {"vector": [1.0, 0.0, 0.0], "k": 1000},
    "batch": {"queries": [{"vector": [1.0, 0.0, 0.0], "k": 1000}]},
    "grant": {"tenant": "x"},
}


def call(
    client: TestClient,
    route: str,
    headers: dict[str, str],
    tenant: str = "",
    point_id: str = "",
    other: str = "",
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    method, template = ROUTES[route]
    url = template.format(c=enc(COLLECTION), t=enc(tenant), id=enc(point_id), other=enc(other))
    payload = {**BASE_BODIES[route], **(body or {})} if route in BASE_BODIES else None
    return client.request(method, url, json=payload, params=params, headers=headers)


def error_message(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == {404: "not_found", 403: "forbidden"}.get(status, "?"), body
    return body["error"]["message"]


def same_message(a: str, name_a: str, b: str, name_b: str) -> bool:
    """Two messages equal once the names they are about are blanked out."""
    return a.replace(repr(name_a), "<>") == b.replace(repr(name_b), "<>")


# -- the model ------------------------------------------------------------------------------


@dataclass
class Model:
    tenants: set[str] = field(default_factory=set)  # tenants that exist in the collection
    points: dict[PointKey, dict[str, Any]] = field(default_factory=dict)  # -> attributes
    grants: dict[PointKey, set[str]] = field(default_factory=dict)

    def owned(self, tenant: str) -> set[PointKey]:
        return {key for key in self.points if key[0] == tenant}

    def readable(self, tenant: str) -> set[PointKey]:
        shared = {key for key, grantees in self.grants.items() if tenant in grantees}
        return self.owned(tenant) | shared

    def delete_tenant(self, tenant: str) -> None:
        for key in self.owned(tenant):
            del self.points[key]
            self.grants.pop(key, None)
        for grantees in self.grants.values():
            grantees.discard(tenant)
        self.tenants.discard(tenant)


@dataclass
class World:
    client: TestClient
    model: Model
    rng: random.Random
    tenants: list[str]
    write_keys: dict[str, dict[str, str]]
    read_keys: dict[str, dict[str, str]]

    def key(self, tenant: str) -> dict[str, str]:
        """Reads go through either key of the tenant, at random."""
        keys = (self.write_keys, self.read_keys)
        return self.rng.choice(keys)[tenant]


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    seed = getattr(request, "param", 0)
    with app_client(tmp_path / "data", admin_key=ADMIN_KEY) as client:
        created = client.post(
            "/v1/collections",
            json={"name": COLLECTION, "dim": DIM, "metric": "l2", "schema": {"n": "integer"}},
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        tenants = [f"tenant-{i}" for i in range(N_TENANTS - 2)] + ["a+b@x.org", "org/slash"]
        write_keys, read_keys = {}, {}
        for tenant in tenants:
            for role, keys in (("write", write_keys), ("read", read_keys)):
                body = {"collection": COLLECTION, "tenant": tenant, "role": role}
                response = client.post("/v1/keys", json=body, headers=ADMIN)
                assert response.status_code == 201, response.text
                keys[tenant] = bearer(response.json()["key"])
        yield World(client, Model(), random.Random(seed), tenants, write_keys, read_keys)


# -- steps ------------------------------------------------------------------------------------


def step_upsert(w: World, tenant: str) -> None:
    ids = w.rng.sample(ID_POOL, w.rng.randint(1, 3))
    points = []
    for point_id in ids:
        point: dict[str, Any] = {
            "id": point_id,
            "vector": [w.rng.uniform(-1, 1) for _ in range(DIM)],
            "attributes": {"n": w.rng.randint(0, 9)},
        }
        if w.rng.random() < 0.6:  # else: an existing point keeps its grants
            others = [t for t in w.tenants if t != tenant]
            point["shared_with"] = w.rng.sample(others, w.rng.randint(0, 3))
        points.append(point)
    response = call(w.client, "upsert", w.write_keys[tenant], tenant, body={"points": points})
    assert response.status_code == 200, response.text
    model = w.model
    created = sum((tenant, p["id"]) not in model.points for p in points)
    assert response.json() == {"created": created, "updated": len(points) - created}
    model.tenants.add(tenant)
    for p in points:
        key = (tenant, p["id"])
        model.points[key] = p["attributes"]
        if "shared_with" in p:
            model.grants[key] = set(p["shared_with"])
            model.tenants.update(p["shared_with"])
        else:
            model.grants.setdefault(key, set())


def step_delete(w: World, tenant: str) -> None:
    ids = w.rng.sample(ID_POOL, w.rng.randint(1, 4))
    response = call(w.client, "delete", w.write_keys[tenant], tenant, body={"ids": ids})
    if tenant not in w.model.tenants:
        assert error_message(response, 404) == tenant_missing(tenant)
        return
    assert response.status_code == 200, response.text
    mine = [i for i in ids if (tenant, i) in w.model.points]
    assert response.json() == {
        "deleted": len(mine),
        "not_found": [i for i in ids if i not in mine],
    }
    for point_id in mine:
        del w.model.points[(tenant, point_id)]
        w.model.grants.pop((tenant, point_id), None)


def step_delete_by_filter(w: World, tenant: str) -> None:
    """Deletes only the tenant's own matching points, never those shared with it."""
    bound = w.rng.randint(0, 9)
    body = {"ids": None, "filter": {"n": {"$lt": bound}}}  # null: absent
    response = call(w.client, "delete", w.write_keys[tenant], tenant, body=body)
    if tenant not in w.model.tenants:
        assert error_message(response, 404) == tenant_missing(tenant)
        return
    assert response.status_code == 200, response.text
    doomed = [key for key in w.model.owned(tenant) if w.model.points[key]["n"] < bound]
    assert response.json() == {"deleted": len(doomed), "not_found": []}
    for key in doomed:
        del w.model.points[key]
        w.model.grants.pop(key, None)


def step_patch(w: World, tenant: str) -> None:
    point_id = w.rng.choice(ID_POOL)
    value = w.rng.randint(0, 9)
    body = {"attributes": {"n": value}}
    response = call(w.client, "patch", w.write_keys[tenant], tenant, point_id, body=body)
    key = (tenant, point_id)
    if key in w.model.points:
        assert response.status_code == 200, response.text
        assert response.json()["owner"] == tenant
        w.model.points[key] = {**w.model.points[key], "n": value}
    else:
        assert_point_missing(w, response, tenant, point_id)


def step_grant(w: World, tenant: str) -> None:
    point_id = w.rng.choice(ID_POOL)
    grantee = w.rng.choice([t for t in w.tenants if t != tenant])
    body = {"tenant": grantee}
    response = call(w.client, "grant", w.write_keys[tenant], tenant, point_id, body=body)
    key = (tenant, point_id)
    if key in w.model.points:
        assert response.status_code == 200, response.text
        w.model.grants[key].add(grantee)
        w.model.tenants.add(grantee)
        assert response.json()["shared_with"] == sorted(w.model.grants[key])
    else:
        assert_point_missing(w, response, tenant, point_id)


def step_revoke(w: World, tenant: str) -> None:
    key = (tenant, w.rng.choice(ID_POOL))
    grantees = sorted(w.model.grants.get(key, set()))
    others = [t for t in w.tenants if t != tenant]
    grantee = w.rng.choice(grantees if grantees and w.rng.random() < 0.7 else others)
    response = call(w.client, "revoke", w.write_keys[tenant], tenant, key[1], other=grantee)
    if key not in w.model.points:
        assert_point_missing(w, response, tenant, key[1])
    elif grantee in grantees:
        assert response.status_code == 200, response.text
        w.model.grants[key].discard(grantee)
    else:
        message = error_message(response, 404)
        assert message == f"point {key[1]!r} is not shared with tenant {grantee!r}"


def step_admin_deletes_a_tenant(w: World, _: str) -> None:
    victim = w.rng.choice(w.tenants)
    url = f"/v1/collections/{COLLECTION}/tenants/{enc(victim)}"
    response = w.client.delete(url, headers=ADMIN)
    if victim in w.model.tenants:
        assert response.status_code == 200, response.text
        w.model.delete_tenant(victim)
    else:
        assert response.status_code == 404


STEPS: list[tuple[Callable[[World, str], None], float]] = [
    (step_upsert, 0.35),
    (step_delete, 0.08),
    (step_delete_by_filter, 0.04),
    (step_patch, 0.12),
    (step_grant, 0.18),
    (step_revoke, 0.18),
    (step_admin_deletes_a_tenant, 0.05),
]


# -- expected refusals -------------------------------------------------------------------------


def tenant_missing(tenant: str) -> str:
    return f"tenant {tenant!r} not found in collection {COLLECTION!r}"


def assert_point_missing(w: World, response: httpx.Response, tenant: str, point_id: str) -> None:
    """A point the tenant cannot touch: the answer a never-written id gets."""
    message = error_message(response, 404)
    if tenant not in w.model.tenants:
        assert message == tenant_missing(tenant)
        return
    ghost = call(w.client, "get", w.read_keys[tenant], tenant, GHOST_ID)
    assert same_message(message, point_id, error_message(ghost, 404), GHOST_ID)


def probe_other_tenants(w: World, tenant: str) -> None:
    """Every tenant route, with this tenant's keys, on another tenant's path: the 404 a
    tenant that never existed gets, and nothing changes (checked by the next `check`)."""
    other = w.rng.choice([t for t in w.tenants if t != tenant])
    point_id = w.rng.choice(ID_POOL)
    for route in ("get", "patch", "upsert", "delete", "scroll", "count", "query", "batch",
                  "grant", "revoke", "tenant"):  # fmt: skip
        for headers in (w.write_keys[tenant], w.read_keys[tenant]):
            there = call(w.client, route, headers, other, point_id, other=tenant)
            ghost = call(w.client, route, headers, GHOST, point_id, other=tenant)
            assert there.status_code == ghost.status_code == 404, (route, there.text)
            assert same_message(
                error_message(there, 404), other, error_message(ghost, 404), GHOST
            ), route


def probe_shared_reads(w: World, tenant: str) -> None:
    """`?owner=` reads: a point shared with the tenant is readable, any other is a 404 that
    reads like a point that never existed."""
    owner = w.rng.choice(w.tenants)
    point_id = w.rng.choice(ID_POOL)
    params = {"owner": owner}
    response = call(w.client, "get", w.key(tenant), tenant, point_id, params=params)
    if tenant not in w.model.tenants:
        assert error_message(response, 404) == tenant_missing(tenant)
    elif (owner, point_id) in w.model.readable(tenant):
        assert response.status_code == 200, response.text
        point = response.json()
        assert (point["owner"], point["id"]) == (owner, point_id)
        assert point["attributes"] == w.model.points[(owner, point_id)]
        assert ("shared_with" in point) == (owner == tenant)
    else:
        assert_point_missing(w, response, tenant, point_id)


# -- the invariant ------------------------------------------------------------------------------


def everything(attributes: dict[str, Any]) -> bool:
    return True


# (filter sent, the model's twin): cases every `check` runs for every tenant.
FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"n": {"$gte": 5}}, lambda a: a["n"] >= 5),
    ({"n": {"$in": [0, 3, 7]}}, lambda a: a["n"] in (0, 3, 7)),
    ({"$or": [{"n": 1}, {"n": {"$gt": 8}}]}, lambda a: a["n"] == 1 or a["n"] > 8),
    ({"n": {"$exists": False}}, lambda a: False),
]


def check_reads(
    w: World,
    tenant: str,
    extra: dict[str, Any] | None = None,
    matches: Callable[[dict[str, Any]], bool] = everything,
) -> None:
    """scroll, count, query and batch query return exactly the readable points that `matches`
    (the model's twin of whatever `extra` sends, e.g. a filter)."""
    extra = extra or {}
    headers = w.key(tenant)
    if tenant not in w.model.tenants:
        for route in ("scroll", "count", "query", "batch"):
            body = {"queries": [{**BASE_BODIES["query"], **extra}]} if route == "batch" else extra
            response = call(w.client, route, headers, tenant, body=body)
            assert error_message(response, 404) == tenant_missing(tenant), route
        return
    expected = {key for key in w.model.readable(tenant) if matches(w.model.points[key])}

    scrolled = call(w.client, "scroll", headers, tenant, body=extra).json()
    assert scrolled["next_cursor"] is None
    got = {(p["owner"], p["id"]) for p in scrolled["points"]}
    assert got == expected, tenant
    for p in scrolled["points"]:
        key = (p["owner"], p["id"])
        assert p["attributes"] == w.model.points[key]
        if p["owner"] == tenant:
            assert p["shared_with"] == sorted(w.model.grants[key])
        else:
            assert "shared_with" not in p  # a grantee does not learn who else may read it

    counted = call(w.client, "count", headers, tenant, body=extra).json()
    assert counted == {"count": len(expected)}

    found = call(w.client, "query", headers, tenant, body=extra).json()["results"]
    assert {(h["owner"], h["id"]) for h in found} == expected
    top = call(w.client, "query", headers, tenant, body={**extra, "k": 2}).json()["results"]
    assert len(top) == min(2, len(expected))
    assert {(h["owner"], h["id"]) for h in top} <= expected

    queries = [{"vector": [w.rng.uniform(-1, 1) for _ in range(DIM)], "k": 1000, **extra}] * 2
    batch = call(w.client, "batch", headers, tenant, body={"queries": queries}).json()
    for answer in batch["queries"]:
        assert {(h["owner"], h["id"]) for h in answer["results"]} == expected


def check_tenant_views(w: World, tenant: str) -> None:
    headers = w.key(tenant)
    info = call(w.client, "tenant", headers, tenant)
    listed = call(w.client, "tenants", headers).json()
    if tenant in w.model.tenants:
        owned = len(w.model.owned(tenant))
        mine = {
            "name": tenant,
            "points": owned,
            "shared_with_it": len(w.model.readable(tenant)) - owned,
        }
        assert info.json() == mine
        assert listed == {"tenants": [mine], "next_cursor": None}
    else:
        assert error_message(info, 404) == tenant_missing(tenant)
        assert listed == {"tenants": [], "next_cursor": None}
    described = call(w.client, "collection", headers).json()
    assert not {"points", "tenants", "curator"} & set(described)


def check(w: World) -> None:
    for tenant in w.tenants:
        check_reads(w, tenant)
        check_tenant_views(w, tenant)
    for tenant in w.rng.sample(w.tenants, 3):
        for filter_, matches in FILTERS:
            check_reads(w, tenant, extra={"filter": filter_}, matches=matches)
    # The admin's view agrees with the model too: nothing was changed behind the keys.
    admin = w.client.get(f"/v1/collections/{COLLECTION}", headers=ADMIN).json()
    assert admin["points"] == len(w.model.points)
    assert admin["tenants"] == len(w.model.tenants)


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3], indirect=True)
def test_a_tenant_key_only_ever_sees_and_changes_its_own_and_granted_points(
    world: World,
) -> None:
    steps, weights = zip(*STEPS, strict=True)
    for n in range(1, 161):
        tenant = world.rng.choice(world.tenants)
        world.rng.choices(steps, weights)[0](world, tenant)
        if n % 4 == 0:
            probe_other_tenants(world, world.rng.choice(world.tenants))
        probe_shared_reads(world, world.rng.choice(world.tenants))
        if n % 20 == 0:
            check(world)
    model = world.model
    assert len(model.points) > 10 and any(model.grants.values()), "a workload worth checking"


def test_filtered_reads_stay_within_the_readable_set(world: World) -> None:
    """Every filter case, for every tenant, after a workload with grants: a filter on a
    field that other tenants' points match too returns only the tenant's readable ones."""
    for _ in range(40):
        step_upsert(world, world.rng.choice(world.tenants))
    for _ in range(20):
        step_grant(world, world.rng.choice(world.tenants))
    for tenant in world.tenants:
        for filter_, matches in FILTERS:
            check_reads(world, tenant, extra={"filter": filter_}, matches=matches)
