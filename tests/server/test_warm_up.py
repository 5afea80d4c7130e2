"""The search kernels are compiled while the server starts, with the types queries use.

numba compiles `index.kernels.scan_exact` and `curator_search` (each with the shortlist scan
they share inside, or loads them from its cache) on the first call in a process, 150-200 ms
that the first query after every start would pay. `Database.open` calls
`index.arena.warm_up` and `index.curator.warm_up`; if a warm-up passed other types than a
query does (an int32 label array, a strided query row), numba would compile another version
at that query, and the stall would be back. A fresh
interpreter opens a real database, runs real tenant queries (exact scans, the Curator with
and without a filter, a batch) and must find no version compiled after the start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from index import arena
from server.database import Database
from server.model import PointInput
from server.settings import Settings
from tests.support import REPO

SCRIPT = """
import sys
import time
from pathlib import Path
from index.kernels import curator_search, scan_exact
from server.database import Database
from server.model import PointInput
from server.settings import Settings

def compiled():
    return len(scan_exact.signatures), len(curator_search.signatures)

database = Database(Settings(data_dir=Path(sys.argv[1])))
database.open()
print("after open", *compiled())
index = {"curator_min_points": 100, "curator_min_tenant_points": 50}
database.create_collection("docs", 8, "cosine", {"n": "integer"}, index)
collection = database.collection("docs")
points = [
    PointInput(f"p{i}", [float(i % 7 + 1), 1.0, 0, float(i % 3), 0, 0, 0, float(i)], {"n": i})
    for i in range(300)
]
collection.upsert("acme", points[:290])
collection.upsert("small", points[290:])
deadline = time.monotonic() + 60
while collection.curator.curator is None:
    assert time.monotonic() < deadline, "the Curator was not trained"
    time.sleep(0.05)
for query in ([1.0] * 8, [0.5, 2, 0, 0, 1, 0, 0, 3]):
    [exact] = collection.query("small", [query], 5)
    assert exact.plan.strategy == "exact" and len(exact.hits) == 5, exact.plan
    for raw_filter in (None, {"n": {"$lt": 150}}):
        [top] = collection.query("acme", [query], 5, strategy="curator", raw_filter=raw_filter)
        assert top.plan.strategy == "curator" and len(top.hits) == 5, top.plan
collection.query("small", [[1.0] * 8, [2.0] * 8], 3)  # a batch of two: scanned one by one
print("after queries", *compiled())
database.close()
"""


def test_queries_use_the_kernel_compiled_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # What matters is that queries add no version to what the start compiled or loaded.
    opened, queried = (line.split()[-2:] for line in done.stdout.split("\n")[:2])
    assert opened == queried and min(map(int, opened)) >= 1, done.stdout


def test_a_failed_warm_up_is_logged_and_recovery_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The warm-up is an optimisation: numba failing to write its cache (a full or read-only
    cache volume) must not keep the server from serving; the first query compiles instead."""

    def cache_full() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(arena, "warm_up", cache_full)
    database = Database(Settings(data_dir=tmp_path / "data"))
    with caplog.at_level(logging.WARNING, logger="shoal.database"):
        database.open()
    try:
        assert database.ready and database.failure is None
        [warning] = [r for r in caplog.records if r.name == "shoal.database"]
        assert "search kernels" in warning.getMessage() and warning.exc_info is not None
        database.create_collection("docs", 2, "l2")
        collection = database.collection("docs")
        collection.upsert("acme", [PointInput("a", [1.0, 0.0]), PointInput("b", [0.0, 1.0])])
        [result] = collection.query("acme", [[1.0, 0.1]], 1)
        assert [hit.point_id for hit in result.hits] == ["a"]
    finally:
        database.close()
