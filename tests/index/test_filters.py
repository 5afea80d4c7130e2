"""The filter language against a reference: random points, random filters, one pure-Python
evaluator written from the semantics (docs and `index/filters.py` docstring), not from the code.

The reference, the value domains and the Hypothesis strategies here are also used by
`tests/index/test_attributes.py` (the index under long write sequences) and
`tests/api/test_filters.py` (the same checks through HTTP).

Semantics the reference encodes:
- `{"f": v}` is `$eq`; on `keyword[]` a value means "contains", `$in` "contains any", `$all`
  "contains all" (of a present list; vacuously true for `[]`);
- several fields or operators in one object must all hold;
- a missing field, a null, or a value of the wrong type (stored before the field was declared)
  matches `$ne`, `$nin`, `$not` of anything and `$exists: false`, and nothing else;
- ranges compare numbers exactly (an integer field with a float bound: `n > 1.5` is `n >= 2`) and
  datetimes as instants (no offset means UTC).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from index.attributes import AttributeIndex, FieldType
from index.filters import MATCH_ALL, FilterError, compile_filter, evaluate

TYPES = {
    "kw": "keyword",
    "n": "integer",
    "x": "float",
    "b": "boolean",
    "tags": "keyword[]",
    "at": "datetime",
}
SCHEMA = {name: FieldType(type_name) for name, type_name in TYPES.items()}
FIELDS = sorted(TYPES)
INT64 = (-(2**63), 2**63 - 1)

# Small domains, so that random filters hit random points.
KEYWORDS = ["a", "b", "c", "ü ß"]
INTEGERS = [-3, -1, 0, 1, 2, 7, 2**53 + 1, INT64[0], INT64[1]]
FLOATS = [-2.5, -1.0, -0.0, 0.0, 0.5, 1.0, 3.75, 1e300, -1e-300]
_BASE = datetime(2024, 1, 1, tzinfo=UTC)
INSTANTS = [
    _BASE,
    _BASE + timedelta(hours=1),
    _BASE + timedelta(seconds=1, microseconds=500_000),
    _BASE - timedelta(microseconds=1),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch
    datetime(2000, 2, 29, 12, tzinfo=UTC),
]
# None: written without an offset (means UTC); "Z": the Zulu suffix; else minutes east of UTC.
OFFSETS: list[int | str | None] = [None, "Z", 0, 330, -480, 840, -30]
# Values of the wrong type for each field: stored before the field was declared, never indexed.
WRONG = {
    "kw": [5, True, ["a"]],
    "n": ["1", 1.5, True, 2**64],
    "x": ["1.5", False, [1.0]],
    "b": [1, "true"],
    "tags": ["a", ["a", 1], {"a": "b"}],
    "at": ["yesterday", 1_714_564_800, "2024-13-01T00:00:00"],
}


def datetime_text(instant: datetime, offset: int | str | None) -> str:
    """`instant` as ISO 8601 / RFC 3339 text in the given offset."""
    if offset is None:
        return instant.astimezone(UTC).replace(tzinfo=None).isoformat()
    if offset == "Z":
        return instant.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    assert isinstance(offset, int)
    return instant.astimezone(timezone(timedelta(minutes=offset))).isoformat()


# -- the reference evaluator ----------------------------------------------------------------


def parse_instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def typed_value(field: str, value: Any) -> Any:
    """What a stored value means to filters: None when missing, null or of the wrong type."""
    kind = TYPES[field]
    if value is None:
        return None
    if kind == "keyword":
        return value if isinstance(value, str) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "keyword[]":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return set(value) if ok else None
    if isinstance(value, bool):
        return None
    if kind == "integer":
        return value if isinstance(value, int) and INT64[0] <= value <= INT64[1] else None
    if kind == "float":
        ok = isinstance(value, int | float) and math.isfinite(value)
        return float(value) if ok else None
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


def _literal(field: str, literal: Any) -> Any:
    return parse_instant(literal) if TYPES[field] == "datetime" else literal


def _equals(field: str, value: Any, literal: Any) -> bool:
    if value is None:
        return False
    if TYPES[field] == "keyword[]":
        return literal in value
    return value == _literal(field, literal)


def _operator(field: str, operator: str, operand: Any, value: Any) -> bool:
    if operator == "$eq":
        return _equals(field, value, operand)
    if operator == "$ne":
        return not _equals(field, value, operand)
    if operator == "$in":
        return any(_equals(field, value, item) for item in operand)
    if operator == "$nin":
        return not any(_equals(field, value, item) for item in operand)
    if operator == "$all":
        return value is not None and all(item in value for item in operand)
    if operator == "$exists":
        return (value is not None) == operand
    if operator == "$not":
        return not _clause(field, operand, value)
    if value is None:
        return False
    bound = _literal(field, operand)
    return {
        "$gt": value > bound,
        "$gte": value >= bound,
        "$lt": value < bound,
        "$lte": value <= bound,
    }[operator]


def _clause(field: str, clause: Any, value: Any) -> bool:
    if not isinstance(clause, dict):
        return _equals(field, value, clause)
    return all(_operator(field, op, operand, value) for op, operand in clause.items())


def reference_match(raw: dict[str, Any], attributes: dict[str, Any]) -> bool:
    """Does a point with `attributes` match the filter `raw`?"""
    for key, value in raw.items():
        if key == "$and":
            ok = all(reference_match(term, attributes) for term in value)
        elif key == "$or":
            ok = any(reference_match(term, attributes) for term in value)
        elif key == "$not":
            ok = not reference_match(value, attributes)
        else:
            ok = _clause(key, value, typed_value(key, attributes.get(key)))
        if not ok:
            return False
    return True


# -- strategies (and a plain-random twin for bulk writes) -----------------------------------

datetime_texts = st.builds(datetime_text, st.sampled_from(INSTANTS), st.sampled_from(OFFSETS))


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, chosen with the given weights (shrinks towards the first)."""
    table = [strategy for weight, strategy in options for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


# Mostly a few common values (so equalities hit), sometimes the corners.
COMMON_INTEGERS = [-1, 0, 1, 2, 7]
COMMON_FLOATS = [-1.0, 0.0, 0.5, 1.0, 3.75, 2]  # an int in a float field is a float
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "kw": st.sampled_from(KEYWORDS),
    "n": weighted(
        (6, st.sampled_from(COMMON_INTEGERS)),
        (2, st.integers(-10, 10)),
        (2, st.sampled_from(INTEGERS)),
    ),
    "x": weighted(
        (6, st.sampled_from(COMMON_FLOATS)),
        (2, st.sampled_from(FLOATS)),
        (2, st.floats(-10, 10, allow_nan=False)),
    ),
    "b": st.booleans(),
    "tags": st.lists(st.sampled_from(KEYWORDS), max_size=4),
    "at": datetime_texts,
}


