"""The connection handshake, channels, publish and deliver, driven with pamqp client bytes."""

from __future__ import annotations

from pamqp import commands

from tests.unit.amqp.wire import (
    PROTOCOL_HEADER,
    Same,
    body_frame,
    close_of,
    header_frame,
    method,
    methods,
    open_channel,
    open_connection,
    publish,
    read_frames,
    start_ok,
)
from warren.amqp import events as ev
from warren.amqp.connection import ServerConnection, decode_properties, encode_properties
from warren.limits import Limits


def test_protocol_header_gets_connection_start_with_rabbitmq_capabilities() -> None:
    conn = ServerConnection(Limits(), server_properties={"cluster_name": "rabbit@test"})
    assert conn.receive_data(PROTOCOL_HEADER, 0.0) == []
    [start] = methods(conn.data_to_send())
    assert isinstance(start.obj, commands.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.mechanisms == "PLAIN AMQPLAIN"
    assert start.locales == "en_US"
    props = start.server_properties
    assert props["product"] == "Warren"
    assert props["cluster_name"] == "rabbit@test"
    caps = props["capabilities"]
    for name in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                 "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                 "authentication_failure_close", "per_consumer_qos"):
        assert caps[name] is True, name
    assert caps["direct_reply_to"] is False


def test_full_handshake_negotiates_tune_values() -> None:
    conn = ServerConnection(Limits(frame_max=131072, channel_max=2047, heartbeat_seconds=60))
    conn.tick(0.0)
    events = conn.receive_data(PROTOCOL_HEADER + start_ok(), 0.0)
    assert events == [ev.LoginRequested("PLAIN", "guest", "guest")]
    conn.data_to_send()
    conn.accept_login()
    [tune] = methods(conn.data_to_send())
    assert tune == commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
    events = conn.receive_data(
        method(0, commands.Connection.TuneOk(channel_max=100, frame_max=8192, heartbeat=10))
        + method(0, commands.Connection.Open(virtual_host="prod")), 0.0)
    assert events == [ev.VhostRequested("prod")]
    assert not conn.is_open
    conn.accept_vhost()
    assert methods(conn.data_to_send()) == [commands.Connection.OpenOk()]
    assert conn.is_open and not conn.closed
    assert (conn.channel_max, conn.frame_max, conn.heartbeat) == (100, 8192, 10)
    assert conn.username == "guest" and conn.vhost == "prod"
    assert conn.client_properties["product"] == "test"


def test_amqplain_login_is_parsed() -> None:
    conn = ServerConnection(Limits())
    # AMQPLAIN: a field table without its length prefix
    from pamqp import encode
    raw = encode.field_table({"LOGIN": "alice", "PASSWORD": "s3cret"})[4:]
    events = conn.receive_data(PROTOCOL_HEADER + start_ok("AMQPLAIN", raw.decode()), 0.0)
    assert events == [ev.LoginRequested("AMQPLAIN", "alice", "s3cret")]


def test_refused_login_sends_403_and_terminates_on_close_ok() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER + start_ok(), 0.0)
    conn.data_to_send()
    conn.refuse_login("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN.")
    close = close_of(conn.data_to_send())
    assert close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused")
    events = conn.receive_data(method(0, commands.Connection.CloseOk()), 0.1)
    assert [type(e) for e in events] == [ev.ConnectionTerminated]
    assert conn.closed


