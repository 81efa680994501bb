"""The memory alarm against a real `warren server` process: it clears once memory is freed,
and publishes still being assembled cannot take the node past its watermark."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import psutil
import pytest
from pamqp import commands, frame

from tests.integration.conftest import ServerProcess, start_server
from tests.unit.amqp.wire import PROTOCOL_HEADER, body_frame, header_frame, method

MIB = 1024 * 1024
HEARTBEAT = 2  # seconds: the node's heartbeats reveal a closed peer it no longer reads


def _alarms_health(server: ServerProcess) -> int:
    url = f"http://127.0.0.1:{server.http_port}/api/health/checks/alarms"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture
def low_watermark_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    server = start_server(tmp_path / "data", "--memory-high-watermark", str(request.param))
    try:
        yield server
    finally:
        server.kill()


class _FillingPublisher(threading.Thread):
    """A pika publisher that fills the node until it is blocked, waits to be unblocked, then
    publishes one confirmed message.

    It runs in its own thread because a blocked connection is not read: whatever pika still
    writes after the block waits in the kernel until the alarm clears, and how much fits
    there depends on how far the node lagged behind (nothing on a slow machine). pika's
    BlockingConnection runs the blocked callbacks only in process_data_events, so the
    callbacks are seen once that write returns.
    """

    def __init__(self, url: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.url, self.deadline = url, deadline
        self.events: list[tuple[str, float]] = []
        self.confirmed_after_unblock = False
        self.error: BaseException | None = None

    def _kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            connection.add_on_connection_blocked_callback(
                lambda *_: self.events.append(("blocked", time.monotonic())))
            connection.add_on_connection_unblocked_callback(
                lambda *_: self.events.append(("unblocked", time.monotonic())))
            channel = connection.channel()
            channel.queue_declare("fill")
            body = b"x" * 10_000
            while "blocked" not in self._kinds() and time.monotonic() < self.deadline:
                channel.basic_publish("", "fill", body)  # transient: it stays in memory
                connection.process_data_events(time_limit=0)
            while "unblocked" not in self._kinds() and time.monotonic() < self.deadline:
                connection.process_data_events(time_limit=0.1)
            if "unblocked" in self._kinds():
                channel.confirm_delivery()
                channel.basic_publish("", "fill", b"after")
                self.confirmed_after_unblock = True
            connection.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.parametrize("low_watermark_server", [120 * MIB], indirect=True)
def test_memory_alarm_clears_after_the_queue_is_drained(low_watermark_server: ServerProcess) -> None:
    server = low_watermark_server
    baseline = psutil.Process(server.proc.pid).memory_info().rss
    assert baseline < 100 * MIB, "the idle node alone is near the watermark: the test means nothing"
    deadline = time.monotonic() + 120
    publisher = _FillingPublisher(server.url, deadline)
    publisher.start()
    while _alarms_health(server) != 503:
        assert time.monotonic() < deadline - 60 and publisher.is_alive(), f"never blocked ({publisher.error!r})"
        time.sleep(0.1)

    consumer = pika.BlockingConnection(pika.URLParameters(server.url))
    consumer_channel = consumer.channel()
    consumer_channel.basic_qos(prefetch_count=2000)
    consumer_channel.basic_consume("fill", lambda ch, m, p, b: None, auto_ack=True)
    drained_at: float | None = None
    while _alarms_health(server) != 200:
        now = time.monotonic()
        assert now < deadline, "the queue was never drained"
        # the alarm watcher reads memory once a second: a few readings at most after the drain
        assert drained_at is None or now - drained_at < 10, "the alarm did not clear after the drain"
        consumer.process_data_events(time_limit=0.1)
        if drained_at is None and consumer_channel.queue_declare("fill", passive=True).method.message_count == 0:
            drained_at = time.monotonic()
    publisher.join(timeout=max(0.0, deadline - time.monotonic()))
    consumer.close()
    assert publisher.error is None, publisher.error
    assert [kind for kind, _ in publisher.events] == ["blocked", "unblocked"], publisher.events
    # the same publisher works again: a confirmed publish went through
    assert publisher.confirmed_after_unblock


class _RawPublisher:
    """A client on a raw socket that starts one large publish and never finishes it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.buffer = bytearray()
        self.frames: list[object] = []
        self.sent = 0

    def read_frame(self) -> object:
        while True:
            try:
                consumed, _channel, value = frame.unmarshal(bytes(self.buffer))
            except Exception:  # noqa: BLE001 - an incomplete frame: read more
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection") from None
                self.buffer.extend(chunk)
                continue
            del self.buffer[:consumed]
            self.frames.append(value)
            return value

    def expect(self, kind: type) -> None:
        while not isinstance(self.read_frame(), kind):
            pass

    def open(self) -> None:
        self.sock.sendall(PROTOCOL_HEADER)
        self.expect(commands.Connection.Start)
        self.sock.sendall(method(0, commands.Connection.StartOk(
            client_properties={"capabilities": {"connection.blocked": True}},
            mechanism="PLAIN", response="\x00guest\x00guest", locale="en_US")))
        self.expect(commands.Connection.Tune)
        self.sock.sendall(method(0, commands.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=HEARTBEAT)))
        self.sock.sendall(method(0, commands.Connection.Open(virtual_host="/")))
        self.expect(commands.Connection.OpenOk)
        self.sock.sendall(method(1, commands.Channel.Open()))
        self.expect(commands.Channel.OpenOk)

    def push_partial_body(self, announced: int, send: int, stall_seconds: float) -> None:
        """Announce ``announced`` body bytes, send up to ``send`` of them; stop when the server
        stops reading for ``stall_seconds``."""
        self.sock.sendall(method(1, commands.Basic.Publish(exchange="", routing_key="big")))
        self.sock.sendall(header_frame(1, announced))
        chunk = body_frame(1, b"b" * (131072 - 8))
        self.sock.settimeout(stall_seconds)
        try:
            while self.sent < send:
                self.sock.sendall(chunk)
                self.sent += len(chunk)
        except TimeoutError:
            pass  # the server no longer reads us
        self.sock.settimeout(10)

    def stays_open(self, seconds: float) -> bool:
        """True when the server neither closes nor drops us for ``seconds`` (heartbeats only)."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if isinstance(self.read_frame(), commands.Connection.Close):
                    return False
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            return False
        finally:
            self.sock.settimeout(10)
        return True


@pytest.mark.parametrize("low_watermark_server", [150 * MIB], indirect=True)
def test_unfinished_large_publishes_are_blocked_at_the_watermark(low_watermark_server: ServerProcess) -> None:
    server = low_watermark_server
    watermark = 150 * MIB
    process = psutil.Process(server.proc.pid)
    assert process.memory_info().rss < 100 * MIB
    count, announced, send = 6, 60 * MIB, 50 * MIB  # 300 MB of partial bodies if nothing stops them
    clients = [_RawPublisher(server.amqp_port) for _ in range(count)]
    for client in clients:
        client.open()
    blocked: list[bool] = [False] * count
    kept: list[bool] = [False] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        client = clients[index]
        try:
            client.push_partial_body(announced, send, stall_seconds=2.0)
            client.expect(commands.Connection.Blocked)
            blocked[index] = True
            # a blocked publisher is not read, so it cannot be heard: it must not be cut off
            # for missed heartbeats while the alarm lasts
            kept[index] = client.stays_open(2.5 * HEARTBEAT)
        except TimeoutError:
            pass  # no connection.blocked within the socket timeout
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    peak = 0
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.02)
    assert peak < watermark * 1.1, f"node RSS peaked at {peak // MIB} MiB under a {watermark // MIB} MiB watermark"
    assert not errors, errors
    assert all(blocked), f"connection.blocked reached {sum(blocked)} of {count} publishers"
    assert all(kept), f"{count - sum(kept)} blocked publishers were disconnected"
    assert sum(client.sent for client in clients) < count * send  # they were stopped, not finished

    # Closing the sockets frees the partial bodies (the node's next heartbeat write finds the
    # peer gone): the alarm clears.
    for client in clients:
        client.sock.close()
    deadline = time.monotonic() + 10
    while _alarms_health(server) != 200:
        assert time.monotonic() < deadline, "the memory alarm stayed on after the publishers left"
        time.sleep(0.2)
