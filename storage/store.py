"""The RocksDB store: column families, atomic batches, group-committed durability, scans.

A write is one `Batch` (one RocksDB `WriteBatch`): it is applied entirely or not at all, by
RocksDB's WAL replay after a crash. `append` makes it visible in RocksDB; `wait_durable` returns
once it is synced to disk (with `durability="fsync"`) or at once (`"os"`: the OS page cache
decides, which survives `kill -9` but not power loss).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from rocksdict import Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from storage.commit import GroupCommit
from storage.keys import COLUMN_FAMILIES, prefix_upper_bound

Durability = Literal["fsync", "os"]


@dataclass
class Batch:
    """Operations applied atomically by one `Store.append`."""

    puts: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    deletes: list[tuple[str, bytes]] = field(default_factory=list)
    range_deletes: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self.puts.append((cf, key, value))

    def delete(self, cf: str, key: bytes) -> None:
        self.deletes.append((cf, key))

    def delete_range(self, cf: str, lo: bytes, hi: bytes) -> None:
        self.range_deletes.append((cf, lo, hi))

    def __len__(self) -> int:
        return len(self.puts) + len(self.deletes) + len(self.range_deletes)


class Store:
    def __init__(
        self,
        path: str,
        durability: Durability = "fsync",
        on_sync: Callable[[float, int], None] | None = None,
    ):
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_max_background_jobs(2)
        cf_options = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
        self.path = path
        self.durability: Durability = durability
        self._db = Rdict(path, options, column_families=cf_options)
        self._handles = {name: self._db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        self._cfs = {name: self._db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._unsynced = WriteOptions()
        self._unsynced.sync = False
        self._write_lock = threading.Lock()  # ticket order == RocksDB append order
        self._commit = GroupCommit(lambda: self._db.flush_wal(True), on_sync)
        self._closed = False

    # -- writes -------------------------------------------------------------------------

    def append(self, batch: Batch) -> int:
        """Apply `batch` atomically (not yet synced); returns the ticket for `wait_durable`."""
        write_batch = WriteBatch(raw_mode=True)
        for cf, key, value in batch.puts:
            write_batch.put(key, value, self._handles[cf])
        for cf, key in batch.deletes:
            write_batch.delete(key, self._handles[cf])
        for cf, lo, hi in batch.range_deletes:
            write_batch.delete_range(lo, hi, self._handles[cf])
        with self._write_lock:
            self._commit.raise_if_failed()
            self._db.write(write_batch, self._unsynced)
            return self._commit.next_ticket()

    def wait_durable(self, ticket: int) -> None:
        if self.durability == "fsync":
            self._commit.wait_durable(ticket)
        else:
            self._commit.raise_if_failed()

    def sync(self) -> None:
        """Return once every batch appended so far is durable (at once with `os`)."""
        with self._write_lock:
            ticket = self._commit.next_ticket()  # covers everything appended before it
        self.wait_durable(ticket)

    def write(self, batch: Batch) -> None:
        """append + wait_durable, for writes with no in-memory state to apply in between."""
        self.wait_durable(self.append(batch))

    # -- reads --------------------------------------------------------------------------

    def get(self, cf: str, key: bytes) -> bytes | None:
        return self._cfs[cf].get(key)

    def scan(self, cf: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix`, in key order."""
        read_options = ReadOptions()
        upper = prefix_upper_bound(prefix) if prefix else None
        if upper is not None:
            read_options.set_iterate_upper_bound(upper)
        yield from self._cfs[cf].items(from_key=prefix, read_opt=read_options)

    # -- figures and lifecycle ----------------------------------------------------------

    def property_int(self, name: str) -> int:
        return sum(int(cf.property_int_value(name) or 0) for cf in self._cfs.values())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            try:
                self._db.flush_wal(True)
                self._db.flush()
            finally:
                # Column-family objects keep the DB alive (and its LOCK file held) until they
                # are dropped, so a reopen in the same process would fail.
                self._handles.clear()
                self._cfs.clear()
                self._db.close()
