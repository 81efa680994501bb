"""The memory alarm against a real `warren server` process: it clears once memory is freed."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import psutil
import pytest

from tests.integration.conftest import ServerProcess, start_server

MIB = 1024 * 1024


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
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.mark.parametrize("low_watermark_server", [120 * MIB], indirect=True)
def test_memory_alarm_clears_after_the_queue_is_drained(low_watermark_server: ServerProcess) -> None:
    server = low_watermark_server
    baseline = psutil.Process(server.proc.pid).memory_info().rss
    assert baseline < 100 * MIB, "the idle node alone is near the watermark: the test means nothing"
    publisher = pika.BlockingConnection(pika.URLParameters(server.url))
    events: list[tuple[str, float]] = []
    publisher.add_on_connection_blocked_callback(lambda *_: events.append(("blocked", time.monotonic())))
    publisher.add_on_connection_unblocked_callback(lambda *_: events.append(("unblocked", time.monotonic())))
    channel = publisher.channel()
    channel.queue_declare("fill")
    body = b"x" * 10_000
    deadline = time.monotonic() + 60
    while not events:  # transient messages until the node runs into its watermark
        assert time.monotonic() < deadline, "never blocked"
        for _ in range(100):
            channel.basic_publish("", "fill", body)
        publisher.process_data_events(time_limit=0)
    assert _alarms_health(server) == 503

    consumer = pika.BlockingConnection(pika.URLParameters(server.url))
    consumer_channel = consumer.channel()
    consumer_channel.basic_qos(prefetch_count=2000)
    consumer_channel.basic_consume("fill", lambda ch, m, p, b: None, auto_ack=True)
    drained_at: float | None = None
    while not any(kind == "unblocked" for kind, _ in events):
        now = time.monotonic()
        assert now < deadline + 60, "the queue was never drained"
        # the alarm watcher reads memory once a second: a few readings at most after the drain
        assert drained_at is None or now - drained_at < 10, "connection.unblocked never came after the drain"
        consumer.process_data_events(time_limit=0.1)
        publisher.process_data_events(time_limit=0)
        if drained_at is None and consumer_channel.queue_declare("fill", passive=True).method.message_count == 0:
            drained_at = time.monotonic()
    assert _alarms_health(server) == 200
    consumer.close()
    # the publisher works again: a confirmed publish goes through
    channel.confirm_delivery()
    channel.basic_publish("", "fill", b"after")
    assert channel.queue_declare("fill", passive=True).method.message_count >= 1
    publisher.close()

