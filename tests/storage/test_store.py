from __future__ import annotations

import threading
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from storage import keys
from storage.commit import DurabilityLost, GroupCommit
from storage.store import Batch, Store


def test_batch_is_applied_whole_and_survives_reopen(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    batch = Batch()
    for label in range(100):
        batch.put(keys.CF_POINTS, keys.point_key(1, label), b"v%d" % label)
    batch.put(keys.CF_GRANTS, keys.grant_key(1, 5, 9), b"")
    store.write(batch)
    store.close()
    store = Store(str(tmp_path / "db"))
    assert len(list(store.scan(keys.CF_POINTS, keys.u32(1)))) == 100
    assert store.get(keys.CF_GRANTS, keys.grant_key(1, 5, 9)) == b""
    store.close()


def test_scan_stops_at_the_prefix(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    batch = Batch()
    for cid in (1, 2, 3):
        batch.put(keys.CF_POINTS, keys.point_key(cid, 0), b"x")
    store.write(batch)
    assert [k for k, _ in store.scan(keys.CF_POINTS, keys.u32(2))] == [keys.point_key(2, 0)]
    store.close()


def test_delete_range_removes_one_collection(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    batch = Batch()
    for cid in (1, 2):
        for label in range(10):
            batch.put(keys.CF_POINTS, keys.point_key(cid, label), b"x")
    store.write(batch)
    drop = Batch()
    drop.delete_range(keys.CF_POINTS, *keys.collection_range(1))
    store.write(drop)
    assert list(store.scan(keys.CF_POINTS, keys.u32(1))) == []
    assert len(list(store.scan(keys.CF_POINTS, keys.u32(2)))) == 10
    store.close()


def test_one_sync_covers_writers_that_arrived_during_the_previous_sync() -> None:
    release = threading.Event()
    syncs: list[int] = []
    first_sync_started = threading.Event()

    def slow_sync() -> None:
        syncs.append(1)
        first_sync_started.set()
        release.wait(5)

    commit = GroupCommit(slow_sync)
    leader_ticket = commit.next_ticket()
    leader = threading.Thread(target=commit.wait_durable, args=(leader_ticket,))
    leader.start()
    first_sync_started.wait(5)
    # Ten writers append while the first sync runs; they must share one more sync.
    tickets = [commit.next_ticket() for _ in range(10)]
    followers = [threading.Thread(target=commit.wait_durable, args=(t,)) for t in tickets]
    for follower in followers:
        follower.start()
    release.set()
    leader.join(5)
    for follower in followers:
        follower.join(5)
    assert len(syncs) == 2


def test_a_failed_sync_refuses_every_later_write() -> None:
    def broken_sync() -> None:
        raise OSError("disk gone")

    commit = GroupCommit(broken_sync)
    with pytest.raises(DurabilityLost):
        commit.wait_durable(commit.next_ticket())
    with pytest.raises(DurabilityLost):
        commit.next_ticket()


def test_os_durability_does_not_sync(tmp_path: Path) -> None:
    synced: list[tuple[float, int]] = []
    store = Store(str(tmp_path / "db"), durability="os", on_sync=lambda s, n: synced.append((s, n)))
    batch = Batch()
    batch.put(keys.CF_META, b"x", b"1")
    store.write(batch)
    assert synced == []
    store.close()


def test_the_change_feed_lives_only_while_a_writer_has_followers(tmp_path: Path) -> None:
    """A store never run with read workers has no `changes` column family, and a start
    without them drops it: a store without it opens in releases older than read workers."""
    path = str(tmp_path / "db")
    published: list[int] = []
    store = Store(path)
    batch = Batch(change=b"ignored")
    batch.put(keys.CF_META, b"a", b"1")
    store.write(batch)
    store.close()
    assert keys.CF_CHANGES not in Rdict.list_cf(path, Options(raw_mode=True))
    store = Store(path, on_change=published.append)
    batch = Batch(change=b"first")
    batch.put(keys.CF_META, b"b", b"2")
    store.write(batch)
    assert published == [0 + 1] and list(store.changes_after(0)) == [(1, b"first")]
    store.close()
    store = Store(path)  # without workers now
    assert store.last_change() == 0 and store.get(keys.CF_META, b"b") == b"2"
    store.close()
    assert keys.CF_CHANGES not in Rdict.list_cf(path, Options(raw_mode=True))
