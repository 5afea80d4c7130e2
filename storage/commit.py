"""Group commit: one WAL sync covers every write appended before it started.

rocksdict holds the GIL for the whole of a synced `write`, so N concurrent synced writers cost
N syncs run back to back. Instead each write is appended unsynced (WAL buffer + memtable, tens of
microseconds), and a writer that needs durability calls `wait_durable(ticket)`: the first such
writer becomes the leader and runs one `flush_wal(sync=True)`, which releases the GIL and covers
all tickets appended so far; writers that arrive while it runs wait and are covered by the next.

    writer A: append -> t1 ---- wait_durable(t1): leader, sync covers t1..t2 ---- ack
    writer B:   append -> t2 -- wait_durable(t2): waits, covered ------------------ ack
    writer C:          append -> t3 (during the sync) -- wait: next leader --------- ack
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class DurabilityLost(RuntimeError):
    """A WAL sync failed: acknowledged state can no longer be promised. Restart to recover."""


class GroupCommit:
    def __init__(
        self, sync: Callable[[], None], on_sync: Callable[[float, int], None] | None = None
    ):
        self._sync = sync
        self._on_sync = on_sync  # (seconds, writes covered) for metrics
        self._cond = threading.Condition()  # guards every field below
        self._appended = 0  # highest ticket handed out
        self._durable = 0  # highest ticket covered by a finished sync
        self._syncing = False
        self._failure: BaseException | None = None

    def next_ticket(self) -> int:
        """Called by the store right after an unsynced append, under its write lock."""
        with self._cond:
            self.raise_if_failed()
            self._appended += 1
            return self._appended

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise DurabilityLost("a WAL sync failed earlier; restart the server") from self._failure

    def wait_durable(self, ticket: int) -> None:
        with self._cond:
            while True:
                self.raise_if_failed()
                if self._durable >= ticket:
                    return
                if not self._syncing:
                    break
                self._cond.wait()
            self._syncing = True
            target = self._appended
            covered = target - self._durable
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            self._sync()
        except BaseException as exc:
            failure = exc
        elapsed = time.perf_counter() - started
        with self._cond:
            self._syncing = False
            if failure is None:
                self._durable = max(self._durable, target)
            else:
                self._failure = failure
            self._cond.notify_all()
        if failure is not None:
            raise DurabilityLost("WAL sync failed") from failure
        if self._on_sync is not None:
            self._on_sync(elapsed, covered)
