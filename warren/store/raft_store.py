"""Durable Raft state of every group on one node, in one LMDB environment (group commit).

Layout: four sub-databases, every key starting with the group's prefix
(:func:`group_prefix`, length-prefixed so no group's keys are a prefix of another's):

- ``log``:   prefix + index (u64 big-endian, so a cursor walks a group's log in order)
             -> msgpack ``[term, kind, data]``
- ``state``: prefix -> msgpack ``[term, vote, commit]`` (the hard state)
- ``snap``:  prefix + index (u64) -> msgpack ``[index, term, config, size, chunk_bytes,
             retained_from]`` (retained_from 0: the snapshot retains no entries),
             one per snapshot held: the latest, and older ones the leader is still sending
             to a follower (``GroupWrite.keep_snapshots``). Stores written before chunking
             hold instead prefix -> ``[index, term, config, data]``; it is still read, and
             replaced by the group's next snapshot.
- ``snapc``: prefix + index (u64) + chunk number (u32) -> that chunk of the snapshot's data
             (``chunk_bytes`` each, the last one shorter): reading chunk k of a snapshot is
             one get, and writing a large one needs no giant value
- ``conf``:  prefix -> msgpack ``[[index, term, data], ...]``: the membership-change entries
             of the log after its base (rare, so small), kept with every write, so a
             restart finds the configs without scanning the log. Absent for a group whose
             log an older version wrote and that was never emptied since: then unknown,
             and the core scans
- ``base``:  prefix -> msgpack ``[index, term, retained_from]`` of the entry just before the
             first one the core sees (after compaction or a snapshot: the log's "dummy"
             entry); ``retained_from`` (absent in older stores: index + 1) is the first entry
             still physically held, below it when the state machine asked to keep entries
             its snapshot does not cover (``GroupWrite.keep_from``: a message store keeps the
             bodies of live messages in the log)

Writes for many groups are collected as :class:`GroupWrite` records and written by
:meth:`RaftStore.persist_batch` in ONE write transaction, made durable by ONE fsync (LMDB
opened with ``sync=True``: the commit returns after the data and then the meta page reached
the disk). Only after it returns may the caller report any of the batch as persisted. A
process killed at any moment leaves either the old or the new meta page: LMDB is
copy-on-write, so the store always opens and holds everything that was reported durable.

``persist_batch`` blocks on the disk, so the asyncio driver runs it in an executor thread.
Reads use short read transactions and may run concurrently on the event-loop thread; they
see the last committed batch. The per-group first/last index are cached in memory and
updated only by the thread that writes, after the commit.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from warren.errors import StoreError
from warren.limits import DEFAULT_LIMITS
from warren.raft.types import EntryKind
from warren.store.files import FILE_MODE, private_directory

GroupId = int | str
LogRecord = tuple[int, int, int, bytes]
"""(index, term, kind, data) of one log entry."""

_INDEX = struct.Struct(">Q")
_CHUNK = struct.Struct(">QI")  # snapshot index, chunk number
_LEN = struct.Struct(">H")
_CONF = int(EntryKind.CONF_CHANGE)
ConfRecord = tuple[int, int, bytes]
"""(index, term, data) of a membership-change entry."""


def group_prefix(group: GroupId) -> bytes:
    """Key prefix of a group: length + type tag + name, so prefixes never nest."""
    if isinstance(group, int):
        name = b"i" + str(group).encode()
    else:
        name = b"s" + group.encode()
    assert len(name) < 65536, "group id too long"
    return _LEN.pack(len(name)) + name


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


@dataclass(slots=True)
class GroupWrite:
    """What one group needs made durable: appended entries, hard state, snapshot, compaction.

    Applied in this order: snapshot (discarding the log it covers; ignored if not newer than
    the log's base), entries (an entry whose index already exists replaces it and every
    later one; entries the snapshot covers are skipped), hard state, compaction -- the
    semantics of ``warren.raft.storage``'s Protocols and its ``MemoryStorage`` twin.

    ``keep_snapshots``: indexes of older snapshots to keep when ``snapshot`` replaces them
    (a leader is still sending them, with the entries they retain); every other older one is
    dropped. ``keep_from``: with a snapshot or compaction, entries from this index on stay
    readable by :meth:`RaftStore.entries` although the core no longer sees them (recorded
    as the snapshot's ``retained_from``); ``retained_entries`` are those entries when the
    snapshot came from the leader (written after it replaced the log).
    """

    group: GroupId
    entries: Sequence[LogRecord] = ()
    hard_state: tuple[int, int, int] | None = None  # (term, vote, commit)
    snapshot: tuple[int, int, Any, bytes] | None = None  # (index, term, config, data)
    compact_upto: int | None = None
    delete: bool = False  # the group is gone (its queue deleted): remove everything it had
    keep_snapshots: Collection[int] = ()
    keep_from: int | None = None
    retained_entries: Sequence[LogRecord] = ()  # with a leader's snapshot: keep_from..index


@dataclass(slots=True)
class _Bounds:
    base_index: int = 0  # index of the entry before the first held one
    base_term: int = 0
    last_index: int = 0
    last_term: int = 0  # the core asks for the last entry's term all the time
    retained_from: int = 1  # first entry physically held (<= base_index + 1)
    confs: list[ConfRecord] | None = None  # conf-change entries after the base; None: unknown
    conf_saved: bool = False  # the conf record holds ``confs``


@dataclass(slots=True)
class RaftStoreStats:
    batches: int = 0
    group_writes: int = 0
    entries: int = 0
    bytes: int = 0
    per_batch: list[int] = field(default_factory=list)


class RaftStore:
    """The LMDB environment holding every group's log, hard state and snapshot."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        map_size: int,
        sync: bool = True,
        snapshot_chunk_bytes: int = DEFAULT_LIMITS.raft_snapshot_chunk_bytes,
    ) -> None:
        assert snapshot_chunk_bytes > 0
        # The core's chunk size: a chunk it asks for at an aligned offset is one get.
        self.snapshot_chunk_bytes = snapshot_chunk_bytes
        path = Path(data_dir)
        private_directory(path, git_ignored=True)
        private_directory(path / "raft.lmdb")  # before LMDB makes it with the file mode
        try:
            self._env = lmdb.open(
                str(path / "raft.lmdb"),
                mode=FILE_MODE,
                map_size=map_size,
                max_dbs=8,
                sync=sync,
                metasync=sync,
                max_spare_txns=4,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the raft store in {path}: {exc}") from exc
        self._log = self._env.open_db(b"log")
        self._state = self._env.open_db(b"state")
        self._snap = self._env.open_db(b"snap")
        self._snapc = self._env.open_db(b"snapc")
        self._conf = self._env.open_db(b"conf")
        self._base = self._env.open_db(b"base")
        self._bounds: dict[bytes, _Bounds] = {}
        self._prefixes: dict[GroupId, bytes] = {}
        self.stats = RaftStoreStats()

    def close(self) -> None:
        self._env.close()

    def _prefix(self, group: GroupId) -> bytes:
        """:func:`group_prefix`, remembered: the core asks for bounds all the time."""
        prefix = self._prefixes.get(group)
        if prefix is None:
            prefix = self._prefixes[group] = group_prefix(group)
        return prefix

    # --- writes ---------------------------------------------------------------------

    def persist_batch(self, writes: Iterable[GroupWrite]) -> None:
        """Write every group's work in one transaction; returns once it is fsynced."""
        updated: dict[bytes, _Bounds] = {}
        entries = size = count = 0
        try:
            with self._env.begin(write=True) as txn:
                for write in writes:
                    prefix = self._prefix(write.group)
                    bounds = updated.get(prefix) or self._copy_bounds(prefix, txn)
                    updated[prefix] = bounds
                    size += self._apply(txn, prefix, bounds, write)
                    entries += len(write.entries)
                    count += 1
        except lmdb.MapFullError as exc:
            raise StoreError(
                "the raft store is full: raise lmdb_map_size or free disk space"
            ) from exc
        except lmdb.Error as exc:
            raise StoreError(f"raft store write failed: {exc}") from exc
        self._bounds.update(updated)
        self.stats.batches += 1
        self.stats.group_writes += count
        self.stats.entries += entries
        self.stats.bytes += size

    def _apply(
        self, txn: lmdb.Transaction, prefix: bytes, bounds: _Bounds, write: GroupWrite
    ) -> int:
        before = None if bounds.confs is None else list(bounds.confs)
        size = self._apply_write(txn, prefix, bounds, write)
        if write.delete:
            bounds.conf_saved = False
        elif bounds.confs is not None and (bounds.confs != before or not bounds.conf_saved):
            txn.put(prefix, _pack([list(c) for c in bounds.confs]), db=self._conf)
            bounds.conf_saved = True
        return size

    def _apply_write(
        self, txn: lmdb.Transaction, prefix: bytes, bounds: _Bounds, write: GroupWrite
    ) -> int:
        size = 0
        if write.delete:
            self._delete_range(txn, prefix, 0, bounds.last_index + 1)
            for db in (self._state, self._base, self._conf):
                txn.delete(prefix, db=db)
            bounds.confs = []
            self._delete_prefixed(txn, self._snap, prefix)
            self._delete_prefixed(txn, self._snapc, prefix)
            bounds.base_index = bounds.base_term = bounds.last_index = bounds.last_term = 0
            bounds.retained_from = 1
            return 0
        if write.snapshot is not None and write.snapshot[0] > bounds.base_index:
            index, term, config, data = write.snapshot
            kept_from = self._put_snapshot(
                txn, prefix, index, term, config, data, write.keep_snapshots, write.keep_from or 0
            )  # fmt: skip
            size += len(data)
            kept_term = self._term_in(txn, prefix, bounds, index)
            if kept_term == term and index <= bounds.last_index:
                starts = [i for i in (write.keep_from, kept_from) if i]
                self._move_base(txn, prefix, bounds, index, term, min(starts) if starts else None)
            else:  # the snapshot replaces the whole log
                self._delete_range(txn, prefix, 0, bounds.last_index + 1)
                bounds.last_index, bounds.last_term = index, term
                bounds.retained_from = index + 1
                bounds.confs = []
                self._move_base(txn, prefix, bounds, index, term, None)
            if write.retained_entries:
                records = write.retained_entries
                assert records[-1][0] == index, "retained entries end at the snapshot"
                for at, entry_term, kind, entry_data in records:
                    txn.put(prefix + _INDEX.pack(at), _pack([entry_term, kind, entry_data]), db=self._log)
                    size += len(entry_data)
                bounds.retained_from = min(bounds.retained_from, records[0][0])
                txn.put(prefix, _pack([index, term, bounds.retained_from]), db=self._base)
        entries = write.entries
        if entries and entries[0][0] <= bounds.base_index:  # already covered by the snapshot
            entries = [e for e in entries if e[0] > bounds.base_index]
        if entries:
            first = entries[0][0]
            assert bounds.base_index < first <= bounds.last_index + 1, (
                f"append at {first} leaves a gap after {bounds.last_index} (base {bounds.base_index})"
            )
            if first <= bounds.last_index:  # a conflicting suffix: the new entries replace it
                self._delete_range(txn, prefix, first, bounds.last_index + 1)
            confs = bounds.confs
            if first == bounds.base_index + 1:
                confs = bounds.confs = []  # the whole log is replaced: its configs are known
            elif confs and confs[-1][0] >= first:
                confs = bounds.confs = [c for c in confs if c[0] < first]
            put = txn.put
            db = self._log
            expected = first
            for index, term, kind, data in entries:
                assert index == expected, "appended entries must be contiguous"
                expected += 1
                if kind == _CONF and confs is not None:
                    confs.append((index, term, data))
                key, value = prefix + _INDEX.pack(index), _pack([term, kind, data])
                # MDB_APPEND fills pages instead of splitting them half-empty (a third less
                # written per entry); it only applies when the key sorts last in the file.
                if not put(key, value, db=db, append=True):
                    put(key, value, db=db)
                size += len(data)
            bounds.last_index, bounds.last_term = expected - 1, entries[-1][1]
        if write.hard_state is not None:
            txn.put(prefix, _pack(list(write.hard_state)), db=self._state)
        if write.compact_upto is not None and write.compact_upto > bounds.base_index:
            upto = write.compact_upto
            assert upto <= bounds.last_index, f"cannot compact to {upto} past the log's end"
            boundary_term = self._term_in(txn, prefix, bounds, upto)
            assert boundary_term is not None
            self._move_base(txn, prefix, bounds, upto, boundary_term, write.keep_from)
        return size

    def _move_base(self, txn: lmdb.Transaction, prefix: bytes, bounds: _Bounds, index: int,
                   term: int, keep_from: int | None) -> None:
        """The core's log now starts after ``index``; entries below ``keep_from`` (all up to
        ``index`` without it) go, the retained ones stay for :meth:`entries`."""
        cut = index + 1 if keep_from is None else min(keep_from, index + 1)
        cut = max(cut, bounds.retained_from)  # what is gone cannot be kept
        self._delete_range(txn, prefix, 0, cut)
        bounds.base_index, bounds.base_term, bounds.retained_from = index, term, cut
        if bounds.confs is not None:  # configs up to the base are the snapshot's business
            bounds.confs = [c for c in bounds.confs if c[0] > index]
        elif index >= bounds.last_index:
            bounds.confs = []
        txn.put(prefix, _pack([index, term, cut]), db=self._base)

    def _put_snapshot(self, txn: lmdb.Transaction, prefix: bytes, index: int, term: int,
                      config: Any, data: bytes, keep: Collection[int], retained_from: int) -> int:
        """Write a snapshot as metadata + chunks; drop older ones not in ``keep``. Returns
        the lowest ``retained_from`` of the kept ones (0: none), whose entries must stay."""
        txn.delete(prefix, db=self._snap)  # a pre-chunking record, if any
        kept_from = 0
        for held in self._held_snapshots(txn, prefix):
            key = prefix + _INDEX.pack(held)
            if held in keep:
                raw = txn.get(key, db=self._snap)
                assert raw is not None
                record = _unpack(bytes(raw))
                start = record[5] if len(record) > 5 else 0
                if start:
                    kept_from = min(kept_from or start, start)
                continue
            txn.delete(key, db=self._snap)
            self._delete_prefixed(txn, self._snapc, key)
        step = self.snapshot_chunk_bytes
        view = memoryview(data)
        for n, offset in enumerate(range(0, len(data), step)):
            txn.put(prefix + _CHUNK.pack(index, n), view[offset : offset + step], db=self._snapc)
        meta = [index, term, config, len(data), step, retained_from]
        txn.put(prefix + _INDEX.pack(index), _pack(meta), db=self._snap)
        return kept_from

    def _held_snapshots(self, txn: lmdb.Transaction, prefix: bytes) -> list[int]:
        """Indexes of the chunked snapshots held for the group, ascending."""
        out: list[int] = []
        cursor = txn.cursor(db=self._snap)
        if not cursor.set_range(prefix + bytes(8)):
            return out
        for raw in cursor.iternext(keys=True, values=False):
            key = bytes(raw)
            if not key.startswith(prefix) or len(key) != len(prefix) + 8:
                break
            out.append(_INDEX.unpack(key[len(prefix) :])[0])
        return out

    def _delete_prefixed(self, txn: lmdb.Transaction, db: Any, prefix: bytes) -> None:
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        while bytes(cursor.key()).startswith(prefix):
            if not cursor.delete():
                break

    def _delete_range(self, txn: lmdb.Transaction, prefix: bytes, lo: int, hi: int) -> None:
        """Delete entries with lo <= index < hi."""
        if lo >= hi:
            return
        end = prefix + _INDEX.pack(hi)
        cursor = txn.cursor(db=self._log)
        if not cursor.set_range(prefix + _INDEX.pack(lo)):
            return
        while bytes(cursor.key()) < end and bytes(cursor.key()).startswith(prefix):
            if not cursor.delete():
                break

    # --- reads ----------------------------------------------------------------------

    def _copy_bounds(self, prefix: bytes, txn: lmdb.Transaction) -> _Bounds:
        b = self._load_bounds(prefix, txn)
        confs = None if b.confs is None else list(b.confs)
        return _Bounds(b.base_index, b.base_term, b.last_index, b.last_term, b.retained_from, confs,
                       b.conf_saved)

    def _load_bounds(self, prefix: bytes, txn: lmdb.Transaction | None = None) -> _Bounds:
        cached = self._bounds.get(prefix)
        if cached is not None:
            return cached
        if txn is None:
            with self._env.begin() as read:
                return self._load_bounds(prefix, read)
        bounds = _Bounds()
        base = txn.get(prefix, db=self._base)
        if base is not None:
            record = _unpack(bytes(base))
            bounds.base_index, bounds.base_term = record[0], record[1]
            bounds.retained_from = record[2] if len(record) > 2 else record[0] + 1
        else:
            bounds.retained_from = 1
        bounds.last_index, bounds.last_term = bounds.base_index, bounds.base_term
        cursor = txn.cursor(db=self._log)
        # The last key of this group: position after the group's range, step back.
        if cursor.set_range(prefix + b"\xff" * 8 + b"\xff"):
            found = cursor.prev()
        else:
            found = cursor.last()
        key = bytes(cursor.key())
        if found and key.startswith(prefix) and len(key) == len(prefix) + 8:
            bounds.last_index = _INDEX.unpack(key[len(prefix) :])[0]
            bounds.last_term = int(_unpack(bytes(cursor.value()))[0])
        confs = txn.get(prefix, db=self._conf)
        if confs is not None:
            bounds.confs = [(i, t, d) for i, t, d in _unpack(bytes(confs))]
            bounds.conf_saved = True
        elif bounds.last_index == bounds.base_index:
            bounds.confs = []  # an empty log has none
        self._bounds[prefix] = bounds
        return bounds

    def _term_in(
        self, txn: lmdb.Transaction, prefix: bytes, bounds: _Bounds, index: int
    ) -> int | None:
        if index == bounds.base_index:
            return bounds.base_term
        if index == bounds.last_index:
            return bounds.last_term
        if index < bounds.base_index or index > bounds.last_index:
            return None
        raw = txn.get(prefix + _INDEX.pack(index), db=self._log)
        return None if raw is None else int(_unpack(bytes(raw))[0])

    def first_index(self, group: GroupId) -> int:
        return self._load_bounds(self._prefix(group)).base_index + 1

    def last_index(self, group: GroupId) -> int:
        return self._load_bounds(self._prefix(group)).last_index

    def config_entries(self, group: GroupId) -> list[ConfRecord] | None:
        """(index, term, data) of every membership-change entry after the log's base, in
        order, without reading the log; None when not known (a log an older version
        wrote): then scan it."""
        confs = self._load_bounds(self._prefix(group)).confs
        return None if confs is None else list(confs)

    def retained_from(self, group: GroupId) -> int:
        """First entry held: ``first_index``, or lower when a snapshot kept older ones."""
        return self._load_bounds(self._prefix(group)).retained_from

    def term(self, group: GroupId, index: int) -> int | None:
        """Term of the entry at ``index``; None when it is compacted away or not there yet."""
        prefix = self._prefix(group)
        bounds = self._load_bounds(prefix)
        if index == bounds.last_index:
            return bounds.last_term
        if index == bounds.base_index:
            return bounds.base_term
        with self._env.begin() as txn:
            return self._term_in(txn, prefix, bounds, index)

    def entries(
        self, group: GroupId, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[LogRecord]:
        """Entries lo <= index < hi; at least one, then at most ``max_bytes`` of data.

        Entries a snapshot covers but ``keep_from`` retained (from :meth:`retained_from`) are
        readable too: the core never asks for them, the state machine may."""
        prefix = self._prefix(group)
        bounds = self._load_bounds(prefix)
        assert bounds.retained_from <= lo and hi <= bounds.last_index + 1, (
            f"entries [{lo}, {hi}) outside the held log [{bounds.retained_from}, {bounds.last_index}]"
        )
        out: list[LogRecord] = []
        total = 0
        end = prefix + _INDEX.pack(hi)
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._log)
            if not cursor.set_range(prefix + _INDEX.pack(lo)):
                return out
            for raw_key, value in cursor:
                key = bytes(raw_key)
                if key >= end:
                    break
                term, kind, data = _unpack(bytes(value))
                total += len(data) + 16  # as warren.raft.storage.MemoryStorage counts
                if out and max_bytes is not None and total > max_bytes:
                    break
                out.append((_INDEX.unpack(key[len(prefix) :])[0], term, kind, data))
        return out

    def hard_state(self, group: GroupId) -> tuple[int, int, int]:
        """(term, vote, commit); zeros for a group that never saved one."""
        with self._env.begin() as txn:
            raw = txn.get(self._prefix(group), db=self._state)
        if raw is None:
            return (0, 0, 0)
        term, vote, commit = _unpack(bytes(raw))
        return (term, vote, commit)

    def snapshot_meta(self, group: GroupId) -> tuple[int, int, Any, int, int] | None:
        """(index, term, config, data size, retained_from) of the latest saved snapshot,
        data unread; retained_from 0: it retains no entries."""
        prefix = self._prefix(group)
        with self._env.begin() as txn:
            held = self._held_snapshots(txn, prefix)
            if held:
                raw = txn.get(prefix + _INDEX.pack(held[-1]), db=self._snap)
                assert raw is not None
                record = _unpack(bytes(raw))
                index, term, config, size = record[:4]
                return (index, term, config, size, record[5] if len(record) > 5 else 0)
            legacy = txn.get(prefix, db=self._snap)
            if legacy is None:
                return None
            index, term, config, data = _unpack(bytes(legacy))
            return (index, term, config, len(data), 0)

    def snapshot_chunk(self, group: GroupId, index: int, offset: int, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` of the data of the held snapshot at ``index``, from ``offset``
        (b"" at or past its end); None when no snapshot at ``index`` is held any more. At an
        offset that is a multiple of ``snapshot_chunk_bytes`` and ``max_bytes`` of at most
        that, one get."""
        prefix = self._prefix(group)
        with self._env.begin(buffers=True) as txn:
            raw = txn.get(prefix + _INDEX.pack(index), db=self._snap)
            if raw is None:
                legacy = txn.get(prefix, db=self._snap)
                if legacy is None:
                    return None
                at, _, _, data = _unpack(bytes(legacy))
                return data[offset : offset + max_bytes] if at == index else None
            _, _, _, size, step = _unpack(bytes(raw))[:5]
            end = min(size, offset + max_bytes)
            parts = []
            while offset < end:
                n, skip = divmod(offset, step)
                chunk = txn.get(prefix + _CHUNK.pack(index, n), db=self._snapc)
                assert chunk is not None, f"snapshot {index} lacks chunk {n}"
                piece = bytes(chunk[skip : skip + end - offset])
                parts.append(piece)
                offset += len(piece)
            return b"".join(parts)

    def snapshot(self, group: GroupId) -> tuple[int, int, Any, bytes] | None:
        """(index, term, config, data) of the latest saved snapshot, its data read whole
        (a state machine's restore at start-up, tools)."""
        meta = self.snapshot_meta(group)
        if meta is None:
            return None
        index, term, config, size, _ = meta
        data = self.snapshot_chunk(group, index, 0, size)
        assert data is not None
        return (index, term, config, data)

    def held_snapshots(self, group: GroupId) -> list[int]:
        """Indexes of every snapshot held for the group (the latest last)."""
        with self._env.begin() as txn:
            return self._held_snapshots(txn, self._prefix(group))

    def groups(self) -> list[GroupId]:
        """Every group with a saved hard state."""
        out: list[GroupId] = []
        with self._env.begin() as txn:
            for key in txn.cursor(db=self._state).iternext(keys=True, values=False):
                name = bytes(key)[2:]
                out.append(int(name[1:]) if name[:1] == b"i" else name[1:].decode())
        return out
