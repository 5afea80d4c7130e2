"""The Grafana dashboard's panels, computed from real /metrics scrapes and drawn with matplotlib.

    python -m bench.dashboard                  # ~90 s of workload, writes docs/dashboard.png
    python -m bench.dashboard --seconds 30 --out /tmp/dashboard.png

No Grafana can be installed here, so this is not a screenshot: it starts a real `shoal serve`
(fresh data dir, free loopback port, `--durability fsync`), creates the `debian` collection
(cosine, 384 dimensions, the Debian schema, `index: {"curator_min_points": 10000}`) and drives a
mixed workload from 3 client threads (one httpx.Client each):

- upserts of Debian points owned by their `tenant`, in batches of 100-500 points of one owner
  (the 78 tenants owning at least 100 points, 46,005 points; the batches are shuffled and paced
  so the whole set is loaded over 85% of the run, then batches are sent again as updates at the
  same pace); the collection crosses 10,000 points early, so the Curator index trains mid-run;
- tenant queries (k=10) with the vector of a point no loaded tenant owns (the points of the
  tenants under 100 points are held out), half as a tenant that reads 1,000 points or more
  (answered by the Curator once it is trained), half as a smaller one (always exact);
- a few deletes of 1-3 ids, some 404s (another tenant's point, an unknown collection, an
  unmatched path) and 422s (a 383-dimension query, `k: 0`, a zero vector under cosine).

A scraper thread GETs /metrics every 2 s and parses it with prometheus_client's text parser,
keeping every sample (plus the `instance` and `job` labels Prometheus would attach).

Then each panel of deploy/grafana/dashboards/shoal.json is evaluated from its own `expr`, by a
small evaluator of the PromQL the dashboard uses (`sum`/`min`/`max` [by (...)], `rate()`,
`histogram_quantile()`, `/`, label matchers `= != =~ !~`; anything else raises), at every scrape
time: `$instance` and `$collection` are "All", `$__rate_interval` is 10 s.

- `rate()`: the per-second increase between the scrapes in [t - 10 s, t] (6 of them; counter
  resets handled), with Prometheus 2.x's extrapolation to the window's edges (a no-op once a
  series is 10 s old: its samples then sit on the edges). docker-compose.yml pins Prometheus
  v2.53; Prometheus 3 leaves the window's left edge out.
- `histogram_quantile()`: as Prometheus, over the bucket rates summed by `le`: linear
  interpolation inside the bucket holding the rank, the lowest bucket starting at 0, the highest
  finite bound when the rank falls in +Inf, NaN without observations.
- `sum by (...)` and the other aggregations drop the other labels; `/` matches identical label
  sets; an empty result (no 5xx at all) stays empty, so a stat panel shows "No data" as Grafana
  would.

`--promtool` also runs every panel query at every scrape through `promtool test rules`
(Prometheus's own engine) over the same series and compares. Stat panels show their instant
query at the last scrape; time-series panels show every series with a value (a series that is
NaN throughout, such as the p99 of a route with no request in any window, is left out). The
panels are drawn in the dashboard's grid (`gridPos`) with its titles, units, stacking, legends
and the CPU panel's right axis.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.common import REPO, SCHEMA, Debian, Server, TempDir, code_version, load_debian

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "shoal.json"
OUT = REPO / "docs" / "dashboard.png"
COLLECTION = "debian"
CLIENTS = 3
SCRAPE_S = 2.0
RATE_WINDOW_S = 10.0
MIN_BATCH, MAX_BATCH = 100, 500
BIG_TENANT = 1000  # index.curator_min_tenant_points (default): bigger tenants use the Curator
LOAD_SHARE = 0.85  # the new points are paced over this share of the run
TEMPLATE = {"$instance": ".*", "$collection": ".*", "$__rate_interval": f"{RATE_WINDOW_S:g}s"}
TITLE = (
    "Shoal dashboard panels, computed from real /metrics scrapes "
    "(drawn with matplotlib; Grafana not available here)"
)

# ---------------------------------------------------------------------------------------------
# Workload


@dataclass
class Chunk:
    tenant: str
    ids: list[str]
    body: bytes


@dataclass
class Plan:
    chunks: list[Chunk]
    held_out: np.ndarray  # query vectors: points of tenants that are never loaded
    points: int


def plan(data: Debian, seed: int) -> Plan:
    """Owner batches of 100-500 points of the tenants owning >= 100, shuffled, pre-encoded."""
    rng = random.Random(seed)
    chunks: list[Chunk] = []
    held_out: list[int] = []
    for tenant, rows in data.rows_by_tenant().items():
        if len(rows) < MIN_BATCH:
            held_out.extend(rows)
            continue
        start = 0
        while start < len(rows):
            left = len(rows) - start
            size = left if left <= MAX_BATCH else rng.randint(MIN_BATCH, min(MAX_BATCH, left - 100))
            part = rows[start : start + size]
            start += size
            points = [
                {"id": data.points[i]["id"], "vector": data.vectors[i]}
                | {"attributes": data.attributes(i)}
                for i in part
            ]
            body = orjson.dumps({"points": points}, option=orjson.OPT_SERIALIZE_NUMPY)
            chunks.append(Chunk(tenant, [data.points[i]["id"] for i in part], body))
    rng.shuffle(chunks)
    return Plan(chunks, data.vectors[held_out], sum(len(c.ids) for c in chunks))


def _tenant_path(tenant: str, rest: str) -> str:
    return f"/v1/collections/{COLLECTION}/tenants/{quote(tenant, safe='')}/{rest}"


class Workload:
    """Three client threads sharing the load plan; `outcomes` counts (kind, status)."""

    def __init__(self, url: str, load: Plan, seconds: float, seed: int):
        self.url = url
        self.load = load
        self.seconds = seconds
        self.seed = seed
        self.lock = threading.Lock()
        self.next_chunk = 0
        self.claimed_points = 0
        self.sent: list[Chunk] = []
        self.loaded: dict[str, int] = {}  # tenant -> points acknowledged
        self.outcomes: Counter[tuple[str, int]] = Counter()
        self.errors: list[str] = []
        self.rate = load.points / (LOAD_SHARE * seconds)  # points per second
        self.started = 0.0

    def run(self) -> None:
        self.started = time.monotonic()
        threads = [
            threading.Thread(target=self._client, args=(i,), name=f"client-{i}")
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _claim(self, rng: random.Random) -> tuple[Chunk, bool] | None:
        """The next batch to upsert if the pace allows one: a new one, or an update at the end."""
        with self.lock:
            allowed = self.rate * (time.monotonic() - self.started)
            if self.next_chunk < len(self.load.chunks):
                chunk = self.load.chunks[self.next_chunk]
                if self.claimed_points + len(chunk.ids) > allowed:
                    return None
                self.next_chunk += 1
                self.claimed_points += len(chunk.ids)
                return chunk, True
            if not self.sent:
                return None
            chunk = rng.choice(self.sent)
            if self.claimed_points + len(chunk.ids) > allowed:
                return None
            self.claimed_points += len(chunk.ids)
            return chunk, False

    def _record(self, kind: str, response: httpx.Response, expected: set[int]) -> None:
        with self.lock:
            self.outcomes[kind, response.status_code] += 1
            if response.status_code not in expected and len(self.errors) < 20:
                self.errors.append(f"{kind}: {response.status_code} {response.text[:200]}")

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 100 + index)
        end = self.started + self.seconds
        with httpx.Client(base_url=self.url, timeout=60.0) as client:
            while time.monotonic() < end:
                roll = rng.random()
                if roll < 0.5:
                    claimed = self._claim(rng)
                    if claimed is not None:
                        self._upsert(client, *claimed)
                    else:
                        self._query(client, rng)
                elif roll < 0.52:
                    self._delete(client, rng)
                elif roll < 0.55:
                    self._not_found(client, rng)
                elif roll < 0.58:
                    self._invalid(client, rng)
                else:
                    self._query(client, rng)

    def _upsert(self, client: httpx.Client, chunk: Chunk, new: bool) -> None:
        response = client.put(
            _tenant_path(chunk.tenant, "points"),
            content=chunk.body,
            headers={"content-type": "application/json"},
        )
        self._record("upsert" if new else "upsert (update)", response, {200})
        if response.status_code == 200 and new:
            with self.lock:
                self.sent.append(chunk)
                self.loaded[chunk.tenant] = self.loaded.get(chunk.tenant, 0) + len(chunk.ids)

    def _pick_tenant(self, rng: random.Random) -> str | None:
        with self.lock:
            big = [t for t, n in self.loaded.items() if n >= BIG_TENANT]
            small = [t for t, n in self.loaded.items() if n < BIG_TENANT]
        pool = big if big and (rng.random() < 0.5 or not small) else small
        return rng.choice(pool) if pool else None

    def _query(self, client: httpx.Client, rng: random.Random) -> None:
        tenant = self._pick_tenant(rng)
        if tenant is None:
            time.sleep(0.01)
            return
        vector = self.load.held_out[rng.randrange(len(self.load.held_out))]
        body = orjson.dumps({"vector": vector, "k": 10}, option=orjson.OPT_SERIALIZE_NUMPY)
        response = client.post(
            _tenant_path(tenant, "query"),
            content=body,
            headers={"content-type": "application/json"},
        )
        self._record("query", response, {200})

    def _delete(self, client: httpx.Client, rng: random.Random) -> None:
        with self.lock:
            chunk = rng.choice(self.sent) if self.sent else None
        if chunk is None:
            return
        ids = rng.sample(chunk.ids, rng.randint(1, 3))
        response = client.post(_tenant_path(chunk.tenant, "points/delete"), json={"ids": ids})
        self._record("delete", response, {200})

    def _not_found(self, client: httpx.Client, rng: random.Random) -> None:
        with self.lock:
            pair = rng.sample(self.sent, 2) if len(self.sent) >= 2 else None
        which = rng.randrange(3)
        if which == 0 and pair is not None and pair[0].tenant != pair[1].tenant:
            # another tenant's point: 404, never 403
            path = _tenant_path(pair[0].tenant, f"points/{quote(pair[1].ids[0], safe='')}")
            response = client.get(path)
        elif which == 1:
            vector = [0.05] * 384
            response = client.post("/v1/collections/nope/tenants/t/query", json={"vector": vector})
        else:
            response = client.get("/v1/colections")
        self._record("404", response, {404})

    def _invalid(self, client: httpx.Client, rng: random.Random) -> None:
        tenant = self._pick_tenant(rng) or "t"
        which = rng.randrange(3)
        if which == 0:
            response = client.post(_tenant_path(tenant, "query"), json={"vector": [0.05] * 383})
        elif which == 1:
            body = {"vector": [0.05] * 384, "k": 0}
            response = client.post(_tenant_path(tenant, "query"), json=body)
        else:
            body = {"points": [{"id": "zero", "vector": [0.0] * 384}]}
            response = client.put(_tenant_path(tenant, "points"), json=body)
        self._record("422", response, {422})


# ---------------------------------------------------------------------------------------------
# Scrapes

LabelSet = tuple[tuple[str, str], ...]


@dataclass
class Scrapes:
    """Every sample of every scrape: (sample name, labels) -> {scrape index: value}."""

    times: list[float] = field(default_factory=list)
    samples: dict[tuple[str, LabelSet], dict[int, float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)  # how long each scrape took

    def add(self, at: float, text: str, target: dict[str, str]) -> None:
        index = len(self.times)
        self.times.append(at)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted({**sample.labels, **target}.items()))
                self.samples.setdefault((sample.name, labels), {})[index] = float(sample.value)

    def arrays(self) -> dict[str, dict[LabelSet, np.ndarray]]:
        """name -> labels -> values at each scrape (NaN where the series was absent)."""
        out: dict[str, dict[LabelSet, np.ndarray]] = {}
        for (name, labels), values in self.samples.items():
            array = np.full(len(self.times), np.nan)
            for index, value in values.items():
                array[index] = value
            out.setdefault(name, {})[labels] = array
        return out


def scrape_loop(url: str, scrapes: Scrapes, stop: threading.Event, target: dict[str, str]) -> None:
    due, wall = time.monotonic(), time.time()
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for index in itertools.count():
            # Stamped with its scheduled start on the 2 s grid (Prometheus schedules a target's
            # scrapes on such a grid too); the scrape really starts within a few ms of it.
            at = wall + index * SCRAPE_S
            began = time.perf_counter()
            response = client.get("/metrics")
            response.raise_for_status()
            scrapes.seconds.append(time.perf_counter() - began)
            scrapes.add(at, response.text, target)
            due += SCRAPE_S
            if stop.wait(max(0.0, due - time.monotonic())):
                return


# ---------------------------------------------------------------------------------------------
# The PromQL the dashboard uses


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # label, op, value


@dataclass
class Rate:
    selector: Selector
    window_s: float


@dataclass
class Aggregate:
    op: str
    by: tuple[str, ...] | None
    expr: Any


@dataclass
class Quantile:
    q: float
    expr: Any


@dataclass
class Divide:
    lhs: Any
    rhs: Any


@dataclass
class Or:
    lhs: Any
    rhs: Any


@dataclass
class Constant:
    """`vector(x)`: one label-less series of value x."""

    value: float


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?[smh]?)|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>=~|!~|!=|=|[(){}\[\],/]))'
)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot tokenize {expr[pos:]!r}")
        out.append((match.lastgroup or "", match.group(match.lastgroup or 0)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, expr: str):
        for name, value in TEMPLATE.items():
            expr = expr.replace(name, value)
        self.expr = expr
        self.tokens = _tokens(expr)
        self.pos = 0

    def parse(self) -> Any:
        node = self._expr()
        if self.pos != len(self.tokens):
            raise ValueError(f"unsupported PromQL (trailing input): {self.expr}")
        return node

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _next(self, kind: str | None = None) -> str:
        if self.pos >= len(self.tokens):
            raise ValueError(f"unexpected end of {self.expr}")
        token_kind, value = self.tokens[self.pos]
        if kind is not None and token_kind != kind:
            raise ValueError(f"expected {kind}, got {value!r} in {self.expr}")
        self.pos += 1
        return value

    def _expect(self, value: str) -> None:
        got = self._next()
        if got != value:
            raise ValueError(f"expected {value!r}, got {got!r} in {self.expr}")

    def _expr(self) -> Any:
        node = self._quotient()
        while self._peek() == "or":  # `or` binds looser than `/`
            self._next()
            node = Or(node, self._quotient())
        return node

    def _quotient(self) -> Any:
        node = self._term()
        while self._peek() == "/":
            self._next()
            node = Divide(node, self._term())
        return node

    def _term(self) -> Any:
        if self._peek() == "(":
            self._next()
            node = self._expr()
            self._expect(")")
            return node
        name = self._next("id")
        if name in ("sum", "min", "max"):
            by = None
            if self._peek() == "by":
                self._next()
                self._expect("(")
                labels = [self._next("id")]
                while self._peek() == ",":
                    self._next()
                    labels.append(self._next("id"))
                self._expect(")")
                by = tuple(labels)
            self._expect("(")
            node = self._expr()
            self._expect(")")
            return Aggregate(name, by, node)
        if name == "rate":
            self._expect("(")
            selector = self._selector(self._next("id"))
            self._expect("[")
            duration = self._next("num")
            self._expect("]")
            self._expect(")")
            unit = duration[-1] if duration[-1] in _UNITS else "s"
            return Rate(selector, float(duration.rstrip("smh")) * _UNITS[unit])
        if name == "vector":
            self._expect("(")
            value = float(self._next("num"))
            self._expect(")")
            return Constant(value)
        if name == "histogram_quantile":
            self._expect("(")
            q = float(self._next("num"))
            self._expect(",")
            node = self._expr()
            self._expect(")")
            return Quantile(q, node)
        if self._peek() == "(":
            raise ValueError(f"unsupported PromQL function {name}() in {self.expr}")
        return self._selector(name)

    def _selector(self, name: str) -> Selector:
        matchers = []
        if self._peek() == "{":
            self._next()
            while self._peek() != "}":
                label = self._next("id")
                op = self._next("op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise ValueError(f"bad matcher {op!r} in {self.expr}")
                matchers.append((label, op, json.loads(self._next("str"))))
                if self._peek() == ",":
                    self._next()
            self._next()
        return Selector(name, matchers)


def _matches(labels: LabelSet, matchers: list[tuple[str, str, str]]) -> bool:
    values = dict(labels)
    for label, op, wanted in matchers:
        value = values.get(label, "")
        ok = {
            "=": value == wanted,
            "!=": value != wanted,
            "=~": re.fullmatch(wanted, value) is not None,
            "!~": re.fullmatch(wanted, value) is None,
        }[op]
        if not ok:
            return False
    return True


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's bucketQuantile over (upper bound, cumulative count) pairs."""
    if math.isnan(q) or not buckets:
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if buckets[-1][0] != math.inf or len(buckets) < 2:
        return math.nan
    counts, peak = [], 0.0  # rates of cumulative buckets can dip a little: keep them monotonic
    for _, count in buckets:
        peak = max(peak, count)
        counts.append(peak)
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, count in enumerate(counts) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start = 0.0 if b == 0 else buckets[b - 1][0]
    below = 0.0 if b == 0 else counts[b - 1]
    end, count = buckets[b][0], counts[b] - below
    return start + (end - start) * (rank - below) / count


