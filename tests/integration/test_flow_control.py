"""Resource alarms block publishers with connection.blocked; dead connections time out."""

from __future__ import annotations

import socket
import time

import pika
import pytest
from pamqp import commands, frame

from warren.embed import run_node
from warren.limits import Limits


def test_memory_alarm_blocks_and_unblocks_publishers() -> None:
    # A 1-byte watermark: the node's real RSS is above it, so the alarm is on from the start.
    with run_node(limits=Limits(memory_high_watermark_bytes=1)) as node:
        conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
        events: list[str] = []
        conn.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        conn.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
        channel = conn.channel()
        channel.queue_declare("flow")
        channel.basic_publish("", "flow", b"while alarmed")
        deadline = time.monotonic() + 10
        while "blocked" not in events and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert events == ["blocked"]
        # Raise the watermark: the alarm watcher clears the alarm on its next reading.
        node.call(setattr, node.runtime, "memory_limit", 1 << 50)
        while "unblocked" not in events and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert events == ["blocked", "unblocked"]
        channel.basic_publish("", "flow", b"after")
        assert channel.queue_declare("flow", passive=True).method.message_count == 2
        conn.close()


def _read_frame(sock: socket.socket, buffer: bytearray):
    while True:
        try:
            consumed, channel, value = frame.unmarshal(bytes(buffer))
            del buffer[:consumed]
            return value
        except Exception:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer.extend(chunk)


def test_heartbeat_timeout_closes_a_silent_connection() -> None:
    with run_node() as node:
        sock = socket.create_connection(("127.0.0.1", node.amqp_port))
        sock.settimeout(15)
        buffer = bytearray()
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        assert isinstance(_read_frame(sock, buffer), commands.Connection.Start)
        sock.sendall(frame.marshal(commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US"), 0))
        tune = _read_frame(sock, buffer)
        assert isinstance(tune, commands.Connection.Tune) and tune.heartbeat == 60
        sock.sendall(frame.marshal(commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=1), 0))
        sock.sendall(frame.marshal(commands.Connection.Open(virtual_host="/"), 0))
        assert isinstance(_read_frame(sock, buffer), commands.Connection.OpenOk)
        started = time.monotonic()
        # Stay silent: the server sends heartbeats, then gives up on us after about 2 intervals.
        while _read_frame(sock, buffer) is not None:
            assert time.monotonic() - started < 10
        assert 1.0 <= time.monotonic() - started < 10
        sock.close()


def test_disk_free_limit_blocks_publishers() -> None:
    # A limit above any real disk's free space: the disk alarm is on from the start.
    with run_node(limits=Limits(disk_free_limit_bytes=1 << 60)) as node:
        # A blocked connection is not read from (as in RabbitMQ), so the client gives up on it
        # with pika's blocked_connection_timeout instead of a close handshake.
        params = pika.URLParameters(node.amqp_url + "?blocked_connection_timeout=1")
        conn = pika.BlockingConnection(params)
        events: list[str] = []
        conn.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        channel = conn.channel()
        channel.queue_declare("disk-flow")
        channel.basic_publish("", "disk-flow", b"while alarmed")
        with pytest.raises(pika.exceptions.ConnectionBlockedTimeout):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
        assert events == ["blocked"]


GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not AMQP at all: the server answers its protocol header
    b"AMQP\x00\x00\x09\x01" + b"\x01\x00\x00\xff\xff\xff\xff" + b"\x00" * 64,  # a 4 GiB frame header
    b"AMQP\x00\x00\x09\x01" + b"\x08\x00\x00\x00\x00\x00\x00\xce" * 3,  # heartbeats, then a stalled handshake
    b"AMQP\x00\x00\x09\x01" + bytes(range(256)) * 8,  # noise after a valid header
]


def test_garbage_on_some_sockets_leaves_other_connections_working() -> None:
    # A short handshake timeout so the peer that stalls mid-handshake is dropped quickly.
    with run_node(limits=Limits(handshake_timeout_seconds=2.0)) as node:
        good = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
        channel = good.channel()
        channel.confirm_delivery()
        channel.queue_declare("survivor")
        bad = []
        for payload in GARBAGE:
            sock = socket.create_connection(("127.0.0.1", node.amqp_port))
            sock.settimeout(10)
            sock.sendall(payload)
            bad.append(sock)
        # the good connection works while the bad peers are still connected
        for i in range(100):
            channel.basic_publish("", "survivor", str(i).encode())
        bodies = []
        for _ in range(100):
            _, _, body = channel.basic_get("survivor", auto_ack=True)
            bodies.append(body)
        assert bodies == [str(i).encode() for i in range(100)]
        for sock in bad:
            # each bad peer is disconnected by the server (after any close or header it sends)
            while sock.recv(65536):
                pass
            sock.close()
        assert channel.queue_declare("survivor", passive=True).method.message_count == 0
        good.close()
