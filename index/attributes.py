"""The attribute index: for every typed field, which labels hold which value.

- `keyword`, `keyword[]`, `boolean`: one roaring bitmap of labels per value;
- `integer`, `float`, `datetime`: a numeric column (a dense value array by label), answered by
  a sorted run plus the labels changed since the run was sorted (see `NumericColumn`);
- every field: the bitmap of labels where it is present (not missing, not null).

Cardinalities of any combination are exact (`len` of a bitmap), which is what the planner
needs. Values arrive already checked against the schema by the server; a value of the wrong
type (possible only for fields declared after points were written) is left unindexed, as if
missing. The index keeps each label's indexed values so that a removal never needs the old
attributes.
"""

from __future__ import annotations

import array
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from pyroaring import BitMap


class FieldType(StrEnum):
    KEYWORD = "keyword"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    KEYWORDS = "keyword[]"
    DATETIME = "datetime"


NUMERIC_TYPES = frozenset({FieldType.INTEGER, FieldType.FLOAT, FieldType.DATETIME})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def labels_bitmap(labels: np.ndarray) -> BitMap:
    """A bitmap of `labels` (any order). Through `array('I')`: about 7x faster than handing
    pyroaring the numpy array, which it would iterate element by element."""
    return BitMap(array.array("I", np.asarray(labels, dtype=np.uint32).tobytes()))


# RFC 3339 (`T` or `t` or a space between date and time, `Z` or `z` or an offset) and the
# ISO 8601 forms Python reads (a date alone, minutes only, the basic `20240510T100000Z`);
# `fromisoformat` alone would take any character as the separator.
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
    r"(?:[Zz]|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?)?)?"
    r"|\d{8}(?:T\d{2}(?:\d{2}(?:\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}(?:\d{2})?)?)?"
)


def datetime_micros(value: str) -> int:
    """RFC 3339 / ISO 8601 text as microseconds since the epoch; no offset means UTC.
    Raises ValueError for anything else."""
    if not _DATETIME.fullmatch(value):
        raise ValueError(f"not an RFC 3339 datetime: {value!r}")
    if len(value) > 10 and value[10] == "t":
        value = value[:10] + "T" + value[11:]
    if value.endswith("z"):
        value = value[:-1] + "Z"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _grow(values: np.ndarray, needed: int, fill: int | float) -> np.ndarray:
    if needed <= len(values):
        return values
    grown = np.full(max(needed, 2 * len(values)), fill, dtype=values.dtype)
    grown[: len(values)] = values
    return grown


class KeywordField:
    """`keyword` (one value) and `keyword[]` (a set of values: a label is in every value's
    bitmap). `boolean` fields are keyword fields over the values True and False."""

    def __init__(self, many: bool = False):
        self.many = many
        self.bitmaps: dict[Any, BitMap] = {}
        self.present = BitMap()
        self._held: dict[int, tuple[Any, ...]] = {}  # label -> values it was indexed under

    def set(self, label: int, value: Any) -> None:
        self.remove(label)
        values = tuple(dict.fromkeys(value)) if self.many else (value,)
        self._held[label] = values
        self.present.add(label)
        for item in values:
            bitmap = self.bitmaps.get(item)
            if bitmap is None:
                bitmap = self.bitmaps[item] = BitMap()
            bitmap.add(label)

    def remove(self, label: int) -> None:
        values = self._held.pop(label, None)
        if values is None:
            return
        self.present.discard(label)
        for item in values:
            bitmap = self.bitmaps[item]
            bitmap.discard(label)
            if not bitmap:
                del self.bitmaps[item]

    def equal(self, value: Any) -> BitMap:
        return self.bitmaps.get(value, _EMPTY)

    def any_of(self, values: Iterable[Any]) -> BitMap:
        return BitMap.union(BitMap(), *(self.bitmaps.get(v, _EMPTY) for v in values))

    def all_of(self, values: Iterable[Any]) -> BitMap:
        chosen = [self.bitmaps.get(v, _EMPTY) for v in values]
        if not chosen:
            return self.present
        return BitMap.intersection(*chosen) if len(chosen) > 1 else chosen[0]

    def value_count(self) -> int:
        return len(self.bitmaps)