class Evaluator:
    """Evaluates a parsed query at every scrape time: labels -> values per scrape."""

    def __init__(self, scrapes: Scrapes):
        self.times = np.asarray(scrapes.times)
        self.series = scrapes.arrays()

    def evaluate(self, expr: str) -> dict[LabelSet, np.ndarray]:
        return self._eval(_Parser(expr).parse())

    def _eval(self, node: Any) -> dict[LabelSet, np.ndarray]:
        if isinstance(node, Selector):
            return {
                labels: values
                for labels, values in self.series.get(node.name, {}).items()
                if _matches(labels, node.matchers)
            }
        if isinstance(node, Rate):
            return {k: self._rate(v, node.window_s) for k, v in self._eval(node.selector).items()}
        if isinstance(node, Aggregate):
            return self._aggregate(node.op, node.by, self._eval(node.expr))
        if isinstance(node, Quantile):
            return self._quantile(node.q, self._eval(node.expr))
        if isinstance(node, Constant):
            return {(): np.full(len(self.times), node.value)}
        if isinstance(node, Or):
            # Per scrape: a right-hand series fills in where no left-hand one with its labels has
            # a value.
            lhs, rhs = self._eval(node.lhs), self._eval(node.rhs)
            merged = dict(lhs)
            for labels, values in rhs.items():
                left = lhs.get(labels)
                merged[labels] = values if left is None else np.where(np.isnan(left), values, left)
            return merged
        if isinstance(node, Divide):
            lhs, rhs = self._eval(node.lhs), self._eval(node.rhs)
            with np.errstate(divide="ignore", invalid="ignore"):
                return {k: lhs[k] / rhs[k] for k in lhs if k in rhs}
        raise TypeError(node)

    def _rate(self, values: np.ndarray, window_s: float) -> np.ndarray:
        """Prometheus 2.x `rate()`: the increase over the samples in [t - window, t] (counter
        resets handled), extrapolated to the window's edges as `extrapolatedRate` does, per
        second of the window. Samples sit on the window's edges once a series is 10 s old, so
        the extrapolation only changes a young series' first values."""
        out = np.full(len(self.times), np.nan)
        for i, now in enumerate(self.times):
            start = now - window_s
            inside = [
                j
                for j in range(i + 1)
                if self.times[j] >= start - 1e-6 and not math.isnan(values[j])
            ]
            if len(inside) < 2:
                continue
            first, last = values[inside[0]], values[inside[-1]]
            increase = last - first
            for a, b in itertools.pairwise(inside):
                if values[b] < values[a]:
                    increase += values[a]  # a counter reset
            sampled = self.times[inside[-1]] - self.times[inside[0]]
            to_start = self.times[inside[0]] - start
            to_end = now - self.times[inside[-1]]
            average = sampled / (len(inside) - 1)
            if increase > 0 and first >= 0:
                to_start = min(to_start, sampled * (first / increase))  # not below zero
            threshold = average * 1.1
            extended = sampled
            extended += to_start if to_start < threshold else average / 2
            extended += to_end if to_end < threshold else average / 2
            out[i] = increase * (extended / sampled) / window_s  # Go's order of operations
        return out

    @staticmethod
    def _aggregate(
        op: str, by: tuple[str, ...] | None, vector: dict[LabelSet, np.ndarray]
    ) -> dict[LabelSet, np.ndarray]:
        groups: dict[LabelSet, list[np.ndarray]] = {}
        for labels, values in vector.items():
            have = dict(labels)
            key = tuple((name, have[name]) for name in by or () if have.get(name, "") != "")
            groups.setdefault(key, []).append(values)
        out = {}
        for key, members in groups.items():
            stack = np.vstack(members)
            empty = np.all(np.isnan(stack), axis=0)
            neutral = {"sum": 0.0, "min": np.inf, "max": -np.inf}[op]
            filled = np.where(np.isnan(stack), neutral, stack)
            reduced = {"sum": np.sum, "min": np.min, "max": np.max}[op](filled, axis=0)
            out[key] = np.where(empty, np.nan, reduced)
        return out

    def _quantile(self, q: float, vector: dict[LabelSet, np.ndarray]) -> dict[LabelSet, np.ndarray]:
        groups: dict[LabelSet, list[tuple[float, np.ndarray]]] = {}
        for labels, values in vector.items():
            have = dict(labels)
            if "le" not in have:
                continue
            key = tuple(item for item in labels if item[0] != "le")
            groups.setdefault(key, []).append((float(have["le"]), values))
        out = {}
        for key, buckets in groups.items():
            out[key] = np.array(
                [
                    histogram_quantile(q, [(le, v[i]) for le, v in buckets if not math.isnan(v[i])])
                    for i in range(len(self.times))
                ]
            )
        return out


