"""The LMDB group storage behaves exactly like warren.raft's MemoryStorage twin."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from warren.raft.storage import MemoryStorage
from warren.raft.types import Config, Entry, EntryKind, HardState, SnapshotMeta
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import RaftStore

CONFIG = Config(frozenset({1, 2, 3}))


def same(lmdb_side: GroupStorage, memory: MemoryStorage) -> None:
    assert lmdb_side.first_index() == memory.first_index()
    assert lmdb_side.last_index() == memory.last_index()
    lo, hi = memory.first_index(), memory.last_index() + 1
    for index in range(lo - 1, hi + 1):
        assert lmdb_side.term(index) == memory.term(index), index
    if hi > lo:
        assert lmdb_side.entries(lo, hi) == memory.entries(lo, hi)
        rng = random.Random(hi)
        for _ in range(5):  # sub-ranges, with and without a byte budget
            a = rng.randint(lo, hi - 1)
            b = rng.randint(a + 1, hi)
            max_bytes = rng.choice([None, 0, 30])
            assert lmdb_side.entries(a, b, max_bytes) == memory.entries(a, b, max_bytes)
    assert lmdb_side.load() == memory.load()
    assert lmdb_side.load_snapshot() == memory.load_snapshot()
    assert lmdb_side.config_entries() == memory.config_entries()


# (entries, bytes) the in-memory cache of recent entries may hold: the default, tiny ones
# that evict all the time, and none at all.
CACHES = [(4096, 1 << 20), (3, 1 << 20), (100, 25), (0, 0)]


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("seed", range(20))
def test_random_operations_match_the_memory_twin(
    tmp_path: Path, seed: int, cache: tuple[int, int]
) -> None:
    rng = random.Random(seed)
    # Semantics, not durability (tests/integration/test_raft_store_kill.py): no fsyncs.
    store = RaftStore(tmp_path, 64 * 1024 * 1024, sync=False)
    lmdb_side, memory = GroupStorage(store, "g", *cache), MemoryStorage(CONFIG)
    term = 1
    for _ in range(60):
        op = rng.random()
        last = memory.last_index()
        if op < 0.5:
            first = rng.randint(max(memory.first_index(), last - 3), last + 1)
            term += rng.random() < 0.3
            batch = [
                Entry(term, i, rng.choice([EntryKind.NORMAL] * 3 + [EntryKind.CONF_CHANGE]),
                      rng.randbytes(rng.randint(0, 20)))
                for i in range(first, first + rng.randint(1, 5))
            ]
            for side in (lmdb_side, memory):
                side.append(batch)
        elif op < 0.65 and last >= memory.first_index():
            upto = rng.randint(memory.first_index(), last)
            for side in (lmdb_side, memory):
                side.compact(upto)
        elif op < 0.8:
            index = rng.randint(max(0, last - 3), last + 5)
            snap_term = (
                memory.term(index) if rng.random() < 0.5 and memory.term(index) else term + 1
            )
            term = max(term, snap_term)
            meta = SnapshotMeta(index, snap_term, CONFIG)
            for side in (lmdb_side, memory):
                side.save_snapshot(meta, b"state%d" % index)
        else:
            state = HardState(term, rng.randint(0, 3), rng.randint(0, max(0, last)))
            for side in (lmdb_side, memory):
                side.save(state)
        same(lmdb_side, memory)
    store.close()
    reopened = RaftStore(tmp_path, 64 * 1024 * 1024)
    same(GroupStorage(reopened, "g"), memory)
    reopened.close()