_MISSING = object()


def attribute_dicts(wrong_types: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """A point's attributes: every field missing, null or a value (optionally of the wrong
    type), plus an untyped attribute that filters cannot see."""

    def field_values(name: str) -> st.SearchStrategy[Any]:
        odd = st.none() | st.sampled_from(WRONG[name]) if wrong_types else st.none()
        # Mostly a value: filters over mostly-missing fields would match nothing.
        return st.integers(0, 9).flatmap(
            lambda roll: st.just(_MISSING) if roll == 0 else odd if roll == 1 else VALUES[name]
        )

    values = {name: field_values(name) for name in FIELDS}
    values["note"] = st.sampled_from([_MISSING, "a", 1, None])
    return st.fixed_dictionaries(values).map(
        lambda drawn: {k: v for k, v in drawn.items() if v is not _MISSING}
    )


def random_attributes(rng: random.Random, wrong_types: bool = False) -> dict[str, Any]:
    """The same distribution shape as `attribute_dicts`, from a seeded `random.Random`."""
    makers = {
        "kw": lambda: rng.choice(KEYWORDS),
        "n": lambda: rng.choice(
            [rng.choice(COMMON_INTEGERS)] * 3 + [rng.randint(-10, 10), rng.choice(INTEGERS)]
        ),
        "x": lambda: rng.choice(
            [rng.choice(COMMON_FLOATS)] * 3 + [rng.choice(FLOATS), rng.uniform(-10, 10)]
        ),
        "b": lambda: rng.random() < 0.5,
        "tags": lambda: rng.choices(KEYWORDS, k=rng.randint(0, 4)),
        "at": lambda: datetime_text(rng.choice(INSTANTS), rng.choice(OFFSETS)),
    }
    attributes: dict[str, Any] = {}
    for name in FIELDS:
        roll = rng.random()
        if roll < 0.2:
            continue
        if roll < 0.3:
            attributes[name] = None
        elif wrong_types and roll < 0.35:
            attributes[name] = rng.choice(WRONG[name])
        else:
            attributes[name] = makers[name]()
    return attributes


# Comparison values: the stored domains plus values no point holds, float bounds on the integer
# field (`{"n": {"$gt": 1.5}}` means n >= 2), integers past 2**53 (exact, not float64), bounds
# beyond int64 on the integer field and beyond float64 on the float field.
_BIG = [2**53, 2**53 + 1, 2**53 + 2, 2.0**53, INT64[1] - 1]
_NUMBER_LITERALS = st.sampled_from([-2.5, -0.5, 0.0, 1.0, 1.5, 2.0, 6.999, *_BIG])
_HUGE = st.sampled_from([2**63, -(2**63) - 1, 2**64, 1e19, -1e19, 1e30, -1e300, 1e308])
LITERALS: dict[str, st.SearchStrategy[Any]] = {
    "kw": st.sampled_from([*KEYWORDS, "zz", ""]),
    "n": weighted(
        (6, st.sampled_from(COMMON_INTEGERS)),
        (2, _NUMBER_LITERALS),
        (1, st.integers(-10, 10) | st.sampled_from(INTEGERS)),
        (1, _HUGE),
    ),
    "x": weighted(
        (6, st.sampled_from(COMMON_FLOATS)),
        (2, _NUMBER_LITERALS),
        (1, st.sampled_from(FLOATS) | st.integers(-3, 3)),
        (1, _HUGE),
    ),
    "b": st.booleans(),
    "tags": st.sampled_from([*KEYWORDS, "zz"]),
    "at": datetime_texts,
}
_RANGES = ("$gt", "$gte", "$lt", "$lte")


def _operators(field: str) -> list[str]:
    ops = ["$eq", "$ne", "$in", "$nin", "$exists", "$not"]
    if TYPES[field] in ("integer", "float", "datetime"):
        ops += _RANGES
    if TYPES[field] == "keyword[]":
        ops.append("$all")
    return ops


def operator_objects(field: str, depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """`{"$op": operand, ...}` for one field; `$not` nests another operator object."""
    literal = LITERALS[field]
    operands: dict[str, st.SearchStrategy[Any]] = {
        "$eq": literal,
        "$ne": literal,
        "$in": st.lists(literal, max_size=3),
        "$nin": st.lists(literal, max_size=3),
        "$all": st.lists(literal, max_size=3),
        "$exists": st.booleans(),
        **dict.fromkeys(_RANGES, literal),
    }
    if depth > 0:
        operands["$not"] = st.deferred(lambda: operator_objects(field, depth - 1))
    names = [op for op in _operators(field) if op in operands]
    return st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True).flatmap(
        lambda ops: st.fixed_dictionaries({op: operands[op] for op in ops})
    )


def clauses(field: str) -> st.SearchStrategy[Any]:
    return LITERALS[field] | operator_objects(field)


_field_filters = st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: clauses(name) for name in names})
)


