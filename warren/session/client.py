"""One client connection: AMQP events in, broker operations, AMQP frames out.

The session owns the connection's :class:`~warren.amqp.connection.ServerConnection` (the
sans-I/O protocol machine) and its channels, checks permissions, and turns each method into
an operation on the broker model. Errors the broker raises (``AMQPError``) become the
channel or connection close RabbitMQ would send.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import commands as spec

from warren.amqp import events as ev
from warren.amqp.connection import ServerConnection
from warren.errors import AMQPError, ReplyCode
from warren.session.channel import ChannelState
from warren.session.methods import MethodHandlers, encoded_properties, message_body

if TYPE_CHECKING:
    from warren.broker.auth import Broker
    from warren.cluster.definitions import CommandRunner
    from warren.limits import Limits
    from warren.node.persistence import Persistence

log = logging.getLogger(__name__)


class SessionHost(Protocol):
    """What a session needs from its node."""

    name: str
    limits: Limits
    broker: Broker
    persistence: Persistence | None
    counters: Any
    commands: CommandRunner
    definitions_in_log: bool
    forwarder: Any  # warren.node.remote.Forwarder in a cluster, else None
    quorum: Any  # warren.node.quorum.QuorumQueues in a cluster, else None

    def wall_ms(self) -> int: ...

    def routes_elsewhere(self, queue: Any) -> bool: ...

    def unique_name(self, prefix: str) -> str: ...

    def owner_id(self, session: ClientSession) -> str: ...

    def place_queue(self, vhost: str, name: str, arguments: dict[str, Any],
                    exclusive: bool) -> tuple[str, tuple[str, ...]]: ...


    def queue_changed(self, queue: Any) -> None: ...

    def session_changed(self, session: ClientSession) -> None: ...

    def set_reading(self, session: ClientSession, enabled: bool) -> None: ...

    def buffered_changed(self, delta: int) -> None: ...

    @property
    def blocked_reason(self) -> str | None: ...


class ClientSession(MethodHandlers):
    def __init__(
        self,
        node: SessionHost,
        session_id: int,
        peer_host: str,
        peer_port: int,
        local_host: str,
        local_port: int,
        tls: bool,
        now: float,
    ) -> None:
        self.node = node
        self.id = session_id
        self.peer_host = peer_host
        self.peer_port = peer_port
        self.local_host = local_host
        self.local_port = local_port
        self.tls = tls
        self.connected_at = node.wall_ms()
        self.name = f"{peer_host}:{peer_port} -> {local_host}:{local_port}"
        self.conn = ServerConnection(node.limits, server_properties={"cluster_name": node.name})
        self.conn.tick(now)
        self.channels: dict[int, ChannelState] = {}
        self.user: Any = None
        self.vhost: Any = None
        self.writable = True
        self.terminated = False
        # the client sent connection.close: after our close-ok the client closes the socket
        # (AMQP 0-9-1), as RabbitMQ waits for it; one that does not is cut off after the close timeout
        self.closed_by_peer = False
        self._linger_deadline: float | None = None
        self.blocked = False  # we sent connection.blocked
        self.publishing = False  # has sent a basic.publish: subject to flow control
        self.buffered = 0  # the connection's buffered_bytes, as last reported to the node
        self.recv_octets = 0
        self.send_octets = 0
        self.owner = node.owner_id(self)  # what this connection's exclusive queues record
        self.holding: set[int] = set()  # channels holding methods behind a command in progress
        self._reading = True

    def __hash__(self) -> int:
        return self.id

    # ---- inputs ----------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        self.recv_octets += len(data)
        if self.terminated:
            return
        try:
            for event in self.conn.receive_data(data, now):
                self._handle_event(event)
        except Exception:  # a bug of ours must cost this connection only, never the node
            log.exception("internal error on connection %s; closing it with 541", self.id)
            self.conn.close(ReplyCode.INTERNAL_ERROR, "INTERNAL_ERROR")
            for number in list(self.channels):
                self._release_channel(number)
        conn = self.conn
        if not self.publishing and conn.has_published:
            # A publisher from its first method frame on: one that sends a large body slowly
            # must be blocked (and stop being read) before the body is complete.
            self.publishing = True
            self.alarms_changed()
        buffered = conn.buffered_bytes
        if buffered != self.buffered:
            delta, self.buffered = buffered - self.buffered, buffered
            self.node.buffered_changed(delta)

    def tick(self, now: float) -> bool:
        """Heartbeats; True when there is something to write."""
        if self.terminated:
            return False
        if self.closed_by_peer:
            if self._linger_deadline is None:
                self._linger_deadline = now + self.node.limits.close_ok_timeout_seconds
            elif now >= self._linger_deadline:
                self.terminated = True
                return True
            return False
        events = self.conn.tick(now)
        for event in events:
            self._handle_event(event)
        return bool(events) or self.conn.pending_bytes() > 0

    def lost(self) -> None:
        """The socket is gone: release everything this connection held."""
        if self.buffered:
            self.node.buffered_changed(-self.buffered)
            self.buffered = 0
        for number in list(self.channels):
            self._release_channel(number)
        self._release_exclusive_queues()
        self.terminated = True

    def _release_exclusive_queues(self) -> None:
        if self.vhost is None:
            return
        if self.node.definitions_in_log:  # a cluster deletes them everywhere, by command
            self.delete_queues([q for q in self.vhost.queues.values() if q.exclusive and q.owner == self.owner])
            return
        for queue in self.vhost.owner_closed(self.owner):
            self.queue_gone(queue)

    def data_to_send(self) -> bytes:
        data = self.conn.data_to_send()
        self.send_octets += len(data)
        return data

    def alarms_changed(self) -> None:
        reason = self.node.blocked_reason
        if reason is not None and self.publishing and not self.blocked:
            self.blocked = True
            self.conn.block(reason)
            self.conn.set_receiving(False)
            self.update_reading()
        elif reason is None and self.blocked:
            self.blocked = False
            self.conn.unblock()
            self.conn.set_receiving(True)
            self.update_reading()

    def update_reading(self) -> None:
        """Read the socket unless blocked by an alarm or holding methods behind a command
        (what a pipelining client sends meanwhile waits in the kernel, not in our memory)."""
        reading = not self.blocked and not self.holding
        if reading != self._reading:
            self._reading = reading
            self.node.set_reading(self, reading)

    # ---- events ----------------------------------------------------------------------

    def _handle_event(self, event: Any) -> None:
        kind = type(event)
        if kind is ev.PublishReceived:
            self._on_publish(event.channel, event.method, event.properties, event.body)
        elif kind is ev.MethodReceived:
            self._on_method(event.channel, event.method)
        elif kind is ev.LoginRequested:
            self._on_login(event.mechanism, event.username, event.password)
        elif kind is ev.VhostRequested:
            self._on_vhost(event.vhost)
        elif kind is ev.ChannelOpened:
            self.channels[event.channel] = ChannelState(event.channel)
            self.node.counters.channels_opened += 1
        elif kind is ev.ChannelClosedByPeer:
            self._release_channel(event.channel)
        elif kind is ev.ChannelCloseConfirmed:
            self.channels.pop(event.channel, None)
        elif kind is ev.ChannelProtocolError:
            # the connection already sent channel.close (e.g. 406 message too large)
            self._release_channel(event.channel, keep=True)
            channel = self.channels.get(event.channel)
            if channel is not None:
                channel.closing = True
        elif kind in (ev.ConnectionClosedByPeer, ev.ConnectionTerminated, ev.HeartbeatTimeout,
                      ev.ConnectionProtocolError):
            if kind is ev.HeartbeatTimeout:
                log.info("closing connection %s: missed heartbeats", self.name)
            for number in list(self.channels):
                self._release_channel(number)
            if kind is ev.ConnectionClosedByPeer:
                self.closed_by_peer = True
                self._release_exclusive_queues()  # now, not when the socket goes
            elif kind is ev.ConnectionTerminated and not self.closed_by_peer:
                self.terminated = True
        else:
            log.debug("ignoring event %r", event)

    def _on_login(self, mechanism: str, username: str, password: str) -> None:
        broker = self.node.broker
        user = broker.authenticate(username, password)
        if user is None:
            self.conn.refuse_login(
                f"ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
            log.warning("login refused for user %r from %s", username, self.peer_host)
            return
        if not broker.may_log_in_from(username, self.peer_host):
            self.conn.refuse_login(f"ACCESS_REFUSED - user '{username}' can only connect via localhost")
            log.warning("login refused for loopback-only user %r from %s", username, self.peer_host)
            return
        self.user = user
        self.conn.accept_login()

    def _on_vhost(self, vhost_name: str) -> None:
        broker = self.node.broker
        vhost = broker.vhosts.get(vhost_name)
        if vhost is None:
            self.conn.refuse_vhost(ReplyCode.NOT_ALLOWED, f"NOT_ALLOWED - vhost {vhost_name} not found")
            return
        if not broker.has_vhost_access(self.user.name, vhost_name):
            self.conn.refuse_vhost(
                ReplyCode.NOT_ALLOWED,
                f"NOT_ALLOWED - access to vhost '{vhost_name}' refused for user '{self.user.name}'",
            )
            return
        self.vhost = vhost
        self.conn.accept_vhost()

    def _on_method(self, number: int, method: Any) -> None:
        channel = self.channels.get(number)
        if channel is None or channel.closing:
            return
        if channel.waiting:
            self.hold(channel, (number, method))
            return
        handler = self.handlers.get(type(method))
        try:
            if handler is None:
                raise AMQPError(ReplyCode.NOT_IMPLEMENTED, f"method {method.name} is not implemented")
            handler(self, channel, method)
        except AMQPError as error:
            if not self.retry_after_barrier(channel, error, method, lambda: handler(self, channel, method)):
                self.fail(channel, error, method)

    def fail(self, channel: ChannelState, error: AMQPError, method: Any) -> None:
        index = getattr(method, "index", 0) or 0
        class_id = error.class_id or (index >> 16)
        method_id = error.method_id or (index & 0xFFFF)
        if error.closes_connection:
            self.conn.close(error.code, error.reply_text(), class_id, method_id)
            for number in list(self.channels):
                self._release_channel(number)
        else:
            self._release_channel(channel.number, keep=True)
            channel.closing = True
            self.conn.close_channel(channel.number, error.code, error.reply_text(), class_id, method_id)

    # ---- channel teardown ------------------------------------------------------------

    def _release_channel(self, number: int, keep: bool = False) -> None:
        channel = self.channels.get(number) if keep else self.channels.pop(number, None)
        if channel is None:
            return
        self.node.counters.channels_closed += 0 if keep else 1
        touched = set()
        quorum = self.node.quorum
        for tag, queue in list(channel.consumers.items()):
            if not queue.members:  # a quorum queue's go with the channel's release below
                self.cancel_consumer(queue, tag, number)
                touched.add(queue)
        channel.consumers.clear()
        if quorum is not None:  # its quorum consumers end, what it held goes back
            quorum.channel_closed(self.id, number)
        if channel.unacked:
            by_queue: dict[Any, list[int]] = {}
            for entry in channel.unacked.values():
                by_queue.setdefault(entry.queue, []).append(entry.msg_id)
            channel.unacked.clear()
            for queue, ids in by_queue.items():
                if queue.deleted or queue.members:
                    continue
                if self.remote(queue):
                    self.node.forwarder.settle(queue, "requeue", ids)
                    continue
                queue.requeue(ids)
                touched.add(queue)
        channel.tx_publishes.clear()
        channel.tx_settlements.clear()
        self._drop_held(channel)
        for queue in touched:
            self.node.queue_changed(queue)
        self.vhost_auto_delete_check(touched)

    # ---- deliveries (called by the node) ----------------------------------------------

    def deliver_forwarded(self, m: dict[str, Any], remote: Any) -> bool:
        """A delivery from the node a queue lives on (``warren.node.remote``); False when
        its channel or consumer is gone (the message goes back to the queue)."""
        queue = self.vhost.queues.get(m["q"]) if self.vhost is not None else None
        if queue is None or not self.deliver_from_peer(m["c"], queue, m, remote.no_ack):
            return False
        self.node.forwarder.handed_over(self.id, m["c"], m["tag"])
        return True

    def deliver_from_peer(self, number: int, queue: Any, m: dict[str, Any], no_ack: bool) -> bool:
        """Send a delivery that came over a peer link (tag, id, r, x, k, p, b in ``m``): from a
        classic queue's home or a quorum queue's leader. False when its channel or consumer
        is gone."""
        tag = m["tag"]
        channel = self.channels.get(number)
        if channel is None or channel.closing or tag not in channel.consumers:
            return False
        if no_ack:
            delivery_tag = channel.next_delivery_tag
            channel.next_delivery_tag += 1
        else:
            delivery_tag = channel.new_delivery(queue, m["id"], tag)
        self.conn.send_deliver(number, tag, delivery_tag, m["r"], m["x"], m["k"], m["p"], m["b"])
        counters = self.node.counters
        counters.messages_delivered += 1
        if m["r"]:
            counters.messages_redelivered += 1
        return True

    def may_deliver(self, number: int) -> bool:
        """May channel ``number`` receive deliveries now (the node asks before a queue decides)?"""
        if not self.writable or self.terminated:
            return False
        channel = self.channels.get(number)
        return channel is not None and not channel.closing and channel.flow_active and channel.has_channel_credit()

    def consumer_cancelled_by_server(self, number: int, tag: str) -> None:
        """The queue is gone: tell the client (consumer_cancel_notify), as RabbitMQ does."""
        channel = self.channels.get(number)
        if channel is None or channel.consumers.pop(tag, None) is None:
            return
        if self.conn.capabilities.get("consumer_cancel_notify"):
            self.conn.send_method(number, spec.Basic.Cancel(consumer_tag=tag, nowait=True))
        self.node.session_changed(self)

    def deliver(self, queue: Any, delivery: Any) -> None:
        """Send a delivery ``queue`` assigned to one of this session's consumers."""
        consumer = delivery.consumer
        number = consumer.owner.channel
        channel = self.channels[number]
        message = delivery.message
        counters = self.node.counters
        if consumer.no_ack:
            tag = channel.next_delivery_tag
            channel.next_delivery_tag += 1
        else:
            tag = channel.new_delivery(queue, delivery.msg_id, consumer.tag)
        body = message_body(self.node.persistence, queue, message)
        self.conn.send_deliver(
            number, consumer.tag, tag, delivery.redelivered, message.exchange,
            message.routing_key, encoded_properties(message), body,
        )
        counters.messages_delivered += 1
        if delivery.redelivered:
            counters.messages_redelivered += 1

    def consumed_queues(self) -> set[Any]:
        return {queue for channel in self.channels.values() for queue in channel.consumers.values()}