def test_refused_vhost_sends_the_given_code() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER + start_ok(), 0.0)
    conn.accept_login()
    conn.receive_data(method(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
                      + method(0, commands.Connection.Open(virtual_host="nope")), 0.0)
    conn.data_to_send()
    conn.refuse_vhost(530, "NOT_ALLOWED - vhost nope not found")
    close = close_of(conn.data_to_send())
    assert (close.reply_code, close.reply_text) == (530, "NOT_ALLOWED - vhost nope not found")
    assert not conn.is_open


def test_pipelined_bytes_after_a_pending_decision_are_parsed_later() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER + start_ok(), 0.0)
    conn.accept_login()
    events = conn.receive_data(
        method(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
        + method(0, commands.Connection.Open(virtual_host="/"))
        + method(1, commands.Channel.Open()), 0.0)
    assert events == [ev.VhostRequested("/")]
    conn.accept_vhost()
    assert conn.receive_data(b"", 0.0) == [ev.ChannelOpened(1)]


def test_channel_open_close_by_client() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    open_channel(conn, 7)
    assert conn.open_channels == {1, 7}
    events = conn.receive_data(method(7, commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)), 0.0)
    assert events == [ev.ChannelClosedByPeer(7)]
    assert read_frames(conn.data_to_send()) == [(7, commands.Channel.CloseOk())]
    assert conn.open_channels == {1}
    open_channel(conn, 7)  # a closed channel number can be reused


def test_server_channel_close_ignores_everything_until_close_ok() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    conn.close_channel(1, 404, "NOT_FOUND - no queue 'x' in vhost '/'", 50, 10)
    close = close_of(conn.data_to_send())
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    # the client had more in flight: all ignored, then its close-ok confirms
    events = conn.receive_data(publish(1, b"late") + method(1, commands.Basic.Qos(prefetch_count=1))
                               + method(1, commands.Channel.CloseOk()), 0.0)
    assert events == [ev.ChannelCloseConfirmed(1)]
    assert conn.data_to_send() == b""
    open_channel(conn, 1)


def test_methods_are_reported_with_their_channel() -> None:
    conn = open_connection()
    open_channel(conn, 3)
    declare = commands.Queue.Declare(queue="jobs", durable=True, arguments={"x-max-length": 10})
    events = conn.receive_data(method(3, declare) + method(3, commands.Basic.Ack(delivery_tag=5, multiple=True)), 0.0)
    assert len(events) == 2
    assert events[0].channel == 3 and Same(events[0].method) == declare
    assert events[1].channel == 3
    ack = events[1].method
    assert isinstance(ack, commands.Basic.Ack) and (ack.delivery_tag, ack.multiple) == (5, True)


def test_publish_delivers_method_properties_and_body() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    props = commands.Basic.Properties(content_type="text/plain", headers={"a": 1, "b": "x"},
                                      delivery_mode=2, message_id="m1")
    events = conn.receive_data(publish(1, b"hello", exchange="ex", routing_key="rk", props=props,
                                       mandatory=True), 0.0)
    [event] = events
    assert isinstance(event, ev.PublishReceived)
    assert event.channel == 1
    assert (event.method.exchange, event.method.routing_key, event.method.mandatory) == ("ex", "rk", True)
    assert event.properties == props.marshal()  # byte for byte as published
    assert event.body == b"hello"
    decoded = decode_properties(event.properties)
    assert decoded == {"content_type": "text/plain", "headers": {"a": 1, "b": "x"},
                       "delivery_mode": 2, "message_id": "m1"}


def test_empty_body_publish_completes_at_the_header() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    [event] = conn.receive_data(publish(1, b""), 0.0)
    assert isinstance(event, ev.PublishReceived) and event.body == b""


def test_large_body_split_across_frames_and_calls_byte_by_byte() -> None:
    conn = open_connection(frame_max=4096)
    open_channel(conn, 1)
    payload = bytes(range(256)) * 40  # 10240 bytes: three body frames at frame-max 4096
    data = publish(1, payload, frame_max=4096)
    events = []
    for i in range(len(data)):
        events += conn.receive_data(data[i:i + 1], 0.0)
    [event] = events
    assert event.body == payload


def test_interleaved_content_on_two_channels() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    open_channel(conn, 2)
    m1 = method(1, commands.Basic.Publish(routing_key="a"))
    m2 = method(2, commands.Basic.Publish(routing_key="b"))
    h1 = header_frame(1, 6)
    h2 = header_frame(2, 3)
    data = (m1 + m2 + h2 + h1 + body_frame(1, b"one") + body_frame(2, b"two")
            + body_frame(1, b"111"))
    events = conn.receive_data(data, 0.0)
    assert [(e.channel, e.body) for e in events] == [(2, b"two"), (1, b"one111")]


