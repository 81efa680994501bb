"""Every protocol violation gets the reply code (and text) RabbitMQ sends."""

from __future__ import annotations

import struct

import pytest
from pamqp import commands

from tests.unit.amqp.wire import (
    PROTOCOL_HEADER,
    close_of,
    content,
    header_frame,
    heartbeat_frame,
    method,
    methods,
    open_channel,
    open_connection,
    publish,
    raw_frame,
    start_ok,
)
from warren.amqp import events as ev
from warren.amqp.connection import ServerConnection
from warren.limits import Limits


def kinds(events: list[object]) -> list[type]:
    return [type(e) for e in events]


def assert_connection_closed(conn: ServerConnection, events: list[object], code: int,
                             text: str | None = None, terminated: bool = False) -> None:
    close = close_of(conn.data_to_send())
    assert isinstance(close.obj, commands.Connection.Close)
    assert close.reply_code == code, close
    if text is not None:
        assert close.reply_text == text
    assert ev.ConnectionProtocolError(code, close.reply_text) in events
    assert not conn.is_open
    assert (ev.ConnectionTerminated in kinds(events)) is terminated
    assert conn.closed is terminated


# ---- protocol header ---------------------------------------------------------------------

@pytest.mark.parametrize("header", [b"AMQP\x00\x00\x08\x00", b"GET / HTTP/1.1\r\n", b"AMQP\x03\x01\x00\x00"])
def test_wrong_protocol_header_gets_ours_and_terminates(header: bytes) -> None:
    conn = ServerConnection(Limits())
    events = conn.receive_data(header, 0.0)
    assert kinds(events) == [ev.ConnectionTerminated]
    assert conn.data_to_send() == PROTOCOL_HEADER
    assert conn.closed


def test_wrong_header_detected_before_eight_bytes() -> None:
    conn = ServerConnection(Limits())
    assert kinds(conn.receive_data(b"GE", 0.0)) == [ev.ConnectionTerminated]


def test_amqp_0_9_header_is_accepted() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(b"AMQP\x01\x01\x00\x09", 0.0)
    assert isinstance(methods(conn.data_to_send())[0].obj, commands.Connection.Start)


# ---- authentication and tuning ---------------------------------------------------------

def test_unknown_mechanism_is_command_invalid() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER, 0.0)
    conn.data_to_send()
    events = conn.receive_data(start_ok("EXTERNAL", ""), 0.0)
    assert_connection_closed(conn, events, 503, "COMMAND_INVALID - unknown authentication mechanism 'EXTERNAL'")


def test_malformed_plain_response_is_syntax_error() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER, 0.0)
    conn.data_to_send()
    events = conn.receive_data(start_ok("PLAIN", "no-nul-separators"), 0.0)
    assert_connection_closed(conn, events, 502)


def tuned(frame_max: int, channel_max: int = 2047) -> tuple[ServerConnection, list[object]]:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER + start_ok(), 0.0)
    conn.accept_login()
    conn.data_to_send()
    events = conn.receive_data(method(0, commands.Connection.TuneOk(
        channel_max=channel_max, frame_max=frame_max, heartbeat=0)), 0.0)
    return conn, events


def test_frame_max_below_4096_is_refused() -> None:
    conn, events = tuned(frame_max=1024)
    assert_connection_closed(
        conn, events, 530,
        "NOT_ALLOWED - negotiated frame_max = 1024 is lower than the minimum allowed value (4096)")


def test_frame_max_above_ours_is_refused() -> None:
    conn, events = tuned(frame_max=1 << 20)
    assert_connection_closed(
        conn, events, 530,
        "NOT_ALLOWED - negotiated frame_max = 1048576 is higher than the maximum allowed value (131072)")


def test_unlimited_channel_max_is_refused_when_we_have_a_limit() -> None:
    conn, events = tuned(frame_max=131072, channel_max=0)
    assert_connection_closed(
        conn, events, 530,
        "NOT_ALLOWED - negotiated channel_max = 0 (no limit) is higher than the maximum allowed value (2047)")


def test_channel_frames_before_open_are_unexpected() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER, 0.0)
    conn.data_to_send()
    events = conn.receive_data(method(1, commands.Channel.Open()), 0.0)
    assert_connection_closed(conn, events, 505)


def test_unexpected_connection_method_in_handshake() -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER, 0.0)
    conn.data_to_send()
    events = conn.receive_data(method(0, commands.Connection.Open(virtual_host="/")), 0.0)
    assert_connection_closed(conn, events, 504, "CHANNEL_ERROR - unexpected method in connection state starting")


# ---- channels ----------------------------------------------------------------------------

def test_channel_method_on_channel_zero() -> None:
    conn = open_connection()
    events = conn.receive_data(method(0, commands.Channel.Open()), 0.0)
    assert_connection_closed(conn, events, 504, "CHANNEL_ERROR - unexpected method in connection state running")


