"""Handlers for the AMQP methods a client sends on an open channel.

Each handler checks RabbitMQ's permission for the operation, applies it to the vhost and
replies. Broker errors propagate as ``AMQPError`` and the session turns them into the
channel or connection close.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec

from warren.amqp.connection import decode_properties, encode_properties
from warren.broker.message import Message
from warren.broker.queue import Consumer, ConsumerRef
from warren.cluster.definitions import (
    BindExchange,
    BindQueue,
    Command,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    Outcome,
    UnbindExchange,
    UnbindQueue,
)
from warren.cluster.forwarding import Fwd
from warren.errors import (
    AMQPError,
    ReplyCode,
    command_invalid,
    not_found,
    not_implemented,
    precondition_failed,
)
from warren.session.channel import ChannelState, TxPublish

if TYPE_CHECKING:
    from warren.session.client import ClientSession

log = logging.getLogger(__name__)

Handler = Callable[["ClientSession", ChannelState, Any], None]
HANDLERS: dict[type, Handler] = {}


def handles(method_type: type) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[method_type] = fn
        return fn

    return register


class MethodHandlers:
    """Mixin for ClientSession: the method table and the helpers handlers share."""

    handlers = HANDLERS

    # permission checks ---------------------------------------------------------------
    def check(self: ClientSession, permission: str, kind: str, name: str) -> None:
        self.node.broker.check_permission(self.user, self.vhost.name, permission, kind, name)

    def reply(self: ClientSession, channel: ChannelState, method: Any) -> None:
        self.conn.send_method(channel.number, method)

    # definition commands ------------------------------------------------------------
    def run(
        self: ClientSession, channel: ChannelState, method: Any, command: Command | None,
        on_ok: Callable[[Any], None],
    ) -> None:
        """Submit ``command`` (None: a read barrier) and call ``on_ok`` with its value once
        it is durable, or close the channel with its error; the channel's next methods wait."""
        commands = self.node.commands
        if command is None:
            self.wait_for(channel, method, commands.barrier, on_ok)
        else:
            self.wait_for(channel, method, lambda done: commands.submit(command, done), on_ok)

    def wait_for(
        self: ClientSession, channel: ChannelState, method: Any, start: Callable[[Callable[[Outcome], None]], None],
        on_ok: Callable[[Any], None],
    ) -> None:
        """``start(done)`` begins an operation that answers later (a command, a barrier, a
        call to another node); ``on_ok`` answers the client, and the channel holds its next
        methods until then."""
        channel.waiting = True
        submitting = True

        def done(outcome: Outcome) -> None:
            channel.waiting = False
            if self.terminated or self.channels.get(channel.number) is not channel or channel.closing:
                return  # the channel went while the command ran: nobody to answer
            try:
                if outcome.error is not None:
                    raise outcome.error
                on_ok(outcome.value)
            except AMQPError as error:
                self.fail(channel, error, method)
            if not submitting:  # answered later: run what waited, and write
                self._release_held(channel)
                self.node.session_changed(self)

        start(done)
        submitting = False

    def call_home(self: ClientSession, channel: ChannelState, method: Any, queue: Any, message: dict[str, Any],
                  on_ok: Callable[[Any], None]) -> None:
        """Ask the node ``queue`` lives on (consume, get, purge), holding the channel."""
        forwarder = self.node.forwarder
        assert forwarder is not None

        self.wait_for(channel, method, lambda done: forwarder.call(queue, message, _as_outcome(done)), on_ok)

    def remote(self: ClientSession, queue: Any) -> bool:
        forwarder = self.node.forwarder
        return forwarder is not None and forwarder.is_remote(queue)

    def call_leader(self: ClientSession, channel: ChannelState, method: Any, queue: Any,
                    start: Callable[[Any], None], on_ok: Callable[[Any], None]) -> None:
        """Send a command to a quorum queue's leader (consume, get, purge), holding the
        channel until it is committed; a failure is a 404 naming why."""
        def begin(done: Callable[[Outcome], None]) -> None:
            def answer(ok: bool, value: Any, text: str) -> None:
                done(Outcome(value) if ok else Outcome(error=not_found(
                    f"queue '{queue.name}' in vhost '{queue.vhost}' is not available: {text}")))
            start(answer)

        self.wait_for(channel, method, begin, on_ok)

    def hold(self: ClientSession, channel: ChannelState, item: tuple[Any, ...]) -> None:
        channel.held.append(item)
        if channel.number not in self.holding:
            self.holding.add(channel.number)
            self.update_reading()

    def _release_held(self: ClientSession, channel: ChannelState) -> None:
        held = channel.held
        while held and not channel.waiting and not channel.closing:
            item = held.popleft()
            if len(item) == 2:
                self._on_method(*item)
            else:
                self._on_publish(*item)
        if not channel.waiting:
            self._drop_held(channel)

    def _drop_held(self: ClientSession, channel: ChannelState) -> None:
        channel.held.clear()
        if channel.number in self.holding:
            self.holding.discard(channel.number)
            self.update_reading()

    # publishing ----------------------------------------------------------------------
    def _on_publish(self: ClientSession, number: int, method: Any, properties: bytes, body: bytes) -> None:
        channel = self.channels.get(number)
        if channel is None or channel.closing:
            return
        if channel.waiting:
            self.hold(channel, (number, method, properties, body))
            return
        try:
            if channel.tx_mode:
                self._check_publish(channel, method)
                channel.tx_publishes.append(TxPublish(method, properties, body))
                return
            self.publish(channel, method, properties, body)
        except AMQPError as error:
            if not self.retry_after_barrier(channel, error, method,
                                            lambda: self._on_publish(number, method, properties, body)):
                self.fail(channel, error, method)

    def retry_after_barrier(
        self: ClientSession, channel: ChannelState, error: AMQPError, method: Any, again: Callable[[], None],
    ) -> bool:
        """In a cluster, a name this member does not know may have just been declared on
        another: run the method again once everything committed before now is applied here
        (the channel holds what follows meanwhile). False when that cannot help."""
        if error.code != ReplyCode.NOT_FOUND or not self.node.definitions_in_log or channel.retrying:
            return False

        def once_more(_: Any) -> None:
            channel.retrying = True
            try:
                again()
            finally:
                channel.retrying = False

        self.run(channel, method, None, once_more)
        return True

    def _check_publish(self: ClientSession, channel: ChannelState, method: Any) -> None:
        if method.immediate:  # RabbitMQ 3.0 dropped it: a connection error, before any other check
            raise not_implemented("immediate=true")
        exchange = method.exchange
        if exchange not in channel.write_permission_cache:
            self.check("write", "exchange", exchange)
            channel.write_permission_cache.add(exchange)

    def publish(self: ClientSession, channel: ChannelState, method: Any, properties: bytes, body: bytes) -> None:
        self._check_publish(channel, method)
        if not self.publishing:
            self.publishing = True
            self.alarms_changed()  # a connection that starts publishing under an alarm is blocked
        props = decode_properties(properties)
        user_id = props.get("user_id")
        if user_id is not None and user_id != self.user.name:
            raise precondition_failed(
                f"user_id property set to '{user_id}' but authenticated user was '{self.user.name}'"
            )
        message = Message.from_publish(method.exchange, method.routing_key, body, properties, props)
        node = self.node
        node.counters.messages_received += 1
        forwarder = node.forwarder
        outcome = self.vhost.publish(message, node.wall_ms(), method.mandatory,
                                     node.routes_elsewhere if forwarder is not None else None)
        if outcome.unroutable:
            if method.mandatory:
                self.conn.send_return(
                    channel.number, ReplyCode.NO_ROUTE, "NO_ROUTE", method.exchange,
                    method.routing_key, properties, body,
                )
                node.counters.messages_unroutable_returned += 1
            else:
                node.counters.messages_unroutable_dropped += 1
        else:
            node.counters.messages_routed += 1
        # A persistent message in a durable queue is confirmed once it is on disk.
        persistence = node.persistence
        local = persistence is not None and persistence.journal_publish(outcome.routed_queues, message)
        homes: dict[str, list[str]] = {}
        quorum = []
        for queue in outcome.remote_queues:  # they live on other nodes: forward it there
            if queue.members:
                quorum.append(queue)
            else:
                homes.setdefault(queue.home, []).append(queue.name)
        if channel.confirm_mode:
            seq = channel.next_publish_seq
            channel.next_publish_seq += 1
            if outcome.rejected_queues:
                channel.record_confirm(seq, False)
            elif local or homes or quorum:
                # confirmed once the store and every node it went to have it (a nack if any has not)
                channel.unconfirmed[seq] = None
                parts = local + len(homes) + len(quorum)
                if parts > 1:
                    channel.confirm_parts[seq] = parts
                if local:  # its writes are in the current batch: so is its confirm
                    persistence.after_commit(self, channel.number, seq)  # type: ignore[union-attr]
                number = channel.number
                for queue in quorum:  # confirmed once committed on a majority of its members
                    node.quorum.publish(queue, message,  # type: ignore[union-attr]
                                        lambda ok, seq=seq: self._store_outcome(number, seq, ok))
                quorum = []
                for home, names in homes.items():
                    if not forwarder.publish(home, self.vhost.name, names, message,  # type: ignore[union-attr]
                                             lambda ok, seq=seq: self._store_outcome(number, seq, ok)):
                        self._store_outcome(number, seq, False)  # its node is down: a nack, as RabbitMQ
                homes = {}
            else:
                channel.record_confirm(seq, True)
            self.send_confirms(channel)
        for home, names in homes.items():
            forwarder.publish(home, self.vhost.name, names, message, None)  # type: ignore[union-attr]
        for queue in quorum:
            node.quorum.publish(queue, message, None)  # type: ignore[union-attr]
        for queue in outcome.routed_queues:
            node.queue_changed(queue)
        for queue in outcome.dead_letter_queues:
            node.queue_changed(queue)

    def send_confirms(self: ClientSession, channel: ChannelState) -> None:
        for tag, multiple, ack in channel.ready_confirms():
            if ack:
                self.conn.send_method(channel.number, spec.Basic.Ack(delivery_tag=tag, multiple=multiple))
                self.node.counters.messages_confirmed += 1
            else:
                self.conn.send_method(channel.number, spec.Basic.Nack(delivery_tag=tag, multiple=False, requeue=False))

    def store_committed(self: ClientSession, number: int, seq: int) -> None:
        self._store_outcome(number, seq, True)

    def store_failed(self: ClientSession, number: int, seq: int) -> None:
        """The batch holding this publish's writes did not reach the disk: nack it."""
        self._store_outcome(number, seq, False)

    def _store_outcome(self: ClientSession, number: int, seq: int, ack: bool) -> None:
        channel = self.channels.get(number)
        if channel is None or seq not in channel.unconfirmed:
            return
        channel.part_outcome(seq, ack)
        self.send_confirms(channel)
        self.node.session_changed(self)

    # consumers -----------------------------------------------------------------------
    def cancel_consumer(self: ClientSession, queue: Any, tag: str, number: int) -> None:
        if queue.members:
            self.node.quorum.cancel(queue, self.id, number, tag)  # type: ignore[union-attr]
            return
        if self.remote(queue):
            self.node.forwarder.cancel(self.id, number, tag)  # type: ignore[union-attr]
            return
        queue.cancel_consumer(tag)
        self.node.queue_changed(queue)

    def vhost_auto_delete_check(self: ClientSession, queues: set[Any]) -> None:
        if self.vhost is None:
            return
        unused = [q for q in queues
                  if q.auto_delete and not q.deleted and q.consumer_count == 0 and q.had_consumers]
        if self.node.definitions_in_log:
            self.delete_queues(unused)
            return
        for queue in unused:
            self.vhost.delete_queue(queue.name, if_unused=False, if_empty=False, owner=queue.owner)
            self.queue_gone(queue)

    def delete_queues(self: ClientSession, queues: list[Any]) -> None:
        """Queues this connection's node deletes on its own (owner gone, last consumer gone),
        as commands: in a cluster every member deletes them."""
        for queue in queues:
            self.node.commands.submit(DeleteQueue(queue.vhost, queue.name, owner=queue.owner), _unanswered)

    def queue_gone(self: ClientSession, queue: Any) -> None:
        self.node.queue_deleted(self.vhost, queue)

    def settle(self: ClientSession, channel: ChannelState, kind: str, tag: int, multiple: bool, requeue: bool) -> None:
        entries = channel.take_unacked(tag, multiple)
        if entries is None:
            raise precondition_failed(f"unknown delivery tag {tag}")
        by_queue: dict[Any, list[int]] = {}
        for entry in entries:
            by_queue.setdefault(entry.queue, []).append(entry.msg_id)
        now_ms = self.node.wall_ms()
        for queue, ids in by_queue.items():
            if queue.deleted:
                continue
            if queue.members:
                how = "ack" if kind == "ack" else "requeue" if requeue else "reject"
                self.node.quorum.settle(queue, self.id, channel.number, how, ids)  # type: ignore[union-attr]
                if kind == "ack":
                    self.node.counters.messages_acknowledged += len(ids)
                continue
            if self.remote(queue):
                how = "ack" if kind == "ack" else "requeue" if requeue else "reject"
                self.node.forwarder.settle(queue, how, ids)  # type: ignore[union-attr]
                if kind == "ack":
                    self.node.counters.messages_acknowledged += len(ids)
                continue
            if kind == "ack":
                queue.ack(ids)
                self.node.counters.messages_acknowledged += len(ids)
            elif requeue:
                queue.requeue(ids)
            else:
                for target in self.vhost.reject(queue, ids, now_ms):
                    self.node.queue_changed(target)
            self.node.queue_changed(queue)


