"""``QueueState``: one queue as a deterministic state machine (no clock, no I/O).

The same commands in the same order give the same result, so the machine can be driven
by a client session today and applied from a Raft log (quorum queues) later. Time arrives
as ``now_ms``.

Commands::

    q = QueueState(name, vhost, durable, exclusive, auto_delete, arguments, owner)
    q.enqueue(message, now_ms) -> EnqueueOutcome(accepted, dropped)
    q.add_consumer(Consumer(tag, ConsumerRef(session_id, channel), prefetch, priority, exclusive, no_ack))
    q.cancel_consumer(tag) -> Consumer | None
    q.candidate_refs() -> list[ConsumerRef]      # whose channels the caller judges first
    q.take_deliveries(now_ms, eligible=None, limit=None) -> list[Delivery]
    q.ack(msg_ids); q.requeue(msg_ids); q.reject(msg_ids, now_ms)
    q.get(now_ms, no_ack, owner=None) -> GetResult | None
    q.purge() -> int;  q.expire(now_ms) -> int;  q.release_owner(ref) -> int
    q.take_dead_letters() -> list[DeadLetter]   # the vhost routes them to the DLX
    q.export_state() -> dict; q.import_state(state)   # a replicated queue's snapshot

Counts: ``messages_ready``, ``messages_unacknowledged``, ``messages``, ``message_bytes``,
``message_bytes_ready``, ``consumer_count``.

Semantics follow RabbitMQ's classic queues: consumers of higher priority first and
round-robin among equals; per-consumer prefetch (0 = unlimited); single active consumer
(the earliest registered consumer gets everything); message priorities (x-max-priority);
requeued messages go back to their original position, flagged redelivered; expired
messages are removed only at the head (of each priority level), as RabbitMQ does; max-length
counts ready messages only. Dead-lettered copies (reason ``rejected``/``expired``/``maxlen``)
collect in ``dead_letters`` until the vhost takes them.

Commands and their results are plain data: a consumer is known by a ``ConsumerRef`` (ints),
never by a session object, and the delivery decision takes the set of refs whose channels
may receive now instead of calling back into the session, so the same command can be a
Raft log entry, a peer message or a simulator input. (The exclusive owner of a queue,
``QueueState.owner``, is a separate matter and still the owning connection.)

Persistence hooks: ``journal`` (None unless the node keeps one) receives ``(True, message)``
when a message enters and ``(False, message)`` when it leaves for good; ``store_id`` is the
store's id for the queue.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Container, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from warren.broker.message import Message, dead_lettered_copy
from warren.broker.queue_args import QueueArgs, parse_queue_arguments, resource_name
from warren.errors import access_refused


class ConsumerRef(NamedTuple):
    """Where a consumer's deliveries go: a session (node-local id) and its channel number.

    A tuple of ints: hashes and compares in C on the delivery path, and encodes as it is
    (msgpack: a two-element array). The node resolves it with ``node.sessions[session_id]``.
    """

    session_id: int
    channel: int


# The management API's basic.get (an HTTP request, no channel); sessions are numbered from 1.
MANAGEMENT_REF = ConsumerRef(0, 0)


@dataclass(slots=True, eq=False)
class Consumer:
    tag: str
    owner: ConsumerRef  # the channel it delivers on; plain data, never a session object
    prefetch: int = 0  # 0 = unlimited
    priority: int = 0
    exclusive: bool = False
    no_ack: bool = False
    unacked: int = 0  # maintained by the queue


@dataclass(slots=True)
class Delivery:
    """One message assigned to a consumer (its ``owner`` says where to send it). The
    caller knows which queue it asked."""

    consumer: Consumer
    msg_id: int
    message: Message
    redelivered: bool


@dataclass(slots=True)
class GetResult:
    msg_id: int
    message: Message
    redelivered: bool
    message_count: int  # ready messages left after this one


@dataclass(slots=True)
class DeadLetter:
    message: Message  # the rewritten copy, x-death included
    reason: str  # "rejected" | "expired" | "maxlen"
    queue: str
    exchange: str  # the DLX to publish to
    origin_seq: int = 0  # the dead message's ``seq`` (a quorum queue reads its body from there)


@dataclass(slots=True)
class EnqueueOutcome:
    accepted: bool  # False: refused by x-overflow reject-publish(-dlx)
    dropped: int = 0  # messages dropped from the head by drop-head


class Entry(Protocol):
    """A queued message: its id, deadline and redelivered flag."""

    msg_id: int
    expires_at: int | None
    redelivered: bool

    @property
    def message(self) -> Message: ...


class _Entry:
    __slots__ = ("expires_at", "message", "msg_id", "redelivered")

    def __init__(self, msg_id: int, message: Message, expires_at: int | None) -> None:
        self.msg_id = msg_id
        self.message = message
        self.expires_at = expires_at
        self.redelivered = False


def _msg_id(entry: Entry) -> int:
    return entry.msg_id


class _Unacked:
    __slots__ = ("consumer", "entry", "owner")

    def __init__(self, entry: Entry, consumer: Consumer | None, owner: ConsumerRef | None) -> None:
        self.entry = entry
        self.consumer = consumer
        self.owner = owner


class _Ready:
    """Ready messages in msg_id order, one deque per priority level (highest served first)."""

    __slots__ = ("count", "levels", "max_level")

    def __init__(self, max_priority: int | None) -> None:
        self.max_level = max_priority or 0
        self.levels: list[deque[Entry]] = [deque() for _ in range(self.max_level + 1)]
        self.count = 0

    def level_of(self, message: Message) -> int:
        if not self.max_level or not message.priority:
            return 0
        return max(0, min(message.priority, self.max_level))

    def append(self, entry: Entry) -> None:
        self.levels[self.level_of(entry.message)].append(entry)
        self.count += 1

    def head_level(self) -> deque[Entry] | None:
        for level in reversed(self.levels):
            if level:
                return level
        return None

    def oldest_level(self) -> deque[Entry] | None:
        """The level whose head is the oldest message (drop-head drops it)."""
        oldest = None
        for level in self.levels:
            if level and (oldest is None or level[0].msg_id < oldest[0].msg_id):
                oldest = level
        return oldest

    def put_back(self, entries: list[Entry]) -> None:
        """Return entries to their original positions (by msg_id)."""
        by_level: dict[int, list[Entry]] = {}
        for entry in entries:
            by_level.setdefault(self.level_of(entry.message), []).append(entry)
        for index, group in by_level.items():
            group.sort(key=lambda e: e.msg_id)
            level = self.levels[index]
            if not level or group[-1].msg_id < level[0].msg_id:
                level.extendleft(reversed(group))
            else:
                merged = sorted([*level, *group], key=lambda e: e.msg_id)
                level.clear()
                level.extend(merged)
            self.count += len(group)

    def clear(self) -> list[Entry]:
        removed = [entry for level in self.levels for entry in level]
        for level in self.levels:
            level.clear()
        self.count = 0
        return removed

    def __iter__(self) -> Iterator[Entry]:
        for level in reversed(self.levels):
            yield from level


class QueueState:
    def __init__(
        self,
        name: str,
        vhost: str = "/",
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        owner: Hashable | None = None,
        effective_args: QueueArgs | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.declared_args = parse_queue_arguments(self.arguments, name, vhost)
        self.args = effective_args or self.declared_args
        self.owner = owner  # the exclusive owner (a connection), else None
        self.policy: str | None = None  # name of the applied policy
        self.deleted = False
        self.had_consumers = False
        self.journal: list[tuple[bool, Message]] | None = None
        self.store_id = 0
        self.home = ""  # the node it lives on, in a cluster ("" on a standalone node)
        self.members: list[str] = []  # a quorum queue's members (preferred leader first)
        self.group = 0  # a quorum queue's Raft group (its declare's index in the metadata log)
        self.genesis: list[int] = []  # its group's first voters (member ids, as at the declare)
        self.target_size = 0  # members it keeps (0: x-quorum-initial-group-size); set by commands
        self.dead_letters: list[DeadLetter] = []
        self._ready = _Ready(self.args.max_priority)
        self._unacked: dict[int, _Unacked] = {}
        self._consumers: list[Consumer] = []  # priority desc; round-robin order within a priority
        self._registered: list[Consumer] = []  # registration order (single active consumer)
        self._next_msg_id = 1
        self._ready_bytes = 0
        self._unacked_bytes = 0
        self._idle_since: int | None = None  # for x-expires; None = in use or not yet seen idle

    # ---- counts ----------------------------------------------------------------------

    @property
    def messages_ready(self) -> int:
        return self._ready.count

    @property
    def messages_unacknowledged(self) -> int:
        return len(self._unacked)

    @property
    def messages(self) -> int:
        return self._ready.count + len(self._unacked)

    @property
    def message_bytes_ready(self) -> int:
        return self._ready_bytes

    @property
    def message_bytes(self) -> int:
        return self._ready_bytes + self._unacked_bytes

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def consumers(self) -> list[Consumer]:
        return list(self._registered)

    @property
    def active_consumer(self) -> Consumer | None:
        """With single-active-consumer, the consumer that receives messages."""
        if not self._registered:
            return None
        return self._registered[0] if self.args.single_active_consumer else None

    def ready_messages(self) -> list[tuple[int, Message, bool]]:
        """(msg_id, message, redelivered) in delivery order (for inspection and snapshots)."""
        return [(e.msg_id, e.message, e.redelivered) for e in self._ready]

    def held_messages(self) -> list[Message]:
        """Every message the queue holds, ready or delivered and unacknowledged."""
        return [e.message for e in self._ready] + [u.entry.message for u in self._unacked.values()]

    def unacked_ids(self) -> list[int]:
        return list(self._unacked)

    def unacked_owner(self, msg_id: int) -> ConsumerRef | None:
        """The channel an unacknowledged message went to (None: not unacknowledged)."""
        record = self._unacked.get(msg_id)
        return record.owner if record is not None else None

    def unacked_records(self) -> list[tuple[int, Consumer | None, Message]]:
        """(msg_id, consumer or None for a basic.get, message) of every unacknowledged one."""
        return [(msg_id, r.consumer, r.entry.message) for msg_id, r in self._unacked.items()]

    def message_of(self, msg_id: int) -> Message | None:
        """The message ``msg_id`` if the queue still holds it (ready: by bisection, as each
        priority level is in msg_id order)."""
        record = self._unacked.get(msg_id)
        if record is not None:
            return record.entry.message
        for level in self._ready.levels:
            i = bisect_left(level, msg_id, key=_msg_id)
            if i < len(level) and level[i].msg_id == msg_id:
                return level[i].message
        return None

    def unacked_of(self, ref: ConsumerRef) -> list[int]:
        """The unacknowledged messages of one channel, in msg_id order."""
        return [msg_id for msg_id, record in self._unacked.items() if record.owner == ref]

    # ---- publishing ------------------------------------------------------------------

    def enqueue(self, message: Message, now_ms: int) -> EnqueueOutcome:
        args = self.args
        overflow_rejects = args.overflow != "drop-head"
        if overflow_rejects and self._would_overflow(message.size):
            if args.overflow == "reject-publish-dlx":
                self._dead_letter(message, "maxlen", now_ms)
            return EnqueueOutcome(False)
        self._append(message, now_ms)
        dropped = 0
        if not overflow_rejects:
            dropped = self._drop_head_over_limit(now_ms)
        return EnqueueOutcome(True, dropped)

    def _append(self, message: Message, now_ms: int) -> Entry:
        ttl = self.args.message_ttl
        if message.expiration_ms is not None:
            ttl = message.expiration_ms if ttl is None else min(ttl, message.expiration_ms)
        entry = self.new_entry(self.new_id(message), message, None if ttl is None else now_ms + ttl)
        self._ready.append(entry)
        self._ready_bytes += message.size
        if self.journal is not None:
            self.journal.append((True, message))
        return entry

    # A replicated queue's machine (warren.cluster.queue_fsm) overrides these two: its
    # messages are its own (never shared), so each is its own entry, and its ids are the
    # messages' log locators -- an object and an int less per queued message.
    def new_id(self, message: Message) -> int:
        """The id of a message enqueued now (increasing)."""
        msg_id = self._next_msg_id
        self._next_msg_id += 1
        return msg_id

    def new_entry(self, msg_id: int, message: Message, expires_at: int | None) -> Entry:
        """A queued message's entry (``redelivered`` False)."""
        return _Entry(msg_id, message, expires_at)

    def restore_message(
        self,
        exchange: str,
        routing_key: str,
        properties: bytes | None,
        body: bytes | None,
        seq: int,
        props: dict[str, Any] | None = None,
        size: int | None = None,
    ) -> int:
        """Re-enqueue a message read back from the store after a restart (flagged redelivered).

        ``props`` (decoded properties) restores the message's priority; without it the
        message gets priority 0. Restored messages carry no TTL deadline. ``body`` may be None
        (left in the store) when ``size`` gives its length.
        """
        props = props or {}
        priority = props.get("priority")
        message = Message(
            exchange, routing_key, body, properties, props, True,
            priority if isinstance(priority, int) else None, None,
            size if size is not None else len(body or b""), seq,
        )
        entry = _Entry(self._next_msg_id, message, None)
        entry.redelivered = True
        self._next_msg_id += 1
        self._ready.append(entry)
        self._ready_bytes += message.size
        return entry.msg_id

    def _would_overflow(self, message_size: int) -> bool:
        """RabbitMQ's will_overflow: would the queue exceed a limit with this message in it?"""
        args = self.args
        return (args.max_length is not None and self._ready.count + 1 > args.max_length) or (
            args.max_length_bytes is not None and self._ready_bytes + message_size > args.max_length_bytes
        )

    def _over_limit(self) -> bool:
        args = self.args
        return (args.max_length is not None and self._ready.count > args.max_length) or (
            args.max_length_bytes is not None and self._ready_bytes > args.max_length_bytes
        )

    def _drop_head_over_limit(self, now_ms: int) -> int:
        dropped = 0
        while self._ready.count and self._over_limit():
            level = self._ready.oldest_level()
            assert level is not None
            self._remove_ready(level.popleft(), "maxlen", now_ms)
            dropped += 1
        return dropped

    # ---- consumers -------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        if self._registered and (consumer.exclusive or any(c.exclusive for c in self._registered)):
            raise access_refused(f"queue '{self.name}' in vhost '{self.vhost}' in exclusive use")
        index = len(self._consumers)
        for i, existing in enumerate(self._consumers):
            if existing.priority < consumer.priority:
                index = i
                break
        self._consumers.insert(index, consumer)
        self._registered.append(consumer)
        self.had_consumers = True
        self._idle_since = None

    def cancel_consumer(self, tag: str) -> Consumer | None:
        """Remove the consumer; its unacknowledged messages stay with their channel."""
        for consumer in self._registered:
            if consumer.tag == tag:
                self._registered.remove(consumer)
                self._consumers.remove(consumer)
                self._idle_since = None
                return consumer
        return None

    def _rotate(self, consumer: Consumer) -> None:
        """Move a consumer behind the others of its priority (round-robin)."""
        consumers = self._consumers
        consumers.remove(consumer)
        index = len(consumers)
        for i, other in enumerate(consumers):
            if other.priority < consumer.priority:
                index = i
                break
        consumers.insert(index, consumer)

    def candidate_refs(self) -> list[ConsumerRef]:
        """The refs ``take_deliveries`` may consult now, in the order it tries them: consumers
        below their prefetch (with single-active-consumer, the active one only); none when
        nothing is ready. The caller judges only these channels to build ``eligible``.

        n ready messages go to at most the first n eligible consumers of this list (each
        delivery picks the first unblocked one; the chosen one moves behind its equals, so
        the next pick is a recipient already or the next eligible one), so a caller may stop
        judging once it holds ``messages_ready`` eligible refs: the decision is the same.
        """
        if not self._ready.count or not self._consumers:
            return []
        if self.args.single_active_consumer:
            consumers = self._registered[:1]
        else:
            consumers = self._consumers
        return [c.owner for c in consumers if not c.prefetch or c.unacked < c.prefetch]

    def take_deliveries(
        self,
        now_ms: int,
        eligible: Container[ConsumerRef] | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        """Assign ready messages to consumers that have credit.

        ``eligible`` holds the refs whose channels may receive now (the caller decided from
        channel flow, channel-wide prefetch and a writable socket); a consumer whose ref is
        not in it gets nothing in this call. None: every consumer may receive.
        """
        deliveries: list[Delivery] = []
        if not self._consumers or not self._ready.count:
            return deliveries
        if self.args.single_active_consumer:
            candidates = [self._registered[0]]
        else:
            candidates = self._consumers
        blocked: set[int] = set()
        while self._ready.count and (limit is None or len(deliveries) < limit):
            level = self._ready.head_level()
            assert level is not None
            entry = level[0]
            if entry.expires_at is not None and now_ms > entry.expires_at:
                level.popleft()
                self._remove_ready(entry, "expired", now_ms)
                continue
            chosen = None
            for consumer in candidates:
                if id(consumer) in blocked:
                    continue
                if (consumer.prefetch and consumer.unacked >= consumer.prefetch) or (
                    eligible is not None and consumer.owner not in eligible
                ):
                    blocked.add(id(consumer))
                    continue
                chosen = consumer
                break
            if chosen is None:
                break
            level.popleft()
            self._ready.count -= 1
            self._ready_bytes -= entry.message.size
            if chosen.no_ack:
                self._settled(entry.message)
            else:
                self._unacked[entry.msg_id] = _Unacked(entry, chosen, chosen.owner)
                self._unacked_bytes += entry.message.size
                chosen.unacked += 1
            deliveries.append(Delivery(chosen, entry.msg_id, entry.message, entry.redelivered))
            if not self.args.single_active_consumer:
                self._rotate(chosen)
        return deliveries

    def get(self, now_ms: int, no_ack: bool, owner: ConsumerRef | None = None) -> GetResult | None:
        """basic.get: the head message, or None when the queue is empty; ``owner`` is the
        channel it went to (``release_owner`` requeues it)."""
        self._idle_since = now_ms
        self.expire(now_ms)
        level = self._ready.head_level()
        if level is None:
            return None
        entry = level.popleft()
        self._ready.count -= 1
        self._ready_bytes -= entry.message.size
        if no_ack:
            self._settled(entry.message)
        else:
            self._unacked[entry.msg_id] = _Unacked(entry, None, owner)
            self._unacked_bytes += entry.message.size
        return GetResult(entry.msg_id, entry.message, entry.redelivered, self._ready.count)

    # ---- settlement ------------------------------------------------------------------

    def _take_unacked(self, msg_ids: Iterable[int]) -> list[Entry]:
        taken = []
        for msg_id in msg_ids:
            record = self._unacked.pop(msg_id, None)
            if record is None:
                continue
            if record.consumer is not None:
                record.consumer.unacked -= 1
            self._unacked_bytes -= record.entry.message.size
            taken.append(record.entry)
        return taken

    def ack(self, msg_ids: Iterable[int]) -> int:
        entries = self._take_unacked(msg_ids)
        for entry in entries:
            self._settled(entry.message)
        return len(entries)

    def requeue(self, msg_ids: Iterable[int]) -> int:
        entries = self._take_unacked(msg_ids)
        for entry in entries:
            entry.redelivered = True
            self._ready_bytes += entry.message.size
        self._ready.put_back(entries)
        return len(entries)

    def reject(self, msg_ids: Iterable[int], now_ms: int, reason: str = "rejected") -> int:
        """Reject without requeue: dead-letter (``reason``) if a DLX is set, else drop."""
        entries = self._take_unacked(msg_ids)
        for entry in entries:
            self._settled(entry.message)
            self._dead_letter(entry.message, reason, now_ms)
        return len(entries)

    def release_owner(self, ref: ConsumerRef) -> int:
        """A channel closed: cancel its consumers and requeue what it had not settled."""
        for consumer in [c for c in self._registered if c.owner == ref]:
            self.cancel_consumer(consumer.tag)
        return self.requeue(self.unacked_of(ref))

    def purge(self) -> int:
        removed = self._ready.clear()
        self._ready_bytes = 0
        for entry in removed:
            self._settled(entry.message)
        return len(removed)

    # ---- time ------------------------------------------------------------------------

    def expire(self, now_ms: int) -> int:
        """Remove expired messages at the head of each priority level; returns how many."""
        removed = 0
        for level in self._ready.levels:
            while level and level[0].expires_at is not None and now_ms > level[0].expires_at:
                self._remove_ready(level.popleft(), "expired", now_ms)
                removed += 1
        return removed

    tick = expire

    def unused_expired(self, now_ms: int) -> bool:
        """x-expires: True once the queue has had no consumers and no basic.get for that long.

        The idle period starts at the first call that sees the queue unused, so the caller
        checks this on every tick (and after declare, to restart the period).
        """
        expires = self.args.expires
        if expires is None or self._registered:
            return False
        if self._idle_since is None:
            self._idle_since = now_ms
        return now_ms - self._idle_since >= expires

    def touch(self, now_ms: int | None = None) -> None:
        """A redeclare: restart the x-expires idle period."""
        self._idle_since = now_ms

    # ---- policies --------------------------------------------------------------------

    def apply_args(self, args: QueueArgs, now_ms: int) -> None:
        """New effective arguments (a policy changed); a lower max-length applies at once."""
        assert args.max_priority == self.args.max_priority, "policies cannot change x-max-priority"
        self.args = args
        if args.overflow == "drop-head":
            self._drop_head_over_limit(now_ms)

    # ---- removal and dead-lettering --------------------------------------------------

    def _remove_ready(self, entry: Entry, reason: str, now_ms: int) -> None:
        self._ready.count -= 1
        self._ready_bytes -= entry.message.size
        self._settled(entry.message)
        self._dead_letter(entry.message, reason, now_ms)

    def _settled(self, message: Message) -> None:
        if self.journal is not None:
            self.journal.append((False, message))

    def _dead_letter(self, message: Message, reason: str, now_ms: int) -> None:
        exchange = self.args.dead_letter_exchange
        if exchange is None:
            return
        copy = dead_lettered_copy(
            message, reason, self.name, now_ms, exchange, self.args.dead_letter_routing_key
        )
        self.dead_letters.append(DeadLetter(copy, reason, self.name, exchange, message.seq))

    def take_dead_letters(self) -> list[DeadLetter]:
        taken, self.dead_letters = self.dead_letters, []
        return taken

    # ---- snapshots -------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Everything later commands depend on, as plain data with the ``Message`` objects
        in it (the caller encodes those): a replicated queue's snapshot. The declaration
        (name, arguments, owner) and the effective arguments are not in it; ``import_state``
        restores into a queue built from them.

        - ``consumers``: ``(tag, owner, prefetch, priority, exclusive, no_ack, unacked)`` of
          the registered consumers in registration order (the first ``registered``), then of
          each cancelled one that still has unacknowledged messages (they keep counting
          against it); ``order``: the delivery order (priority, then round-robin) as indexes
          into ``consumers``;
        - ``ready``: ``(msg_id, message, redelivered, expires_at)`` in delivery order;
        - ``unacked``: ``(msg_id, message, redelivered, expires_at, consumer, owner)`` in the
          order they were handed out (``consumer``: an index into ``consumers``, None for a
          basic.get's message);
        - ``next_msg_id``, ``had_consumers``, ``idle_since``.
        """
        consumers = list(self._registered)
        index = {id(c): i for i, c in enumerate(consumers)}
        unacked = []
        for msg_id, record in self._unacked.items():
            consumer = record.consumer
            if consumer is not None and id(consumer) not in index:
                index[id(consumer)] = len(consumers)
                consumers.append(consumer)
            entry = record.entry
            unacked.append((msg_id, entry.message, entry.redelivered, entry.expires_at,
                            None if consumer is None else index[id(consumer)], record.owner))
        return {
            "consumers": [(c.tag, c.owner, c.prefetch, c.priority, c.exclusive, c.no_ack, c.unacked)
                          for c in consumers],
            "registered": len(self._registered),
            "order": [index[id(c)] for c in self._consumers],
            "ready": [(e.msg_id, e.message, e.redelivered, e.expires_at) for e in self._ready],
            "unacked": unacked,
            "next_msg_id": self._next_msg_id,
            "had_consumers": self.had_consumers,
            "idle_since": self._idle_since,
        }

    def import_state(self, state: dict[str, Any]) -> None:
        """Replace messages and consumers with an ``export_state()``'s (owners may come back
        as plain sequences: they become ``ConsumerRef`` again). Writes nothing to ``journal``
        and leaves ``dead_letters`` empty."""
        consumers = [
            Consumer(tag, ConsumerRef(*owner), prefetch, priority, exclusive, no_ack, unacked)
            for tag, owner, prefetch, priority, exclusive, no_ack, unacked in state["consumers"]
        ]
        registered = state["registered"]
        assert sorted(state["order"]) == list(range(registered)), "order must name each registered consumer"
        self._registered = consumers[:registered]
        self._consumers = [consumers[i] for i in state["order"]]
        self._ready = _Ready(self.args.max_priority)
        self._ready_bytes = 0
        for msg_id, message, redelivered, expires_at in state["ready"]:
            entry = self.new_entry(msg_id, message, expires_at)
            entry.redelivered = redelivered
            self._ready.append(entry)
            self._ready_bytes += message.size
        self._unacked = {}
        self._unacked_bytes = 0
        for msg_id, message, redelivered, expires_at, consumer, owner in state["unacked"]:
            entry = self.new_entry(msg_id, message, expires_at)
            entry.redelivered = redelivered
            self._unacked[msg_id] = _Unacked(
                entry, None if consumer is None else consumers[consumer],
                None if owner is None else ConsumerRef(*owner),
            )  # fmt: skip
            self._unacked_bytes += message.size
        self._next_msg_id = state["next_msg_id"]
        self.had_consumers = state["had_consumers"]
        self._idle_since = state["idle_since"]
        self.dead_letters = []

    # ---- listing ---------------------------------------------------------------------

    def describe(self) -> str:
        return resource_name("queue", self.name, self.vhost)

    def as_dict(self) -> dict[str, Any]:
        """The management API's queue fields."""
        return {
            "name": self.name,
            "vhost": self.vhost,
            "durable": self.durable,
            "exclusive": self.exclusive,
            "auto_delete": self.auto_delete,
            "arguments": self.arguments,
            "policy": self.policy,
            "type": "classic",
            "messages": self.messages,
            "messages_ready": self.messages_ready,
            "messages_unacknowledged": self.messages_unacknowledged,
            "message_bytes": self.message_bytes,
            "message_bytes_ready": self.message_bytes_ready,
            "consumers": self.consumer_count,
            "single_active_consumer_tag": (
                self.active_consumer.tag if self.active_consumer is not None else None
            ),
        }

    def __repr__(self) -> str:
        return f"QueueState({self.name!r}, ready={self.messages_ready}, unacked={self.messages_unacknowledged})"


__all__ = [
    "MANAGEMENT_REF",
    "Consumer",
    "ConsumerRef",
    "DeadLetter",
    "Delivery",
    "EnqueueOutcome",
    "GetResult",
    "QueueState",
]
