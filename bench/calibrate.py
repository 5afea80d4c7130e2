"""Planner calibration: measure each plan's cost components here and fit `CostModel`.

    python -m bench.calibrate               # Debian, 30 queries, 5 runs (~5 min with the load)
    python -m bench.calibrate --quick       # 20k Debian, 10 queries, 2 runs
    python -m bench.calibrate --data-dir /tmp/shoal-planner   # reuse bench.planner's data

The Debian set (384-d, cosine) is loaded through the server's write path exactly as
`bench.planner` loads it (owners, tag tenants through `shared_with`, a `bucket` integer
0..9999, the Curator trained on the whole set, the shared graph and the 4 largest tenants'
graphs built by the server's indexer). Then the search stage of each plan is timed through the
server's own functions (`server.search._exact`, `_approximate`, `_graph_search`: what
`run_queries` times as `timings_ms["search"]`), under the collection's read lock, BLAS pinned
to one thread, over ranges that separate the terms of each formula:

- exact: label sets of n = 32 .. all points (a scope given as a bitmap, so the bitmap ->
  array conversion is paid as in a filtered query), drawn at random, as one run of n
  consecutive labels, and as blocks of 2, 4, 8 and 32 consecutive labels one label apart:
  `t = exact_fixed + (row_dim * (n - q) + next_row_dim * q) * dim`, q the labels that follow
  `lead` others of the set (`labels_in_sequence`), fitted on n <= 4,096 (`--exact-max-rows`),
  where a scan competes with the indexes, for each `lead` in 1..8; the lead that fits best
  is kept (`exact_run_lead`) and the rest printed;
- curator: 5 tenants of 1,000 to 10,000 readable points, ef 16 .. 512, filter selectivity
  s = 1 .. 0.01 (the `bucket` filter), plus every tenant that has its own graph. The Curator
  reports the distances it computed (D); the labels it checked are estimated as D / s (the
  filter is independent of the vectors), so `t = curator_fixed + distance_dim * D * dim +
  check * D / s (+ mask_fixed + mask_row * n when filtered)`. The model's `D =
  distances_per_ef * max(ef, k)` is fitted on the unfiltered searches of the tenants that have
  a graph (where the Curator competes with a graph) at the collection's ef (128): measured, D
  grows far slower than ef and grows with the tenant's size, which the formula cannot follow,
  so the fit is made where the estimate decides, and the other sizes and ef are printed;
- graphs: the shared graph (admin scope) and the tenant graphs, ef 16 .. 512, selectivity
  1 .. 0.02 (fetch `2k/s` as the planner asks): `t = graph_fixed + (ef_step + ef_dim * dim) *
  max(ef, fetch) + postfilter * fetch`. A step's cost does not scale with the dimension alone
  (hops, visited-set and heap work do not): with `--check-synthetic` the synthetic set's graph
  searches (128-d) join the fit, which separates the two; Debian alone cannot.

Each configuration is timed over the same queries (held-out points, those the tenant would
read first) in every run, interleaved: for each query, every configuration in a new random
order (so a burst of background load falls on all of them alike), with 16 MiB written over
before each search (`--evict-mib`), as other tenants' queries would on a server; a
configuration's time is the median over runs of its median over queries. The fits are least
squares on relative error (weights 1/t: the planner compares ratios), with every coefficient
kept >= 0 (the best fit over every subset of terms).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from pyroaring import BitMap
from threadpoolctl import threadpool_limits

from bench.common import machine, table
from bench.planner import BUCKETS, K, World, debian_world, synthetic_world
from index import planner
from index.attributes import labels_bitmap
from index.tenants import labels_in_sequence
from server import search

EFS = (16, 32, 64, 128, 256, 512)
EXACT_BLOCKS = (2, 4, 8, 32)
LEADS = tuple(range(1, 9))
CURATOR_SELECTIVITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
GRAPH_SELECTIVITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)


@dataclass
class Config:
    kind: str  # exact | curator | graph
    label: str
    call: Callable[[np.ndarray], search._Run]
    queries: np.ndarray
    features: dict[str, float] = field(default_factory=dict)
    times_us: list[list[float]] = field(default_factory=list)  # per run, per query
    distances: list[float] = field(default_factory=list)  # run 0, per query

    @property
    def t_us(self) -> float:
        return float(np.median([np.median(run) for run in self.times_us]))

    @property
    def d(self) -> float:
        return float(np.median(self.distances))


def _filtered(world: World, scope: search.Scope, s: float) -> search.Scope:
    if s >= 1.0:
        return scope
    node = search.compile_query_filter({"bucket": {"$lt": round(s * BUCKETS)}}, world.collection)
    return search.filtered(scope, node, world.collection)


def _fresh(scope: search.Scope) -> search.Scope:
    """The same scope without its cached label array: each call converts, as a query does."""
    return search.Scope(scope.candidates, scope.readable, scope.tenant, None)


def exact_configs(world: World, queries: np.ndarray, rng: np.random.Generator) -> list[Config]:
    collection = world.collection
    live = collection.arena.live_labels()
    sizes = sorted({int(x) for x in np.geomspace(32, len(live), 14)})
    configs = []
    for n in sizes:
        kinds = {"random": rng.choice(live, size=n, replace=False)}
        # One run of n consecutive live labels, then blocks of `block` one label apart.
        for block in (n, *(b for b in EXACT_BLOCKS if b < n)):
            positions = np.arange(n) + np.arange(n) // block
            if positions[-1] < len(live):
                start = int(rng.integers(0, len(live) - positions[-1]))
                kinds["run" if block == n else f"blocks of {block}"] = live[start + positions]
        for kind, picked in kinds.items():
            chosen = BitMap(labels_bitmap(picked))
            scope = search.Scope(chosen, len(live), None)

            def call(q: np.ndarray, scope: search.Scope = scope) -> search._Run:
                [top] = search._exact(collection, q[None, :], _fresh(scope), K)
                return search._Run(top, distances_computed=len(scope.candidates))

            features = {"n": n} | {f"q{lead}": labels_in_sequence(chosen, lead) for lead in LEADS}
            configs.append(Config("exact", f"exact {kind} n={n}", call, queries, features))
    return configs


def curator_configs(world: World, n_queries: int) -> list[Config]:
    collection = world.collection
    tenants = collection.tenants
    floor = collection.config.index.curator_min_tenant_points
    sizes = {t: len(tenants.readable[tenants.number_of[t]]) for t in tenants.number_of}
    eligible = sorted((size, t) for t, size in sizes.items() if size >= floor)
    picks: list[str] = []
    for target in np.geomspace(eligible[0][0], eligible[-1][0], 5):
        name = min(eligible, key=lambda e: abs(math.log(e[0] / target)))[1]
        if name not in picks:
            picks.append(name)
    configs = []
    for name in picks:
        number = tenants.number_of[name]
        readable = tenants.readable[number]
        base = search.Scope(readable, len(readable), number)
        queries = world.queries_for(name, n_queries)
        for s in CURATOR_SELECTIVITIES:
            scope = _filtered(world, base, s)
            n = len(scope.candidates)
            if n <= K:
                continue
            for ef in EFS:
                plan = planner.Plan(planner.CURATOR, ef=ef)

                def call(
                    q: np.ndarray, plan: planner.Plan = plan, scope: search.Scope = scope
                ) -> search._Run:
                    return search._approximate(collection, plan, q, K, _fresh(scope))

                features = {"n": n, "readable": len(readable), "ef": ef, "s": n / len(readable)}
                label = f"curator {name} ({len(readable):,}) s={n / len(readable):.3f} ef={ef}"
                configs.append(Config("curator", label, call, queries, features))
    return configs


def graph_configs(world: World, n_queries: int) -> list[Config]:
    collection = world.collection
    tenants = collection.tenants
    graphs = collection.graphs
    targets: list[tuple[str, object, search.Scope, np.ndarray]] = []
    everything = tenants.all_labels
    shared = graphs.shared()
    if shared is not None:
        scope = search.Scope(everything, len(everything), None)
        targets.append(("shared", shared, scope, world.queries_for(None, n_queries)))
    for key, graph in list(graphs.graphs.items()):
        if key == "shared":
            continue
        readable = tenants.readable[key]
        name = tenants.name_of[key]
        targets.append(
            (
                name,
                graph,
                search.Scope(readable, len(readable), key),
                world.queries_for(name, n_queries),
            )
        )
    configs = []
    for name, graph, base, queries in targets:
        size = len(graph.members)  # type: ignore[attr-defined]
        for s in GRAPH_SELECTIVITIES:
            scope = _filtered(world, base, s)
            n = len(scope.candidates)
            selectivity = min(1.0, n / size)
            fetch = K if selectivity >= 0.999 else math.ceil(2 * K / selectivity)
            if fetch > size / 4 and selectivity < 0.999:
                continue
            for ef_used in sorted({max(ef, fetch) for ef in EFS}):

                def call(
                    q: np.ndarray, graph=graph, scope=scope, fetch=fetch, ef_used=ef_used
                ) -> search._Run:
                    return search._graph_search(collection, graph, q, K, scope, fetch, ef_used)

                features = {"size": size, "n": n, "ef": ef_used, "fetch": fetch}
                label = f"graph {name} ({size:,}) s={selectivity:.3f} ef={ef_used} fetch={fetch}"
                configs.append(Config("graph", label, call, queries, features))
    return configs


def _mib(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def measure(
    world: World, configs: list[Config], runs: int, seed: int = 0, evict_mib: int = 16
) -> None:
    """Every run times every configuration on every query, interleaved: for each query
    index, the configurations in a new random order (a burst of background load then
    lands on many configurations, not on one). Before each search `evict_mib` MiB are
    written over, as other tenants' queries would between two of one tenant's on a server:
    without it, configurations over the same tenant (a Curator sweep of ef and selectivity)
    keep its data cached for each other while a scan of a fresh label set starts from
    memory, and the Curator measured 1.3-1.5x cheaper against the scan than a serving
    workload sees it. Half the last-level cache (32 MiB here), so that what every search
    touches (the interpreter, the indexes' small structures) stays cached as on a server,
    and the previous configurations' vectors do not."""
    rng = np.random.default_rng(seed)
    eviction = np.ones((evict_mib << 20) // 4, dtype=np.float32)
    clock = time.perf_counter_ns
    collection = world.collection
    for config in configs:  # warm up: compiled kernels, cached tenant views, graph ef
        for q in config.queries[:2]:
            config.call(q)
    n_queries = min(len(c.queries) for c in configs)
    for run in range(runs):
        started = time.perf_counter()
        for config in configs:
            config.times_us.append([])
        for i in range(n_queries):
            for j in rng.permutation(len(configs)).tolist():
                config = configs[j]
                q = config.queries[i]
                np.add(eviction, 1.0, out=eviction)
                with collection.read_lock():
                    start = clock()
                    result = config.call(q)
                    elapsed = clock() - start
                config.times_us[run].append(elapsed / 1e3)
                if run == 0:
                    config.distances.append(result.distances_computed)
        print(f"  run {run + 1}/{runs}: {time.perf_counter() - started:.1f} s", flush=True)


# -- fitting ---------------------------------------------------------------------------


def nnls_relative(columns: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Least squares of `columns @ x ~ t` on relative error, x >= 0: the best fit among the
    unconstrained fits over every subset of columns whose coefficients are all >= 0."""
    a = columns / t[:, None]
    b = np.ones(len(t))
    best, best_residual = np.zeros(columns.shape[1]), float("inf")
    for size in range(1, columns.shape[1] + 1):
        for subset in itertools.combinations(range(columns.shape[1]), size):
            x, *_ = np.linalg.lstsq(a[:, subset], b, rcond=None)
            if (x < 0).any():
                continue
            residual = float(np.sum((a[:, subset] @ x - b) ** 2))
            if residual < best_residual:
                best_residual = residual
                best = np.zeros(columns.shape[1])
                best[list(subset)] = x
    return best


def errors(predicted: np.ndarray, measured: np.ndarray) -> str:
    rel = predicted / measured - 1
    return (
        f"median abs error {np.median(np.abs(rel)):.0%}, worst {rel[np.argmax(np.abs(rel))]:+.0%} "
        f"over {len(rel)} configurations"
    )


def curator_distances(scale: float, ef: float, readable: float) -> float:
    """The planner's model of an unfiltered Curator search's distances."""
    return scale * max(ef, K) ** 0.25 * np.sqrt(readable)


def distance_notes(unfiltered: list[Config], scale: float) -> list[str]:
    """Measured distances of unfiltered Curator searches by ef and tenant, against the model."""
    notes = []
    for ef in EFS:
        at = [c for c in unfiltered if c.features["ef"] == ef]
        at.sort(key=lambda c: c.features["readable"])
        if not at:
            continue
        d = np.array([c.d for c in at])
        measured = ", ".join(f"{c.d:,.0f} ({int(c.features['readable']):,})" for c in at)
        model = np.array([curator_distances(scale, ef, c.features["readable"]) for c in at])
        notes.append(f"  ef {ef}: measured D (readable) {measured}; model: " + errors(model, d))
    return notes


def unfiltered_curator(configs: list[Config]) -> list[Config]:
    """Unfiltered Curator configurations whose search did not read the whole tenant."""
    return [
        c
        for c in configs
        if c.kind == "curator" and c.features["s"] >= 0.999 and c.d < c.features["readable"]
    ]


def fit(
    world: World,
    configs: list[Config],
    exact_max_rows: int,
    other_graphs: tuple[int, list[Config]] | None = None,
) -> tuple[planner.CostModel, list[str]]:
    """The model from `world`'s measurements; with `other_graphs` (another dimension and its
    configurations) the graph terms are fitted on both, which separates a step's cost that
    grows with the dimension from the part that does not."""
    dim = world.dim
    settings = world.collection.config.index
    notes = []
    values: dict[str, float] = {}

    exact = [c for c in configs if c.kind == "exact"]

    def exact_columns(chosen: list[Config], lead: int) -> np.ndarray:
        def row(c: Config) -> list[float]:
            n, q = c.features["n"], c.features[f"q{lead}"]
            return [1.0, (n - q) * dim / 1e3, q * dim / 1e3]

        return np.array([row(c) for c in chosen])

    inside = [c for c in exact if c.features["n"] <= exact_max_rows]
    t = np.array([c.t_us for c in inside])
    fits = {}
    for lead in LEADS:
        cols = exact_columns(inside, lead)
        x = nnls_relative(cols, t)
        notes.append(f"exact, lead {lead}: {errors(cols @ x, t)}")
        if x[2] <= x[1]:  # a row continuing a run is never dearer than one read afresh
            fits[lead] = (float(np.sum((cols @ x / t - 1) ** 2)), x)
    if not fits:  # no lead gives a cheaper continuing row: price every row alike
        cols = np.array([[1.0, c.features["n"] * dim / 1e3] for c in inside])
        fixed, row = nnls_relative(cols, t)
        fits[1] = (0.0, np.array([fixed, row, row]))
        notes.append("exact: no lead prices a row continuing a run below a new one")
    lead = min(fits, key=lambda candidate: fits[candidate][0])
    x = fits[lead][1]
    values["exact_fixed_us"], values["exact_row_dim_ns"], values["exact_next_row_dim_ns"] = x
    values["exact_run_lead"] = lead
    cols = exact_columns(inside, lead)
    notes.append(f"exact, fitted on n <= {exact_max_rows:,}, lead {lead}: {errors(cols @ x, t)}")
    beyond = [c for c in exact if c.features["n"] > exact_max_rows]
    if beyond:
        t = np.array([c.t_us for c in beyond])
        notes.append(
            f"exact, the same fit for n > {exact_max_rows:,}: "
            f"{errors(exact_columns(beyond, lead) @ x, t)}"
        )
    notes.append(
        "exact, measured us per row: "
        + ", ".join(f"{c.label[6:]}: {c.t_us / c.features['n']:.2f}" for c in exact)
    )

    # Distances per ef. The formula makes D proportional to ef and blind to the tenant's size;
    # measured, D grows far slower than ef and grows with the size. The estimate that decides
    # between the Curator and a graph is that of a tenant large enough to have a graph, at the
    # collection's ef (queries rarely set their own): fit there, and print the rest.
    unfiltered = unfiltered_curator(configs)
    big = settings.tenant_graph_min_points
    near = [
        c for c in unfiltered if c.features["ef"] == settings.ef and c.features["readable"] >= big
    ]
    # The model: D = scale * ef**0.25 * sqrt(readable); fitted over every unfiltered search.
    near = unfiltered or near
    shape = np.array(
        [curator_distances(1.0, c.features["ef"], c.features["readable"]) for c in near]
    )
    d = np.array([c.d for c in near])
    dpe = float(np.sum(shape / d) / np.sum(shape**2 / d**2))
    values["curator_distance_scale"] = dpe
    notes.append(
        f"curator distance scale (D = scale * ef^0.25 * sqrt(readable)), fitted on every "
        f"unfiltered search: {errors(dpe * shape, d)}"
    )
    notes += distance_notes(unfiltered, dpe)

    cur = [c for c in configs if c.kind == "curator"]
    t = np.array([c.t_us for c in cur])
    filtered = np.array([c.features["s"] < 0.999 for c in cur], dtype=float)
    d = np.array([c.d for c in cur])
    checks = d / np.array([c.features["s"] for c in cur])
    n = np.array([c.features["n"] for c in cur], dtype=float)
    cols = np.column_stack(
        [np.ones(len(cur)), d * dim / 1e3, checks / 1e3, filtered, filtered * n / 1e3]
    )
    x = nnls_relative(cols, t)
    (
        values["curator_fixed_us"],
        values["curator_distance_dim_ns"],
        values["curator_check_ns"],
        values["mask_fixed_us"],
        values["mask_row_ns"],
    ) = x
    notes.append(f"curator time (measured D, checks D/s): {errors(cols @ x, t)}")

    graph = [(dim, c) for c in configs if c.kind == "graph"]
    if other_graphs is not None:
        graph += [(other_graphs[0], c) for c in other_graphs[1] if c.kind == "graph"]
    t = np.array([c.t_us for _, c in graph])
    cols = np.array(
        [
            [1.0, c.features["ef"] / 1e3, c.features["ef"] * d / 1e3, c.features["fetch"] / 1e3]
            for d, c in graph
        ]
    )
    dims = sorted({d for d, _ in graph})
    if len(dims) > 1:
        x = nnls_relative(cols, t)
    else:
        # One dimension cannot tell the per-step part that scales with it from the part
        # that does not (the two columns are proportional): keep the current default for the
        # latter and fit the rest.
        fixed_step = planner.CostModel().graph_ef_ns
        rest = nnls_relative(cols[:, [0, 2, 3]], t - fixed_step * cols[:, 1])
        x = np.array([rest[0], fixed_step, rest[1], rest[2]])
        notes.append(f"graphs: one dimension; graph_ef_ns kept at {fixed_step}")
    (
        values["graph_fixed_us"],
        values["graph_ef_ns"],
        values["graph_ef_dim_ns"],
        values["postfilter_fetch_ns"],
    ) = x
    notes.append(f"graphs (dimensions {dims}): {errors(cols @ x, t)}")
    for d in dims:
        mine = np.array([dd == d for dd, _ in graph])
        notes.append(f"  graphs at {d} dimensions: {errors((cols @ x)[mine], t[mine])}")
    graph_configs = [c for _, c in graph]
    extra = [
        c.label for c in graph_configs if np.mean(np.array(c.distances) > c.features["ef"]) > 0.1
    ]
    if extra:
        notes.append(f"graph configurations with extra rounds in >10% of queries: {len(extra)}")
    rounded = {
        name: value if isinstance(value, int) else _round(value) for name, value in values.items()
    }
    return planner.CostModel(**rounded), notes


def _round(value: float) -> float:
    if value == 0:
        return 0.0
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return round(value, digits)


def model_check(world: World, configs: list[Config], model: planner.CostModel) -> str:
    """Each configuration's time as the planner would estimate it (its own formulas, with
    the counts it assumes, not the measured ones), against the measured time."""
    rows = []
    for kind in ("exact", "curator", "graph"):
        mine = [c for c in configs if c.kind == kind]
        predicted, measured = [], []
        for c in mine:
            f = c.features
            if kind == "exact":
                q = int(f[f"q{model.exact_run_lead}"])
                situation = planner.Situation(
                    K, 128, world.dim, int(f["n"]), int(f["n"]), sequential=q
                )
                cost = planner.estimate(situation, model)[planner.EXACT].estimates_us["exact"]
            elif kind == "curator":
                situation = planner.Situation(
                    K, int(f["ef"]), world.dim, int(f["n"]), int(f["readable"]), curator=True
                )
                cost = planner.estimate(situation, model)[planner.CURATOR].estimates_us["curator"]
            else:
                # graph plans: the configuration's fetch and ef, priced by the model's terms
                cost = (
                    model.graph_fixed_us
                    + (model.graph_ef_ns + model.graph_ef_dim_ns * world.dim) * f["ef"] / 1e3
                    + model.postfilter_fetch_ns * f["fetch"] / 1e3
                )
            predicted.append(cost)
            measured.append(c.t_us)
        rel = np.array(predicted) / np.array(measured) - 1
        rows.append([
            kind, str(len(mine)), f"{np.median(np.abs(rel)):.0%}",
            f"{np.percentile(np.abs(rel), 90):.0%}", f"{rel[np.argmax(np.abs(rel))]:+.0%}",
        ])  # fmt: skip
    return table(["plan", "configurations", "median abs error", "p90 abs error", "worst"], rows)


def measure_world(world: World, args: argparse.Namespace) -> list[Config]:
    print(f"\n{world.description}\n" + "\n".join(world.notes), flush=True)
    rng = np.random.default_rng(0)
    configs = (
        exact_configs(world, world.queries_for(None, args.queries), rng)
        + curator_configs(world, args.queries)
        + graph_configs(world, args.queries)
    )
    counts = {k: sum(c.kind == k for c in configs) for k in ("exact", "curator", "graph")}
    print(f"{len(configs)} configurations {counts}, {args.queries} queries, {args.runs} runs")
    measure(world, configs, args.runs, evict_mib=args.evict_mib)
    return configs


def print_details(configs: list[Config]) -> None:
    rows = [[c.label, f"{c.t_us:,.1f}", f"{c.d:,.0f}"] for c in configs]
    print("\n" + table(["configuration", "median us", "distances"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k Debian, 10 queries, 2 runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (5; 2 quick)")
    parser.add_argument("--queries", type=int, default=None, help="per configuration (30)")
    parser.add_argument("--data-dir", type=Path, help="keep (and reuse) the loaded database here")
    parser.add_argument("--details", action="store_true", help="print every configuration")
    parser.add_argument(
        "--evict-mib",
        type=_mib,
        default=16,
        help="MiB written over before each search (0: none)",
    )
    parser.add_argument(
        "--exact-max-rows", type=int, default=4096,
        help="fit the exact scan on n up to this (where it competes with the indexes)",
    )  # fmt: skip
    parser.add_argument(
        "--check-synthetic", action="store_true",
        help="also measure the synthetic set (128-d, L2): its graph searches join the graph "
        "fit (a second dimension), the rest is checked against the Debian fit",
    )  # fmt: skip
    args = parser.parse_args()
    args.runs = args.runs or (2 if args.quick else 5)
    args.queries = args.queries or (10 if args.quick else 30)
    command = " ".join([Path(sys.executable).name, "-m", "bench.calibrate", *sys.argv[1:]])
    print(f"# Planner calibration\n\n{machine()}\ncommand: {command}")
    with threadpool_limits(1):
        world = debian_world(args.quick, args.data_dir)
        try:
            configs = measure_world(world, args)
        finally:
            world.close()
        other, checked = None, None
        if args.check_synthetic:
            other = synthetic_world(args.quick, args.data_dir)
            try:
                checked = measure_world(other, args)
            finally:
                other.close()
        graphs_too = None if other is None or checked is None else (other.dim, checked)
        model, notes = fit(world, configs, args.exact_max_rows, graphs_too)
        if args.details:
            print_details(configs)
        print("\nFits:\n" + "\n".join(f"- {line}" for line in notes))
        print("\nThe fitted model's own estimates (its formulas and the counts it assumes)")
        print("against the measurements:\n")
        print(model_check(world, configs, model))
        old = planner.CostModel()
        print("\nCostModel (fitted; the current default in brackets):\n")
        for f in fields(planner.CostModel):
            kind = type(getattr(old, f.name)).__name__
            print(f"    {f.name}: {kind} = {getattr(model, f.name)}  # [{getattr(old, f.name)}]")
        if other is not None and checked is not None:
            print(
                "\n## The same model on the synthetic set (128-d, L2): its graph searches are "
                "in the graph fit, the rest is not fitted there"
            )
            if args.details:
                print_details(checked)
            lines = distance_notes(unfiltered_curator(checked), model.curator_distance_scale)
            print("\nCurator distances, unfiltered:\n" + "\n".join(lines) + "\n")
            print(model_check(other, checked, model))


if __name__ == "__main__":
    main()
