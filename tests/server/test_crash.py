"""Crash durability: SIGKILL a real `shoal serve` under concurrent writers, restart, check.

Each writer thread owns its tenants (no two threads write the same tenant) and keeps a model
of what the server acknowledged (HTTP 200). The one request a thread has in flight when the
server dies may or may not have landed; after the restart the test reads its points back and
requires it to be applied entirely or not at all, then folds the outcome into the model.
Several kill points on one data directory, so state (and the WAL) accumulates across crashes.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from tests.support import ServerProcess

pytestmark = pytest.mark.slow

COLLECTION = "crash"
DIM = 16
SCHEMA = {"n": "integer", "tag": "keyword"}
KILL_AFTER_S = (0.3, 0.8, 1.5, 2.5, 1.1)
WRITERS = 4


def seg(name: str) -> str:
    return quote(name, safe="")


def points_url(tenant: str) -> str:
    return f"/v1/collections/{COLLECTION}/tenants/{seg(tenant)}/points"


@dataclass(frozen=True)
class State:
    """A point as the owner sees it: exact float32 bytes, attributes, sorted grantees."""

    vector: bytes
    attributes: dict[str, Any]
    shared_with: tuple[str, ...]

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> State:
        vector = np.asarray(body["vector"], dtype=np.float32).tobytes()
        return cls(vector, body["attributes"], tuple(sorted(body.get("shared_with") or ())))


@dataclass
class Op:
    """A write whose outcome is unknown: for each id, the state before and after (None: absent)."""

    kind: str
    tenant: str
    changes: dict[str, tuple[State | None, State | None]]
    new_tenants: set[str]


@dataclass
class Model:
    index: int
    tenants_owned: list[str]
    points: dict[str, dict[str, State]] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)  # tenants known to exist
    deleted: set[tuple[str, str]] = field(default_factory=set)
    pending: Op | None = None
    acked: dict[str, int] = field(default_factory=lambda: {"upsert": 0, "delete": 0, "patch": 0})
    errors: list[str] = field(default_factory=list)
    next_id: int = 0

    def apply(self, op: Op) -> None:
        owned = self.points.setdefault(op.tenant, {})
        for point_id, (_, new) in op.changes.items():
            if new is None:
                owned.pop(point_id, None)
                self.deleted.add((op.tenant, point_id))
            else:
                owned[point_id] = new
                self.deleted.discard((op.tenant, point_id))
        self.tenants |= op.new_tenants


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class Writer(threading.Thread):
    """Loops upsert / delete / patch against its own tenants until a request fails."""

    def __init__(self, model: Model, url: str, seed: int):
        super().__init__(name=f"writer-{model.index}", daemon=True)
        self.model = model
        self.url = url
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while True:
                kind = self.rng.choices(["upsert", "delete", "patch"], weights=[5, 2, 2])[0]
                tenant = self.rng.choice(self.model.tenants_owned)
                if kind != "upsert" and not self.model.points.get(tenant):
                    kind = "upsert"
                try:
                    getattr(self, kind)(client, tenant)
                except httpx.TransportError:
                    return  # the server died; `model.pending` is the request in flight
                except Exception as exc:  # an assertion on a 200 response, or a bad status
                    self.model.errors.append(f"{kind} on {tenant}: {exc!r}")
                    return

    def _new_id(self) -> str:
        self.model.next_id += 1
        number = self.model.next_id
        return f"ñ-{number}" if number % 7 == 0 else f"w{self.model.index}-p{number}"

    def upsert(self, client: httpx.Client, tenant: str) -> None:
        model, rng = self.model, self.rng
        owned = model.points.get(tenant, {})
        size = rng.randint(1, 50)
        reuse = rng.sample(sorted(owned), min(len(owned), rng.randint(0, size // 2)))
        ids = reuse + [self._new_id() for _ in range(size - len(reuse))]
        vectors = self.np_rng.standard_normal((len(ids), DIM)).astype(np.float32)
        others = [t for t in model.tenants_owned if t != tenant]
        body, changes, new_tenants = [], {}, {tenant} - model.tenants
        for point_id, vector in zip(ids, vectors, strict=True):
            attributes = {"n": rng.randint(-(2**40), 2**40), "tag": rng.choice("abc"), "w": 1}
            point: dict[str, Any] = {"id": point_id, "vector": vector.tolist()}
            point["attributes"] = attributes
            old = owned.get(point_id)
            if rng.random() < 0.3:
                shared = rng.sample(others, rng.randint(0, 2))
                point["shared_with"] = shared
                new_tenants |= set(shared) - model.tenants
                grantees = tuple(sorted(shared))
            else:
                grantees = old.shared_with if old is not None else ()
            body.append(point)
            changes[point_id] = (old, State(vector.tobytes(), attributes, grantees))
        model.pending = Op("upsert", tenant, changes, new_tenants)
        response = client.put(points_url(tenant), json={"points": body})
        assert response.status_code == 200, response.text
        created = sum(old is None for old, _ in changes.values())
        assert response.json() == {"created": created, "updated": len(ids) - created}
        self._acked("upsert")

    def delete(self, client: httpx.Client, tenant: str) -> None:
        model, rng = self.model, self.rng
        owned = model.points[tenant]
        ids = rng.sample(sorted(owned), min(len(owned), rng.randint(1, 10)))
        changes: dict[str, tuple[State | None, State | None]] = {
            point_id: (owned[point_id], None) for point_id in ids
        }
        missing = [f"missing-{model.next_id}"] if rng.random() < 0.3 else []
        model.pending = Op("delete", tenant, changes, set())
        response = client.post(f"{points_url(tenant)}/delete", json={"ids": ids + missing})
        assert response.status_code == 200, response.text
        assert response.json() == {"deleted": len(ids), "not_found": missing}
        self._acked("delete")

    def patch(self, client: httpx.Client, tenant: str) -> None:
        model, rng = self.model, self.rng
        owned = model.points[tenant]
        point_id = rng.choice(sorted(owned))
        old = owned[point_id]
        model.next_id += 1
        # `n` is fresh (an upsert never draws one this large), so the patch always shows.
        patch = {"n": 2**50 + model.next_id, "tag": rng.choice([None, "p"]), "extra": {"k": 1}}
        new = State(old.vector, merge_patch(old.attributes, patch), old.shared_with)
        model.pending = Op("patch", tenant, {point_id: (old, new)}, set())
        response = client.patch(f"{points_url(tenant)}/{seg(point_id)}", json={"attributes": patch})
        assert response.status_code == 200, response.text
        assert response.json()["attributes"] == new.attributes
        self._acked("patch")

    def _acked(self, kind: str) -> None:
        op = self.model.pending
        assert op is not None
        self.model.apply(op)
        self.model.pending = None
        self.model.acked[kind] += 1


# -- verification -------------------------------------------------------------------------


def fetch(client: httpx.Client, tenant: str, point_id: str) -> State | None:
    response = client.get(f"{points_url(tenant)}/{seg(point_id)}", params={"with_vector": "true"})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return State.from_response(response.json())


def describe(now: State | None, old: State | None, new: State | None) -> str:
    if now is None:
        return "absent"
    parts = []
    for name in ("vector", "attributes", "shared_with"):
        value = getattr(now, name)
        which = [
            label for label, s in (("old", old), ("new", new)) if s and getattr(s, name) == value
        ]
        shown = "<bytes>" if name == "vector" else repr(value)
        parts.append(f"{name}={shown} (matches {'/'.join(which) or 'neither'})")
    return ", ".join(parts)


def resolve_pending(client: httpx.Client, model: Model) -> str:
    """Decide whether the in-flight request landed (entirely or not at all) and record it."""
    op = model.pending
    if op is None:
        return "none"
    model.pending = None
    landed = []
    for point_id, (old, new) in op.changes.items():
        now = fetch(client, op.tenant, point_id)
        if now == new:
            landed.append(True)
        elif now == old:
            landed.append(False)
        else:
            pytest.fail(
                f"{op.kind} in flight on {op.tenant}/{point_id}: the point is neither its old "
                f"nor its new state: {describe(now, old, new)}"
            )
    assert all(landed) or not any(landed), (
        f"{op.kind} batch on {op.tenant} half-applied: {sum(landed)} of {len(landed)} points "
        f"have the new state"
    )
    if all(landed):
        model.apply(op)
        return f"{op.kind} applied"
    return f"{op.kind} not applied"


def scroll_all(client: httpx.Client, tenant: str) -> list[dict[str, Any]]:
    points, cursor = [], None
    while True:
        body: dict[str, Any] = {"limit": 1000, "with_vector": True}
        if cursor is not None:
            body["cursor"] = cursor
        response = client.post(f"{points_url(tenant)}/scroll", json=body)
        assert response.status_code == 200, response.text
        page = response.json()
        points += page["points"]
        cursor = page.get("next_cursor")
        if cursor is None:
            return points


def list_tenants(client: httpx.Client) -> dict[str, dict[str, Any]]:
    tenants, cursor = {}, None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get(f"/v1/collections/{COLLECTION}/tenants", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        tenants.update({t["name"]: t for t in page["tenants"]})
        cursor = page.get("next_cursor")
        if cursor is None:
            return tenants


def verify(client: httpx.Client, models: list[Model], rng: random.Random) -> None:
    """The server holds exactly what the models say: points, vectors, grants, counts, tenants."""
    listed = list_tenants(client)
    all_tenants: set[str] = set()
    total_points = 0
    for model in models:
        all_tenants |= model.tenants
        total_points += sum(len(owned) for owned in model.points.values())
        readable: dict[str, dict[tuple[str, str], State]] = {t: {} for t in model.tenants}
        for owner, owned in model.points.items():
            for point_id, state in owned.items():
                readable[owner][(owner, point_id)] = state
                for grantee in state.shared_with:
                    readable[grantee][(owner, point_id)] = state
        for tenant in model.tenants_owned:
            if tenant not in model.tenants:
                assert tenant not in listed, f"tenant {tenant} exists but no write created it"
                continue
            got: dict[tuple[str, str], State] = {}
            for body in scroll_all(client, tenant):
                key = (body["owner"], body["id"])
                assert key not in got, f"{key} listed twice for {tenant}"
                if body["owner"] == tenant:
                    got[key] = State.from_response(body)
                else:  # a grantee does not see the grant list; compare against the model's
                    expected = readable[tenant].get(key)
                    vector = np.asarray(body["vector"], dtype=np.float32).tobytes()
                    shared = expected.shared_with if expected is not None else ()
                    got[key] = State(vector, body["attributes"], shared)
            expected_points = readable[tenant]
            missing = sorted(set(expected_points) - set(got))
            extra = sorted(set(got) - set(expected_points))
            assert not missing, f"{tenant}: acknowledged points lost: {missing[:10]}"
            assert not extra, f"{tenant}: points that should not exist: {extra[:10]}"
            wrong = [key for key, state in expected_points.items() if got[key] != state]
            assert not wrong, f"{tenant}: points differ from the acknowledged state: {wrong[:10]}"
            count = client.post(f"{points_url(tenant)}/count", json={})
            assert count.status_code == 200, count.text
            assert count.json()["count"] == len(expected_points)
            owned_n = len(model.points.get(tenant, {}))
            assert listed[tenant]["points"] == owned_n, tenant
            assert listed[tenant]["shared_with_it"] == len(expected_points) - owned_n, tenant
        # Point reads (GET with_vector) for a sample of live and deleted points.
        live = [(t, pid) for t, owned in model.points.items() for pid in owned]
        for tenant, point_id in rng.sample(live, min(len(live), 40)):
            assert fetch(client, tenant, point_id) == model.points[tenant][point_id]
        gone = sorted(model.deleted)
        for tenant, point_id in rng.sample(gone, min(len(gone), 40)):
            assert fetch(client, tenant, point_id) is None, f"deleted {tenant}/{point_id} is back"
    ours = {name for name in listed if name.startswith("w")}
    assert ours == all_tenants, "the tenant list differs from the tenants writes created"
    info = client.get(f"/v1/collections/{COLLECTION}").json()
    assert info["points"] == total_points
    assert info["tenants"] == len(all_tenants)


def test_sigkill_under_concurrent_writers_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed {seed}")
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir).start()
    with server.client() as client:
        response = client.post(
            "/v1/collections",
            json={"name": COLLECTION, "dim": DIM, "metric": "cosine", "schema": SCHEMA},
        )
        assert response.status_code == 201, response.text
    models = [
        Model(i, [f"w{i}-a", f"w{i}-b@example.org", f"w{i}-team+ops", f"w{i}-ü"])
        for i in range(WRITERS)
    ]
    started = time.monotonic()
    try:
        for cycle, kill_after in enumerate(KILL_AFTER_S):
            delay = kill_after * rng.uniform(0.8, 1.2)
            before = [dict(m.acked) for m in models]
            writers = [Writer(m, server.url, rng.randrange(2**32)) for m in models]
            for writer in writers:
                writer.start()
            # The delay runs from the first acknowledgement, so a slow start still gets writes.
            deadline = time.monotonic() + 30
            while sum(sum(m.acked.values()) for m in models) == sum(
                sum(b.values()) for b in before
            ):
                assert time.monotonic() < deadline, "no write acknowledged in 30 s"
                assert all(w.is_alive() for w in writers), [m.errors for m in models]
                time.sleep(0.005)
            time.sleep(delay)
            server.kill()
            for writer in writers:
                writer.join(timeout=60)
                assert not writer.is_alive(), f"{writer.name} hangs after the kill"
            for model in models:
                assert not model.errors, model.errors
            done = sum(
                sum(m.acked.values()) - sum(b.values()) for m, b in zip(models, before, strict=True)
            )
            assert done > 0, f"cycle {cycle}: no write was acknowledged before the kill"
            server.start()
            with server.client() as client:
                outcomes = [resolve_pending(client, model) for model in models]
                verify(client, models, rng)
            points = sum(len(o) for m in models for o in m.points.values())
            print(
                f"cycle {cycle}: killed after {delay:.2f} s, {done} writes acked, "
                f"{points} points, in flight: {outcomes}"
            )
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
    assert time.monotonic() - started < 120