def _go_duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    return (f"{minutes}m" if minutes else "") + (f"{rest}s" if rest or not minutes else "")


def promtool_check(dashboard: dict, scrapes: Scrapes, workdir: Path) -> tuple[int, list[str]]:
    """Every panel query at every scrape, by `promtool test rules` (Prometheus's own engine)
    over the scraped series, against this module's evaluator: (values compared, mismatches)."""
    import subprocess

    def quoted(labels: Any) -> str:
        return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels)) + "}"

    n = len(scrapes.times)
    series = [
        {
            "series": name + quoted(labels).replace(", ", ","),
            "values": " ".join(repr(values[i]) if i in values else "_" for i in range(n)),
        }
        for (name, labels), values in scrapes.samples.items()
    ]
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in TEMPLATE.items():
                expr = expr.replace(name, value)
            exprs.append(expr)
    never = [{"labels": '{__name__="never"}', "value": -1}]  # fails, so promtool prints "got"
    tests = [
        {"expr": e, "eval_time": _go_duration(int(i * SCRAPE_S)), "exp_samples": never}
        for e in exprs
        for i in range(n)
    ]
    interval = f"{SCRAPE_S:g}s"
    test = {"interval": interval, "input_series": series, "promql_expr_test": tests}
    config = {"rule_files": [], "evaluation_interval": interval, "tests": [test]}
    path = workdir / "promtool-test.json"
    path.write_text(json.dumps(config))
    run = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    got: dict[tuple[str, str], dict[str, float]] = {}
    for block in re.split(r"\n\s*expr: ", run.stdout + run.stderr)[1:]:
        head = re.match(r'"((?:[^"\\]|\\.)*)", time: (\S+),', block)
        if head is None or "got:" not in block:
            continue
        line = block.split("got:", 1)[1].split("\n")[0]
        values = re.finditer(r'(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}) ([^,\s]+)', line)
        got[json.loads(f'"{head.group(1)}"'), head.group(2)] = {
            m.group(1): float(m.group(2)) for m in values
        }
    grid = Scrapes(times=[i * SCRAPE_S for i in range(n)], samples=scrapes.samples)
    evaluator, compared, mismatches = Evaluator(grid), 0, []
    for expr in exprs:
        mine = evaluator.evaluate(expr)
        for i in range(n):
            key = (expr, _go_duration(int(i * SCRAPE_S)))
            if key not in got:
                mismatches.append(f"promtool gave no answer for {key}")
                continue
            ours = {quoted(k): v[i] for k, v in mine.items() if not math.isnan(v[i])}
            theirs = {k: v for k, v in got[key].items() if not math.isnan(v)}
            if ours.keys() != theirs.keys():
                mismatches.append(f"{key}: series {sorted(ours)} vs promtool {sorted(theirs)}")
                continue
            for labels, value in ours.items():
                compared += 1
                if not math.isclose(value, theirs[labels], rel_tol=1e-9, abs_tol=1e-12):
                    mismatches.append(f"{key} {labels}: {value} vs promtool {theirs[labels]}")
    return compared, mismatches