def _logical(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    lists = st.lists(children, min_size=1, max_size=3)
    one = (
        st.fixed_dictionaries({"$and": lists})
        | st.fixed_dictionaries({"$or": lists})
        | st.fixed_dictionaries({"$not": children})
    )
    # Logical keys beside field keys in one object: all must hold.
    return one | st.tuples(_field_filters, one).map(lambda pair: {**pair[0], **pair[1]})


filters: st.SearchStrategy[dict[str, Any]] = st.recursive(_field_filters, _logical, max_leaves=8)


def expected_labels(
    raw: dict[str, Any], points: dict[int, dict[str, Any]], universe: BitMap
) -> set[int]:
    return {label for label in universe if reference_match(raw, points.get(label, {}))}


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(attribute_dicts(wrong_types=True), max_size=40),
    after=st.lists(st.tuples(st.integers(0, 59), attribute_dicts(wrong_types=True) | st.none())),
    compact=st.booleans(),
    outside=st.sets(st.integers(0, 59)),
    queries=st.lists(filters, min_size=1, max_size=5),
)
def test_filters_match_the_reference_evaluator(
    before: list[dict[str, Any]],
    after: list[tuple[int, dict[str, Any] | None]],
    compact: bool,
    outside: set[int],
    queries: list[dict[str, Any]],
) -> None:
    """Points written, then (maybe) the numeric runs sorted, then more sets and removals, so
    both the sorted run and the stale labels answer; the universe leaves some labels out."""
    index = AttributeIndex(SCHEMA)
    points: dict[int, dict[str, Any]] = {}
    for label, attributes in enumerate(before):
        index.set(label, attributes)
        points[label] = attributes
    if compact:
        for column in index.numbers.values():
            column.resort()
    for label, attributes in after:
        if attributes is None:
            index.remove(label)
            points.pop(label, None)
        else:
            index.set(label, attributes)
            points[label] = attributes
    universe = BitMap(range(60)) - BitMap(outside)
    frozen = BitMap(universe)
    for raw in queries:
        got = evaluate(compile_filter(raw, SCHEMA), index, universe)
        assert set(got) == expected_labels(raw, points, universe), raw
        assert universe == frozen, "evaluate changed its universe"


