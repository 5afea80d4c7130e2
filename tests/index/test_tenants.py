"""TenantIndex invariants under random sequences of point and grant operations."""

from __future__ import annotations

import random

from index.tenants import TenantIndex


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
