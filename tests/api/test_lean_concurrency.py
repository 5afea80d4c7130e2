"""Concurrent queries through the lean lane answer exactly as the same queries one at a time.

The lane (api/lean.py) runs a query inline on the event loop and a batch on its own thread
pool (`LeanLane._pool`, through `loop.run_in_executor` with a copy of the request's context),
so a batch's queries run beside the loop's. Shared state touched off the loop (the collection
under its read lock, the planner, the request id) could then be seen half-way, and a wrong
answer would look like any other. The in-process TestClient runs the app on one event loop in
a portal thread, so requests sent from several Python threads are in flight there together,
as with a real server under load.

The set-up: a 16-d cosine collection of a few hundred points in six clusters, owned by three
tenants, a quarter of them shared with the other two. About 40 query requests (explain on,
attributes included, some filtered) go first one at a time, then several rounds at once from
8 threads; every concurrent answer must equal the sequential answer to the same request (ids,
owners, attributes, distances within 1e-6, the plan's strategy, choice and candidates), carry
the request id it was sent with, and a counting wrapper around the lane's pool records that
no single query went to the pool. A second test holds a batch query in flight on the pool
(with its request id there) and checks that queries sent meanwhile are answered, inline and
alike, while it waits.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.lean import LeanLane
from api.routes.queries import run_batch
from server.logs import REQUEST_ID
from tests.api.helpers import create_collection, points_url, tenant_url
from tests.support import app_client

C = "clusters"
DIM = 16
TENANTS = ("acme", "globex", "initech")
CLUSTERS = 6
N_POINTS = 360
THREADS = 8
ROUNDS = 3
SCHEMA = {"cluster": "integer", "tag": "keyword"}


@dataclasses.dataclass(frozen=True)
class QueryCase:
    tenant: str
    body: dict[str, Any]


class CountingPool:
    """Stands in for `LeanLane._pool`: counts `submit` calls and records the request id each
    submitted function sees where it runs (the lane submits `context.run, fn, *args`: the
    id must come along in the copied context); delegates everything else."""

    def __init__(self, pool: concurrent.futures.Executor):
        self.pool = pool
        self.submits = 0
        self.request_ids: list[str | None] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.submits += 1
        if args and callable(args[0]):
            inner = args[0]

            def observed(*inner_args: Any) -> Any:
                with self._lock:
                    self.request_ids.append(REQUEST_ID.get())
                return inner(*inner_args)

            args = (observed, *args[1:])
        return self.pool.submit(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


def find_lane(client: TestClient) -> LeanLane:
    """The app's LeanLane (`ShoalApp.lean`)."""
    lane = client.app.lean  # type: ignore[attr-defined]
    assert isinstance(lane, LeanLane), "the app has no lean lane"
    return lane


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path / "data") as test_client:
        load(test_client)
        yield test_client


@pytest.fixture
def pool(client: TestClient) -> Iterator[CountingPool]:
    lane = find_lane(client)
    real = lane._pool
    counting = CountingPool(real)
    lane._pool = counting  # type: ignore[assignment]
    try:
        yield counting
    finally:
        lane._pool = real


@dataclasses.dataclass
class InFlight:
    """Lane requests in flight on the event loop now, and the most at once since `reset`."""

    now: int = 0
    peak: int = 0

    def reset(self) -> None:
        self.peak = self.now


@pytest.fixture
def in_flight(monkeypatch: pytest.MonkeyPatch) -> InFlight:
    """Counts requests inside `LeanLane.__call__` (all on the event loop's thread)."""
    counter = InFlight()
    call = LeanLane.__call__

    async def counting(self: LeanLane, scope: Any, receive: Any, send: Any) -> None:
        counter.now += 1
        counter.peak = max(counter.peak, counter.now)
        try:
            await call(self, scope, receive, send)
        finally:
            counter.now -= 1

    monkeypatch.setattr(LeanLane, "__call__", counting)
    return counter


def centers() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((CLUSTERS, DIM)).astype(np.float32)


def load(client: TestClient) -> None:
    """N_POINTS clustered points, round-robin over the tenants; every 4th shared with the
    other two tenants, so each tenant reads points it does not own."""
    create_collection(client, C, dim=DIM, metric="cosine", schema=SCHEMA)
    rng = np.random.default_rng(11)
    owned: dict[str, list[dict[str, Any]]] = {tenant: [] for tenant in TENANTS}
    for i in range(N_POINTS):
        cluster = i % CLUSTERS
        owner = TENANTS[i % len(TENANTS)]
        vector = centers()[cluster] + 0.25 * rng.standard_normal(DIM).astype(np.float32)
        point: dict[str, Any] = {
            "id": f"p{i:03d}",
            "vector": vector.tolist(),
            "attributes": {"cluster": cluster, "tag": f"t{i % 5}"},
        }
        if i % 4 == 0:
            point["shared_with"] = [t for t in TENANTS if t != owner]
        owned[owner].append(point)
    for tenant, points in owned.items():
        response = client.put(points_url(C, tenant), json={"points": points})
        assert response.status_code == 200, response.text
        assert response.json()["created"] == len(points)


def query_cases() -> list[QueryCase]:
    """42 queries: near each cluster centre, per tenant, with several `k` and filters."""
    rng = np.random.default_rng(3)
    filters: list[dict[str, Any] | None] = [None, None, {"tag": "t1"}, {"cluster": {"$gte": 3}}]
    cases = []
    for n in range(42):
        tenant = TENANTS[n % len(TENANTS)]
        vector = centers()[n % CLUSTERS] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        body: dict[str, Any] = {
            "vector": vector.tolist(),
            "k": (5, 10, 25)[n % 3],
            "explain": True,
            "include": ["attributes"],
        }
        if (flt := filters[n % len(filters)]) is not None:
            body["filter"] = flt
        cases.append(QueryCase(tenant, body))
    return cases


