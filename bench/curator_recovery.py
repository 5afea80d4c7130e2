"""Curator recovery at 100k points: re-insert every pair vs. restoring persisted assignments.

    python -m bench.curator_recovery [--runs 5]

Recovery re-inserts: it routes every label down the persisted tree (`ClusterTree.assign`, one
GEMM per node) and bulk-builds the shortlists (`Curator.insert_many`). Persisting each label's
leaf instead would skip the routing only: the build is the same. This measures both parts on
the Debian points grown to 100,000 (as `bench.restart`), readers = owner + tags, so the
saving persisted assignments could bring is read off directly, side by side, medians of runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from bench.common import code_version, load_debian, machine, median, table
from bench.restart import TOTAL, grow
from index.arena import Metric, VectorArena
from index.cluster_tree import ClusterTree
from index.curator import Curator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    threadpool_limits(1)
    data = load_debian()
    vectors, points = grow(data, TOTAL)
    names: dict[str, int] = {}
    labels, readers = [], []
    for label, point in enumerate(points):
        for tenant in [point["tenant"], *point.get("tags", [])]:
            labels.append(label)
            readers.append(names.setdefault(tenant, len(names)))
    pair_labels, pair_tenants = np.asarray(labels), np.asarray(readers)
    arena = VectorArena(vectors.shape[1], Metric.COSINE, initial_capacity=len(vectors))
    arena.put(np.arange(len(vectors)), vectors)
    sample = vectors[np.random.default_rng(0).choice(len(vectors), 20_000, replace=False)]
    tree = ClusterTree.train(sample, Metric.COSINE, branching=32, depth=2)
    route, build = [], []
    for _ in range(args.runs):
        curator = Curator(tree, arena, max_shortlist=256)
        started = time.perf_counter()
        curator.place(np.arange(len(vectors)))
        routed = time.perf_counter()
        curator.insert_many(pair_labels, pair_tenants)
        built = time.perf_counter()
        route.append(routed - started)
        build.append(built - routed)
    print(machine())
    print(
        f"code {code_version()}; {len(vectors):,} points, {len(pair_labels):,} pairs, "
        f"{len(names):,} tenants, tree of {tree.node_count} nodes; medians of {args.runs} runs"
    )
    rows = [
        ["re-insert (what recovery does)", f"{median(route):.2f}", f"{median(build):.2f}",
         f"{median(route) + median(build):.2f}"],
        ["persisted assignments (not built)", "0 (read with the points)", f"{median(build):.2f}",
         f"{median(build):.2f}"],
    ]  # fmt: skip
    print(table(["recovery of the Curator", "routing s", "shortlist build s", "total s"], rows))


if __name__ == "__main__":
    main()
