"""The LMDB Raft store: logs of many groups, truncation, compaction, snapshots, reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from warren.store.raft_store import GroupWrite, RaftStore

MAP = 64 * 1024 * 1024


def entries(lo: int, hi: int, term: int, tag: str = "") -> list[tuple[int, int, int, bytes]]:
    return [(i, term, 0, f"{tag}{i}".encode()) for i in range(lo, hi)]


@pytest.fixture
def store(tmp_path: Path) -> RaftStore:
    s = RaftStore(tmp_path, MAP)
    yield s
    s.close()


def test_empty_group_has_an_empty_log_and_zero_hard_state(store: RaftStore) -> None:
    assert (store.first_index(1), store.last_index(1)) == (1, 0)
    assert store.term(1, 0) == 0 and store.term(1, 1) is None
    assert store.hard_state(1) == (0, 0, 0) and store.snapshot(1) is None


def test_one_batch_holds_many_groups_and_survives_reopening(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, MAP)
    store.persist_batch(
        [
            GroupWrite(1, entries(1, 4, 1, "a"), hard_state=(1, 2, 0)),
            GroupWrite("queue.x", entries(1, 3, 2, "b"), hard_state=(2, 3, 1)),
            GroupWrite(10, entries(1, 2, 5, "c")),
        ]
    )
    assert store.stats.batches == 1 and store.stats.entries == 6
    store.close()
    store = RaftStore(tmp_path, MAP)
    assert store.entries(1, 1, 4) == entries(1, 4, 1, "a")
    assert store.entries("queue.x", 1, 3) == entries(1, 3, 2, "b")
    # Group 1's keys are not mixed up with group 10's (a prefix of its name).
    assert store.last_index(1) == 3 and store.last_index(10) == 1
    assert store.hard_state(1) == (1, 2, 0) and store.hard_state("queue.x") == (2, 3, 1)
    assert sorted(map(str, store.groups())) == ["1", "queue.x"]
    store.close()


def test_append_over_a_conflicting_suffix_replaces_it(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, MAP)
    store.persist_batch([GroupWrite(1, entries(1, 6, 1))])
    store.persist_batch([GroupWrite(1, entries(3, 4, 2, "new"))])
    assert store.last_index(1) == 3
    assert store.entries(1, 1, 4) == entries(1, 3, 1) + entries(3, 4, 2, "new")
    store.close()
    reopened = RaftStore(tmp_path, MAP)
    assert reopened.last_index(1) == 3 and reopened.term(1, 3) == 2 and reopened.term(1, 4) is None
    reopened.close()


def test_entries_respects_max_bytes_but_returns_at_least_one(store: RaftStore) -> None:
    store.persist_batch([GroupWrite(1, [(i, 1, 0, b"x" * 100) for i in range(1, 11)])])
    assert len(store.entries(1, 1, 11, max_bytes=350)) == 3
    assert len(store.entries(1, 1, 11, max_bytes=10)) == 1
    assert len(store.entries(1, 4, 8)) == 4


def test_compaction_drops_the_prefix_and_keeps_the_boundary_term(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, MAP)
    store.persist_batch([GroupWrite(1, entries(1, 4, 1) + entries(4, 8, 2))])
    store.persist_batch([GroupWrite(1, compact_upto=5)])
    assert store.first_index(1) == 6 and store.term(1, 5) == 2 and store.term(1, 4) is None
    store.close()
    store = RaftStore(tmp_path, MAP)
    assert (store.first_index(1), store.last_index(1), store.term(1, 5)) == (6, 7, 2)
    assert store.entries(1, 6, 8) == entries(6, 8, 2)
    store.close()


def test_snapshot_past_the_log_replaces_it_and_one_inside_keeps_the_tail(store: RaftStore) -> None:
    store.persist_batch([GroupWrite(1, entries(1, 6, 1)), GroupWrite(2, entries(1, 6, 1))])
    store.persist_batch(
        [
            GroupWrite(1, snapshot=(20, 3, {"voters": [1, 2, 3]}, b"state")),
            GroupWrite(2, snapshot=(3, 1, None, b"s2")),
        ]
    )
    assert (store.first_index(1), store.last_index(1), store.term(1, 20)) == (21, 20, 3)
    assert store.snapshot(1) == (20, 3, {"voters": [1, 2, 3]}, b"state")
    assert (store.first_index(2), store.last_index(2)) == (4, 5)
    assert store.entries(2, 4, 6) == entries(4, 6, 1)
    store.persist_batch([GroupWrite(1, entries(21, 23, 3))])
    assert store.entries(1, 21, 23) == entries(21, 23, 3)


def test_a_gap_in_the_log_is_a_programmer_error(store: RaftStore) -> None:
    store.persist_batch([GroupWrite(1, entries(1, 3, 1))])
    with pytest.raises(AssertionError):
        store.persist_batch([GroupWrite(1, entries(5, 6, 1))])
    assert store.last_index(1) == 2  # the failed batch left nothing behind


def test_stale_snapshot_is_ignored_and_entries_it_covers_are_skipped(store: RaftStore) -> None:
    store.persist_batch([GroupWrite(1, entries(1, 11, 1))])
    store.persist_batch([GroupWrite(1, snapshot=(8, 1, None, b"s8"))])
    store.persist_batch([GroupWrite(1, snapshot=(5, 1, None, b"old"))])
    assert store.snapshot(1) == (8, 1, None, b"s8") and store.first_index(1) == 9
    store.persist_batch([GroupWrite(1, entries(7, 13, 1))])
    assert (store.first_index(1), store.last_index(1)) == (9, 12)
    assert store.entries(1, 9, 13) == entries(9, 13, 1)