_NUMERIC = ["n", "x", "at"]


@st.composite
def range_filters(draw: st.DrawFn) -> dict[str, Any]:
    """One or two bounds (or an equality) on a numeric field, perhaps under a field `$not`:
    the corner the general strategy reaches least often."""
    field = draw(st.sampled_from(_NUMERIC))
    ops = draw(st.lists(st.sampled_from([*_RANGES, "$eq"]), min_size=1, max_size=2, unique=True))
    clause = {op: draw(LITERALS[field]) for op in ops}
    return {field: {"$not": clause}} if draw(st.booleans()) else {field: clause}


@settings(max_examples=300, deadline=None)
@given(
    points=st.lists(attribute_dicts(wrong_types=True), min_size=1, max_size=30),
    compact=st.booleans(),
    queries=st.lists(range_filters(), min_size=1, max_size=8),
)
def test_ranges_match_the_reference_evaluator(
    points: list[dict[str, Any]], compact: bool, queries: list[dict[str, Any]]
) -> None:
    index = AttributeIndex(SCHEMA)
    for label, attributes in enumerate(points):
        index.set(label, attributes)
    if compact:
        for column in index.numbers.values():
            column.resort()
    universe = BitMap(range(len(points)))
    by_label = dict(enumerate(points))
    for raw in queries:
        got = evaluate(compile_filter(raw, SCHEMA), index, universe)
        assert set(got) == expected_labels(raw, by_label, universe), raw


@settings(max_examples=100, deadline=None)
@given(points=st.lists(attribute_dicts(), max_size=20), raw=filters)
def test_not_is_the_complement_within_the_universe(
    points: list[dict[str, Any]], raw: dict[str, Any]
) -> None:
    index = AttributeIndex(SCHEMA)
    for label, attributes in enumerate(points):
        index.set(label, attributes)
    universe = BitMap(range(0, 40, 2))  # labels outside it never come back
    matched = evaluate(compile_filter(raw, SCHEMA), index, universe)
    negated = evaluate(compile_filter({"$not": raw}, SCHEMA), index, universe)
    assert matched & negated == BitMap()
    assert matched | negated == universe


