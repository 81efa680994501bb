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