class NumericColumn:
    """Integers and datetimes as int64 (datetimes in microseconds), floats as float64.

    A range query reads a sorted run (values and labels sorted by value, found by binary
    search) minus `stale`, the labels set or removed since the run was sorted, plus the stale
    labels that still hold a value, compared one by one against the dense column. The run is
    re-sorted when the stale set passes a sixteenth of it, so a write costs O(1) and a query
    O(log n + matches + stale).
    """

    def __init__(self, dtype: type[np.generic]):
        self.values = np.zeros(1024, dtype=dtype)
        self.present = BitMap()
        self.stale = BitMap()
        self._run_values = np.empty(0, dtype=dtype)
        self._run_labels = np.empty(0, dtype=np.uint32)

    def set(self, label: int, value: int | float) -> None:
        self.values = _grow(self.values, label + 1, 0)
        self.values[label] = value
        self.present.add(label)
        self._touch(label)

    def remove(self, label: int) -> None:
        if label in self.present:
            self.present.discard(label)
            self._touch(label)

    def _touch(self, label: int) -> None:
        self.stale.add(label)
        if len(self.stale) > max(4096, len(self._run_labels) // 16):
            self.resort()

    def resort(self) -> None:
        labels = np.frombuffer(self.present.to_array(), dtype=np.uint32)
        values = self.values[labels]
        order = np.argsort(values, kind="stable")
        self._run_values, self._run_labels = values[order], labels[order]
        self.stale = BitMap()

    def between(
        self,
        low: float | None,
        high: float | None,
        low_inclusive: bool = True,
        high_inclusive: bool = True,
        within: BitMap | None = None,
    ) -> BitMap:
        """Labels whose value v satisfies low <(=) v <(=) high (None: unbounded). With
        `within`, only those labels are wanted: when they are fewer than the range's matches
        in the whole collection, their own values are compared instead (the dense column is
        always current), so a broad range inside a small tenant costs the tenant's size."""
        start, stop = 0, len(self._run_values)
        if low is not None:
            side = "left" if low_inclusive else "right"
            start = int(np.searchsorted(self._run_values, low, side=side))
        if high is not None:
            side = "right" if high_inclusive else "left"
            stop = int(np.searchsorted(self._run_values, high, side=side))
        if within is not None and len(within) < stop - start:
            labels = np.frombuffer((within & self.present).to_array(), dtype=np.uint32)
            return labels_bitmap(
                labels[self._in_bounds(labels, low, high, low_inclusive, high_inclusive)]
            )
        found = labels_bitmap(self._run_labels[start:stop]) if stop > start else BitMap()
        if self.stale:
            found -= self.stale
            changed = np.frombuffer((self.stale & self.present).to_array(), dtype=np.uint32)
            if len(changed):
                keep = self._in_bounds(changed, low, high, low_inclusive, high_inclusive)
                found |= labels_bitmap(changed[keep])
        return found

    def _in_bounds(
        self,
        labels: np.ndarray,
        low: float | None,
        high: float | None,
        low_inclusive: bool,
        high_inclusive: bool,
    ) -> np.ndarray:
        values = self.values[labels]
        keep = np.ones(len(labels), dtype=bool)
        if low is not None:
            keep &= values >= low if low_inclusive else values > low
        if high is not None:
            keep &= values <= high if high_inclusive else values < high
        return keep


_EMPTY = BitMap()


class AttributeIndex:
    """Every typed field of one collection; `set`/`remove` keep it in step with the points."""

    def __init__(self, schema: dict[str, FieldType] | None = None):
        self.types: dict[str, FieldType] = {}
        self.keywords: dict[str, KeywordField] = {}
        self.numbers: dict[str, NumericColumn] = {}
        for name, field_type in (schema or {}).items():
            self.add_field(name, field_type)

    def add_field(self, name: str, field_type: FieldType) -> None:
        self.types[name] = field_type
        if field_type in NUMERIC_TYPES:
            dtype = np.float64 if field_type is FieldType.FLOAT else np.int64
            self.numbers[name] = NumericColumn(dtype)
        else:
            self.keywords[name] = KeywordField(many=field_type is FieldType.KEYWORDS)

    def set(self, label: int, attributes: dict[str, Any]) -> None:
        """Index the typed fields of a point's attributes (replacing what it had)."""
        for name, field_type in self.types.items():
            self.set_field(name, field_type, label, attributes.get(name))

    def set_field(self, name: str, field_type: FieldType, label: int, value: Any) -> None:
        indexed = _indexable(field_type, value)
        if field_type in NUMERIC_TYPES:
            column = self.numbers[name]
            if indexed is None:
                column.remove(label)
            else:
                column.set(label, indexed)
        else:
            keyword = self.keywords[name]
            if indexed is None:
                keyword.remove(label)
            else:
                keyword.set(label, indexed)

    def remove(self, label: int) -> None:
        for column in self.numbers.values():
            column.remove(label)
        for keyword in self.keywords.values():
            keyword.remove(label)

    def present(self, name: str) -> BitMap:
        if name in self.numbers:
            return self.numbers[name].present
        return self.keywords[name].present

    def memory_bytes(self) -> int:
        total = 0
        # Copies of the dicts: a schema extension may add values while a scrape reads them.
        for column in list(self.numbers.values()):
            total += column.values.nbytes + column._run_values.nbytes + column._run_labels.nbytes
            total += _bitmap_bytes(column.present)
        for keyword in list(self.keywords.values()):
            total += sum(_bitmap_bytes(b) for b in list(keyword.bitmaps.values()))
        return total


def _bitmap_bytes(bitmap: BitMap) -> int:
    stats = bitmap.get_statistics()
    return sum(stats[f"n_bytes_{kind}_containers"] for kind in ("array", "run", "bitset"))


def _indexable(field_type: FieldType, value: Any) -> Any:
    """The value as the index stores it, or None when it is missing or of another type."""
    if value is None:
        return None
    if field_type is FieldType.KEYWORD:
        return value if isinstance(value, str) else None
    if field_type is FieldType.BOOLEAN:
        return value if isinstance(value, bool) else None
    if field_type is FieldType.KEYWORDS:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value if ok else None
    if isinstance(value, bool):
        return None
    if field_type is FieldType.INTEGER:
        ok = isinstance(value, int) and -(2**63) <= value < 2**63
        return value if ok else None
    if field_type is FieldType.FLOAT:
        return float(value) if isinstance(value, int | float) and np.isfinite(value) else None
    if not isinstance(value, str):
        return None
    try:
        return datetime_micros(value)
    except (ValueError, OverflowError):
        return None
