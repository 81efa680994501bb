"""Fixtures that run real Warren nodes: in a subprocess (``server_process``) or in-process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from warren.embed import ThreadedNode, run_node

STARTUP = re.compile(r"AMQP on [^:]+:(\d+)")
HTTP = re.compile(r"HTTP on [^:]+:(\d+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    data_dir: Path
    amqp_port: int
    http_port: int | None
    output: list[str]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def kill(self) -> None:
        """kill -9, if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def start_server(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """Start `warren server` on free ports and wait for its start-up line."""
    cmd = [sys.executable, "-m", "warren.cli", "server", "--data-dir", str(data_dir),
           "--amqp-port", "0", "--http-port", "0", "--prometheus-port", "-1", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    output: list[str] = []
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        match = STARTUP.search(line)
        if match:
            http = HTTP.search(line)
            return ServerProcess(proc, data_dir, int(match.group(1)), int(http.group(1)) if http else None, output)
    proc.kill()
    raise AssertionError("warren server did not start:\n" + "".join(output))


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path / "data")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def node() -> Iterator[ThreadedNode]:
    with run_node() as running:
        yield running


@pytest.fixture
def connection(node: ThreadedNode) -> Iterator[pika.BlockingConnection]:
    conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


@pytest.fixture
def channel(connection: pika.BlockingConnection) -> pika.adapters.blocking_connection.BlockingChannel:
    return connection.channel()


@pytest.fixture(scope="module")
def make(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``make(name, secret=...)``: a cluster member (not started) of this module's cluster;
    every process the module started is killed at its end."""
    from tests.integration.cluster_procs import member_factory

    started: list[Any] = []
    try:
        yield member_factory(tmp_path_factory.mktemp("cluster"), started)
    finally:
        for member in started:
            member.kill()


@pytest.fixture(scope="module")
def trio(make: Any) -> list[Any]:
    """Three members formed from seeds: a bootstraps, b joins through a, c through b (b is
    not the leader: it redirects c to a)."""
    a, b, c = make("a"), make("b"), make("c")
    a.start()
    b.start(seeds=[a])
    c.start(seeds=[b])
    return [a, b, c]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    from tests.integration.test_ui import CHROMIUM, CHROMIUM_ARGS

    # a missing browser is a broken test environment, not a reason to skip the UI test
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium (scripts/debian-packages.txt)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
