"""One group's view of the :class:`RaftStore`, shaped as the core's storage Protocols.

The core reads its stable log, hard state and latest snapshot through these
(``LogStorage``, ``StableStorage``, ``SnapshotStorage`` in ``warren.raft.storage``). The
asyncio host does not write through them: it hands whole batches of readies to
:meth:`RaftStore.persist_batch` (group commit). The write methods here exist for the
Protocols' sake (tests, tools) and each costs its own fsync.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from warren.raft.types import Config, Entry, EntryKind, HardState, SnapshotMeta
from warren.store.raft_store import GroupId, GroupWrite, RaftStore

_KINDS = {int(k): k for k in EntryKind}  # EntryKind(n) is slow on this hot path


def entry_from_record(index: int, term: int, kind: int, data: bytes) -> Entry:
    return Entry(term, index, _KINDS[kind], data)


DEFAULT_CACHE_ENTRIES = 4096
DEFAULT_CACHE_BYTES = 1024 * 1024


class GroupStorage:
    """LogStorage + StableStorage + SnapshotStorage of one group, backed by LMDB.

    The most recently persisted entries (at most ``cache_entries`` of them and
    ``cache_bytes`` of data) are also kept in memory, as the core's own Entry objects: the
    core reads every entry back soon after it is persisted -- to apply it once committed,
    and on a leader to send it to a follower that was paused -- and serving those reads from
    LMDB (cursor, decode, new objects) cost more than any other part of the store. Whoever
    persists entries of this group other than through the methods below (the asyncio host's
    group commit) reports them with :meth:`persisted`.
    """

    def __init__(
        self,
        store: RaftStore,
        group: GroupId,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.store = store
        self.group = group
        self.cache_entries = cache_entries
        self.cache_bytes = cache_bytes
        self._cache: list[Entry] = []  # contiguous, durable, ending at the log's end
        self._cache_first = 0  # index of _cache[0]
        self._cache_size = 0  # bytes of data in _cache

    # The cache
    def persisted(self, entries: Sequence[Entry], snapshot: bool = False) -> None:
        """``entries`` (contiguous) and/or a snapshot of this group are now durable."""
        cache = self._cache
        if snapshot:  # a snapshot may have replaced the whole log
            cache.clear()
            self._cache_size = 0
        if not entries:
            return
        first = entries[0].index
        if cache and self._cache_first <= first <= self._cache_first + len(cache):
            while len(cache) > first - self._cache_first:  # a conflicting suffix is replaced
                self._cache_size -= len(cache.pop().data)
        else:
            cache.clear()
            self._cache_size = 0
            self._cache_first = first
        cache.extend(entries)
        self._cache_size += sum(len(e.data) for e in entries)
        if len(cache) > self.cache_entries or self._cache_size > self.cache_bytes:
            drop = max(0, len(cache) - self.cache_entries)
            size = self._cache_size - sum(len(e.data) for e in cache[:drop])
            while drop < len(cache) and size > self.cache_bytes:
                size -= len(cache[drop].data)
                drop += 1
            del cache[:drop]
            self._cache_size = size
            self._cache_first += drop
        if cache and self._cache_first + len(cache) - 1 != self.store.last_index(self.group):
            # Not what the store holds (entries a snapshot covered): serve from LMDB.
            cache.clear()
            self._cache_size = 0

    def _cached(self, index: int) -> Entry | None:
        i = index - self._cache_first
        if 0 <= i < len(self._cache) and index >= self.store.first_index(self.group):
            return self._cache[i]
        return None

    def entry_data(self, index: int) -> bytes | None:
        """The data of the entry at ``index``, also one a snapshot retained; None if not held."""
        cached = self._cached(index)
        if cached is not None:
            return cached.data
        store, group = self.store, self.group
        if not store.retained_from(group) <= index <= store.last_index(group):
            return None
        found = store.entries(group, index, index + 1)
        return found[0][3] if found else None

    # LogStorage
    def first_index(self) -> int:
        return self.store.first_index(self.group)

    def last_index(self) -> int:
        return self.store.last_index(self.group)

    def term(self, index: int) -> int | None:
        cached = self._cached(index)
        if cached is not None:
            return cached.term
        return self.store.term(self.group, index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        cache, first = self._cache, self._cache_first
        if (
            not cache
            or lo < first
            or hi > first + len(cache)
            or lo < self.store.first_index(self.group)
        ):
            return [
                entry_from_record(*r) for r in self.store.entries(self.group, lo, hi, max_bytes)
            ]
        out = cache[lo - first : hi - first]
        if max_bytes is not None:
            total = 0
            for n, e in enumerate(out):
                total += len(e.data) + 16  # as warren.raft.storage.MemoryStorage counts
                if n and total > max_bytes:
                    del out[n:]
                    break
        return out

    def append(self, entries: Sequence[Entry]) -> None:
        if entries:
            records = [(e.index, e.term, int(e.kind), e.data) for e in entries]
            self.store.persist_batch([GroupWrite(self.group, records)])
            self.persisted(entries)

    def config_entries(self) -> list[Entry] | None:
        known = self.store.config_entries(self.group)
        if known is None:
            return None
        return [Entry(term, index, EntryKind.CONF_CHANGE, data) for index, term, data in known]

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
    def snapshot_meta(self) -> tuple[SnapshotMeta, int] | None:
        saved = self.store.snapshot_meta(self.group)
        if saved is None:
            return None
        index, term, config, size, retained_from = saved
        return snapshot_meta(index, term, config, retained_from), size

    def snapshot_chunk(self, index: int, offset: int, max_bytes: int) -> bytes | None:
        return self.store.snapshot_chunk(self.group, index, offset, max_bytes)

    def retained_entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        store, group = self.store, self.group
        if lo < store.retained_from(group) or hi > store.last_index(group) + 1:
            return None
        return [entry_from_record(*r) for r in store.entries(group, lo, hi, max_bytes)]

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        held = self.snapshot_meta()
        saved = self.store.snapshot(self.group) if held is not None else None
        if held is None or saved is None:
            return None
        return held[0], saved[3]

    def save_snapshot(
        self, meta: SnapshotMeta, data: bytes, keep: Collection[int] = (),
        retained: Sequence[Entry] = (),
    ) -> None:  # fmt: skip
        config = meta.config.to_wire() if hasattr(meta.config, "to_wire") else meta.config
        self.store.persist_batch([GroupWrite(
            self.group, snapshot=(meta.index, meta.term, config, data), keep_snapshots=keep,
            keep_from=meta.retained_from or None,
            retained_entries=[(e.index, e.term, int(e.kind), e.data) for e in retained],
        )])  # fmt: skip
        self.persisted((), snapshot=True)


def snapshot_meta(index: int, term: int, config: Any, retained_from: int = 0) -> SnapshotMeta:
    return SnapshotMeta(index, term, Config.from_wire(config), retained_from)
