"""Read workers: a process serving queries from its own copy of the indexes, kept in step with
the writer through the change feed (`storage.store`, `server.changes`).

The writer publishes the sequence number of every change record it appends in a shared
8-byte file (`PublishedSequence`), before the write is acknowledged. A worker compares it
with the last record its memory holds before each request it serves (a memory read) and,
only when behind, catches its store up with the writer's (RocksDB's secondary instance,
0.5 ms) and applies the new records in order (`Database.follow`). So a write acknowledged
to any client is seen by every later query on any process: read-after-write holds across
processes. A background thread does the same every `_POLL_S`, so records are applied ahead
of the queries that would otherwise wait for them.

A worker that finds records missing (it fell further behind than the feed keeps) has lost
its place: `FollowerLost` ends the process, and the supervisor starts a new one, which
recovers from the store as any start does.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from server.changes import Change

if TYPE_CHECKING:
    from server.database import Database

log = logging.getLogger("shoal.follower")

_SEQ = struct.Struct("<Q")
_POLL_S = 0.05


class FollowerLost(Exception):
    """The change feed no longer holds the records this worker needs next."""


class PublishedSequence:
    """The writer's newest change record number, shared by mapping one small file.

    An aligned 8-byte store is atomic on the platforms Shoal runs on, so a reader sees the
    old number or the new one, never a torn mix."""

    def __init__(self, path: Path, create: bool = False):
        self.path = path
        if create:
            path.write_bytes(bytes(_SEQ.size))
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, _SEQ.size)
        finally:
            os.close(fd)

    def publish(self, seq: int) -> None:
        _SEQ.pack_into(self._map, 0, seq)

    @property
    def value(self) -> int:
        return _SEQ.unpack_from(self._map, 0)[0]

    def close(self) -> None:
        self._map.close()


class Follower:
    """Keeps a follower Database (`Database(follower_dir=...)`) in step with the writer."""

    def __init__(self, database: Database, published: PublishedSequence):
        self.database = database
        self.published = published
        self._lock = threading.Lock()  # one catch-up at a time, records applied in order
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: FollowerLost | None = None

    @property
    def behind(self) -> bool:
        return self.published.value > self.database.change_seq

    def catch_up(self) -> None:
        """Apply every record the writer published so far; at once when none is new."""
        if self.published.value <= self.database.change_seq:
            return
        with self._lock:
            target = self.published.value
            if target <= self.database.change_seq:
                return  # another caller applied them meanwhile
            store = self.database.store
            store.catch_up()
            for seq, raw in store.changes_after(self.database.change_seq):
                if seq != self.database.change_seq + 1:
                    self.lost = FollowerLost(
                        f"change {self.database.change_seq + 1} is no longer in the feed "
                        f"(next kept: {seq})"
                    )
                    raise self.lost
                self.database.follow(Change.decode(raw))
                self.database.change_seq = seq

    def start(self, on_lost: Callable[[FollowerLost], None]) -> None:
        """Catch up in the background too, calling `on_lost` if the place is lost."""

        def run() -> None:
            while not self._stopped.wait(_POLL_S):
                try:
                    self.catch_up()
                except FollowerLost as exc:
                    on_lost(exc)
                    return
                except Exception:
                    log.exception("applying the writer's changes failed; retrying")
                    time.sleep(1.0)

        self._thread = threading.Thread(target=run, name="follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