# ---------------------------------------------------------------------------------------------
# Drawing, Grafana-like (dark theme, palette-classic)

BG = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
DIM = "#9fa1ad"
GRID = "#2a2d33"
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A"}
PALETTE = [
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
    "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477",
]  # fmt: skip
WIDTH_IN, HEIGHT_IN, DPI = 18.0, 24.0, 100
GRID_ROWS_PX_TOP, MARGIN_PX, GAP_PX = 96, 12, 8


def _number(value: float, decimals: int | None) -> str:
    if decimals is not None:
        return f"{value:.{decimals}f}"
    if value == 0:
        return "0"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return text


def _scaled(value: float, steps: list[tuple[float, str]], decimals: int | None) -> str:
    """Value in the largest step not above it ([(factor, suffix)] ascending)."""
    factor, suffix = steps[0]
    for f, s in steps:
        if abs(value) >= f:
            factor, suffix = f, s
    return f"{_number(value / factor, decimals)}{suffix}"


def fmt(value: float, unit: str, decimals: int | None = None) -> str:
    """A value in a Grafana unit (the ones the dashboard uses)."""
    if value is None or math.isnan(value):
        return "No data"
    if unit == "s":
        if value == 0:
            return "0 s"
        return _scaled(value, [(1e-6, " µs"), (1e-3, " ms"), (1.0, " s")], decimals)
    if unit == "percentunit":
        return f"{_number(value * 100, decimals)}%"
    if unit == "reqps":
        return f"{_number(value, decimals)} req/s"
    if unit == "ops":
        return f"{_number(value, decimals)} ops/s"
    if unit == "bytes":
        steps = [(1.0, " B"), (2**10, " KiB"), (2**20, " MiB"), (2**30, " GiB"), (2**40, " TiB")]
        return _scaled(value, steps, decimals)
    if unit == "short":
        steps = [(1.0, ""), (1e3, " K"), (1e6, " Mil"), (1e9, " Bil")]
        return _scaled(value, steps, decimals) if abs(value) >= 1 else _number(value, decimals)
    return _number(value, decimals)


