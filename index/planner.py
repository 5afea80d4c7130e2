"""The cost-based planner: which index answers a query, from exact counts, not guesses.

Inputs (`Situation`): `k`, `ef`, the dimension, the exact number of candidates `n` (the points
the query may return: the tenant's readable set intersected with the filter, counted on
bitmaps), the tenant's readable-set size, and which indexes are ready. Each plan's cost is
estimated in microseconds with constants measured by `python -m bench.calibrate`:

- `exact`: scan the candidates, a dot product per row read in place. A row that continues a
  run of consecutive labels (the `exact_run_lead` labels before it are candidates too) costs
  about a third of a row read from a new place (the hardware prefetches sequential memory),
  so the scan is priced by how many candidates do (`sequential`): a tenant whose points were
  written together is scanned much faster than as many labels spread over the arena.
- `curator`: the tenant's sub-tree, with the filter as a mask inside the traversal. Unfiltered,
  a search computes about `D = curator_distance_scale * ef**0.25 * sqrt(readable)` distances
  (the patience stop ends it, so D grows with the tenant, slowly with ef); with a filter of
  selectivity `s = n / readable` it walks about as many labels (checks) and computes
  distances for the matching share, never fewer than fill the heap. On tenants with a graph
  its recall is measured per selectivity band, with the least `ef` that keeps it there
  (`curator_ef_floor`; `server.graph_host`).
- `tenant_hnsw`, `shared_hnsw`: a graph search post-filtered: fetch `k' = 2k/s` (s: the share
  of the graph's points that are candidates) with `ef' = max(ef, k', ef_floor)`, plus an
  exact scan of the candidates the graph has not caught up with yet (`pending`). Not offered
  once `k'` passes a quarter of the graph: a scan is cheaper and certain by then. `ef_floor`
  comes from the graph's recall self-check (`HnswGraph.calibrate`); a graph whose measured
  recall in the query's selectivity band misses the target is estimated but never chosen
  (only forced).

The cheapest plan that keeps recall wins; `exact` is always possible and is also where every
approximate plan falls back when it comes back short (the server does that: never fewer than
`k` results when `k` points match).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

EXACT = "exact"
CURATOR = "curator"
TENANT_HNSW = "tenant_hnsw"
SHARED_HNSW = "shared_hnsw"
STRATEGIES = (EXACT, CURATOR, TENANT_HNSW, SHARED_HNSW)
_OVERFETCH = 2.0


@dataclass(frozen=True)
class CostModel:
    """Microseconds; the defaults are the output of `python -m bench.calibrate` on the
    2-core machines the benchmarks run on (docs/benchmarks.md, "Planner calibration")."""

    # Fitted 2026-11-28 by `python -m bench.calibrate --data-dir /tmp/shoal-planner-cache
    # --details --check-synthetic`, 16 MiB written over before each search (other tenants'
    # queries in between), the scan priced by rows continuing a run: on the Debian set
    # (384-d), the graph terms on its graphs and the synthetic set's (128-d) together.
    exact_fixed_us: float = 63.7
    exact_row_dim_ns: float = 0.46  # per row read from a new place, per dimension
    exact_next_row_dim_ns: float = 0.141  # per row continuing a run, per dimension
    # The first rows of a run cost as much as rows read from new places (the prefetcher has
    # yet to follow); a row continues a run once this many consecutive rows precede it.
    exact_run_lead: int = 3
    mask_fixed_us: float = 67.6  # the curator's filter mask
    mask_row_ns: float = 0.0
    curator_fixed_us: float = 2.16
    curator_distance_dim_ns: float = 0.638
    curator_check_ns: float = 8.4  # a label looked up in the mask
    # Distances an unfiltered search computes: scale * ef**0.25 * sqrt(readable). Measured
    # (bench.calibrate --details): 916 at 1k points, 2,735 at 10k, at ef 128; growing like
    # ef**0.25 (the patience stop, not ef, ends most searches).
    curator_distance_scale: float = 8.04
    graph_fixed_us: float = 312.0
    graph_ef_ns: float = 1093.0  # per unit of ef whatever the dimension: the hops themselves
    graph_ef_dim_ns: float = 3.39  # per unit of ef and dimension (about M distances each)
    postfilter_fetch_ns: float = 140.0  # per label fetched: the post-filter's own work


@dataclass(frozen=True)
class GraphShape:
    size: int  # labels the graph answers with
    pending: int  # labels changed since the graph last caught up
    ef_floor: int = 0  # the least ef that met the recall target in the graph's self-check
    meets_recall: bool = True  # False: misses recall in this query's band; chosen only if forced


@dataclass(frozen=True)
class Situation:
    k: int
    ef: int
    dim: int
    candidates: int  # n: exact
    readable: int  # the scope before the filter (the tenant's readable set, or all points)
    # Candidates that come right after `exact_run_lead` others of them (a run's continuation,
    # `index.tenants.labels_in_sequence`); 0 prices every row as read from a new place.
    sequential: int = 0
    curator: bool = False  # the Curator is trained (tenant queries only)
    curator_meets_recall: bool = True  # False: estimated, but chosen only when forced
    curator_ef_floor: int = 0  # the least ef that kept its recall in this band (0: unchecked)
    tenant_graph: GraphShape | None = None
    shared_graph: GraphShape | None = None


@dataclass(frozen=True)
class Plan:
    strategy: str
    estimates_us: dict[str, float] = field(default_factory=dict)
    fetch: int = 0  # graph plans: labels fetched in the first round
    ef: int = 0
    meets_recall: bool = True
    below_recall: tuple[str, ...] = ()  # plans estimated but not chosen: they miss recall


def estimate(situation: Situation, model: CostModel) -> dict[str, Plan]:
    """Every plan available for `situation`, with its estimated cost."""
    s = situation
    plans = {EXACT: Plan(EXACT, ef=s.ef)}
    costs = {EXACT: _exact_cost(s, model)}
    if s.candidates > s.k:
        if s.curator:
            ef = max(s.ef, s.curator_ef_floor)
            costs[CURATOR] = _curator_cost(s, model, ef)
            plans[CURATOR] = Plan(CURATOR, ef=ef, meets_recall=s.curator_meets_recall)
        for name, graph in ((TENANT_HNSW, s.tenant_graph), (SHARED_HNSW, s.shared_graph)):
            if graph is None or graph.size == 0:
                continue
            priced = _graph_cost(s, graph, model)
            if priced is not None:
                costs[name], fetch, ef = priced
                plans[name] = Plan(name, fetch=fetch, ef=ef, meets_recall=graph.meets_recall)
    rounded = {name: round(cost, 1) for name, cost in costs.items()}
    return {
        name: Plan(p.strategy, rounded, p.fetch, p.ef, p.meets_recall) for name, p in plans.items()
    }


@functools.lru_cache(maxsize=4096)
def choose(situation: Situation, model: CostModel, force: str | None = None) -> Plan:
    """The cheapest plan, or `force` if it is available; raises KeyError if it is not.

    A pure function of hashable inputs, so it is memoized: a tenant's queries mostly meet the
    same situation again, and pricing every plan cost about 30 us of a 375 us request
    (bench.serving_quick --profile). The plan returned is shared: callers only read it."""
    plans = estimate(situation, model)
    below = tuple(name for name, plan in plans.items() if not plan.meets_recall)
    if force is not None:
        return dataclasses.replace(plans[force], below_recall=below)
    costs = plans[EXACT].estimates_us
    eligible = [name for name in costs if plans[name].meets_recall]
    best = min(eligible, key=lambda name: (costs[name], STRATEGIES.index(name)))
    return dataclasses.replace(plans[best], below_recall=below)


@functools.lru_cache(maxsize=4096)
def sequence_matters(situation: Situation, model: CostModel) -> bool:
    """Whether counting the candidates that continue a run could change the choice: the
    planner chooses differently with none of them in a run and with all of them. The scan's
    cost falls as the count grows and no other plan depends on it, so when the two agree
    every count agrees, and the server does not count (`sequential` stays 0). Decided by
    `choose` itself, rounding and ties included, so that counting for `explain` never
    changes a plan."""
    spread = dataclasses.replace(situation, sequential=0)
    in_one_run = dataclasses.replace(situation, sequential=situation.candidates)
    return choose(spread, model).strategy != choose(in_one_run, model).strategy


def _exact_cost(s: Situation, model: CostModel) -> float:
    n = s.candidates
    sequential = min(n, max(0, s.sequential))
    rows_ns = model.exact_row_dim_ns * (n - sequential) + model.exact_next_row_dim_ns * sequential
    return model.exact_fixed_us + rows_ns * s.dim / 1e3


def _curator_cost(s: Situation, model: CostModel, ef: int) -> float:
    selectivity = s.candidates / max(1, s.readable)
    ef = max(ef, s.k)
    unfiltered = model.curator_distance_scale * ef**0.25 * math.sqrt(s.readable)
    # Measured with filters of 5-50%: the traversal walks about as many labels as unfiltered
    # and computes distances for the matching share, but never fewer than fill the heap.
    distances = min(s.candidates, max(selectivity * unfiltered, ef))
    checks = min(s.readable, max(unfiltered, ef / max(selectivity, 1e-9)))
    cost = (
        model.curator_fixed_us
        + model.curator_distance_dim_ns * s.dim * distances / 1e3
        + model.curator_check_ns * checks / 1e3
    )
    if s.candidates < s.readable:
        cost += model.mask_fixed_us + model.mask_row_ns * s.candidates / 1e3
    return cost


def _graph_cost(s: Situation, graph: GraphShape, model: CostModel) -> tuple[float, int, int] | None:
    selectivity = min(1.0, s.candidates / graph.size)
    fetch = s.k if selectivity >= 0.999 else math.ceil(_OVERFETCH * s.k / selectivity)
    if fetch > graph.size / 4 and selectivity < 0.999:
        return None
    ef = max(s.ef, fetch, graph.ef_floor)
    # Pending labels are priced as read from new places: a bound, since a fresh batch is
    # often one run, and the planner's inputs do not say which candidates are pending.
    pending = min(graph.pending, s.candidates)
    cost = (
        model.graph_fixed_us
        + (model.graph_ef_ns + model.graph_ef_dim_ns * s.dim) * ef / 1e3
        + model.postfilter_fetch_ns * fetch / 1e3
        + model.exact_row_dim_ns * s.dim * pending / 1e3
    )
    return cost, fetch, ef
