"""Serving workloads on the Debian set: held-out queries, exact ground truth, recall@k.

About 1% of the points (seeded) are held out of the load; each held-out point becomes a query
asked as its own owner tenant:

- `tenant`: top-k among the loaded points of that tenant;
- `tenant+section`: the same, restricted to the points of that tenant in the held-out point's
  archive `section` (a keyword attribute).

A query is kept when at least one loaded point matches it (an unknown tenant is a 404 in Shoal,
an empty answer in Postgres). Its expected answer size is min(k, matches), so a tenant owning 3
points expects 3 hits and a "short" answer is one with fewer than that.

Ground truth is an exact brute force in numpy, float32, cosine distance 1 - cos. A returned id
counts as a hit when it is in the query's candidate set and its true distance is within the
k-th exact distance (plus 1e-6), so ties cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.common import Debian

WORKLOADS = ("tenant", "tenant+section")
TIE_EPSILON = 1e-6


@dataclass
class Split:
    """The loaded rows and the held-out rows of the Debian set (row numbers of `Debian`)."""

    loaded: np.ndarray  # int64 rows, ascending
    held_out: np.ndarray  # int64 rows, in the seeded random order


@dataclass
class Query:
    row: int  # held-out row whose vector is the query
    tenant: str
    section: str | None  # set for the tenant+section workload
    candidates: np.ndarray  # loaded rows matching the query (int64)
    truth: np.ndarray  # rows of the exact top-k, nearest first
    kth_distance: float  # exact distance of the last of `truth`

    @property
    def expected(self) -> int:
        return len(self.truth)


@dataclass
class Score:
    recall: float  # mean over queries of hits / expected
    short: int  # answers with fewer than `expected` hits returned
    foreign: int  # returned ids outside the query's candidate set (must be 0)
    per_query: list[float] = field(repr=False, default_factory=list)


def split(data: Debian, holdout: float = 0.01, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    n = len(data.points)
    held = rng.choice(n, size=max(1, round(holdout * n)), replace=False).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return Split(loaded=np.flatnonzero(mask).astype(np.int64), held_out=held)


def cosine_distances(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """1 - cos(query, vectors[rows]) in float32 (the stored vectors are only nearly unit)."""
    block = vectors[rows]
    dots = block @ query
    norms = np.linalg.norm(block, axis=1) * np.float32(np.linalg.norm(query))
    return (np.float32(1.0) - dots / norms).astype(np.float32)


def build(data: Debian, parts: Split, workload: str, k: int = 10) -> list[Query]:
    """The queries of one workload, in the held-out order, with their exact top-k."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; one of {WORKLOADS}")
    by_key: dict[tuple[str, str | None], list[int]] = {}
    for row in parts.loaded.tolist():
        p = data.points[row]
        section = p["section"] if workload == "tenant+section" else None
        by_key.setdefault((p["tenant"], section), []).append(row)
    queries = []
    for row in parts.held_out.tolist():
        p = data.points[row]
        section = p["section"] if workload == "tenant+section" else None
        members = by_key.get((p["tenant"], section))
        if not members:
            continue
        candidates = np.asarray(members, dtype=np.int64)
        distances = cosine_distances(data.vectors, candidates, data.vectors[row])
        order = np.argsort(distances, kind="stable")[:k]
        queries.append(
            Query(
                row=row,
                tenant=p["tenant"],
                section=section,
                candidates=candidates,
                truth=candidates[order],
                kth_distance=float(distances[order[-1]]),
            )
        )
    return queries


def score(data: Debian, queries: list[Query], answers: list[list[str]]) -> Score:
    """Recall@k of returned point ids against the exact answers (ties count as hits)."""
    row_of = _row_index(data)
    per_query: list[float] = []
    short = foreign = 0
    for query, ids in zip(queries, answers, strict=True):
        if len(ids) < query.expected:
            short += 1
        allowed = set(query.candidates.tolist())
        rows = [row_of[i] for i in ids if i in row_of and row_of[i] in allowed]
        foreign += len(ids) - len(rows)
        hits = 0
        if rows:
            distances = cosine_distances(data.vectors, np.asarray(rows), data.vectors[query.row])
            hits = int(np.sum(distances <= query.kth_distance + TIE_EPSILON))
        per_query.append(min(hits, query.expected) / query.expected)
    recall = float(np.mean(per_query)) if per_query else float("nan")
    return Score(recall, short, foreign, per_query)


def _row_index(data: Debian) -> dict[str, int]:
    return {p["id"]: i for i, p in enumerate(data.points)}


def describe(data: Debian, parts: Split, queries: dict[str, list[Query]]) -> str:
    lines = [
        f"Debian: {len(parts.loaded):,} points loaded, {len(parts.held_out)} held out "
        f"(seeded); each held-out point is a query asked as its owner tenant"
    ]
    for name, qs in queries.items():
        sizes = np.asarray([len(q.candidates) for q in qs])
        if not len(sizes):
            lines.append(f"  {name}: no queries")
            continue
        lines.append(
            f"  {name}: {len(qs)} queries; matching points per query: median "
            f"{int(np.median(sizes)):,}, max {int(sizes.max()):,}; "
            f"{int(np.sum(sizes < 10))} expect fewer than 10 hits"
        )
    return "\n".join(lines)
