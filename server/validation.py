"""Checks every write and query input passes before it touches storage or an index.

Each failure is an `Invalid(path, message)`; `path` is the field as the client wrote it
(`points[3].vector`), so the client can find it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import orjson

from index.arena import Metric
from index.attributes import FieldType, datetime_micros
from server.errors import Invalid

MAX_NAME_BYTES = 256
MAX_DIM = 4096
MAX_K = 1000
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_INT64 = (-(2**63), 2**63 - 1)


def collection_name(name: str, path: str = "name") -> str:
    if not _COLLECTION_NAME.match(name):
        raise Invalid(
            path,
            "a collection name is 1-128 characters of letters, digits, '_', '-' and '.', "
            "starting with a letter or digit",
        )
    return name


def identifier(value: str, path: str, what: str) -> str:
    """Tenant names and point ids: 1..256 bytes of UTF-8, no control characters."""
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size == 0:
        raise Invalid(path, f"{what} must not be empty")
    if size > MAX_NAME_BYTES:
        raise Invalid(path, f"{what} is {size} bytes; the limit is {MAX_NAME_BYTES}")
    if _CONTROL.search(value):
        raise Invalid(path, f"{what} must not contain control characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise Invalid(path, f"{what} must be valid UTF-8") from None
    return value


def dimension(dim: int, path: str = "dim") -> int:
    if not 1 <= dim <= MAX_DIM:
        raise Invalid(path, f"must be between 1 and {MAX_DIM}, got {dim}")
    return dim


def top_k(k: int, path: str = "k") -> int:
    if not 1 <= k <= MAX_K:
        raise Invalid(path, f"must be between 1 and {MAX_K}, got {k}")
    return k


def vectors(
    rows: list[Any] | np.ndarray, dim: int, metric: Metric, path_of: Callable[[int], str]
) -> np.ndarray:
    """A (n, dim) float32 matrix of finite values; `path_of(i)` names row i for errors.

    Distances use squared lengths in float32, so one that overflows (or, under cosine, is too
    small to divide by) is refused too: it would give wrong distances, not an error. One
    squared length per row checks it all (a NaN or infinity makes it non-finite), so a good
    batch costs a cast and a dot product per row; only a bad one is examined further."""
    # Values beyond float32 become inf in the cast and are reported below, not warned about.
    with np.errstate(over="ignore", under="ignore"):
        try:
            matrix = np.asarray(rows, dtype=np.float32)
        except (ValueError, TypeError):
            matrix = None
        if matrix is None or matrix.ndim != 2 or matrix.shape[1] != dim:
            _raise_for_shape(rows, dim, path_of)
        cosine = metric is Metric.COSINE
        if len(matrix) == 1:  # a query: one float32 dot product and scalar checks
            square = float(np.dot(matrix[0], matrix[0]))
            if math.isfinite(square) and (not cosine or square >= _TINY):
                return matrix
        norms_sq = np.einsum("ij,ij->i", matrix, matrix)
    if np.isfinite(norms_sq).all() and (not cosine or norms_sq.min() >= _TINY):
        return matrix
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise Invalid(path_of(i), "contains NaN or infinity (or a value beyond float32)")
    if cosine:
        zero = ~matrix.any(axis=1)
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise Invalid(path_of(i), "a zero vector has no direction under the cosine metric")
    big = ~np.isfinite(norms_sq)
    if big.any():
        i = int(np.flatnonzero(big)[0])
        raise Invalid(path_of(i), "its squared length overflows float32: scale it down")
    i = int(np.flatnonzero(norms_sq < _TINY)[0])
    raise Invalid(path_of(i), "its length is too small for float32: scale it up")


_TINY = np.finfo(np.float32).tiny  # the smallest normal float32


def _raise_for_shape(rows: Any, dim: int, path_of: Callable[[int], str]) -> NoReturn:
    for i, row in enumerate(rows):
        got = len(row) if isinstance(row, list | tuple | np.ndarray) else "a non-list"
        if got != dim:
            raise Invalid(path_of(i), f"expected {dim} dimensions, got {got}")
    raise Invalid(path_of(0), f"expected {dim} dimensions")


def schema(fields: dict[str, str], path: str = "schema") -> dict[str, FieldType]:
    checked: dict[str, FieldType] = {}
    for name, type_name in fields.items():
        if not name or len(name) > 256 or "." in name or name.startswith("$"):
            raise Invalid(f"{path}.{name}", "a field name is 1-256 characters without '.' or '$'")
        try:
            checked[name] = FieldType(type_name)
        except ValueError:
            allowed = ", ".join(t.value for t in FieldType)
            raise Invalid(
                f"{path}.{name}", f"unknown type {type_name!r}; use one of {allowed}"
            ) from None
    return checked


def attributes(
    value: Any, fields: dict[str, FieldType], path: str, max_bytes: int
) -> tuple[dict[str, Any], bytes]:
    """Checks typed fields against the schema; returns the object and its JSON encoding."""
    if not isinstance(value, dict):
        raise Invalid(path, "attributes must be a JSON object")
    for name, field_type in fields.items():
        if name in value and value[name] is not None:
            _check_typed(value[name], field_type, f"{path}.{name}")
    try:
        encoded = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise Invalid(path, f"not representable as JSON: {exc}") from None
    if len(encoded) > max_bytes:
        raise Invalid(
            path, f"attributes take {len(encoded)} bytes as JSON; the limit is {max_bytes}"
        )
    return value, encoded


def _check_typed(value: Any, field_type: FieldType, path: str) -> None:
    ok: bool
    if field_type is FieldType.KEYWORD:
        ok = isinstance(value, str)
    elif field_type is FieldType.INTEGER:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not _INT64[0] <= value <= _INT64[1]:
            raise Invalid(path, "integer out of the 64-bit range")
    elif field_type is FieldType.FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise Invalid(path, "expected a finite number")
    elif field_type is FieldType.BOOLEAN:
        ok = isinstance(value, bool)
    elif field_type is FieldType.KEYWORDS:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, str) and _parses_as_datetime(value)
        if not ok:
            raise Invalid(path, f"expected an RFC 3339 datetime string, got {value!r}")
    if not ok:
        raise Invalid(path, f"expected {field_type.value}, got {_json_type(value)}")


def _parses_as_datetime(value: str) -> bool:
    """The same reading as the attribute index's, so whatever is stored can be indexed."""
    try:
        datetime_micros(value)
    except (ValueError, OverflowError):
        return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_INDEX_BOUNDS: dict[str, tuple[float, float]] = {
    "curator_min_points": (1, 10**9),
    "curator_min_tenant_points": (1, 10**9),
    "branching": (2, 256),
    "depth": (1, 4),
    "max_shortlist": (16, 100_000),
    "training_sample": (100, 10**7),
    "ef": (1, 10_000),
    "patience": (1, 1_000),
    "retrain_drift": (1.0, 100.0),
    "shared_graph_min_points": (1, 10**9),
    "tenant_graph_min_points": (1, 10**9),
    "hnsw_m": (4, 96),
    "hnsw_ef_construction": (8, 2000),
    "graph_rebuild_tombstones": (0.01, 0.9),
}
_FRACTIONS = ("retrain_drift", "graph_rebuild_tombstones")


def index_settings(values: dict[str, Any], path: str = "index") -> dict[str, Any]:
    """Checks the given Curator settings; unknown names and out-of-range values are errors."""
    for name, value in values.items():
        if name not in _INDEX_BOUNDS:
            known = ", ".join(_INDEX_BOUNDS)
            raise Invalid(f"{path}.{name}", f"unknown index setting; known: {known}")
        low, high = _INDEX_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"{path}.{name}", "expected a number")
        if name not in _FRACTIONS and not isinstance(value, int):
            raise Invalid(f"{path}.{name}", "expected an integer")
        if not low <= value <= high:
            raise Invalid(f"{path}.{name}", f"must be between {low:g} and {high:g}, got {value}")
    return values


def merge_patch(target: Any, patch: Any) -> Any:
    """`patch` merged into `target` as RFC 7386 says: null removes a key."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
