"""Micro-benchmarks of the AMQP hot paths, run by ``scripts/bench-amqp [--count N] [--size B]``.

Messages per second for parsing publishes (method + header + body frames fed as one socket
read per batch of 100), parsing acks, and encoding deliveries. The clock is injected by the
script: this package reads no clock.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pamqp import commands

from warren.amqp import codec
from warren.amqp import events as ev
from warren.amqp.connection import ServerConnection
from warren.limits import Limits

_BATCH = 100  # messages per receive_data call, like one socket read under load


def _handshaken(limits: Limits) -> ServerConnection:
    conn = ServerConnection(limits)
    conn.receive_data(codec.PROTOCOL_HEADER, 0.0)
    start_ok = commands.Connection.StartOk(
        client_properties={"capabilities": {}}, mechanism="PLAIN", response="\0guest\0guest",
        locale="en_US",
    )
    conn.receive_data(codec.method_frame(0, start_ok), 0.0)
    conn.accept_login()
    conn.receive_data(
        codec.method_frame(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
        + codec.method_frame(0, commands.Connection.Open(virtual_host="/")),
        0.0,
    )
    conn.accept_vhost()
    conn.receive_data(codec.method_frame(1, commands.Channel.Open()), 0.0)
    conn.data_to_send()
    return conn


def _publish_bytes(size: int) -> bytes:
    props = commands.Basic.Properties(content_type="application/json", delivery_mode=2)
    method = codec.method_frame(1, commands.Basic.Publish(exchange="amq.direct", routing_key="work.queue"))
    raw_props = props.marshal()
    header = codec.FRAME_HEAD.pack(2, 1, 12 + len(raw_props)) + struct.pack(">HHQ", 60, 0, size) + raw_props + b"\xce"
    body = codec.FRAME_HEAD.pack(3, 1, size) + b"x" * size + b"\xce" if size else b""
    return method + header + body


def bench_publish(clock: Callable[[], float], count: int, size: int) -> float:
    conn = _handshaken(Limits())
    batch = _publish_bytes(size) * _BATCH
    rounds = max(1, count // _BATCH)
    received = 0
    started = clock()
    for _ in range(rounds):
        for event in conn.receive_data(batch):
            if type(event) is ev.PublishReceived:
                received += 1
    elapsed = clock() - started
    assert received == rounds * _BATCH, received
    return received / elapsed


def bench_ack(clock: Callable[[], float], count: int) -> float:
    conn = _handshaken(Limits())
    batch = b"".join(codec.method_frame(1, commands.Basic.Ack(delivery_tag=i + 1)) for i in range(_BATCH))
    rounds = max(1, count // _BATCH)
    received = 0
    started = clock()
    for _ in range(rounds):
        received += len(conn.receive_data(batch))
    elapsed = clock() - started
    assert received == rounds * _BATCH
    return received / elapsed


def bench_deliver(clock: Callable[[], float], count: int, size: int) -> float:
    conn = _handshaken(Limits())
    props = commands.Basic.Properties(content_type="application/json", delivery_mode=2).marshal()
    body = b"x" * size
    started = clock()
    total = 0
    for tag in range(1, count + 1):
        conn.send_deliver(1, "amq.ctag-benchmark", tag, False, "amq.direct", "work.queue", props, body)
        if tag % _BATCH == 0:
            total += len(conn.data_to_send())
    total += len(conn.data_to_send())
    elapsed = clock() - started
    assert total > count * size
    return count / elapsed


def bench_confirm(clock: Callable[[], float], count: int) -> float:
    """Publisher-confirm acks sent by the broker."""
    conn = _handshaken(Limits())
    started = clock()
    for tag in range(1, count + 1):
        conn.send_method(1, commands.Basic.Ack(delivery_tag=tag))
        if tag % _BATCH == 0:
            conn.data_to_send()
    elapsed = clock() - started
    return count / elapsed


def bench_headers(clock: Callable[[], float], count: int) -> float:
    """decode_properties of a Celery-like property block with 8 headers."""
    raw = commands.Basic.Properties(
        content_type="application/json", delivery_mode=2,
        headers={"id": "8f1c6e1e-1d2b", "task": "proj.tasks.add", "retries": 0, "eta": None,
                 "argsrepr": "(1, 2)", "kwargsrepr": "{}", "origin": "gen1@host", "lang": "py"},
    ).marshal()
    started = clock()
    for _ in range(count):
        codec.decode_properties(raw)
    return count / (clock() - started)


def run(clock: Callable[[], float], count: int, size: int) -> list[str]:
    """The report lines of all benchmarks."""
    return [
        f"publish-parse  {bench_publish(clock, count, size):>12,.0f} msg/s  ({size} B bodies)",
        f"ack-parse      {bench_ack(clock, count):>12,.0f} msg/s",
        f"deliver-encode {bench_deliver(clock, count, size):>12,.0f} msg/s  ({size} B bodies)",
        f"confirm-encode {bench_confirm(clock, count):>12,.0f} msg/s",
        f"headers-decode {bench_headers(clock, count):>12,.0f} msg/s  (8 headers)",
    ]
