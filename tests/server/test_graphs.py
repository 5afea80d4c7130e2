"""The HNSW graphs of a collection through the API: when they exist, that every kind of write
shows in graph answers at once, demotion, rebuilds, and persistence across restarts, crashes
and damaged files.

Collection: 3,000 points of 32 dimensions in gaussian clusters (cosine). `big` owns 1,400 and
reads 208 more shared with it by 16 small tenants (`t00`..`t15`, 100 each). With the shared
graph from 1,000 points and tenant graphs from 1,500, `big` gets a graph of its own and the
small tenants use the shared one. The Curator stays untrained (its threshold is out of reach)
so that the graph plans are the only approximate ones.

A graph answer is compared with the exact answer of the same query through the API and with
numpy on the test's own model of the points; the graph queries use a large `ef`, with which
hnswlib finds the true neighbours on a collection this small, so any difference is a stale or
missing graph entry, not approximation.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pyroaring import BitMap

from index import recall
from index.hnsw import HnswGraph
from server import graph_files
from server.collection import Collection
from tests.support import ServerProcess, app_client

NAME = "graphs"
DIM = 32
CLUSTERS = 12
K = 10
HIGH_EF = 1000
SMALL = [f"t{i:02d}" for i in range(16)]
SETTINGS: dict[str, Any] = {
    "shared_graph_min_points": 1000,
    "tenant_graph_min_points": 1500,
    "curator_min_points": 1_000_000,
}
Key = tuple[str, str]  # (owner, id)


class World:
    """A client (in-process or HTTP) and what the collection must hold."""

    def __init__(self, client: httpx.Client, seed: int = 0):
        self.client = client
        self.rng = np.random.default_rng(seed)
        self.centres = np.random.default_rng(100).normal(size=(CLUSTERS, DIM)) * 3
        self.vectors: dict[Key, np.ndarray] = {}
        self.grants: dict[Key, set[str]] = {}
        self.next_id = 0

    # -- model and writes -------------------------------------------------------------------

    def sample(self, n: int) -> np.ndarray:
        centres = self.centres[self.rng.integers(CLUSTERS, size=n)]
        return (centres + self.rng.normal(size=(n, DIM))).astype(np.float32)

    def create(self, **index: Any) -> World:
        body = {"name": NAME, "dim": DIM, "metric": "cosine", "index": {**SETTINGS, **index}}
        response = self.client.post("/v1/collections", json=body)
        assert response.status_code == 201, response.text
        return self

    def upsert(
        self,
        owner: str,
        ids: list[str],
        vectors: np.ndarray,
        shared: list[list[str]] | None = None,
    ) -> None:
        points = []
        for i, (pid, vector) in enumerate(zip(ids, vectors, strict=True)):
            point: dict[str, Any] = {"id": pid, "vector": vector.tolist()}
            if shared is not None:
                point["shared_with"] = shared[i]
            points.append(point)
        for start in range(0, len(points), 1000):
            url = f"/v1/collections/{NAME}/tenants/{owner}/points"
            response = self.client.put(url, json={"points": points[start : start + 1000]})
            assert response.status_code == 200, response.text
        for i, (pid, vector) in enumerate(zip(ids, vectors, strict=True)):
            self.vectors[(owner, pid)] = np.asarray(vector, dtype=np.float32)
            if shared is not None:
                self.grants[(owner, pid)] = set(shared[i])
            else:
                self.grants.setdefault((owner, pid), set())

    def new_ids(self, n: int) -> list[str]:
        self.next_id += n
        return [f"n{i}" for i in range(self.next_id - n, self.next_id)]

    def delete(self, owner: str, ids: list[str]) -> None:
        for start in range(0, len(ids), 1000):
            url = f"/v1/collections/{NAME}/tenants/{owner}/points/delete"
            response = self.client.post(url, json={"ids": ids[start : start + 1000]})
            assert response.status_code == 200, response.text
            assert response.json()["deleted"] == len(ids[start : start + 1000])
        for pid in ids:
            del self.vectors[(owner, pid)]
            del self.grants[(owner, pid)]

    def grant(self, owner: str, pid: str, grantee: str) -> None:
        url = f"/v1/collections/{NAME}/tenants/{owner}/points/{pid}/grants"
        response = self.client.post(url, json={"tenant": grantee})
        assert response.status_code == 200, response.text
        self.grants[(owner, pid)].add(grantee)

    def revoke(self, owner: str, pid: str, grantee: str) -> None:
        url = f"/v1/collections/{NAME}/tenants/{owner}/points/{pid}/grants/{grantee}"
        response = self.client.delete(url)
        assert response.status_code == 200, response.text
        self.grants[(owner, pid)].discard(grantee)

    def delete_tenant(self, tenant: str) -> None:
        response = self.client.delete(f"/v1/collections/{NAME}/tenants/{tenant}")
        assert response.status_code in (200, 204), response.text
        for key in [key for key in self.vectors if key[0] == tenant]:
            del self.vectors[key]
            del self.grants[key]
        for grantees in self.grants.values():
            grantees.discard(tenant)

    def owned(self, owner: str) -> list[str]:
        return sorted(pid for o, pid in self.vectors if o == owner)

    def readable(self, tenant: str) -> list[Key]:
        return sorted(key for key in self.vectors if key[0] == tenant or tenant in self.grants[key])

    def truth(self, tenant: str, query: np.ndarray) -> tuple[list[Key], np.ndarray]:
        keys = self.readable(tenant)
        rows = np.stack([self.vectors[key] for key in keys]).astype(np.float64)
        q = query.astype(np.float64)
        distances = 1 - rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
        order = np.argsort(distances, kind="stable")[:K]
        return [keys[i] for i in order], distances[order]

    # -- reads --------------------------------------------------------------------------------

    def ask(self, tenant: str, query: np.ndarray, **options: Any) -> httpx.Response:
        body = {"vector": query.tolist(), "k": K, "explain": True, "include": [], **options}
        return self.client.post(f"/v1/collections/{NAME}/tenants/{tenant}/query", json=body)

    def answer(self, tenant: str, query: np.ndarray, **options: Any) -> dict[str, Any]:
        response = self.ask(tenant, query, **options)
        assert response.status_code == 200, response.text
        return response.json()

    def info(self) -> dict[str, Any]:
        response = self.client.get(f"/v1/collections/{NAME}")
        assert response.status_code == 200, response.text
        return response.json()

    def graphs(self) -> dict[str, Any]:
        return self.info()["graphs"]

    def assert_right(
        self, tenant: str, queries: np.ndarray, strategy: str, what: str
    ) -> list[dict[str, Any]]:
        """The forced graph plan answers (no fallback) exactly as the exact plan and numpy."""
        answers = []
        for i, query in enumerate(queries):
            label = f"{what}: {tenant} {strategy} query {i}"
            got = self.answer(tenant, query, strategy=strategy, ef=HIGH_EF)
            exact = self.answer(tenant, query, exact=True)
            truth, distances = self.truth(tenant, query)
            assert got["plan"]["chosen"] == strategy, label
            assert not got["plan"]["fallback"], f"{label}: the graph plan came back short"
            assert exact["plan"]["strategy"] == "exact", label
            assert got["plan"]["candidates"] == len(self.readable(tenant)), label
            assert keys_of(exact) == truth, f"{label}: the exact plan differs from numpy"
            assert keys_of(got) == truth, (
                f"{label}: graph {keys_of(got)} != exact {truth} (graph state {self.graphs()})"
            )
            got_distances = [hit["distance"] for hit in got["results"]]
            np.testing.assert_allclose(got_distances, distances, atol=1e-5, err_msg=label)
            answers.append(got)
        return answers

    def assert_all_right(self, queries: np.ndarray, what: str) -> None:
        self.assert_right("big", queries, "tenant_hnsw", what)
        self.assert_right("big", queries, "shared_hnsw", what)
        self.assert_right("t04", queries, "shared_hnsw", what)


def keys_of(response: dict[str, Any]) -> list[Key]:
    return [(hit["owner"], hit["id"]) for hit in response["results"]]


def load(world: World, big: int = 1400) -> None:
    """`big` owns `big` points; each small tenant 100, every 8th of them shared with `big`."""
    world.upsert("big", [f"b{i}" for i in range(big)], world.sample(big))
    for t, tenant in enumerate(SMALL):
        ids = [f"s{t}-{i}" for i in range(100)]
        shared = [["big"] if i % 8 == 0 else [] for i in range(100)]
        world.upsert(tenant, ids, world.sample(100), shared)


def collection_of(client: httpx.Client) -> Collection:
    """The collection behind an in-process client (a TestClient)."""
    assert isinstance(client, TestClient)
    return client.app.state.database.collection(NAME)  # type: ignore[attr-defined]


def graph_dir(data_dir: Path) -> Path:
    """The snapshot directory of the only collection (it exists after the first snapshot)."""
    [directory] = (data_dir / "graphs").glob("c*")
    return directory


def big_number(world: World) -> int:
    return collection_of(world.client).tenants.number_of["big"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with app_client(tmp_path / "data") as client:
        yield World(client)


def built(world: World) -> Collection:
    """Load, wait until both graphs are built and caught up."""
    load(world)
    collection = collection_of(world.client)
    assert collection.graphs.wait_idle(120)
    graphs = world.graphs()
    assert graphs["shared_graph"] and graphs["tenant_graphs"] == 1, graphs
    return collection


# -- when graphs exist ------------------------------------------------------------------------


def test_graphs_appear_in_the_collection_state(world: World) -> None:
    world.create()
    collection = collection_of(world.client)
    world.upsert("big", [f"b{i}" for i in range(900)], world.sample(900))
    assert collection.graphs.wait_idle(60)
    graphs = world.graphs()
    assert graphs == {
        "shared_graph": False,
        "shared_graph_points": 0,
        "shared_graph_recall": 0.0,
        "shared_graph_ef_floor": 0,
        "tenant_graphs": 0,
        "pending": 0,
        "building": False,
        "memory_bytes": 0,
    }
    query = world.sample(1)[0]
    for strategy in ("shared_hnsw", "tenant_hnsw"):
        response = world.ask("big", query, strategy=strategy)
        assert response.status_code == 422, response.text
        assert strategy in response.json()["error"]["message"]

    # 1,000 points: the shared graph; `big` reading 1,500: its own graph.
    world.upsert("big", [f"b{i}" for i in range(900, 1400)], world.sample(500))
    assert collection.graphs.wait_idle(60)
    graphs = world.graphs()
    assert graphs["shared_graph"] and graphs["shared_graph_points"] == 1400
    assert graphs["tenant_graphs"] == 0  # 1,400 < 1,500
    for t, tenant in enumerate(SMALL):
        shared = [["big"] if i % 8 == 0 else [] for i in range(100)]
        world.upsert(tenant, [f"s{t}-{i}" for i in range(100)], world.sample(100), shared)
    assert collection.graphs.wait_idle(60)
    graphs = world.graphs()
    assert graphs["shared_graph"] and graphs["shared_graph_points"] == 3000
    assert graphs["tenant_graphs"] == 1 and graphs["pending"] == 0
    assert graphs["building"] is False and graphs["memory_bytes"] > 0
    big_graph = collection.graphs.tenant(big_number(world))
    assert big_graph is not None and len(big_graph.members) == len(world.readable("big")) == 1608
    # Two builds, plus a rebuild of the shared graph when it doubled during the load.
    assert 2 <= collection.graphs.builds <= 3
    shared = collection.graphs.shared()
    assert shared is not None and 2 * shared.checked_size > 3000  # checked since it doubled

    queries = world.sample(5)
    plan = world.answer("big", queries[0])["plan"]
    assert set(plan["estimates_us"]) == {"exact", "tenant_hnsw", "shared_hnsw"}
    costs = plan["estimates_us"]
    eligible = {name: cost for name, cost in costs.items() if name not in plan["below_recall"]}
    assert plan["chosen"] == min(eligible, key=eligible.__getitem__), plan  # the cheapest
    response = world.ask("t04", queries[0], strategy="tenant_hnsw")  # t04 has no graph
    assert response.status_code == 422, response.text
    world.assert_all_right(queries, "built")


# -- writes show at once -----------------------------------------------------------------------


def test_writes_show_in_graph_answers_before_the_indexer_applies_them(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.create(graph_rebuild_tombstones=0.9)
    collection = built(world)
    host = collection.graphs
    big_graph = host.tenant(big_number(world))
    assert big_graph is not None
    queries = world.sample(4)
    target = queries[0]
    world.assert_all_right(queries, "before the writes")

    # The indexer stops applying pending labels: every answer below comes from a graph that
    # is behind, plus the exact scan of what it has not caught up with.
    monkeypatch.setattr(host, "_drain", lambda: None)

    direction = np.random.default_rng(5).normal(size=DIM)
    direction *= np.linalg.norm(target) / np.linalg.norm(direction)

    def near(step: float) -> np.ndarray:
        """A vector at cosine distance about step**2 / 2 from the query."""
        return (target + step * direction)[None, :].astype(np.float32)

    def top(tenant: str, strategy: str) -> Key:
        return keys_of(world.answer(tenant, target, strategy=strategy, ef=HIGH_EF))[0]

    def check(what: str) -> None:
        graphs = world.graphs()
        assert graphs["pending"] > 0 and big_graph.pending, f"{what}: the indexer ran"
        world.assert_all_right(queries, what)

    world.upsert("big", ["b5"], near(0.02))  # an existing point moves onto the query
    check("move b5")
    assert top("big", "tenant_hnsw") == top("big", "shared_hnsw") == ("big", "b5")

    world.upsert("big", world.new_ids(1), near(0.03))  # a new label
    check("new point")

    world.upsert("t03", ["fresh"], near(0.01), [[]])  # closest of all, not shared
    check("small tenant's new point")
    assert top("t03", "shared_hnsw") == ("t03", "fresh")
    assert top("big", "tenant_hnsw") == ("big", "b5")

    world.grant("t03", "fresh", "big")
    check("grant")
    assert top("big", "tenant_hnsw") == top("big", "shared_hnsw") == ("t03", "fresh")

    world.revoke("t03", "fresh", "big")
    check("revoke")
    assert top("big", "tenant_hnsw") == ("big", "b5")

    world.upsert("t03", ["fresh"], near(0.01), [["big"]])  # shared through an upsert
    check("upsert with shared_with")
    assert top("big", "tenant_hnsw") == ("t03", "fresh")

    world.upsert("t03", ["fresh"], world.sample(1), [["big", "t04"]])  # moves away
    check("shared point moves away")
    assert top("big", "tenant_hnsw") == ("big", "b5")

    world.delete("big", ["b5"])
    check("delete")
    assert ("big", "b5") not in keys_of(world.answer("big", target, strategy="tenant_hnsw"))

    shared_by_t07 = [key for key in world.readable("big") if key[0] == "t07"]
    assert shared_by_t07
    world.delete_tenant("t07")
    check("delete a tenant that shared points with big")
    assert not any(key[0] == "t07" for key in world.readable("big"))

    # The indexer resumes and catches up; answers stay the same.
    monkeypatch.undo()
    host.poke()
    assert host.wait_idle(60)
    assert world.graphs()["pending"] == 0
    world.assert_all_right(queries, "after the indexer caught up")
    with collection.read_lock():
        assert set(big_graph.members) == set(collection.tenants.readable[big_number(world)])
        shared = host.shared()
        assert shared is not None
        assert set(shared.members) == set(collection.arena.live_labels().tolist())
    collection.check_invariants()


def test_writes_while_the_indexer_runs_stay_right(world: World) -> None:
    """No pause: the indexer races the writes; every answer must still be right."""
    world.create(graph_rebuild_tombstones=0.9)
    collection = built(world)
    queries = world.sample(3)
    big_ids = world.owned("big")
    for round_ in range(6):
        moved = big_ids[round_ * 50 : round_ * 50 + 50]
        world.upsert("big", moved, world.sample(len(moved)))
        world.delete("big", big_ids[1000 + round_ * 10 : 1010 + round_ * 10])
        world.upsert("t02", world.new_ids(30), world.sample(30), [["big"]] * 30)
        pid = world.owned("t05")[round_]
        world.grant("t05", pid, "big")
        world.assert_all_right(queries, f"round {round_}")
    assert collection.graphs.wait_idle(60)
    world.assert_all_right(queries, "idle")


# -- demotion and rebuilds -----------------------------------------------------------------------


def test_a_tenant_below_half_the_threshold_loses_its_graph(world: World, tmp_path: Path) -> None:
    world.create(graph_rebuild_tombstones=0.9)
    collection = built(world)
    host = collection.graphs
    number = big_number(world)
    directory = tmp_path / "data" / "graphs" / f"c{collection.config.cid}"
    persisted = directory / f"t{number}.graph"
    wait_for(persisted.exists, "the snapshot after the build")  # written after the swap
    queries = world.sample(3)
    big_ids = world.owned("big")

    # 1,608 -> 908 readable: below the threshold (1,500) but not below half: it keeps it.
    world.delete("big", big_ids[:700])
    assert host.wait_idle(60)
    assert world.graphs()["tenant_graphs"] == 1
    world.assert_right("big", queries, "tenant_hnsw", "908 readable")

    # 908 -> 708: below half (750): demoted; the planner no longer offers it.
    world.delete("big", big_ids[700:900])
    assert host.wait_idle(60)
    assert len(world.readable("big")) == 708
    assert world.graphs()["tenant_graphs"] == 0
    assert host.tenant(number) is None
    assert not (directory / f"t{number}.graph").exists()
    response = world.ask("big", queries[0], strategy="tenant_hnsw")
    assert response.status_code == 422, response.text
    plan = world.answer("big", queries[0])["plan"]
    assert "tenant_hnsw" not in plan["estimates_us"], plan
    world.assert_right("big", queries, "shared_hnsw", "demoted")

    # Back past the threshold: a new graph is built.
    builds = host.builds
    world.upsert("big", world.new_ids(800), world.sample(800))
    assert host.wait_idle(60)
    assert world.graphs()["tenant_graphs"] == 1
    assert host.builds == builds + 1
    world.assert_all_right(queries, "promoted again")


def test_tombstones_past_the_fraction_trigger_a_rebuild(world: World) -> None:
    world.create(graph_rebuild_tombstones=0.2)
    collection = built(world)
    host = collection.graphs
    builds = host.builds
    queries = world.sample(3)
    unshared = [  # from t15 down to t08: t04, queried below, keeps its points
        (tenant, pid)
        for tenant in reversed(SMALL)
        for pid in world.owned(tenant)
        if not world.grants[(tenant, pid)]
    ]

    def delete(keys: list[Key]) -> None:
        for tenant in SMALL:
            ids = [pid for owner, pid in keys if owner == tenant]
            if ids:
                world.delete(tenant, ids)

    # 300 of 3,000 slots deleted: 10%, no rebuild; the deleted points are tombstones.
    delete(unshared[:300])
    assert host.wait_idle(60)
    shared = host.shared()
    assert shared is not None and len(shared.tombstones) == 300 and host.builds == builds
    world.assert_all_right(queries, "10% tombstones")

    # 700 of 3,000: 23% > 20%: the shared graph is rebuilt without them; big's is untouched.
    # (Deletes that land while the rebuild runs are tombstones of the new graph.)
    delete(unshared[300:700])
    assert host.wait_idle(60)
    assert host.builds == builds + 1
    shared = host.shared()
    assert shared is not None and len(shared.members) == 2300
    assert len(shared.tombstones) < 400 and shared.tombstone_fraction <= 0.2
    big_graph = host.tenant(big_number(world))
    assert big_graph is not None and not big_graph.tombstones
    world.assert_all_right(queries, "shared graph rebuilt")

    # A tenant graph follows the same rule: 350 of big's 1,608 slots (22%), in one request.
    shared_rebuilt = (len(shared.tombstones) + 350) / shared.slots > 0.2
    world.delete("big", world.owned("big")[:350])
    assert host.wait_idle(60)
    assert host.builds == builds + 2 + shared_rebuilt
    big_graph = host.tenant(big_number(world))
    assert big_graph is not None and not big_graph.tombstones
    assert len(big_graph.members) == 1258
    shared = host.shared()
    assert shared is not None and len(shared.members) == 1950
    assert shared.tombstone_fraction <= 0.2
    world.assert_all_right(queries, "tenant graph rebuilt")


def test_recall_checks_never_query_a_graph_with_its_own_members(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member query finds its own node and overestimates recall, so a build checks the graph
    before the sampled members join it; a grown graph is rechecked with queries from outside
    it, or rebuilt when too few are outside (the shared graph)."""
    checks: list[tuple[HnswGraph, set[int], set[int]]] = []
    calibrate = HnswGraph.calibrate

    def recording(graph: HnswGraph, labels: np.ndarray, *args: Any, **kwargs: Any) -> None:
        queries = kwargs["queries"]
        checks.append((graph, set(graph.members), set(np.asarray(queries[0]).tolist())))
        calibrate(graph, labels, *args, **kwargs)

    monkeypatch.setattr(HnswGraph, "calibrate", recording)
    world.create()
    collection = built(world)
    host = collection.graphs

    def assert_checked_from_outside(graph: HnswGraph, what: str) -> None:
        mine = [(members, queries) for g, members, queries in checks if g is graph]
        assert mine, f"{what}: never checked"
        members, queries = mine[-1]
        assert len(queries) >= recall.SAMPLES // 2, what
        assert not members & queries, f"{what}: {len(members & queries)} member queries"

    shared, big_graph = host.shared(), host.tenant(big_number(world))
    assert shared is not None and big_graph is not None
    assert_checked_from_outside(shared, "shared graph built")
    assert_checked_from_outside(big_graph, "big's graph built")
    live = collection.arena.live_labels()
    assert shared.members == BitMap(live)  # the held-out queries joined after the check
    assert len(big_graph.members) == len(world.readable("big"))

    # big doubles (1,608 -> 3,308 of 10,700 points: most sampled queries are outside its
    # graph, so it is rechecked in place); the shared graph more than triples: rebuilt.
    builds = host.builds
    world.upsert("big", world.new_ids(1700), world.sample(1700))
    for tenant in SMALL:
        world.upsert(tenant, world.new_ids(375), world.sample(375))
    assert host.wait_idle(120)
    assert host.builds == builds + 1
    assert host.tenant(big_number(world)) is big_graph
    assert big_graph.checked_size == len(big_graph.members) == 3308
    assert_checked_from_outside(big_graph, "big's graph rechecked")
    rebuilt = host.shared()
    assert rebuilt is not None and rebuilt is not shared
    assert rebuilt.checked_size == len(rebuilt.members) == 10_700
    assert_checked_from_outside(rebuilt, "shared graph rebuilt")
    world.assert_all_right(world.sample(3), "after the recheck and the rebuild")


