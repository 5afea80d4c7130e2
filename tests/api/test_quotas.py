"""Quotas over HTTP: 429 with Retry-After and a message naming the limit, nothing applied, one
tenant's burst leaving another's requests alone, exact max-points under concurrency."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import assert_error, points_url, tenant_url
from tests.support import ADMIN, ADMIN_KEY, app_client, bearer

C = "docs"
UNLIMITED = {
    "max_points": None,
    "max_upsert_batch": None,
    "query_rate": None,
    "query_burst": None,
    "write_rate": None,
    "write_burst": None,
}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path / "data", admin_key=ADMIN_KEY) as client:
        assert client.post("/v1/collections", json={"name": C, "dim": 2}, headers=ADMIN).is_success
        yield client


def key_for(client: TestClient, tenant: str, role: str = "write") -> dict[str, str]:
    body = {"collection": C, "tenant": tenant, "role": role}
    return bearer(client.post("/v1/keys", json=body, headers=ADMIN).json()["key"])


def set_tenant_quotas(client: TestClient, tenant: str, **quotas: Any) -> dict[str, Any]:
    response = client.patch(tenant_url(C, tenant), json={"quotas": quotas}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["quotas"]


def set_collection_quotas(client: TestClient, **quotas: Any) -> dict[str, Any]:
    response = client.patch(f"/v1/collections/{C}", json={"quotas": quotas}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["quotas"]


def upsert(client: TestClient, tenant: str, ids: list[str], **headers: str) -> httpx.Response:
    points = [{"id": i, "vector": [1.0, float(n)]} for n, i in enumerate(ids)]
    return client.put(points_url(C, tenant), json={"points": points}, headers=headers or ADMIN)


def query(client: TestClient, tenant: str, headers: dict[str, str]) -> httpx.Response:
    url = f"{tenant_url(C, tenant)}/query"
    return client.post(url, json={"vector": [1.0, 0.0]}, headers=headers)


def count(client: TestClient, tenant: str) -> int:
    response = client.post(f"{points_url(C, tenant)}/count", json={}, headers=ADMIN)
    return response.json()["count"] if response.status_code == 200 else 0


def retry_after(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isdigit() and int(value) >= 1, value
    return int(value)


# -- rates --------------------------------------------------------------------------------


def test_a_burst_over_the_query_rate_is_429_while_another_tenant_is_served(
    secured: TestClient,
) -> None:
    for tenant in ("acme", "globex"):
        assert upsert(secured, tenant, ["p"]).status_code == 200
    set_tenant_quotas(secured, "acme", query_rate=0.2, query_burst=5)
    acme, globex = key_for(secured, "acme", "read"), key_for(secured, "globex", "read")
    calls = [("acme", acme)] * 20 + [("globex", globex)] * 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda call: (call[0], query(secured, *call)), calls))
    acme_statuses = sorted(r.status_code for t, r in responses if t == "acme")
    assert acme_statuses == [200] * 5 + [429] * 15
    assert all(r.status_code == 200 for t, r in responses if t == "globex")
    refused = next(r for t, r in responses if r.status_code == 429)
    assert assert_error(refused, 429, "over_quota") == (
        "query_rate: tenant 'acme' is over its quota of 0.2 read requests/s (burst 5)"
    )
    assert 1 <= retry_after(refused) <= 5


def test_retry_after_is_the_wait_for_one_token_rounded_up(secured: TestClient) -> None:
    upsert(secured, "acme", ["p"])
    set_tenant_quotas(secured, "acme", query_rate=0.25, query_burst=1)
    assert query(secured, "acme", ADMIN).status_code == 200
    refused = query(secured, "acme", ADMIN)  # admin requests on a tenant path count too
    assert refused.status_code == 429
    assert retry_after(refused) == 4


def test_a_batch_query_costs_one_token_per_query(secured: TestClient) -> None:
    upsert(secured, "acme", ["p"])
    set_tenant_quotas(secured, "acme", query_rate=0.01, query_burst=4)
    batch = {"queries": [{"vector": [1.0, 0.0]}] * 3}
    url = f"{tenant_url(C, 'acme')}/query/batch"
    assert secured.post(url, json=batch, headers=ADMIN).status_code == 200
    assert_error(secured.post(url, json=batch, headers=ADMIN), 429, "over_quota", "query_rate")
    assert query(secured, "acme", ADMIN).status_code == 200  # the one token left


def test_write_rate_refuses_writes_not_reads_and_applies_nothing(secured: TestClient) -> None:
    set_tenant_quotas(secured, "acme", write_rate=0.01, write_burst=2)
    assert upsert(secured, "acme", ["a"]).status_code == 200
    assert upsert(secured, "acme", ["b"]).status_code == 200
    refused = upsert(secured, "acme", ["c"])
    assert assert_error(refused, 429, "over_quota") == (
        "write_rate: tenant 'acme' is over its quota of 0.01 write requests/s (burst 2)"
    )
    assert retry_after(refused) >= 1
    assert count(secured, "acme") == 2
    assert query(secured, "acme", ADMIN).status_code == 200
    assert upsert(secured, "globex", ["c"]).status_code == 200


def test_collection_rate_is_shared_by_its_tenants(secured: TestClient) -> None:
    for tenant in ("a", "b"):
        upsert(secured, tenant, ["p"])
    set_collection_quotas(secured, query_rate=0.01, query_burst=3)
    statuses = [query(secured, tenant, ADMIN).status_code for tenant in ("a", "b", "a", "b")]
    assert statuses == [200, 200, 200, 429]
    refused = query(secured, "a", ADMIN)
    assert assert_error(refused, 429, "over_quota") == (
        f"query_rate: collection {C!r} is over its quota of 0.01 read requests/s (burst 3)"
    )


def test_a_refused_request_spends_no_token_of_the_other_bucket(secured: TestClient) -> None:
    for tenant in ("a", "b"):
        upsert(secured, tenant, ["p"])
    set_collection_quotas(secured, query_rate=0.01, query_burst=3)
    set_tenant_quotas(secured, "a", query_rate=0.01, query_burst=1)
    assert query(secured, "a", ADMIN).status_code == 200  # collection: 2 left
    for _ in range(5):
        assert query(secured, "a", ADMIN).status_code == 429  # a's bucket refuses
    assert [query(secured, "b", ADMIN).status_code for _ in range(3)] == [200, 200, 429]


# -- sizes --------------------------------------------------------------------------------


def test_max_upsert_batch_is_429_and_writes_nothing(secured: TestClient) -> None:
    set_tenant_quotas(secured, "acme", max_upsert_batch=2)
    refused = upsert(secured, "acme", ["a", "b", "c"])
    assert assert_error(refused, 429, "over_quota") == (
        "max_upsert_batch: the batch has 3 points; the quota of tenant 'acme' is 2"
    )
    retry_after(refused)
    assert count(secured, "acme") == 0
    assert upsert(secured, "acme", ["a", "b"]).status_code == 200


def test_max_points_counts_new_points_only(secured: TestClient) -> None:
    set_tenant_quotas(secured, "acme", max_points=3)
    assert upsert(secured, "acme", ["a", "b"]).json() == {"created": 2, "updated": 0}
    refused = upsert(secured, "acme", ["a", "c", "d"])
    assert assert_error(refused, 429, "over_quota") == (
        "max_points: tenant 'acme' owns 2 points and the batch adds 2; its quota is 3"
    )
    retry_after(refused)
    assert count(secured, "acme") == 2
    assert upsert(secured, "acme", ["a", "b", "c"]).json() == {"created": 1, "updated": 2}
    assert upsert(secured, "acme", ["a", "b", "c"]).json() == {"created": 0, "updated": 3}
    secured.post(f"{points_url(C, 'acme')}/delete", json={"ids": ["a"]}, headers=ADMIN)
    assert upsert(secured, "acme", ["z"]).json() == {"created": 1, "updated": 0}


def test_max_points_is_exact_under_concurrent_writers(secured: TestClient) -> None:
    set_tenant_quotas(secured, "acme", max_points=37)
    batches = [[f"w{w}-{n}-{i}" for i in range(3)] for w in range(8) for n in range(6)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda ids: upsert(secured, "acme", ids), batches))
    created = sum(r.json()["created"] for r in responses if r.status_code == 200)
    refused = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 429 for r in refused)
    assert created == count(secured, "acme") == 36  # 12 batches of 3 fit; a 13th would not
    assert len(refused) == len(batches) - 12
    assert upsert(secured, "acme", ["last"]).status_code == 200  # room for exactly one more
    assert upsert(secured, "acme", ["one-too-many"]).status_code == 429


def test_collection_max_points_does_not_reveal_the_collection_size(secured: TestClient) -> None:
    upsert(secured, "globex", ["a", "b", "c"])
    set_collection_quotas(secured, max_points=4)
    acme = key_for(secured, "acme")
    refused = upsert(secured, "acme", ["x", "y"], **acme)
    message = assert_error(refused, 429, "over_quota")
    assert message == f"max_points: collection {C!r} has no room for 2 new points (its quota is 4)"
    assert "3" not in message
    assert upsert(secured, "acme", ["x"], **acme).status_code == 200


# -- setting and keeping quotas ---------------------------------------------------------------


def test_patch_merges_null_removes_and_empty_reads(secured: TestClient) -> None:
    assert set_tenant_quotas(secured, "acme") == UNLIMITED
    assert set_tenant_quotas(secured, "acme", max_points=10, query_rate=2.5) == {
        **UNLIMITED,
        "max_points": 10,
        "query_rate": 2.5,
    }
    assert set_tenant_quotas(secured, "acme", query_rate=None) == {**UNLIMITED, "max_points": 10}
    assert set_collection_quotas(secured, write_rate=100) == {**UNLIMITED, "write_rate": 100.0}
    assert set_collection_quotas(secured) == {**UNLIMITED, "write_rate": 100.0}


@pytest.mark.parametrize(
    ("quotas", "field"),
    [
        ({"max_points": -1}, "quotas.max_points"),
        ({"query_rate": 0}, "quotas.query_rate"),
        ({"query_burst": 0}, "quotas.query_burst"),
        ({"max_upsert_batch": "10"}, "quotas.max_upsert_batch"),
        ({"max_pointz": 1}, "quotas.max_pointz"),
    ],
)
def test_invalid_quotas_are_422_and_change_nothing(
    secured: TestClient, quotas: dict[str, Any], field: str
) -> None:
    response = secured.patch(tenant_url(C, "acme"), json={"quotas": quotas}, headers=ADMIN)
    assert_error(response, 422, "invalid", field)
    assert set_tenant_quotas(secured, "acme") == UNLIMITED


def test_quotas_of_an_unknown_collection_are_404(secured: TestClient) -> None:
    body = {"quotas": {"max_points": 1}}
    response = secured.patch(tenant_url("nope", "acme"), json=body, headers=ADMIN)
    assert assert_error(response, 404, "not_found") == "collection 'nope' not found"


def test_server_defaults_apply_to_every_tenant_and_overrides_win(tmp_path: Path) -> None:
    with app_client(tmp_path / "data", quota_max_points=2, quota_write_rate=1000.0) as client:
        client.post("/v1/collections", json={"name": C, "dim": 2})
        response = client.patch(tenant_url(C, "big"), json={"quotas": {"max_points": 5}})
        assert response.json()["quotas"] == {
            **UNLIMITED,
            "max_points": 5,
            "write_rate": 1000.0,
        }
        assert upsert(client, "small", ["a", "b", "c"]).status_code == 429
        assert upsert(client, "big", ["a", "b", "c"]).status_code == 200


def test_quotas_survive_a_restart_and_go_with_their_collection(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with app_client(data, admin_key=ADMIN_KEY) as client:
        client.post("/v1/collections", json={"name": C, "dim": 2}, headers=ADMIN)
        set_tenant_quotas(client, "acme", max_points=1, write_burst=7, write_rate=1.5)
        set_collection_quotas(client, max_points=100)
    with app_client(data, admin_key=ADMIN_KEY) as client:
        assert set_tenant_quotas(client, "acme") == {
            **UNLIMITED,
            "max_points": 1,
            "write_rate": 1.5,
            "write_burst": 7,
        }
        assert set_collection_quotas(client) == {**UNLIMITED, "max_points": 100}
        assert upsert(client, "acme", ["a", "b"]).status_code == 429
        client.delete(f"/v1/collections/{C}", headers=ADMIN)
        client.post("/v1/collections", json={"name": C, "dim": 2}, headers=ADMIN)
        assert set_tenant_quotas(client, "acme") == UNLIMITED
        assert set_collection_quotas(client) == UNLIMITED
    with app_client(data, admin_key=ADMIN_KEY) as client:
        assert set_tenant_quotas(client, "acme") == UNLIMITED
        assert upsert(client, "acme", ["a", "b"]).status_code == 200
