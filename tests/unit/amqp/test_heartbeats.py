"""Heartbeats driven by tick(now): send after heartbeat/2 of silence, time out after 2x."""

from __future__ import annotations

from pamqp import commands

from tests.unit.amqp.wire import heartbeat_frame, method, open_channel, open_connection
from warren.amqp import events as ev
from warren.amqp.codec import HEARTBEAT_FRAME


def test_heartbeat_sent_after_half_the_interval_of_silence() -> None:
    conn = open_connection(heartbeat=10, now=0.0)
    assert conn.tick(4.9) == [] and conn.data_to_send() == b""
    assert conn.tick(5.0) == []
    assert conn.data_to_send() == HEARTBEAT_FRAME
    assert conn.tick(6.0) == [] and conn.data_to_send() == b""  # just sent one
    conn.tick(10.0)
    assert conn.data_to_send() == HEARTBEAT_FRAME


def test_outgoing_traffic_postpones_heartbeats() -> None:
    conn = open_connection(heartbeat=10, now=0.0)
    conn.tick(4.0)
    open_channel(conn, 1, now=4.0)  # open-ok is traffic
    conn.tick(8.9)
    assert conn.data_to_send() == b""
    conn.tick(9.0)
    assert conn.data_to_send() == HEARTBEAT_FRAME


def test_silent_client_times_out_after_two_intervals() -> None:
    conn = open_connection(heartbeat=10, now=0.0)
    conn.receive_data(heartbeat_frame(), 15.0)
    assert conn.tick(34.9) == []
    events = conn.tick(35.0)
    assert [type(e) for e in events] == [ev.HeartbeatTimeout, ev.ConnectionTerminated]
    assert conn.closed and not conn.is_open
    assert conn.tick(100.0) == []


def test_any_incoming_frame_counts_as_activity() -> None:
    conn = open_connection(heartbeat=5, now=0.0)
    open_channel(conn, 1)
    for second in range(1, 60):
        conn.receive_data(method(1, commands.Basic.Ack(delivery_tag=second)), float(second))
        assert not any(isinstance(e, ev.HeartbeatTimeout) for e in conn.tick(second + 0.5))
    assert conn.is_open


def test_no_heartbeats_when_negotiated_off() -> None:
    conn = open_connection(heartbeat=0, now=0.0)
    assert conn.tick(10_000.0) == []
    assert conn.data_to_send() == b""
    assert conn.is_open


def test_a_connection_not_read_by_flow_control_is_not_timed_out() -> None:
    # A blocked publisher's socket is not read: its heartbeats wait in the kernel, unseen.
    conn = open_connection(heartbeat=10, now=0.0)
    conn.set_receiving(False)
    assert conn.tick(1000.0) == [] and conn.is_open
    conn.data_to_send()
    conn.tick(1005.0)
    assert conn.data_to_send() == HEARTBEAT_FRAME  # ours still go out: a dead peer shows on write
    conn.set_receiving(True)  # the client's silence counts from the resume on
    assert conn.tick(1024.9) == []
    assert [type(e) for e in conn.tick(1025.0)] == [ev.HeartbeatTimeout, ev.ConnectionTerminated]
