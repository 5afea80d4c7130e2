"""One collection: its in-memory indexes, its write path and its read path.

Write path (every mutation; single-point calls are one-element batches):

    validate (no lock) -> [write mutex] resolve ids, allocate labels, build one Batch
        -> store.append (RocksDB WriteBatch, unsynced) -> [RW lock, write] apply to arena,
        point table, tenant index -> [release mutex] -> store.wait_durable (group commit) -> ack

Writers are serialized per collection by the write mutex, so RocksDB order equals the order
indexes see; the WAL sync runs outside every lock, so one sync covers concurrent writers. A
crash after append is repaired by recovery, which rebuilds everything from RocksDB (`load`).
Readers hold the RW lock shared; it is never held across RocksDB I/O.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pyroaring import BitMap

from index.arena import VectorArena
from index.attributes import AttributeIndex, FieldType
from index.filters import MATCH_ALL, evaluate
from index.points import PointTable
from index.tenants import TenantIndex, bitmap_labels
from server import search, validation
from server.changes import collection_changed, points_changed
from server.curator_host import CuratorHost
from server.errors import Conflict, Invalid, NotFound, NotReady, TooLarge, Unavailable
from server.graph_host import GraphHost
from server.metrics import Observer
from server.model import (
    CollectionConfig,
    CollectionInfo,
    DeleteResult,
    Limits,
    PointInput,
    PointView,
    PointWrite,
    QueryResult,
    TenantInfo,
    UpsertResult,
)
from server.quotas import NO_QUOTAS, NoQuotas
from server.replay import FollowerReplay
from server.rwlock import RWLock
from server.schema import index_new_fields
from storage import keys
from storage.commit import DurabilityLost
from storage.records import PointRecord, decode_point, encode_point
from storage.store import Batch, Store

_LOAD_CHUNK = 4096
log = logging.getLogger("shoal.collection")


class Collection(FollowerReplay):
    admission: NoQuotas = NO_QUOTAS  # points quotas; the Database sets the real one

    def __init__(
        self,
        config: CollectionConfig,
        store: Store,
        limits: Limits,
        observer: Observer | None = None,
        graph_dir: Path | None = None,
        follower: bool = False,
    ):
        """`follower`: a read worker's copy, changed only by `follow_*` from the change feed;
        it trains no Curator tree and writes no graph file (the writer's are loaded)."""
        self.config = config
        self.limits = limits
        self._store = store
        self.observer = observer or Observer()  # metrics: query and write counts
        self.arena = VectorArena(config.dim, config.metric)
        self.points = PointTable()
        self.tenants = TenantIndex()
        self.attributes = AttributeIndex(config.schema)
        self.indexing: set[str] = set()  # schema fields still being indexed in the background
        self._write_mutex = threading.Lock()  # serializes writers: prepare + append + apply
        self._rw = RWLock()  # readers vs. applying a committed batch
        self.dropped = False
        self.follower = follower
        self.curator = CuratorHost(self)
        self.graphs = GraphHost(self, graph_dir)
        self.applied_seq = 0  # the last oplog record applied in memory
        self.trimmed_seq = 0  # oplog records up to this one are deleted

    @property
    def name(self) -> str:
        return self.config.name

    # -- recovery -----------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild every in-memory structure from one sequential scan per column family."""
        cid = self.config.cid
        for key, value in self._store.scan(keys.CF_META, keys.tenant_prefix(cid)):
            _, number = keys.decode_tenant_key(key)
            self.tenants.register(orjson.loads(value)["name"], number)
        labels: list[int] = []
        vectors: list[np.ndarray] = []
        for key, value in self._store.scan(keys.CF_POINTS, keys.u32(cid)):
            _, label = keys.decode_point_key(key)
            record = decode_point(value)
            labels.append(label)
            vectors.append(record.vector)
            self._hold(label, record)
            if len(labels) == _LOAD_CHUNK:  # bounded temporaries: the heap keeps its peak
                self.arena.put(np.asarray(labels, dtype=np.int64), np.stack(vectors))
                labels, vectors = [], []
        if labels:
            self.arena.put(np.asarray(labels, dtype=np.int64), np.stack(vectors))
        self.arena.restore_free_list()
        for key, _ in self._store.scan(keys.CF_GRANTS, keys.u32(cid)):
            _, label, grantee = keys.decode_grant_key(key)
            self.tenants.grant(label, grantee)
        self.curator.load()
        oplog = []
        for key, value in self._store.scan(keys.CF_OPLOG, keys.u32(cid)):
            _, seq = keys.decode_oplog_key(key)
            oplog.append((seq, *keys.decode_oplog(value)))
        if oplog:
            self.applied_seq = oplog[-1][0]
            self.trimmed_seq = oplog[0][0] - 1
        self.graphs.load(oplog)

    def _hold(self, label: int, record: PointRecord) -> None:
        """A stored point in the point table, tenant index and attribute index (its vector
        goes to the arena by the caller, in bulk)."""
        self.points.set(label, record.owner, record.point_id, record.attributes_json)
        self.tenants.add_point(record.owner, record.point_id, label)
        if self.attributes.types:
            self.attributes.set(label, orjson.loads(record.attributes_json))

    # -- locks, for the Curator host ------------------------------------------------------

    @property
    def store(self) -> Store:
        return self._store

    def read_lock(self) -> AbstractContextManager[None]:
        return self._rw.read()

    def write_lock(self) -> AbstractContextManager[None]:
        return self._rw.write()

    def write_mutex(self) -> AbstractContextManager[None]:
        return self._writing()

    def close(self) -> None:
        """Wait for the writer in progress, then refuse new writes (shutdown); persist the
        graphs that changed since their last snapshot."""
        with self._write_mutex:
            self.dropped = True
        self.graphs.stop(persist=True)

    def drop(self) -> None:
        """Delete the collection's every key in one batch; later calls raise NotFound."""
        cid = self.config.cid
        with self._writing():
            self.dropped = True
            batch = Batch(change=collection_changed("drop", self.name))
            batch.delete(keys.CF_META, keys.collection_key(self.name))
            batch.delete(keys.CF_META, keys.tree_key(cid))
            lo, hi = keys.collection_range(cid)
            batch.delete_range(keys.CF_POINTS, lo, hi)
            batch.delete_range(keys.CF_GRANTS, lo, hi)
            batch.delete_range(keys.CF_META, keys.tenant_prefix(cid), keys.tenant_prefix(cid + 1))
            batch.delete_range(keys.CF_OPLOG, keys.oplog_key(cid, 0), keys.oplog_key(cid + 1, 0))
            batch.delete_range(keys.CF_META, *keys.quota_range(cid))
            self._store.write(batch)
        self.graphs.stop(persist=False)
        self.graphs.remove_files()

    # -- write plumbing -----------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_mutex:
            if self.dropped:
                raise NotFound(f"collection {self.name!r} not found")
            yield

    def _commit(
        self,
        batch: Batch,
        apply: Callable[[], None],
        vector_labels: list[int] | None = None,
        reader_labels: list[int] | None = None,
        *,
        attribute_labels: list[int] | None = None,
        new_tenants: dict[str, int] | None = None,
        removed_tenants: list[int] | None = None,
    ) -> int:
        """Append `batch` (plus its oplog record, when it changed vectors or readers, and its
        change record) then apply it to memory; caller holds the write mutex."""
        if batch.change is None and self._store.records_changes:
            labels = [*(vector_labels or ()), *(reader_labels or ()), *(attribute_labels or ())]
            batch.change = points_changed(self.name, labels, new_tenants, removed_tenants or ())
        seq = self.applied_seq
        if vector_labels or reader_labels:
            seq += 1
            record = keys.encode_oplog(vector_labels or [], reader_labels or [])
            batch.put(keys.CF_OPLOG, keys.oplog_key(self.config.cid, seq), record)
        try:
            ticket = self._store.append(batch)
        except DurabilityLost as exc:
            raise Unavailable(str(exc)) from exc
        with self._rw.write():
            apply()
            self.applied_seq = seq
        return ticket

    def _acknowledge(
        self, ticket: int, operation: str | None = None, points: int | None = None
    ) -> None:
        """The end of every write, outside the locks: wait until it is durable, count it,
        and let the Curator host start a (re)training if the collection now calls for one."""
        try:
            self._store.wait_durable(ticket)
        except DurabilityLost as exc:
            raise Unavailable(str(exc)) from exc
        if operation is not None:
            self.observer.write(self.name, operation, points)
        self.curator.maybe_train()
        self.graphs.poke()

    def _tenant_for_write(self, name: str, batch: Batch, new: dict[str, int]) -> int:
        """The tenant's number, creating it (record in `batch`, number in `new`) if unknown."""
        number = self.tenants.number_of.get(name) or new.get(name)
        if number is None:
            number = self.tenants.reserve_number()
            new[name] = number
            record = orjson.dumps({"name": name, "created_at": time.time()})
            batch.put(keys.CF_META, keys.tenant_key(self.config.cid, number), record)
        return number

    def _register(self, new: dict[str, int]) -> None:
        for name, number in new.items():
            self.tenants.register(name, number)

    # -- writes -------------------------------------------------------------------------

    def ensure_tenant(self, tenant: str) -> bool:
        """Create the tenant if missing; True if it was created."""
        validation.identifier(tenant, "tenant", "a tenant name")
        with self._writing():
            if tenant in self.tenants.number_of:
                return False
            batch, new = Batch(), {}
            self._tenant_for_write(tenant, batch, new)
            ticket = self._commit(batch, lambda: self._register(new), new_tenants=new)
        self._acknowledge(ticket)
        return True

    def upsert(self, tenant: str, inputs: list[PointInput]) -> UpsertResult:
        validation.identifier(tenant, "tenant", "a tenant name")
        if not inputs:
            raise Invalid("points", "at least one point is required")
        if len(inputs) > self.limits.max_batch_points:
            raise TooLarge(
                f"points: the batch has {len(inputs)} points; "
                f"the limit is {self.limits.max_batch_points}"
            )
        matrix, writes = self._validate_points(tenant, inputs)
        with self._writing():
            batch, new = Batch(), {}
            owner = self._tenant_for_write(tenant, batch, new)
            owner_ids = self.tenants.ids.get(owner, {})
            existing = [owner_ids.get(w.point_id) for w in writes]
            new_points = sum(label is None for label in existing)
            self.admission.check_new_points(tenant, len(owner_ids), self.arena.count, new_points)
            fresh = self.arena.allocate(new_points)
            fresh_iter = iter(fresh.tolist())
            labels = [label if label is not None else next(fresh_iter) for label in existing]
            grant_changes: list[tuple[int, set[int], set[int]]] = []
            for write, label, old, vector in zip(writes, labels, existing, matrix, strict=True):
                record = encode_point(owner, write.point_id, vector, write.attributes_json)
                batch.put(keys.CF_POINTS, keys.point_key(self.config.cid, label), record)
                if write.shared_with is None:
                    continue
                wanted = {self._tenant_for_write(g, batch, new) for g in write.shared_with}
                current = set(self.tenants.grantees(label)) if old is not None else set()
                added, removed = wanted - current, current - wanted
                for grantee in added:
                    batch.put(keys.CF_GRANTS, keys.grant_key(self.config.cid, label, grantee), b"")
                for grantee in removed:
                    batch.delete(keys.CF_GRANTS, keys.grant_key(self.config.cid, label, grantee))
                grant_changes.append((label, added, removed))

            def apply() -> None:
                self._register(new)
                before = {old: self._readers(old) for old in existing if old is not None}
                for label, readers in before.items():
                    self.curator.remove(label, readers)  # its vector moves
                self.arena.put(np.asarray(labels, dtype=np.int64), matrix)
                for write, label, old in zip(writes, labels, existing, strict=True):
                    self.points.set(label, owner, write.point_id, write.attributes_json)
                    self.attributes.set(label, write.attributes)
                    if old is None:
                        self.tenants.add_point(owner, write.point_id, label)
                for label, added, removed in grant_changes:
                    for grantee in added:
                        self.tenants.grant(label, grantee)
                    for grantee in removed:
                        self.tenants.revoke(label, grantee)
                after = [self._readers(label) for label in labels]
                self.curator.add(labels, after)
                self.graphs.vectors_changed(
                    labels,
                    [[*before.get(lb, ()), *now] for lb, now in zip(labels, after, strict=True)],
                )

            try:
                ticket = self._commit(batch, apply, labels, new_tenants=new)
            except BaseException:
                self.arena.release(fresh)
                raise
        self._acknowledge(ticket, "upsert", len(writes))
        created = len(fresh)
        return UpsertResult(created=created, updated=len(writes) - created)

    def _validate_points(
        self, tenant: str, inputs: list[PointInput]
    ) -> tuple[np.ndarray, list[PointWrite]]:
        schema, max_bytes = self.config.schema, self.limits.max_attributes_bytes
        writes: list[PointWrite] = []
        seen: set[str] = set()
        for i, point in enumerate(inputs):
            point_id = validation.identifier(point.point_id, f"points[{i}].id", "a point id")
            if point_id in seen:
                raise Invalid(f"points[{i}].id", f"duplicate id {point_id!r} in the batch")
            seen.add(point_id)
            raw_attributes = {} if point.attributes is None else point.attributes
            path = f"points[{i}].attributes"
            attributes, encoded = validation.attributes(raw_attributes, schema, path, max_bytes)
            shared_with = None
            if point.shared_with is not None:
                shared_with = []
                for j, grantee in enumerate(point.shared_with):
                    path = f"points[{i}].shared_with[{j}]"
                    validation.identifier(grantee, path, "a tenant name")
                    if grantee == tenant:
                        raise Invalid(path, "a point is always readable by its owner")
                    shared_with.append(grantee)
            writes.append(PointWrite(point_id, attributes, encoded, shared_with))
        rows = [point.vector for point in inputs]
        matrix = validation.vectors(
            rows,
            self.config.dim,
            self.config.metric,
            lambda i: f"points[{i}].{inputs[i].vector_field}",
        )
        return matrix, writes

    def patch_attributes(self, tenant: str, point_id: str, patch: Any) -> PointView:
        """Merge `patch` into the point's attributes (RFC 7386: null removes a key)."""
        if not isinstance(patch, dict):
            raise Invalid("attributes", "attributes must be a JSON object")
        with self._writing():
            owner, label = self._owned_label(tenant, point_id)
            current = orjson.loads(self.points.attributes_json(label))
            merged, encoded = validation.attributes(
                validation.merge_patch(current, patch),
                self.config.schema,
                "attributes",
                self.limits.max_attributes_bytes,
            )
            vector = self.arena.vector(label)
            batch = Batch()
            record = encode_point(owner, point_id, vector, encoded)
            batch.put(keys.CF_POINTS, keys.point_key(self.config.cid, label), record)

            def apply() -> None:
                self.points.set_attributes(label, encoded)
                self.attributes.set(label, merged)

            ticket = self._commit(batch, apply, attribute_labels=[label])
        self._acknowledge(ticket, "patch")
        return PointView(point_id, tenant, merged, shared_with=self._grantee_names(label))

    def delete_points(self, tenant: str, point_ids: list[str]) -> DeleteResult:
        for i, point_id in enumerate(point_ids):
            validation.identifier(point_id, f"ids[{i}]", "a point id")
        if len(point_ids) > self.limits.max_batch_points:
            raise TooLarge(
                f"ids: {len(point_ids)} ids; the limit is {self.limits.max_batch_points}"
            )
        with self._writing():
            owner = self._tenant_number(tenant)
            owner_ids = self.tenants.ids[owner]
            found = {pid: owner_ids[pid] for pid in dict.fromkeys(point_ids) if pid in owner_ids}
            missing = [pid for pid in dict.fromkeys(point_ids) if pid not in owner_ids]
            batch = Batch()
            for label in found.values():
                self._delete_point_keys(batch, label)

            def apply() -> None:
                for pid, label in found.items():
                    self._forget_point(owner, pid, label)

            ticket = self._commit(batch, apply, list(found.values()))
        self._acknowledge(ticket, "delete")
        return DeleteResult(deleted=len(found), not_found=missing)

    def delete_matching(self, tenant: str, raw_filter: Any) -> int:
        """Delete the tenant's own points that match the filter; returns how many."""
        node = search.compile_query_filter(raw_filter, self)
        with self._writing():
            owner = self._tenant_number(tenant)
            self._check_filterable(node)
            matching = evaluate(node, self.attributes, self.tenants.owned[owner])
            doomed = bitmap_labels(matching).tolist()
            if len(doomed) > self.limits.max_delete_points:
                raise TooLarge(
                    f"filter: it matches {len(doomed)} points; one request deletes at most "
                    f"{self.limits.max_delete_points}; narrow the filter"
                )
            batch = Batch()
            for label in doomed:
                self._delete_point_keys(batch, label)
            pairs = [(self.points.point_id(label), label) for label in doomed]

            def apply() -> None:
                for pid, label in pairs:
                    self._forget_point(owner, pid, label)

            ticket = self._commit(batch, apply, doomed)
        self._acknowledge(ticket, "delete")
        return len(doomed)

    def _delete_point_keys(self, batch: Batch, label: int) -> None:
        cid = self.config.cid
        batch.delete(keys.CF_POINTS, keys.point_key(cid, label))
        for grantee in self.tenants.grantees(label):
            batch.delete(keys.CF_GRANTS, keys.grant_key(cid, label, grantee))

    def _readers(self, label: int) -> list[int]:
        return [self.points.owner(label), *self.tenants.grantees(label)]

    def _forget_point(self, owner: int, point_id: str, label: int) -> None:
        readers = self._readers(label)
        self.curator.remove(label, readers)
        self.graphs.vectors_changed([label], [readers])
        self.attributes.remove(label)
        self.tenants.remove_point(owner, point_id, label)
        self.points.clear(label)
        self.arena.remove(np.asarray([label]), recycle=not self.follower)

    def grant(self, tenant: str, point_id: str, grantee: str) -> PointView:
        validation.identifier(grantee, "tenant", "a tenant name")
        if grantee == tenant:
            raise Invalid("tenant", "a point is always readable by its owner")
        with self._writing():
            _, label = self._owned_label(tenant, point_id)
            batch, new = Batch(), {}
            number = self._tenant_for_write(grantee, batch, new)
            if number not in self.tenants.grantees(label):
                key = keys.grant_key(self.config.cid, label, number)
                batch.put(keys.CF_GRANTS, key, b"")

                def apply() -> None:
                    self._register(new)
                    self.tenants.grant(label, number)
                    self.curator.grant(label, number)
                    self.graphs.readers_changed(label, number)

                ticket = self._commit(batch, apply, reader_labels=[label], new_tenants=new)
            else:
                ticket = 0
        self._acknowledge(ticket, "grant")
        return self._view(label, with_vector=False, for_owner=True)

    def revoke(self, tenant: str, point_id: str, grantee: str) -> PointView:
        with self._writing():
            _, label = self._owned_label(tenant, point_id)
            number = self.tenants.number_of.get(grantee)
            if number is None or number not in self.tenants.grantees(label):
                raise NotFound(f"point {point_id!r} is not shared with tenant {grantee!r}")
            batch = Batch()
            batch.delete(keys.CF_GRANTS, keys.grant_key(self.config.cid, label, number))

            def apply() -> None:
                self.tenants.revoke(label, number)
                self.curator.revoke(label, number)
                self.graphs.readers_changed(label, number)

            ticket = self._commit(batch, apply, reader_labels=[label])
        self._acknowledge(ticket, "revoke")
        return self._view(label, with_vector=False, for_owner=True)

    def delete_tenant(self, tenant: str) -> int:
        """Delete the tenant, every point it owns and every grant to it; returns points deleted."""
        cid = self.config.cid
        with self._writing():
            number = self._tenant_number(tenant)
            owned = {pid: label for pid, label in self.tenants.ids[number].items()}
            granted = list(self.tenants.granted_to(number))
            batch = Batch()
            for label in owned.values():
                self._delete_point_keys(batch, label)
            for label in granted:
                batch.delete(keys.CF_GRANTS, keys.grant_key(cid, label, number))
            batch.delete(keys.CF_META, keys.tenant_key(cid, number))

            def apply() -> None:
                for pid, label in owned.items():
                    self._forget_point(number, pid, label)
                self._drop_tenant(number)

            ticket = self._commit(
                batch, apply, list(owned.values()), list(granted), removed_tenants=[number]
            )
        self._acknowledge(ticket, "delete_tenant")
        return len(owned)

    def _drop_tenant(self, number: int) -> None:
        """A tenant that owns nothing any more: its grants, graph and number go."""
        for label in list(self.tenants.granted_to(number)):
            self.tenants.revoke(label, number)
            self.curator.revoke(label, number)
        self.graphs.tenant_deleted(number)
        self.tenants.unregister(number)

    # -- reads --------------------------------------------------------------------------

    def _tenant_number(self, tenant: str) -> int:
        number = self.tenants.number_of.get(tenant)
        if number is None:
            raise NotFound(f"tenant {tenant!r} not found in collection {self.name!r}")
        return number

    def _owned_label(self, tenant: str, point_id: str) -> tuple[int, int]:
        owner = self._tenant_number(tenant)
        label = self.tenants.ids[owner].get(point_id)
        if label is None:
            raise NotFound(f"point {point_id!r} not found for tenant {tenant!r}")
        return owner, label

    def _grantee_names(self, label: int) -> list[str]:
        return sorted(self.tenants.name_of[g] for g in self.tenants.grantees(label))

    def _view(self, label: int, with_vector: bool, for_owner: bool) -> PointView:
        return PointView(
            point_id=self.points.point_id(label),
            owner=self.tenants.name_of[self.points.owner(label)],
            attributes=orjson.loads(self.points.attributes_json(label)),
            vector=self.arena.vector(label) if with_vector else None,
            shared_with=self._grantee_names(label) if for_owner else None,
        )

    def get_point(
        self, tenant: str, point_id: str, owner: str | None = None, with_vector: bool = False
    ) -> PointView:
        """The tenant's own point, or (with `owner`) another tenant's point shared with it."""
        with self._rw.read():
            reader = self._tenant_number(tenant)
            owner_name = tenant if owner is None else owner
            owner_number = self.tenants.number_of.get(owner_name)
            label = None if owner_number is None else self.tenants.ids[owner_number].get(point_id)
            if label is None or label not in self.tenants.readable[reader]:
                raise NotFound(f"point {point_id!r} not found for tenant {tenant!r}")
            return self._view(label, with_vector, for_owner=owner_number == reader)

    def scroll(
        self,
        tenant: str,
        cursor: str | None,
        limit: int,
        with_vector: bool,
        raw_filter: Any = None,
    ) -> tuple[list[PointView], str | None]:
        """Points the tenant can read (matching the filter), in label order; `cursor` is
        where the previous page stopped."""
        start = _parse_cursor(cursor)
        node = search.compile_query_filter(raw_filter, self)
        with self._rw.read():
            reader = self._tenant_number(tenant)
            self._check_filterable(node)
            readable = self.tenants.readable[reader]
            if start:
                readable = readable - BitMap(range(start))  # cheap: a range is run-encoded
            matching = evaluate(node, self.attributes, readable)
            page = list(itertools.islice(matching, limit + 1))
            more = len(page) > limit
            page = page[:limit]
            views = [
                self._view(label, with_vector, self.points.owner(label) == reader) for label in page
            ]
        next_cursor = str(page[-1] + 1) if more and page else None
        return views, next_cursor

    def count(self, tenant: str, raw_filter: Any = None) -> int:
        """Exact: the size of a bitmap, never an estimate."""
        node = search.compile_query_filter(raw_filter, self)
        with self._rw.read():
            readable = self.tenants.readable[self._tenant_number(tenant)]
            self._check_filterable(node)
            return len(evaluate(node, self.attributes, readable))

    def query(
        self,
        tenant: str,
        queries: list[Any],
        k: int,
        include_attributes: bool = True,
        include_vector: bool = False,
        vector_paths: list[str] | None = None,
        exact: bool = False,
        ef: int | None = None,
        raw_filter: Any = None,
        strategy: str | None = None,
        filter_path: str = "filter",
        explain: bool = False,
    ) -> list[QueryResult]:
        """Top-k among the points `tenant` can read that match the filter, one result per
        query vector; the planner picks the index (`strategy` forces one, `exact` the scan).
        `vector_paths` names each query vector in errors (default: `vector`)."""
        started = time.perf_counter()
        matrix = self._query_matrix(queries, k, vector_paths)
        node = search.compile_query_filter(raw_filter, self, filter_path)
        filtering = time.perf_counter()
        with self._rw.read():
            number = self._tenant_number(tenant)
            self._check_filterable(node)
            readable = self.tenants.readable[number]
            labels = self.tenants.readable_array(number) if node == MATCH_ALL else None
            scope = search.Scope(readable, len(readable), number, labels)
            force = "exact" if exact else strategy
            timing = (started, filtering, include_attributes, include_vector, explain)
            return search.run_queries(self, matrix, k, scope, node, ef, force, *timing)

    def admin_query(
        self,
        queries: list[Any],
        k: int,
        tenants: list[str] | None = None,
        include_attributes: bool = True,
        include_vector: bool = False,
        vector_paths: list[str] | None = None,
        exact: bool = False,
        ef: int | None = None,
        raw_filter: Any = None,
        strategy: str | None = None,
        explain: bool = False,
    ) -> list[QueryResult]:
        """Across every point, or the points readable by any of `tenants`."""
        started = time.perf_counter()
        matrix = self._query_matrix(queries, k, vector_paths)
        node = search.compile_query_filter(raw_filter, self)
        filtering = time.perf_counter()
        with self._rw.read():
            self._check_filterable(node)
            if tenants is None:
                everything = self.tenants.all_labels
                scope = search.Scope(everything, len(everything), None)
            else:
                numbers = [self._tenant_number(t) for t in tenants]
                union = BitMap.union(BitMap(), *(self.tenants.readable[n] for n in numbers))
                scope = search.Scope(union, len(union), None)
            force = "exact" if exact else strategy
            timing = (started, filtering, include_attributes, include_vector, explain)
            return search.run_queries(self, matrix, k, scope, node, ef, force, *timing)

    def _query_matrix(self, queries: list[Any], k: int, paths: list[str] | None) -> np.ndarray:
        validation.top_k(k)
        return validation.vectors(
            queries,
            self.config.dim,
            self.config.metric,
            (lambda i: paths[i]) if paths else (lambda i: "vector"),
        )

    def _check_filterable(self, node: Any) -> None:
        if self.indexing and node != MATCH_ALL:
            fields = search.filter_fields(node) & self.indexing
            if fields:
                raise NotReady(
                    f"filter: field {sorted(fields)[0]!r} is still being indexed; retry shortly"
                )

    # -- schema ---------------------------------------------------------------------------

    def extend_schema(self, fields: dict[str, FieldType]) -> CollectionConfig:
        """Declare more typed fields. A declared field keeps its type (409 otherwise). The
        points already stored are indexed for the new fields in the background; until that
        is done a filter on them answers 503 (`indexing` in the collection info)."""
        with self._writing():
            for name, field_type in fields.items():
                current = self.config.schema.get(name)
                if current is not None and current != field_type:
                    raise Conflict(
                        f"schema.{name}: declared as {current}; a field's type cannot change"
                    )
            added = {n: t for n, t in fields.items() if n not in self.config.schema}
            if not added:
                return self.config
            config = dataclasses.replace(self.config, schema={**self.config.schema, **added})
            batch = Batch(change=collection_changed("schema", self.name))
            batch.put(keys.CF_META, keys.collection_key(self.name), config.to_json())

            ticket = self._commit(batch, lambda: self._declare(config, added))
            labels = bitmap_labels(self.tenants.all_labels)
        self._acknowledge(ticket)
        self._index_in_background(added, labels)
        return config

    def _declare(self, config: CollectionConfig, added: dict[str, FieldType]) -> None:
        """Take `config` with its `added` fields, which stay `indexing` until
        `_index_in_background` has gone over the points stored before; caller holds the write
        lock."""
        self.config = config
        for name, field_type in added.items():
            self.attributes.add_field(name, field_type)
        self.indexing |= set(added)

    def _index_in_background(self, added: dict[str, FieldType], labels: np.ndarray) -> None:
        worker = threading.Thread(
            target=index_new_fields, args=(self, added, labels), name="schema-index", daemon=True
        )
        worker.start()

    def tenant_info(self, tenant: str) -> TenantInfo:
        with self._rw.read():
            number = self._tenant_number(tenant)
            owned = len(self.tenants.owned[number])
            return TenantInfo(tenant, owned, len(self.tenants.readable[number]) - owned)

    def list_tenants(self, cursor: str | None, limit: int) -> tuple[list[TenantInfo], str | None]:
        with self._rw.read():
            names = self.tenants.names_after(cursor, limit + 1)
            page = names[:limit]
            infos = []
            for name in page:
                number = self.tenants.number_of[name]
                owned = len(self.tenants.owned[number])
                infos.append(TenantInfo(name, owned, len(self.tenants.readable[number]) - owned))
        return infos, (page[-1] if len(names) > limit else None)

    def info(self) -> CollectionInfo:
        with self._rw.read():
            curator = self.curator.curator
            state: dict[str, float | int | bool] = {"trained": curator is not None}
            if curator is not None:
                state |= {
                    "pairs": curator.pairs,
                    "memory_bytes": curator.memory_bytes(),
                    "drift": round(curator.drift(), 4),
                }
            return CollectionInfo(
                self.config,
                self.arena.count,
                len(self.tenants.number_of),
                state,
                self.graphs.state(),
                sorted(self.indexing),
            )

    def check_invariants(self) -> None:
        with self._rw.read():
            owners = self.points.owner_map()
            self.tenants.check_invariants(owners)
            assert self.arena.count == len(owners), "arena/point table differ"
            curator = self.curator.curator
            if curator is not None:
                pairs = {
                    (label, number)
                    for number, readable in self.tenants.readable.items()
                    for label in readable
                }
                curator.check_invariants(pairs)


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    # Labels are uint32 in the tenant bitmaps; anything else was not issued by scroll.
    if not cursor.isdigit() or len(cursor) > 10 or int(cursor) > 2**32 - 1:
        raise Invalid("cursor", "not a cursor returned by this endpoint")
    return int(cursor)
