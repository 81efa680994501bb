"""`warren cluster up|down|status` with real processes and a real HAProxy (Debian's haproxy).

Three nodes and a HAProxy come up from one command; a client that knows only HAProxy's
address declares a durable queue, publishes with confirms and gets the message back; node 2
sees the queue; `status` reports three alive members; a second `up` on the running dir is
refused; `down` stops every pid, and a second `down` is harmless. A finalizer runs `down`
and SIGKILLs every pid it knows of, so nothing outlives the test, even when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import psutil
import pytest
import requests

pytestmark = pytest.mark.timeout(120)

HAPROXY = "/usr/sbin/haproxy"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warren.cli", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout)


def gone(pid: int) -> bool:
    """No such process, or a zombie (the detached processes' reaper is not us)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.pids: set[int] = set()

    def remember(self) -> None:
        """Every pid the state file names (so the finalizer finds them even if `up` failed)."""
        try:
            state: dict[str, Any] = json.loads((self.dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return
        for proc in [*state.get("nodes", []), state.get("lb") or {}]:
            if proc.get("pid"):
                self.pids.add(int(proc["pid"]))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.remember()
        cli("down", "--dir", str(c.dir), "--timeout", "5", timeout=30)
        for pid in c.pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="needs Debian's haproxy (apt-get install haproxy)")
def test_cluster_up_with_lb_serves_clients_status_and_down(cluster: Cluster) -> None:
    started = time.monotonic()
    up = cli("up", "--nodes", "3", "--lb", "--json", "--dir", str(cluster.dir))
    cluster.remember()
    up_seconds = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    summary = json.loads(up.stdout)  # exactly one JSON object, nothing else on stdout
    print(f"\nwarren cluster up --nodes 3 --lb: {up_seconds:.1f}s")
    assert summary["dir"] == str(cluster.dir.resolve())
    assert [n["name"] for n in summary["nodes"]] == ["warren-1", "warren-2", "warren-3"]
    assert {"name", "amqp_url", "http_url", "cluster_address", "pid", "data_dir"} <= set(summary["nodes"][0])
    assert summary["lb"] is not None and {"amqp_url", "http_url", "pid"} <= set(summary["lb"])
    pids = [n["pid"] for n in summary["nodes"]] + [summary["lb"]["pid"]]
    cluster.pids.update(pids)
    assert not any(gone(pid) for pid in pids)
    assert all(Path(n["data_dir"]).is_dir() for n in summary["nodes"])

    # a client that only knows HAProxy's address: durable queue, confirmed publish, get it back
    through_lb = pika.BlockingConnection(pika.URLParameters(summary["lb"]["amqp_url"]))
    ch = through_lb.channel()
    ch.confirm_delivery()
    ch.queue_declare("via-lb", durable=True)
    ch.basic_publish("", "via-lb", b"hello cluster", pika.BasicProperties(delivery_mode=2), mandatory=True)
    method, _props, body = ch.basic_get("via-lb", auto_ack=True)
    assert method is not None and body == b"hello cluster"
    through_lb.close()

    # our users' management-API script: a quorum queue declared through HAProxy's HTTP port
    ha_queue = {"durable": True, "auto_delete": False, "arguments": {
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 3, "x-max-length": 10000,
        "x-overflow": "reject-publish"}}
    lb_http = summary["lb"]["http_url"].rstrip("/")
    put = requests.put(f"{lb_http}/api/queues/%2F/ha_queue", json=ha_queue, auth=("guest", "guest"), timeout=10)
    assert put.status_code == 201, put.text
    shown = requests.get(f"{lb_http}/api/queues/%2F/ha_queue", auth=("guest", "guest"), timeout=10).json()
    assert shown["type"] == "quorum" and len(shown["members"]) == 3, shown
    through_lb = pika.BlockingConnection(pika.URLParameters(summary["lb"]["amqp_url"]))
    ch = through_lb.channel()
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", "ha_queue", b"%d" % i, pika.BasicProperties(delivery_mode=2), mandatory=True)
    assert ch.queue_declare("ha_queue", passive=True).method.message_count == 20
    through_lb.close()

    # node 2 sees the queue (definitions live in the metadata group)
    direct = pika.BlockingConnection(pika.URLParameters(summary["nodes"][1]["amqp_url"]))
    assert direct.channel().queue_declare("via-lb", passive=True).method.queue == "via-lb"
    direct.close()

    status = cli("status", "--json", "--dir", str(cluster.dir))
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    names = {"warren-1", "warren-2", "warren-3"}
    for node in report["nodes"]:
        assert node["running"] and node["members"] == dict.fromkeys(names, "alive"), node
    assert len({node["leader"] for node in report["nodes"]}) == 1
    assert report["lb"]["running"] and set(report["lb"]["servers"].values()) == {"UP"}
    assert len(report["lb"]["servers"]) == 6  # 3 AMQP + 3 HTTP servers

    again = cli("up", "--nodes", "3", "--lb", "--dir", str(cluster.dir))
    assert again.returncode == 1 and "warren cluster down" in again.stderr, again.stderr
    assert not any(gone(pid) for pid in pids)  # the refused `up` touched nothing

    stopped = time.monotonic()
    down = cli("down", "--dir", str(cluster.dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]
    print(f"warren cluster down: {time.monotonic() - stopped:.1f}s ({down.stdout.strip()})")
    assert all(Path(n["data_dir"]).is_dir() for n in summary["nodes"])  # data kept without --purge
    second = cli("down", "--dir", str(cluster.dir))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "not running" in second.stdout
