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


def test_a_snapshot_is_stored_in_chunks_and_read_at_any_offset(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, MAP, sync=False, snapshot_chunk_bytes=10)
    data = bytes(range(95))
    store.persist_batch([GroupWrite(1, entries(1, 6, 1)), GroupWrite(1, snapshot=(4, 1, None, data))])
    assert store.snapshot_meta(1) == (4, 1, None, 95, 0)
    with store._env.begin() as txn:  # ten chunk keys, none larger than a chunk
        chunks = [bytes(v) for k, v in txn.cursor(db=store._snapc)]
    assert [len(c) for c in chunks] == [10] * 9 + [5]
    assert store.snapshot_chunk(1, 4, 0, 10) == data[:10]
    assert store.snapshot_chunk(1, 4, 7, 25) == data[7:32]  # across chunk keys
    assert store.snapshot_chunk(1, 4, 90, 10) == data[90:] and store.snapshot_chunk(1, 4, 95, 10) == b""
    assert store.snapshot_chunk(1, 3, 0, 10) is None  # no such snapshot
    assert store.snapshot(1) == (4, 1, None, data)
    store.close()


def test_saving_a_snapshot_keeps_only_the_older_ones_being_sent(store: RaftStore) -> None:
    store.persist_batch([GroupWrite(1, entries(1, 20, 1))])
    for index in (5, 10, 15):
        store.persist_batch([GroupWrite(1, snapshot=(index, 1, None, b"s%d" % index), keep_snapshots={5})])
    assert store.held_snapshots(1) == [5, 15]  # 10 was not being sent
    assert store.snapshot_chunk(1, 5, 0, 100) == b"s5" and store.snapshot_meta(1) == (15, 1, None, 3, 0)
    store.persist_batch([GroupWrite(1, snapshot=(18, 1, None, b"s18"))])
    assert store.held_snapshots(1) == [18]
    store.persist_batch([GroupWrite(1, delete=True)])
    assert store.held_snapshots(1) == [] and store.snapshot(1) is None
    with store._env.begin() as txn:
        assert txn.stat(store._snapc)["entries"] == 0


def test_a_store_written_before_chunking_still_opens(tmp_path: Path) -> None:
    import lmdb
    import msgpack

    from warren.store.raft_store import group_prefix

    # The records main wrote: one snap value holding the data, a two-field base.
    env = lmdb.open(str(tmp_path / "raft.lmdb"), map_size=MAP, max_dbs=8, subdir=True)
    log, snap, base = (env.open_db(n) for n in (b"log", b"snap", b"base"))
    prefix = group_prefix("q")
    with env.begin(write=True) as txn:
        for i in range(9, 13):
            txn.put(prefix + i.to_bytes(8, "big"), msgpack.packb([2, 0, b"e%d" % i]), db=log)
        txn.put(prefix, msgpack.packb([8, 2, [[1], []], b"old-state"], use_bin_type=True), db=snap)
        txn.put(prefix, msgpack.packb([8, 2]), db=base)
    env.close()
    store = RaftStore(tmp_path, MAP, sync=False)
    assert (store.first_index("q"), store.last_index("q"), store.retained_from("q")) == (9, 12, 9)
    assert store.config_entries("q") is None  # not known: the core scans this log once
    assert store.snapshot_meta("q") == (8, 2, [[1], []], 9, 0)
    assert store.snapshot_chunk("q", 8, 4, 100) == b"state"
    store.persist_batch([GroupWrite("q", snapshot=(10, 2, [[1], []], b"new"))])
    assert store.snapshot("q") == (10, 2, [[1], []], b"new") and store.held_snapshots("q") == [10]
    assert store.snapshot_chunk("q", 8, 0, 100) is None and store.first_index("q") == 11
    store.close()