def encoded_properties(message: Message) -> bytes:
    """The message's property block as it goes on the wire (encoded once, then kept)."""
    if message.properties is None:
        message.properties = encode_properties(message.props)
    properties: bytes = message.properties
    return properties


def message_body(persistence: Any, queue: Any, message: Message) -> bytes:
    """The body, read back from the store when only the store holds it."""
    if message.body is None and persistence is not None:
        body: bytes = persistence.load_body(queue, message)
        return body
    return message.body


def _as_outcome(done: Callable[[Outcome], None]) -> Callable[[int, str, Any], None]:
    """The other node's answer (reply code, 0 = ok; text; value) as an Outcome for ``done``."""
    return lambda code, text, value: done(Outcome(error=AMQPError(code, text)) if code else Outcome(value))


def _unanswered(outcome: Outcome) -> None:
    if outcome.error is not None:
        log.warning("could not delete a queue the node released: %s", outcome.error.text)


# ---- exchange ------------------------------------------------------------------------


@handles(spec.Exchange.Declare)
def exchange_declare(s: ClientSession, ch: ChannelState, m: spec.Exchange.Declare) -> None:
    def answer(_: Any) -> None:
        if m.passive:
            s.vhost.declare_exchange(m.exchange, m.exchange_type, passive=True)
        if not m.nowait:
            s.reply(ch, spec.Exchange.DeclareOk())

    if m.passive:
        s.run(ch, m, None, answer)
        return
    s.check("configure", "exchange", m.exchange)
    s.run(ch, m, DeclareExchange(
        s.vhost.name, m.exchange, m.exchange_type, durable=m.durable, auto_delete=m.auto_delete,
        internal=m.internal, arguments=m.arguments or {},
    ), answer)


