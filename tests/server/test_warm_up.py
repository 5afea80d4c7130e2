"""The exact scan's kernel is compiled while the server starts, with the types queries use.

numba compiles `index.kernels.scan_shortlist` (or loads it from its cache) on the first call
in a process, 150-200 ms that the first query after every start would pay. `Database.open`
calls `index.arena.warm_up`; if warm-up passed other types than a query does (an int32 label
array, a strided query row), numba would compile a second version at that query, and the
stall would be back. A fresh interpreter opens a real database, runs real tenant queries
(a small tenant: the planner scans) and must find exactly one compiled version.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO

SCRIPT = """
import sys
from pathlib import Path
from index.kernels import scan_shortlist
from server.database import Database
from server.model import PointInput
from server.settings import Settings

database = Database(Settings(data_dir=Path(sys.argv[1])))
database.open()
print("after open", len(scan_shortlist.signatures))
database.create_collection("docs", 8, "cosine")
collection = database.collection("docs")
points = [PointInput(f"p{i}", [float(i % 7 + 1), 1.0, 0, 0, 0, 0, 0, float(i)]) for i in range(40)]
collection.upsert("acme", points)
for query in ([1.0] * 8, [0.5, 2, 0, 0, 1, 0, 0, 3]):
    [result] = collection.query("acme", [query], 5)
    assert result.plan.strategy == "exact" and len(result.hits) == 5, result.plan
collection.query("acme", [[1.0] * 8, [2.0] * 8], 3)  # a batch of two: scanned one by one
print("after queries", len(scan_shortlist.signatures))
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
    assert done.stdout.split("\n")[:2] == ["after open 1", "after queries 1"], done.stdout