def test_keep_from_retains_entries_a_snapshot_covers_for_the_state_machine(store: RaftStore) -> None:
    store.persist_batch([GroupWrite(1, entries(1, 31, 1))])
    store.persist_batch([GroupWrite(1, snapshot=(20, 1, None, b"s"), keep_from=12)])
    assert (store.first_index(1), store.retained_from(1), store.last_index(1)) == (21, 12, 30)
    assert store.entries(1, 12, 21) == entries(12, 21, 1)  # the state machine reads them
    assert store.term(1, 15) is None  # the core sees the log from the snapshot on
    # A later compaction can move the retained start up, never down (gone is gone).
    store.persist_batch([GroupWrite(1, compact_upto=25, keep_from=5)])
    assert (store.first_index(1), store.retained_from(1)) == (26, 12)
    store.persist_batch([GroupWrite(1, compact_upto=28, keep_from=27)])
    assert (store.first_index(1), store.retained_from(1)) == (29, 27)
    with pytest.raises(AssertionError):
        store.entries(1, 26, 29)
    # A leader's snapshot past the log replaces everything, retained entries too.
    store.persist_batch([GroupWrite(1, snapshot=(40, 2, None, b"t"), keep_from=27)])
    assert (store.first_index(1), store.retained_from(1), store.last_index(1)) == (41, 41, 40)


def test_a_kept_snapshot_keeps_the_entries_it_retains(store: RaftStore) -> None:
    store.persist_batch([GroupWrite(1, entries(1, 40, 1))])
    store.persist_batch([GroupWrite(1, snapshot=(20, 1, None, b"a"), keep_from=8)])
    assert store.snapshot_meta(1) == (20, 1, None, 1, 8)
    # A newer snapshot retaining from 25 while the one at 20 is still being sent: 8.. stay.
    store.persist_batch([GroupWrite(1, snapshot=(30, 1, None, b"b"), keep_from=25, keep_snapshots={20})])
    assert store.retained_from(1) == 8 and store.entries(1, 8, 21) == entries(8, 21, 1)
    store.persist_batch([GroupWrite(1, snapshot=(35, 1, None, b"c"), keep_from=25)])
    assert store.retained_from(1) == 25 and store.held_snapshots(1) == [35]


def test_a_leaders_snapshot_brings_the_entries_it_retains(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, MAP)
    store.persist_batch([GroupWrite(1, entries(1, 5, 1))])
    retained = entries(50, 61, 3, "r")
    store.persist_batch([GroupWrite(1, snapshot=(60, 3, None, b"s"), keep_from=50, retained_entries=retained)])
    assert (store.first_index(1), store.retained_from(1), store.last_index(1)) == (61, 50, 60)
    assert store.entries(1, 50, 61) == retained and store.term(1, 55) is None
    store.persist_batch([GroupWrite(1, entries(61, 63, 3))])
    assert store.entries(1, 58, 63) == retained[-3:] + entries(61, 63, 3)
    store.close()
    reopened = RaftStore(tmp_path, MAP)
    assert reopened.retained_from(1) == 50 and reopened.snapshot_meta(1) == (60, 3, None, 1, 50)
    reopened.close()


def test_config_entries_are_kept_aside_through_truncation_compaction_and_reopening(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, MAP, sync=False)
    log = [(i, 1, 2 if i in (3, 7, 12) else 0, b"c%d" % i) for i in range(1, 15)]
    store.persist_batch([GroupWrite(1, log)])
    assert store.config_entries(1) == [(3, 1, b"c3"), (7, 1, b"c7"), (12, 1, b"c12")]
    store.persist_batch([GroupWrite(1, [(10, 2, 0, b"x"), (11, 2, 2, b"y")])])  # replaces 10..
    assert store.config_entries(1) == [(3, 1, b"c3"), (7, 1, b"c7"), (11, 2, b"y")]
    store.persist_batch([GroupWrite(1, compact_upto=5)])
    assert store.config_entries(1) == [(7, 1, b"c7"), (11, 2, b"y")]
    store.close()
    store = RaftStore(tmp_path, MAP, sync=False)
    assert store.config_entries(1) == [(7, 1, b"c7"), (11, 2, b"y")]
    store.persist_batch([GroupWrite(1, snapshot=(30, 3, None, b"s"))])  # replaces the log
    assert store.config_entries(1) == [] and store.config_entries(2) == []
    store.close()


def test_a_log_written_from_empty_has_its_configs_known_after_reopening(tmp_path: Path) -> None:
    store = RaftStore(tmp_path, MAP, sync=False)
    store.persist_batch([GroupWrite(1, entries(1, 10, 1))])
    store.persist_batch([GroupWrite(1, entries(10, 20, 1))])
    store.close()
    store = RaftStore(tmp_path, MAP, sync=False)
    assert store.config_entries(1) == []
    store.close()
