"""Core AMQP behaviour through pika, the way application code uses it."""

from __future__ import annotations

import datetime
import decimal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiormq
import pamqp.commands
import pamqp.exceptions
import pamqp.frame
import pamqp.header
import pika
import pytest
from pamqp import commands
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, UnroutableError

from warren.embed import ThreadedNode, run_node
from warren.limits import Limits


def test_properties_and_headers_reach_the_consumer_unchanged(channel) -> None:
    channel.queue_declare("props")
    headers = {
        "str": "value", "int": 42, "neg": -7, "big": 2**40, "decimal": decimal.Decimal("1.25"), "bool": True,
        "none": None, "list": [1, "two", {"three": 3}], "nested": {"a": {"b": "c"}},
        "bytes": b"\x00\xffraw", "ts": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    }
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers=headers,
        delivery_mode=2, priority=3, correlation_id="corr", reply_to="replies",
        expiration="60000", message_id="mid-1", timestamp=1700000000, type="kind",
        app_id="tests",
    )
    body = bytes(range(256)) * 10
    channel.basic_publish("", "props", body, props)
    method, got_props, got_body = _get(channel, "props")
    assert got_body == body
    for name in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
                 "reply_to", "expiration", "message_id", "timestamp", "type", "app_id"):
        assert getattr(got_props, name) == getattr(props, name), name
    assert got_props.headers == headers
    assert method.routing_key == "props" and method.exchange == ""


def _get(channel, queue: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.02)
    raise AssertionError(f"no message on {queue}")


def test_consume_with_manual_ack_and_prefetch(channel) -> None:
    channel.queue_declare("work")
    for i in range(10):
        channel.basic_publish("", "work", f"job-{i}".encode())
    channel.basic_qos(prefetch_count=3)
    received = []
    for method, _props, body in channel.consume("work", inactivity_timeout=0.5):
        if method is None:
            break
        received.append((method.delivery_tag, body))
    # prefetch 3 and no acks: exactly three arrive
    assert [body for _, body in received] == [b"job-0", b"job-1", b"job-2"]
    channel.basic_ack(received[-1][0], multiple=True)
    rest = []
    for method, _props, body in channel.consume("work", inactivity_timeout=0.5):
        if method is None:
            break
        rest.append(body)
        channel.basic_ack(method.delivery_tag)
    channel.cancel()
    assert rest == [f"job-{i}".encode() for i in range(3, 10)]
    assert channel.queue_declare("work", passive=True).method.message_count == 0


def test_reject_with_requeue_sets_redelivered(channel) -> None:
    channel.queue_declare("again")
    channel.basic_publish("", "again", b"once")
    method, _, _ = channel.basic_get("again")
    assert not method.redelivered
    channel.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = channel.basic_get("again")
    assert body == b"once" and method.redelivered
    channel.basic_nack(method.delivery_tag, requeue=False)
    method, _, _ = channel.basic_get("again")
    assert method is None


def test_publisher_confirms_and_mandatory_returns(channel) -> None:
    channel.confirm_delivery()
    channel.queue_declare("confirmed", durable=True)
    for _i in range(50):
        channel.basic_publish("", "confirmed", b"x", pika.BasicProperties(delivery_mode=2))
    with pytest.raises(UnroutableError):
        channel.basic_publish("", "nowhere", b"lost", mandatory=True)
    assert channel.queue_declare("confirmed", passive=True).method.message_count == 50


