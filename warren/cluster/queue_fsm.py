"""A quorum queue's replicated state machine: the broker's queue state under a Raft log.

Every member of a quorum queue's Raft group applies the same entries, in the same order,
to a :class:`QuorumQueueMachine` and so holds the same queue: the same messages, the same
consumers, the same messages checked out to each consumer. Entries carry everything that
could differ between replicas: the leader stamps each with its wall clock (``now_ms``:
expiry, x-death times), consumers and channels are named by plain strings, and the
delivery decision is a pure function of the state (each apply ends by handing ready
messages to consumers with credit, ``QueueState.take_deliveries`` with no outside say), so
every replica knows which consumer holds which message. Only the leader acts on the
deliveries and dead letters an apply returns; the others drop them.

Entries are msgpack lists ``[op, now_ms, ...]``; op codes are append-only::

    ENQUEUE  [1, now, exchange, routing_key, properties, body]   -> accepted (bool)
    PUBLISH  [16, now, [[exchange, routing_key, properties, body], ...], enqueuer, seq]
                                         -> accepted (a bool per message): a node's publishes
                                            to the queue in one loop iteration, one entry;
                                            the same (enqueuer, seq) again is a resend,
                                            answered as the first was and not enqueued twice
    CHECKOUT [2, now, channel, tag, prefetch, priority, exclusive] -> None, or the 403 text
    CANCEL   [3, now, channel, tag]      consumer stops; what it holds stays with its channel
    SETTLE   [4, now, channel, ids]      ack
    RETURN   [5, now, channel, ids]      nack/reject with requeue (delivery count + 1)
    DISCARD  [6, now, channel, ids]      nack/reject without requeue (dead-lettered)
    GET      [7, now, channel, no_ack, request]
                                         -> (msg_id, delivery count, redelivered, left, message)
                                            or None; the same request again (a resend after
                                            a leader change) answers as the first did
    PURGE    [8, now]                    -> messages removed
    DOWN     [9, now, prefix]            every channel whose name starts with prefix is gone:
                                         its consumers cancelled, its messages returned
    TICK     [10, now]                   expire messages at the head
    POLICY   [14, now, name, definition] the policy that applies now ("" and None: none);
                                         a lower max-length drops or dead-letters at once
    RELOCATE [15, now, msg_id, body]     the leader copies an old message's body forward in
                                         the log: it lives at this entry from now on

A *channel* is ``"node#boot#session/channel"`` (so ``"node#"`` names everything of one
node, ``"node#boot#session/"`` one connection). Settlements name the channel that holds
the message and count only when it still does: a resent or late ack cannot touch a
message that has since gone to another consumer.

Policies apply as RabbitMQ applies them to quorum queues: the leader writes the one that
matches into the log when policies change or it takes over, so every replica changes its
arguments at the same entry (``warren.broker.policy``: the lower of a limit wins, the
queue's own dead-letter and overflow arguments win).

Publisher deduplication: an enqueuer (a node's boot, ``"node#boot#"``) numbers its PUBLISH
entries per queue, and sends one again to the new leader when a leadership change leaves
its outcome unknown. The machine remembers, per enqueuer, the highest seq applied and which
of the ``DEDUP_WINDOW`` seqs below it were applied (a bit mask) and their refused places, so
a resend that is already in the log is answered, not enqueued again; a resend older than the
window is refused (a nack: its outcome is unknown). At most ``MAX_ENQUEUERS`` enqueuers are
remembered (the least recently heard one is forgotten).

A message returned more than ``x-delivery-limit`` times (RabbitMQ 4's default: 20; a
negative limit turns it off) is dead-lettered with reason ``delivery_limit`` instead.

The log is the message store. A machine built with a ``log`` (a reader of its group's
entries by index) keeps no bodies in RAM: a message remembers the index of the entry
holding its body (``Message.seq``, a *locator*: the index of its ENQUEUE, PUBLISH or
later RELOCATE times ``BATCH_SLOTS`` plus its place in the entry) and ``body_of`` reads it
back when the leader delivers it again later, a get takes it or it is
dead-lettered (``fill_bodies``). ``keep_from()`` is the oldest index a live message reads,
so a snapshot keeps the log from there on, and ``stale()`` names the live messages whose
entries lie further back than the queue's depth warrants (four times the messages held
plus ``quorum_snapshot_min_entries``), which the leader relocates: one old unacknowledged
message at the head then pins a few entries, not the queue's history. Without a ``log``
(tests, tools) bodies stay in RAM.

Snapshots: ``machine.snapshot()`` is the replica's whole state as msgpack bytes, and
``QuorumQueueMachine.restore(data)`` (a classmethod: a subclass restores as itself) builds
a machine that applies every later entry exactly as the one snapshotted would: the queue's
declaration (arguments as the metadata store encodes them), ``applied``, the channels'
refs in order, the consumers (registration and delivery order, credit used, cancelled
ones still holding messages), ready messages in order and unacknowledged ones in the
order they went out (each with redelivered, deadline, holder), the next message id,
the delivery counts, each channel's last get (request and answer) and each enqueuer's
memory of its publishes. A message is stored
as ``[exchange, routing_key, properties, body, seq, size]``, the encoded property block as
published, and re-derived with ``Message.from_publish``; ``body`` is None where it lives in
the log, ``seq`` its locator (format 2 stored the entry's index; format 1 held every body:
``[exchange, routing_key, properties, body]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Self

import msgpack

from warren.amqp.properties import decode_properties, encode_properties
from warren.broker.message import Message
from warren.broker.policy import args_with_definition
from warren.broker.queue import Consumer, ConsumerRef, DeadLetter, Entry, QueueState
from warren.broker.queue_args import QueueArgs
from warren.errors import AMQPError
from warren.store.broker_store import pack_definition, unpack_definition

DEFAULT_DELIVERY_LIMIT = 20
SNAPSHOT_FORMAT = 3
# A body's locator is entry index * BATCH_SLOTS + its place in the entry (PUBLISH holds many)
BATCH_SLOTS_BITS = 12
BATCH_SLOTS = 1 << BATCH_SLOTS_BITS  # at most this many messages in one PUBLISH entry
LogReader = Callable[[int], "bytes | None"]  # the data of the group's entry at an index, None: not held
DEDUP_WINDOW = 256  # PUBLISH seqs per enqueuer below its highest whose outcome is remembered
MAX_ENQUEUERS = 64
STALE_SPAN_FACTOR = 4  # a message older than this many entries per message held is relocated
_INTERN_LIMIT = 65_536  # distinct names / property blocks shared before the caches start afresh
Got = tuple[int, int, bool, int, Message]  # a get's answer: msg_id, delivery count, redelivered, left, message


class QOp(IntEnum):
    ENQUEUE = 1
    CHECKOUT = 2
    CANCEL = 3
    SETTLE = 4
    RETURN = 5
    DISCARD = 6
    GET = 7
    PURGE = 8
    DOWN = 9
    TICK = 10
    STAT = 11  # a query, never in the log: the leader answers [ready, consumers] from its state
    STATUS = 12  # a query to one member, never in the log: its replica's Raft state
    TRANSFER = 13  # to the leader, never in the log: hand the leadership to member a[0]
    POLICY = 14
    RELOCATE = 15
    PUBLISH = 16


@dataclass(slots=True)
class QDelivery:
    """A message the machine gave to a consumer (the leader sends it to ``channel``)."""

    channel: str
    tag: str
    msg_id: int
    message: Message
    redelivered: bool
    delivery_count: int
    body: bytes | None = None  # the body, when it was at hand (else ``machine.body_of(message)``)


@dataclass(slots=True)
class QResult:
    value: Any = None
    deliveries: list[QDelivery] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def encode(op: QOp, now_ms: int, *fields: Any) -> bytes:
    return msgpack.packb([int(op), now_ms, *fields], use_bin_type=True)


def delivery_limit_of(args: QueueArgs) -> int | None:
    """x-delivery-limit (or the policy's), RabbitMQ 4's default when unset; <0: none."""
    value = DEFAULT_DELIVERY_LIMIT if args.delivery_limit is None else args.delivery_limit
    return None if value < 0 else value


class QuorumQueueMachine:
    """One replica of a quorum queue (see the module docstring)."""

    def __init__(self, name: str, vhost: str, arguments: dict[str, Any], log: LogReader | None = None,
                 min_span: int = 4096) -> None:
        self.queue = _LoggedQueue(name, vhost, durable=True, arguments=arguments)
        self.log = log  # set: bodies live in the log (see the module docstring)
        self.min_span = min_span  # Limits.quorum_snapshot_min_entries
        self._fresh: list[Message] = []  # enqueued by the entry being applied (bodies still held)
        self._read: tuple[int, list[Any]] | None = None  # the entry body_of read last, decoded
        # One object per distinct name, property block and size, shared by the messages
        # (an int object of its own costs a message 28 B)
        self._names: dict[str, str] = {}
        self._blocks: dict[bytes, tuple[bytes, dict[str, Any]]] = {}
        self._sizes: dict[int, int] = {}
        self.delivery_limit = delivery_limit_of(self.queue.args)
        self.applied = 0
        self._refs: dict[str, ConsumerRef] = {}  # channel -> its ref in the queue state
        self._channels: dict[int, str] = {}  # ref id -> channel
        self._tags: dict[str, tuple[str, str]] = {}  # the queue state's tag -> (channel, tag)
        self._counts: dict[int, int] = {}  # msg_id -> returns so far (x-delivery-count)
        self._last_get: dict[str, tuple[int, Got | None]] = {}  # channel -> (request, answer)
        self._next_ref = 1
        self._expiring = 0  # messages enqueued with an expiration or under a message TTL
        self.policy: list[Any] | None = None  # [name, definition] of the policy applied, from the log
        self._enqueuers: dict[str, _Enqueuer] = {}  # least recently heard first

    # ---- reading -------------------------------------------------------------------

    @property
    def needs_ticks(self) -> bool:
        """Could a TICK expire something (the leader proposes one now and then if so)?"""
        return bool(self._expiring and self.queue.messages_ready)

    def consumers(self) -> list[tuple[str, str, Consumer]]:
        """(channel, tag, consumer) of every consumer, in registration order."""
        return [(*self._tags[c.tag], c) for c in self.queue.consumers]

    def channels(self) -> list[str]:
        """Every channel that has consumers here or holds messages of this queue."""
        return list(self._refs)

    def checked_out(self) -> list[QDelivery]:
        """Every unacknowledged message with the channel that holds it (a new leader sends
        these again: the old one may have died before they left). A cancelled consumer's
        messages are there too: they stay with its channel until settled."""
        out = []
        queue = self.queue
        for msg_id, consumer, message in queue.unacked_records():
            if consumer is not None:  # a basic.get's message stays with its channel
                channel, tag = self._where(consumer)
                out.append(QDelivery(channel, tag, msg_id, message, True, self._counts.get(msg_id, 0),
                                     message.body))
        return out

    def holders(self) -> list[tuple[int, str]]:
        """(msg_id, channel) of every unacknowledged message, basic.get's included."""
        out = []
        for msg_id in self.queue.unacked_ids():
            ref = self.queue.unacked_owner(msg_id)
            assert ref is not None  # every message the machine hands out has its channel
            out.append((msg_id, self._channels[ref.session_id]))
        return out

    def _where(self, consumer: Consumer) -> tuple[str, str]:
        """(channel, tag) of a consumer, cancelled or not (its key is "channel tag")."""
        channel = self._channels[consumer.owner.session_id]
        return channel, consumer.tag[len(channel) + 1 :]

    # ---- bodies in the log -----------------------------------------------------------

    def body_of(self, message: Message) -> bytes:
        """A message's body: held, or read from the log entry its locator names."""
        return message.body if message.body is not None else self._body_at(message.seq)

    def _body_at(self, locator: int) -> bytes:
        index, place = locator >> BATCH_SLOTS_BITS, locator & (BATCH_SLOTS - 1)
        read = self._read
        if read is None or read[0] != index:  # deliveries read one PUBLISH's bodies in a row
            data = self.log(index) if self.log is not None else None
            assert data is not None, f"the log entry {index} holding a live message's body is gone"
            read = self._read = (index, msgpack.unpackb(data, raw=False))
        entry = read[1]
        body: bytes = entry[2][place][3] if entry[0] == QOp.PUBLISH else entry[-1]  # (ENQUEUE, RELOCATE: last)
        return body

    def fill_bodies(self, letters: list[DeadLetter]) -> None:
        """Give dead letters whose body is in the log their body (their router needs it)."""
        for letter in letters:
            if letter.message.body is None:
                letter.message.body = self._body_at(letter.origin_seq)

    @property
    def log_span(self) -> int:
        """Entries between this replica's snapshots, and between its leader's looks for
        messages to relocate: a snapshot holds every message's record, so it grows with the
        queue (max(``min_span``, 2 x messages))."""
        return max(self.min_span, 2 * self.queue.messages)

    def keep_from(self) -> int | None:
        """The oldest log index a live message's body is read from (None: none is)."""
        oldest = min((m.seq for m in self.queue.held_messages() if m.body is None), default=None)
        return None if oldest is None else oldest >> BATCH_SLOTS_BITS

    def stale(self, limit: int) -> list[tuple[int, Message]]:
        """(msg_id, message) of up to ``limit`` live messages, oldest first, whose entries lie
        further back than the queue's depth warrants (the leader relocates them)."""
        queue = self.queue
        held = queue.messages
        oldest_allowed = (self.applied - STALE_SPAN_FACTOR * held - self.min_span) << BATCH_SLOTS_BITS
        if self.log is None or oldest_allowed <= 0:
            return []
        ready = [(msg_id, m) for msg_id, m, _ in queue.ready_messages()]
        unacked = [(msg_id, m) for msg_id, _, m in queue.unacked_records()]
        old = [(m.seq, msg_id, m) for msg_id, m in ready + unacked if m.body is None and m.seq < oldest_allowed]
        old.sort(key=lambda item: item[0])
        return [(msg_id, m) for _, msg_id, m in old[:limit]]

    # ---- snapshots -----------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The replica's state as of ``applied`` (see the module docstring)."""
        queue = self.queue
        state = queue.export_state()
        return msgpack.packb({
            "format": SNAPSHOT_FORMAT,
            "queue": [queue.name, queue.vhost, pack_definition(queue.arguments)],
            "applied": self.applied,
            "next_ref": self._next_ref,
            "expiring": self._expiring,
            "policy": self.policy,
            "enqueuers": [[name, e.last, e.mask.to_bytes(DEDUP_WINDOW // 8, "big"), list(e.refused.items())]
                          for name, e in self._enqueuers.items()],  # (msgpack's ints end at 64 bits)
            "refs": [[channel, *ref] for channel, ref in self._refs.items()],
            "tags": [[key, channel, tag] for key, (channel, tag) in self._tags.items()],
            "counts": list(self._counts.items()),
            "gets": [[channel, request, None if got is None else [*got[:4], *_stored(got[4])]]
                     for channel, (request, got) in self._last_get.items()],
            "consumers": state["consumers"],
            "registered": state["registered"],
            "order": state["order"],
            "ready": [[msg_id, redelivered, expires_at, *_stored(message)]
                      for msg_id, message, redelivered, expires_at in state["ready"]],
            "unacked": [[msg_id, redelivered, expires_at, consumer, owner, *_stored(message)]
                        for msg_id, message, redelivered, expires_at, consumer, owner in state["unacked"]],
            "next_msg_id": state["next_msg_id"],
            "had_consumers": state["had_consumers"],
            "idle_since": state["idle_since"],
        }, use_bin_type=True)  # fmt: skip

    @classmethod
    def restore(cls, data: bytes, log: LogReader | None = None, min_span: int = 4096) -> Self:
        """A new machine in the state ``snapshot()`` captured (``log``: as for ``__init__``)."""
        s = msgpack.unpackb(data, raw=False)
        assert s["format"] in (1, 2, SNAPSHOT_FORMAT), f"unknown queue snapshot format {s['format']}"
        name, vhost, arguments = s["queue"]
        machine = cls(name, vhost, unpack_definition(arguments), log, min_span)
        shift = BATCH_SLOTS_BITS if s["format"] == 2 else 0  # format 2's seq: its entry's index

        def _message(exchange: str, routing_key: str, properties: bytes, body: bytes | None, seq: int = 0,
                     size: int | None = None) -> Message:
            return machine._message(exchange, routing_key, properties, body, seq << shift, size)

        machine.applied = s["applied"]
        machine._next_ref = s["next_ref"]
        machine._expiring = s["expiring"]
        if s.get("policy"):
            machine._set_policy(*s["policy"])
        for channel, session_id, number in s["refs"]:
            machine._refs[channel] = ConsumerRef(session_id, number)
            machine._channels[session_id] = channel
        machine._tags = {key: (channel, tag) for key, channel, tag in s["tags"]}
        machine._enqueuers = {name: _Enqueuer(last, int.from_bytes(mask, "big"), dict(refused_by_seq))
                              for name, last, mask, refused_by_seq in s.get("enqueuers", ())}
        machine._counts = {msg_id: count for msg_id, count in s["counts"]}
        machine._last_get = {channel: (request, None if got is None else (*got[:4], _message(*got[4:])))
                             for channel, request, got in s.get("gets", ())}
        machine.queue.import_state({
            "consumers": s["consumers"],
            "registered": s["registered"],
            "order": s["order"],
            "ready": [(msg_id, _message(*stored), redelivered, expires_at)
                      for msg_id, redelivered, expires_at, *stored in s["ready"]],
            "unacked": [(msg_id, _message(*stored), redelivered, expires_at, consumer, owner)
                        for msg_id, redelivered, expires_at, consumer, owner, *stored in s["unacked"]],
            "next_msg_id": s["next_msg_id"],
            "had_consumers": s["had_consumers"],
            "idle_since": s["idle_since"],
        })  # fmt: skip
        return machine

    # ---- applying ------------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> QResult:
        entry = msgpack.unpackb(data, raw=False)
        op, now_ms, *fields = entry
        self.applied = index
        handler = getattr(self, _HANDLERS[QOp(op)])  # by name: a subclass may override one
        result = QResult(handler(now_ms, *fields))
        self._hand_out(now_ms, result)
        if self._fresh:
            for message in self._fresh:
                message.body = None
            self._fresh = []
        return result

    def _hand_out(self, now_ms: int, result: QResult) -> None:
        queue = self.queue
        for delivery in queue.take_deliveries(now_ms):
            channel, tag = self._tags[delivery.consumer.tag]
            message = delivery.message
            result.deliveries.append(QDelivery(channel, tag, delivery.msg_id, message, delivery.redelivered,
                                               self._counts.get(delivery.msg_id, 0), message.body))
        result.dead_letters = queue.take_dead_letters()
        self._forget_settled()

    def _forget_settled(self) -> None:
        counts = self._counts
        if counts and len(counts) > 2 * self.queue.messages:  # returned messages since settled
            live = set(self.queue.unacked_ids()) | {m for m, _, _ in self.queue.ready_messages()}
            self._counts = {m: n for m, n in counts.items() if m in live}
        if not self.queue.messages:
            self._expiring = 0

    def _ref(self, channel: str) -> ConsumerRef:
        ref = self._refs.get(channel)
        if ref is None:
            ref = ConsumerRef(self._next_ref, 0)
            self._next_ref += 1
            self._refs[channel] = ref
            self._channels[ref.session_id] = channel
        return ref

    def _held_by(self, channel: str, ids: list[int]) -> list[int]:
        ref = self._refs.get(channel)
        if ref is None:
            return []
        owner = self.queue.unacked_owner
        return [i for i in dict.fromkeys(ids) if owner(i) == ref]  # each id once

    def _enqueue(self, now_ms: int, exchange: str, routing_key: str, properties: bytes, body: bytes,
                 place: int = 0) -> bool:
        message = self._message(exchange, routing_key, properties, body, self.applied << BATCH_SLOTS_BITS | place)
        accepted = self.queue.enqueue(message, now_ms).accepted
        if accepted and (message.expiration_ms is not None or self.queue.args.message_ttl is not None):
            self._expiring += 1
        if self.log is not None:
            self._fresh.append(message)  # its body leaves RAM once this apply has handed it out
        return accepted

    def _publish(self, now_ms: int, messages: list[list[Any]], enqueuer: str = "", seq: int = 0) -> list[bool]:
        if not enqueuer:
            return self._publish_all(now_ms, messages)
        known = self._enqueuers.pop(enqueuer, None) or _Enqueuer()
        self._enqueuers[enqueuer] = known  # (to the end: the most recently heard)
        if len(self._enqueuers) > MAX_ENQUEUERS:
            del self._enqueuers[next(iter(self._enqueuers))]
        seen = known.outcome(seq, len(messages))
        if seen is not None:
            return seen
        accepted = self._publish_all(now_ms, messages)
        known.record(seq, accepted)
        return accepted

    def _publish_all(self, now_ms: int, messages: list[list[Any]]) -> list[bool]:
        accepted = []
        for place, (exchange, routing_key, properties, body) in enumerate(messages):
            # (a proposer never sends more than BATCH_SLOTS: the rest would be refused)
            accepted.append(place < BATCH_SLOTS and self._enqueue(now_ms, exchange, routing_key, properties, body,
                                                                  place))
        return accepted

    def _relocate(self, now_ms: int, msg_id: int, body: bytes) -> None:
        message = self.queue.message_of(msg_id)
        if message is not None and message.body is None:  # (else settled meanwhile, or held in RAM)
            message.seq = self.applied << BATCH_SLOTS_BITS

    def _message(self, exchange: str, routing_key: str, properties: bytes, body: bytes | None,
                 seq: int = 0, size: int | None = None) -> Message:
        names, blocks, sizes = self._names, self._blocks, self._sizes
        if len(names) > _INTERN_LIMIT or len(blocks) > _INTERN_LIMIT or len(sizes) > _INTERN_LIMIT:
            names.clear()
            blocks.clear()
            sizes.clear()
        shared = blocks.get(properties)
        if shared is None:
            shared = blocks[properties] = (properties, decode_properties(properties))
        exchange, routing_key = names.setdefault(exchange, exchange), names.setdefault(routing_key, routing_key)
        message = _Queued.from_publish(exchange, routing_key, b"" if body is None else body, *shared)
        message.body, message.seq = body, seq
        length = len(body) if body is not None else size or 0
        message.size = sizes.setdefault(length, length)
        return message

    def _checkout(self, now_ms: int, channel: str, tag: str, prefetch: int, priority: int,
                  exclusive: bool) -> str | None:
        key = f"{channel} {tag}"
        if key in self._tags:
            return None  # a resent checkout: the consumer is there already
        try:
            self.queue.add_consumer(Consumer(key, self._ref(channel), prefetch, priority, exclusive))
        except AMQPError as error:
            return error.text
        self._tags[key] = (channel, tag)
        return None

    def _cancel(self, now_ms: int, channel: str, tag: str) -> None:
        key = f"{channel} {tag}"
        if self.queue.cancel_consumer(key) is not None:
            del self._tags[key]

    def _settle(self, now_ms: int, channel: str, ids: list[int]) -> int:
        held = self._held_by(channel, ids)
        for msg_id in held:
            self._counts.pop(msg_id, None)
        return self.queue.ack(held)

    def _return(self, now_ms: int, channel: str, ids: list[int]) -> int:
        return self._return_held(now_ms, self._held_by(channel, ids))

    def _return_held(self, now_ms: int, held: list[int]) -> int:
        back: list[int] = []
        poisoned: list[int] = []
        limit = self.delivery_limit
        for msg_id in held:
            count = self._counts.get(msg_id, 0) + 1
            self._counts[msg_id] = count
            (poisoned if limit is not None and count > limit else back).append(msg_id)
        if poisoned:
            self.queue.reject(poisoned, now_ms, "delivery_limit")
            for msg_id in poisoned:
                del self._counts[msg_id]
        return self.queue.requeue(back)

    def _discard(self, now_ms: int, channel: str, ids: list[int]) -> int:
        held = self._held_by(channel, ids)
        for msg_id in held:
            self._counts.pop(msg_id, None)
        return self.queue.reject(held, now_ms)

    def _get(self, now_ms: int, channel: str, no_ack: bool, request: int = 0) -> Got | None:
        last = self._last_get.get(channel)
        if request and last is not None and last[0] == request:
            return last[1]  # a resend: taking another message would lose the first
        got = self.queue.get(now_ms, no_ack, None if no_ack else self._ref(channel))
        answer = None
        if got is not None:
            count = self._counts.pop(got.msg_id, 0) if no_ack else self._counts.get(got.msg_id, 0)
            message = got.message
            if message.body is None:  # the answer (kept for a resend) holds its body
                message = replace(message, body=self.body_of(message))
            answer = got.msg_id, count, got.redelivered, got.message_count, message
        if request:
            self._last_get[channel] = (request, answer)
        return answer

    def _purge(self, now_ms: int) -> int:
        return self.queue.purge()

    def _down(self, now_ms: int, prefix: str) -> int:
        returned = 0
        for channel, ref in list(self._refs.items()):
            if not channel.startswith(prefix):
                continue
            for key, (owner, _) in list(self._tags.items()):
                if owner == channel:
                    self.queue.cancel_consumer(key)
                    del self._tags[key]
            returned += self._return_held(now_ms, self.queue.unacked_of(ref))
            self._last_get.pop(channel, None)
            del self._refs[channel]
            del self._channels[ref.session_id]
        return returned

    def _tick(self, now_ms: int) -> int:
        return self.queue.expire(now_ms)

    def _policy(self, now_ms: int, name: str, definition: dict[str, Any] | None) -> None:
        # a lower max-length applies now; a message TTL to what is published from now on (as
        # for a classic queue: a message's deadline is stamped when it is enqueued)
        self.queue.apply_args(self._set_policy(name, definition), now_ms)

    def _set_policy(self, name: str, definition: dict[str, Any] | None) -> QueueArgs:
        self.policy = [name, definition] if name else None
        args = args_with_definition(self.queue.declared_args, definition if name else None)
        self.queue.args = args
        self.queue.policy = name or None
        self.delivery_limit = delivery_limit_of(args)
        return args


class _Queued(Message):
    """A replica's message, which is also its queue entry (a replica's messages are its own,
    never shared by queues): one object per queued message, not two."""

    __slots__ = ("expires_at", "msg_id", "redelivered")
    expires_at: int | None
    msg_id: int
    redelivered: bool

    @property
    def message(self) -> Message:
        return self


class _LoggedQueue(QueueState):
    """The replica's queue: its messages are their own entries, and a message's id is its
    locator when it was enqueued (increasing in log order, the same on every replica, and
    the same int object as its ``seq`` until a RELOCATE moves it). Ids restored from an
    older snapshot are a counter's, all below any locator since."""

    def new_id(self, message: Message) -> int:
        return message.seq

    def new_entry(self, msg_id: int, message: Message, expires_at: int | None) -> Entry:
        assert isinstance(message, _Queued), "a replica's messages come from its _message"
        message.msg_id, message.expires_at, message.redelivered = msg_id, expires_at, False
        return message


@dataclass(slots=True)
class _Enqueuer:
    """What one enqueuer's PUBLISH entries did (see "Publisher deduplication" above)."""

    last: int = 0  # the highest seq applied
    mask: int = 0  # bit k: seq last - k was applied (k < DEDUP_WINDOW)
    refused: dict[int, list[int]] = field(default_factory=dict)  # seq -> places refused, in the window

    def outcome(self, seq: int, count: int) -> list[bool] | None:
        """The answer a resend of ``seq`` gets, or None: it is new, apply it."""
        behind = self.last - seq
        if behind < 0 or (behind < DEDUP_WINDOW and not self.mask >> behind & 1):
            return None
        if behind >= DEDUP_WINDOW:
            return [False] * count  # too old to tell: refused (a nack, the outcome is unknown)
        refused = self.refused.get(seq, ())
        return [place not in refused for place in range(count)]

    def record(self, seq: int, accepted: list[bool]) -> None:
        if seq > self.last:
            self.mask = (self.mask << (seq - self.last) | 1) & ((1 << DEDUP_WINDOW) - 1)
            self.last = seq
            if self.refused:
                self.refused = {s: r for s, r in self.refused.items() if self.last - s < DEDUP_WINDOW}
        else:
            self.mask |= 1 << (self.last - seq)
        if not all(accepted):
            self.refused[seq] = [place for place, ok in enumerate(accepted) if not ok]


def _stored(message: Message) -> list[Any]:
    properties = message.properties
    if properties is None:  # never for a published message; a changed one re-encodes
        properties = encode_properties(message.props)
    return [message.exchange, message.routing_key, properties, message.body, message.seq, message.size]


_HANDLERS: dict[QOp, str] = {
    QOp.ENQUEUE: "_enqueue",
    QOp.CHECKOUT: "_checkout",
    QOp.CANCEL: "_cancel",
    QOp.SETTLE: "_settle",
    QOp.RETURN: "_return",
    QOp.DISCARD: "_discard",
    QOp.GET: "_get",
    QOp.PURGE: "_purge",
    QOp.DOWN: "_down",
    QOp.TICK: "_tick",
    QOp.POLICY: "_policy",
    QOp.RELOCATE: "_relocate",
    QOp.PUBLISH: "_publish",
}
LOGGED_OPS = tuple(_HANDLERS)  # the ops an entry may carry (STAT, STATUS, TRANSFER are not)