def send(client: TestClient, case: QueryCase, request_id: str) -> dict[str, Any]:
    response = client.post(
        f"{tenant_url(C, case.tenant)}/query",
        json=case.body,
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    return response.json()


def assert_same_answer(got: dict[str, Any], expected: dict[str, Any], label: str) -> None:
    ids = [(hit["id"], hit["owner"]) for hit in got["results"]]
    assert ids == [(hit["id"], hit["owner"]) for hit in expected["results"]], label
    for hit, want in zip(got["results"], expected["results"], strict=True):
        assert abs(hit["distance"] - want["distance"]) <= 1e-6, (label, hit, want)
        assert hit["attributes"] == want["attributes"], (label, hit, want)
    for key in ("strategy", "chosen", "fallback", "candidates"):
        assert got["plan"][key] == expected["plan"][key], (label, key, got["plan"])


def sequential_answers(client: TestClient, cases: list[QueryCase]) -> list[dict[str, Any]]:
    return [send(client, case, f"seq-{n}") for n, case in enumerate(cases)]


def test_the_sequential_answers_are_meaningful(client: TestClient) -> None:
    """The baseline itself: full results, nearest first, filters and sharing applied."""
    cases = query_cases()
    answers = sequential_answers(client, cases)
    for case, answer in zip(cases, answers, strict=True):
        results = answer["results"]
        assert len(results) == case.body["k"], answer
        distances = [hit["distance"] for hit in results]
        assert distances == sorted(distances)
        flt = case.body.get("filter")
        for hit in results:
            number = int(hit["id"][1:])
            assert hit["owner"] == TENANTS[number % len(TENANTS)]
            assert hit["owner"] == case.tenant or number % 4 == 0  # its own, or shared
            if flt == {"tag": "t1"}:
                assert hit["attributes"]["tag"] == "t1"
            elif flt is not None:
                assert hit["attributes"]["cluster"] >= 3
        assert answer["plan"]["candidates"] > 0
    shared = [
        hit
        for answer, case in zip(answers, cases, strict=True)
        for hit in answer["results"]
        if hit["owner"] != case.tenant
    ]
    assert shared, "no query returned a point shared with its tenant"


def test_concurrent_queries_answer_as_sequential_ones_inline(
    client: TestClient, pool: CountingPool, in_flight: InFlight
) -> None:
    cases = query_cases()
    in_flight.reset()
    expected = sequential_answers(client, cases)
    assert pool.submits == 0, "a query alone must run inline, not on the pool"
    expected_again = sequential_answers(client, cases)
    for n, (again, first) in enumerate(zip(expected_again, expected, strict=True)):
        assert_same_answer(again, first, f"sequential repeat of query {n}")
    assert pool.submits == 0
    assert in_flight.peak == 1

    in_flight.reset()

    order = list(range(len(cases)))
    with concurrent.futures.ThreadPoolExecutor(THREADS) as executor:
        for round_ in range(ROUNDS):
            random.Random(round_).shuffle(order)
            futures = {
                n: executor.submit(send, client, cases[n], f"conc-{round_}-{n}") for n in order
            }
            for n, future in futures.items():
                assert_same_answer(future.result(), expected[n], f"round {round_}, query {n}")
    # The premise: the threads' requests really were in the lane together.
    assert in_flight.peak > 1, in_flight
    assert pool.submits == 0, "single queries run inline on the event loop"


def test_a_batch_runs_on_the_pool_while_queries_are_answered_alike(
    client: TestClient, pool: CountingPool
) -> None:
    """A batch query runs on the lane's pool (with its request id there) and is held until
    released: every query sent meanwhile is answered inline, alike, while it waits."""
    cases = query_cases()
    expected = sequential_answers(client, cases)
    assert pool.submits == 0

    lane = find_lane(client)
    lanes = lane.lanes["POST"]
    [index] = [i for i, entry in enumerate(lanes) if entry.route.name == "query_batch"]
    started, release = threading.Event(), threading.Event()

    def held_batch(request: Any, collection: Any, tenant: str) -> dict[str, Any]:
        started.set()
        assert release.wait(30), "the held batch was never released"
        return run_batch(request, collection, tenant)

    original = lanes[index]
    lanes[index] = dataclasses.replace(original, run=held_batch)
    try:
        with concurrent.futures.ThreadPoolExecutor(THREADS + 1) as executor:
            try:
                batch_body = {"queries": [cases[0].body, cases[3].body]}
                batch = executor.submit(
                    client.post,
                    f"{tenant_url(C, cases[0].tenant)}/query/batch",
                    json=batch_body,
                    headers={"x-request-id": "held-batch"},
                )
                assert started.wait(10), "the batch query did not start"
                assert pool.submits == 1 and pool.request_ids == ["held-batch"], pool.request_ids
                futures = {
                    n: executor.submit(send, client, case, f"beside-{n}")
                    for n, case in enumerate(cases)
                }
                for n, future in futures.items():
                    assert_same_answer(future.result(timeout=30), expected[n], f"query {n}")
                assert pool.submits == 1, "queries run inline, beside the held batch"
            finally:
                release.set()  # before the executor waits for the batch's thread
            response = batch.result(timeout=30)
    finally:
        lanes[index] = original
    assert response.status_code == 200, response.text
    first, second = response.json()["queries"]
    assert_same_answer(first, expected[0], "batch query 0")
    assert_same_answer(second, expected[3], "batch query 1")
