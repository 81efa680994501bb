"""When the Raft host snapshots a group: its limits, or the interval its state machine names."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from warren.io.raft_snapshots import SnapshotPolicy
from warren.limits import Limits


class Machine:
    """A state machine whose group 1 names its own snapshot interval (as a quorum queue)."""

    def snapshot(self, group: Any) -> bytes:
        return b"state"

    def snapshot_every(self, group: Any) -> int | None:
        return 10 if group == 1 else None

    def keep_from(self, group: Any) -> int | None:
        return 7 if group == 1 else None


def node(applied: int, base: int = 0) -> Any:
    taken: list[tuple[int, bytes, int | None]] = []

    def take_snapshot(index: int, data: bytes, keep_from: int | None = None) -> bool:
        taken.append((index, data, keep_from))
        return True

    return SimpleNamespace(applied=applied, log=SimpleNamespace(base_index=base, pending_snapshot=None),
                           local_snapshot=None, take_snapshot=take_snapshot, taken=taken)


def test_a_group_naming_its_interval_snapshots_at_it_and_keeps_what_it_reads() -> None:
    policy = SnapshotPolicy(Machine(), Limits(raft_snapshot_every_entries=100))
    early, due = node(applied=9), node(applied=10)
    assert not policy.maybe_snapshot(1, early) and early.taken == []
    assert policy.maybe_snapshot(1, due) and due.taken == [(10, b"state", 7)]


def test_other_groups_follow_the_hosts_limits() -> None:
    policy = SnapshotPolicy(Machine(), Limits(raft_snapshot_every_entries=100))
    assert not policy.maybe_snapshot(0, node(applied=99))
    assert policy.maybe_snapshot(0, node(applied=100))
