"""The node's view of its log: durable storage plus an unstable (not yet persisted) tail.

As in etcd-io/raft: entries at or after ``offset`` live in ``unstable`` until the driver
reports them persisted; earlier ones are read from storage. A snapshot received from the
leader is also unstable until persisted. Membership configs take effect when their entry is
appended (single-server changes), so the log tracks the config at every index it holds.
"""

from __future__ import annotations

from warren.raft.storage import Storage
from warren.raft.types import ConfChange, Config, Entry, EntryKind, SnapshotMeta

CONFIG_SCAN_PAGE_BYTES = 1 << 20


class RaftLog:
    def __init__(self, storage: Storage, initial_config: Config) -> None:
        self.storage = storage
        saved = storage.snapshot_meta()
        self.base_config = saved[0].config if saved is not None else initial_config
        self.base_index = storage.first_index() - 1
        self.unstable: list[Entry] = []
        self.offset = storage.last_index() + 1
        self.pending_snapshot: tuple[SnapshotMeta, bytes] | None = None
        self.pending_retained: list[Entry] = []  # entries the pending snapshot retains
        self.committed = max(storage.load().commit, self.base_index)
        self.applied = self.base_index
        self.configs: list[tuple[int, Config]] = []
        known = storage.config_entries()
        if known is not None:  # the storage keeps them aside: no pass over the log
            for e in known:
                self._track_config(e)
            return
        # Else a scan (only the log after the snapshot), a page at a time so start-up
        # memory stays flat.
        index, last = storage.first_index(), storage.last_index()
        while index <= last:
            page = storage.entries(index, last + 1, CONFIG_SCAN_PAGE_BYTES)
            for e in page:
                self._track_config(e)
            index += len(page)

    # --- reading
    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot[0].index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.offset + len(self.unstable) - 1

    def term(self, index: int) -> int | None:
        if self.pending_snapshot is not None and index == self.pending_snapshot[0].index:
            return self.pending_snapshot[0].term
        if index >= self.offset:
            i = index - self.offset
            return self.unstable[i].term if i < len(self.unstable) else None
        if self.pending_snapshot is not None and index < self.pending_snapshot[0].index:
            return None
        return self.storage.term(index)

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None
        return term

    def persisted_index(self) -> int:
        """Highest index known durable AND part of this log."""
        if self.pending_snapshot is not None:
            return 0
        return self.offset - 1

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        assert self.first_index() <= lo <= hi <= self.last_index() + 1, (lo, hi)
        out: list[Entry] = []
        if lo < self.offset:
            out = self.storage.entries(lo, min(hi, self.offset), max_bytes)
            if len(out) < min(hi, self.offset) - lo:
                return out
        if hi > self.offset:
            tail = self.unstable[max(lo, self.offset) - self.offset : hi - self.offset]
            if max_bytes is None:
                out.extend(tail)
            else:
                size = sum(len(e.data) + 16 for e in out)
                for e in tail:
                    size += len(e.data) + 16
                    if out and size > max_bytes:
                        break
                    out.append(e)
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def config_at(self, index: int) -> Config:
        config = self.base_config
        for i, c in self.configs:
            if i > index:
                break
            config = c
        return config

    def config(self) -> Config:
        return self.configs[-1][1] if self.configs else self.base_config

    def last_config_index(self) -> int:
        return self.configs[-1][0] if self.configs else 0

    # --- writing
    def append(self, entries: list[Entry]) -> None:
        """Append after the caller checked the previous entry matches; drop a conflicting tail."""
        for n, e in enumerate(entries):
            if self.term(e.index) != e.term:
                assert e.index > self.committed, "conflict at a committed index"
                self._truncate_and_append(entries[n:])
                return

    def _truncate_and_append(self, entries: list[Entry]) -> None:
        after = entries[0].index
        assert after <= self.last_index() + 1
        if after <= self.offset:
            self.offset = after
            self.unstable = list(entries)
        else:
            del self.unstable[after - self.offset :]
            self.unstable.extend(entries)
        while self.configs and self.configs[-1][0] >= after:
            self.configs.pop()
        for e in entries:
            self._track_config(e)

    def _track_config(self, e: Entry) -> None:
        if e.kind == EntryKind.CONF_CHANGE:
            self.configs.append((e.index, ConfChange.decode(e.data).apply_to(self.config())))

    def stable_to(self, index: int, term: int) -> None:
        if index >= self.offset and self.term(index) == term:
            del self.unstable[: index + 1 - self.offset]
            self.offset = index + 1

    def restore(self, meta: SnapshotMeta, data: bytes, retained: list[Entry] | None = None) -> None:
        self.pending_snapshot = (meta, data)
        self.pending_retained = retained or []
        self.unstable = []
        self.offset = meta.index + 1
        self.committed = meta.index
        self.base_config, self.base_index, self.configs = meta.config, meta.index, []

    def snapshot_persisted(self, meta: SnapshotMeta) -> None:
        if self.pending_snapshot is not None and self.pending_snapshot[0] == meta:
            self.pending_snapshot = None
            self.pending_retained = []
            self.applied = max(self.applied, meta.index)

    def compacted(self, index: int) -> None:
        """A local snapshot at ``index`` is durable: fold configs up to it into the base."""
        if index <= self.base_index:
            return
        self.base_config = self.config_at(index)
        self.base_index = index
        self.configs = [(i, c) for i, c in self.configs if i > index]
