"""A node restarting over a long committed log hands it to the state machine in bounded pieces."""

from __future__ import annotations

import random

from warren.limits import Limits
from warren.raft.node import RaftNode
from warren.raft.storage import MemoryStorage
from warren.raft.types import Entry, EntryKind, HardState


def test_restart_applies_a_long_log_in_bounded_batches_in_order() -> None:
    storage = MemoryStorage()
    storage.append([Entry(1, i, EntryKind.NORMAL, i.to_bytes(4, "big") * 256) for i in range(1, 2001)])
    storage.save(HardState(term=1, vote=1, commit=2000))
    limits = Limits(raft_max_apply_bytes=64 * 1024)
    node = RaftNode(1, 1, storage, random.Random(1), voters=(1, 2, 3), limits=limits)
    applied: list[int] = []
    batches = 0
    while node.has_ready():
        ready = node.ready()
        if ready.committed_entries:
            batches += 1
            assert sum(len(e.data) + 16 for e in ready.committed_entries) <= 64 * 1024
        applied.extend(e.index for e in ready.committed_entries)
        node.advance(ready)
    assert applied == list(range(1, 2001))
    assert batches > 1


class _CountingStorage(MemoryStorage):
    def __init__(self, known: bool) -> None:
        super().__init__()
        self.known = known
        self.read = 0

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        self.read += 1
        return super().entries(lo, hi, max_bytes)

    def config_entries(self) -> list[Entry] | None:
        return super().config_entries() if self.known else None


def test_restart_finds_membership_without_reading_the_log_when_storage_keeps_configs() -> None:
    from warren.raft.types import ConfChange, ConfChangeKind

    for known in (True, False):
        storage = _CountingStorage(known)
        change = ConfChange(ConfChangeKind.ADD_LEARNER, 4).encode()
        storage.append([Entry(1, i, EntryKind.CONF_CHANGE if i == 500 else EntryKind.NORMAL,
                              change if i == 500 else b"x") for i in range(1, 1001)])
        node = RaftNode(1, 1, storage, random.Random(1), voters=(1, 2, 3))
        assert node.log.config().learners == {4} and node.log.last_config_index() == 500
        assert (storage.read == 0) is known  # the scan reads the log, the kept configs do not
