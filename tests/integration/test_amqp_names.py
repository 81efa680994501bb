"""Names outside the spec's regex (any UTF-8 up to 255 bytes, as RabbitMQ accepts) through
pika against a real node: queues, exchanges, routing keys and consumer tags, in every reply
that carries them."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import pika
import pytest
from pamqp import commands

from tests.integration.conftest import start_server
from tests.integration.test_amqp_basics import _raw_connection
from warren.embed import ThreadedNode

# 255 bytes each for the last two: the longest a short string holds
NAMES = ["é", "очередь", "a*b", "€" * 85, "é" * 127 + "a"]


def _other(prefix: str, name: str) -> str:
    """Another name like ``name``, still at most 255 bytes (cut at a character boundary)."""
    return (prefix + name).encode()[:255].decode(errors="ignore")


def _deliveries(connection: pika.BlockingConnection, channel: Any, queue: str, tag: str,
                count: int) -> list[tuple[Any, bytes]]:
    got: list[tuple[Any, bytes]] = []
    channel.basic_consume(queue, lambda _ch, method, _props, body: got.append((method, body)),
                          auto_ack=True, consumer_tag=tag)
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        connection.process_data_events(0.05)
    return got


def _get(channel: Any, queue: str) -> tuple[Any, bytes]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, body
        time.sleep(0.02)
    raise AssertionError(f"no message on {queue!r}")


@pytest.mark.parametrize("name", NAMES, ids=["e-acute", "cyrillic", "star", "euro-255", "e-acute-255"])
def test_queue_exchange_routing_key_and_consumer_tag_of_any_utf8(
    connection: pika.BlockingConnection, name: str
) -> None:
    channel = connection.channel()
    declared = channel.queue_declare(name)
    assert declared.method.queue == name
    assert channel.queue_declare(name, passive=True).method.queue == name

    # the default exchange: routing key = the queue's name, back in get-ok
    channel.basic_publish("", name, b"direct")
    method, body = _get(channel, name)
    assert (method.exchange, method.routing_key, body) == ("", name, b"direct")

    # an exchange and a routing key with the same kind of name, back in deliver
    exchange = _other("✓", name)
    channel.exchange_declare(exchange, "direct")
    channel.queue_bind(name, exchange, routing_key=name)
    channel.basic_publish(exchange, name, b"routed")
    tag = "ctag-" + name[: 40] + "-*#"
    got = _deliveries(connection, channel, name, tag, 1)
    assert [(m.consumer_tag, m.exchange, m.routing_key, body) for m, body in got] == [
        (tag, exchange, name, b"routed")
    ]
    assert channel.basic_cancel(tag) == []

    # basic.return carries them too
    returned: list[tuple[Any, bytes]] = []
    channel.add_on_return_callback(lambda _ch, method, _props, body: returned.append((method, body)))
    unroutable = _other("?", name)
    channel.basic_publish(exchange, unroutable, b"unroutable", mandatory=True)
    deadline = time.monotonic() + 5
    while not returned and time.monotonic() < deadline:
        connection.process_data_events(0.05)
    assert [(m.reply_code, m.exchange, m.routing_key, body) for m, body in returned] == [
        (312, exchange, unroutable, b"unroutable")
    ]

    channel.queue_unbind(name, exchange, routing_key=name)
    channel.basic_publish("", name, b"left")
    assert channel.queue_purge(name).method.message_count == 1
    channel.exchange_delete(exchange)
    assert channel.queue_delete(name).method.message_count == 0
    assert channel.is_open and connection.is_open


def test_exchange_to_exchange_binding_with_non_ascii_names(connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.exchange_declare("источник", "topic")
    channel.exchange_declare("назначение*", "fanout")
    channel.exchange_bind("назначение*", "источник", routing_key="ключ.#")
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "назначение*")
    channel.basic_publish("источник", "ключ.é", b"hop")
    method, body = _get(channel, queue)
    assert (method.exchange, method.routing_key, body) == ("источник", "ключ.é", b"hop")
    channel.exchange_unbind("назначение*", "источник", routing_key="ключ.#")
    assert channel.is_open


def test_server_cancel_carries_a_non_ascii_consumer_tag(node: ThreadedNode,
                                                        connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    channel.queue_declare("отмена")
    cancelled: list[Any] = []
    channel.add_on_cancel_callback(cancelled.append)
    channel.basic_consume("отмена", lambda *_: None, consumer_tag="потребитель-é")
    other = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    other.channel().queue_delete("отмена")
    other.close()
    deadline = time.monotonic() + 5
    while not cancelled and time.monotonic() < deadline:
        connection.process_data_events(0.05)
    assert [frame.method.consumer_tag for frame in cancelled] == ["потребитель-é"]
    assert channel.is_open


def test_a_name_longer_than_its_frame_is_a_syntax_error(node: ThreadedNode) -> None:
    # a short string can say at most 255 bytes; one that claims more than the frame holds
    # (a client's attempt at a longer name) is refused, not truncated
    sock, frames, send = _raw_connection(node.amqp_port)
    send(1, commands.Channel.Open())
    assert isinstance(next(frames), commands.Channel.OpenOk)
    name = ("é" * 127).encode()
    payload = struct.pack(">IHB", commands.Queue.Declare.index, 0, 255) + name  # 254 of 255 bytes
    sock.sendall(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    close = next(frames)
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (502, 50, 10)
    sock.close()


def test_non_ascii_durable_names_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        channel = conn.channel()
        channel.confirm_delivery()
        channel.exchange_declare("обмен*", "direct", durable=True)
        channel.queue_declare("очередь €", durable=True)
        channel.queue_bind("очередь €", "обмен*", routing_key="ключ")
        channel.basic_publish("обмен*", "ключ", b"kept", pika.BasicProperties(delivery_mode=2))
        conn.close()
    finally:
        server.stop()
    restarted = start_server(data)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(restarted.url))
        channel = conn.channel()
        method, body = _get(channel, "очередь €")
        assert (method.exchange, method.routing_key, body) == ("обмен*", "ключ", b"kept")
        channel.basic_publish("обмен*", "ключ", b"still bound")
        assert _get(channel, "очередь €")[1] == b"still bound"
        conn.close()
    finally:
        restarted.stop()