def test_content_on_channel_zero_is_unexpected_frame() -> None:
    conn = open_connection()
    events = conn.receive_data(content(0, commands.Basic.Properties(), b"x"), 0.0)
    assert_connection_closed(conn, events, 505)


def test_channel_max_limits_how_many_channels_are_open_not_their_numbers() -> None:
    # as RabbitMQ: channel 65535 opens under channel_max 10; the eleventh open channel does not
    conn = open_connection(channel_max=10)
    open_channel(conn, 65535)
    for number in range(1, 10):
        open_channel(conn, number)
    events = conn.receive_data(method(11, commands.Channel.Open()), 0.0)
    assert_connection_closed(conn, events, 530)


def test_reopening_an_open_channel_is_channel_error() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(method(1, commands.Channel.Open()), 0.0)
    assert_connection_closed(conn, events, 504, "CHANNEL_ERROR - second 'channel.open' seen")


def test_method_on_a_channel_never_opened() -> None:
    conn = open_connection()
    events = conn.receive_data(method(4, commands.Queue.Declare(queue="q")), 0.0)
    assert_connection_closed(conn, events, 504, "CHANNEL_ERROR - expected 'channel.open'")


def test_connection_method_on_a_channel_is_command_invalid() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(method(1, commands.Connection.Blocked(reason="x")), 0.0)
    assert_connection_closed(conn, events, 503)


# ---- content assembly --------------------------------------------------------------------

def test_method_frame_while_header_expected_is_unexpected_frame() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(method(1, commands.Basic.Publish(routing_key="q"))
                               + method(1, commands.Basic.Qos(prefetch_count=1)), 0.0)
    assert_connection_closed(
        conn, events, 505,
        "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead")


def test_method_frame_while_body_expected_is_unexpected_frame() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(method(1, commands.Basic.Publish(routing_key="q")) + header_frame(1, 10)
                               + method(1, commands.Basic.Qos(prefetch_count=1)), 0.0)
    assert_connection_closed(conn, events, 505,
                             "UNEXPECTED_FRAME - expected content body, got non content body frame instead")


def test_body_without_publish_is_unexpected_frame() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(raw_frame(3, 1, b"stray body"), 0.0)
    assert_connection_closed(conn, events, 505,
                             "UNEXPECTED_FRAME - expected method frame, got non method frame instead")


def test_header_for_another_class_is_unexpected_frame() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    bad_header = raw_frame(2, 1, struct.pack(">HHQH", 50, 0, 1, 0))
    events = conn.receive_data(method(1, commands.Basic.Publish(routing_key="q")) + bad_header, 0.0)
    assert_connection_closed(conn, events, 505)


def test_body_longer_than_declared_is_frame_error() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(method(1, commands.Basic.Publish(routing_key="q")) + header_frame(1, 2)
                               + raw_frame(3, 1, b"toolong"), 0.0)
    assert_connection_closed(conn, events, 501)


def test_message_larger_than_max_message_size_closes_the_channel_only() -> None:
    conn = open_connection(limits=Limits(max_message_size=1000))
    open_channel(conn, 1)
    open_channel(conn, 2)
    events = conn.receive_data(publish(1, b"x" * 1001), 0.0)
    text = "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
    assert events == [ev.ChannelProtocolError(1, 406, text)]
    close = close_of(conn.data_to_send())
    assert isinstance(close.obj, commands.Channel.Close)
    assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (406, text, 60, 40)
    # the body frames that were in flight are ignored; the connection stays usable
    events = conn.receive_data(method(1, commands.Channel.CloseOk()) + publish(2, b"x" * 1000), 0.0)
    assert events[0] == ev.ChannelCloseConfirmed(1)
    assert isinstance(events[1], ev.PublishReceived) and len(events[1].body) == 1000
    assert conn.is_open


# ---- framing -----------------------------------------------------------------------------

def test_frame_larger_than_frame_max_is_fatal_frame_error() -> None:
    conn = open_connection(frame_max=4096)
    open_channel(conn, 1)
    events = conn.receive_data(method(1, commands.Basic.Publish(routing_key="q")) + header_frame(1, 5000)
                               + raw_frame(3, 1, b"x" * 4097), 0.0)
    assert_connection_closed(conn, events, 501, terminated=True)


def test_frame_of_exactly_frame_max_payload_is_tolerated_like_rabbitmq() -> None:
    conn = open_connection(frame_max=4096)
    open_channel(conn, 1)
    events = conn.receive_data(method(1, commands.Basic.Publish(routing_key="q")) + header_frame(1, 4096)
                               + raw_frame(3, 1, b"x" * 4096), 0.0)
    assert len(events) == 1 and len(events[0].body) == 4096


