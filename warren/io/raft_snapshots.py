"""When the Raft host snapshots a group's state machine and compacts its log.

The host (:mod:`warren.io.raft_host`) asks a :class:`SnapshotPolicy` at the start of each
pass over a group, while no ready of that group is in flight: then the node's applied
index is exactly what the state machine has applied, so ``state_machine.snapshot(group)``
is the state as of ``node.applied``. A snapshot is taken

- when the entries applied since the group's last snapshot reach
  ``Limits.raft_snapshot_every_entries`` or their data ``raft_snapshot_every_bytes``
  (0 turns either off), for a state machine that has ``snapshot``;
- when the state machine (or anyone) asked for one with ``RaftHost.compact``;
- for a group whose state machine names its own interval (an optional
  ``snapshot_every(group) -> int | None``: a quorum queue snapshots every
  max(``quorum_snapshot_min_entries``, 2 x its depth) entries, as a snapshot costs it time
  in proportion to its depth), at that many entries instead of the two limits above.

The core then compacts its log: its model stays "snapshot at S, log from S+1". A state
machine that keeps data in the log (a quorum queue keeps its message bodies there) says
from which index L it still needs entries: ``keep_from`` given to ``compact``, or its
optional ``keep_from(group)`` method for automatic snapshots. The store then keeps the
entries L..S physically (``RaftStore.entries(group, L, S + 1)`` keeps working; see
``RaftStore.retained_from``) although the core no longer sees them, and the snapshot's
metadata says so (``SnapshotMeta.retained_from``).

A snapshot sent to a follower carries the small state and then those retained entries,
streamed from the leader's store chunk by chunk (never one blob on the leader); the
follower persists them with the snapshot, so its state machine's ``restore`` can read
the bodies from its own store. L cannot go below what the store still holds (the core
clamps it), and entries a snapshot still being sent retains stay until it is done.
The follower holds one incoming snapshot (data + retained entries) in memory until its
last chunk: streaming it to disk as it arrives is not built yet.

A state machine whose optional ``snapshot_size(group)`` (its records) reaches
``Limits.raft_snapshot_fork_records`` is snapshotted by a forked child
(:mod:`warren.io.snapshot_child`): the group goes on applying, and the snapshot, at the
index applied when the child forked, is handed to the core once its bytes are back. One
child at a time per node; a group due meanwhile waits its turn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from warren.io.snapshot_child import ChildSnapshot
from warren.limits import Limits
from warren.store.raft_store import GroupId

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Since:
    """What a group applied since its last snapshot (bytes only since this process began)."""

    data_bytes: int = 0
    requested: bool = False
    keep_from: int | None = None


class SnapshotPolicy:
    """Decides, per group, when the host snapshots the state machine; counts what it did."""

    def __init__(self, state_machine: Any, limits: Limits,
                 wake: Callable[[GroupId], None] | None = None) -> None:
        self.state_machine = state_machine
        # Looked up once: the host asks on every pass over every dirty group.
        self._snapshot = getattr(state_machine, "snapshot", None)
        self._keep_from = getattr(state_machine, "keep_from", None)
        self._every = getattr(state_machine, "snapshot_every", None)
        self._size = getattr(state_machine, "snapshot_size", None)
        self.every_entries = limits.raft_snapshot_every_entries
        self.every_bytes = limits.raft_snapshot_every_bytes
        self.fork_records = limits.raft_snapshot_fork_records if hasattr(os, "fork") else 0
        self._wake = wake  # the host's: a child's snapshot is back for this group
        self._since: dict[GroupId, _Since] = {}
        self._child: tuple[GroupId, ChildSnapshot] | None = None
        self._built: dict[GroupId, ChildSnapshot] = {}  # back from a child, not yet taken
        self._on_loop: set[GroupId] = set()  # its child failed: the next one is taken here
        self.taken = 0  # snapshots handed to the core (stats, tests)
        self.forked = 0  # of which a child built
        self.installed = 0  # leader snapshots restored into the state machine

    def applied(self, group: GroupId, entries: Sequence[Any]) -> None:
        if self._snapshot is None or self.every_bytes <= 0:
            return  # bytes are not counted: no pass over every applied entry
        since = self._since.get(group)
        if since is None:
            since = self._since[group] = _Since()
        since.data_bytes += sum(len(e.data) for e in entries)

    def request(self, group: GroupId, keep_from: int | None) -> None:
        since = self._since.setdefault(group, _Since())
        since.requested, since.keep_from = True, keep_from

    def installed_snapshot(self, group: GroupId) -> None:
        self.installed += 1
        self._since[group] = _Since()
        self._drop_child(group)  # older than the state just installed

    def forget(self, group: GroupId) -> None:
        self._since.pop(group, None)
        self._drop_child(group)

    def close(self) -> None:
        """The host stops: a child still building is stopped."""
        if self._child is not None:
            self._drop_child(self._child[0])

    def _drop_child(self, group: GroupId) -> None:
        self._built.pop(group, None)
        if self._child is not None and self._child[0] == group:
            self._child[1].cancel()
            self._child = None

    def maybe_snapshot(self, group: GroupId, node: Any) -> bool:
        """Take a snapshot of ``group`` if one is due; True if the core accepted it."""
        snapshot = self._snapshot
        if snapshot is None:
            return False
        take = getattr(node, "take_snapshot", None)
        if take is None:
            return False
        built = self._built.get(group)
        if built is not None:
            return self._take_built(group, node, take, built)
        if self._child is not None and self._child[0] == group:
            return False  # a child is building it
        since = self._since.get(group)
        applied = node.applied
        behind = applied - node.log.base_index
        if behind <= 0:
            return False
        due = since is not None and since.requested
        own = self._every(group) if self._every is not None else None
        if own is not None:
            due = due or behind >= own
        else:
            due = due or (self.every_entries > 0 and behind >= self.every_entries)
            due = due or (
                self.every_bytes > 0 and since is not None and since.data_bytes >= self.every_bytes
            )
        if not due:
            return False
        if node.local_snapshot is not None or node.log.pending_snapshot is not None:
            return False  # one is being written already: the next pass tries again
        keep_from = since.keep_from if since is not None and since.requested else None
        if self._in_child(group):
            if self._child is None:
                self._fork(group, applied, keep_from)
            return False
        if keep_from is None and self._keep_from is not None:
            keep_from = self._keep_from(group)
        if not take(applied, snapshot(group), keep_from=keep_from):
            return False
        self._on_loop.discard(group)
        return self._taken(group)

    def _taken(self, group: GroupId) -> bool:
        self._since[group] = _Since()
        self.taken += 1
        return True

    def _in_child(self, group: GroupId) -> bool:
        if self.fork_records <= 0 or self._size is None or group in self._on_loop:
            return False
        return bool(self._size(group) >= self.fork_records)

    def _fork(self, group: GroupId, applied: int, keep_from: int | None) -> None:
        snapshot, oldest = self._snapshot, self._keep_from
        assert snapshot is not None

        def build() -> tuple[bytes, int | None]:
            keep = keep_from if keep_from is not None or oldest is None else oldest(group)
            return snapshot(group), keep

        try:
            self._child = (group, ChildSnapshot(applied, build, self._child_done))
        except OSError as exc:  # no memory or processes left for a fork
            log.warning("cannot fork to snapshot %r (%s): taking it on the loop", group, exc)
            self._on_loop.add(group)
            if self._wake is not None:
                self._wake(group)

    def _child_done(self, child: ChildSnapshot) -> None:
        assert self._child is not None and self._child[1] is child
        group = self._child[0]
        self._child = None
        if child.result is None:
            self._on_loop.add(group)
        else:
            self._built[group] = child
        if self._wake is not None:
            self._wake(group)

    def _take_built(self, group: GroupId, node: Any, take: Any, built: ChildSnapshot) -> bool:
        if built.index <= node.log.base_index:
            del self._built[group]  # the log moved past it meanwhile
            return False
        if node.local_snapshot is not None or node.log.pending_snapshot is not None:
            return False  # the next pass tries again
        del self._built[group]
        assert built.result is not None
        data, keep_from = built.result
        if not take(built.index, data, keep_from=keep_from):
            return False
        self.forked += 1
        return self._taken(group)