def test_empty_filter_matches_everything_in_the_universe() -> None:
    index = AttributeIndex(SCHEMA)
    index.set(0, {"kw": "a"})
    index.set(1, {})
    universe = BitMap([0, 1, 5])
    assert compile_filter({}, SCHEMA) == MATCH_ALL
    assert evaluate(compile_filter({}, SCHEMA), index, universe) == universe
    assert evaluate(compile_filter({"$or": [{}, {"kw": "b"}]}, SCHEMA), index, universe) == universe


def test_datetimes_compare_as_instants_whatever_their_offset() -> None:
    index = AttributeIndex(SCHEMA)
    index.set(0, {"at": "2024-01-01T00:00:00Z"})
    index.set(1, {"at": "2024-01-01T05:30:00+05:30"})  # the same instant
    index.set(2, {"at": "2023-12-31T23:00:00"})  # no offset: UTC, one hour earlier
    universe = BitMap(range(3))

    def labels(raw: dict[str, Any]) -> list[int]:
        return list(evaluate(compile_filter(raw, SCHEMA), index, universe))

    assert labels({"at": "2023-12-31T19:00:00-05:00"}) == [0, 1]
    assert labels({"at": {"$lt": "2024-01-01T00:00:00+00:00"}}) == [2]
    assert labels({"at": {"$gte": "2024-01-01T01:00:00+01:00"}}) == [0, 1]


def test_integer_fields_take_float_bounds() -> None:
    index = AttributeIndex(SCHEMA)
    for label, n in enumerate([0, 1, 2, 3]):
        index.set(label, {"n": n})
    universe = BitMap(range(4))

    def labels(raw: dict[str, Any]) -> list[int]:
        return list(evaluate(compile_filter(raw, SCHEMA), index, universe))

    assert labels({"n": {"$gt": 1.5}}) == [2, 3]
    assert labels({"n": {"$gte": 1.5, "$lte": 2.5}}) == [2]
    assert labels({"n": {"$lt": 0.5}}) == [0]
    assert labels({"n": 2.0}) == [2]
    assert labels({"n": 2.5}) == []
    assert labels({"n": {"$in": [1.0, 1.5, 3]}}) == [1, 3]


@pytest.mark.parametrize(
    "raw",
    [
        {"n": {"$gt": 2**63 - 1}},
        {"n": {"$gt": 1e30}},
        {"n": {"$gte": 1e19}},
        {"n": {"$lt": -(2**63)}},
        {"n": {"$lt": -1e30}},
        {"n": {"$lte": -(2**64)}},
    ],
    ids=["gt-max", "gt-1e30", "gte-1e19", "lt-min", "lt-minus-1e30", "lte-minus-2**64"],
)
def test_integer_bounds_beyond_int64_match_nothing(raw: dict[str, Any]) -> None:
    """Regression: such bounds were clamped to the int64 limits and kept inclusive, so
    `n > 2**63 - 1` matched n = 2**63 - 1 (fixed in 0c586e0)."""
    index = AttributeIndex(SCHEMA)
    index.set(0, {"n": INT64[1]})
    index.set(1, {"n": INT64[0]})
    universe = BitMap([0, 1])
    assert not any(reference_match(raw, {"n": n}) for n in INT64)
    assert list(evaluate(compile_filter(raw, SCHEMA), index, universe)) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({"x": {"$lt": 10**400}}, [0]), ({"x": {"$gt": -(10**400)}}, [0]), ({"x": 10**400}, [])],
)
def test_integers_beyond_float64_bound_a_float_field_as_infinities(
    raw: dict[str, Any], expected: list[int]
) -> None:
    """Regression: an int too large for float64 raised OverflowError while evaluating."""
    index = AttributeIndex(SCHEMA)
    index.set(0, {"x": 1.5})
    universe = BitMap([0])
    assert list(evaluate(compile_filter(raw, SCHEMA), index, universe)) == expected


def test_integer_literals_on_a_float_field_compare_as_float64() -> None:
    """A float field holds float64: an integer literal is read as the float64 nearest to it,
    as the stored integers were (2**53 + 1 and 2.0**53 are the same float64)."""
    index = AttributeIndex(SCHEMA)
    index.set(0, {"x": 2.0**53})
    for raw in ({"x": 2**53 + 1}, {"x": {"$gte": 2**53 + 1}}, {"x": {"$in": [2**53 + 1]}}):
        assert list(evaluate(compile_filter(raw, SCHEMA), index, BitMap([0]))) == [0]


