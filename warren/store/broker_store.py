"""Durable store of a single node's broker: definitions and persistent messages, on LMDB.

One LMDB environment per data directory with three sub-databases:

- ``defs``: durable definitions (vhosts, users, permissions, exchanges, queues, bindings,
  policies), one key per entity, msgpack values. Written in the same batch as messages.
- ``msgs``: one row per (durable queue, persistent message): key = queue id (u32 BE) +
  message sequence (u64 BE), so a cursor walks a queue in publish order.
- ``meta``: counters (next queue id) and the format version.

Writes are batched (:class:`WriteBatch`) and committed by :meth:`BrokerStore.commit`: one
write transaction and one fsync per batch, however many publishes it holds (group commit).
The caller runs ``commit`` off the event loop and confirms publishes only after it returns.
"""

from __future__ import annotations

import datetime
import decimal
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from warren.errors import StoreError, UnstorableValue
from warren.store.files import FILE_MODE, private_directory

FORMAT_VERSION = 1
_QUEUE_KEY = struct.Struct(">I")
_MSG_KEY = struct.Struct(">IQ")


def message_key(queue_id: int, seq: int) -> bytes:
    return _MSG_KEY.pack(queue_id, seq)


# AMQP field tables in queue/exchange/binding arguments may hold decimals and timestamps;
# msgpack has no such types, so they travel as extension types.
_EXT_DECIMAL = 1
_EXT_TIMESTAMP = 2


def _pack_extra(value: Any) -> msgpack.ExtType:
    if isinstance(value, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(value).encode())
    if isinstance(value, datetime.datetime):
        return msgpack.ExtType(_EXT_TIMESTAMP, value.isoformat().encode())
    raise TypeError(f"cannot store a {type(value).__name__} in a definition")


def _unpack_extra(code: int, data: bytes) -> Any:
    if code == _EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    if code == _EXT_TIMESTAMP:
        return datetime.datetime.fromisoformat(data.decode())
    return msgpack.ExtType(code, data)


def pack_definition(value: Any) -> bytes:
    """msgpack of a definition; UnstorableValue when it holds what the store cannot encode."""
    try:
        return msgpack.packb(value, use_bin_type=True, default=_pack_extra)
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError) as exc:
        raise UnstorableValue(f"cannot store the definition: {exc}") from exc


def unpack_definition(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, ext_hook=_unpack_extra)


def _definition_key(key: str) -> bytes:
    try:
        return key.encode()
    except UnicodeEncodeError as exc:
        raise UnstorableValue(f"cannot store the name {key!r}: {exc.reason}") from exc


@dataclass(slots=True)
class WriteBatch:
    """Puts and deletes collected during one event-loop turn, committed together."""

    defs_put: dict[bytes, bytes] = field(default_factory=dict)
    defs_delete: set[bytes] = field(default_factory=set)
    msg_ops: dict[bytes, bytes | None] = field(default_factory=dict)  # key -> record; None = delete
    queues_dropped: list[int] = field(default_factory=list)
    sequence_high_water: int = 0

    def __len__(self) -> int:
        return len(self.defs_put) + len(self.defs_delete) + len(self.msg_ops) + len(self.queues_dropped)

    def put_definition(self, key: str, value: Any) -> None:
        self.put_packed_definition(key, pack_definition(value))

    def put_packed_definition(self, key: str, packed: bytes) -> None:
        k = _definition_key(key)
        self.defs_delete.discard(k)
        self.defs_put[k] = packed

    def delete_definition(self, key: str) -> None:
        k = _definition_key(key)
        self.defs_put.pop(k, None)
        self.defs_delete.add(k)

    def put_message(self, queue_id: int, seq: int, record: bytes) -> None:
        self.msg_ops[_MSG_KEY.pack(queue_id, seq)] = record

    def delete_message(self, queue_id: int, seq: int) -> bool:
        """Delete a row; a row put by this same batch is simply never written (returns True)."""
        key = _MSG_KEY.pack(queue_id, seq)
        if self.msg_ops.get(key) is not None:
            del self.msg_ops[key]  # consumed before it reached the disk
            return True
        self.msg_ops[key] = None
        return False

    def drop_queue(self, queue_id: int) -> None:
        self.queues_dropped.append(queue_id)

    def then(self, newer: WriteBatch) -> WriteBatch:
        """This batch followed by ``newer``, as one batch (a failed batch is retried this way).

        Later operations win: a row this batch puts and ``newer`` deletes ends deleted.
        """
        for key in newer.defs_delete:
            self.delete_definition(key.decode())
        for key, value in newer.defs_put.items():
            self.defs_delete.discard(key)
            self.defs_put[key] = value
        self.msg_ops.update(newer.msg_ops)
        self.queues_dropped.extend(newer.queues_dropped)
        self.sequence_high_water = max(self.sequence_high_water, newer.sequence_high_water)
        return self