def _ok(s: ClientSession, ch: ChannelState, m: Any, reply: Any) -> Callable[[Any], None]:
    """An on_ok that sends ``reply`` unless the method asked for no answer (nowait)."""
    def answer(_: Any) -> None:
        if not getattr(m, "nowait", False):
            s.reply(ch, reply)
    return answer


@handles(spec.Exchange.Delete)
def exchange_delete(s: ClientSession, ch: ChannelState, m: spec.Exchange.Delete) -> None:
    s.check("configure", "exchange", m.exchange)
    s.run(ch, m, DeleteExchange(s.vhost.name, m.exchange, if_unused=m.if_unused),
          _ok(s, ch, m, spec.Exchange.DeleteOk()))


@handles(spec.Exchange.Bind)
def exchange_bind(s: ClientSession, ch: ChannelState, m: spec.Exchange.Bind) -> None:
    s.check("write", "exchange", m.destination)
    s.check("read", "exchange", m.source)
    s.run(ch, m, BindExchange(s.vhost.name, m.destination, m.source, m.routing_key, m.arguments or {}),
          _ok(s, ch, m, spec.Exchange.BindOk()))


@handles(spec.Exchange.Unbind)
def exchange_unbind(s: ClientSession, ch: ChannelState, m: spec.Exchange.Unbind) -> None:
    s.check("write", "exchange", m.destination)
    s.check("read", "exchange", m.source)
    s.run(ch, m, UnbindExchange(s.vhost.name, m.destination, m.source, m.routing_key, m.arguments or {}),
          _ok(s, ch, m, spec.Exchange.UnbindOk()))


