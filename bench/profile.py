"""Summarize a `py-spy record --format raw` profile: where the server's CPU time goes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def read_stacks(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks[stack] += int(count)
    return stacks


def summarize(path: Path) -> str:
    stacks = read_stacks(path)
    leaves: Counter[str] = Counter()
    for stack, n in stacks.items():
        leaves[stack.split(";")[-1]] += n
    total = sum(leaves.values())
    return "\n".join(f"{n / total:6.1%} {leaf}" for leaf, n in leaves.most_common(40))
