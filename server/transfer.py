"""Tenant export and import as NDJSON: move a tenant between nodes, or back it up.

The format, one JSON object per line:

    {"type": "tenant", "version": 1, "collection": "docs", "tenant": "acme", "dim": 384,
     "metric": "cosine", "points": 2}
    {"type": "point", "id": "a", "vector": [...], "attributes": {...}, "shared_with": ["b"]}
    {"type": "point", "id": "b", "vector": [...], "attributes": {}, "shared_with": []}
    {"type": "end", "points": 2}

Vectors are written as the shortest decimals that read back as the same float32 values, so
a round trip is bit-exact. Points come in point-id order. The `end` line counts the point lines
before it: an export cut short (connection lost, tenant deleted meanwhile) has none, and its
import is refused unless the header's `points` matches instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import orjson

from server import validation
from server.collection import Collection
from server.errors import Invalid, NotFound
from server.model import PointInput

FORMAT_VERSION = 1
EXPORT_CHUNK_POINTS = 500
_POINT_KEYS = frozenset({"type", "id", "vector", "attributes", "shared_with"})


# -- export -------------------------------------------------------------------------------


def export_tenant(collection: Collection, tenant: str) -> Iterator[bytes]:
    """The NDJSON lines of the points `tenant` owns, as an iterator of byte chunks.

    Raises `NotFound` at once (not on the first `next`) for an unknown tenant. The point ids
    are snapshotted first; then each chunk of `EXPORT_CHUNK_POINTS` points is read under the
    collection's read lock, taken per chunk and not for the whole export, so writers are not
    held up by a long download. The export is therefore not a point-in-time snapshot when a
    writer is busy with the tenant meanwhile: a point deleted meanwhile is skipped, a point
    updated meanwhile is exported as it is when its chunk is read, and a point created
    meanwhile is not exported. If the tenant (or its collection) is deleted meanwhile the stream
    stops without its `end` line, which marks it as incomplete.
    """
    with collection.read_lock():
        number = collection.tenants.number_of.get(tenant)
        if number is None:
            raise NotFound(f"tenant {tenant!r} not found in collection {collection.name!r}")
        point_ids = sorted(collection.tenants.ids[number])
    header = {
        "type": "tenant",
        "version": FORMAT_VERSION,
        "collection": collection.name,
        "tenant": tenant,
        "dim": collection.config.dim,
        "metric": collection.config.metric.value,
        "points": len(point_ids),
    }
    return _export_lines(collection, tenant, number, point_ids, header)


def _export_lines(
    collection: Collection,
    tenant: str,
    number: int,
    point_ids: list[str],
    header: dict[str, Any],
) -> Iterator[bytes]:
    yield orjson.dumps(header) + b"\n"
    written = 0
    for start in range(0, len(point_ids), EXPORT_CHUNK_POINTS):
        chunk = _export_chunk(collection, tenant, number, point_ids[start:][:EXPORT_CHUNK_POINTS])
        if chunk is None:
            return  # the tenant is gone: no `end` line
        lines, count = chunk
        written += count
        if lines:
            yield lines
    yield orjson.dumps({"type": "end", "points": written}) + b"\n"


def _export_chunk(
    collection: Collection, tenant: str, number: int, point_ids: list[str]
) -> tuple[bytes, int] | None:
    tenants = collection.tenants
    with collection.read_lock():
        if collection.dropped or tenants.number_of.get(tenant) != number:
            return None
        ids = tenants.ids[number]
        found = [(pid, ids[pid]) for pid in point_ids if pid in ids]
        if not found:
            return b"", 0
        rows = collection.arena.rows(np.fromiter((label for _, label in found), dtype=np.int64))
        lines = []
        for (pid, label), vector in zip(found, rows, strict=True):
            line = {
                "type": "point",
                "id": pid,
                "vector": vector,
                "attributes": orjson.Fragment(collection.points.attributes_json(label)),
                "shared_with": sorted(tenants.name_of[g] for g in tenants.grantees(label)),
            }
            lines.append(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY))
    return b"\n".join(lines) + b"\n", len(found)


# -- import -------------------------------------------------------------------------------


def import_tenant(collection: Collection, tenant: str, lines: Iterable[bytes | str]) -> int:
    """Upsert the points of an export into `tenant` (any name: the exported one, or a new one).

    Every line is validated before anything is written, so a bad line (422 naming it:
    `line 17: vector: ...`) changes nothing. The points are then upserted in batches of up to
    `max_batch_points`; each batch is atomic, the import as a whole is not: if the server
    fails midway, the batches written so far stay. Upserts are idempotent, so re-running the
    same import completes it. Points the tenant already has and the file does not mention
    are kept. Returns the number of points imported.
    """
    validation.identifier(tenant, "tenant", "a tenant name")
    inputs = parse_export(collection, tenant, lines)
    if not inputs:
        collection.ensure_tenant(tenant)
        return 0
    size = collection.limits.max_batch_points
    for start in range(0, len(inputs), size):
        collection.upsert(tenant, inputs[start : start + size])
    return len(inputs)


def parse_export(
    collection: Collection, tenant: str, lines: Iterable[bytes | str]
) -> list[PointInput]:
    """Check an export against `collection` for import into `tenant`; its points, validated.

    Blank lines are ignored; every error is an `Invalid` whose message starts with `line N`.
    """
    config = collection.config
    header: tuple[int, dict[str, Any]] | None = None
    end_line: int | None = None
    inputs: list[PointInput] = []
    line_of: list[int] = []
    first_line_of: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"line {number}"
        if end_line is not None:
            raise Invalid(where, f"nothing may follow the end line (line {end_line})")
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Invalid(where, "not valid JSON") from None
        if not isinstance(record, dict):
            raise Invalid(where, "expected a JSON object")
        kind = record.get("type")
        if header is None:
            if kind != "tenant":
                raise Invalid(where, 'expected the header line {"type": "tenant", ...} first')
            _check_header(record, config.dim, config.metric.value, where)
            header = (number, record)
            continue
        if kind == "end":
            count = record.get("points")
            if count != len(inputs):
                raise Invalid(
                    where, f"the end line counts {count!r} points but {len(inputs)} came before it"
                )
            end_line = number
            continue
        if kind != "point":
            raise Invalid(where, f'type: expected "point" or "end", got {kind!r}')
        point = _point(record, tenant, collection, where)
        if point.point_id in first_line_of:
            first = first_line_of[point.point_id]
            raise Invalid(
                f"{where}: id", f"duplicate id {point.point_id!r} (first on line {first})"
            )
        first_line_of[point.point_id] = number
        inputs.append(point)
        line_of.append(number)
    if header is None:
        raise Invalid("line 1", 'the body is empty; expected the header {"type": "tenant", ...}')
    announced = header[1].get("points")
    if end_line is None and announced is not None and announced != len(inputs):
        raise Invalid(
            f"line {header[0]}",
            f"points: the header announces {announced} points but {len(inputs)} follow "
            "and there is no end line: the export looks truncated",
        )
    if inputs:
        matrix = validation.vectors(
            [p.vector for p in inputs],
            config.dim,
            config.metric,
            lambda i: f"line {line_of[i]}: vector",
        )
        inputs = [
            PointInput(p.point_id, row, p.attributes, p.shared_with)
            for p, row in zip(inputs, matrix, strict=True)
        ]
    return inputs


def _check_header(record: dict[str, Any], dim: int, metric: str, where: str) -> None:
    version = record.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise Invalid(f"{where}: version", f"unsupported version {version!r}; expected 1")
    if record.get("dim") != dim:
        raise Invalid(
            f"{where}: dim", f"the export has dim {record.get('dim')!r}; the collection has {dim}"
        )
    if record.get("metric") != metric:
        raise Invalid(
            f"{where}: metric",
            f"the export has metric {record.get('metric')!r}; the collection has {metric!r}",
        )
    points = record.get("points")
    if points is not None and (
        isinstance(points, bool) or not isinstance(points, int) or points < 0
    ):
        raise Invalid(f"{where}: points", "expected a count of points")


def _point(record: dict[str, Any], tenant: str, collection: Collection, where: str) -> PointInput:
    unknown = sorted(set(record) - _POINT_KEYS)
    if unknown:
        raise Invalid(f"{where}: {unknown[0]}", "unknown field")
    point_id = record.get("id")
    if not isinstance(point_id, str):
        raise Invalid(f"{where}: id", "expected a string")
    validation.identifier(point_id, f"{where}: id", "a point id")
    vector = record.get("vector")
    if not isinstance(vector, list) or not all(type(v) is float or type(v) is int for v in vector):
        raise Invalid(f"{where}: vector", "expected an array of numbers")
    attributes = record.get("attributes")
    attributes = {} if attributes is None else attributes
    validation.attributes(
        attributes,
        collection.config.schema,
        f"{where}: attributes",
        collection.limits.max_attributes_bytes,
    )
    shared_with = record.get("shared_with")
    if shared_with is not None:
        if not isinstance(shared_with, list):
            raise Invalid(f"{where}: shared_with", "expected an array of tenant names")
        for j, grantee in enumerate(shared_with):
            path = f"{where}: shared_with[{j}]"
            if not isinstance(grantee, str):
                raise Invalid(path, "expected a tenant name")
            validation.identifier(grantee, path, "a tenant name")
            if grantee == tenant:
                raise Invalid(path, f"the point would be shared with its owner {tenant!r}")
    return PointInput(point_id, vector, attributes, shared_with)
