"""A real session's consumer is registered in its queue as plain data, and the node resolves
the ref to its session for deliveries and server-cancels (no sockets: bytes in, bytes out)."""

from __future__ import annotations

import dataclasses

import msgpack
from pamqp import commands

from tests.unit.amqp.wire import PROTOCOL_HEADER, method, methods, publish, start_ok
from warren.broker.auth import Broker
from warren.broker.queue import ConsumerRef
from warren.limits import Limits
from warren.node.node import Node


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        pass

    def set_reading(self, enabled: bool) -> None:
        pass

    def take(self) -> list[type]:
        sent = [type(m.obj) for m in methods(bytes(self.out))]
        self.out.clear()
        return sent


def _node() -> Node:
    return Node(name="n", limits=Limits(), broker=Broker.with_defaults(), persistence=None,
                monotonic=lambda: 0.0, wall_ms=lambda: 0, unique_name=lambda prefix: prefix + "x")


def test_consumer_is_a_ref_and_deliveries_follow_the_session_state() -> None:
    node = _node()
    transport = Transport()
    session = node.open_session(transport, "127.0.0.1", 40000, "127.0.0.1", 5672, False)
    assert session is not None
    caps = {"consumer_cancel_notify": True}
    node.client_data(session, PROTOCOL_HEADER + start_ok(capabilities=caps))
    node.client_data(session, method(0, commands.Connection.TuneOk(channel_max=10, frame_max=131072))
                     + method(0, commands.Connection.Open(virtual_host="/")))
    node.client_data(session, method(2, commands.Channel.Open()) + method(2, commands.Queue.Declare(queue="q"))
                     + method(2, commands.Basic.Qos(prefetch_count=2))
                     + method(2, commands.Basic.Consume(queue="q", consumer_tag="a")))
    node.flush()
    transport.out.clear()
    queue = node.broker.vhosts["/"].queues["q"]
    (consumer,) = queue.consumers
    assert consumer.owner == ConsumerRef(session.id, 2)
    fields = dataclasses.astuple(consumer)  # the old owner, (ClientSession, 2), could not be encoded
    assert msgpack.unpackb(msgpack.packb(fields), use_list=False) == fields

    node.client_writable(session, False)  # a full socket: the node judges the channel ineligible
    node.client_data(session, publish(2, b"one") + publish(2, b"two") + publish(2, b"three"))
    node.flush()
    assert commands.Basic.Deliver not in transport.take()
    assert queue.messages_ready == 3

    node.client_writable(session, True)
    node.flush()
    assert transport.take().count(commands.Basic.Deliver) == 2  # per-consumer prefetch 2
    assert queue.messages_ready == 1

    vhost = node.broker.vhosts["/"]
    vhost.delete_queue("q")
    node.queue_deleted(vhost, queue)  # the ref leads back to the session: a server cancel
    node.flush()
    assert transport.take() == [commands.Basic.Cancel]
    assert session.channels[2].consumers == {}