# ---- queue ---------------------------------------------------------------------------


@handles(spec.Queue.Declare)
def queue_declare(s: ClientSession, ch: ChannelState, m: spec.Queue.Declare) -> None:
    def reply(name: str, counts: Any) -> None:
        if not m.nowait:
            s.reply(ch, spec.Queue.DeclareOk(queue=name, message_count=int(counts[0]), consumer_count=int(counts[1])))

    def answer(declared: tuple[Any, ...]) -> None:
        name, messages, consumers, created = declared
        queue = s.vhost.queues.get(name)
        if m.nowait or created or queue is None:
            reply(name, (messages, consumers))
        elif queue.members and s.node.quorum is not None:  # its leader knows the counts
            s.call_leader(ch, m, queue, lambda done: s.node.quorum.stat(queue, done),  # type: ignore[union-attr]
                          lambda counts: reply(name, counts))
        elif s.remote(queue):  # so does its home node
            s.call_home(ch, m, queue, {"f": Fwd.STAT}, lambda counts: reply(name, counts))
        else:
            reply(name, (messages, consumers))

    if m.passive:
        def passive(_: Any) -> None:
            queue, _ = s.vhost.declare_queue(m.queue, passive=True, owner=s.owner)
            answer((queue.name, queue.messages_ready, queue.consumer_count, False))
        s.run(ch, m, None, passive)
        return
    server_named = not m.queue
    arguments = m.arguments or {}
    if not server_named:
        arguments = s.node.declared_arguments(s.vhost, m.queue, arguments, m.durable, m.exclusive, m.auto_delete)
    if server_named and arguments.get("x-queue-type") == "quorum":
        raise precondition_failed("Cannot declare a server-named queue for type rabbit_quorum_queue")
    name = s.node.unique_name("amq.gen-") if server_named else m.queue
    s.check("configure", "queue", name)
    home, members = s.node.place_queue(s.vhost.name, name, arguments, m.exclusive)
    s.run(ch, m, DeclareQueue(
        s.vhost.name, name, durable=m.durable, exclusive=m.exclusive, auto_delete=m.auto_delete,
        arguments=arguments, owner=s.owner, server_named=server_named, now_ms=s.node.wall_ms(),
        home=home, members=members,
    ), answer)


