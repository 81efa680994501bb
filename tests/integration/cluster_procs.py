"""Real `warren server` cluster members for the cluster tests: start, kill, ask over HTTP."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.integration.conftest import HTTP, STARTUP

SECRET = "formation-test-secret"
SUSPECT_AFTER, DEAD_AFTER, JOIN_TIMEOUT = 0.5, 1.5, 3.0
LIMITS = f"""
[limits]
cluster_suspect_after_seconds = {SUSPECT_AFTER}
cluster_dead_after_seconds = {DEAD_AFTER}
cluster_join_timeout_seconds = {JOIN_TIMEOUT}
cluster_request_timeout_seconds = 3.0
"""


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768 up): a port the kernel picked
    for us could be given to another process's outgoing connection before the node binds it."""
    while True:
        port = random.randint(10000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class Member:
    name: str
    data_dir: Path
    cluster_port: int
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    http_port: int = 0
    amqp_port: int = 0

    def start(self, seeds: list[Member] | None = None, wait: bool = True) -> None:
        cmd = [sys.executable, "-m", "warren.cli", "server", "--data-dir", str(self.data_dir),
               "--amqp-port", "0", "--http-port", "0", "--prometheus-port", "-1",
               "--node-name", self.name, "--cluster-port", str(self.cluster_port), *self.args]
        if seeds:
            cmd += ["--seeds", ",".join(f"127.0.0.1:{s.cluster_port}" for s in seeds)]
        self.output = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **self.env})
        ready = threading.Event()

        def drain() -> None:  # keeps reading, so a chatty node never blocks on a full pipe
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if STARTUP.search(line):
                    http = HTTP.search(line)
                    assert http is not None
                    self.http_port = int(http.group(1))
                    self.amqp_port = int(STARTUP.search(line).group(1))  # type: ignore[union-attr]
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if wait:
            assert ready.wait(30), self.log()
            assert self.http_port, f"{self.name} did not start:\n{self.log()}"

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def log(self) -> str:
        return "".join(self.output)

    def get(self, path: str) -> Any:
        r = requests.get(f"http://127.0.0.1:{self.http_port}{path}", auth=("guest", "guest"), timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"http://127.0.0.1:{self.http_port}{path}", json=body,
                             auth=("guest", "guest"), timeout=10)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def put(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.put(f"http://127.0.0.1:{self.http_port}{path}", json=body,
                            auth=("guest", "guest"), timeout=15)

    def pause(self) -> None:
        """SIGSTOP: the process stops answering anyone, as if cut off by a partition."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.get("/v1/cluster/info")
        return info


def member_factory(base: Path, started: list[Member], extra_limits: str = "") -> Callable[..., Member]:
    """Members with data dirs under ``base``, one secret and short cluster timeouts (and
    ``extra_limits``: more lines of the [limits] table)."""
    config = base / "limits.toml"
    config.write_text(LIMITS + extra_limits)

    def make(name: str, secret: str = SECRET) -> Member:
        member = Member(name, base / name, free_port(), ["--config", str(config)],
                        {"WARREN_CLUSTER_SECRET": secret, "WARREN_LOG_LEVEL": "info"})
        started.append(member)
        return member

    return make


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled every 20 ms); fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start