def test_send_deliver_is_what_a_client_decodes() -> None:
    conn = open_connection(frame_max=4096)
    open_channel(conn, 1)
    props = commands.Basic.Properties(content_type="application/json", headers={"k": "v"}, priority=3)
    payload = b"x" * 9000
    conn.send_deliver(1, "ctag-1", 42, True, "ex", "rk", props.marshal(), payload)
    assert conn.pending_bytes() > 9000
    frames = read_frames(conn.data_to_send())
    assert conn.pending_bytes() == 0
    deliver = frames[0][1]
    assert frames[0][0] == 1
    assert deliver == commands.Basic.Deliver(consumer_tag="ctag-1", delivery_tag=42, redelivered=True,
                                             exchange="ex", routing_key="rk")
    head = frames[1][1]
    assert head.body_size == 9000 and head.properties == props
    bodies = [f[1].value for f in frames[2:]]
    assert [len(b) for b in bodies] == [4088, 4088, 824]  # frame-max minus 8 each
    assert b"".join(bodies) == payload


def test_send_get_ok_and_return() -> None:
    conn = open_connection()
    open_channel(conn, 2)
    conn.send_get_ok(2, 7, False, "", "q", 11, b"\x00\x00", b"body")
    conn.send_return(2, 312, "NO_ROUTE", "ex", "nowhere", b"\x00\x00", b"")
    frames = read_frames(conn.data_to_send())
    assert frames[0] == (2, commands.Basic.GetOk(delivery_tag=7, redelivered=False, exchange="",
                                                 routing_key="q", message_count=11))
    assert frames[1][1].body_size == 4 and frames[2][1].value == b"body"
    assert frames[3] == (2, commands.Basic.Return(reply_code=312, reply_text="NO_ROUTE",
                                                  exchange="ex", routing_key="nowhere"))
    assert frames[4][1].body_size == 0 and len(frames) == 5


def test_sends_to_closed_channels_are_dropped() -> None:
    conn = open_connection()
    conn.send_deliver(5, "c", 1, False, "", "q", b"\x00\x00", b"x")
    conn.send_method(5, commands.Basic.Ack(delivery_tag=1))
    assert conn.data_to_send() == b""


def test_client_connection_close_is_answered_and_terminates() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(method(0, commands.Connection.Close(reply_code=200, reply_text="Normal", class_id=0, method_id=0)), 0.0)
    assert events == [ev.ConnectionClosedByPeer(200, "Normal"), ev.ConnectionTerminated("client closed the connection")]
    assert methods(conn.data_to_send()) == [commands.Connection.CloseOk()]
    assert conn.closed and conn.receive_data(b"anything", 0.0) == []