@handles(spec.Queue.Bind)
def queue_bind(s: ClientSession, ch: ChannelState, m: spec.Queue.Bind) -> None:
    s.check("write", "queue", m.queue)
    s.check("read", "exchange", m.exchange)
    s.run(ch, m, BindQueue(s.vhost.name, m.queue, m.exchange, m.routing_key, m.arguments or {}, s.owner),
          _ok(s, ch, m, spec.Queue.BindOk()))


@handles(spec.Queue.Unbind)
def queue_unbind(s: ClientSession, ch: ChannelState, m: spec.Queue.Unbind) -> None:
    s.check("write", "queue", m.queue)
    s.check("read", "exchange", m.exchange)
    s.run(ch, m, UnbindQueue(s.vhost.name, m.queue, m.exchange, m.routing_key, m.arguments or {}, s.owner),
          _ok(s, ch, m, spec.Queue.UnbindOk()))


@handles(spec.Queue.Purge)
def queue_purge(s: ClientSession, ch: ChannelState, m: spec.Queue.Purge) -> None:
    s.check("read", "queue", m.queue)
    queue = s.vhost.queue_for(m.queue, owner=s.owner)

    def purged(count: int) -> None:
        if not m.nowait:
            s.reply(ch, spec.Queue.PurgeOk(message_count=count))

    if queue.members:
        s.call_leader(ch, m, queue, lambda answer: s.node.quorum.purge(queue, answer), purged)  # type: ignore[union-attr]
        return
    if s.remote(queue):
        s.call_home(ch, m, queue, {"f": Fwd.PURGE}, purged)
        return
    count = queue.purge()
    s.node.queue_changed(queue)
    purged(count)


