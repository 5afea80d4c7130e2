"""The RocksDB store: column families, atomic batches, group-committed durability, scans.

A write is one `Batch` (one RocksDB `WriteBatch`): it is applied entirely or not at all, by
RocksDB's WAL replay after a crash. `append` makes it visible in RocksDB; `wait_durable` returns
once it is synced to disk (with `durability="fsync"`) or at once (`"os"`: the OS page cache
decides, which survives `kill -9` but not power loss).

The change feed: a batch that carries a `change` (bytes the server composes, `server.changes`)
gets it recorded in the `changes` column family under the next database-wide sequence number,
in the same WriteBatch, so the feed's order is RocksDB's append order. Read workers open the
store as a *follower* (RocksDB's secondary instance: they read the writer's files and WAL, and
write nothing), `catch_up` to the writer's latest appends, and replay the feed after their own
position. The feed is written only by a store opened with `record_changes` (a server with
read workers); its records are trimmed up to `trim_floor()` (the oldest position a follower
still needs), never keeping more than `CHANGES_MAX`: a follower further behind has lost its
place and recovers from scratch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from rocksdict import AccessType, Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from storage.commit import GroupCommit
from storage.keys import (
    CF_CHANGES,
    COLUMN_FAMILIES,
    change_key,
    decode_change_key,
    prefix_upper_bound,
)

Durability = Literal["fsync", "os"]
CHANGES_MAX = 1_000_000  # feed records kept for a follower that lags, at most
_TRIM_CHANGES_EVERY = 4096


class ReadOnlyStore(Exception):
    """A write reached a follower store: read workers forward every write to the writer."""


@dataclass
class Batch:
    """Operations applied atomically by one `Store.append`."""

    puts: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    deletes: list[tuple[str, bytes]] = field(default_factory=list)
    range_deletes: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    change: bytes | None = None  # recorded in the change feed, for read workers

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
        *,
        follower_dir: str | None = None,
        on_change: Callable[[int], None] | None = None,
        trim_floor: Callable[[], int] | None = None,
    ):
        """`follower_dir`: open as a follower of the writer at `path` (RocksDB keeps the
        follower's own info log there). `on_change(seq)`: record the change feed, and call it
        after each append that recorded a change, with the write lock held (so calls come in
        feed order); `trim_floor()`: the newest record every follower has applied."""
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_max_background_jobs(2)
        # The feed's column family exists only while a writer has read workers: a store
        # without it still opens in releases before them (RocksDB insists on every family).
        present = CF_CHANGES in _column_families(path)
        names = list(COLUMN_FAMILIES)
        if present or on_change is not None:
            names.append(CF_CHANGES)
        cf_options = {name: Options(raw_mode=True) for name in names}
        self.path = path
        self.durability: Durability = durability
        self.follower = follower_dir is not None
        if follower_dir is not None:
            # Files the writer deletes after a compaction stay readable through descriptors
            # already open; with a bounded table cache a follower could hit a deleted file.
            options.set_max_open_files(-1)
            # Every catch-up logs a line (rocksdict sets no log level): bound the log files.
            options.set_max_log_file_size(1 << 20)
            options.set_keep_log_file_num(2)
            access = AccessType.secondary(follower_dir)
            self._db = Rdict(path, options, column_families=cf_options, access_type=access)
        else:
            self._db = Rdict(path, options, column_families=cf_options)
        if present and on_change is None and follower_dir is None:
            self._db.drop_column_family(CF_CHANGES)  # a start without workers: nobody reads it
            names.remove(CF_CHANGES)
        self._handles = {name: self._db.get_column_family_handle(name) for name in names}
        self._cfs = {name: self._db.get_column_family(name) for name in names}
        self._unsynced = WriteOptions()
        self._unsynced.sync = False
        self._write_lock = threading.Lock()  # ticket order == RocksDB append order
        self._commit = GroupCommit(lambda: self._db.flush_wal(True), on_sync)
        self._closed = False
        self.change_seq = self.last_change()
        self._on_change = on_change
        self._trim_floor = trim_floor

    # -- writes -------------------------------------------------------------------------

    def append(self, batch: Batch) -> int:
        """Apply `batch` atomically (not yet synced); returns the ticket for `wait_durable`."""
        if self.follower:
            raise ReadOnlyStore("a read worker's store takes no writes")
        write_batch = WriteBatch(raw_mode=True)
        for cf, key, value in batch.puts:
            write_batch.put(key, value, self._handles[cf])
        for cf, key in batch.deletes:
            write_batch.delete(key, self._handles[cf])
        for cf, lo, hi in batch.range_deletes:
            write_batch.delete_range(lo, hi, self._handles[cf])
        changes = self._handles.get(CF_CHANGES)
        with self._write_lock:
            self._commit.raise_if_failed()
            seq = self.change_seq + 1
            recorded = batch.change is not None and self.records_changes
            if recorded:
                write_batch.put(change_key(seq), batch.change, changes)
                if seq % _TRIM_CHANGES_EVERY == 0:
                    floor = self._trim_floor() if self._trim_floor is not None else seq
                    # Records after `floor` are needed; the newest is kept (it carries the
                    # numbering across restarts).
                    keep_from = min(max(floor + 1, seq - CHANGES_MAX), seq)
                    write_batch.delete_range(change_key(0), change_key(keep_from), changes)
            self._db.write(write_batch, self._unsynced)
            if recorded:
                self.change_seq = seq
                self._on_change(seq)  # type: ignore[misc]
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

    def scan(
        self, cf: str, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix`, in key order, from `start`
        (a key with that prefix) if given."""
        read_options = ReadOptions()
        upper = prefix_upper_bound(prefix) if prefix else None
        if upper is not None:
            read_options.set_iterate_upper_bound(upper)
        yield from self._cfs[cf].items(from_key=start or prefix, read_opt=read_options)

    # -- the change feed ----------------------------------------------------------------

    @property
    def records_changes(self) -> bool:
        return self._on_change is not None

    def last_change(self) -> int:
        """The newest change record's sequence number (0: none)."""
        changes = self._cfs.get(CF_CHANGES)
        for key in changes.keys(backwards=True) if changes is not None else ():
            return decode_change_key(key)
        return 0

    def changes_after(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """Every (seq, change) recorded after `seq`, in order."""
        for key, value in self.scan(CF_CHANGES, start=change_key(seq + 1)):
            yield decode_change_key(key), value

    def catch_up(self) -> None:
        """A follower: see everything the writer has appended so far (0.5 ms with nothing new)."""
        self._db.try_catch_up_with_primary()

    # -- figures and lifecycle ----------------------------------------------------------

    def property_int(self, name: str) -> int:
        return sum(int(cf.property_int_value(name) or 0) for cf in self._cfs.values())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            try:
                if not self.follower:
                    self._db.flush_wal(True)
                    self._db.flush()
            finally:
                # Column-family objects keep the DB alive (and its LOCK file held) until they
                # are dropped, so a reopen in the same process would fail.
                self._handles.clear()
                self._cfs.clear()
                self._db.close()


def _column_families(path: str) -> list[str]:
    try:
        return Rdict.list_cf(path, Options(raw_mode=True))
    except Exception:  # no store there yet (rocksdict raises a plain Exception)
        return []
