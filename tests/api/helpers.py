"""Small helpers shared by the API tests: URLs with percent-encoded names, error checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from fastapi.testclient import TestClient


def enc(name: str) -> str:
    """Percent-encode one path segment, '/' included (as %2F)."""
    return quote(name, safe="")


def collection_url(collection: str) -> str:
    return f"/v1/collections/{enc(collection)}"


def tenant_url(collection: str, tenant: str) -> str:
    return f"{collection_url(collection)}/tenants/{enc(tenant)}"


def points_url(collection: str, tenant: str) -> str:
    return f"{tenant_url(collection, tenant)}/points"


def point_url(collection: str, tenant: str, point_id: str) -> str:
    return f"{points_url(collection, tenant)}/{enc(point_id)}"


def create_collection(
    client: TestClient,
    name: str = "docs",
    dim: int = 4,
    metric: str = "cosine",
    schema: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "dim": dim, "metric": metric}
    if schema is not None:
        body["schema"] = schema
    response = client.post("/v1/collections", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def upsert(
    client: TestClient, collection: str, tenant: str, points: list[dict[str, Any]]
) -> dict[str, Any]:
    response = client.put(points_url(collection, tenant), json={"points": points})
    assert response.status_code == 200, response.text
    return response.json()


def get_point(
    client: TestClient,
    collection: str,
    tenant: str,
    point_id: str,
    owner: str | None = None,
    with_vector: bool = False,
) -> httpx.Response:
    params: dict[str, str] = {}
    if owner is not None:
        params["owner"] = owner
    if with_vector:
        params["with_vector"] = "true"
    return client.get(point_url(collection, tenant, point_id), params=params)


def count(client: TestClient, collection: str, tenant: str) -> int:
    response = client.post(f"{points_url(collection, tenant)}/count", json={})
    assert response.status_code == 200, response.text
    return response.json()["count"]


def scroll_all(
    client: TestClient,
    collection: str,
    tenant: str,
    limit: int = 100,
    with_vector: bool = False,
    filter: Any = None,
) -> tuple[list[dict[str, Any]], int]:
    """Every point of a scroll (of the points matching `filter`, if given), following cursors;
    also the number of pages."""
    points: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        body: dict[str, Any] = {"limit": limit, "with_vector": with_vector}
        if filter is not None:
            body["filter"] = filter
        if cursor is not None:
            body["cursor"] = cursor
        response = client.post(f"{points_url(collection, tenant)}/scroll", json=body)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["points"]) <= limit
        points.extend(page["points"])
        cursor = page["next_cursor"]
        if cursor is None:
            return points, pages
        assert pages < 10_000, "scroll does not end"


def query(
    client: TestClient, collection: str, tenant: str, vector: list[float], k: int = 10, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        f"{tenant_url(collection, tenant)}/query", json={"vector": vector, "k": k, **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> str:
    """The error envelope with `status` and `code`; the message starts with `field` if given."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    if field is not None:
        assert message.startswith(field), f"{message!r} does not start with {field!r}"
    return message
