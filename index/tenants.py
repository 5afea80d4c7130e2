"""Who owns and who may read each label: tenant numbers, id maps, grants, per-tenant bitmaps.

Invariants (checked by `check_invariants`):
- `owned[t]` is exactly the labels whose owner is `t`, and `ids[t]` maps their point ids to them;
- `readable[t] == owned[t] | {labels granted to t}`; a label is never granted to its owner;
- `grants[label]` lists the grantees of `label`, and only live labels have entries.
"""

from __future__ import annotations

import bisect

import numpy as np
from pyroaring import BitMap


def bitmap_labels(bitmap: BitMap) -> np.ndarray:
    """The labels of a bitmap as a sorted int64 array."""
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32).astype(np.int64)


def labels_in_sequence(bitmap: BitMap, lead: int) -> int:
    """How many labels of `bitmap` come right after `lead` others of it (label - 1 ..
    label - lead all in it): rows a scan reads as the continuation of a run, which the
    hardware prefetches. Counted on shifted bitmaps, without listing them: 2-18 us up to
    5,000 labels however spread, 94 us for a million (docs/architecture.md, Planner)."""
    if lead < 1:
        return len(bitmap)
    following = bitmap  # labels after `step - 1` others: shrinks at every step
    for _ in range(lead - 1):
        following = following & following.shift(1)
    return following.intersection_cardinality(following.shift(1))


class TenantIndex:
    def __init__(self) -> None:
        self.number_of: dict[str, int] = {}
        self.name_of: dict[int, str] = {}
        self.next_number = 1
        self.owned: dict[int, BitMap] = {}
        self.readable: dict[int, BitMap] = {}
        self.ids: dict[int, dict[str, int]] = {}
        self.all_labels = BitMap()  # every live label, whoever owns it
        self.grants: dict[int, set[int]] = {}
        self._sorted_names: list[str] | None = None
        self._readable_arrays: dict[int, np.ndarray] = {}

    # -- tenants ------------------------------------------------------------------------

    def reserve_number(self) -> int:
        number = self.next_number
        self.next_number += 1
        return number

    def register(self, name: str, number: int) -> None:
        self.number_of[name] = number
        self.name_of[number] = name
        self.owned[number] = BitMap()
        self.readable[number] = BitMap()
        self.ids[number] = {}
        self.next_number = max(self.next_number, number + 1)
        self._sorted_names = None

    def unregister(self, number: int) -> None:
        name = self.name_of.pop(number)
        del self.number_of[name]
        del self.owned[number], self.readable[number], self.ids[number]
        self._readable_arrays.pop(number, None)
        self._sorted_names = None

    def names_after(self, cursor: str | None, limit: int) -> list[str]:
        if self._sorted_names is None:
            self._sorted_names = sorted(self.number_of)
        start = 0 if cursor is None else bisect.bisect_right(self._sorted_names, cursor)
        return self._sorted_names[start : start + limit]

    # -- points and grants --------------------------------------------------------------

    def add_point(self, owner: int, point_id: str, label: int) -> None:
        self.ids[owner][point_id] = label
        self.all_labels.add(label)
        self.owned[owner].add(label)
        self.readable[owner].add(label)
        self._readable_arrays.pop(owner, None)

    def remove_point(self, owner: int, point_id: str, label: int) -> None:
        del self.ids[owner][point_id]
        self.all_labels.discard(label)
        self.owned[owner].discard(label)
        self.readable[owner].discard(label)
        self._readable_arrays.pop(owner, None)
        for grantee in self.grants.pop(label, ()):
            self.readable[grantee].discard(label)
            self._readable_arrays.pop(grantee, None)

    def grant(self, label: int, grantee: int) -> None:
        self.grants.setdefault(label, set()).add(grantee)
        self.readable[grantee].add(label)
        self._readable_arrays.pop(grantee, None)

    def revoke(self, label: int, grantee: int) -> None:
        grantees = self.grants.get(label)
        if grantees is not None:
            grantees.discard(grantee)
            if not grantees:
                del self.grants[label]
        self.readable[grantee].discard(label)
        self._readable_arrays.pop(grantee, None)

    def grantees(self, label: int) -> set[int]:
        return self.grants.get(label, set())

    def granted_to(self, number: int) -> BitMap:
        return self.readable[number] - self.owned[number]

    def readable_array(self, number: int) -> np.ndarray:
        """Sorted int64 labels the tenant can read; cached until its set changes."""
        cached = self._readable_arrays.get(number)
        if cached is None:
            cached = bitmap_labels(self.readable[number])
            self._readable_arrays[number] = cached
        return cached

    # -- invariants ---------------------------------------------------------------------

    def check_invariants(self, owner_of: dict[int, int]) -> None:
        """`owner_of` maps every live label to its owner (from the point table)."""
        for number, owned in self.owned.items():
            assert set(owned) == set(self.ids[number].values()), f"ids/owned differ for {number}"
            assert all(owner_of[label] == number for label in owned), f"owner mismatch {number}"
        granted: dict[int, set[int]] = {}
        for label, grantees in self.grants.items():
            assert grantees, f"empty grant set kept for label {label}"
            assert label in owner_of, f"grant on dead label {label}"
            assert owner_of[label] not in grantees, f"label {label} granted to its owner"
            for grantee in grantees:
                granted.setdefault(grantee, set()).add(label)
        for number, readable in self.readable.items():
            expected = set(self.owned[number]) | granted.get(number, set())
            assert set(readable) == expected, f"readable set wrong for tenant {number}"
        assert sum(len(o) for o in self.owned.values()) == len(owner_of), "orphan labels"
        assert set(self.all_labels) == set(owner_of), "all_labels differs from the live labels"