def encode_message(exchange: str, routing_key: str, properties: bytes, body: bytes) -> bytes:
    return msgpack.packb((exchange, routing_key, properties, body), use_bin_type=True)


def decode_message(record: bytes) -> tuple[str, str, bytes, bytes]:
    exchange, routing_key, properties, body = msgpack.unpackb(record, raw=False)
    return exchange, routing_key, properties, body


class BrokerStore:
    """The LMDB environment of one node. Not thread-safe for writers: one committer at a time."""

    def __init__(self, data_dir: str | os.PathLike[str], map_size: int) -> None:
        path = Path(data_dir)
        private_directory(path, git_ignored=True)
        private_directory(path / "broker.lmdb")  # before LMDB makes it with the file mode
        self._map_size = map_size
        self._open(path)
        self.path = path

    def _open(self, path: Path) -> None:
        map_size = self._map_size
        try:
            # sync=True: every write transaction commit is fsynced (durability before confirms).
            self._env = lmdb.open(
                str(path / "broker.lmdb"),
                mode=FILE_MODE,
                map_size=map_size,
                max_dbs=4,
                sync=True,
                metasync=True,
                writemap=False,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the store in {path}: {exc}") from exc
        self._defs = self._env.open_db(b"defs")
        self._msgs = self._env.open_db(b"msgs")
        self._meta = self._env.open_db(b"meta")
        with self._env.begin(write=True) as txn:
            version = txn.get(b"version", db=self._meta)
            if version is None:
                txn.put(b"version", str(FORMAT_VERSION).encode(), db=self._meta)
            elif int(version) != FORMAT_VERSION:
                raise StoreError(f"store format {int(version)} is not {FORMAT_VERSION}; migrate or use a new --data-dir")

    def close(self) -> None:
        self._env.close()

    def release_pages(self) -> None:
        """Unmap the pages read so far (reopen the environment) after reading the whole store.

        Recovery reads every message through LMDB's memory map; those file pages would stay
        in the node's resident set (RssFile) until the kernel needs the memory. Call only
        when no transaction is open.
        """
        self._env.close()
        self._open(self.path)

    def commit(self, batch: WriteBatch) -> None:
        """Apply the batch in one transaction; returns once it is on disk (fsynced)."""
        try:
            with self._env.begin(write=True) as txn:
                for key in batch.defs_delete:
                    txn.delete(key, db=self._defs)
                for key, value in batch.defs_put.items():
                    txn.put(key, value, db=self._defs)
                for key, record in batch.msg_ops.items():
                    if record is None:
                        txn.delete(key, db=self._msgs)
                    else:
                        txn.put(key, record, db=self._msgs)
                for queue_id in batch.queues_dropped:
                    self._delete_queue_rows(txn, queue_id)
                if batch.sequence_high_water:
                    txn.put(b"seq", str(batch.sequence_high_water).encode(), db=self._meta)
        except lmdb.MapFullError as exc:
            raise StoreError("the store is full: raise lmdb_map_size or free disk space") from exc
        except lmdb.Error as exc:
            raise StoreError(f"store write failed: {exc}") from exc

    def _delete_queue_rows(self, txn: lmdb.Transaction, queue_id: int) -> None:
        prefix = _QUEUE_KEY.pack(queue_id)
        cursor = txn.cursor(db=self._msgs)
        if not cursor.set_range(prefix):
            return
        while cursor.key()[:4] == prefix:
            if not cursor.delete():
                break

    def definitions(self) -> Iterator[tuple[str, Any]]:
        with self._env.begin() as txn:
            for key, value in txn.cursor(db=self._defs):
                yield bytes(key).decode(), unpack_definition(value)

    def messages(self, queue_id: int) -> Iterator[tuple[int, bytes]]:
        """(seq, record) of one queue in publish order."""
        prefix = _QUEUE_KEY.pack(queue_id)
        with self._env.begin(buffers=False) as txn:
            cursor = txn.cursor(db=self._msgs)
            if not cursor.set_range(prefix):
                return
            for key, value in cursor:
                if key[:4] != prefix:
                    break
                yield _MSG_KEY.unpack(key)[1], value

    def load_message(self, queue_id: int, seq: int) -> bytes | None:
        with self._env.begin() as txn:
            return txn.get(message_key(queue_id, seq), db=self._msgs)

    def sequence_high_water(self) -> int:
        """Highest message sequence ever committed, to resume numbering after a restart."""
        with self._env.begin() as txn:
            value = txn.get(b"seq", db=self._meta)
        return int(value) if value is not None else 0

    def stat(self) -> dict[str, int]:
        with self._env.begin() as txn:
            return {"messages": txn.stat(self._msgs)["entries"], "definitions": txn.stat(self._defs)["entries"]}
