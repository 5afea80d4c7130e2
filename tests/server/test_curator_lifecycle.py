"""The Curator index through the API, on small synthetic collections: when it is trained, when
queries use it, and that every kind of write keeps it in step with the tenant bitmaps.

Settings: train at 500 points, Curator for tenants that can read 50+ points, shortlists of 32,
branching 8 (depth 2), so a few hundred points already split and merge shortlists.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.collection import Collection
from server.curator_host import CuratorHost
from storage import keys
from tests.api.helpers import assert_error, collection_url, points_url, tenant_url
from tests.support import app_client

NAME = "life"
DIM = 12
SETTINGS = {
    "curator_min_points": 500,
    "curator_min_tenant_points": 50,
    "max_shortlist": 32,
    "branching": 8,
}
K = 10
LARGE_EF = 10_000  # the API's maximum: with it the Curator scans every shortlist of a tenant


def clustered(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(16, DIM)) * 3 + shift
    return (centres[rng.integers(16, size=n)] + rng.normal(size=(n, DIM))).astype(np.float32)


class World:
    """The client and what the collection must hold: vectors by (owner, id), readers."""

    def __init__(self, client: TestClient, metric: str = "l2"):
        self.client = client
        self.metric = metric
        self.vectors: dict[tuple[str, str], np.ndarray] = {}
        self.readers: dict[tuple[str, str], set[str]] = {}
        self.min_tenant_points = SETTINGS["curator_min_tenant_points"]

    def create(self, **index: Any) -> World:
        self.min_tenant_points = index.get(
            "curator_min_tenant_points", SETTINGS["curator_min_tenant_points"]
        )
        body = {"name": NAME, "dim": DIM, "metric": self.metric, "index": {**SETTINGS, **index}}
        response = self.client.post("/v1/collections", json=body)
        assert response.status_code == 201, response.text
        return self

    @property
    def collection(self) -> Collection:
        return self.client.app.state.database.collection(NAME)  # type: ignore[attr-defined]

    def info(self) -> dict[str, Any]:
        response = self.client.get(collection_url(NAME))
        assert response.status_code == 200, response.text
        return response.json()

    def upsert(
        self, owner: str, ids: list[str], vectors: np.ndarray, shared: list[list[str]] | None
    ) -> dict[str, Any]:
        points = []
        for i, (pid, vector) in enumerate(zip(ids, vectors, strict=True)):
            point: dict[str, Any] = {"id": pid, "vector": vector.tolist()}
            if shared is not None:
                point["shared_with"] = shared[i]
            points.append(point)
            self.vectors[(owner, pid)] = vector.astype(np.float32)
            if shared is not None or (owner, pid) not in self.readers:
                self.readers[(owner, pid)] = {owner, *(shared[i] if shared else [])}
        response = self.client.put(points_url(NAME, owner), json={"points": points})
        assert response.status_code == 200, response.text
        return response.json()

    def delete(self, owner: str, ids: list[str]) -> None:
        response = self.client.post(f"{points_url(NAME, owner)}/delete", json={"ids": ids})
        assert response.status_code == 200, response.text
        assert response.json()["deleted"] == len(ids)
        for pid in ids:
            del self.vectors[(owner, pid)], self.readers[(owner, pid)]

    def grant(self, owner: str, pid: str, grantee: str) -> None:
        url = f"{points_url(NAME, owner)}/{pid}/grants"
        response = self.client.post(url, json={"tenant": grantee})
        assert response.status_code == 200, response.text
        self.readers[(owner, pid)].add(grantee)

    def revoke(self, owner: str, pid: str, grantee: str) -> None:
        response = self.client.delete(f"{points_url(NAME, owner)}/{pid}/grants/{grantee}")
        assert response.status_code == 200, response.text
        self.readers[(owner, pid)].discard(grantee)

    def delete_tenant(self, tenant: str) -> None:
        response = self.client.delete(tenant_url(NAME, tenant))
        assert response.status_code == 200, response.text
        for key in [key for key in self.vectors if key[0] == tenant]:
            del self.vectors[key], self.readers[key]
        for readers in self.readers.values():
            readers.discard(tenant)

    def readable(self, tenant: str) -> list[tuple[str, str]]:
        return sorted(key for key, readers in self.readers.items() if tenant in readers)

    def query(self, tenant: str, vector: np.ndarray, **extra: Any) -> dict[str, Any]:
        body = {"vector": vector.tolist(), "k": K, "include": [], "explain": True, **extra}
        response = self.client.post(f"{tenant_url(NAME, tenant)}/query", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def truth(self, tenant: str, vector: np.ndarray) -> list[tuple[str, str]]:
        keys = self.readable(tenant)
        rows = np.stack([self.vectors[key] for key in keys]).astype(np.float64)
        q = vector.astype(np.float64)
        if self.metric == "l2":
            distances = np.linalg.norm(rows - q, axis=1)
        else:
            distances = 1 - rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
        return [keys[i] for i in np.argsort(distances, kind="stable")[:K]]

    def check(self, tenants: list[str], queries: np.ndarray, what: str) -> None:
        """Invariants hold; big tenants go through the Curator; large ef equals exact."""
        self.collection.check_invariants()
        for tenant in tenants:
            size = len(self.readable(tenant))
            for query in queries:
                curator = self.query(tenant, query, ef=LARGE_EF)
                exact = self.query(tenant, query, exact=True)
                expected_strategy = "curator" if size >= self.min_tenant_points else "exact"
                assert curator["plan"]["strategy"] == expected_strategy, (what, tenant, size)
                assert exact["plan"]["strategy"] == "exact"
                assert curator["plan"]["candidates"] == exact["plan"]["candidates"] == size
                got = [(hit["owner"], hit["id"]) for hit in curator["results"]]
                assert got == [(hit["owner"], hit["id"]) for hit in exact["results"]], (
                    what,
                    tenant,
                )
                assert got == self.truth(tenant, query), (what, tenant)
                np.testing.assert_allclose(
                    [hit["distance"] for hit in curator["results"]],
                    [hit["distance"] for hit in exact["results"]],
                    rtol=1e-4,
                    atol=1e-4,
                )


def wait_trained(world: World, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = world.info()
        if info["curator"]["trained"]:
            assert world.collection.curator.wait_trained(timeout_s)
            return world.info()
        time.sleep(0.02)
    raise TimeoutError("the Curator was not trained")


def ids(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}-{i}" for i in range(start, start + n)]


@pytest.fixture
def world(client: TestClient) -> World:
    return World(client).create()


def load_initial(world: World) -> np.ndarray:
    """450 points (below the threshold): big 300, mid 100, small 30, tiny 20; big shares a
    third of its points with `reader` and some with `mid`."""
    data = clustered(450, seed=1)
    shared = [
        ["reader"] if i % 3 == 0 else (["reader", "mid"] if i % 7 == 1 else []) for i in range(300)
    ]
    world.upsert("big", ids("b", 300), data[:300], shared)
    world.upsert(
        "mid", ids("m", 100), data[300:400], [["small"] if i % 10 == 0 else [] for i in range(100)]
    )
    world.upsert("small", ids("s", 30), data[400:430], None)
    world.upsert("tiny", ids("t", 20), data[430:450], [["big"]] * 20)
    return data


def test_untrained_below_the_threshold_then_trained_after_crossing_it(world: World) -> None:
    load_initial(world)
    queries = clustered(4, seed=2)
    info = world.info()
    assert info["curator"] == {"trained": False}
    assert info["index"]["curator_min_points"] == 500 and info["index"]["max_shortlist"] == 32
    assert world.collection.curator.wait_trained(5)
    assert world.collection.curator.curator is None  # no training started below 500
    for tenant in ("big", "reader", "mid"):
        plan = world.query(tenant, queries[0])["plan"]
        assert plan["strategy"] == "exact"
        assert plan["nodes_visited"] == plan["shortlists_scanned"] == 0

    world.upsert("big", ids("b", 100, start=300), clustered(100, seed=3), None)  # 550 points
    info = wait_trained(world)
    curator = info["curator"]
    assert curator["trained"] is True
    expected_pairs = sum(len(readers) for readers in world.readers.values())
    assert curator["pairs"] == expected_pairs
    assert curator["memory_bytes"] > 0
    assert 0.5 < curator["drift"] < 2.0

    for tenant in ("big", "reader", "mid"):  # 400, ~130, 100+ readable
        for query in queries:
            result = world.query(tenant, query)
            plan = result["plan"]
            assert plan["strategy"] == "curator", tenant
            assert plan["candidates"] == len(world.readable(tenant))
            assert plan["nodes_visited"] >= 1 and plan["shortlists_scanned"] >= 1
            assert 0 < plan["distances_computed"] <= plan["candidates"]
            assert len(result["results"]) == K
            readable = set(world.readable(tenant))
            assert {(h["owner"], h["id"]) for h in result["results"]} <= readable
            exact = world.query(tenant, query, exact=True)["plan"]
            assert exact["strategy"] == "exact"
            assert exact["nodes_visited"] == exact["shortlists_scanned"] == 0
            assert exact["distances_computed"] == exact["candidates"]
    for tenant in ("small", "tiny"):  # fewer than 50 readable points
        assert len(world.readable(tenant)) < 50
        assert world.query(tenant, queries[0])["plan"]["strategy"] == "exact"
    world.check(["big", "reader", "mid", "small", "tiny"], queries, "after training")


def test_ef_changes_the_work_done(world: World) -> None:
    load_initial(world)
    world.upsert("big", ids("b", 1000, start=300), clustered(1000, seed=4), None)
    wait_trained(world)
    query = clustered(1, seed=5)[0]
    computed = {}
    for ef in (10, 40, 160, LARGE_EF):
        plan = world.query("big", query, ef=ef)["plan"]
        assert plan["strategy"] == "curator"
        computed[ef] = plan["distances_computed"]
    assert computed[10] < computed[160] < computed[LARGE_EF], computed
    assert computed[10] <= computed[40] <= computed[160], computed
    assert computed[LARGE_EF] == len(world.readable("big")) == 1320
    default = world.query("big", query)["plan"]["distances_computed"]
    collection_ef = world.info()["index"]["ef"]
    assert default == world.query("big", query, ef=collection_ef)["plan"]["distances_computed"]


def test_writes_after_training_keep_the_index_in_step(world: World) -> None:
    load_initial(world)
    world.upsert("big", ids("b", 200, start=300), clustered(200, seed=6), None)
    wait_trained(world)
    queries = np.concatenate([clustered(3, seed=7), clustered(1, seed=8, shift=4.0)])
    tenants = ["big", "reader", "mid", "small", "tiny", "fresh"]
    world.check(tenants[:5], queries, "trained")

    # New points, for a known tenant and a new one (created by the write), some shared.
    world.upsert(
        "big", ids("b", 120, start=500), clustered(120, seed=9), [["fresh"]] * 60 + [[]] * 60
    )
    world.upsert("fresh", ids("f", 80), clustered(80, seed=10), [["reader"]] * 80)
    world.check(tenants, queries, "new points")

    # Re-upserts that move vectors far (other clusters), changing grants or keeping them.
    moved = clustered(150, seed=11, shift=6.0)
    world.upsert("big", ids("b", 75), moved[:75], [["mid"]] * 75)  # grants become exactly mid
    world.upsert("big", ids("b", 75, start=75), moved[75:], None)  # grants kept
    world.check(tenants, queries, "moved")
    for i in (0, 80, 140):  # a moved point is found at its new place
        hits = world.query("big", moved[i], ef=LARGE_EF)["results"]
        assert (hits[0]["owner"], hits[0]["id"]) == ("big", f"b-{i}")
        assert hits[0]["distance"] < 1e-3

    # Deletes.
    world.delete("big", ids("b", 40, start=100) + ids("b", 30, start=400))
    world.delete("mid", ids("m", 35))
    world.check(tenants, queries, "deleted")

    # Grants and revokes.
    for i in range(200, 260):
        world.grant("big", f"b-{i}", "small")
    for i in range(150, 300, 2):
        if "reader" in world.readers.get(("big", f"b-{i}"), ()):
            world.revoke("big", f"b-{i}", "reader")
    for i in range(0, 75, 2):
        world.revoke("big", f"b-{i}", "mid")
    assert len(world.readable("small")) >= 50  # now searched through the Curator
    world.check(tenants, queries, "grants and revokes")

    # A tenant delete removes its points (and their grants) and the grants made to it.
    world.delete_tenant("mid")
    world.delete_tenant("fresh")
    world.check(["big", "reader", "small", "tiny"], queries, "tenants deleted")
    info = world.info()
    assert info["curator"]["pairs"] == sum(len(r) for r in world.readers.values())

    # Shrink `big` below the Curator threshold, then grow it back.
    keep = {key for key in world.readable("big") if key[0] == "big"}
    world.delete("big", sorted(pid for _, pid in keep)[40:])
    world.delete("tiny", ids("t", 20))
    assert len(world.readable("big")) < 50
    world.check(["big", "reader", "small"], queries, "shrunk")
    world.upsert("big", ids("b", 300, start=1000), clustered(300, seed=12), None)
    world.check(["big", "reader", "small"], queries, "grown again")


def test_restart_keeps_the_tree_and_the_answers(tmp_path: Path) -> None:
    queries = clustered(5, seed=13)
    with app_client(tmp_path / "data") as client:
        world = World(client).create()
        load_initial(world)
        world.upsert("big", ids("b", 200, start=300), clustered(200, seed=14), None)
        wait_trained(world)
        world.delete("big", ids("b", 20))
        world.revoke("big", "b-30", "reader")
        before_info = world.info()["curator"]
        before = {t: [world.query(t, q)["results"] for q in queries] for t in ("big", "reader")}
        readers, vectors = world.readers, world.vectors
    with app_client(tmp_path / "data") as client:
        response = client.get(collection_url(NAME))
        after_info = response.json()["curator"]
        assert after_info["trained"] is True
        assert after_info["pairs"] == before_info["pairs"]
        world = World(client)
        world.readers, world.vectors = readers, vectors
        world.collection.check_invariants()
        after = {t: [world.query(t, q)["results"] for q in queries] for t in ("big", "reader")}
        assert after == before
        world.check(["big", "reader", "mid"], queries, "after restart")


def test_a_drifted_collection_is_retrained(world: World) -> None:
    load_initial(world)
    world.upsert("big", ids("b", 100, start=300), clustered(100, seed=15), None)
    wait_trained(world)
    collection = world.collection
    first = collection.curator.curator
    assert first is not None
    # Far-away points, more than a fifth of the collection: drift crosses 1.5, a retrain runs.
    world.upsert("big", ids("b", 300, start=400), clustered(300, seed=16, shift=25.0), None)
    assert collection.curator.wait_trained(30)
    second = collection.curator.curator
    assert second is not first, "no retrain after the data drifted"
    info = world.info()["curator"]
    assert info["drift"] < 1.5
    assert info["pairs"] == sum(len(r) for r in world.readers.values())
    world.check(["big", "reader", "mid"], clustered(3, seed=17, shift=25.0), "retrained")


def test_a_one_point_threshold_still_answers_exactly(tmp_path: Path) -> None:
    with app_client(tmp_path / "data") as client:
        world = World(client, "cosine").create(curator_min_points=1, curator_min_tenant_points=1)
        data = clustered(40, seed=18)
        world.upsert("a", ["p0"], data[:1], None)
        wait_trained(world)
        world.upsert("a", ids("p", 39, start=1), data[1:], [["b"]] * 39)
        world.check(["a", "b"], clustered(3, seed=19), "tiny tree")


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bogus", 3),
        ("max_sl_size", 64),
        ("branching", 1),
        ("branching", 257),
        ("depth", 0),
        ("depth", 5),
        ("max_shortlist", 15),
        ("curator_min_points", 0),
        ("curator_min_tenant_points", -1),
        ("ef", 0),
        ("ef", 10_001),
        ("patience", 0),
        ("training_sample", 99),
        ("retrain_drift", 0.5),
        ("branching", True),
        ("ef", False),
        ("max_shortlist", 64.5),
        ("depth", "2"),
        ("curator_min_points", "many"),
        ("patience", [4]),
    ],
)
def test_invalid_index_settings_are_422_naming_the_field(
    client: TestClient, field: str, value: Any
) -> None:
    body = {"name": NAME, "dim": DIM, "index": {field: value}}
    response = client.post("/v1/collections", json=body)
    assert_error(response, 422, "invalid", f"index.{field}")
    assert client.get(collection_url(NAME)).status_code == 404


@pytest.mark.parametrize("value", [True, "2"])
def test_non_numeric_retrain_drift_is_422(client: TestClient, value: Any) -> None:
    body = {"name": NAME, "dim": DIM, "index": {"retrain_drift": value}}
    response = client.post("/v1/collections", json=body)
    assert_error(response, 422, "invalid", "index.retrain_drift")


def test_valid_index_settings_are_kept(client: TestClient) -> None:
    index = {**SETTINGS, "depth": 3, "ef": 77, "patience": 6, "retrain_drift": 2.5}
    body = {"name": NAME, "dim": DIM, "index": index}
    response = client.post("/v1/collections", json=body)
    assert response.status_code == 201, response.text
    for out in (response.json(), client.get(collection_url(NAME)).json()):
        assert {name: out["index"][name] for name in index} == index
        assert out["curator"] == {"trained": False}


# -- recovery and drop ----------------------------------------------------------------------


def test_a_collection_over_the_threshold_without_a_tree_is_trained_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        # As if the process had died while the tree was being trained.
        patch.setattr(CuratorHost, "_train", lambda self: None)
        with app_client(tmp_path / "data") as client:
            world = World(client).create()
            load_initial(world)
            world.upsert("big", ids("b", 100, start=300), clustered(100, seed=20), None)
            assert world.collection.curator.wait_trained(10)
            assert world.info()["curator"] == {"trained": False}
    with app_client(tmp_path / "data") as client:
        world = World(client)
        assert world.info()["points"] == 550
        deadline = time.monotonic() + 3
        while not world.info()["curator"]["trained"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.info()["curator"]["trained"], "550 points >= 500, still no tree"


def test_deleting_a_collection_removes_its_tree(world: World) -> None:
    load_initial(world)
    world.upsert("big", ids("b", 100, start=300), clustered(100, seed=21), None)
    wait_trained(world)
    cid = world.collection.config.cid
    store = world.client.app.state.database.store  # type: ignore[attr-defined]
    assert store.get(keys.CF_META, keys.tree_key(cid)) is not None
    response = world.client.delete(collection_url(NAME))
    assert response.status_code == 200, response.text
    assert store.get(keys.CF_META, keys.tree_key(cid)) is None
