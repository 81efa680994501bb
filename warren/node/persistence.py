"""What the node writes to the store, and how it reads it back after a restart.

- Definitions: the durable part of each vhost (exchanges, queues, bindings, policies) and the
  users and permissions, serialised when they change, once per batch however many changes.
- Messages: every persistent message that enters a durable queue is written; every one that
  leaves it (ack, drop, expiry, dead-lettering, purge) is deleted. Durable queues keep a
  journal of those moves (see ``QueueState.journal``) that this module drains.
- Publisher confirms wait for the batch holding their writes (group commit), or, as RabbitMQ
  does, go out as soon as the message has left every durable queue it entered before its
  batch reached the disk (consumed and acked, dropped, expired, purged): its rows cancel out
  of the batch (never written) and there is nothing left to make durable. Confirms still
  leave in publish order (the channel holds an early one behind earlier unconfirmed ones).

Recovery re-declares the definitions, then re-enqueues each durable queue's messages in
publish order, flagged redelivered: after a crash Warren cannot tell which of them reached
a consumer, and the flag is the AMQP hint "this may have been seen before".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from warren.amqp.connection import decode_properties
from warren.session.methods import encoded_properties
from warren.store.broker_store import (
    BrokerStore,
    WriteBatch,
    decode_message,
    encode_message,
    pack_definition,
)

if TYPE_CHECKING:
    from warren.broker.auth import Broker

log = logging.getLogger(__name__)


@dataclass
class PendingBatch:
    writes: WriteBatch
    waiters: dict[tuple[Any, int, int], None] = field(default_factory=dict)  # (session, channel, seq), in order
    evictions: list[Any] = field(default_factory=list)  # messages whose bodies leave RAM after commit


class Persistence:
    def __init__(self, store: BrokerStore, wakeup: Callable[[], None]) -> None:
        self.store = store
        self._wakeup = wakeup
        self._batch = WriteBatch()
        self._waiters: dict[tuple[Any, int, int], None] = {}
        self._evictions: list[Any] = []
        # Rows put by the current (not yet taken) batch, per message seq, and the confirms
        # waiting on those messages: [messages with rows left, waiter]. When every message a
        # confirm waits on has cancelled out, the confirm goes out at once.
        self._unwritten_rows: dict[int, int] = {}
        self._early_waiters: dict[int, list[list[Any]]] = {}
        self._recent_puts: list[int] = []  # seqs put since the last after_commit
        self._next_seq = store.sequence_high_water() + 1
        self._next_queue_id = 1
        self._broker: Broker | None = None
        self._node: Any = None
        # writes of a batch whose commit failed: they go again, ahead of the next batch
        self._failed: PendingBatch | None = None
        self._written: dict[str, bytes] = {}  # definition key -> encoding last committed
        self._written_versions: dict[str, int] = {}  # vhost key -> its durable_version then
        self._written_queue_id = 0

    def attach(self, node: Any) -> None:
        self._node = node

    # ---- writes ---------------------------------------------------------------------

    def _changed(self) -> None:
        self._wakeup()

    def request_commit(self) -> None:
        """Wake the committer (after a failed write, so that it starts probing the disk)."""
        self._wakeup()

    def write_definitions(self, vhosts: Iterable[Any], users: bool = False) -> None:
        """Write what changed in these vhosts' durable definitions and in the users, now.

        Called before the client hears declare-ok (or the HTTP answer goes out). Only keys
        whose encoding differs from what was last written go to the disk, so a transient
        declare costs no fsync. Definitions are committed synchronously (one small fsync)
        and never ride in the asynchronous message batches, so the two cannot reorder.
        Raises UnstorableValue or StoreError with nothing written: the caller undoes the
        change in memory (see ``Node.changing_definitions``).
        """
        batch = WriteBatch()
        written: dict[str, bytes | None] = {}
        present = self._broker_vhosts()
        versions: dict[str, int] = {}
        for vhost in vhosts:
            key = f"vhost/{vhost.name}"
            live = present.get(vhost.name) is vhost
            if live and self._written_versions.get(key) == vhost.durable_version:
                continue  # nothing durable changed since the last write (a transient declare)
            packed = self._pack_vhost(vhost) if live else None
            if live:
                versions[key] = vhost.durable_version
            if packed == self._written.get(key):
                if live:
                    self._written_versions[key] = versions.pop(key)  # on disk as it is
                continue
            written[key] = packed
            if packed is None:
                batch.delete_definition(key)
            else:
                batch.put_packed_definition(key, packed)
        if users and self._broker is not None:
            packed_users = pack_definition(self._broker.export_users())
            if packed_users != self._written.get("users"):
                written["users"] = packed_users
                batch.put_packed_definition("users", packed_users)
        if self._next_queue_id != self._written_queue_id:
            batch.put_definition("next_queue_id", self._next_queue_id)
        if not len(batch):
            return
        self.store.commit(batch)
        self._written_queue_id = self._next_queue_id
        self._written_versions.update(versions)
        for key, packed in written.items():
            if packed is None:
                self._written.pop(key, None)
            else:
                self._written[key] = packed

    def _pack_vhost(self, vhost: Any) -> bytes:
        for queue in vhost.queues.values():
            if queue.durable and not queue.store_id:
                # ids are never reused: rows of a deleted queue may still be in flight
                queue.store_id = self._next_queue_id
                self._next_queue_id += 1
                queue.journal = []
        return pack_definition(vhost.export_durable())

    def _broker_vhosts(self) -> dict[str, Any]:
        return self._broker.vhosts if self._broker is not None else {}

    def queue_deleted(self, vhost: Any, queue: Any) -> None:
        """Forget a deleted queue's rows (in the next batch) once its definition is gone."""
        store_id = queue.store_id
        if store_id:
            self._batch.drop_queue(store_id)
            queue.journal = None
            self._changed()

    def drain(self, queue: Any) -> None:
        """Move a durable queue's journaled message moves into the current batch."""
        journal = queue.journal
        if not journal:
            return
        batch = self._batch
        queue_id = queue.store_id
        for added, message in journal:
            if not message.persistent:
                continue
            if added:
                if message.body is None:
                    # never expected: evicted messages cannot be dead-lettered (see may_evict)
                    log.error("message %d reached queue %r without its body", message.seq, queue.name)
                    continue
                seq = message.seq
                if not seq:
                    seq = message.seq = self._next_seq
                    self._next_seq += 1
                batch.put_message(queue_id, seq, encode_message(
                    message.exchange, message.routing_key, encoded_properties(message), message.body))
                self._unwritten_rows[seq] = self._unwritten_rows.get(seq, 0) + 1
                self._recent_puts.append(seq)
            elif message.seq and batch.delete_message(queue_id, message.seq):
                self._row_cancelled(message.seq)
        journal.clear()
        self._changed()

    def _row_cancelled(self, seq: int) -> None:
        left = self._unwritten_rows.get(seq, 0) - 1
        if left > 0:
            self._unwritten_rows[seq] = left
            return
        self._unwritten_rows.pop(seq, None)
        for state in self._early_waiters.pop(seq, ()):
            state[0] -= 1
            if state[0] == 0:
                waiter = state[1]
                del self._waiters[waiter]  # confirmed now, not again after the commit
                session, channel, publish_seq = waiter
                session.store_committed(channel, publish_seq)  # nothing of it is left to write

    def journal_publish(self, queues: list[Any], message: Any) -> bool:
        """A message just enqueued into ``queues``: move its rows into the current batch now
        (its confirm, registered next with ``after_commit``, must ride in the same batch)
        and let its body leave RAM after the commit where it may. True when it has rows to
        make durable (persistent, in a durable queue): then its publisher waits for them."""
        if not message.persistent or not any(q.journal is not None for q in queues):
            return False
        for queue in queues:
            self.drain(queue)
        if self.may_evict(queues):
            self.evict_after_commit(message)
        return True

    @staticmethod
    def may_evict(queues: list[Any]) -> bool:
        """True when a persistent message in these queues can live only in the store.

        Its body is read back on delivery. Only when every queue is durable (so every copy
        has a row) and none can dead-letter (a dead-lettered copy needs the body in RAM).
        """
        for queue in queues:
            args = queue.args
            if queue.journal is None or args.dead_letter_exchange is not None or args.overflow == "reject-publish-dlx":
                return False
        return True

    def evict_after_commit(self, message: Any) -> None:
        self._evictions.append(message)

    def ensure_bodies(self, queue: Any) -> None:
        """Bring bodies back into RAM for a queue that may now dead-letter (a policy changed)."""
        if not queue.store_id:
            return
        for message in queue.held_messages():
            if message.body is None:
                message.body = self.load_body(queue, message)

    def after_commit(self, session: Any, channel: int, seq: int) -> None:
        """Confirm publish ``seq`` once its message's rows (drained just before) are durable."""
        waiter = (session, channel, seq)
        self._waiters[waiter] = None
        # Its message is among the messages put since the previous confirm (usually it is the
        # only one); waiting for all of them to cancel out is safe in every case.
        seqs = set(self._recent_puts)
        self._recent_puts.clear()
        if seqs:
            state: list[Any] = [len(seqs), waiter]
            for put_seq in seqs:
                self._early_waiters.setdefault(put_seq, []).append(state)

    def load_body(self, queue: Any, message: Any) -> bytes:
        record = self.store.load_message(queue.store_id, message.seq)
        if record is None:
            log.error("stored body of message %d in queue %r is missing", message.seq, queue.name)
            return b""
        return decode_message(record)[3]

    # ---- batches ---------------------------------------------------------------------

    @property
    def retry_pending(self) -> bool:
        return self._failed is not None

    def take_batch(self, probe: bool = False) -> PendingBatch | None:
        """The writes to commit next; with ``probe``, a small real write even when idle (to
        find out whether a failing disk accepts writes again)."""
        if not len(self._batch) and not self._waiters and self._failed is None:
            if not probe:
                return None
            self._batch.put_definition("next_queue_id", self._next_queue_id)
        self._batch.sequence_high_water = self._next_seq - 1
        pending = PendingBatch(self._batch, self._waiters, self._evictions)
        if self._failed is not None:
            failed, self._failed = self._failed, None
            pending = PendingBatch(failed.writes.then(pending.writes), pending.waiters,
                                   failed.evictions + pending.evictions)
        self._batch, self._waiters, self._evictions = WriteBatch(), {}, []
        # rows of the taken batch are on their way to the disk: they no longer cancel out
        self._unwritten_rows, self._early_waiters, self._recent_puts = {}, {}, []
        return pending

    def committed(self, pending: PendingBatch) -> None:
        for message in pending.evictions:
            message.body = None
        for session, channel, seq in pending.waiters:
            session.store_committed(channel, seq)

    def commit_failed(self, pending: PendingBatch) -> None:
        """Nack exactly the publishes the batch covered; keep its writes for the next commit.

        The messages stay in their queues (a nack means "may or may not be stored"); their
        rows are retried ahead of later writes, so memory and disk agree again once the disk
        accepts writes, and bodies leave RAM only after the commit that stores them.
        """
        waiters, pending.waiters = pending.waiters, {}
        self._failed = pending
        for session, channel, seq in waiters:
            session.store_failed(channel, seq)

    # ---- recovery --------------------------------------------------------------------

    def recover(self, broker: Broker) -> None:
        """Restore a standalone node: its definitions from the store, then its messages."""
        self._broker = broker
        vhost_defs: dict[str, Any] = {}
        has_users = False
        for key, value in self.store.definitions():
            if key == "users":
                broker.import_users(value)
                has_users = True
            elif key == "next_queue_id":
                self._next_queue_id = max(self._next_queue_id, int(value))
            elif key.startswith("vhost/"):
                vhost_defs[key[len("vhost/"):]] = value
        for name, definition in vhost_defs.items():
            broker.restore_vhost(name, definition)
        self.recover_messages(broker)
        # what is on disk now, so the next change writes only the keys it alters
        for name in vhost_defs:
            self._written[f"vhost/{name}"] = pack_definition(broker.vhosts[name].export_durable())
        if has_users:
            self._written["users"] = pack_definition(broker.export_users())
        self._written_queue_id = self._next_queue_id

    def has_definitions(self) -> bool:
        """True when the store holds a standalone node's definitions."""
        return any(key != "next_queue_id" for key, _ in self.store.definitions())

    def recover_messages(self, broker: Broker) -> None:
        """Re-enqueue every durable queue's stored messages, in publish order, flagged
        redelivered (a clustered node calls this once the metadata group has restored the
        definitions; its queues' store ids come from there)."""
        self._broker = broker
        restored = 0
        # One object per distinct name and property block, shared by the restored messages
        # (as on the publish path), not one per message.
        names: dict[str, str] = {}
        blocks: dict[bytes, tuple[bytes, dict[str, Any]]] = {}
        for vhost in broker.vhosts.values():
            for queue in vhost.queues.values():
                if not queue.durable or not queue.store_id:
                    continue
                self._next_queue_id = max(self._next_queue_id, queue.store_id + 1)
                queue.journal = []  # durable from here on (may_evict looks for the journal)
                # bodies that may live only in the store are never held, even during recovery
                evict = self.may_evict([queue])
                for seq, record in self.store.messages(queue.store_id):
                    exchange, routing_key, properties, body = decode_message(record)
                    exchange = names.setdefault(exchange, exchange)
                    routing_key = names.setdefault(routing_key, routing_key)
                    shared = blocks.get(properties)
                    if shared is None:
                        shared = blocks[properties] = (properties, decode_properties(properties))
                    queue.restore_message(exchange, routing_key, shared[0], None if evict else body, seq,
                                          shared[1], len(body))
                    restored += 1
                    if len(names) > 65536 or len(blocks) > 65536:
                        names.clear()
                        blocks.clear()
        if restored:
            log.info("recovered %d persistent messages", restored)