def test_exchange_types_route_like_rabbitmq(channel) -> None:
    channel.exchange_declare("topics", "topic")
    channel.exchange_declare("fan", "fanout")
    channel.exchange_declare("hdrs", "headers")
    for q in ("t_all", "t_stock", "f1", "f2", "h_all", "h_any"):
        channel.queue_declare(q)
    channel.queue_bind("t_all", "topics", "#")
    channel.queue_bind("t_stock", "topics", "stock.*.nyse")
    channel.queue_bind("f1", "fan")
    channel.queue_bind("f2", "fan")
    channel.queue_bind("h_all", "hdrs", arguments={"x-match": "all", "a": 1, "b": 2})
    channel.queue_bind("h_any", "hdrs", arguments={"x-match": "any", "a": 1, "b": 2})
    channel.basic_publish("topics", "stock.ibm.nyse", b"1")
    channel.basic_publish("topics", "stock.ibm.lse", b"2")
    channel.basic_publish("fan", "ignored", b"3")
    channel.basic_publish("hdrs", "", b"4", pika.BasicProperties(headers={"a": 1}))
    channel.basic_publish("hdrs", "", b"5", pika.BasicProperties(headers={"a": 1, "b": 2}))
    counts = {q: channel.queue_declare(q, passive=True).method.message_count
              for q in ("t_all", "t_stock", "f1", "f2", "h_all", "h_any")}
    assert counts == {"t_all": 2, "t_stock": 1, "f1": 1, "f2": 1, "h_all": 1, "h_any": 2}


def test_exchange_to_exchange_and_alternate_exchange(channel) -> None:
    channel.exchange_declare("unrouted", "fanout")
    channel.exchange_declare("front", "direct", arguments={"alternate-exchange": "unrouted"})
    channel.exchange_declare("back", "direct")
    channel.exchange_bind("back", "front", "k")
    channel.queue_declare("via_e2e")
    channel.queue_declare("leftovers")
    channel.queue_bind("via_e2e", "back", "k")
    channel.queue_bind("leftovers", "unrouted")
    channel.basic_publish("front", "k", b"routed")
    channel.basic_publish("front", "other", b"alternate")
    assert _get(channel, "via_e2e")[2] == b"routed"
    assert _get(channel, "leftovers")[2] == b"alternate"


def test_server_named_queue_and_exclusive_lock(node: ThreadedNode, channel) -> None:
    name = channel.queue_declare("", exclusive=True).method.queue
    assert name.startswith("amq.gen-")
    other = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    try:
        with pytest.raises(ChannelClosedByBroker) as info:
            other.channel().queue_declare(name, passive=True)
        assert info.value.reply_code == 405
    finally:
        other.close()


@pytest.mark.parametrize(
    ("action", "code", "text"),
    [
        (lambda ch: ch.queue_declare("missing", passive=True), 404, "no queue 'missing' in vhost '/'"),
        (lambda ch: ch.exchange_declare("missing-x", passive=True), 404, "no exchange 'missing-x'"),
        (lambda ch: ch.queue_declare("amq.reserved"), 403, "amq."),
        (lambda ch: ch.exchange_declare("amq.mine", "direct"), 403, "amq."),
        (lambda ch: ch.queue_declare("qq", arguments={"x-queue-type": "quorum"}), 406, "quorum"),
        (lambda ch: ch.queue_declare("bad", arguments={"x-max-length": "ten"}), 406, "x-max-length"),
        (lambda ch: ch.exchange_declare("weird", "nosuchtype"), 503, "nosuchtype"),
        (lambda ch: ch.basic_ack(99), 406, "unknown delivery tag 99"),
    ],
)
def test_errors_close_the_channel_with_rabbitmq_codes(connection, action, code, text) -> None:
    channel = connection.channel()
    with pytest.raises(Exception) as info:
        action(channel)
        channel.queue_declare("sync-point")  # basic_ack has no reply: provoke the close
    error = info.value
    assert getattr(error, "reply_code", None) == code, error
    assert text in error.reply_text
    assert connection.is_open or code >= 500
    if code < 500:
        assert connection.channel().queue_declare("still-works").method.queue == "still-works"


def test_inequivalent_redeclare_is_406(connection) -> None:
    channel = connection.channel()
    channel.queue_declare("durable-q", durable=True)
    with pytest.raises(ChannelClosedByBroker) as info:
        channel.queue_declare("durable-q", durable=False)
    assert info.value.reply_code == 406
    assert "inequivalent arg 'durable'" in info.value.reply_text


def test_delete_if_unused_and_if_empty(connection) -> None:
    channel = connection.channel()
    channel.queue_declare("full")
    channel.basic_publish("", "full", b"x")
    with pytest.raises(ChannelClosedByBroker) as info:
        channel.queue_delete("full", if_empty=True)
    assert info.value.reply_code == 406
    channel = connection.channel()
    assert channel.queue_delete("full").method.message_count == 1


