"""Read workers: a process serving queries from its own copy of the indexes, kept in step with
the writer through the change feed (`storage.store`, `server.changes`).

The writer publishes the sequence number of every change record it appends in a small shared
file (`SharedSequences`), before the write is acknowledged. A worker compares it
with the last record its memory holds before each request it serves (a memory read) and,
only when behind, catches its store up with the writer's (RocksDB's secondary instance,
0.5 ms) and applies the new records in order (`Database.follow`). So a write acknowledged
to any client is seen by every later query on any process: read-after-write holds across
processes. A background thread does the same every `_POLL_S`, so records are applied ahead
of the queries that would otherwise wait for them.

Each worker also publishes the last record it applied; the writer keeps the feed's records
until every worker has applied them (at most `storage.store.CHANGES_MAX`). A worker that
finds records missing, fails to apply one, or cannot find a published one in the store has
lost its place (`FollowerLost`): it forwards every request to the writer, stops, and the
supervisor starts a new one, which recovers from the store as any start does.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from server.changes import Change

if TYPE_CHECKING:
    from server.database import Database

log = logging.getLogger("shoal.follower")

_SEQ = struct.Struct("<Q")
_POLL_S = 0.05
_CATCH_UP_TRIES = 3  # a published record not in the store after this many catch-ups: lost


class FollowerLost(Exception):
    """The change feed no longer holds the records this worker needs next."""


class SharedSequences:
    """Change numbers the processes of a server share, in one small mapped file: slot 0 is
    the newest record the writer appended (`publish`); slot 1 + i the last record worker i
    has applied (`set_position`), which the writer reads to trim the feed (`trim_floor`).

    An aligned 8-byte store is atomic on the platforms Shoal runs on, so a reader sees the
    old number or the new one, never a torn mix."""

    def __init__(self, path: Path, workers: int, create: bool = False):
        self.workers = workers
        size = _SEQ.size * (1 + workers)
        if create:
            path.write_bytes(bytes(size))
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def publish(self, seq: int) -> None:
        _SEQ.pack_into(self._map, 0, seq)

    @property
    def value(self) -> int:
        return _SEQ.unpack_from(self._map, 0)[0]

    def set_position(self, slot: int, seq: int) -> None:
        _SEQ.pack_into(self._map, _SEQ.size * (1 + slot), seq)

    def position(self, slot: int) -> int:
        return _SEQ.unpack_from(self._map, _SEQ.size * (1 + slot))[0]

    def trim_floor(self) -> int:
        """The newest record every worker has applied: older ones are needed by none."""
        return min((self.position(slot) for slot in range(self.workers)), default=self.value)

    def close(self) -> None:
        self._map.close()


class Follower:
    """Keeps a follower Database (`Database(follower_dir=...)`) in step with the writer."""

    def __init__(self, database: Database, published: SharedSequences, slot: int):
        self.database = database
        self.published = published
        self.slot = slot  # this worker's position in `published`
        self._lock = threading.Lock()  # one catch-up at a time, records applied in order
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: FollowerLost | None = None

    @property
    def behind(self) -> bool:
        return self.published.value > self.database.change_seq

    def catch_up(self) -> None:
        """Apply every record the writer published so far; at once when none is new.

        Raises `FollowerLost` (and keeps raising it) when the memory can no longer be trusted
        to follow the writer: records missing from the feed, a record that failed to apply,
        or records published that the store never showed."""
        if not self.behind:
            return
        with self._lock:
            if self.lost is not None:
                raise self.lost
            target = self.published.value
            try:
                for _ in range(_CATCH_UP_TRIES):
                    self._apply_new()
                    if self.database.change_seq >= target:
                        return
            except FollowerLost as exc:
                self.lost = exc
                raise
            except Exception as exc:
                log.exception("applying change %d failed", self.database.change_seq + 1)
                self.lost = FollowerLost(
                    f"change {self.database.change_seq + 1} could not be applied: {exc!r}"
                )
                raise self.lost from exc
            self.lost = FollowerLost(
                f"the store shows changes up to {self.database.change_seq}, "
                f"the writer published {target}"
            )
            raise self.lost

    def _apply_new(self) -> None:
        store = self.database.store
        store.catch_up()
        for seq, raw in store.changes_after(self.database.change_seq):
            if seq != self.database.change_seq + 1:
                raise FollowerLost(
                    f"change {self.database.change_seq + 1} is no longer in the feed "
                    f"(next kept: {seq})"
                )
            self.database.follow(Change.decode(raw))
            self.database.change_seq = seq
        self.published.set_position(self.slot, self.database.change_seq)

    def opened(self) -> None:
        """The Database has recovered: its position is the store's as it opened."""
        self.published.set_position(self.slot, self.database.change_seq)

    def start(self, on_lost: Callable[[FollowerLost], None]) -> None:
        """Catch up in the background too, calling `on_lost` if the place is lost."""

        def run() -> None:
            while not self._stopped.wait(_POLL_S):
                try:
                    self.catch_up()
                except FollowerLost as exc:
                    on_lost(exc)
                    return

        self._thread = threading.Thread(target=run, name="follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
