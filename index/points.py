"""Per-label point metadata: owner tenant number, point id, attributes as stored JSON bytes.

Attributes stay as the JSON bytes written to storage and are decoded only for points returned.
"""

from __future__ import annotations

import numpy as np


class PointTable:
    def __init__(self, initial_capacity: int = 1024) -> None:
        self._owner = np.full(max(16, initial_capacity), -1, dtype=np.int64)
        self._ids: list[str | None] = []
        self._attributes: list[bytes | None] = []

    def _ensure(self, label: int) -> None:
        if label >= len(self._owner):
            grown = np.full(max(label + 1, 2 * len(self._owner)), -1, dtype=np.int64)
            grown[: len(self._owner)] = self._owner
            self._owner = grown
        if label >= len(self._ids):
            extra = label + 1 - len(self._ids)
            self._ids.extend([None] * extra)
            self._attributes.extend([None] * extra)

    def set(self, label: int, owner: int, point_id: str, attributes_json: bytes) -> None:
        self._ensure(label)
        self._owner[label] = owner
        self._ids[label] = point_id
        self._attributes[label] = attributes_json

    def set_attributes(self, label: int, attributes_json: bytes) -> None:
        self._attributes[label] = attributes_json

    def clear(self, label: int) -> None:
        self._owner[label] = -1
        self._ids[label] = None
        self._attributes[label] = None

    def owner(self, label: int) -> int:
        return int(self._owner[label])

    def owners(self, labels: np.ndarray) -> np.ndarray:
        return self._owner[labels]

    def point_id(self, label: int) -> str:
        point_id = self._ids[label]
        assert point_id is not None, f"label {label} is not live"
        return point_id

    def attributes_json(self, label: int) -> bytes:
        attributes = self._attributes[label]
        assert attributes is not None, f"label {label} is not live"
        return attributes

    def owner_map(self) -> dict[int, int]:
        live = np.flatnonzero(self._owner >= 0)
        return dict(zip(live.tolist(), self._owner[live].tolist(), strict=True))
