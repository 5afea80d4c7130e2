"""Where the server's time goes during ingest.

`summarize(path)` reads a `py-spy record --gil --format raw` profile (only the thread holding the
GIL is sampled, so the shares are shares of GIL-held time, the resource the write path serializes
on) and files every sample under one stage of the write path.

`stages(...)` times the same stages in-process, single-threaded, on one request body: the costs
without HTTP, threads or sampling in the way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson

# Write-path stages: (stage, substrings of a frame); the first stage with a frame anywhere in
# the stack wins, so inner stages are listed before the calls that contain them.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    (
        "JSON parse: vectors from the bytes + orjson of the rest (event loop)",
        ("api/json_vectors.py",),
    ),
    ("JSON parse: orjson.loads of the body (event loop)", ("_OrjsonRequest.json",)),
    ("pydantic: validate UpsertRequest (event loop)", ("request_body_to_args", "model_validate")),
    ("WAL fsync: flush_wal(sync=True)", ("Store.__init__.<locals>.<lambda>", "flush_wal")),
    ("numpy: rows -> float32 matrix, finite/zero checks", ("vectors (server/validation.py",)),
    ("record encoding (encode_point)", ("encode_point",)),
    ("RocksDB: WriteBatch build + unsynced write", ("Store.append",)),
    (
        "apply to arena / point table / tenant index",
        ("upsert.<locals>.apply", "VectorArena", "PointTable", "TenantIndex"),
    ),
    ("ids + attributes validation", ("_validate_points",)),
    ("group commit wait / write mutex", ("GroupCommit", "Collection._writing")),
    (
        "endpoint: PointInput list, UpsertResponse",
        ("upsert_points", "run_upsert", "Collection.upsert"),
    ),
]
# Everything else (no write-path frame): named by the innermost frame that matches.
FRAMEWORK: list[tuple[str, tuple[str, ...]]] = [
    ("response model serialization", ("serialize_response", "jsonable_encoder", "render")),
    ("thread handoff: anyio worker pool, queues", ("anyio/", "threading.py", "queue.py")),
    ("HTTP: uvicorn/httptools read + write, body middleware", ("uvicorn/", "middleware.py")),
    ("routing, dependencies, other ASGI", ("starlette/", "fastapi/", "api/")),
    ("asyncio event loop", ("asyncio/",)),
]


def read_stacks(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


# The leaf is the endpoint wrapper itself: the handler has returned and its frame is being
# torn down, freeing the parsed body (about 2 x 192,000 float objects and their lists per
# 500-point batch): the `stages` timing "free the parsed body and model" measures the same.
_FREEING = "OrjsonRoute.get_route_handler.<locals>.route"
_LEAN_FREEING = "LeanLane.__call__"  # the lean lane's frame that drops the parsed body


def classify(stack: str) -> str:
    frames = stack.split(";")
    if _FREEING in frames[-1] or _LEAN_FREEING in frames[-1]:
        return "freeing the parsed body at handler return (event loop)"
    if "LeanLane._respond" in frames[-1]:
        return "JSON parse: orjson.loads of the body (event loop)"
    for stage, needles in STAGES:
        if any(needle in frame for frame in frames for needle in needles):
            return stage
    for frame in reversed(frames):
        for stage, needles in FRAMEWORK:
            if any(needle in frame for needle in needles):
                return stage
    return "other"


def breakdown(path: Path) -> tuple[Counter[str], int]:
    by_stage: Counter[str] = Counter()
    for stack, n in read_stacks(path).items():
        by_stage[classify(stack)] += n
    return by_stage, sum(by_stage.values())


def summarize(path: Path, rate: int, vectors: int) -> str:
    """A table: stage, share of GIL-held samples, GIL-held microseconds per vector."""
    by_stage, total = breakdown(path)
    if not total:
        return "(no samples)"
    rows = [
        f"| {stage} | {n / total:.1%} | {n / rate / vectors * 1e6:.1f} |"
        for stage, n in by_stage.most_common()
    ]
    seconds = total / rate
    header = [
        f"GIL held {seconds:.1f} s in {total} samples at {rate} Hz "
        f"= {seconds / vectors * 1e6:.0f} us per vector",
        "",
        "| stage | share of GIL-held time | us/vector |",
        "|---|---|---|",
    ]
    return "\n".join(header + rows)


def stages(body: bytes, repeats: int = 15) -> list[tuple[str, float]]:
    """Median seconds of each write-path stage for one request body, in-process."""
    import tempfile

    from api import json_vectors
    from api.models.points import UpsertRequest
    from bench.common import SCHEMA
    from index.arena import Metric
    from server import validation
    from server.collection import Collection
    from server.model import CollectionConfig, Limits, PointInput
    from server.validation import FieldType
    from storage.records import encode_point
    from storage.store import Store

    schema = {name: FieldType(t) for name, t in SCHEMA.items()}
    timings: dict[str, list[float]] = {}

    @contextmanager
    def clock(name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        timings.setdefault(name, []).append(time.perf_counter() - started)

    with tempfile.TemporaryDirectory(prefix="shoal-stages-") as tmp:
        store = Store(f"{tmp}/db", durability="os")
        for i in range(repeats):
            config = CollectionConfig(f"c{i}", i + 1, 384, Metric.COSINE, schema)
            collection = Collection(config, store, Limits())
            with clock("orjson.loads(body) (FastAPI's parse, for comparison)"):
                orjson.loads(body)
            with clock("lean lane parse: vectors from the bytes + orjson"):
                raw = json_vectors.loads(body, "points")
            with clock("pydantic UpsertRequest.model_validate"):
                model = UpsertRequest.model_validate(raw)
            inputs = [PointInput(p.id, p.vector, p.attributes, p.shared_with) for p in model.points]
            rows = [p.vector for p in inputs]
            with clock("validation.vectors: np.asarray + finite/zero checks"):
                matrix = validation.vectors(rows, 384, config.metric, lambda i: f"v[{i}]")
            with clock("validation.attributes (+ orjson.dumps) x n"):
                for p in inputs:
                    validation.attributes(p.attributes, schema, "a", 65536)
            with clock("encode_point x n"):
                for p, v in zip(inputs, matrix, strict=True):
                    encode_point(1, p.point_id, v, b"{}")
            with clock("Collection.upsert, whole service call (durability os)"):
                collection.upsert("t", inputs)
            with clock("flush_wal(sync=True) of that batch"):
                store._db.flush_wal(True)
            del rows, matrix
            with clock("free the parsed body and model (dealloc)"):
                del raw, model, inputs
        store.close()
    return [(name, float(np.median(values))) for name, values in timings.items()]


# The query path, per frame from the innermost out: the first frame that matches a rule files
# the sample (so a pydantic call made by the body validation counts as validation, one made by
# the response serializer as encoding). (bucket, detail, substrings of a frame.)
QUERY_RULES: list[tuple[str, str, tuple[str, ...]]] = [
    ("JSON parsing", "orjson.loads of the request body", ("_OrjsonRequest.json",)),
    ("framework", "endpoint glue: run_query and the like", ("run_query (", "run_batch (")),
    ("JSON parsing", "lean lane: body read + orjson.loads", ("_read_body", "LeanLane._respond")),
    (
        "validation",
        "pydantic: QueryRequest from the parsed body",
        ("request_body_to_args", "ModelField.validate", "_validate_value_with_model_field"),
    ),
    ("validation", "lean lane: QueryRequest.model_validate", ("model_validate",)),
    ("authorization", "key scope, rate buckets (api.auth.admit)", ("admit (api/auth.py",)),
    ("validation", "query vector -> float32, k check", ("_query_matrix", "server/validation.py")),
    ("planning/search", "search: Curator traversal or exact scan", ("index/",)),
    ("planning/search", "hits: ids and owners", ("Collection._hit", "_hits (server/search.py")),
    ("response encoding", "HitOut / QueryResponse models", ("_response (api/routes/queries.py",)),
    ("response encoding", "hits as plain data + orjson", ("_result (api/routes", "json_bytes")),
    ("response encoding", "lean lane: response start + body", ("LeanLane.__call__",)),
    (
        "response encoding",
        "serialize_response + JSON render",
        ("serialize_response", "serialize_json", "jsonable_encoder", "render"),
    ),
    (
        "observability",
        "metrics, access log, request id",
        (
            "Observability",
            "server/metrics.py",
            "server/logs.py",
            "prometheus_client",
            "logging/",
            "uuid",
        ),
    ),
    ("framework", "HTTP: the response's socket write", ("server/http_protocol.py",)),
    ("planning/search", "tenant lookup, plan, read lock", ("server/",)),
    (
        "framework",
        "thread handoff: anyio worker pool, queues",
        ("anyio/", "threading.py", "queue.py"),
    ),
    ("framework", "HTTP: uvicorn/httptools read + write", ("uvicorn/",)),
    ("framework", "routing, dependencies, middleware", ("starlette/", "fastapi/", "api/")),
]
# Only when no rule above matches any frame: the event loop itself.
QUERY_LOOP = ("framework", "asyncio event loop", ("asyncio/", "contextlib.py"))
# The process skeleton, under every event loop stack: never decides a bucket.
_SKELETON = ("uvicorn/server.py", "uvicorn/_compat.py", "server/cli.py", "<frozen runpy>")


def classify_query(stack: str) -> tuple[str, str]:
    frames = [f for f in stack.split(";") if not any(s in f for s in _SKELETON)]
    for frame in reversed(frames):
        for bucket, detail, needles in QUERY_RULES:
            if any(needle in frame for needle in needles):
                return bucket, detail
    if any(n in frame for frame in frames for n in QUERY_LOOP[2]):
        return QUERY_LOOP[0], QUERY_LOOP[1]
    return "other", "other"


def summarize_query(path: Path, rate: int, requests: int) -> str:
    """Buckets of the query path: share of samples and microseconds per request."""
    by_detail: Counter[tuple[str, str]] = Counter()
    for stack, n in read_stacks(path).items():
        by_detail[classify_query(stack)] += n
    total = sum(by_detail.values())
    if not total:
        return "(no samples)"
    by_bucket: Counter[str] = Counter()
    for (bucket, _), n in by_detail.items():
        by_bucket[bucket] += n
    rows = []
    for bucket, n_bucket in by_bucket.most_common():
        rows.append(f"| **{bucket}** | | **{n_bucket / total:.1%}** | "
                    f"**{n_bucket / rate / requests * 1e6:.0f}** |")  # fmt: skip
        for (b, detail), n in by_detail.most_common():
            if b == bucket:
                rows.append(f"| | {detail} | {n / total:.1%} | {n / rate / requests * 1e6:.0f} |")
    seconds = total / rate
    header = [
        f"{total} samples at {rate} Hz = {seconds:.1f} s = {seconds / requests * 1e6:.0f} us "
        f"per request over {requests:,} requests",
        "",
        "| bucket | detail | share of samples | us/request |",
        "|---|---|---|---|",
    ]
    return "\n".join(header + rows)
