"""`warren server` as a real process: start-up line, restarts, kill -9, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import signal
import threading
from pathlib import Path

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import pika
import pytest

from tests.integration.conftest import ServerProcess, start_server


def test_startup_line_reports_chosen_ports_and_data_dir(server_process: ServerProcess) -> None:
    line = server_process.output[-1]
    assert f"AMQP on 127.0.0.1:{server_process.amqp_port}" in line
    assert str(server_process.data_dir) in line
    assert server_process.amqp_port != 0


def test_sigterm_closes_connections_with_320(server_process: ServerProcess) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(server_process.url))
    closed: list[Exception] = []

    def wait_for_close() -> None:
        try:
            conn.process_data_events(time_limit=15)
        except pika.exceptions.ConnectionClosedByBroker as exc:
            closed.append(exc)

    waiter = threading.Thread(target=wait_for_close)
    waiter.start()
    assert server_process.stop(signal.SIGTERM) == 0
    waiter.join(timeout=20)
    assert closed and closed[0].reply_code == 320


def _publish_confirmed(url: str, queue: str, count: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    for i in range(count):
        ch.basic_publish("", queue, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()


def _drain(url: str, queue: str) -> list[tuple[bytes, bool]]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    got = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        got.append((body, method.redelivered))
    conn.close()
    return got


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_confirmed_persistent_messages_survive_restart(tmp_path: Path, sig: int) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        _publish_confirmed(server.url, "keep", 500)
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        ch.exchange_declare("durable-x", "topic", durable=True)
        ch.queue_declare("transient-q")
        ch.queue_bind("keep", "durable-x", "a.#")
        conn.close()
        server.stop(sig)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    restarted = start_server(data)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(restarted.url))
        ch = conn.channel()
        ch.exchange_declare("durable-x", "topic", passive=True, durable=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.queue_declare("transient-q", passive=True)
        ch = conn.channel()
        ch.basic_publish("durable-x", "a.b", b"via-binding", pika.BasicProperties(delivery_mode=2))
        conn.close()
        got = _drain(restarted.url, "keep")
        bodies = [body for body, _ in got]
        assert bodies == [f"m{i}".encode() for i in range(500)] + [b"via-binding"]
        assert all(redelivered for _, redelivered in got[:500])
    finally:
        restarted.stop()


def test_kill_during_publishing_loses_no_confirmed_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    confirmed: list[int] = []
    conn = pika.BlockingConnection(pika.URLParameters(server.url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("crash", durable=True)
    try:
        for i in range(100000):
            ch.basic_publish("", "crash", str(i).encode(), pika.BasicProperties(delivery_mode=2))
            confirmed.append(i)
            if i == 1500:
                server.proc.kill()
    except (pika.exceptions.AMQPError, OSError):
        pass
    server.proc.wait()
    assert len(confirmed) >= 1500
    restarted = start_server(data)
    try:
        got = [int(body) for body, _ in _drain(restarted.url, "crash")]
        assert set(confirmed) <= set(got)
        assert len(got) == len(set(got)), "a restart duplicated messages"
        assert got == sorted(got)
    finally:
        restarted.stop()


def test_bad_setting_gets_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "warren.cli", "server", "--data-dir", str(tmp_path), "--amqp-port", "0",
         "--http-port", "0", "--max-message-size", "0"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "max_message_size" in result.stderr


async def _publish_and_consume_until_killed(url: str, server: ServerProcess) -> tuple[set[int], set[int]]:
    """Many publishes in flight and a consumer acking, until kill -9 lands mid-stream."""
    confirmed: set[int] = set()
    acked: set[int] = set()
    connection = await aio_pika.connect(url)
    publisher = await connection.channel(publisher_confirms=True)
    queue = await publisher.declare_queue("crash-window", durable=True)
    consumer_channel = await connection.channel()
    await consumer_channel.set_qos(prefetch_count=50)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        number = int(message.body)
        if number % 2 == 0:  # ack the even ones; odd ones stay unacked until the crash
            await message.ack()
            acked.add(number)

    consumer_queue = await consumer_channel.get_queue("crash-window")
    await consumer_queue.consume(on_message)

    async def publish(number: int) -> None:
        await publisher.default_exchange.publish(
            aio_pika.Message(str(number).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name)
        confirmed.add(number)

    try:
        for start in range(0, 100_000, 200):  # windows of 200 unconfirmed publishes
            await asyncio.gather(*(publish(n) for n in range(start, start + 200)))
            if len(confirmed) >= 3000 and server.proc.poll() is None:
                server.proc.kill()  # the next window is in flight when the node dies
    except (aio_pika.exceptions.AMQPError, ConnectionError, asyncio.CancelledError, RuntimeError):
        pass
    with contextlib.suppress(Exception):
        await connection.close()
    return confirmed, acked


def test_kill_with_many_confirms_in_flight_keeps_every_confirmed_unacked_message_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    confirmed, acked = asyncio.run(_publish_and_consume_until_killed(server.url, server))
    server.proc.wait(timeout=20)
    assert len(confirmed) >= 3000
    restarted = start_server(data)
    try:
        got = [int(body) for body, _ in _drain(restarted.url, "crash-window")]
        assert len(got) == len(set(got)), "a restart duplicated messages"
        missing = confirmed - acked - set(got)
        assert not missing, f"{len(missing)} confirmed, unacknowledged messages lost, e.g. {sorted(missing)[:5]}"
        assert set(got) <= set(range(max(confirmed) + 400)), "a message nobody published appeared"
    finally:
        restarted.stop()


def test_decimal_and_timestamp_arguments_survive_a_restart(tmp_path: Path) -> None:
    # AMQP tables may carry decimals and timestamps; storing them must not break the vhost.
    arguments = {"x-custom-decimal": decimal.Decimal("3.25"),
                 "x-custom-time": datetime.datetime(2026, 1, 2, 3, 4, 5)}
    data = tmp_path / "data"
    server = start_server(data)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        ch.queue_declare("odd-args", durable=True, arguments=arguments)
        ch.queue_declare("after-odd-args", durable=True)  # later durable changes still persist
        conn.close()
    finally:
        server.stop(signal.SIGKILL)
    restarted = start_server(data)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(restarted.url))
        ch = conn.channel()
        ch.queue_declare("after-odd-args", durable=True, passive=True)
        ch.queue_declare("odd-args", durable=True, arguments=arguments)  # equivalent: no 406
        conn.close()
    finally:
        restarted.stop()
