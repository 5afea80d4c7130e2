"""The Shoal side of the serving bench: load the Debian split over HTTP, build query bodies.

The collection is created with the bench schema (`section` a keyword, among others), each loaded
point owned by its `tenant` and not shared (the peer's table has one tenant column), loaded by 4
client threads in requests of up to 500 points of one owner, as `bench.ingest` does.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from bench.common import SCHEMA, Debian
from bench.debian_queries import Query
from bench.loadgen import Request

COLLECTION = "debian"
BATCH = 500
LOAD_CLIENTS = 4
# Query bodies per configuration: the server's defaults (Curator for tenants of 1,000+
# points, exact below) and `exact: true` for every query.
# `b64`: the default plan, the vector sent as `vector_b64` (base64 little-endian float32).
CONFIGS: dict[str, dict[str, object]] = {"default": {}, "b64": {}, "exact": {"exact": True}}
B64_CONFIGS = frozenset({"b64"})


def tenant_path(tenant: str, suffix: str) -> str:
    return f"/v1/collections/{COLLECTION}/tenants/{quote(tenant, safe='')}/{suffix}"


def load(url: str, data: Debian, rows: np.ndarray, timeout_s: float = 300.0) -> dict[str, float]:
    """Create the collection, upsert `rows`, wait for the Curator tree and the HNSW graphs
    (a graph built in the background would take a core from the timed points); seconds per
    step."""
    groups: dict[str, list[int]] = {}
    for row in rows.tolist():
        groups.setdefault(data.points[row]["tenant"], []).append(row)
    bodies = []
    for tenant, members in groups.items():
        for start in range(0, len(members), BATCH):
            points = [
                {"id": data.points[i]["id"], "vector": data.vectors[i],
                 "attributes": data.attributes(i)}
                for i in members[start : start + BATCH]
            ]  # fmt: skip
            body = orjson.dumps({"points": points}, option=orjson.OPT_SERIALIZE_NUMPY)
            bodies.append((tenant_path(tenant, "points"), body))
    random.Random(0).shuffle(bodies)
    seconds: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=120.0) as admin:
        create = {"name": COLLECTION, "dim": 384, "metric": "cosine", "schema": SCHEMA}
        admin.post("/v1/collections", json=create).raise_for_status()
        queue = iter(bodies)
        lock = threading.Lock()
        errors: list[str] = []

        def upload() -> None:
            headers = {"content-type": "application/json"}
            with httpx.Client(base_url=url, timeout=120.0) as client:
                while True:
                    with lock:
                        item = next(queue, None)
                    if item is None:
                        return
                    response = client.put(item[0], content=item[1], headers=headers)
                    if response.status_code != 200:
                        errors.append(f"{item[0]}: {response.status_code} {response.text[:300]}")

        started = time.perf_counter()
        threads = [threading.Thread(target=upload) for _ in range(LOAD_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds["upsert"] = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"{len(errors)} upserts failed, first: {errors[0]}")
        started = time.perf_counter()
        info = wait_for_indexes(admin, timeout_s)
        seconds["index wait"] = time.perf_counter() - started
        if info["points"] != len(rows) or info["tenants"] != len(groups):
            raise RuntimeError(f"loaded {info}, expected {len(rows)} points")
    return seconds


def wait_for_indexes(client: httpx.Client, timeout_s: float = 300.0) -> dict[str, Any]:
    """The collection's info once the Curator is trained and the HNSW graphs are built and
    caught up (a graph built in the background would take a core from the timed points)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info: dict[str, Any] = client.get(f"/v1/collections/{COLLECTION}").json()
        graphs = info["graphs"]
        settled = not graphs["pending"] and not graphs["building"]
        if info["curator"].get("trained") and settled and graphs["shared_graph"]:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"indexes not ready after {timeout_s} s: {info}")
        time.sleep(0.2)


def requests(
    data: Debian, queries: list[Query], config: str, k: int, explain: bool = False
) -> list[Request]:
    """One tenant query body per query; `filter: {section}` when the query has a section."""
    out = []
    for q in queries:
        vector = np.asarray(data.vectors[q.row], dtype="<f4")
        body: dict[str, object] = {"k": k, "include": []}
        if config in B64_CONFIGS:
            body["vector_b64"] = base64.b64encode(vector.tobytes()).decode("ascii")
        else:
            body["vector"] = vector
        body |= CONFIGS[config]
        if q.section is not None:
            body["filter"] = {"section": q.section}
        if explain:
            body["explain"] = True
        encoded = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        out.append(Request(tenant_path(q.tenant, "query"), encoded))
    return out