def _legend(format_: str, labels: LabelSet) -> str:
    values = dict(labels)
    if not format_:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), ""), format_).strip()


def _stat_color(panel: dict, value: float) -> tuple[str, str | None]:
    """(colour, mapped text) from the panel's value mappings, else its thresholds."""
    defaults = panel["fieldConfig"]["defaults"]
    if math.isnan(value):
        return DIM, None
    for mapping in defaults.get("mappings", []):
        if mapping.get("type") == "value":
            for key, result in mapping["options"].items():
                if float(key) == value:
                    return NAMED.get(result.get("color"), TEXT), result.get("text")
    color = TEXT
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = NAMED.get(step["color"], step["color"])
    return color, None


class Canvas:
    """The figure in pixels, top-left origin, with the dashboard's 24-column grid."""

    def __init__(self, rows: int):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.fig = plt.figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, facecolor=BG)
        self.w, self.h = WIDTH_IN * DPI, HEIGHT_IN * DPI
        self.unit_w = (self.w - 2 * MARGIN_PX) / 24
        self.unit_h = (self.h - GRID_ROWS_PX_TOP - MARGIN_PX) / rows

    def panel_box(self, grid: dict) -> tuple[float, float, float, float]:
        """(left, top, width, height) in pixels."""
        left = MARGIN_PX + grid["x"] * self.unit_w + GAP_PX / 2
        top = GRID_ROWS_PX_TOP + grid["y"] * self.unit_h + GAP_PX / 2
        return left, top, grid["w"] * self.unit_w - GAP_PX, grid["h"] * self.unit_h - GAP_PX

    def frac(self, left: float, top: float, width: float, height: float) -> list[float]:
        return [left / self.w, 1 - (top + height) / self.h, width / self.w, height / self.h]

    def text(self, x: float, y: float, s: str, **kwargs: Any) -> None:
        self.fig.text(x / self.w, 1 - y / self.h, s, **kwargs)

    def background(self, box: tuple[float, float, float, float], title: str) -> None:
        from matplotlib.patches import FancyBboxPatch

        left, top, width, height = box
        x, y, w, h = self.frac(left, top, width, height)
        self.fig.patches.append(
            FancyBboxPatch(
                (x, y), w, h, boxstyle="round,pad=0,rounding_size=0.002",
                transform=self.fig.transFigure, facecolor=PANEL, edgecolor=BORDER, lw=1, zorder=-1,
            )
        )  # fmt: skip
        self.text(left + 10, top + 8, title, color=TEXT, fontsize=11, fontweight="bold", va="top")