def test_queue_delete_cancels_consumers(node: ThreadedNode, connection) -> None:
    channel = connection.channel()
    channel.queue_declare("doomed")
    cancelled = []
    channel.basic_consume("doomed", lambda *a: None)
    channel.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    admin = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    admin.channel().queue_delete("doomed")
    admin.close()
    deadline = time.monotonic() + 5
    while not cancelled and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    assert len(cancelled) == 1


def test_transactions_commit_and_rollback(channel) -> None:
    channel.queue_declare("txq")
    channel.tx_select()
    channel.basic_publish("", "txq", b"kept")
    channel.tx_commit()
    channel.basic_publish("", "txq", b"dropped")
    channel.tx_rollback()
    assert channel.queue_declare("txq", passive=True).method.message_count == 1


def test_message_ttl_dead_letters_with_x_death(channel) -> None:
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare("short", arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "dlx"})
    channel.basic_publish("", "short", b"expires", pika.BasicProperties(headers={"keep": "me"}))
    method, props, body = _get(channel, "dead")
    assert body == b"expires"
    death = props.headers["x-death"][0]
    assert death["queue"] == "short" and death["reason"] == "expired" and death["count"] == 1
    assert death["exchange"] == "" and death["routing-keys"] == ["short"]
    assert props.headers["x-first-death-reason"] == "expired"
    assert props.headers["keep"] == "me"


def test_max_length_overflow_modes(channel) -> None:
    channel.queue_declare("head", arguments={"x-max-length": 2})
    for i in range(4):
        channel.basic_publish("", "head", str(i).encode())
    assert [_get(channel, "head")[2] for _ in range(2)] == [b"2", b"3"]
    channel.confirm_delivery()
    channel.queue_declare("rejecting", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.basic_publish("", "rejecting", b"fits")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "rejecting", b"rejected")


def test_priority_queue_delivers_highest_first(channel) -> None:
    channel.queue_declare("prio", arguments={"x-max-priority": 10})
    for priority in (1, 9, 5):
        channel.basic_publish("", "prio", str(priority).encode(), pika.BasicProperties(priority=priority))
    assert [_get(channel, "prio")[2] for _ in range(3)] == [b"9", b"5", b"1"]


def test_closing_channel_requeues_unacked(connection) -> None:
    channel = connection.channel()
    channel.queue_declare("held")
    channel.basic_publish("", "held", b"m")
    method, _, _ = channel.basic_get("held")
    assert method is not None
    channel.close()
    channel = connection.channel()
    method, _, body = _get_unacked(channel, "held")
    assert body == b"m" and method.redelivered


def _get_unacked(channel, queue):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue)
        if method is not None:
            return method, props, body
        time.sleep(0.02)
    raise AssertionError("nothing requeued")


async def test_publish_with_immediate_closes_the_connection_540(node: ThreadedNode) -> None:
    connection = await aiormq.connect(node.amqp_url)
    channel = await connection.channel()
    await channel.queue_declare("immediate")
    with pytest.raises(aiormq.exceptions.ConnectionNotImplemented) as info:
        await channel.basic_publish(b"now", routing_key="immediate", immediate=True)
        await channel.queue_declare("immediate", passive=True)  # the close arrives by now
    assert info.value.args[0] == "NOT_IMPLEMENTED - immediate=true"  # ConnectionNotImplemented is 540
    assert connection.is_closed
    connection = await aiormq.connect(node.amqp_url)
    channel = await connection.channel()
    assert (await channel.queue_declare("immediate", passive=True)).message_count == 0
    await connection.close()


def _frames(sock: socket.socket, buffer: bytearray) -> Iterator[Any]:
    while True:
        try:
            used, _channel, frame = pamqp.frame.unmarshal(bytes(buffer))
        except pamqp.exceptions.UnmarshalingException:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            buffer += chunk
            continue
        del buffer[:used]
        yield frame


