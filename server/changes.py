"""What one write changed, as the change feed records it for read workers (`server.follower`).

A record names what to re-read, not the new values: a follower applies it by reading the
affected keys from the store, which is the truth, so applying a record twice, or after later
writes already landed, gives the same state (see `server.follower`).

Kinds:
- `points`: labels of one collection whose point record or grants changed (upsert, patch,
  delete, grant, revoke, tenant deletion), tenants registered and tenants removed;
- `schema`, `tree`, `quotas`: the collection's config, Curator tree or quotas changed;
- `create`, `drop`: a collection was created or dropped;
- `graph`: the writer built one of the collection's HNSW graphs and saved its snapshot
  (`graph`: `shared` or a tenant number; `labels`: the oplog sequence number it holds),
  which followers load rather than build their own;
- `keys`: the API keys changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

Kind = Literal["points", "schema", "tree", "quotas", "create", "drop", "graph", "keys"]


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    collection: str = ""
    labels: tuple[int, ...] = ()
    tenants_added: Mapping[int, str] = field(default_factory=dict)
    tenants_removed: tuple[int, ...] = ()
    graph: str = ""

    def encode(self) -> bytes:
        record: dict[str, object] = {"k": self.kind}
        if self.collection:
            record["c"] = self.collection
        if self.labels:
            record["l"] = self.labels
        if self.tenants_added:
            record["ta"] = {str(number): name for number, name in self.tenants_added.items()}
        if self.tenants_removed:
            record["tr"] = self.tenants_removed
        if self.graph:
            record["g"] = self.graph
        return orjson.dumps(record)

    @classmethod
    def decode(cls, raw: bytes) -> Change:
        record = orjson.loads(raw)
        return cls(
            record["k"],
            record.get("c", ""),
            tuple(record.get("l", ())),
            {int(number): name for number, name in record.get("ta", {}).items()},
            tuple(record.get("tr", ())),
            record.get("g", ""),
        )


def points_changed(
    collection: str,
    labels: Iterable[int],
    tenants_added: Mapping[str, int] | None = None,
    tenants_removed: Iterable[int] = (),
) -> bytes:
    """The record of a write to points; `tenants_added` maps names to numbers, as writers
    hold them."""
    added = {number: name for name, number in (tenants_added or {}).items()}
    return Change(
        "points", collection, tuple(sorted(set(labels))), added, tuple(tenants_removed)
    ).encode()


def collection_changed(kind: Kind, collection: str) -> bytes:
    return Change(kind, collection).encode()
