"""`warren bench` as a user runs it: a real process against a real node over TCP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from warren.embed import ThreadedNode, run_node

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node() as running:
        yield running


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warren.cli", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_bench_json_figures_are_consistent(node: ThreadedNode) -> None:
    done = bench("--url", node.amqp_url, "--messages", "3000", "--publishers", "2", "--consumers", "2",
                 "--size", "1024", "--confirm-window", "50", "--prefetch", "50", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["published"] == 3000
    assert result["confirmed"] == 3000 and result["nacked"] == 0
    assert result["delivered"] == result["confirmed"]
    assert result["publish_rate"] > 0 and result["deliver_rate"] > 0
    latency = result["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert "guest:guest" not in result["broker"]  # the password is not printed
    # the benchmark's queue is gone afterwards
    with pika.BlockingConnection(pika.URLParameters(node.amqp_url)) as conn:
        channel = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            channel.queue_declare(result["queue"], passive=True)
        assert info.value.reply_code == 404


def test_bench_duration_without_confirms_prints_a_table(node: ThreadedNode) -> None:
    done = bench("--url", node.amqp_url, "--duration", "1", "--confirm-window", "0", "--transient")
    assert done.returncode == 0, done.stderr
    assert "publishes/s" in done.stdout and "deliveries/s" in done.stdout
    assert "latency p50 / p95 / p99" in done.stdout


def test_bench_unreachable_url_is_one_line_and_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    done = bench("--url", f"amqp://guest:guest@127.0.0.1:{port}/%2F", "--messages", "10")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("warren bench: cannot connect to 127.0.0.1:") and "refused" in lines[0]


def test_bench_wrong_password_names_the_fix(node: ThreadedNode) -> None:
    url = node.amqp_url.replace("guest:guest", "guest:wrong")
    done = bench("--url", url, "--messages", "10")
    assert done.returncode == 1
    assert "check the user, password and vhost in --url" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


def test_queued_persistent_bodies_stay_out_of_ram_also_after_a_restart(tmp_path: Path) -> None:
    """20,000 queued 1 KB persistent messages cost the node far less RAM than their bodies."""
    from tests.integration.conftest import start_server

    count, size = 20_000, 1024
    server = start_server(tmp_path / "data")
    try:
        before = _rss_anon(server.proc.pid)
        done = bench("--url", server.url, "--consumers", "0", "--messages", str(count), "--size", str(size),
                     "--confirm-window", "500", "--queue", "held", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["confirmed"] == count
        grown = (_rss_anon(server.proc.pid) - before) / count
        assert grown < size * 0.6, f"{grown:.0f} bytes of RAM per queued {size} B message"
        assert server.stop() == 0
        server = start_server(tmp_path / "data")  # recovery reads every body back from the store
        grown = (_rss_anon(server.proc.pid) - before) / count
        assert grown < size * 0.6, f"{grown:.0f} bytes of RAM per recovered {size} B message"
        with pika.BlockingConnection(pika.URLParameters(server.url)) as conn:
            channel = conn.channel()
            assert channel.queue_declare("held", durable=True, passive=True).method.message_count == count
            method, _props, body = channel.basic_get("held", auto_ack=True)
            assert method is not None and len(body) == size and method.redelivered
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
