"""One group's view of the :class:`RaftStore`, shaped as the core's storage Protocols.

The core reads its stable log, hard state and latest snapshot through these
(``LogStorage``, ``StableStorage``, ``SnapshotStorage`` in ``warren.raft.storage``). The
asyncio host does not write through them: it hands whole batches of readies to
:meth:`RaftStore.persist_batch` (group commit). The write methods here exist for the
Protocols' sake (tests, tools) and each costs its own fsync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from warren.raft.types import Config, Entry, EntryKind, HardState, SnapshotMeta
from warren.store.raft_store import GroupId, GroupWrite, RaftStore

_KINDS = {int(k): k for k in EntryKind}  # EntryKind(n) is slow on this hot path


def entry_from_record(index: int, term: int, kind: int, data: bytes) -> Entry:
    return Entry(term, index, _KINDS[kind], data)


class GroupStorage:
    """LogStorage + StableStorage + SnapshotStorage of one group, backed by LMDB."""

    def __init__(self, store: RaftStore, group: GroupId) -> None:
        self.store = store
        self.group = group

    # LogStorage
    def first_index(self) -> int:
        return self.store.first_index(self.group)

    def last_index(self) -> int:
        return self.store.last_index(self.group)

    def term(self, index: int) -> int | None:
        return self.store.term(self.group, index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return [entry_from_record(*r) for r in self.store.entries(self.group, lo, hi, max_bytes)]

    def append(self, entries: Sequence[Entry]) -> None:
        if entries:
            records = [(e.index, e.term, int(e.kind), e.data) for e in entries]
            self.store.persist_batch([GroupWrite(self.group, records)])

    def compact(self, upto_index: int) -> None:
        self.store.persist_batch([GroupWrite(self.group, compact_upto=upto_index)])

    # StableStorage
    def load(self) -> HardState:
        term, vote, commit = self.store.hard_state(self.group)
        return HardState(term=term, vote=vote, commit=commit)

    def save(self, state: HardState) -> None:
        self.store.persist_batch(
            [GroupWrite(self.group, hard_state=(state.term, state.vote, state.commit))]
        )

    # SnapshotStorage
    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        saved = self.store.snapshot(self.group)
        if saved is None:
            return None
        index, term, config, data = saved
        return snapshot_meta(index, term, config), data

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        config = meta.config.to_wire() if hasattr(meta.config, "to_wire") else meta.config
        self.store.persist_batch(
            [GroupWrite(self.group, snapshot=(meta.index, meta.term, config, data))]
        )


def snapshot_meta(index: int, term: int, config: Any) -> SnapshotMeta:
    return SnapshotMeta(index=index, term=term, config=Config.from_wire(config))
