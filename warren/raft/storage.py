"""Storage Protocols the Raft core reads through, and in-memory twins for tests and the sim.

The core only READS storage (to serve old entries, terms and the latest snapshot). Writes
come from the driver, in batches, from ``Ready`` objects (see ``warren.raft.node``).

The driver loop, per node, across ALL its groups (group commit):

1. For each group with ``node.has_ready()``: ``rd = node.ready()``.
2. Send every message in ``rd.messages`` whose ``may_send_before_persist`` is true (the
   leader's appends, heartbeats and snapshot chunks) -- optional, it only saves latency.
3. Persist the whole batch in ONE write transaction and ONE fsync, per group in this order:
   ``rd.snapshot`` and ``rd.local_snapshot`` (``save_snapshot`` with
   ``keep=rd.sending_snapshots``: it also discards log entries up to the snapshot index,
   the whole log if the log does not hold that index with that term), then
   ``rd.entries`` (``append``: it truncates any conflicting suffix first), then
   ``rd.hard_state`` (``save``).
4. Only after the fsync: send the remaining messages (votes, vote grants, append/snapshot
   acks must never leave before the state they promise is durable).
5. Apply ``rd.committed_entries`` in order to the state machine (only committed entries are
   ever there); restore the state machine from ``rd.snapshot`` first if it is set.
6. ``node.advance(rd)``. Do not call ``ready()`` again on that node before ``advance``.

A crash anywhere loses only what was not fsynced in step 3; restart builds the node from
the three storages.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from warren.raft.types import Config, Entry, EntryKind, HardState, SnapshotMeta


class LogStorage(Protocol):
    def first_index(self) -> int:
        """Index of the first entry held (snapshot index + 1)."""

    def last_index(self) -> int:
        """Index of the last entry held (the snapshot index when the log is empty)."""

    def term(self, index: int) -> int | None:
        """Term at ``index``; the snapshot's term at the snapshot index; None if unknown."""

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``lo <= index < hi``; at least one, then stop before ``max_bytes``."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, first dropping any held entries at or after ``entries[0].index``."""

    def compact(self, upto_index: int) -> None:
        """Forget entries up to ``upto_index`` (they are covered by a snapshot)."""

    def config_entries(self) -> list[Entry] | None:
        """The membership-change entries held, in order, without reading the whole log
        (the node's start-up); None when the storage does not know them (then it scans)."""


class StableStorage(Protocol):
    def load(self) -> HardState: ...

    def save(self, state: HardState) -> None: ...


