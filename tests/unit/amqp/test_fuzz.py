"""Property and fuzz tests: whatever the client sends, the connection never raises, does
bounded work, and either stays usable or ends with a close."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands

from tests.unit.amqp.wire import (
    PROTOCOL_HEADER,
    body_frame,
    header_frame,
    heartbeat_frame,
    method,
    methods,
    open_connection,
    publish,
    raw_frame,
    start_ok,
)
from warren.amqp import events as ev
from warren.amqp.connection import ServerConnection
from warren.limits import Limits

FUZZ = settings(max_examples=250, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def normalized(events: list[Any]) -> list[Any]:
    """Events comparable across runs (pamqp methods compare by identity)."""
    out = []
    for e in events:
        if isinstance(e, ev.MethodReceived):
            out.append(("method", e.channel, e.method.name, dict(e.method)))
        elif isinstance(e, ev.PublishReceived):
            out.append(("publish", e.channel, dict(e.method), e.properties, e.body))
        else:
            out.append(e)
    return out


def feed(conn: ServerConnection, data: bytes, cuts: list[int]) -> list[Any]:
    events: list[Any] = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        events += conn.receive_data(data[last:cut], 0.0)
        last = cut
    return events


def check_outcome(conn: ServerConnection, events: list[Any], output: bytes) -> None:
    """Usable, or closing with a connection.close sent, or terminated."""
    errors = [e for e in events if isinstance(e, ev.ConnectionProtocolError)]
    if errors:
        sent = methods(output)
        assert any(isinstance(m.obj, commands.Connection.Close) for m in sent)
        assert not conn.is_open
    if conn.is_open:
        assert not conn.closed
    # no event follows termination
    for index, event in enumerate(events):
        if isinstance(event, ev.ConnectionTerminated):
            assert index == len(events) - 1


@FUZZ
@given(garbage=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_garbage_after_the_handshake(garbage: bytes, cuts: list[int]) -> None:
    conn = open_connection()
    events = feed(conn, garbage, cuts)
    check_outcome(conn, events, conn.data_to_send())


@FUZZ
@given(garbage=st.binary(max_size=300))
def test_garbage_instead_of_the_handshake(garbage: bytes) -> None:
    conn = ServerConnection(Limits())
    events = conn.receive_data(PROTOCOL_HEADER + garbage, 0.0)
    check_outcome(conn, events, conn.data_to_send())
    conn2 = ServerConnection(Limits())
    conn2.receive_data(garbage, 0.0)  # a wrong header only ever gets ours back
    out = conn2.data_to_send()
    assert out in (b"", PROTOCOL_HEADER) or out.startswith(b"\x01\x00\x00")


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=200))
def test_start_ok_with_random_response(garbage: bytes) -> None:
    conn = ServerConnection(Limits())
    conn.receive_data(PROTOCOL_HEADER, 0.0)
    for mechanism in ("PLAIN", "AMQPLAIN"):
        c = ServerConnection(Limits())
        c.receive_data(PROTOCOL_HEADER, 0.0)
        events = c.receive_data(start_ok(mechanism, garbage.decode("latin-1")), 0.0)
        assert len(events) <= 2
        check_outcome(c, events, c.data_to_send())


def frame_ops() -> st.SearchStrategy[bytes]:
    channel = st.integers(0, 4)
    text = st.text(max_size=12)
    return st.one_of(
        st.builds(lambda c: method(c, commands.Channel.Open()), channel),
        st.builds(lambda c: method(c, commands.Channel.Close(reply_code=200, reply_text="", class_id=0,
                                                             method_id=0)), channel),
        st.builds(lambda c: method(c, commands.Channel.CloseOk()), channel),
        st.builds(lambda c, b, rk: publish(c, b, routing_key=rk, frame_max=4096), channel,
                  st.binary(max_size=9000), text),
        st.builds(lambda c: method(c, commands.Basic.Publish(routing_key="half")), channel),
        st.builds(lambda c, n: header_frame(c, n), channel, st.integers(0, 10)),
        st.builds(lambda c, b: body_frame(c, b), channel, st.binary(min_size=1, max_size=10)),
        st.builds(lambda c, t: method(c, commands.Basic.Ack(delivery_tag=t)), channel,
                  st.integers(0, 2**63 - 1)),
        st.builds(lambda c, q: method(c, commands.Queue.Declare(queue=q)), channel,
                  st.from_regex(r"[a-z]{0,10}", fullmatch=True)),
        st.builds(lambda c, n: method(c, commands.Basic.Qos(prefetch_count=n)), channel,
                  st.integers(0, 65535)),
        st.just(heartbeat_frame()),
        st.builds(lambda t, c, p: raw_frame(t, c, p), st.integers(0, 255), channel,
                  st.binary(max_size=20)),
        st.just(method(0, commands.Connection.Close(reply_code=200, reply_text="", class_id=0,
                                                    method_id=0))),
        st.just(method(0, commands.Connection.CloseOk())),
    )


def valid_ops() -> st.SearchStrategy[bytes]:
    """Frames a correct client sends on the pre-opened channels 1-3."""
    channel = st.integers(1, 3)
    return st.one_of(
        st.builds(lambda c, b: publish(c, b, frame_max=4096), channel, st.binary(max_size=9000)),
        st.builds(lambda c, t: method(c, commands.Basic.Ack(delivery_tag=t)), channel,
                  st.integers(0, 2**63 - 1)),
        st.builds(lambda c: method(c, commands.Basic.Qos(prefetch_count=10)), channel),
        st.builds(lambda c: method(c, commands.Channel.Close(reply_code=200, reply_text="", class_id=0,
                                                             method_id=0))
                  + method(c, commands.Channel.Open()), channel),
        st.just(heartbeat_frame()),
    )


def preopened(frame_max: int = 4096) -> ServerConnection:
    conn = open_connection(frame_max=frame_max)
    conn.receive_data(b"".join(method(c, commands.Channel.Open()) for c in (1, 2, 3)), 0.0)
    conn.data_to_send()
    return conn


@FUZZ
@given(ops=st.lists(st.one_of(valid_ops(), valid_ops(), valid_ops(), frame_ops()), max_size=30),
       cuts=st.lists(st.integers(0, 100_000), max_size=10))
def test_random_frame_sequences_in_random_chunks(ops: list[bytes], cuts: list[int]) -> None:
    data = b"".join(ops)
    whole = preopened()
    expected = whole.receive_data(data, 0.0)
    expected_out = whole.data_to_send()
    check_outcome(whole, expected, expected_out)
    # the same bytes cut anywhere give the same events and the same output
    chunked = preopened()
    got = feed(chunked, data, cuts)
    assert normalized(got) == normalized(expected)
    assert chunked.data_to_send() == expected_out
    assert chunked.is_open == whole.is_open and chunked.closed == whole.closed
    if whole.is_open:  # still usable: a new channel opens and publishes
        free = next(n for n in range(5, 100) if n not in whole.open_channels)
        events = whole.receive_data(method(free, commands.Channel.Open()) + publish(free, b"ok"), 0.0)
        assert [type(e) for e in events] == [ev.ChannelOpened, ev.PublishReceived]


@FUZZ
@given(body=st.binary(max_size=20_000), frame_max=st.integers(4096, 20_000),
       cuts=st.lists(st.integers(0, 30_000), max_size=20))
def test_publish_reassembles_whatever_the_framing(body: bytes, frame_max: int, cuts: list[int]) -> None:
    conn = open_connection(frame_max=frame_max)
    conn.receive_data(method(1, commands.Channel.Open()), 0.0)
    props = commands.Basic.Properties(headers={"k": "v"}, delivery_mode=2)
    events = feed(conn, publish(1, body, props=props, frame_max=frame_max), cuts)
    [event] = events
    assert event.body == body and event.properties == props.marshal()


@FUZZ
@given(body=st.binary(max_size=20_000), frame_max=st.integers(4096, 20_000))
def test_deliver_frames_respect_frame_max(body: bytes, frame_max: int) -> None:
    conn = open_connection(frame_max=frame_max)
    conn.receive_data(method(1, commands.Channel.Open()), 0.0)
    conn.data_to_send()
    conn.send_deliver(1, "ctag", 1, False, "ex", "rk", b"\x00\x00", body)
    pending = conn.pending_bytes()
    data = conn.data_to_send()
    assert len(data) == pending
    pos = 0
    bodies = []
    while pos < len(data):
        size = int.from_bytes(data[pos + 3:pos + 7], "big")
        assert size + 8 <= frame_max
        assert data[pos + 7 + size] == 0xCE
        if data[pos] == 3:
            bodies.append(data[pos + 7:pos + 7 + size])
        pos += 8 + size
    assert b"".join(bodies) == body


@FUZZ
@given(frame_type=st.integers(0, 255), channel=st.integers(0, 65535),
       size=st.integers(4097, 2**32 - 1), tail=st.binary(max_size=50))
def test_oversized_frames_are_always_fatal(frame_type: int, channel: int, size: int, tail: bytes) -> None:
    conn = preopened(frame_max=4096)
    events = conn.receive_data(struct.pack(">BHI", frame_type, channel, size) + tail, 0.0)
    assert [type(e) for e in events] == [ev.ConnectionProtocolError, ev.ConnectionTerminated]
    assert events[0].code == 501 and conn.closed