def test_a_rebuild_due_never_pre_empts_a_demotion(world: World) -> None:
    """A tenant graph marked for a rebuild (it had doubled) that then shrinks below half the
    threshold is demoted, not rebuilt. The indexer is stopped so that the test decides when
    `_due` runs."""
    world.create(graph_rebuild_tombstones=0.9)
    collection = built(world)
    host = collection.graphs
    number = big_number(world)
    host.stop(persist=False)
    world.delete("big", world.owned("big")[:900])  # 1,608 -> 708 readable, below 750
    host._rebuild_due.add(number)
    host._tenants_checked = 0.0  # the once-a-second scan of tenants is due
    with collection.read_lock():
        assert host._due() is None
    assert host.tenant(number) is None, "demoted"
    assert number not in host._rebuild_due


# -- persistence ---------------------------------------------------------------------------------


def test_restart_restores_graphs_without_rebuilding(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with app_client(data_dir) as client:
        world = World(client).create()
        collection = built(world)
        # Writes after the builds: the snapshot taken at shutdown holds them.
        world.upsert("big", world.owned("big")[:100], world.sample(100))
        world.delete("big", world.owned("big")[100:150])
        world.grant("t01", world.owned("t01")[1], "big")
        world.upsert("t09", world.new_ids(20), world.sample(20), [["big"]] * 20)
        assert collection.graphs.wait_idle(60)
        queries = world.sample(6)
        before = {
            (tenant, strategy): world.assert_right(tenant, queries, strategy, "before")
            for tenant, strategy in (
                ("big", "tenant_hnsw"),
                ("big", "shared_hnsw"),
                ("t04", "shared_hnsw"),
            )
        }
        state = world.graphs()
        number = big_number(world)
    directory = graph_dir(data_dir)
    assert sorted(p.name for p in directory.glob("*.graph")) == sorted(
        ["shared.graph", f"t{number}.graph"]
    )

    with app_client(data_dir) as client:
        world.client = client
        collection = collection_of(client)
        assert collection.graphs.builds == 0
        assert world.graphs() == state
        for (tenant, strategy), answers in before.items():
            for query, answer in zip(queries, answers, strict=True):
                again = world.answer(tenant, query, strategy=strategy, ef=HIGH_EF)
                assert again["results"] == answer["results"], (tenant, strategy)
                assert again["plan"]["strategy"] == strategy
        assert collection.graphs.wait_idle(60)
        assert collection.graphs.builds == 0
        world.assert_all_right(queries, "after the restart")


def rewrite_snapshot(path: Path, seq_offset: int = 0, format_offset: int = 0) -> None:
    """Rewrite a snapshot with valid checksums but another `seq` or graph format version."""
    loaded = graph_files.load(path)
    assert loaded is not None
    seq, payload, pending = loaded
    state, members, tombstones = pickle.loads(payload)
    forged = pickle.dumps(((state[0] + format_offset, *state[1:]), members, tombstones))
    graph_files.save(path, seq + seq_offset, forged, pending)


def test_damaged_graph_files_are_rebuilt(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with app_client(data_dir) as client:
        world = World(client).create()
        built(world)
        queries = world.sample(4)
        world.assert_all_right(queries, "before")
        number = big_number(world)
    directory = graph_dir(data_dir)
    shared, tenant = directory / "shared.graph", directory / f"t{number}.graph"

    def reopen(rebuilt: int, what: str) -> None:
        with app_client(data_dir) as client:
            world.client = client
            host = collection_of(client).graphs
            assert host.wait_idle(60)
            assert host.builds == rebuilt, what
            world.assert_all_right(queries, what)
        assert graph_files.load(shared) is not None  # rebuilt graphs are persisted
        assert graph_files.load(tenant) is not None

    # Truncated: the shared graph is rebuilt, big's is loaded.
    with open(shared, "r+b") as out:
        out.truncate(shared.stat().st_size // 2)
    reopen(1, "truncated shared graph")

    # A flipped byte (checksum) in big's graph, an empty shared file: both rebuilt.
    raw = bytearray(tenant.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    tenant.write_bytes(bytes(raw))
    shared.write_bytes(b"")
    reopen(2, "flipped byte, empty file")

    # Sound files that cannot be used: a graph format from another version, and a snapshot
    # newer than every oplog record (graph files from another moment than the store).
    rewrite_snapshot(shared, format_offset=1)
    rewrite_snapshot(tenant, seq_offset=1000)
    reopen(2, "another format, a snapshot from the future")

    # And untouched files load as they are.
    reopen(0, "sound files")


# -- crash recovery with a real server -----------------------------------------------------------


def wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    """Poll a server-side condition (the HTTP process offers no wait_idle)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def file_states(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {
        path.name: (path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(directory.glob("*.graph"))
    }


def idle(world: World) -> bool:
    graphs = world.graphs()
    return (
        graphs["shared_graph"]
        and graphs["tenant_graphs"] == 1
        and graphs["pending"] == 0
        and not graphs["building"]
    )


@pytest.mark.slow
def test_sigkill_after_writes_recovers_graphs_from_snapshot_and_oplog(tmp_path: Path) -> None:
    """Build and persist graphs; many small writes and a clean stop (which trims the oplog);
    restart, more writes, SIGKILL; restart: the snapshots plus the replayed oplog answer
    exactly as the points say, and no graph is rebuilt."""
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir).start()
    try:
        with server.client() as client:
            world = World(client).create()
            load(world)
            wait_for(lambda: idle(world), "the graphs")
            wait_for(lambda: len(list((data_dir / "graphs").glob("c*/*.graph"))) == 2, "files")
            queries = world.sample(4)
            world.assert_all_right(queries, "built")
            # 300 one-point writes: enough oplog records for the clean stop to trim them.
            big_ids = world.owned("big")
            for pid in big_ids[:300]:
                world.upsert("big", [pid], world.sample(1))
        assert server.stop() == 0

        server.start()
        directory = graph_dir(data_dir)
        with server.client() as client:
            world.client = client
            wait_for(lambda: idle(world), "the restored graphs")
            world.assert_all_right(queries, "after the clean restart")
            files = file_states(directory)
            # Writes the snapshots do not hold; the indexer applies them in memory only.
            world.upsert("big", big_ids[300:400], world.sample(100))  # moved
            world.upsert("big", [big_ids[400]], queries[0][None, :] * 1.001)
            world.upsert("big", world.new_ids(40), world.sample(40))
            world.delete("big", big_ids[500:560])
            world.upsert("t02", world.new_ids(25), world.sample(25), [["big"]] * 25)
            world.grant("t03", world.owned("t03")[1], "big")
            world.revoke("t03", world.owned("t03")[0], "big")  # shared at load (i % 8 == 0)
            world.upsert("t04", world.owned("t04")[:30], world.sample(30))
            wait_for(lambda: idle(world), "the indexer to apply the writes")
            assert file_states(directory) == files, "a snapshot was written: no replay to test"
        server.kill()
        log_before = server.log_path.read_text()

        server.start()
        with server.client() as client:
            world.client = client
            # Immediately: pending labels (replayed from the oplog) are scanned exactly.
            world.assert_all_right(queries, "right after the crash")
            assert keys_of(world.answer("big", queries[0], strategy="tenant_hnsw"))[0] == (
                "big",
                big_ids[400],
            )
            wait_for(lambda: idle(world), "the replayed labels")
            world.assert_all_right(queries, "after the replay")
            info = world.info()
            assert info["points"] == len(world.vectors)
        log_after = server.log_path.read_text()[len(log_before) :]
        assert "built over" not in log_after, "a graph was rebuilt after the crash"
        assert file_states(directory) == files
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