def test_oversized_frame_is_detected_from_its_header_alone() -> None:
    conn = open_connection()
    events = conn.receive_data(struct.pack(">BHI", 3, 1, 1 << 30), 0.0)  # no payload yet
    assert_connection_closed(conn, events, 501, terminated=True)


def test_bad_frame_end_is_fatal_frame_error() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(raw_frame(1, 1, struct.pack(">HH", 60, 10) + b"\x00" * 7, end=0x00), 0.0)
    assert_connection_closed(conn, events, 501, terminated=True)


def test_unknown_frame_type_is_frame_error() -> None:
    conn = open_connection()
    events = conn.receive_data(raw_frame(7, 0, b"abc"), 0.0)
    assert_connection_closed(conn, events, 501)


def test_heartbeat_on_a_channel_is_frame_error() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(raw_frame(8, 1, b""), 0.0)
    assert_connection_closed(conn, events, 501)


def test_unknown_method_is_not_implemented() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(raw_frame(1, 1, struct.pack(">HH", 60, 999)), 0.0)
    assert_connection_closed(conn, events, 540, "NOT_IMPLEMENTED - unknown method: class 60, method 999")


def test_truncated_method_arguments_are_syntax_error() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    declare = method(1, commands.Queue.Declare(queue="a-long-queue-name"))
    payload = declare[7:-1]
    events = conn.receive_data(raw_frame(1, 1, payload[:12]), 0.0)
    assert_connection_closed(conn, events, 502)


def test_truncated_publish_is_syntax_error() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    events = conn.receive_data(raw_frame(1, 1, struct.pack(">HHH", 60, 40, 0) + b"\x09ex"), 0.0)
    assert_connection_closed(conn, events, 502)


def test_method_frame_too_short_for_ids() -> None:
    conn = open_connection()
    events = conn.receive_data(raw_frame(1, 0, b"\x00"), 0.0)
    assert_connection_closed(conn, events, 501)


def test_malformed_properties_are_syntax_error() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    # flags announce a content-type, but the property list is empty
    bad_header = raw_frame(2, 1, struct.pack(">HHQH", 60, 0, 1, 0x8000))
    events = conn.receive_data(method(1, commands.Basic.Publish(routing_key="q")) + bad_header, 0.0)
    assert_connection_closed(conn, events, 502)


# ---- close handshakes and timeouts ---------------------------------------------------------

def test_after_a_protocol_error_only_close_ok_matters() -> None:
    conn = open_connection()
    events = conn.receive_data(method(3, commands.Basic.Qos()), 0.0)
    assert_connection_closed(conn, events, 504)
    assert conn.receive_data(method(1, commands.Channel.Open()) + raw_frame(9, 0, b""), 1.0) == []
    assert conn.data_to_send() == b""
    assert kinds(conn.receive_data(method(0, commands.Connection.CloseOk()), 1.0)) == [ev.ConnectionTerminated]


def test_close_crossing_our_close_is_answered() -> None:
    conn = open_connection()
    conn.close(320, "CONNECTION_FORCED - shutdown")
    conn.data_to_send()
    events = conn.receive_data(method(0, commands.Connection.Close(
        reply_code=200, reply_text="bye", class_id=0, method_id=0)), 0.0)
    assert kinds(events) == [ev.ConnectionTerminated]
    assert isinstance(methods(conn.data_to_send())[0].obj, commands.Connection.CloseOk)


def test_missing_close_ok_times_out() -> None:
    conn = open_connection(limits=Limits(close_ok_timeout_seconds=3.0), now=100.0)
    conn.close(320, "CONNECTION_FORCED - shutdown")
    assert conn.tick(102.9) == []
    assert kinds(conn.tick(103.0)) == [ev.ConnectionTerminated]


def test_handshake_timeout() -> None:
    conn = ServerConnection(Limits(handshake_timeout_seconds=10.0))
    conn.tick(50.0)
    conn.receive_data(PROTOCOL_HEADER, 51.0)
    assert conn.tick(59.0) == []
    assert kinds(conn.tick(60.0)) == [ev.ConnectionTerminated]
    assert conn.closed


def test_channel_close_crossing_ours_confirms_the_channel() -> None:
    conn = open_connection()
    open_channel(conn, 1)
    conn.close_channel(1, 406, "PRECONDITION_FAILED - x")
    conn.data_to_send()
    events = conn.receive_data(method(1, commands.Channel.Close(
        reply_code=200, reply_text="", class_id=0, method_id=0)), 0.0)
    assert events == [ev.ChannelCloseConfirmed(1)]
    assert isinstance(methods(conn.data_to_send())[0].obj, commands.Channel.CloseOk)
    open_channel(conn, 1)


def test_heartbeat_frames_are_accepted() -> None:
    conn = open_connection()
    assert conn.receive_data(heartbeat_frame(), 0.0) == []
    assert conn.is_open
