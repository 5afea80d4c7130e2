"""The filter language: Mongo-style JSON compiled against a schema, evaluated to bitmaps.

    {"section": "games"}                          equality (on keyword[]: "contains")
    {"size": {"$gte": 100, "$lt": 5000}}          several operators on one field: all hold
    {"$or": [{"priority": "required"}, {"essential": true}]}
    {"$not": {"tags": {"$in": ["a", "b"]}}}       also per field: {"size": {"$not": {"$gt": 9}}}

Operators: `$eq $ne $gt $gte $lt $lte $in $nin $exists`, `$all` (keyword[] only), logical
`$and $or $not`. Ranges apply to integer, float and datetime fields. A missing (or null) field
matches `$ne`, `$nin`, `$not` of anything and `$exists: false`, and nothing else.

`compile_filter` checks everything against the schema and raises `FilterError(path, message)`
naming the offending path (`filter.$or[1].size.$gt`); `evaluate` turns a compiled filter into
the bitmap of matching labels within a universe (the tenant's readable set), so complements
stay inside what the tenant can read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pyroaring import BitMap

from index.attributes import NUMERIC_TYPES, AttributeIndex, FieldType, datetime_micros

MAX_DEPTH = 16
MAX_TERMS = 1024
MAX_LIST = 10_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
_FIELD_OPERATORS = ("$eq", "$ne", *_COMPARISONS, "$in", "$nin", "$exists", "$all", "$not")


class FilterError(ValueError):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Equal:
    field: str
    values: tuple[Any, ...]  # any of (one for $eq); keyword[]: contains any


@dataclass(frozen=True, slots=True)
class ContainsAll:
    field: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    low: float | None
    high: float | None
    low_inclusive: bool
    high_inclusive: bool


@dataclass(frozen=True, slots=True)
class Exists:
    field: str


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Node


Node = Equal | ContainsAll | Range | Exists | And | Or | Not
MATCH_ALL: Node = And(())


def compile_filter(raw: Any, schema: dict[str, FieldType], path: str = "filter") -> Node:
    """Check `raw` against the schema; return its compiled form (`MATCH_ALL` for `{}`)."""
    compiler = _Compiler(schema)
    return compiler.filter(raw, path, 0)


class _Compiler:
    def __init__(self, schema: dict[str, FieldType]):
        self.schema = schema
        self.terms = 0

    def _count(self, path: str) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise FilterError(path, f"a filter may have at most {MAX_TERMS} terms")

    def filter(self, raw: Any, path: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise FilterError(path, f"filters nest at most {MAX_DEPTH} levels deep")
        if not isinstance(raw, dict):
            raise FilterError(path, "a filter is a JSON object")
        terms: list[Node] = []
        for key, value in raw.items():
            here = f"{path}.{key}"
            self._count(here)
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise FilterError(here, f"{key} takes a non-empty list of filters")
                children = tuple(
                    self.filter(item, f"{here}[{i}]", depth + 1) for i, item in enumerate(value)
                )
                terms.append(And(children) if key == "$and" else Or(children))
            elif key == "$not":
                terms.append(Not(self.filter(value, here, depth + 1)))
            elif key.startswith("$"):
                raise FilterError(here, "unknown operator; at the top level use $and, $or, $not")
            else:
                terms.append(self.field(key, value, here, depth + 1))
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def field(self, name: str, clause: Any, path: str, depth: int) -> Node:
        if depth > MAX_DEPTH + 1:  # a field sits one level below its filter object
            raise FilterError(path, f"filters nest at most {MAX_DEPTH} levels deep")
        field_type = self.schema.get(name)
        if field_type is None:
            raise FilterError(
                path,
                f"field {name!r} is not in the collection schema; declare it (PATCH the "
                "collection's schema) to filter on it",
            )
        if not isinstance(clause, dict):
            return self.operator(name, field_type, "$eq", clause, path, depth)
        if not clause:
            raise FilterError(path, "an empty operator object matches nothing sensible")
        terms: list[Node] = []
        for operator, operand in clause.items():
            here = f"{path}.{operator}"
            self._count(here)
            if operator not in _FIELD_OPERATORS:
                known = " ".join(_FIELD_OPERATORS)
                raise FilterError(here, f"unknown operator; field operators are {known}")
            terms.append(self.operator(name, field_type, operator, operand, here, depth))
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def operator(
        self, name: str, field_type: FieldType, operator: str, operand: Any, path: str, depth: int
    ) -> Node:
        if operator == "$not":
            if not isinstance(operand, dict):
                raise FilterError(path, "$not on a field takes an operator object")
            return Not(self.field(name, operand, path, depth + 1))
        if operator == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(path, "$exists takes true or false")
            return Exists(name) if operand else Not(Exists(name))
        if operator in ("$eq", "$ne"):
            node = Equal(name, (self.literal(field_type, operand, path),))
            return node if operator == "$eq" else Not(node)
        if operator in ("$in", "$nin", "$all"):
            if operator == "$all" and field_type is not FieldType.KEYWORDS:
                raise FilterError(path, "$all applies to keyword[] fields only")
            if not isinstance(operand, list):
                raise FilterError(path, f"{operator} takes a list of values")
            if len(operand) > MAX_LIST:
                raise FilterError(path, f"{operator} takes at most {MAX_LIST} values")
            values = tuple(
                self.literal(field_type, item, f"{path}[{i}]") for i, item in enumerate(operand)
            )
            if operator == "$all":
                return ContainsAll(name, values)
            node = Equal(name, values)
            return node if operator == "$in" else Not(node)
        # $gt $gte $lt $lte
        if field_type not in NUMERIC_TYPES:
            raise FilterError(
                path, f"{operator} applies to integer, float and datetime fields, not {field_type}"
            )
        bound = self.literal(field_type, operand, path)
        if operator in ("$gt", "$gte"):
            return Range(name, bound, None, operator == "$gte", True)
        return Range(name, None, bound, True, operator == "$lte")

    def literal(self, field_type: FieldType, value: Any, path: str) -> Any:
        """A comparison value, checked and converted to what the index stores."""
        if value is None:
            raise FilterError(path, 'null matches nothing; use {"$exists": false}')
        if isinstance(value, dict | list):
            hint = " (on keyword[] use $in or $all)" if field_type is FieldType.KEYWORDS else ""
            raise FilterError(path, f"expected a single {field_type} value{hint}")
        if field_type in (FieldType.KEYWORD, FieldType.KEYWORDS):
            if not isinstance(value, str):
                raise FilterError(path, f"expected a string: the field is {field_type}")
            return value
        if field_type is FieldType.BOOLEAN:
            if not isinstance(value, bool):
                raise FilterError(path, "expected true or false: the field is boolean")
            return value
        if field_type is FieldType.DATETIME:
            if not isinstance(value, str):
                raise FilterError(path, "expected an RFC 3339 datetime string")
            try:
                return datetime_micros(value)
            except (ValueError, OverflowError):
                raise FilterError(path, f"not an RFC 3339 datetime: {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FilterError(path, f"expected a number: the field is {field_type}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FilterError(path, "expected a finite number")
        if field_type is FieldType.FLOAT and isinstance(value, int):
            try:
                return float(value)
            except OverflowError:  # beyond float64: an infinite bound compares correctly
                return math.inf if value > 0 else -math.inf
        return value


# -- evaluation ---------------------------------------------------------------------------


def evaluate(node: Node, index: AttributeIndex, universe: BitMap) -> BitMap:
    """The labels of `universe` that match `node` (a new bitmap or `universe` itself: treat
    the result as read-only)."""
    if isinstance(node, And):
        result = universe
        for term in node.terms:  # each term narrows the universe of the next
            if not result:
                break
            result = evaluate(term, index, result)
        return result
    if isinstance(node, Or):
        return BitMap.union(BitMap(), *(evaluate(t, index, universe) for t in node.terms))
    if isinstance(node, Not):
        return universe - evaluate(node.term, index, universe)
    return universe & _match(node, index, universe)


def _match(node: Node, index: AttributeIndex, universe: BitMap) -> BitMap:
    if isinstance(node, Exists):
        return index.present(node.field)
    if isinstance(node, ContainsAll):
        return index.keywords[node.field].all_of(node.values)
    if node.field in index.numbers:
        column = index.numbers[node.field]
        integer = index.types[node.field] is not FieldType.FLOAT
        if isinstance(node, Range):
            low, high, low_in, high_in = (
                node.low,
                node.high,
                node.low_inclusive,
                node.high_inclusive,
            )
            if integer:
                bounds = _integer_bounds(low, high, low_in, high_in)
                if bounds is None:
                    return BitMap()
                low, high = bounds
                low_in = high_in = True
            return column.between(low, high, low_in, high_in, within=universe)
        assert isinstance(node, Equal)
        hits = [
            column.between(v, v)
            for v in (_as_integer(v) if integer else v for v in node.values)
            if v is not None
        ]
        return BitMap.union(BitMap(), *hits)
    assert isinstance(node, Equal)
    keyword = index.keywords[node.field]
    if len(node.values) == 1:
        return keyword.equal(node.values[0])
    return keyword.any_of(node.values)


def _as_integer(value: float) -> int | None:
    """An equality value for an integer column; None when no int64 can equal it."""
    if isinstance(value, float) and not value.is_integer():
        return None
    value = int(value)
    return value if -(2**63) <= value < 2**63 else None


def _integer_bounds(
    low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool
) -> tuple[int | None, int | None] | None:
    """Inclusive int64 bounds for an integer column, so the comparison stays in int64 (a
    float bound would turn the column into float64 and lose precision past 2**53); None
    when no int64 can satisfy them."""
    int_low = int_high = None
    if low is not None:
        int_low = math.ceil(low) if low_inclusive else math.floor(low) + 1
        if int_low > _INT64_MAX:
            return None
        int_low = max(int_low, _INT64_MIN)
    if high is not None:
        int_high = math.floor(high) if high_inclusive else math.ceil(high) - 1
        if int_high < _INT64_MIN:
            return None
        int_high = min(int_high, _INT64_MAX)
    if int_low is not None and int_high is not None and int_low > int_high:
        return None
    return int_low, int_high
