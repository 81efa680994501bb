"""Prometheus metrics: RabbitMQ's names, valid exposition (promtool), scraped by a real Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.integration.cluster_procs import free_port

READY = re.compile(r"AMQP on [^:]+:(\d+).*HTTP on [^:]+:(\d+).*Prometheus on [^:]+:(\d+)")

# metric names the RabbitMQ-Overview Grafana dashboard queries (and a few more tools use)
DASHBOARD_METRICS = [
    "rabbitmq_identity_info", "rabbitmq_build_info", "rabbitmq_connections", "rabbitmq_channels",
    "rabbitmq_queues", "rabbitmq_channel_consumers", "rabbitmq_consumers",
    "rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
    "rabbitmq_channel_messages_published_total", "rabbitmq_channel_messages_confirmed_total",
    "rabbitmq_channel_messages_delivered_total", "rabbitmq_channel_messages_delivered_ack_total",
    "rabbitmq_channel_get_total", "rabbitmq_channel_get_ack_total",
    "rabbitmq_channel_messages_redelivered_total", "rabbitmq_channel_messages_acked_total",
    "rabbitmq_channel_messages_unroutable_dropped_total", "rabbitmq_channel_messages_unroutable_returned_total",
    "rabbitmq_queue_messages_published_total",
    "rabbitmq_global_messages_received_total", "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_total", "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_global_messages_routed_total",
    "rabbitmq_connections_opened_total", "rabbitmq_connections_closed_total",
    "rabbitmq_channels_opened_total", "rabbitmq_channels_closed_total",
    "rabbitmq_process_resident_memory_bytes", "rabbitmq_resident_memory_limit_bytes",
    "rabbitmq_disk_space_available_bytes", "rabbitmq_disk_space_available_limit_bytes",
    "rabbitmq_process_open_fds", "rabbitmq_process_max_fds",
    "rabbitmq_process_open_tcp_sockets", "rabbitmq_process_max_tcp_sockets",
    "rabbitmq_alarms_memory_used_watermark", "rabbitmq_alarms_free_disk_space_watermark",
    "warren_uptime_seconds", "warren_messages_ready",
]


class Server:
    def __init__(self, data_dir: Path) -> None:
        cmd = [sys.executable, "-m", "warren.cli", "server", "--data-dir", str(data_dir), "--amqp-port", "0",
               "--http-port", "0", "--prometheus-port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            match = READY.search(line)
            if match:
                self.amqp_port, self.http_port, self.prometheus_port = map(int, match.groups())
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise AssertionError("warren server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("metrics-node"))
    yield running
    running.stop()


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def test_dashboard_metric_names_on_both_ports_and_promtool_accepts_them(server: Server) -> None:
    for port in (server.prometheus_port, server.http_port):
        text = scrape(port)
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        missing = [m for m in DASHBOARD_METRICS if m not in names]
        assert not missing, missing
    check = subprocess.run(["promtool", "check", "metrics"], input=scrape(server.prometheus_port).encode(),
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    # the Prometheus port serves metrics only, not the management API
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.prometheus_port}/api/overview", timeout=5)


def test_values_follow_the_broker(server: Server) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{server.amqp_port}/%2F"))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("metrics-q")
    for _ in range(5):
        ch.basic_publish("", "metrics-q", b"m")
    per_object = scrape(server.prometheus_port, "/metrics/per-object")
    assert 'rabbitmq_queue_messages_ready{queue="metrics-q",vhost="/"} 5.0' in per_object
    text = scrape(server.prometheus_port)
    assert re.search(r"^rabbitmq_queue_messages_ready 5\.0$", text, re.M)
    assert re.search(r"^rabbitmq_connections 1\.0$", text, re.M)
    received = float(re.search(r"^rabbitmq_global_messages_received_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    confirmed = float(re.search(r"^rabbitmq_global_messages_confirmed_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert received >= 5 and confirmed >= 5
    conn.close()


def test_real_prometheus_scrapes_the_node(server: Server, tmp_path: Path) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{server.amqp_port}/%2F"))
    ch = conn.channel()
    ch.queue_declare("prom-q")
    for _ in range(3):
        ch.basic_publish("", "prom-q", b"m")
    web_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: warren\n    metrics_path: /metrics/per-object\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.prometheus_port}']\n"
    )
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = 'sum(rabbitmq_queue_messages_ready{queue="prom-q"} * on(instance) group_left(rabbitmq_cluster) rabbitmq_identity_info)'
        url = f"http://127.0.0.1:{web_port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        value = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    result = json.loads(resp.read())["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    if value == 3:
                        break
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        assert value == 3
        targets_url = f"http://127.0.0.1:{web_port}/api/v1/targets"
        with urllib.request.urlopen(targets_url, timeout=5) as resp:
            targets = json.loads(resp.read())["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        conn.close()