def _locator(unit: str, integer: bool = False) -> Any:
    """Ticks at round values of the unit's scale (1, 2, 5 MiB rather than 1,000,000 B)."""
    from matplotlib.ticker import Locator, MaxNLocator

    inner = MaxNLocator(nbins=5, min_n_ticks=3, integer=integer)
    if unit != "bytes":
        return inner

    class Scaled(Locator):
        def __call__(self) -> Any:
            low, high = self.axis.get_view_interval()
            return self.tick_values(low, high)

        def tick_values(self, vmin: float, vmax: float) -> Any:
            factor = 1.0
            while abs(vmax) / factor >= 1024:
                factor *= 1024
            return inner.tick_values(vmin / factor, vmax / factor) * factor

    return Scaled()


def _time_ticks(times: list[datetime], width_px: float) -> list[datetime]:
    """Round clock times about every 80 px, none close enough to an edge to overflow it."""
    first, last = times[0].timestamp(), times[-1].timestamp()
    span = last - first
    wanted = span / max(1.0, width_px / 80)
    step = next((s for s in (5, 10, 15, 20, 30, 60, 120, 300) if s >= wanted), 600)
    margin = span * 30 / width_px  # half a label
    tick = math.ceil((first + margin) / step) * step
    ticks = []
    while tick <= last - margin:
        ticks.append(datetime.fromtimestamp(tick))
        tick += step
    return ticks


