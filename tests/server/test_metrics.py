"""Metrics: a real scrape after a mixed workload passes `promtool check metrics`, and every
counter moved by exactly what the workload did; the gauges agree with the API; a real
`shoal serve` exports its recovery time and writes JSON logs with request ids."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rocksdict import Rdict

from api.app import create_app
from server.metrics import CONTENT_TYPE, ROCKSDB_PROPERTIES
from server.settings import Settings
from tests.support import ServerProcess, app_client, wait_ready

UPSERT = "/v1/collections/{collection}/tenants/{tenant}/points"
QUERY = "/v1/collections/{collection}/tenants/{tenant}/query"
POINT = "/v1/collections/{collection}/tenants/{tenant}/points/{point_id}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None and Path("/usr/bin/promtool").exists():
        path = "/usr/bin/promtool"
    if path is None:
        pytest.fail(
            "promtool is missing (Debian package `prometheus`): run `bash .ci/system-packages.sh`"
        )
    return path


def scrape(client: TestClient | Any) -> tuple[str, Samples]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 if the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def upsert(
    client: TestClient, collection: str, tenant: str, vectors: np.ndarray, start: int
) -> None:
    points = [{"id": f"p{start + i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
    ok(client.put(f"/v1/collections/{collection}/tenants/{tenant}/points", json={"points": points}))


def query(
    client: TestClient, collection: str, tenant: str, vector: np.ndarray, **extra: Any
) -> str:
    body = {"vector": vector.tolist(), "k": 5, "explain": True, **extra}
    result = ok(client.post(f"/v1/collections/{collection}/tenants/{tenant}/query", json=body))
    return result["plan"]["strategy"]


def check_metrics(text: str) -> None:
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        f"promtool check metrics:\n{checked.stdout}{checked.stderr}"
    )


def test_a_scrape_after_a_mixed_workload_passes_promtool_and_counts_exactly(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(6)
    with app_client(tmp_path / "data") as client:
        database = client.app.state.database  # type: ignore[attr-defined]
        _, before = scrape(client)

        # Two collections: "big" gets a Curator index, "small" stays exact.
        index = {"curator_min_points": 300, "curator_min_tenant_points": 20}
        ok(client.post("/v1/collections", json={"name": "big", "dim": 8, "index": index}), 201)
        ok(client.post("/v1/collections", json={"name": "small", "dim": 4}), 201)
        big_batches = [("t0", 100), ("t1", 100), ("t2", 100), ("t3", 50)]
        small_batches = [("a", 3), ("b", 7)]
        for collection, dim, batches in [("big", 8, big_batches), ("small", 4, small_batches)]:
            for tenant, size in batches:
                upsert(client, collection, tenant, rng.standard_normal((size, dim)), 0)
        assert database.collection("big").curator.wait_trained(30)
        assert database.collection("big").curator.curator is not None

        # Queries: 7 by the Curator (3 single, a batch of 4), 9 exact (big: one forced exact and
        # one admin query; small: 2 single and a batch of 5).
        for _ in range(3):
            assert query(client, "big", "t0", rng.standard_normal(8)) == "curator"
        batch = {"queries": [{"vector": rng.standard_normal(8).tolist(), "k": 3} for _ in range(4)]}
        ok(client.post("/v1/collections/big/tenants/t1/query/batch", json=batch))
        assert query(client, "big", "t2", rng.standard_normal(8), exact=True) == "exact"
        ok(client.post("/v1/collections/big/query", json={"vector": [1.0] * 8, "k": 3}))
        for _ in range(2):
            assert query(client, "small", "a", rng.standard_normal(4)) == "exact"
        batch = {"queries": [{"vector": rng.standard_normal(4).tolist(), "k": 3} for _ in range(5)]}
        ok(client.post("/v1/collections/small/tenants/b/query/batch", json=batch))

        # One write of every other kind, then errors: 404 without a route, 404 on a route,
        # 422 on the upsert route (wrong dimension: nothing is written).
        ids = {"ids": [f"p{i}" for i in range(10)]}
        assert (
            ok(client.post("/v1/collections/big/tenants/t3/points/delete", json=ids))["deleted"]
            == 10
        )
        patch = {"attributes": {"lang": "en"}}
        ok(client.patch("/v1/collections/big/tenants/t3/points/p20", json=patch))
        ok(client.post("/v1/collections/big/tenants/t3/points/p21/grants", json={"tenant": "t0"}))
        ok(client.delete("/v1/collections/big/tenants/t3/points/p21/grants/t0"))
        ok(client.delete("/v1/collections/small/tenants/a"))
        assert client.get("/no/such/route").status_code == 404
        assert client.get("/v1/collections/big/tenants/t0/points/nope").status_code == 404
        bad = {"points": [{"id": "x", "vector": [1.0, 2.0]}]}
        assert client.put("/v1/collections/small/tenants/b/points", json=bad).status_code == 422

        big = ok(client.get("/v1/collections/big"))
        small = ok(client.get("/v1/collections/small"))
        text, after = scrape(client)

    check_metrics(text)

    def moved(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    # HTTP, by route template.
    requests = "shoal_http_requests_total"
    assert moved(requests, method="PUT", route=UPSERT, status="200") == 6
    assert moved(requests, method="PUT", route=UPSERT, status="422") == 1
    assert moved(requests, method="POST", route=QUERY, status="200") == 6
    assert moved(requests, method="POST", route="/v1/collections", status="201") == 2
    assert moved(requests, method="GET", route="unmatched", status="404") == 1
    assert moved(requests, method="GET", route=POINT, status="404") == 1
    assert moved(requests, method="PATCH", route=POINT, status="200") == 1
    duration = "shoal_http_request_duration_seconds"
    assert moved(f"{duration}_count", method="PUT", route=UPSERT) == 7
    assert moved(f"{duration}_bucket", method="PUT", route=UPSERT, le="+Inf") == 7
    assert moved(f"{duration}_sum", method="PUT", route=UPSERT) > 0
    assert not any("tenant" in dict(labels) for _, labels in after), "no per-tenant label"

    # Queries, per query vector and plan strategy.
    assert moved("shoal_queries_total", collection="big", strategy="curator") == 7
    assert moved("shoal_queries_total", collection="big", strategy="exact") == 2
    assert moved("shoal_queries_total", collection="small", strategy="exact") == 7
    assert moved("shoal_queries_total", collection="small", strategy="curator") == 0
    assert moved("shoal_query_duration_seconds_count", strategy="curator") == 7
    assert moved("shoal_query_duration_seconds_count", strategy="exact") == 9
    assert moved("shoal_query_duration_seconds_sum", strategy="curator") > 0

    # Writes: one count per request, batch sizes, group commits.
    writes = "shoal_writes_total"
    assert moved(writes, collection="big", operation="upsert") == 4
    assert moved(writes, collection="small", operation="upsert") == 2
    for operation in ("delete", "patch", "grant", "revoke"):
        assert moved(writes, collection="big", operation=operation) == 1, operation
    assert moved(writes, collection="small", operation="delete_tenant") == 1
    assert moved("shoal_write_batch_points_count") == 6
    assert moved("shoal_write_batch_points_sum") == 3 + 7 + 100 + 100 + 100 + 50
    assert moved("shoal_write_batch_points_bucket", le="5.0") == 1
    assert moved("shoal_write_batch_points_bucket", le="10.0") == 2
    assert moved("shoal_write_batch_points_bucket", le="50.0") == 3
    assert moved("shoal_write_batch_points_bucket", le="100.0") == 6
    syncs = moved("shoal_wal_sync_duration_seconds_count")
    assert syncs >= 1 and moved("shoal_group_commit_writes_count") == syncs
    # Every acknowledged write was covered by a sync (2 creates, 6 upserts, 5 other writes,
    # the Curator tree): group commit may merge them, never lose one.
    assert moved("shoal_group_commit_writes_sum") >= 14

    # Gauges read at scrape time agree with the API.
    assert value(after, "shoal_points", collection="big") == big["points"] == 340
    assert value(after, "shoal_points", collection="small") == small["points"] == 7
    assert value(after, "shoal_tenants", collection="big") == big["tenants"] == 4
    assert value(after, "shoal_tenants", collection="small") == small["tenants"] == 1
    assert value(after, "shoal_curator_trained", collection="big") == 1
    assert value(after, "shoal_curator_trained", collection="small") == 0
    assert (
        value(after, "shoal_index_memory_bytes", collection="big", index="vectors") >= 340 * 8 * 4
    )
    assert value(after, "shoal_index_memory_bytes", collection="big", index="curator") > 0
    assert (
        "shoal_index_memory_bytes",
        frozenset({("collection", "small"), ("index", "curator")}),
    ) not in after
    assert value(after, "shoal_ready") == 1
    assert value(after, "shoal_recovery_duration_seconds") > 0
    assert value(after, "shoal_rocksdb_memtable_bytes") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_cpu_seconds_total") > 0


def test_rocksdb_figures_are_real_properties(tmp_path: Path) -> None:
    """RocksDB answers None for a property it does not know, which the store would report as 0."""
    db = Rdict(str(tmp_path / "db"))
    try:
        for name in ROCKSDB_PROPERTIES:
            assert isinstance(db.property_int_value(name), int), name
        assert db.property_int_value("rocksdb.no-such-property") is None
    finally:
        db.close()


def test_rocksdb_sizes_after_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with app_client(tmp_path / "data") as client:
        ok(client.post("/v1/collections", json={"name": "c", "dim": 16}), 201)
        for start in range(0, 2000, 500):
            upsert(client, "c", "t", rng.standard_normal((500, 16)), start)
    with app_client(tmp_path / "data") as client:  # the close flushed the memtables to SSTs
        _, samples = scrape(client)
    assert value(samples, "shoal_rocksdb_sst_files_bytes") > 2000 * 16 * 4
    assert value(samples, "shoal_rocksdb_live_data_bytes") > 2000 * 16 * 4
    assert value(samples, "shoal_rocksdb_pending_compaction_bytes") >= 0
    assert value(samples, "shoal_points", collection="c") == 2000


def test_ready_follows_readyz_and_recovery_time_appears_once_recovered(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    client = TestClient(app)  # no lifespan: the store is never opened
    assert client.get("/readyz").status_code == 503
    _, samples = scrape(client)
    assert value(samples, "shoal_ready") == 0
    assert ("shoal_recovery_duration_seconds", frozenset()) not in samples
    assert not any(name == "shoal_points" for name, _ in samples)
    with TestClient(app) as started:
        wait_ready(started)
        _, samples = scrape(started)
    assert value(samples, "shoal_ready") == 1
    assert value(samples, "shoal_recovery_duration_seconds") > 0


def test_a_deleted_collections_series_go_away(client: TestClient) -> None:
    ok(client.post("/v1/collections", json={"name": "gone", "dim": 2}), 201)
    upsert(client, "gone", "t", np.ones((2, 2)), 0)
    query(client, "gone", "t", np.ones(2))
    ok(client.delete("/v1/collections/gone"))
    _, samples = scrape(client)
    assert not any(("collection", "gone") in labels for _, labels in samples)


def test_apps_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    with app_client(tmp_path / "a") as first, app_client(tmp_path / "b") as second:
        for _ in range(3):
            first.get("/healthz")
        _, samples = scrape(second)
    assert (
        value(samples, "shoal_http_requests_total", method="GET", route="/healthz", status="200")
        == 0
    )


def test_a_real_server_reports_recovery_and_logs_json_with_request_ids(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir).start()
    try:
        with server.client() as client:
            ok(client.post("/v1/collections", json={"name": "c", "dim": 4}), 201)
            vectors = np.random.default_rng(2).standard_normal((200, 4))
            points = [{"id": str(i), "vector": v.tolist()} for i, v in enumerate(vectors)]
            ok(client.put("/v1/collections/c/tenants/t/points", json={"points": points}))
    finally:
        assert server.stop() == 0

    restarted = ServerProcess(data_dir).start()
    try:
        with restarted.client() as client:
            text, samples = scrape(client)
            response = client.get("/v1/collections/c", headers={"X-Request-ID": "trace-77"})
            assert response.headers["x-request-id"] == "trace-77"
    finally:
        assert restarted.stop() == 0
    check_metrics(text)
    assert value(samples, "shoal_recovery_duration_seconds") > 0
    assert value(samples, "shoal_ready") == 1
    assert value(samples, "shoal_points", collection="c") == 200

    lines = [line for line in restarted.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records), "uvicorn logs as JSON too"
    assert any("recovered 1 collections" in r["message"] for r in records)
    [access] = [r for r in records if r.get("request_id") == "trace-77"]
    assert access["logger"] == "shoal.access"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/v1/collections/c", 200)
    assert access["duration_ms"] > 0
    generated = [r for r in records if r["logger"] == "shoal.access" and r["path"] == "/metrics"]
    assert generated and len(generated[0]["request_id"]) == 32


def test_a_tenant_name_with_a_slash_counts_under_the_route_template(client: TestClient) -> None:
    ok(client.post("/v1/collections", json={"name": "c", "dim": 2}), 201)
    points = {"points": [{"id": "a/b", "vector": [1.0, 0.0]}]}
    ok(client.put("/v1/collections/c/tenants/team%2Fone/points", json=points))
    assert client.get("/v1/collections/c/tenants/team%2Fone/points/a%2Fb").status_code == 200
    _, samples = scrape(client)
    requests = "shoal_http_requests_total"
    assert value(samples, requests, method="PUT", route=UPSERT, status="200") == 1
    assert value(samples, requests, method="GET", route=POINT, status="200") == 1
    assert value(samples, requests, method="GET", route="unmatched", status="200") == 0
