"""The attribute index under long random write sequences, against a plain dict of points.

A Hypothesis state machine sets, removes and re-sets points (single writes and seeded bulks of
thousands), so every numeric column re-sorts its run more than once (a run is re-sorted when
more than 4096 labels went stale) and most checks meet a run *and* stale labels. After any step
the bitmaps must equal what the stored values say, and random filters (the strategies and the
reference evaluator of `tests/index/test_filters.py`) must match the reference.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from pyroaring import BitMap

from index.attributes import AttributeIndex, FieldType, datetime_micros
from index.filters import compile_filter, evaluate
from tests.index.test_filters import (
    FIELDS,
    INSTANTS,
    SCHEMA,
    TYPES,
    attribute_dicts,
    expected_labels,
    filters,
    random_attributes,
    range_filters,
    typed_value,
)

LABELS = 10_000  # label space of the machine; more than 4096 distinct labels go stale
FIRST_FILL = 7_000  # about 4,500 present values per numeric field: forces a first re-sort
SAMPLE = 800  # labels the general filter checks look at (the reference is pure Python)
NUMERIC = [name for name in FIELDS if TYPES[name] in ("integer", "float", "datetime")]
KEYWORDISH = [name for name in FIELDS if name not in NUMERIC]


class AttributeIndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = AttributeIndex(SCHEMA)
        self.points: dict[int, dict[str, Any]] = {}
        self.resorts = dict.fromkeys(NUMERIC, 0)
        self.mixed_checks = 0  # range checks that met both a sorted run and stale labels

    # -- writes ---------------------------------------------------------------------------

    def _write(self, label: int, attributes: dict[str, Any] | None) -> None:
        stale = {name: len(column.stale) for name, column in self.index.numbers.items()}
        if attributes is None:
            self.index.remove(label)
            self.points.pop(label, None)
        else:
            self.index.set(label, attributes)
            self.points[label] = attributes
        for name, column in self.index.numbers.items():
            if len(column.stale) < stale[name]:
                self.resorts[name] += 1

    @initialize(seed=st.integers(0, 2**32 - 1))
    def fill(self, seed: int) -> None:
        """Fresh labels, then distinct re-sets and removals: two re-sorts of every column."""
        rng = random.Random(seed)
        for label in range(FIRST_FILL):
            self._write(label, random_attributes(rng, wrong_types=True))
        assert all(count == 1 for count in self.resorts.values()), self.resorts
        self.bulk(rng.randrange(2**32), 6000, 0.2)
        assert all(count == 2 for count in self.resorts.values()), self.resorts

    @rule(label=st.integers(0, LABELS - 1), attributes=attribute_dicts(wrong_types=True))
    def set_point(self, label: int, attributes: dict[str, Any]) -> None:
        self._write(label, attributes)

    @rule(label=st.integers(0, LABELS - 1))
    def remove_point(self, label: int) -> None:
        self._write(label, None)

    @rule(
        seed=st.integers(0, 2**32 - 1),
        count=st.sampled_from([200, 2000, 5000]),
        removals=st.floats(0.0, 0.5),
    )
    def bulk(self, seed: int, count: int, removals: float) -> None:
        """Many writes at distinct random labels: new points, re-sets (often with fields
        dropped or of another type) and removals; the larger ones force a re-sort."""
        rng = random.Random(seed)
        for label in rng.sample(range(LABELS), count):
            if rng.random() < removals:
                self._write(label, None)
            else:
                self._write(label, random_attributes(rng, wrong_types=True))

    # -- checks ---------------------------------------------------------------------------

    @rule(seed=st.integers(0, 2**32 - 1), raws=st.lists(filters, min_size=1, max_size=3))
    def filters_match_the_reference(self, seed: int, raws: list[dict[str, Any]]) -> None:
        universe = BitMap(random.Random(seed).sample(range(LABELS), SAMPLE))
        for raw in raws:
            got = evaluate(compile_filter(raw, SCHEMA), self.index, universe)
            assert set(got) == expected_labels(raw, self.points, universe), raw

    @rule(raws=st.lists(range_filters(), min_size=1, max_size=4))
    def ranges_match_over_every_label(self, raws: list[dict[str, Any]]) -> None:
        """Ranges over the whole label space, against every stored value."""
        for raw in raws:
            self._check_range(raw)

    def _check_range(self, raw: dict[str, Any]) -> None:
        [name] = raw
        column = self.index.numbers[name]
        if column.stale and len(column._run_labels):
            self.mixed_checks += 1
        universe = BitMap(range(LABELS))
        got = evaluate(compile_filter(raw, SCHEMA), self.index, universe)
        assert set(got) == expected_labels(raw, self.points, universe), raw

    @rule()
    def bitmaps_agree_with_the_stored_values(self) -> None:
        """Every field's present set and value bitmaps, from the stored values (a rule, not an
        invariant: it reads all 10,000 labels; teardown runs it once more)."""
        present: dict[str, set[int]] = {name: set() for name in FIELDS}
        by_value: dict[str, dict[Any, set[int]]] = {name: {} for name in KEYWORDISH}
        for label, attributes in self.points.items():
            for name in FIELDS:
                value = typed_value(name, attributes.get(name))
                if value is None:
                    continue
                present[name].add(label)
                if name in by_value:
                    for item in value if isinstance(value, set) else [value]:
                        by_value[name].setdefault(item, set()).add(label)
        for name in FIELDS:
            assert set(self.index.present(name)) == present[name], name
        for name, values in by_value.items():
            bitmaps = self.index.keywords[name].bitmaps
            assert {v: set(b) for v, b in bitmaps.items()} == values, name  # no empty ones
        for name in NUMERIC:
            column = self.index.numbers[name]
            assert column.between(None, None) == column.present
            assert column.stale <= BitMap(range(LABELS))
            assert len(column.stale) <= max(4096, len(column._run_labels) // 16)

    def teardown(self) -> None:
        self.bitmaps_agree_with_the_stored_values()
        middle = {"n": 0.5, "x": 0.25, "at": INSTANTS[0].isoformat()}
        for name, bound in middle.items():
            self._check_range({name: {"$gt": bound}})
        assert all(count >= 2 for count in self.resorts.values()), self.resorts
        event("fewest re-sorts of a numeric column", str(min(self.resorts.values())))
        event("range checks over a run plus stale labels", str(min(self.mixed_checks, 3)))


AttributeIndexMachine.TestCase.settings = settings(
    max_examples=10,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestAttributeIndexUnderRandomWrites = AttributeIndexMachine.TestCase


# -- plain cases ------------------------------------------------------------------------------


def test_reset_moves_a_label_between_values_and_drops_empty_bitmaps() -> None:
    index = AttributeIndex(SCHEMA)
    index.set(0, {"kw": "a", "tags": ["x", "y", "x"], "b": True})
    index.set(1, {"kw": "a", "tags": ["y"]})
    index.set(0, {"kw": "b", "tags": ["z"]})  # a re-set replaces every field
    assert {v: list(b) for v, b in index.keywords["kw"].bitmaps.items()} == {"a": [1], "b": [0]}
    tags = index.keywords["tags"].bitmaps
    assert {v: list(b) for v, b in tags.items()} == {"y": [1], "z": [0]}
    assert index.keywords["b"].value_count() == 0 and not index.present("b")
    index.remove(1)
    index.remove(1)  # twice, and a label never set: no-ops
    index.remove(99)
    assert {v: list(b) for v, b in index.keywords["kw"].bitmaps.items()} == {"b": [0]}
    assert list(index.present("tags")) == [0]


def test_empty_keyword_list_is_present_and_contains_nothing() -> None:
    index = AttributeIndex(SCHEMA)
    index.set(0, {"tags": []})
    index.set(1, {"tags": None})
    universe = BitMap([0, 1])

    def labels(raw: dict[str, Any]) -> list[int]:
        return list(evaluate(compile_filter(raw, SCHEMA), index, universe))

    assert labels({"tags": {"$exists": True}}) == [0]
    assert labels({"tags": "a"}) == []
    assert labels({"tags": {"$ne": "a"}}) == [0, 1]
    assert labels({"tags": {"$all": []}}) == [0]


def test_values_of_the_wrong_type_are_not_indexed() -> None:
    index = AttributeIndex(SCHEMA)
    wrong = {"kw": 5, "n": 1.5, "x": "1", "b": 1, "tags": ["a", 2], "at": "soon"}
    index.set(0, wrong)
    index.set(1, {"n": True, "x": True, "at": 17, "n_other": 3})
    for name in FIELDS:
        assert not index.present(name), name
    universe = BitMap([0, 1])
    assert list(evaluate(compile_filter({"n": {"$exists": False}}, SCHEMA), index, universe)) == [
        0,
        1,
    ]


def test_numeric_run_is_resorted_past_4096_stale_labels_and_still_answers() -> None:
    index = AttributeIndex({"n": FieldType.INTEGER})
    column = index.numbers["n"]
    for label in range(4096):
        index.set(label, {"n": label % 100})
    assert len(column.stale) == 4096 and len(column._run_labels) == 0  # not yet
    index.set(4096, {"n": 5})
    assert len(column.stale) == 0 and len(column._run_labels) == 4097  # re-sorted
    index.set(7, {"n": 1000})  # stale again: answered from the dense column
    index.remove(8)
    got = evaluate(compile_filter({"n": {"$gte": 99}}, SCHEMA), index, BitMap(range(5000)))
    expected = {label for label in range(4097) if label % 100 == 99} | {7}
    assert set(got) == expected


def test_a_field_added_later_is_empty_until_its_values_are_set() -> None:
    index = AttributeIndex({})
    index.add_field("n", FieldType.INTEGER)
    assert not index.present("n")
    index.set_field("n", FieldType.INTEGER, 3, 42)
    index.set_field("n", FieldType.INTEGER, 4, "42")  # the wrong type: as if missing
    assert list(index.present("n")) == [3]


def test_datetime_micros_counts_instants_from_the_epoch() -> None:
    assert datetime_micros("1970-01-01T00:00:00Z") == 0
    assert datetime_micros("1970-01-01T00:00:00") == 0  # no offset: UTC
    assert datetime_micros("1970-01-01T01:00:00+01:00") == 0
    assert datetime_micros("1969-12-31T23:59:59.999999Z") == -1
    for instant in INSTANTS:
        expected = round((instant - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
        assert datetime_micros(instant.isoformat()) == expected
