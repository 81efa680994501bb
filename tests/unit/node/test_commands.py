"""Definition changes are commands on one write path, answered when their outcome is known."""

from __future__ import annotations

import asyncio
from dataclasses import fields
from types import SimpleNamespace
from typing import Any

import pytest
from pamqp import commands as spec

from tests.unit.amqp import wire
from warren.api.node_backend import NodeBackend
from warren.broker.auth import Broker
from warren.cluster import definitions as d
from warren.errors import AMQPError, ReplyCode, UnstorableValue
from warren.limits import Limits
from warren.node.commands import LocalCommands
from warren.node.node import Node


class Transport:
    def __init__(self) -> None:
        self.out = b""
        self.reading: list[bool] = []

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        pass

    def set_reading(self, enabled: bool) -> None:
        self.reading.append(enabled)

    def take(self) -> list[Any]:
        data, self.out = self.out, b""
        return [m.obj for m in wire.methods(data)]


class DeferredCommands(LocalCommands):
    """A runner that answers only when the test says so (as a cluster answers on commit)."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.waiting: list[tuple[Any, Any]] = []
        self.seen: list[d.Command] = []

    def submit(self, command: d.Command, done: Any) -> None:
        self.seen.append(command)
        self.waiting.append((command, done))

    def barrier(self, done: Any) -> None:
        self.waiting.append((None, done))

    def release_all(self) -> None:
        while self.waiting:
            command, done = self.waiting.pop(0)
            if command is None:
                super().barrier(done)
            else:
                super().submit(command, done)
            self.node.flush()


def _node() -> Node:
    return Node(name="n", limits=Limits(), broker=Broker.with_defaults(), persistence=None,
                monotonic=lambda: 0.0, wall_ms=lambda: 1000, unique_name=lambda prefix: prefix + "x")


def _open(node: Node) -> tuple[Any, Transport]:
    transport = Transport()
    session = node.open_session(transport, "127.0.0.1", 5000, "127.0.0.1", 5672, False)
    assert session is not None
    node.client_data(session, wire.PROTOCOL_HEADER + wire.start_ok())  # login answered, then tune
    node.client_data(session, wire.method(0, spec.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0))
                     + wire.method(0, spec.Connection.Open(virtual_host="/")))
    node.client_data(session, wire.method(1, spec.Channel.Open()))  # a client waits for open-ok first
    node.flush()
    assert any(isinstance(m, spec.Channel.OpenOk) for m in transport.take())
    return session, transport


def test_a_channel_waits_for_its_declare_before_running_what_follows() -> None:
    node = _node()
    runner = node.commands = DeferredCommands(node)
    session, transport = _open(node)
    # a pipelining client: declare, publish to the new queue, get it, all in one read
    node.client_data(session, wire.method(1, spec.Queue.Declare(queue="q1")) + wire.publish(1, b"hello", routing_key="q1")
                     + wire.method(1, spec.Basic.Get(queue="q1", no_ack=True)))
    node.flush()
    assert transport.take() == []  # nothing answered, nothing routed (the queue is not there yet)
    assert "q1" not in node.broker.vhosts["/"].queues
    assert transport.reading == [False]  # held methods stop the socket being read
    runner.release_all()
    answers = transport.take()
    assert [type(m) for m in answers[:2]] == [spec.Queue.DeclareOk, spec.Basic.GetOk]
    assert answers[0].queue == "q1" and answers[-1].value == b"hello"
    assert transport.reading == [False, True]
    assert [type(c) for c in runner.seen] == [d.DeclareQueue]


def test_a_refused_command_closes_the_channel_and_drops_what_waited() -> None:
    node = _node()
    runner = node.commands = DeferredCommands(node)
    session, transport = _open(node)
    node.broker.vhosts["/"].declare_queue("q", durable=False)
    node.client_data(session, wire.method(1, spec.Queue.Declare(queue="q", durable=True))  # inequivalent
                     + wire.method(1, spec.Queue.Declare(queue="never")))
    runner.release_all()
    answers = transport.take()
    assert [type(m) for m in answers] == [spec.Channel.Close]
    assert answers[0].reply_code == ReplyCode.PRECONDITION_FAILED
    assert "never" not in node.broker.vhosts["/"].queues
    assert [c.name for c in runner.seen] == ["q"]  # the second declare never ran
    assert transport.reading == [False, True]


def test_a_passive_declare_reads_after_a_barrier() -> None:
    node = _node()
    runner = node.commands = DeferredCommands(node)
    session, transport = _open(node)
    node.client_data(session, wire.method(1, spec.Queue.Declare(queue="amq.gen-none", passive=True)))
    assert transport.take() == []
    assert runner.waiting and runner.waiting[0][0] is None  # a barrier, not a write
    runner.release_all()
    assert [m.reply_code for m in transport.take()] == [ReplyCode.NOT_FOUND]


def test_amqp_and_http_submit_the_same_command() -> None:
    node = _node()
    seen: list[d.Command] = []
    local = LocalCommands(node)

    class Recording:
        def submit(self, command: d.Command, done: Any) -> None:
            seen.append(command)
            local.submit(command, done)

        def barrier(self, done: Any) -> None:
            local.barrier(done)

    node.commands = Recording()
    session, transport = _open(node)
    node.client_data(session, wire.method(1, spec.Queue.Declare(queue="a", durable=True, arguments={"x-max-length": 5})))
    node.flush()
    assert [type(m) for m in transport.take()] == [spec.Queue.DeclareOk]
    backend = NodeBackend(SimpleNamespace(node=node))
    asyncio.run(backend.declare_queue("/", "b", True, False, {"x-max-length": 5}))
    by_amqp, by_http = seen
    assert type(by_amqp) is type(by_http) is d.DeclareQueue
    assert (by_amqp.durable, by_amqp.arguments) == (by_http.durable, by_http.arguments)
    assert set(node.broker.vhosts["/"].queues) >= {"a", "b"}
    with pytest.raises(AMQPError) as refused:  # and refusals come back the same way
        asyncio.run(backend.delete_queue("/", "absent", False, False))
    assert refused.value.code == ReplyCode.NOT_FOUND


EXAMPLES: list[d.Command] = [
    d.DeclareExchange("/", "x", "topic", True, False, False, {"alternate-exchange": "ae"}),
    d.DeleteExchange("/", "x", True, True),
    d.BindExchange("/", "dst", "src", "a.#", {"x-match": "all", "n": [1, 2.5, None]}),
    d.UnbindExchange("/", "dst", "src", "a.#", {}),
    d.DeclareQueue("v", "q", True, True, False, {"x-message-ttl": 10, "nested": {"b": b"\x00\xff"}},
                   "n#7", False, 123),
    d.DeleteQueue("v", "q", True, False, "n#7", True),
    d.BindQueue("/", "q", "amq.direct", "k", {}, None),
    d.UnbindQueue("/", "q", "amq.direct", "k", {}, "n#1"),
    d.PutVhost("v"), d.DeleteVhost("v"),
    d.PutUser("u", "hash", "rabbit_password_hashing_sha256", ("administrator", "monitoring")),
    d.DeleteUser("u"),
    d.SetPermissions("u", "v", ".*", "", "^a"), d.ClearPermissions("u", "v"),
    d.SetPolicy("/", "p", "^q", "queues", 3, {"max-length": 2}, 55), d.ClearPolicy("/", "p", 56),
    d.SetQueueMembers("/", "q", ("n2", "n3"), 2),
]


def test_every_command_round_trips_through_its_encoding() -> None:
    assert {type(c) for c in EXAMPLES} == set(d.COMMANDS.values())
    for command in EXAMPLES:
        assert d.decode_command(d.encode_command(command)) == command
        for f in fields(command):  # plain values only: nothing live can ride in a log entry
            assert isinstance(getattr(command, f.name), str | int | bool | dict | tuple | type(None))


def test_a_value_the_log_cannot_hold_is_refused_when_encoded() -> None:
    with pytest.raises(UnstorableValue):
        d.encode_command(d.DeclareQueue("/", "q", arguments={"x-note": "\ud800"}))
