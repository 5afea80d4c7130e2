"""API keys and scope rules over HTTP: every refusal, its exact status and message, and that a
refused request changed nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.apikeys import EXPIRED_KEY, REVOKED_KEY, UNKNOWN_KEY
from server.auth import ADMIN_ONLY, MALFORMED_HEADER, METRICS_KEYS, METRICS_ONLY, MISSING_KEY
from server.auth import READ_ONLY as READ_ONLY_MESSAGE
from server.database import KEYS_NEED_ADMIN
from tests.api.helpers import assert_error, points_url, tenant_url
from tests.support import ADMIN, ADMIN_KEY, app_client, bearer

C = "docs"
METRICS_KEY = "test-metrics-key-0123456789"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path / "data", admin_key=ADMIN_KEY, metrics_key=METRICS_KEY) as client:
        for name in (C, "other"):
            response = client.post("/v1/collections", json={"name": name, "dim": 2}, headers=ADMIN)
            assert response.status_code == 201, response.text
        points = [{"id": "p1", "vector": [1.0, 0.0]}, {"id": "p2", "vector": [0.0, 1.0]}]
        for tenant in ("acme", "globex"):
            response = client.put(points_url(C, tenant), json={"points": points}, headers=ADMIN)
            assert response.status_code == 200, response.text
        yield client


def new_key(client: TestClient, tenant: str = "acme", role: str = "write", **extra: Any) -> str:
    body = {"collection": C, "tenant": tenant, "role": role, **extra}
    response = client.post("/v1/keys", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()["key"]


def state(client: TestClient) -> dict[str, Any]:
    """Everything a refused request could have changed, as the admin sees it."""
    tenants = client.get(f"/v1/collections/{C}/tenants", headers=ADMIN).json()
    collections = client.get("/v1/collections", headers=ADMIN).json()
    scrolls = {
        t["name"]: client.post(f"{points_url(C, t['name'])}/scroll", json={}, headers=ADMIN).json()
        for t in tenants["tenants"]
    }
    return {"tenants": tenants, "collections": collections, "points": scrolls}


UPSERT = {"points": [{"id": "new", "vector": [0.5, 0.5]}]}


def upsert_as(headers: dict[str, str], tenant: str = "acme", collection: str = C) -> Callable:
    return lambda c: c.put(points_url(collection, tenant), json=UPSERT, headers=headers)


# -- 401: who is calling --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, MISSING_KEY),
        ({"Authorization": ""}, MALFORMED_HEADER),
        ({"Authorization": f"Basic {ADMIN_KEY}"}, MALFORMED_HEADER),
        ({"Authorization": "Bearer"}, MALFORMED_HEADER),
        ({"Authorization": "Bearer "}, MALFORMED_HEADER),
        ({"Authorization": f"Bearer {ADMIN_KEY} extra"}, MALFORMED_HEADER),
        ({"Authorization": f"{ADMIN_KEY}"}, MALFORMED_HEADER),
        (bearer("not-a-key"), UNKNOWN_KEY),
        (bearer(ADMIN_KEY + "x"), UNKNOWN_KEY),
        (bearer("shoal_0123456789abcdef_" + "0" * 64), UNKNOWN_KEY),
    ],
    ids=[
        "missing", "empty", "basic", "bearer-alone", "bearer-blank", "two-tokens", "no-scheme",
        "garbage", "admin-plus-one", "well-formed-unknown",
    ],
)  # fmt: skip
def test_bad_credentials_are_401_and_change_nothing(
    secured: TestClient, headers: dict[str, str], message: str
) -> None:
    before = state(secured)
    response = upsert_as(headers)(secured)
    assert assert_error(response, 401, "unauthorized") == message
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert state(secured) == before


def test_a_key_with_a_wrong_secret_is_unknown_not_revoked(secured: TestClient) -> None:
    key = new_key(secured)
    forged = key[:-4] + ("0000" if not key.endswith("0000") else "1111")
    assert assert_error(upsert_as(bearer(forged))(secured), 401, "unauthorized") == UNKNOWN_KEY
    secured.delete(f"/v1/keys/{key.split('_')[1]}", headers=ADMIN)
    # Revoked or not, a wrong secret says only "unknown": the id alone proves nothing.
    assert assert_error(upsert_as(bearer(forged))(secured), 401, "unauthorized") == UNKNOWN_KEY


def test_revoked_key_is_401_at_once_and_changes_nothing(secured: TestClient) -> None:
    key = new_key(secured)
    assert upsert_as(bearer(key))(secured).status_code == 200
    key_id = key.split("_")[1]
    revoked = secured.delete(f"/v1/keys/{key_id}", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    before = state(secured)
    assert assert_error(upsert_as(bearer(key))(secured), 401, "unauthorized") == REVOKED_KEY
    assert state(secured) == before
    again = secured.delete(f"/v1/keys/{key_id}", headers=ADMIN)
    assert assert_error(again, 404, "not_found") == f"API key {key_id!r} not found"


def test_expired_key_is_401_and_changes_nothing(secured: TestClient) -> None:
    key = new_key(secured, expires_at=time.time() + 1.0)
    assert upsert_as(bearer(key))(secured).status_code == 200
    time.sleep(1.1)
    before = state(secured)
    assert assert_error(upsert_as(bearer(key))(secured), 401, "unauthorized") == EXPIRED_KEY
    assert state(secured) == before


def test_a_key_cannot_expire_in_the_past(secured: TestClient) -> None:
    body = {"collection": C, "tenant": "acme", "role": "read", "expires_at": time.time() - 1}
    response = secured.post("/v1/keys", json=body, headers=ADMIN)
    assert_error(response, 422, "invalid", "expires_at")


# -- 403 and 404: what the key may do ---------------------------------------------------------


def test_read_key_cannot_write_403_and_changes_nothing(secured: TestClient) -> None:
    key = bearer(new_key(secured, role="read"))
    before = state(secured)
    writes = [
        secured.put(points_url(C, "acme"), json=UPSERT, headers=key),
        secured.patch(f"{points_url(C, 'acme')}/p1", json={"attributes": {"a": 1}}, headers=key),
        secured.post(f"{points_url(C, 'acme')}/delete", json={"ids": ["p1"]}, headers=key),
        secured.post(f"{points_url(C, 'acme')}/p1/grants", json={"tenant": "x"}, headers=key),
        secured.delete(f"{points_url(C, 'acme')}/p1/grants/globex", headers=key),
        secured.put(tenant_url(C, "acme"), headers=key),
    ]
    for response in writes:
        assert assert_error(response, 403, "forbidden") == READ_ONLY_MESSAGE
    assert state(secured) == before
    assert secured.post(f"{points_url(C, 'acme')}/count", json={}, headers=key).json() == {
        "count": 2
    }


def test_another_collection_is_404_like_a_missing_one(secured: TestClient) -> None:
    key = bearer(new_key(secured))
    before = state(secured)
    for collection in ("other", "never-created"):
        missing = secured.get(f"/v1/collections/{collection}", headers=key)
        assert assert_error(missing, 404, "not_found") == f"collection {collection!r} not found"
        write = upsert_as(key, collection=collection)(secured)
        assert assert_error(write, 404, "not_found") == f"collection {collection!r} not found"
    # The admin's view of a collection that does not exist: the same message.
    admin = secured.get("/v1/collections/never-created", headers=ADMIN)
    assert assert_error(admin, 404, "not_found") == "collection 'never-created' not found"
    assert state(secured) == before


def test_another_tenant_is_404_like_a_missing_one(secured: TestClient) -> None:
    key = bearer(new_key(secured))
    before = state(secured)
    for tenant in ("globex", "never-seen"):
        message = f"tenant {tenant!r} not found in collection {C!r}"
        assert assert_error(upsert_as(key, tenant)(secured), 404, "not_found") == message
        read = secured.get(f"{points_url(C, tenant)}/p1", headers=key)
        assert assert_error(read, 404, "not_found") == message
    missing = secured.get(tenant_url(C, "never-seen"), headers=ADMIN)
    assert (
        assert_error(missing, 404, "not_found")
        == f"tenant 'never-seen' not found in collection {C!r}"
    )
    assert state(secured) == before


ADMIN_ROUTES = [
    ("POST", "/v1/collections", {"name": "x", "dim": 2}),
    ("DELETE", f"/v1/collections/{C}", None),
    ("PATCH", f"/v1/collections/{C}", {"quotas": {"max_points": 1}}),
    ("PATCH", tenant_url(C, "acme"), {"quotas": {"max_points": 1}}),
    ("DELETE", tenant_url(C, "acme"), None),
    ("POST", f"/v1/collections/{C}/query", {"vector": [1.0, 0.0]}),
    ("GET", f"{tenant_url(C, 'acme')}/export", None),
    ("POST", "/v1/keys", {"collection": C, "tenant": "acme", "role": "write"}),
    ("GET", "/v1/keys", None),
    ("DELETE", "/v1/keys/0123456789abcdef", None),
]


@pytest.mark.parametrize(("method", "url", "body"), ADMIN_ROUTES)
def test_admin_routes_are_403_for_tenant_keys_and_change_nothing(
    secured: TestClient, method: str, url: str, body: dict[str, Any] | None
) -> None:
    key = bearer(new_key(secured))
    keys_before = secured.get("/v1/keys", headers=ADMIN).json()
    before = state(secured)
    response = secured.request(method, url, json=body, headers=key)
    assert assert_error(response, 403, "forbidden") == ADMIN_ONLY
    assert state(secured) == before
    assert secured.get("/v1/keys", headers=ADMIN).json() == keys_before


def test_import_is_admin_only(secured: TestClient) -> None:
    key = bearer(new_key(secured))
    exported = secured.get(f"{tenant_url(C, 'acme')}/export", headers=ADMIN).content
    response = secured.post(f"{tenant_url(C, 'acme')}/import", content=exported, headers=key)
    assert assert_error(response, 403, "forbidden") == ADMIN_ONLY


# -- what a tenant key sees ---------------------------------------------------------------------


def test_tenant_key_sees_its_collection_without_collection_wide_counts(secured: TestClient) -> None:
    key = bearer(new_key(secured))
    listed = secured.get("/v1/collections", headers=key).json()["collections"]
    assert [c["name"] for c in listed] == [C]
    described = secured.get(f"/v1/collections/{C}", headers=key).json()
    assert not {"points", "tenants", "curator"} & set(described)
    assert listed == [described]
    admin = secured.get(f"/v1/collections/{C}", headers=ADMIN).json()
    assert admin["points"] == 4 and admin["tenants"] == 2


def test_tenant_key_lists_only_its_tenant(secured: TestClient) -> None:
    key = bearer(new_key(secured))
    listed = secured.get(f"/v1/collections/{C}/tenants", headers=key).json()
    assert listed == {
        "tenants": [{"name": "acme", "points": 2, "shared_with_it": 0}],
        "next_cursor": None,
    }
    assert secured.get(f"/v1/collections/{C}/tenants?cursor=acme", headers=key).json() == {
        "tenants": [],
        "next_cursor": None,
    }
    nobody = bearer(new_key(secured, tenant="not-yet"))
    listed = secured.get(f"/v1/collections/{C}/tenants", headers=nobody).json()
    assert listed == {"tenants": [], "next_cursor": None}


def test_key_for_a_tenant_that_does_not_exist_yet_creates_it_by_writing(
    secured: TestClient,
) -> None:
    key = bearer(new_key(secured, tenant="newcomer"))
    assert secured.get(tenant_url(C, "newcomer"), headers=key).status_code == 404
    assert upsert_as(key, "newcomer")(secured).json() == {"created": 1, "updated": 0}
    assert secured.get(tenant_url(C, "newcomer"), headers=key).json()["points"] == 1


# -- keys: shown once, listed without secrets, persisted ------------------------------------


def test_key_is_shown_once_and_listed_without_its_secret(secured: TestClient) -> None:
    created = secured.post(
        "/v1/keys",
        json={"collection": C, "tenant": "acme", "role": "read", "description": "ci"},
        headers=ADMIN,
    ).json()
    key = created.pop("key")
    assert key.startswith(f"shoal_{created['id']}_") and len(key) == 6 + 16 + 1 + 64
    listed = secured.get("/v1/keys", headers=ADMIN)
    assert listed.json() == {"keys": [created]}
    assert key not in listed.text and key.split("_")[2] not in listed.text
    assert created["role"] == "read" and created["description"] == "ci"


def test_keys_are_stored_hashed(tmp_path: Path) -> None:
    with app_client(tmp_path / "data", admin_key=ADMIN_KEY) as client:
        client.post("/v1/collections", json={"name": C, "dim": 2}, headers=ADMIN)
        key = new_key(client)
    secret = key.split("_")[2].encode()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert secret not in stored and key.encode() not in stored
    assert ADMIN_KEY.encode() not in stored


def test_keys_and_revocations_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with app_client(data, admin_key=ADMIN_KEY) as client:
        client.post("/v1/collections", json={"name": C, "dim": 2}, headers=ADMIN)
        kept, revoked = new_key(client), new_key(client, role="read")
        client.delete(f"/v1/keys/{revoked.split('_')[1]}", headers=ADMIN)
        listed = client.get("/v1/keys", headers=ADMIN).json()
    with app_client(data, admin_key=ADMIN_KEY) as client:
        assert client.get("/v1/keys", headers=ADMIN).json() == listed
        assert upsert_as(bearer(kept))(client).status_code == 200
        refused = upsert_as(bearer(revoked))(client)
        assert assert_error(refused, 401, "unauthorized") == REVOKED_KEY


def test_key_for_an_unknown_collection_is_404(secured: TestClient) -> None:
    body = {"collection": "nope", "tenant": "acme", "role": "read"}
    response = secured.post("/v1/keys", json=body, headers=ADMIN)
    assert assert_error(response, 404, "not_found") == "collection 'nope' not found"
    assert secured.get("/v1/keys", headers=ADMIN).json() == {"keys": []}


def test_dropping_a_collection_revokes_its_keys(secured: TestClient) -> None:
    key = new_key(secured)
    secured.delete(f"/v1/collections/{C}", headers=ADMIN)
    secured.post("/v1/collections", json={"name": C, "dim": 2}, headers=ADMIN)
    assert assert_error(upsert_as(bearer(key))(secured), 401, "unauthorized") == REVOKED_KEY


def test_open_mode_refuses_to_create_keys(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": C, "dim": 2})
    body = {"collection": C, "tenant": "acme", "role": "read"}
    response = client.post("/v1/keys", json=body)
    assert assert_error(response, 403, "forbidden") == KEYS_NEED_ADMIN
    assert client.get("/v1/keys").json() == {"keys": []}


# -- probes, metrics, docs ----------------------------------------------------------------


def test_probes_and_api_description_need_no_key(secured: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert secured.get(path).status_code == 200, path


def test_metrics_take_the_admin_or_the_metrics_key(secured: TestClient) -> None:
    assert secured.get("/metrics", headers=ADMIN).status_code == 200
    assert secured.get("/metrics", headers=bearer(METRICS_KEY)).status_code == 200
    assert assert_error(secured.get("/metrics"), 401, "unauthorized") == MISSING_KEY
    tenant = secured.get("/metrics", headers=bearer(new_key(secured)))
    assert assert_error(tenant, 403, "forbidden") == METRICS_KEYS
    elsewhere = secured.get("/v1/collections", headers=bearer(METRICS_KEY))
    assert assert_error(elsewhere, 403, "forbidden") == METRICS_ONLY


def test_public_metrics_setting_serves_metrics_without_a_key(tmp_path: Path) -> None:
    with app_client(tmp_path / "data", admin_key=ADMIN_KEY, metrics_public=True) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/collections").status_code == 401


def test_routes_without_a_key_are_401_even_when_unknown(secured: TestClient) -> None:
    response = secured.get("/v1/no-such-route")
    assert assert_error(response, 401, "unauthorized") == MISSING_KEY
    assert secured.get("/v1/no-such-route", headers=ADMIN).status_code == 404


def test_auth_is_checked_before_the_body_is_read(secured: TestClient) -> None:
    response = secured.put(
        points_url(C, "acme"), content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 401, "unauthorized")