class SnapshotStorage(Protocol):
    """Snapshots are read a chunk at a time: a leader sends one to a follower chunk by chunk
    and must not load (or hold) the whole of it per chunk. It keeps sending the snapshot it
    started with, by index, even when a newer one is taken meanwhile (so a slow follower
    finishes): the storage keeps an older snapshot while the ready that saves a newer one
    names it in ``keep`` (``Ready.sending_snapshots``)."""

    def snapshot_meta(self) -> tuple[SnapshotMeta, int] | None:
        """The latest snapshot's metadata and data size, without reading the data."""

    def snapshot_chunk(self, index: int, offset: int, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` of the data of the held snapshot at ``index`` from ``offset``
        (b"" at its end); None when that snapshot is no longer held."""

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The latest snapshot whole (a state machine's restore at start-up)."""

    def retained_entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        """Entries ``lo <= index < hi`` although a snapshot covers them (those a snapshot's
        ``retained_from`` kept), as ``entries`` counts bytes; None when not all are held."""

    def save_snapshot(
        self, meta: SnapshotMeta, data: bytes, keep: Collection[int] = (),
        retained: Sequence[Entry] = (),
    ) -> None:  # fmt: skip
        """Keep this snapshot as the latest and drop log entries it covers (the whole log if
        the log does not hold ``meta.index`` with ``meta.term``) except, with
        ``meta.retained_from``, those from there on (and those a kept snapshot retains);
        ``retained``: those entries, from the leader. Drop older snapshots except those
        whose index is in ``keep``."""


class Storage(LogStorage, StableStorage, SnapshotStorage, Protocol):
    """All three, as one group's storage."""


class MemoryStorage:
    """In-memory ``Storage``: what the tests and the simulator use as the durable disk."""

    def __init__(self, config: Config | None = None) -> None:
        self.hard_state = HardState()
        self.snapshot: tuple[SnapshotMeta, bytes] | None = None
        self.kept: dict[int, tuple[SnapshotMeta, bytes]] = {}  # older ones still being sent
        self.retained: list[Entry] = []  # entries a snapshot covers but retains, to snap_index
        self.snap_index = 0
        self.snap_term = 0
        self.log: list[Entry] = []  # log[i] has index snap_index + 1 + i
        self.initial_config = config

    def first_index(self) -> int:
        return self.snap_index + 1

    def last_index(self) -> int:
        return self.snap_index + len(self.log)

    def term(self, index: int) -> int | None:
        if index == self.snap_index:
            return self.snap_term
        if self.snap_index < index <= self.last_index():
            return self.log[index - self.snap_index - 1].term
        return None

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        assert self.snap_index < lo <= hi <= self.last_index() + 1, (lo, hi, self.snap_index)
        out = self.log[lo - self.snap_index - 1 : hi - self.snap_index - 1]
        if max_bytes is None:
            return list(out)
        size, n = 0, 0
        for e in out:
            size += len(e.data) + 16
            if n and size > max_bytes:
                break
            n += 1
        return out[:n]

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        assert first <= self.last_index() + 1, "log gap"
        if first <= self.snap_index:  # already covered by the snapshot
            entries = [e for e in entries if e.index > self.snap_index]
            if not entries:
                return
            first = entries[0].index
        del self.log[first - self.snap_index - 1 :]
        self.log.extend(entries)

    def compact(self, upto_index: int) -> None:
        if upto_index <= self.snap_index:
            return
        assert upto_index <= self.last_index()
        term = self.term(upto_index)
        assert term is not None
        del self.log[: upto_index - self.snap_index]
        self.snap_index, self.snap_term = upto_index, term
        self.retained = []

    def config_entries(self) -> list[Entry] | None:
        return [e for e in self.log if e.kind == EntryKind.CONF_CHANGE]

    def load(self) -> HardState:
        hs = self.hard_state
        return HardState(hs.term, hs.vote, hs.commit)

    def save(self, state: HardState) -> None:
        self.hard_state = HardState(state.term, state.vote, state.commit)

    def snapshot_meta(self) -> tuple[SnapshotMeta, int] | None:
        return None if self.snapshot is None else (self.snapshot[0], len(self.snapshot[1]))

    def snapshot_chunk(self, index: int, offset: int, max_bytes: int) -> bytes | None:
        held = self.snapshot if self.snapshot is not None and self.snapshot[0].index == index else None
        held = held or self.kept.get(index)
        return None if held is None else held[1][offset : offset + max_bytes]

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        return self.snapshot

    def retained_entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        held = self.retained + self.log
        first = held[0].index if held else self.snap_index + 1
        if lo < first or hi > self.last_index() + 1:
            return None
        out: list[Entry] = []
        size = 0
        for e in held[lo - first : hi - first]:
            size += len(e.data) + 16
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def save_snapshot(
        self, meta: SnapshotMeta, data: bytes, keep: Collection[int] = (),
        retained: Sequence[Entry] = (),
    ) -> None:  # fmt: skip
        if meta.index <= self.snap_index:
            return
        if self.snapshot is not None:
            self.kept[self.snapshot[0].index] = self.snapshot
        self.kept = {i: s for i, s in self.kept.items() if i in keep}
        # Retained entries stay from the lowest start this snapshot or a kept one names.
        metas = [meta, *(held[0] for held in self.kept.values())]
        starts = [m.retained_from for m in metas if m.retained_from]
        if self.term(meta.index) == meta.term:
            covered = self.retained + self.log[: meta.index - self.snap_index]
            self.compact(meta.index)
            lo = min(starts) if starts else meta.index + 1
            self.retained = [e for e in covered if e.index >= lo]
        else:
            self.log.clear()
            self.snap_index, self.snap_term = meta.index, meta.term
            self.retained = []
        if retained:
            self.retained = list(retained)
        self.snapshot = (meta, data)
