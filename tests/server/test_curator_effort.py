"""The Curator's recall check on a graph tenant picks, per selectivity band, the least of
`ef` x 1, 2, 4 that reaches the check's target, and the planner runs the Curator with that
effort in that band (`server.graph_host.GraphHost._check_curator`, `curator_effort`).

Collection: 2,400 points of 24 dimensions in gaussian clusters (cosine); `big` owns 1,600 and
gets its own graph (threshold 1,500); the Curator trains at 1,000 points. The check's target
is patched to make the outcome certain: unreachable (every band ends at 4x, flagged below
0.95 only if it measured so) and trivial (every band at 1x).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index import recall
from server import graph_host, search
from server.collection import Collection
from tests.support import app_client

NAME = "effort"
DIM = 24
SETTINGS: dict[str, Any] = {
    "shared_graph_min_points": 1_000_000,
    "tenant_graph_min_points": 1500,
    "curator_min_points": 1000,
    "curator_min_tenant_points": 100,
    "ef": 32,
}


def _load(client: Any) -> Collection:
    body = {"name": NAME, "dim": DIM, "metric": "cosine", "index": SETTINGS}
    assert client.post("/v1/collections", json=body).status_code == 201
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(10, DIM)) * 3
    for owner, n in (("big", 1600), ("small", 800)):
        vectors = centres[rng.integers(10, size=n)] + rng.normal(size=(n, DIM))
        points = [{"id": f"{owner}{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
        for start in range(0, n, 500):
            url = f"/v1/collections/{NAME}/tenants/{owner}/points"
            response = client.put(url, json={"points": points[start : start + 500]})
            assert response.status_code == 200, response.text
    collection: Collection = client.app.state.database.collection(NAME)
    assert collection.graphs.wait_idle(120)
    assert collection.curator.curator is not None
    return collection


@pytest.mark.parametrize(
    ("target", "multiple"), [(1.01, 4), (0.0, 1)], ids=["unreachable", "trivial"]
)
def test_each_band_gets_the_least_effort_that_reaches_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: float, multiple: int
) -> None:
    monkeypatch.setattr(graph_host, "_CURATOR_CHECK_TARGET", target)
    with app_client(tmp_path / "data") as client:
        collection = _load(client)
        host = collection.graphs
        big = collection.tenants.number_of["big"]
        assert host.tenant(big) is not None, "big should have its own graph"
        checks = host.curator_checks[big]
        assert set(checks) == set(recall.BANDS)
        for band, (effort, measured) in checks.items():
            assert effort == SETTINGS["ef"] * multiple, (band, effort)
            assert 0.0 <= measured <= 1.0
        # The planner asks for that effort, and trusts the band only if it kept 0.95.
        for band, (effort, measured) in checks.items():
            selectivity = band * 0.99
            assert host.curator_effort(big, selectivity) == (effort, measured >= recall.TARGET)
        small = collection.tenants.number_of["small"]
        assert host.curator_effort(small, 0.5) == (0, True)  # no graph: not checked

        scope = search.Scope(
            collection.tenants.readable[big], len(collection.tenants.readable[big]), big
        )
        situation = search._situation(collection, scope, 10, SETTINGS["ef"], explain=False)
        assert situation.curator_ef_floor == checks[1.0][0]