# -- compile errors: each names the offending path ------------------------------------------

BAD_FILTERS: list[tuple[Any, str, str]] = [
    ({"nope": 1}, "filter.nope", "declare"),
    ({"note": "a"}, "filter.note", "declare"),  # stored untyped: not filterable
    ({"n": {"$foo": 1}}, "filter.n.$foo", "unknown operator"),
    ({"$nor": [{"n": 1}]}, "filter.$nor", "unknown operator"),
    ({"kw": 5}, "filter.kw", "string"),
    ({"n": "5"}, "filter.n", "number"),
    ({"n": True}, "filter.n", "number"),
    ({"x": {"$gte": False}}, "filter.x.$gte", "number"),
    ({"b": "true"}, "filter.b", "true or false"),
    ({"tags": ["a"]}, "filter.tags", "$in or $all"),
    ({"tags": {"$in": ["a", 1]}}, "filter.tags.$in[1]", "string"),
    ({"at": 1_714_564_800}, "filter.at", "datetime"),
    ({"at": {"$gt": "2024-13-01T00:00:00Z"}}, "filter.at.$gt", "datetime"),
    ({"kw": {"$gt": "a"}}, "filter.kw.$gt", "integer, float and datetime"),
    ({"b": {"$lte": True}}, "filter.b.$lte", "integer, float and datetime"),
    ({"kw": {"$all": ["a"]}}, "filter.kw.$all", "keyword[]"),
    ({"n": {"$in": 1}}, "filter.n.$in", "list"),
    ({"$or": []}, "filter.$or", "non-empty list"),
    ({"$and": {"n": 1}}, "filter.$and", "non-empty list"),
    ({"kw": None}, "filter.kw", "$exists"),
    ({"n": {"$in": [1, None]}}, "filter.n.$in[1]", "$exists"),
    ({"$or": [{"kw": "a"}, {"n": {"$gt": "x"}}]}, "filter.$or[1].n.$gt", "number"),
    ({"$and": [1]}, "filter.$and[0]", "JSON object"),
    ("kw", "filter", "JSON object"),
    ({"n": {}}, "filter.n", "empty"),
    ({"n": {"$exists": 1}}, "filter.n.$exists", "true or false"),
    ({"n": {"$not": 3}}, "filter.n.$not", "operator object"),
]


@pytest.mark.parametrize(("raw", "path", "words"), BAD_FILTERS, ids=[p for _, p, _ in BAD_FILTERS])
def test_bad_filters_name_the_offending_path(raw: Any, path: str, words: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(raw, SCHEMA)
    assert caught.value.path == path
    assert words in caught.value.message


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    raw: dict[str, Any] = {"kw": "a"}
    for _ in range(16):
        raw = {"$not": raw}
    compile_filter(raw, SCHEMA)  # 16 levels are fine
    with pytest.raises(FilterError) as caught:
        compile_filter({"$not": raw}, SCHEMA)
    assert caught.value.path == "filter" + ".$not" * 17


def test_field_level_not_counts_toward_the_depth_limit() -> None:
    clause: dict[str, Any] = {"$gt": 1}
    for _ in range(16):
        clause = {"$not": clause}
    compile_filter({"n": clause}, SCHEMA)
    with pytest.raises(FilterError) as caught:
        compile_filter({"n": {"$not": clause}}, SCHEMA)
    assert caught.value.path == "filter.n" + ".$not" * 17
    assert "16 levels" in caught.value.message


def test_more_than_1024_terms_are_refused() -> None:
    compile_filter({"$or": [{"n": i} for i in range(1023)]}, SCHEMA)  # 1 + 1023 terms
    with pytest.raises(FilterError) as caught:
        compile_filter({"$or": [{"n": i} for i in range(1100)]}, SCHEMA)
    assert caught.value.path == "filter.$or[1023].n"
