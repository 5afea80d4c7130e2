"""The read path of vector queries: scope -> filter -> plan -> run -> fall back -> fetch.

Every call runs under the collection's read lock (taken by `Collection`):

1. scope: the labels the caller may read (a tenant's readable bitmap, or every point for an
   admin query, or the readable sets of the listed tenants);
2. filter: compiled against the schema and evaluated on bitmaps inside the scope, which gives
   the exact candidate count `n`;
3. plan: `index.planner.choose` over the indexes that are ready;
4. run it; an approximate plan that returns fewer than `min(k, n)` hits is redone exactly on
   the candidates (`plan.fallback`), so a query never comes back short;
5. fetch ids, owners and, when asked, attributes and vectors of the hits only.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pyroaring import BitMap

from index import planner
from index.arena import TopK
from index.attributes import labels_bitmap
from index.filters import MATCH_ALL, And, FilterError, Node, Not, Or, compile_filter, evaluate
from index.hnsw import HnswGraph
from index.tenants import bitmap_labels, labels_in_sequence
from server.errors import Invalid
from server.model import Hit, QueryPlan, QueryResult

if TYPE_CHECKING:
    from server.collection import Collection

_GROWTH = 4  # a short post-filtered graph answer fetches this many times more next round
_ROUNDS = 3
_EMPTY = TopK(np.empty(0, np.int64), np.empty(0, np.float32))
COST_MODEL = planner.CostModel()
_FORCED_EXACT = planner.Plan(planner.EXACT)  # `exact: true` without `explain`: none weighed


@dataclass
class Scope:
    """What a query may return. `readable` is the size before the filter; `tenant` is the
    tenant number for tenant queries (None for admin queries)."""

    candidates: BitMap
    readable: int
    tenant: int | None
    labels: np.ndarray | None = None  # the candidates as an array, when already at hand

    def label_array(self) -> np.ndarray:
        if self.labels is None:
            self.labels = bitmap_labels(self.candidates)
        return self.labels


@dataclass
class _Run:
    top: TopK
    nodes_visited: int = 0
    shortlists_scanned: int = 0
    distances_computed: int = 0


def filter_fields(node: Node) -> set[str]:
    """The fields a compiled filter reads."""
    if isinstance(node, And | Or):
        return set().union(*(filter_fields(term) for term in node.terms))
    if isinstance(node, Not):
        return filter_fields(node.term)
    return {node.field}


def compile_query_filter(raw: Any, collection: Collection, path: str = "filter") -> Node:
    if raw is None:
        return MATCH_ALL
    try:
        return compile_filter(raw, collection.config.schema, path)
    except FilterError as exc:
        raise Invalid(exc.path, exc.message) from None


def filtered(scope: Scope, node: Node, collection: Collection) -> Scope:
    if node == MATCH_ALL:
        return scope
    candidates = evaluate(node, collection.attributes, scope.candidates)
    return Scope(candidates, scope.readable, scope.tenant)


def run_queries(
    collection: Collection,
    matrix: np.ndarray,
    k: int,
    scope: Scope,
    node: Node,
    ef: int | None,
    force: str | None,
    started: float,
    filtering: float,
    include_attributes: bool,
    include_vector: bool,
    explain: bool = False,
) -> list[QueryResult]:
    """Filter the scope, plan once for the batch (scope and options are shared), then run
    each query; caller holds the collection's read lock. `explain`: the plan's inputs are
    all counted, for the caller to show, even those that cannot change the choice."""
    scope = filtered(scope, node, collection)
    planning = time.perf_counter()
    settings = collection.config.index
    ef = ef or settings.ef
    if force == planner.EXACT and not explain:
        # Always available, and nobody asked for the other plans' prices: nothing to weigh
        # (the planner's inputs cost about 25 us, bench.serving_quick --profile).
        plan, sequential = _FORCED_EXACT, 0
    else:
        situation = _situation(collection, scope, k, ef, explain)
        try:
            plan = planner.choose(situation, COST_MODEL, force)
        except KeyError:
            available = ", ".join(planner.estimate(situation, COST_MODEL))
            raise Invalid(
                "strategy", f"{force!r} cannot answer this query now; available: {available}"
            ) from None
        sequential = situation.sequential
    searching = time.perf_counter()
    if plan.strategy == planner.EXACT:
        runs = [_Run(top) for top in _exact(collection, matrix, scope, k)]
        for run in runs:
            run.distances_computed = len(scope.candidates)
    else:
        runs = [_approximate(collection, plan, query, k, scope) for query in matrix]
    wanted = min(k, len(scope.candidates))
    fallbacks = [i for i, run in enumerate(runs) if len(run.top.labels) < wanted]
    if fallbacks:
        exact = _exact(collection, matrix[fallbacks], scope, k)
        for i, top in zip(fallbacks, exact, strict=True):
            runs[i].top = top
            runs[i].distances_computed += len(scope.candidates)
    fetching = time.perf_counter()
    results = []
    for i, run in enumerate(runs):
        hits = _hits(collection, run.top, include_attributes, include_vector)
        timings = {
            "validate": (filtering - started) * 1e3,
            "filter": (planning - filtering) * 1e3,
            "plan": (searching - planning) * 1e3,
            "search": (fetching - searching) * 1e3 / len(runs),
            "fetch": (time.perf_counter() - fetching) * 1e3 / len(runs),
        }
        strategy = planner.EXACT if i in fallbacks else plan.strategy
        results.append(
            QueryResult(
                hits,
                QueryPlan(
                    strategy,
                    len(scope.candidates),
                    timings,
                    run.nodes_visited,
                    run.shortlists_scanned,
                    run.distances_computed,
                    estimates_us=plan.estimates_us,
                    sequential_candidates=sequential,
                    chosen=plan.strategy,
                    fallback=i in fallbacks,
                    below_recall=list(plan.below_recall),
                ),
            )
        )
    elapsed = time.perf_counter() - started
    observer = collection.observer
    share = elapsed / len(runs)
    if len(fallbacks) < len(runs):
        answered = len(runs) - len(fallbacks)
        observer.queries(collection.name, plan.strategy, share * answered, answered)
    if fallbacks:
        observer.queries(collection.name, "fallback", share * len(fallbacks), len(fallbacks))
    return results


def _situation(
    collection: Collection, scope: Scope, k: int, ef: int, explain: bool
) -> planner.Situation:
    graphs = collection.graphs
    tenant_graph = None if scope.tenant is None else graphs.tenant(scope.tenant)
    curator = collection.curator.curator
    n = len(scope.candidates)
    curator_ef, curator_meets = 0, True
    if scope.tenant is not None:
        curator_ef, curator_meets = graphs.curator_effort(scope.tenant, n / max(1, scope.readable))
    situation = planner.Situation(
        k=k,
        ef=ef,
        dim=collection.config.dim,
        candidates=len(scope.candidates),
        readable=scope.readable,
        # Below the floor a tenant is never worth the Curator (and has few pairs in it). On a
        # tenant big enough for its own graph the Curator's patience stop can cap recall
        # (about 0.90 unfiltered on bench.planner's tenants): its recall there is measured
        # per selectivity band when the graph is built, and it is chosen only where it keeps
        # the target, with the effort that keeps it.
        curator=curator is not None
        and scope.tenant is not None
        and scope.readable >= collection.config.index.curator_min_tenant_points,
        curator_meets_recall=curator_meets,
        curator_ef_floor=curator_ef,
        tenant_graph=_shape(tenant_graph, n),
        shared_graph=_shape(graphs.shared(), n),
    )
    # Counting costs shifted copies of the candidates' bitmap (microseconds, more on a large
    # arena's many containers): only when the answer could change the plan, or is asked for.
    if explain or planner.sequence_matters(situation, COST_MODEL):
        sequential = labels_in_sequence(scope.candidates, COST_MODEL.exact_run_lead)
        situation = dataclasses.replace(situation, sequential=sequential)
    return situation


def _shape(graph: HnswGraph | None, candidates: int) -> planner.GraphShape | None:
    """The graph as the planner sees it; whether it keeps recall depends on the share of
    its points that are candidates (a narrower filter is post-filtered from a larger fetch)."""
    if graph is None:
        return None
    size = len(graph.members)
    meets = graph.meets_recall_at(candidates / max(1, size))
    return planner.GraphShape(size, len(graph.pending), graph.ef_floor, meets)


def _exact(collection: Collection, matrix: np.ndarray, scope: Scope, k: int) -> list[TopK]:
    return collection.arena.search(matrix, scope.label_array(), k)


def _approximate(
    collection: Collection, plan: planner.Plan, query: np.ndarray, k: int, scope: Scope
) -> _Run:
    if plan.strategy == planner.CURATOR:
        curator = collection.curator.curator
        assert curator is not None and scope.tenant is not None
        allowed = None
        if len(scope.candidates) < scope.readable:
            allowed = np.zeros(len(collection.arena.norms_sq), dtype=np.bool_)
            allowed[scope.label_array()] = True
        settings = collection.config.index
        top, stats = curator.search(
            query, scope.tenant, k, plan.ef, allowed=allowed, patience=settings.patience
        )
        return _Run(top, stats.nodes_visited, stats.shortlists_scanned, stats.distances_computed)
    if plan.strategy == planner.TENANT_HNSW:
        assert scope.tenant is not None
        graph = collection.graphs.tenant(scope.tenant)
    else:
        graph = collection.graphs.shared()
    if graph is None:  # dropped between planning and running (a demotion): scan instead
        return _Run(_EMPTY)
    return _graph_search(collection, graph, query, k, scope, plan.fetch, plan.ef)


def _graph_search(
    collection: Collection,
    graph: HnswGraph,
    query: np.ndarray,
    k: int,
    scope: Scope,
    fetch: int,
    ef: int,
) -> _Run:
    """Post-filtered graph search plus an exact scan of the candidates still pending."""
    pending = graph.pending  # read before searching: see server.graph_host
    trusted = scope.candidates - pending if pending else scope.candidates
    behind = scope.candidates & pending if pending else BitMap()
    extra = _EMPTY
    computed = 0
    if behind:
        behind_labels = bitmap_labels(behind)
        [extra] = collection.arena.search(query[None, :], behind_labels, k)
        computed += len(behind_labels)
    wanted = min(k, len(trusted))
    rounds = 0
    while True:
        labels, distances = graph.search(query, fetch, max(ef, fetch))
        computed += max(ef, fetch)
        if len(labels):
            kept = labels_bitmap(labels) & trusted
            mask = np.isin(labels, np.frombuffer(kept.to_array(), dtype=np.uint32))
            labels, distances = labels[mask], distances[mask]
        rounds += 1
        if len(labels) >= wanted or fetch >= len(graph.members) or rounds >= _ROUNDS:
            break
        fetch = min(len(graph.members), fetch * _GROWTH)
    if len(labels) < wanted:
        return _Run(_EMPTY, distances_computed=computed)  # short: the caller scans instead
    if len(extra.labels):
        labels = np.concatenate([labels, extra.labels])
        distances = np.concatenate([distances, extra.distances])
    return _Run(collection.arena.top_k(labels, distances, k), distances_computed=computed)


def _hits(
    collection: Collection, top: TopK, include_attributes: bool, include_vector: bool
) -> list[Hit]:
    points, names, arena = collection.points, collection.tenants.name_of, collection.arena
    labels = top.labels.tolist()
    owners = points.owners(top.labels).tolist()
    return [
        Hit(
            points.point_id(label),
            names[owner],
            distance,
            orjson.loads(points.attributes_json(label)) if include_attributes else None,
            arena.vector(label) if include_vector else None,
        )
        for label, owner, distance in zip(labels, owners, top.distances.tolist(), strict=True)
    ]