def test_server_close_waits_for_close_ok_and_ignores_other_frames() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    conn.close(320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    close = close_of(conn.data_to_send())
    assert close.reply_code == 320
    assert not conn.is_open
    assert conn.receive_data(publish(1, b"x") + method(1, commands.Basic.Qos()), 0.0) == []
    assert conn.data_to_send() == b""
    events = conn.receive_data(method(0, commands.Connection.CloseOk()), 0.0)
    assert [type(e) for e in events] == [ev.ConnectionTerminated]


def test_block_and_unblock_only_for_capable_clients() -> None:
    conn = open_connection()
    conn.block("low on memory")
    conn.block("low on memory")  # once only
    conn.unblock()
    assert methods(conn.data_to_send()) == [commands.Connection.Blocked(reason="low on memory"),
                                            commands.Connection.Unblocked()]
    plain = open_connection(capabilities={})
    plain.block("low on memory")
    plain.unblock()
    assert plain.data_to_send() == b""


def test_properties_round_trip() -> None:
    props = {"content_type": "a/b", "headers": {"x-death": [{"count": 1}]}, "delivery_mode": 1,
             "priority": 0, "correlation_id": "c", "reply_to": "r", "expiration": "100",
             "message_id": "m", "timestamp": 1700000000, "message_type": "t", "user_id": "u",
             "app_id": "app", "cluster_id": ""}
    raw = encode_properties(props)
    decoded = decode_properties(raw)
    assert decoded["timestamp"].timestamp() == 1700000000
    decoded["timestamp"] = 1700000000
    assert decoded == props
    assert encode_properties(decode_properties(raw)) == raw
    pamqp_props = commands.Basic.Properties(content_type="a/b", headers={"h": True})
    assert encode_properties(pamqp_props) == pamqp_props.marshal()
    assert decode_properties(pamqp_props.marshal()) == {"content_type": "a/b", "headers": {"h": True}}
    assert decode_properties(b"\x00\x00") == {}


def test_non_utf8_property_strings_survive_decode_and_encode() -> None:
    raw = b"\x80\x00" + b"\x02\xff\xfe"  # content-type of two bytes that are not UTF-8
    assert encode_properties(decode_properties(raw)) == raw


def test_receive_data_accepts_bytearray_and_memoryview() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    data = publish(1, b"abc")
    events = conn.receive_data(bytearray(data[:10]), 0.0) + conn.receive_data(memoryview(data[10:]), 0.0)
    assert [e.body for e in events] == [b"abc"]
    assert type(events[0].body) is bytes


def test_large_single_frame_deliver_and_get_ok() -> None:
    conn = open_connection(frame_max=131072)
    open_channel(conn, 1)
    payload = bytes(range(256)) * 400  # 102400 bytes: one body frame, not joined inline
    conn.send_deliver(1, "c", 1, False, "", "q", b"\x00\x00", payload)
    conn.send_get_ok(1, 2, False, "", "q", 0, b"\x00\x00", payload)
    pending = conn.pending_bytes()
    data = conn.data_to_send()
    assert len(data) == pending
    frames = read_frames(data)
    assert [f[1].value for f in frames if hasattr(f[1].obj, "value")] == [payload, payload]


def test_decisions_after_the_connection_started_closing_are_ignored() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER + start_ok(), 0.0)
    conn.close(320, "CONNECTION_FORCED - shutdown")
    conn.data_to_send()
    conn.accept_login()  # too late: no tune goes out
    assert conn.data_to_send() == b""


def test_blocked_is_only_sent_on_a_running_connection() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER + start_ok(), 0.0)
    conn.data_to_send()
    conn.block("low on memory")  # still in the handshake
    assert conn.data_to_send() == b""


def test_settlements_are_parsed_like_pamqp() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    sent = [commands.Basic.Ack(delivery_tag=2**63 - 1, multiple=True),
            commands.Basic.Nack(delivery_tag=3, multiple=False, requeue=True),
            commands.Basic.Nack(delivery_tag=4, multiple=True, requeue=False),
            commands.Basic.Reject(delivery_tag=5, requeue=False),
            commands.Basic.Reject(delivery_tag=6, requeue=True)]
    events = conn.receive_data(b"".join(method(1, m) for m in sent), 0.0)
    assert [Same(e.method) for e in events] == sent


def test_confirms_are_encoded_like_pamqp() -> None:
    from pamqp import frame
    conn = open_connection()
    open_channel(conn, 1)
    for m in (commands.Basic.Ack(delivery_tag=7, multiple=True),
              commands.Basic.Nack(delivery_tag=8, multiple=True, requeue=True),
              commands.Basic.Nack(delivery_tag=9)):
        conn.send_method(1, m)
        assert conn.data_to_send() == frame.marshal(m, 1)


def test_amqplain_login_longer_than_the_response_is_a_syntax_error() -> None:
    # LOGIN claims 10 bytes and the response ends after 5: pamqp read "guest" and logged in
    conn = ServerConnection(Limits())
    raw = b"\x08PASSWORDS\x00\x00\x00\x05guest" + b"\x05LOGINS\x00\x00\x00\x0aguest"
    events = conn.receive_data(PROTOCOL_HEADER + start_ok("AMQPLAIN", raw.decode()), 0.0)
    assert [type(e) for e in events] == [ev.ConnectionProtocolError]
    assert close_of(conn.data_to_send()).reply_code == 502