def _raw_connection(port: int) -> tuple[socket.socket, Iterator[Any], Callable[[int, Any], None]]:
    """A handshaken AMQP connection over a bare socket: (socket, frames, send)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    frames = _frames(sock, bytearray())

    def send(channel: int, method: Any) -> None:
        sock.sendall(pamqp.frame.marshal(method, channel))

    sock.sendall(pamqp.header.ProtocolHeader().marshal())
    assert isinstance(next(frames), commands.Connection.Start)
    send(0, commands.Connection.StartOk(
        client_properties={"capabilities": {"consumer_cancel_notify": True}},
        mechanism="PLAIN", response="\0guest\0guest"))
    tune = next(frames)
    send(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
    send(0, commands.Connection.Open(virtual_host="/"))
    assert isinstance(next(frames), commands.Connection.OpenOk)
    return sock, frames, send


def test_queue_delete_ok_comes_before_the_cancel_of_its_own_consumer(node: ThreadedNode) -> None:
    # py-amqp/kombu wait for queue.delete-ok; a basic.cancel first is "consumer cancelled"
    sock, frames, send = _raw_connection(node.amqp_port)
    send(1, commands.Channel.Open())
    assert isinstance(next(frames), commands.Channel.OpenOk)
    send(1, commands.Queue.Declare(queue="deleted-under-consumer"))
    assert isinstance(next(frames), commands.Queue.DeclareOk)
    send(1, commands.Basic.Consume(queue="deleted-under-consumer", consumer_tag="c1"))
    assert isinstance(next(frames), commands.Basic.ConsumeOk)
    send(1, commands.Queue.Delete(queue="deleted-under-consumer"))
    first, second = next(frames), next(frames)
    assert isinstance(first, commands.Queue.DeleteOk)
    assert isinstance(second, commands.Basic.Cancel) and second.consumer_tag == "c1"
    sock.close()


def test_channel_flow_off_is_not_implemented_as_in_rabbitmq(node: ThreadedNode, connection) -> None:
    channel = connection.channel()
    channel.flow(True)  # flow on is a no-op and answered
    with pytest.raises(ConnectionClosedByBroker) as info:
        channel.flow(False)
    assert (info.value.reply_code, info.value.reply_text) == (540, "NOT_IMPLEMENTED - active=false")


def test_after_close_ok_the_client_closes_the_socket_as_in_rabbitmq() -> None:
    # AMQP 0-9-1: close-ok tells the client to close the socket. RabbitMQ waits for it (30 s);
    # closing first raced aio-pika's recovery (test_create_channels_during_reconnect).
    with run_node(limits=Limits(close_ok_timeout_seconds=1.0)) as node:
        sock, frames, send = _raw_connection(node.amqp_port)
        send(1, commands.Channel.Open())
        assert isinstance(next(frames), commands.Channel.OpenOk)
        send(1, commands.Queue.Declare(queue="mine", exclusive=True))
        assert isinstance(next(frames), commands.Queue.DeclareOk)
        send(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        assert isinstance(next(frames), commands.Connection.CloseOk)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still open: no EOF from the server
        # the connection's exclusive queue is gone already: another connection may take the name
        other = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
        other.channel().queue_declare("mine", exclusive=True)
        other.close()
        # a client that never closes is cut off after the close timeout
        sock.settimeout(4)
        assert sock.recv(1) == b""
        sock.close()


def test_an_internal_error_closes_only_that_connection_with_541(
    node: ThreadedNode, connection: pika.BlockingConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No real input should reach an unexpected exception, so one is planted in a handler:
    # the connection that hits it is closed with 541, the node and the others carry on.
    from warren.session.methods import HANDLERS

    def broken(*_: object) -> None:
        raise RuntimeError("planted bug")

    monkeypatch.setitem(HANDLERS, pamqp.commands.Queue.Purge, broken)
    bystander = connection.channel()
    bystander.queue_declare("bystander-q")
    victim = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        victim.channel().queue_purge("bystander-q")
    assert closed.value.reply_code == 541
    bystander.basic_publish("", "bystander-q", b"still here")
    method, _, body = bystander.basic_get("bystander-q", auto_ack=True)
    assert body == b"still here"
