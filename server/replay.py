"""How a read worker's copy of a collection replays the writer's change records.

A mixin of `Collection` (its write path's other half, kept apart so that each file reads in
one sitting): `Database.follow` calls these for the records of kind `points` and `schema`,
under the same mutex and lock the writer's own apply step takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from index.tenants import bitmap_labels
from server.changes import Change
from server.model import CollectionConfig
from storage import keys
from storage.records import decode_point

if TYPE_CHECKING:
    from server.collection import Collection


class FollowerReplay:
    def follow_points(self: Collection, change: Change) -> None:
        """Bring memory in step with the store for the labels and tenants `change` names.

        The store may already be ahead of `change` (a follower replays a run of records after
        one catch-up), so a label is re-read, not patched: forgotten, then added back as
        stored. A point owned by, or granted to, a tenant not registered yet is left out: the
        later record of the run that registers that tenant names the label too; a point
        already held under another label is moved."""
        cid = self.config.cid
        stored = []
        for label in change.labels:
            raw = self._store.get(keys.CF_POINTS, keys.point_key(cid, label))
            grants = [
                keys.decode_grant_key(key)[2]
                for key, _ in self._store.scan(keys.CF_GRANTS, keys.point_key(cid, label))
            ]
            stored.append((label, None if raw is None else decode_point(raw), grants))
        with self._writing(), self._rw.write():
            for number, name in change.tenants_added.items():
                if number not in self.tenants.name_of and name not in self.tenants.number_of:
                    self.tenants.register(name, number)
            for label, _, _ in stored:
                if self.arena.is_live(label):
                    owner = self.points.owner(label)
                    self._forget_point(owner, self.points.point_id(label), label)
            known = self.tenants.name_of
            present = [
                (label, record, [g for g in grants if g in known])
                for label, record, grants in stored
                if record is not None and record.owner in known
            ]
            for label, record, _ in present:
                # The store is ahead: the point may already live here under the label it
                # left, whose own record comes later in the run (delete, then re-upsert into
                # a freed label). One point, one label: the stale one goes now.
                stale = self.tenants.ids[record.owner].get(record.point_id)
                if stale is not None and stale != label:
                    self._forget_point(record.owner, record.point_id, stale)
            if present:
                labels = [label for label, _, _ in present]
                matrix = np.stack([record.vector for _, record, _ in present])
                self.arena.put(np.asarray(labels, dtype=np.int64), matrix)
                for label, record, grants in present:
                    self._hold(label, record)
                    for grantee in grants:
                        self.tenants.grant(label, grantee)
                readers = [self._readers(label) for label in labels]
                self.curator.add(labels, readers)
                self.graphs.vectors_changed(labels, readers)
            for number in change.tenants_removed:
                if number in self.tenants.name_of and not self.tenants.owned[number]:
                    self._drop_tenant(number)
        self.graphs.poke()

    def follow_schema(self: Collection) -> None:
        """The stored config declares more fields: index them as the writer did."""
        raw = self._store.get(keys.CF_META, keys.collection_key(self.name))
        if raw is None:
            return  # dropped since: its `drop` record follows
        config = CollectionConfig.from_json(raw)
        if config.cid != self.config.cid:
            return
        added = {n: t for n, t in config.schema.items() if n not in self.config.schema}
        with self._writing(), self._rw.write():
            self._declare(config, added)
            labels = bitmap_labels(self.tenants.all_labels)
        if added:
            self._index_in_background(added, labels)
