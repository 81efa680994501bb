"""A real HAProxy (Debian's haproxy) in front of Warren nodes, health-checking them the way
operators do RabbitMQ: ``option httpchk GET /api/health/checks/alarms`` on the HTTP port,
a TCP frontend for AMQP, and a HTTP frontend for the management API.

RabbitMQ answers that health check with 401 unless HAProxy sends credentials, so the line
marks every RabbitMQ node down; Warren answers it without credentials by default. A node
configured with ``health_checks_require_auth = true`` behaves as RabbitMQ does, and HAProxy
must then see it down: that second server proves the check is what decides. A third node
is in a memory alarm: its 503 takes it out of rotation.
"""

from __future__ import annotations

import csv
import io
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
import requests

from tests.integration.cluster_procs import free_port
from tests.integration.conftest import ServerProcess, start_server

HAPROXY = "/usr/sbin/haproxy"


class HAProxy:
    def __init__(self, workdir: Path, node: ServerProcess, guarded: ServerProcess, alarmed: ServerProcess) -> None:
        self.socket_path = workdir / "haproxy.sock"
        self.amqp_port = free_port()
        self.http_port = free_port()
        assert node.http_port is not None and guarded.http_port is not None and alarmed.http_port is not None
        config = f"""
global
    stats socket {self.socket_path} mode 600 level admin

defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    default-server inter 200ms fall 2 rise 1

frontend amqp
    mode tcp
    bind 127.0.0.1:{self.amqp_port}
    default_backend warren_amqp

backend warren_amqp
    mode tcp
    option httpchk GET /api/health/checks/alarms
    server warren1 127.0.0.1:{node.amqp_port} check port {node.http_port}
    server guarded 127.0.0.1:{guarded.amqp_port} check port {guarded.http_port}
    server alarmed 127.0.0.1:{alarmed.amqp_port} check port {alarmed.http_port}

frontend management
    mode http
    bind 127.0.0.1:{self.http_port}
    default_backend warren_http

backend warren_http
    mode http
    option httpchk GET /api/health/checks/alarms
    server warren1 127.0.0.1:{node.http_port} check
"""
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(config)
        checked = subprocess.run([HAPROXY, "-c", "-f", str(self.config_path)], capture_output=True, text=True,
                                 timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config_path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            assert self.proc.poll() is None, self.proc.communicate()[0]
            assert time.monotonic() < deadline, "haproxy did not open its stats socket"
            time.sleep(0.05)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[tuple[str, str], dict[str, str]]:
        """``show stat`` on the stats socket: (backend, server) -> its row (status, check_status, ...)."""
        text = self.command("show stat").lstrip("# ")
        return {(row["pxname"], row["svname"]): row for row in csv.DictReader(io.StringIO(text))
                if row["svname"] not in ("FRONTEND", "BACKEND")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


Nodes = tuple[ServerProcess, ServerProcess, ServerProcess]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    guarded_config = tmp_path / "guarded.toml"
    guarded_config.write_text("health_checks_require_auth = true\n")
    alarmed_config = tmp_path / "alarmed.toml"  # always above a one-byte memory watermark
    alarmed_config.write_text("[limits]\nmemory_high_watermark_bytes = 1\n")
    started: list[ServerProcess] = []
    try:
        # warren1 allows API clients 2 requests a second: HAProxy's checks (10 a second from one
        # address, two backends) must not count, or they would get 429s and mark it down
        limited_config = tmp_path / "limited.toml"
        limited_config.write_text("[limits]\napi_requests_per_second = 2.0\napi_burst = 5\n")
        started.append(start_server(tmp_path / "node", "--config", str(limited_config)))
        started.append(start_server(tmp_path / "guarded", "--config", str(guarded_config)))
        started.append(start_server(tmp_path / "alarmed", "--config", str(alarmed_config)))
        yield started[0], started[1], started[2]
    finally:
        for server in started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


@pytest.fixture
def haproxy(tmp_path: Path, nodes: Nodes) -> Iterator[HAProxy]:
    proxy = HAProxy(tmp_path, *nodes)
    try:
        yield proxy
    finally:
        proxy.stop()


def test_haproxy_health_checks_route_amqp_and_mark_a_stopped_node_down(
        nodes: Nodes, haproxy: HAProxy) -> None:
    node, _guarded, _alarmed = nodes

    def status(backend: str, server: str) -> str:
        return haproxy.servers()[(backend, server)]["status"]

    assert wait_until(lambda: status("warren_amqp", "warren1") == "UP"), haproxy.servers()
    assert wait_until(lambda: status("warren_http", "warren1") == "UP"), haproxy.servers()
    # the node that wants credentials on its health checks answers 401, as RabbitMQ does: DOWN
    assert wait_until(lambda: status("warren_amqp", "guarded") == "DOWN"), haproxy.servers()
    guarded_row = haproxy.servers()[("warren_amqp", "guarded")]
    assert guarded_row["check_status"] == "L7STS" and guarded_row["check_code"] == "401"
    # a node in a resource alarm answers 503: HAProxy sends its clients elsewhere
    assert wait_until(lambda: status("warren_amqp", "alarmed") == "DOWN"), haproxy.servers()
    assert haproxy.servers()[("warren_amqp", "alarmed")]["check_code"] == "503"
    assert haproxy.servers()[("warren_amqp", "warren1")]["check_code"] == "200"
    # with the other nodes down, every AMQP connection through HAProxy reaches warren1

    # a client that only knows HAProxy's address publishes and consumes
    params = pika.ConnectionParameters("127.0.0.1", haproxy.amqp_port, "/", pika.PlainCredentials("guest", "guest"),
                                       connection_attempts=1, socket_timeout=5)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("through-haproxy", durable=True)
    for i in range(5):
        ch.basic_publish("", "through-haproxy", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    received: list[bytes] = []
    for _method, _props, body in ch.consume("through-haproxy", auto_ack=True, inactivity_timeout=5):
        if body is None:
            break
        received.append(body)
        if len(received) == 5:
            break
    ch.cancel()
    assert received == [f"m{i}".encode() for i in range(5)]

    # the management API through HAProxy sees the queue and the connection that came through it
    api = f"http://127.0.0.1:{haproxy.http_port}"
    queue = requests.get(f"{api}/api/queues/%2F/through-haproxy", auth=("guest", "guest"), timeout=5)
    assert queue.status_code == 200 and queue.json()["name"] == "through-haproxy"
    connections = requests.get(f"{api}/api/connections", auth=("guest", "guest"), timeout=5).json()
    assert [c["peer_host"] for c in connections] == ["127.0.0.1"]
    conn.close()

    # stop the node: HAProxy's checks fail and it marks the server DOWN
    assert node.stop(signal.SIGTERM) == 0
    assert wait_until(lambda: status("warren_amqp", "warren1") == "DOWN"), haproxy.servers()
    assert wait_until(lambda: status("warren_http", "warren1") == "DOWN"), haproxy.servers()
    assert haproxy.servers()[("warren_amqp", "warren1")]["check_status"] in ("L4CON", "L7RSP", "L4TOUT")
    # and a client gets no broker through it
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params)
    assert requests.get(f"{api}/api/overview", auth=("guest", "guest"), timeout=5).status_code == 503
