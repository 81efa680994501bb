"""The leader's per-follower replication state (flow control), as in etcd-io/raft.

PROBE: one append in flight until the follower answers (finding where logs match).
REPLICATE: pipelined appends, up to ``max_inflight`` unacknowledged messages.
SNAPSHOT: the follower needs entries the leader compacted; chunks are sent stop-and-wait.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from warren.raft.types import SnapshotMeta


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    inflight: deque[int] = field(default_factory=deque)  # last index of each unacked append
    recent_active: bool = False
    snapshot_index: int = 0
    snapshot_offset: int = 0
    snapshot_stalled_ticks: int = 0
    snapshot_meta: SnapshotMeta | None = None  # the snapshot being sent (pinned)
    snapshot_size: int = 0
    unreachable: bool = False  # node-level liveness says the follower's node is down

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = max(self.match + 1, self.snapshot_index + 1 if self.snapshot_index else 0)
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot_index = 0
        self.snapshot_meta = None

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, index: int, meta: SnapshotMeta | None = None, size: int = 0) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot_index = index
        self.snapshot_meta, self.snapshot_size = meta, size
        self.snapshot_offset = 0
        self.snapshot_stalled_ticks = 0
        self.inflight.clear()

    def acked(self, index: int) -> bool:
        """The follower holds the leader's log up to ``index``; True if that is news."""
        self.probe_sent = False
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return True

    def paused(self, max_inflight: int) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True
