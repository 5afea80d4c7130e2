"""TenantIndex invariants under random sequences of point and grant operations."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pyroaring import BitMap

from index.tenants import TenantIndex, bitmap_labels, label_runs, runs_at_most


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
                labels = sorted(index.readable[number])
                assert index.readable_array(number).tolist() == labels
                assert index.readable_runs(number) == _runs_by_hand(labels)
    index.check_invariants(owner_of)


def test_names_after_pages_in_name_order() -> None:
    index = TenantIndex()
    for number, name in enumerate(["delta", "alpha", "charlie", "bravo"], start=1):
        index.register(name, number)
    assert index.names_after(None, 2) == ["alpha", "bravo"]
    assert index.names_after("bravo", 2) == ["charlie", "delta"]
    index.unregister(index.number_of["charlie"])
    assert index.names_after("bravo", 2) == ["delta"]


def _runs_by_hand(labels: list[int]) -> int:
    return sum(1 for i, label in enumerate(labels) if i == 0 or labels[i - 1] != label - 1)


@pytest.mark.parametrize("seed", range(20))
def test_runs_are_counted_and_bounded_from_the_ends(seed: int) -> None:
    rng = np.random.default_rng(seed)
    high = int(rng.integers(1, 5_000))
    density = float(rng.choice([0.05, 0.5, 0.95, 1.0]))
    picked = rng.random(high) < density
    if seed % 5 == 0:  # whole blocks, a tenant written in a few batches
        picked = (np.arange(high) // 97) % 3 == 0
    bitmap = BitMap(np.flatnonzero(picked).tolist())
    labels = bitmap_labels(bitmap)
    runs = label_runs(labels)
    assert runs == _runs_by_hand(labels.tolist())
    assert runs <= runs_at_most(bitmap) <= len(bitmap)
    if picked.all():
        assert runs == runs_at_most(bitmap) == 1


def test_runs_of_nothing_are_zero() -> None:
    assert label_runs(np.array([], dtype=np.int64)) == 0
    assert runs_at_most(BitMap()) == 0
    assert runs_at_most(BitMap([7])) == label_runs(np.array([7])) == 1