def _style_axes(
    ax: Any, unit: str, decimals: int | None, times: list[datetime], width_px: float
) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=GRID, lw=0.8)
    ax.tick_params(colors=DIM, labelsize=9, length=0, pad=4)
    ax.yaxis.set_major_locator(_locator(unit))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v, unit, decimals)))
    ax.set_xticks(_time_ticks(times, width_px))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.set_xlim(times[0], times[-1])


def draw(dashboard: dict, evaluator: Evaluator, out: Path, subtitle: str) -> list[str]:
    """Every panel in gridPos order; returns one line per panel on what was drawn."""
    from matplotlib.lines import Line2D

    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    canvas = Canvas(rows)
    fig = canvas.fig
    times = [datetime.fromtimestamp(t) for t in evaluator.times]
    canvas.text(MARGIN_PX + 4, 22, TITLE, color=TEXT, fontsize=15, fontweight="bold", va="top")
    canvas.text(MARGIN_PX + 4, 56, subtitle, color=DIM, fontsize=10.5, va="top")
    report = []
    for panel in panels:
        box = canvas.panel_box(panel["gridPos"])
        canvas.background(box, panel["title"])
        defaults = panel["fieldConfig"]["defaults"]
        unit, decimals = defaults.get("unit", "none"), defaults.get("decimals")
        left, top, width, height = box
        if panel["type"] == "stat":
            result = evaluator.evaluate(panel["targets"][0]["expr"])
            values = [v[-1] for v in result.values() if not math.isnan(v[-1])]
            value = values[0] if values else math.nan
            color, mapped = _stat_color(panel, value)
            shown = mapped or fmt(value, unit, decimals)
            canvas.text(
                left + width / 2, top + height / 2 + 14, shown, color=color, fontsize=30,
                fontweight="bold", ha="center", va="center",
            )  # fmt: skip
            if not values:
                canvas.text(
                    left + width / 2, top + height - 14, "(the query returned no series)",
                    color=DIM, fontsize=9, ha="center", va="bottom",
                )  # fmt: skip
            report.append(f"{panel['title']}: {shown}")
            continue
        lines: list[tuple[str, str, np.ndarray]] = []  # refId, legend, values
        for target in panel["targets"]:
            result = evaluator.evaluate(target["expr"])
            named = sorted(
                (_legend(target.get("legendFormat", ""), labels), values)
                for labels, values in result.items()
                if not np.all(np.isnan(values))
            )
            lines += [(target["refId"], name, values) for name, values in named]
        overrides = {
            o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
            for o in panel["fieldConfig"].get("overrides", [])
            if o["matcher"]["id"] == "byFrameRefID"
        }
        right_axis = any(v.get("custom.axisPlacement") == "right" for v in overrides.values())
        stacking = defaults.get("custom", {}).get("stacking", {}).get("mode", "none") == "normal"
        legend_names = [name for _, name, _ in lines]
        longest = max((len(n) for n in legend_names), default=1)
        plot_w = width - 82 - (70 if right_axis else 16)
        columns = max(1, min(len(lines), int((width - 20) // (longest * 6.6 + 34))))
        legend_rows = math.ceil(len(lines) / columns) if lines else 0
        legend_h = legend_rows * 17 + 6
        plot_top = top + 36
        plot_h = height - 36 - 26 - legend_h
        ax = fig.add_axes(canvas.frac(left + 82, plot_top, plot_w, plot_h))
        _style_axes(ax, unit, decimals, times, plot_w)
        axes = {"": ax}
        if right_axis:
            twin = ax.twinx()
            for spine in twin.spines.values():
                spine.set_visible(False)
            twin.tick_params(colors=DIM, labelsize=9, length=0, pad=4)
            axes["right"] = twin
        handles = []
        stack = np.zeros(len(times))
        for index, (ref, name, values) in enumerate(lines):
            color = PALETTE[index % len(PALETTE)]
            override = overrides.get(ref, {})
            target_ax = axes["right"] if override.get("custom.axisPlacement") == "right" else ax
            if target_ax is not ax:
                from matplotlib.ticker import FuncFormatter

                unit_r, dec_r = override.get("unit", unit), override.get("decimals", decimals)
                target_ax.yaxis.set_major_locator(_locator(unit_r, integer=dec_r == 0))
                target_ax.yaxis.set_major_formatter(
                    FuncFormatter(lambda v, _, u=unit_r, d=dec_r: fmt(v, u, d))
                )
            fill = {"color": color, "alpha": 0.1, "lw": 0}  # fillOpacity 10
            if stacking:
                base = stack.copy()
                stack = stack + np.nan_to_num(values)
                shown = np.where(np.isnan(values), np.nan, stack)
                target_ax.fill_between(times, base, shown, where=~np.isnan(values), **fill)
            else:
                shown = values
                target_ax.fill_between(times, 0, shown, where=~np.isnan(values), **fill)
            target_ax.plot(times, shown, color=color, lw=1.4)
            handles.append(Line2D([], [], color=color, lw=4))
            last = values[~np.isnan(values)]
            report_value = fmt(float(last[-1]), override.get("unit", unit)) if len(last) else "-"
            report.append(f"{panel['title']} / {name}: last {report_value}")
        for axis in axes.values():
            low, high = axis.get_ylim()
            axis.set_ylim(min(0.0, low), high if high > 0 else 1.0)  # axisSoftMin 0
        if not lines:
            ax.text(0.5, 0.5, "No data", color=DIM, fontsize=14, ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            report.append(f"{panel['title']}: no data")
        else:
            fig.legend(
                handles, legend_names, loc="upper left", frameon=False, ncol=columns,
                bbox_to_anchor=((left + 8) / canvas.w, 1 - (top + height - legend_h) / canvas.h),
                fontsize=9, labelcolor=TEXT, handlelength=1.0, handletextpad=0.5,
                columnspacing=1.4, borderaxespad=0, borderpad=0, labelspacing=0.35,
            )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor=BG)
    canvas.plt.close(fig)
    return report


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="workload duration")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=Path, help="also write every scraped sample as JSON")
    parser.add_argument(
        "--promtool",
        action="store_true",
        help="also evaluate every panel query at every scrape with promtool and compare",
    )
    args = parser.parse_args()

    dashboard = json.loads(DASHBOARD.read_text())
    data = load_debian()
    load = plan(data, args.seed)
    print(f"plan: {len(load.chunks)} upserts of 100-500 points, {load.points} points, "
          f"{len(load.held_out)} held-out query vectors")  # fmt: skip
    scrapes = Scrapes()
    with TempDir() as tmp:
        server = Server(tmp / "data", "--durability", "fsync").start()
        target = {"instance": f"127.0.0.1:{server.port}", "job": "shoal"}
        try:
            with httpx.Client(base_url=server.url, timeout=30.0) as client:
                body = {"name": COLLECTION, "dim": 384, "metric": "cosine", "schema": SCHEMA,
                        "index": {"curator_min_points": 10000}}  # fmt: skip
                client.post("/v1/collections", json=body).raise_for_status()
            stop = threading.Event()
            scraper = threading.Thread(
                target=scrape_loop, args=(server.url, scrapes, stop, target), name="scraper"
            )
            scraper.start()
            time.sleep(SCRAPE_S)  # one scrape of the idle server first
            workload = Workload(server.url, load, args.seconds, args.seed)
            workload.run()
            stop.set()
            scraper.join()
            with httpx.Client(base_url=server.url, timeout=30.0) as client:
                info = client.get(f"/v1/collections/{COLLECTION}").json()
        finally:
            code = server.stop()
    print(f"server exit code {code}; {len(scrapes.times)} scrapes, "
          f"slowest {max(scrapes.seconds) * 1000:.0f} ms")  # fmt: skip
    for (kind, status), n in sorted(workload.outcomes.items()):
        print(f"  {kind:16} {status}: {n}")
    for error in workload.errors:
        print(f"  unexpected: {error}")
    print(f"collection at the end: {info['points']} points, {info['tenants']} tenants, "
          f"curator {info['curator']}")  # fmt: skip

    subtitle = (
        f"One real shoal serve --durability fsync (code {code_version()}), {args.seconds:g} s of "
        f"mixed workload from {CLIENTS} client threads (python -m bench.dashboard); "
        f"/metrics scraped every {SCRAPE_S:g} s ({len(scrapes.times)} scrapes).\nEach panel's "
        f"expr from deploy/grafana/dashboards/shoal.json evaluated in Python at every scrape "
        f"($__rate_interval = {RATE_WINDOW_S:g} s); stat panels show the last scrape."
    )
    if args.samples is not None:
        series = [
            {"name": name, "labels": dict(labels), "values": {str(i): v for i, v in values.items()}}
            for (name, labels), values in scrapes.samples.items()
        ]
        args.samples.write_bytes(orjson.dumps({"times": scrapes.times, "series": series}))
    report = draw(dashboard, Evaluator(scrapes), args.out, subtitle)
    print("\n".join(report))
    print(f"wrote {args.out}")
    if args.promtool:
        with TempDir() as tmp:
            compared, mismatches = promtool_check(dashboard, scrapes, tmp)
        print(f"promtool: {compared} values compared, {len(mismatches)} mismatches")
        for mismatch in mismatches[:20]:
            print(f"  {mismatch}")
        if mismatches:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