@handles(spec.Queue.Delete)
def queue_delete(s: ClientSession, ch: ChannelState, m: spec.Queue.Delete) -> None:
    s.check("configure", "queue", m.queue)
    # the node cancels the queue's consumers after delete-ok, as RabbitMQ orders them: py-amqp
    # and kombu treat a cancel that arrives while they wait for delete-ok as an error
    def answer(count: int) -> None:
        if not m.nowait:
            s.reply(ch, spec.Queue.DeleteOk(message_count=count))

    s.run(ch, m, DeleteQueue(s.vhost.name, m.queue, if_unused=m.if_unused, if_empty=m.if_empty,
                             owner=s.owner), answer)


# ---- basic ---------------------------------------------------------------------------


@handles(spec.Basic.Qos)
def basic_qos(s: ClientSession, ch: ChannelState, m: spec.Basic.Qos) -> None:
    if m.prefetch_size:
        raise AMQPError(ReplyCode.NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})")
    if m.global_:
        ch.prefetch_channel = m.prefetch_count
        for queue in ch.consumers.values():
            s.node.queue_changed(queue)
    else:
        ch.prefetch_per_consumer = m.prefetch_count
    s.reply(ch, spec.Basic.QosOk())


@handles(spec.Basic.Consume)
def basic_consume(s: ClientSession, ch: ChannelState, m: spec.Basic.Consume) -> None:
    s.check("read", "queue", m.queue)
    queue = s.vhost.queue_for(m.queue, owner=s.owner)
    tag = m.consumer_tag or s.node.unique_name("amq.ctag-")
    if tag in ch.consumers:
        raise AMQPError(ReplyCode.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'")
    arguments = m.arguments or {}
    priority = arguments.get("x-priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise precondition_failed(f"invalid arg 'x-priority' for consumer '{tag}': {priority!r}")
    consumer = Consumer(
        tag=tag, owner=ConsumerRef(s.id, ch.number), prefetch=ch.prefetch_per_consumer,
        priority=priority, exclusive=m.exclusive, no_ack=m.no_ack,
    )
    if queue.members:  # a quorum queue: its leader hands out the messages
        if ch.prefetch_channel:
            raise not_implemented(f"queue '{queue.name}' in vhost '{queue.vhost}' does not support global qos")
        ch.consumers[tag] = queue

        def registered(refused: Any) -> None:
            if refused:
                raise AMQPError(ReplyCode.ACCESS_REFUSED, refused)
            if not m.nowait:
                s.reply(ch, spec.Basic.ConsumeOk(consumer_tag=tag))

        s.call_leader(ch, m, queue, lambda answer: s.node.quorum.consume(  # type: ignore[union-attr]
            queue, s.id, ch.number, tag, consumer.prefetch, priority, m.exclusive, m.no_ack, answer), registered)
        return
    if s.remote(queue):  # it lives on another node: consume there, deliveries come back
        ch.consumers[tag] = queue

        # refused there (a 403 for an exclusive consumer, a 404): the channel closes, and
        # with it this consumer entry
        s.wait_for(ch, m, lambda done: s.node.forwarder.consume(  # type: ignore[union-attr]
            queue, s.id, ch.number, consumer, _as_outcome(done)), _ok(s, ch, m, spec.Basic.ConsumeOk(consumer_tag=tag)))
        return
    queue.add_consumer(consumer)
    ch.consumers[tag] = queue
    if not m.nowait:
        s.reply(ch, spec.Basic.ConsumeOk(consumer_tag=tag))
    s.node.queue_changed(queue)


@handles(spec.Basic.Cancel)
def basic_cancel(s: ClientSession, ch: ChannelState, m: spec.Basic.Cancel) -> None:
    queue = ch.consumers.pop(m.consumer_tag, None)
    if queue is not None:
        s.cancel_consumer(queue, m.consumer_tag, ch.number)
        s.vhost_auto_delete_check({queue})
    if not m.nowait:
        s.reply(ch, spec.Basic.CancelOk(consumer_tag=m.consumer_tag))


@handles(spec.Basic.Get)
def basic_get(s: ClientSession, ch: ChannelState, m: spec.Basic.Get) -> None:
    s.check("read", "queue", m.queue)
    queue = s.vhost.queue_for(m.queue, owner=s.owner)

    def got(value: Any) -> None:  # from another node: a queue's home, a quorum queue's leader
        if value is None:
            s.reply(ch, spec.Basic.GetEmpty())
            return
        msg_id, redelivered, exchange, routing_key, count, properties, body = value
        if m.no_ack:
            tag = ch.next_delivery_tag
            ch.next_delivery_tag += 1
        else:
            tag = ch.new_delivery(queue, msg_id, None)
        s.conn.send_get_ok(ch.number, tag, redelivered, exchange, routing_key, count, properties, body)
        s.node.counters.messages_delivered_get += 1

    if queue.members:
        s.call_leader(ch, m, queue, lambda answer: s.node.quorum.get(  # type: ignore[union-attr]
            queue, s.id, ch.number, m.no_ack, answer), got)
        return
    if s.remote(queue):
        s.call_home(ch, m, queue, {"f": Fwd.GET, "s": s.id, "c": ch.number, "na": m.no_ack}, got)
        return
    result = queue.get(s.node.wall_ms(), m.no_ack, owner=ConsumerRef(s.id, ch.number))
    if result is None:
        s.reply(ch, spec.Basic.GetEmpty())
        return
    message = result.message
    if m.no_ack:
        tag = ch.next_delivery_tag
        ch.next_delivery_tag += 1
    else:
        tag = ch.new_delivery(queue, result.msg_id, None)
    s.conn.send_get_ok(
        ch.number, tag, result.redelivered, message.exchange, message.routing_key,
        result.message_count, encoded_properties(message), message_body(s.node.persistence, queue, message),
    )
    s.node.counters.messages_delivered_get += 1
    s.node.queue_changed(queue)


@handles(spec.Basic.Ack)
def basic_ack(s: ClientSession, ch: ChannelState, m: spec.Basic.Ack) -> None:
    if ch.tx_mode:
        ch.tx_settlements.append(("ack", m.delivery_tag, m.multiple, False))
        return
    s.settle(ch, "ack", m.delivery_tag, m.multiple, False)


@handles(spec.Basic.Nack)
def basic_nack(s: ClientSession, ch: ChannelState, m: spec.Basic.Nack) -> None:
    if ch.tx_mode:
        ch.tx_settlements.append(("nack", m.delivery_tag, m.multiple, m.requeue))
        return
    s.settle(ch, "nack", m.delivery_tag, m.multiple, m.requeue)


@handles(spec.Basic.Reject)
def basic_reject(s: ClientSession, ch: ChannelState, m: spec.Basic.Reject) -> None:
    if ch.tx_mode:
        ch.tx_settlements.append(("nack", m.delivery_tag, False, m.requeue))
        return
    s.settle(ch, "nack", m.delivery_tag, False, m.requeue)


def _recover(s: ClientSession, ch: ChannelState) -> None:
    # RabbitMQ requeues every unacked message of the channel (requeue=false is not supported).
    s.settle(ch, "nack", 0, True, True)


@handles(spec.Basic.Recover)
def basic_recover(s: ClientSession, ch: ChannelState, m: spec.Basic.Recover) -> None:
    _recover(s, ch)
    s.reply(ch, spec.Basic.RecoverOk())


@handles(spec.Basic.RecoverAsync)
def basic_recover_async(s: ClientSession, ch: ChannelState, m: spec.Basic.RecoverAsync) -> None:
    _recover(s, ch)


# ---- confirm and tx --------------------------------------------------------------------


@handles(spec.Confirm.Select)
def confirm_select(s: ClientSession, ch: ChannelState, m: spec.Confirm.Select) -> None:
    if ch.tx_mode:
        raise precondition_failed("cannot switch from tx to confirm mode")
    ch.confirm_mode = True
    if not m.nowait:
        s.reply(ch, spec.Confirm.SelectOk())


@handles(spec.Tx.Select)
def tx_select(s: ClientSession, ch: ChannelState, m: spec.Tx.Select) -> None:
    if ch.confirm_mode:
        raise precondition_failed("cannot switch from confirm to tx mode")
    ch.tx_mode = True
    s.reply(ch, spec.Tx.SelectOk())


@handles(spec.Tx.Commit)
def tx_commit(s: ClientSession, ch: ChannelState, m: spec.Tx.Commit) -> None:
    if not ch.tx_mode:
        raise precondition_failed("channel is not transactional")
    publishes, settlements = ch.tx_publishes, ch.tx_settlements
    ch.tx_publishes, ch.tx_settlements = [], []
    for item in publishes:
        s.publish(ch, item.method, item.properties, item.body)
    for kind, tag, multiple, requeue in settlements:
        s.settle(ch, kind, tag, multiple, requeue)
    s.reply(ch, spec.Tx.CommitOk())


@handles(spec.Tx.Rollback)
def tx_rollback(s: ClientSession, ch: ChannelState, m: spec.Tx.Rollback) -> None:
    if not ch.tx_mode:
        raise precondition_failed("channel is not transactional")
    ch.tx_publishes.clear()
    ch.tx_settlements.clear()
    s.reply(ch, spec.Tx.RollbackOk())


@handles(spec.Channel.Flow)
def channel_flow(s: ClientSession, ch: ChannelState, m: spec.Channel.Flow) -> None:
    if not m.active:  # RabbitMQ stops no deliveries for a client: a connection error (Go client tests it)
        raise not_implemented("active=false")
    ch.flow_active = m.active
    s.reply(ch, spec.Channel.FlowOk(active=m.active))
    for queue in ch.consumers.values():
        s.node.queue_changed(queue)


__all__ = ["HANDLERS", "MethodHandlers", "command_invalid", "not_found"]
