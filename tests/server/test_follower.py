"""Read workers' followers: a follower Database replaying the change feed holds exactly what
the writer holds, whatever the writes (property test over random write sequences).

Writer and follower run in one process on one RocksDB directory (the follower as RocksDB's
secondary instance, as a read worker opens it); after each step the follower catches up and
both are compared: every tenant's points (ids, attributes, vectors, grants), the indexes'
invariants (Curator pairs included), and exact query answers. Writes cover upserts that
re-upsert and share, patches, deletes by id and by filter, grants, revokes, tenant deletion,
schema changes, quotas, keys, and collections created and dropped under one name.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.database import Database
from server.errors import NotFound
from server.follower import Follower, FollowerLost, SharedSequences
from server.model import PointInput
from server.settings import Settings
from storage import store as store_module

DIM = 8
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]


def _state(database: Database) -> dict[str, Any]:
    """Everything a query can see, per collection, in a comparable form."""
    state: dict[str, Any] = {}
    for collection in database.collections():
        collection.check_invariants()
        tenants = collection.tenants
        points = {}
        for number, name in tenants.name_of.items():
            for point_id, label in tenants.ids[number].items():
                points[(name, point_id)] = (
                    collection.points.attributes_json(label),
                    collection.arena.vector(label).tobytes(),
                    sorted(tenants.name_of[g] for g in tenants.grantees(label)),
                )
        readable = {name: len(tenants.readable[n]) for n, name in tenants.name_of.items()}
        state[collection.name] = {
            "config": collection.config.to_json(),
            "points": points,
            "readable": readable,
            "trained": collection.curator.curator is not None,
            "quotas": [
                database.quotas.tenant_quotas(collection.name, t).to_dict() for t in TENANTS
            ],
        }
    state["keys"] = sorted((r.key_id, r.revoked_at) for r in database.keys.list())
    return state


def _answers(database: Database, rng: np.random.Generator) -> list[Any]:
    queries = rng.standard_normal((3, DIM)).astype(np.float32).tolist()
    answers = []
    for collection in database.collections():
        for tenant in TENANTS:
            try:
                results = collection.query(tenant, queries, k=5, exact=True)
            except NotFound:
                answers.append((collection.name, tenant, None))
                continue
            hits = [
                [(h.point_id, h.owner, round(h.distance, 5), h.attributes) for h in r.hits]
                for r in results
            ]
            answers.append((collection.name, tenant, hits))
    return answers


class Writes:
    """Random writes against the writer, each a plausible client call."""

    def __init__(self, database: Database, seed: int):
        self.db = database
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.names = ["docs", "notes"]

    def point(self, i: int, tenant: str) -> PointInput:
        others = [t for t in TENANTS if t != tenant]
        sharing = self.rng.random() < 0.4
        shared = self.rng.sample(others, self.rng.randint(0, 2)) if sharing else None
        vector = self.np_rng.standard_normal(DIM).astype(np.float32).tolist()
        attributes = {"n": self.rng.randint(0, 9), "kind": self.rng.choice(["a", "b"])}
        return PointInput(f"p{i}", vector, attributes, shared)

    def some_id(self, collection: Any, tenant: str) -> str:
        """Mostly a point the tenant owns, sometimes one it does not (a 404 path)."""
        number = collection.tenants.number_of.get(tenant)
        owned = sorted(collection.tenants.ids[number]) if number is not None else []
        if owned and self.rng.random() < 0.85:
            return self.rng.choice(owned)
        return f"p{self.rng.randrange(60)}"

    def step(self) -> str:
        rng = self.rng
        name = rng.choice(self.names)
        try:
            collection = self.db.collection(name)
        except NotFound:
            self.db.create_collection(name, DIM, "cosine", {"n": "integer"}, self._index())
            return f"create {name}"
        tenant = rng.choice(TENANTS)
        roll = rng.random()
        try:
            if roll < 0.45:
                ids = rng.sample(range(60), rng.randint(1, 12))
                collection.upsert(tenant, [self.point(i, tenant) for i in ids])
                return f"upsert {name} {tenant} {len(ids)}"
            if roll < 0.55:
                collection.patch_attributes(tenant, self.some_id(collection, tenant), {"n": None})
                return "patch"
            if roll < 0.63:
                doomed = [self.some_id(collection, tenant) for _ in range(4)]
                collection.delete_points(tenant, doomed)
                return "delete"
            if roll < 0.67:
                collection.delete_matching(tenant, {"n": {"$lt": 3}})
                return "delete by filter"
            if roll < 0.75:
                grantee = rng.choice([t for t in TENANTS if t != tenant])
                collection.grant(tenant, self.some_id(collection, tenant), grantee)
                return "grant"
            if roll < 0.80:
                shared = [
                    (pid, collection.tenants.name_of[g])
                    for number, ids in collection.tenants.ids.items()
                    if collection.tenants.name_of[number] == tenant
                    for pid, label in ids.items()
                    for g in collection.tenants.grantees(label)
                ]
                pid, grantee = rng.choice(shared) if shared else ("p0", "acme")
                collection.revoke(tenant, pid, grantee)
                return "revoke"
            if roll < 0.84:
                collection.delete_tenant(tenant)
                return f"delete tenant {tenant}"
            if roll < 0.87:
                self.db.extend_schema(name, {f"f{rng.randrange(3)}": "keyword"})
                return "schema"
            if roll < 0.90:
                self.db.quotas.set_tenant(collection, tenant, {"max_points": rng.randint(50, 99)})
                return "quota"
            if roll < 0.92:
                collection.ensure_tenant(f"new-{rng.randrange(5)}")
                return "tenant"
            if roll < 0.94:
                self.db.delete_collection(name)
                return f"drop {name}"
            if roll < 0.97:
                self.db.create_key(name, tenant, "read")
                return "key"
            return "nothing"
        except NotFound:
            return "not found"

    def _index(self) -> dict[str, Any]:
        # Small enough that the Curator trains (a `tree` record) during the run.
        return {
            "curator_min_points": 60,
            "training_sample": 100,
            "branching": 4,
            "shared_graph_min_points": 40,
            "tenant_graph_min_points": 30,
        }


@pytest.fixture
def pair(tmp_path: Path):  # type: ignore[no-untyped-def]
    published = SharedSequences(tmp_path / "sequence", workers=1, create=True)
    settings = Settings(data_dir=tmp_path / "db", admin_key="k" * 32, durability="os")
    writer = Database(settings, on_change=published.publish, trim_floor=published.trim_floor)
    writer.open()
    follower_db = Database(settings, follower_dir=tmp_path / "follower")
    follower_db.open()
    follow = follower_db.follow

    def follow_and_check(change: Any) -> None:
        """Every record leaves the indexes consistent (no point in two labels), not only
        the last of a catch-up: queries run between records."""
        follow(change)
        for collection in follower_db.collections():
            collection.check_invariants()

    follower_db.follow = follow_and_check  # type: ignore[method-assign]
    follower = Follower(follower_db, published, slot=0)
    follower.opened()
    yield writer, follower
    follower_db.close()
    writer.close()
    published.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_follower_holds_what_the_writer_holds(pair, seed: int) -> None:  # type: ignore[no-untyped-def]
    writer, follower = pair
    writes = Writes(writer, seed)
    rng = np.random.default_rng(seed)
    done = []
    trained = False
    for step in range(400):
        done.append(writes.step())
        for collection in writer.collections():
            collection.curator.wait_trained(10)
        # Several writes between catch-ups: the store is then ahead of the records replayed
        # (labels freed and reused, tenants deleted and re-created within one run).
        if step % 7 not in (0, 3, 6) and step < 399:
            continue
        follower.catch_up()
        for thread in [t for t in threading.enumerate() if t.name == "schema-index"]:
            thread.join(5)
        state = _state(writer)
        assert _state(follower.database) == state, done[-5:]
        trained = trained or any(c["trained"] for n, c in state.items() if n != "keys")
        query_seed = int(rng.integers(1 << 30))
        expected = _answers(writer, np.random.default_rng(query_seed))
        assert _answers(follower.database, np.random.default_rng(query_seed)) == expected
    kinds = {d.split()[0] for d in done}
    assert {"upsert", "patch", "delete", "grant", "revoke", "create", "drop", "schema"} <= kinds
    assert trained, "no Curator tree was trained and followed during the run"


def test_a_follower_sees_nothing_before_it_catches_up_and_everything_after(pair) -> None:  # type: ignore[no-untyped-def]
    writer, follower = pair
    writer.create_collection("docs", DIM, "l2")
    assert follower.behind
    follower.catch_up()
    assert not follower.behind
    docs = writer.collection("docs")
    docs.upsert("acme", [PointInput("a", [0.0] * DIM)])
    assert follower.database.collection("docs").arena.count == 0
    follower.catch_up()
    assert follower.database.collection("docs").arena.count == 1


def test_a_follower_behind_the_kept_feed_knows_it_is_lost(pair, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    writer, follower = pair
    monkeypatch.setattr(store_module, "CHANGES_MAX", 8)
    monkeypatch.setattr(store_module, "_TRIM_CHANGES_EVERY", 8)
    writer.create_collection("docs", DIM, "l2")
    docs = writer.collection("docs")
    for i in range(20):
        docs.upsert("acme", [PointInput(f"p{i}", [float(i)] * DIM)])
    with pytest.raises(FollowerLost, match="no longer in the feed"):
        follower.catch_up()


def test_the_feed_keeps_what_a_follower_needs_and_no_more(pair, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    writer, follower = pair
    monkeypatch.setattr(store_module, "_TRIM_CHANGES_EVERY", 4)
    writer.create_collection("docs", DIM, "l2")
    docs = writer.collection("docs")
    for i in range(30):  # the follower stays at its opening position meanwhile
        docs.upsert("acme", [PointInput(f"p{i}", [float(i)] * DIM)])
    assert next(writer.store.changes_after(0))[0] == 1  # nothing it needs was trimmed
    follower.catch_up()
    assert follower.database.collection("docs").arena.count == 30
    for i in range(8):
        docs.upsert("acme", [PointInput(f"q{i}", [float(i)] * DIM)])
    first = next(writer.store.changes_after(0))[0]
    assert 1 < first <= follower.database.change_seq + 1  # what it applied went


def test_a_follower_store_refuses_writes(pair) -> None:  # type: ignore[no-untyped-def]
    _, follower = pair
    with pytest.raises(store_module.ReadOnlyStore):
        follower.database.create_collection("docs", DIM, "l2")


def test_a_point_moved_to_a_freed_label_within_one_catch_up(pair) -> None:  # type: ignore[no-untyped-def]
    """Delete y (its label freed), delete x, re-upsert x (into y's old label, the lowest
    free one), then one catch-up: replaying the first record finds x already in y's label
    while x's old label is still live in the follower's memory."""
    writer, follower = pair
    writer.create_collection("docs", DIM, "l2")
    docs = writer.collection("docs")
    docs.upsert("globex", [PointInput("y", [1.0] * DIM)])
    docs.upsert("acme", [PointInput("x", [2.0] * DIM)])
    follower.catch_up()
    assert [docs.tenants.ids[docs.tenants.number_of[t]] for t in ("globex", "acme")] == [
        {"y": 0},
        {"x": 1},
    ]
    docs.delete_points("globex", ["y"])
    docs.delete_points("acme", ["x"])
    docs.upsert("acme", [PointInput("x", [3.0] * DIM)])
    assert docs.tenants.ids[docs.tenants.number_of["acme"]] == {"x": 0}
    follower.catch_up()
    assert _state(follower.database) == _state(writer)
    copy = follower.database.collection("docs")
    assert copy.arena.count == 1 and copy.arena.vector(0).tolist() == [3.0] * DIM


def test_a_follower_takes_the_writers_graphs_and_builds_none(pair) -> None:  # type: ignore[no-untyped-def]
    writer, follower = pair
    index = {"shared_graph_min_points": 40, "tenant_graph_min_points": 30}
    writer.create_collection("docs", DIM, "cosine", index=index)
    docs = writer.collection("docs")
    rng = np.random.default_rng(7)

    def upsert(tenant: str, start: int, n: int) -> None:
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        docs.upsert(
            tenant, [PointInput(f"p{start + i}", v.tolist()) for i, v in enumerate(vectors)]
        )

    upsert("acme", 0, 60)
    upsert("globex", 0, 20)
    assert docs.graphs.wait_idle(30)
    assert set(docs.graphs.graphs) == {"shared", docs.tenants.number_of["acme"]}
    follower.catch_up()
    copy = follower.database.collection("docs")
    assert set(copy.graphs.graphs) == set(docs.graphs.graphs)
    for key, graph in docs.graphs.graphs.items():
        assert copy.graphs.graphs[key].members == graph.members
    upsert("acme", 60, 10)  # after the snapshot: pending on the follower, then applied
    docs.delete_points("acme", ["p0", "p1"])
    follower.catch_up()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(g.pending for g in copy.graphs.graphs.values()):
        time.sleep(0.05)
    assert docs.graphs.wait_idle(30)
    for key, graph in docs.graphs.graphs.items():
        assert copy.graphs.graphs[key].members == graph.members
    assert copy.graphs.builds == 0 and docs.graphs.builds == 2
