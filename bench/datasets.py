"""Multi-tenant workloads for the index benchmarks: points, (label, tenant) read pairs, queries.

Two loaders, both deterministic for a given seed:

- `debian()`: the real set in `../shared/data/debian/` (63,666 x 384, L2-normalised float16,
  used as float32; cosine). The readers of a point are its owner `tenant` and each of its debtags
  `tags`, a tag being a shared tenant named `tag:<tag>` (owners are e-mail slugs, so the two
  namespaces cannot collide). About 1% of the points are held out as queries; a held-out point is
  issued as its owner and as each of its tag tenants, as long as that tenant can read at least
  `k` of the loaded points.
- `synthetic()`: clustered 128-d vectors (L2): 1,000 Gaussian clusters with varied spreads and
  popularity (each a random rank-16 Gaussian plus a little isotropic noise: real embeddings have
  a low intrinsic dimension; the centres are close enough that neighbouring clusters overlap),
  1,000 tenants with Zipf sizes (owners), each tenant's points drawn from a few "home" clusters
  (more homes for bigger tenants), and each point shared with 1-5 other tenants chosen among the
  owner's 8 fixed partner tenants (sharing with locality: a team shares with the same few teams).
  Queries are fresh draws from the same process: a tenant (chosen with probability proportional
  to sqrt(size), so small tenants are well represented), one of its home clusters, a vector from
  that cluster; the query is issued as that tenant, which owns points near it.

Labels are row numbers of `vectors`; tenants are dense int64 ids into `tenant_names`.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from index.arena import Metric

DEBIAN_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "debian"


@dataclass
class Workload:
    name: str
    metric: Metric
    vectors: np.ndarray  # (n, dim) float32, row = label
    pair_labels: np.ndarray  # int64, one (label, tenant) pair per reader (owner first)
    pair_tenants: np.ndarray  # int64
    owners: np.ndarray  # (n,) int64 owner tenant of each point
    tenant_names: list[str]
    queries: np.ndarray  # (q, dim) float32, never loaded
    query_tenants: np.ndarray  # (q,) int64
    description: str

    @property
    def n(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def n_tenants(self) -> int:
        return len(self.tenant_names)

    def tenant_labels(self) -> list[np.ndarray]:
        """Sorted readable labels of every tenant (index = tenant id)."""
        order = np.lexsort((self.pair_labels, self.pair_tenants))
        labels = self.pair_labels[order]
        bounds = np.searchsorted(self.pair_tenants[order], np.arange(self.n_tenants + 1))
        return [labels[bounds[t] : bounds[t + 1]] for t in range(self.n_tenants)]

    def point_readers(self) -> list[np.ndarray]:
        """Tenants that can read each label (owner and grantees)."""
        order = np.argsort(self.pair_labels, kind="stable")
        tenants = self.pair_tenants[order]
        bounds = np.searchsorted(self.pair_labels[order], np.arange(self.n + 1))
        return [tenants[bounds[i] : bounds[i + 1]] for i in range(self.n)]


def _sample_queries(
    rng: np.random.Generator, pools: np.ndarray, tenants: np.ndarray, n_queries: int
) -> tuple[np.ndarray, np.ndarray]:
    pick = rng.choice(len(pools), size=min(n_queries, len(pools)), replace=False)
    pick.sort()
    return pools[pick], tenants[pick]


def debian(
    n_queries: int = 300,
    holdout: float = 0.01,
    subsample: int | None = None,
    k: int = 10,
    seed: int = 0,
    directory: Path = DEBIAN_DIR,
) -> Workload:
    vectors = np.load(directory / "vectors.f16.npy").astype(np.float32)
    with gzip.open(directory / "points.jsonl.gz", "rb") as f:
        points = [orjson.loads(line) for line in f]
    rng = np.random.default_rng(seed)
    rows = np.arange(len(points))
    if subsample is not None and subsample < len(points):
        rows = np.sort(rng.choice(len(points), size=subsample, replace=False))
    held = np.zeros(len(rows), dtype=bool)
    held[rng.choice(len(rows), size=max(1, round(holdout * len(rows))), replace=False)] = True

    names: dict[str, int] = {}

    def tenant_id(name: str) -> int:
        return names.setdefault(name, len(names))

    def readers(p: dict) -> list[int]:
        return [tenant_id(p["tenant"])] + [tenant_id("tag:" + t) for t in p["tags"]]

    pair_labels: list[int] = []
    pair_tenants: list[int] = []
    owners: list[int] = []
    loaded = rows[~held]
    for label, row in enumerate(loaded.tolist()):
        ts = readers(points[row])
        owners.append(ts[0])
        pair_labels.extend([label] * len(ts))
        pair_tenants.extend(ts)
    sizes = np.bincount(np.asarray(pair_tenants), minlength=len(names))
    query_rows: list[int] = []
    query_tenants: list[int] = []
    for row in rows[held].tolist():
        for t in readers(points[row]):
            if t < len(sizes) and sizes[t] >= k:
                query_rows.append(row)
                query_tenants.append(t)
    queries, q_tenants = _sample_queries(
        rng, np.asarray(query_rows), np.asarray(query_tenants, dtype=np.int64), n_queries
    )
    tenant_names = [""] * len(names)
    for name, t in names.items():
        tenant_names[t] = name
    n_candidates = len(query_rows)
    return Workload(
        name="debian",
        metric=Metric.COSINE,
        vectors=np.ascontiguousarray(vectors[loaded]),
        pair_labels=np.asarray(pair_labels, dtype=np.int64),
        pair_tenants=np.asarray(pair_tenants, dtype=np.int64),
        owners=np.asarray(owners, dtype=np.int64),
        tenant_names=tenant_names,
        queries=np.ascontiguousarray(vectors[queries]),
        query_tenants=q_tenants,
        description=(
            f"Debian: {len(loaded):,} points loaded ({int(held.sum())} held out), {len(names):,} "
            f"tenants (owners + tag tenants), {len(pair_labels):,} read pairs; "
            f"{len(q_tenants)} queries sampled from {n_candidates:,} (held-out point, tenant) "
            f"pairs; cosine"
        ),
    )


def _zipf_sizes(n_points: int, n_tenants: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_tenants + 1) ** exponent
    sizes = np.floor(weights / weights.sum() * n_points).astype(np.int64)
    sizes = np.maximum(sizes, 1)
    sizes[0] += n_points - sizes.sum()  # the remainder goes to the largest tenant
    return sizes


def synthetic(
    n: int = 200_000,
    dim: int = 128,
    n_clusters: int = 1000,
    n_tenants: int = 1000,
    zipf: float = 1.0,
    share_min: int = 1,
    share_max: int = 5,
    partners: int = 8,
    rank: int = 16,
    center_scale: float = 0.3,
    isotropic: float = 0.1,
    n_queries: int = 300,
    k: int = 10,
    seed: int = 0,
) -> Workload:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, center_scale, size=(n_clusters, dim)).astype(np.float32)
    spreads = rng.uniform(0.25, 0.9, size=n_clusters).astype(np.float32)
    popularity = rng.lognormal(0.0, 1.0, size=n_clusters)
    popularity /= popularity.sum()

    sizes = _zipf_sizes(n, n_tenants, zipf)
    homes = [
        rng.choice(n_clusters, size=int(min(40, 1 + size // 500)), replace=False, p=popularity)
        for size in sizes
    ]
    owners = np.repeat(np.arange(n_tenants, dtype=np.int64), sizes)
    clusters = np.concatenate(
        [
            home[rng.integers(0, len(home), size=size)]
            for home, size in zip(homes, sizes, strict=True)
        ]
    )
    perm = rng.permutation(n)  # labels are not grouped by tenant
    owners, clusters = owners[perm], clusters[perm]

    # Each cluster: a Gaussian with a random rank-`rank` covariance plus a small isotropic part
    # (real embeddings have a low intrinsic dimension; isotropic 128-d noise would not).
    bases = rng.standard_normal(size=(n_clusters, rank, dim), dtype=np.float32) / np.sqrt(rank)

    def draw(cluster_ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(cluster_ids), dim), dtype=np.float32)
        order = np.argsort(cluster_ids, kind="stable")
        bounds = np.searchsorted(cluster_ids[order], np.arange(n_clusters + 1))
        for c in np.flatnonzero(np.diff(bounds)).tolist():
            rows = order[bounds[c] : bounds[c + 1]]
            z = rng.standard_normal(size=(len(rows), rank), dtype=np.float32)
            iso = rng.standard_normal(size=(len(rows), dim), dtype=np.float32)
            out[rows] = centers[c] + spreads[c] * (z @ bases[c] + isotropic * iso)
        return out

    vectors = draw(clusters)

    partner_of = np.stack(
        [
            rng.choice(np.delete(np.arange(n_tenants), t), size=partners, replace=False)
            for t in range(n_tenants)
        ]
    )
    degree = rng.integers(share_min, share_max + 1, size=n)
    pair_labels = [np.arange(n, dtype=np.int64)]
    pair_tenants = [owners]
    for d in range(share_min, share_max + 1):
        labels = np.flatnonzero(degree == d)
        # d distinct partners per point: the first d of a random permutation of the 8.
        keys = rng.random((len(labels), partners)).argsort(axis=1)[:, :d]
        chosen = np.take_along_axis(partner_of[owners[labels]], keys, axis=1)
        pair_labels.append(np.repeat(labels, d))
        pair_tenants.append(chosen.reshape(-1).astype(np.int64))
    pair_labels_a = np.concatenate(pair_labels)
    pair_tenants_a = np.concatenate(pair_tenants)
    readable = np.bincount(pair_tenants_a, minlength=n_tenants)

    eligible = np.flatnonzero(readable >= k)
    weights = np.sqrt(sizes[eligible].astype(np.float64))
    q_tenants = rng.choice(eligible, size=n_queries, p=weights / weights.sum())
    q_clusters = np.array([rng.choice(homes[t]) for t in q_tenants.tolist()])
    queries = draw(q_clusters)
    return Workload(
        name="synthetic",
        metric=Metric.L2,
        vectors=vectors,
        pair_labels=pair_labels_a,
        pair_tenants=pair_tenants_a,
        owners=owners,
        tenant_names=[f"t{t}" for t in range(n_tenants)],
        queries=queries,
        query_tenants=q_tenants.astype(np.int64),
        description=(
            f"synthetic (seed {seed}): {n:,} x {dim} clustered vectors ({n_clusters} Gaussian "
            f"clusters around N(0,{center_scale}^2) centres: rank-{rank} Gaussians plus "
            f"{isotropic} isotropic noise, scale 0.25-0.9, lognormal popularity), "
            f"{n_tenants} owner tenants with Zipf({zipf}) sizes "
            f"({sizes.max():,} .. {sizes.min():,} owned), each point shared with "
            f"{share_min}-{share_max} of its owner's {partners} partner tenants: "
            f"{len(pair_labels_a):,} read pairs; {n_queries} queries (fresh draws, issued as a "
            f"tenant that owns points in the query's cluster); L2"
        ),
    )
