"""TenantIndex invariants under random sequences of point and grant operations."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pyroaring import BitMap

from index.tenants import TenantIndex, labels_in_sequence
from tests.index.reference import in_sequence


def test_invariants_hold_under_random_operations() -> None:
    rng = random.Random(7)
    index = TenantIndex()
    for number in range(1, 9):
        index.register(f"t{number}", number)
    owner_of: dict[int, int] = {}
    ids: dict[int, str] = {}
    next_label = 0
    for step in range(3000):
        action = rng.random()
        if action < 0.45 or not owner_of:
            owner = rng.randint(1, 8)
            owner_of[next_label], ids[next_label] = owner, f"p{next_label}"
            index.add_point(owner, f"p{next_label}", next_label)
            next_label += 1
        elif action < 0.7:
            label = rng.choice(list(owner_of))
            grantee = rng.choice([t for t in range(1, 9) if t != owner_of[label]])
            index.grant(label, grantee)
        elif action < 0.85:
            label = rng.choice(list(owner_of))
            for grantee in list(index.grantees(label))[:1]:
                index.revoke(label, grantee)
        else:
            label = rng.choice(list(owner_of))
            index.remove_point(owner_of.pop(label), ids.pop(label), label)
        if step % 100 == 0:
            index.check_invariants(owner_of)
            for number in range(1, 9):
                assert index.readable_array(number).tolist() == sorted(index.readable[number])
    index.check_invariants(owner_of)


def test_names_after_pages_in_name_order() -> None:
    index = TenantIndex()
    for number, name in enumerate(["delta", "alpha", "charlie", "bravo"], start=1):
        index.register(name, number)
    assert index.names_after(None, 2) == ["alpha", "bravo"]
    assert index.names_after("bravo", 2) == ["charlie", "delta"]
    index.unregister(index.number_of["charlie"])
    assert index.names_after("bravo", 2) == ["delta"]


@pytest.mark.parametrize("seed", range(20))
def test_labels_in_sequence_counts_labels_after_lead_others(seed: int) -> None:
    rng = np.random.default_rng(seed)
    high = int(rng.integers(1, 5_000))
    start = int(rng.choice([0, 1, 65_530, 2**31]))  # across roaring's 65,536-label containers
    density = float(rng.choice([0.05, 0.5, 0.95, 1.0]))
    picked = rng.random(high) < density
    if seed % 5 == 0:  # whole blocks: a tenant written in a few batches
        picked = (np.arange(high) // 97) % 3 == 0
    labels = set((start + np.flatnonzero(picked)).tolist())
    bitmap = BitMap(labels)
    for lead in (0, 1, 2, 3, 8):
        expected = len(labels) if lead == 0 else in_sequence(labels, lead)
        assert labels_in_sequence(bitmap, lead) == expected, lead


@pytest.mark.parametrize("start", [0, 70_000, 2**32 - 6_000])
def test_labels_in_sequence_on_bitmaps_built_label_by_label(start: int) -> None:
    """As the server builds them (`add`, no run compression): array and bitset containers,
    a run across two containers, and labels at the top of the 32-bit range."""
    rng = np.random.default_rng(start % 1000)
    dense = start + np.flatnonzero(rng.random(5_900) < 0.9)  # > 4,096 in a container: a bitset
    sparse = start + 2_000_000 * (start < 2**31) + np.arange(0, 3_000, 3)
    crossing = np.arange(65_530, 65_545) + (start if start < 2**31 else 0)
    labels = set(dense.tolist()) | set(sparse.tolist()) | set(crossing.tolist())
    bitmap = BitMap()
    for label in sorted(labels):
        bitmap.add(label)
    for lead in (1, 2, 3, 5):
        assert labels_in_sequence(bitmap, lead) == in_sequence(labels, lead), lead


def test_labels_in_sequence_of_runs() -> None:
    assert labels_in_sequence(BitMap(), 1) == 0
    assert labels_in_sequence(BitMap([7]), 1) == 0
    assert labels_in_sequence(BitMap(range(100)), 1) == 99
    assert labels_in_sequence(BitMap(range(100)), 4) == 96
    assert labels_in_sequence(BitMap(range(0, 100, 2)), 1) == 0
    two_blocks = BitMap(range(10)) | BitMap(range(20, 30))
    assert labels_in_sequence(two_blocks, 3) == 14
