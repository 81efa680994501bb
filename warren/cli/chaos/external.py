"""An existing cluster for ``warren chaos --cluster-file F``: Warren's or another broker's
(RabbitMQ's), described by a JSON file, faulted through the commands it gives.

    {"broker": "rabbitmq",
     "nodes": [{"name": "rabbit@10.0.0.1",                  # as the broker names it (a queue's "leader")
                "amqp": "amqp://guest:guest@10.0.0.1:5672/%2F",
                "http": "http://guest:guest@10.0.0.1:15672", # management API: leaders, queue depths
                "kill": "kill -KILL $(cat /run/r1.pid)",    # shell commands, run with sh -c
                "pause": "kill -STOP $(cat /run/r1.pid)",
                "resume": "kill -CONT $(cat /run/r1.pid)",
                "restart": "/srv/r1/start",                 # after a kill; the node must then accept AMQP
                "data_dir": "/srv/r1/data"},                # its own filesystem, for the disk nemesis
               ...],
     "network": {...}}                                      # a NetLab record, for the partition nemesis

``name``, ``amqp`` and ``http`` are required (the run reads leaders and queue depths from
the management API, Warren's or RabbitMQ's); each nemesis needs its keys on every node
(:func:`missing_for`), and ``warren chaos`` says which are missing. ``scripts/rabbitmq-cluster``
writes such a file for a local RabbitMQ cluster in network namespaces.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

from warren.cli.chaos.nemesis import RESTART_TIMEOUT_SECONDS, NemesisError

COMMAND_TIMEOUT_SECONDS = 60.0
NEEDS = {"kill": ("kill", "restart"), "leader": ("kill", "restart"), "pause": ("pause", "resume"),
         "disk": ("data_dir",), "partition": ()}


class ClusterFileError(Exception):
    """The cluster file cannot be read or lacks what the run needs."""


def load(path: Path) -> dict[str, Any]:
    """The cluster file as ``warren chaos``'s state: ``{"broker", "nodes", "network"}``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClusterFileError(f"cannot read the cluster file {path}: {exc}") from None
    nodes = record.get("nodes") if isinstance(record, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise ClusterFileError(f"{path} has no \"nodes\" list")
    for index, node in enumerate(nodes):
        if not isinstance(node, dict) or not all(node.get(key) for key in ("name", "amqp", "http")):
            raise ClusterFileError(f"{path}: node {index} needs a \"name\", an \"amqp\" URL and an \"http\" URL "
                                   "(the management API)")
    names = [node["name"] for node in nodes]
    if len(set(names)) != len(names):
        raise ClusterFileError(f"{path}: node names repeat")
    network = record.get("network")
    if network and sorted(network.get("nodes", [])) != sorted(names):
        raise ClusterFileError(f"{path}: the network's nodes {network.get('nodes')} are not the nodes {names}")
    return {"broker": str(record.get("broker", "warren")), "nodes": nodes, "network": network or None}


def missing_for(state: dict[str, Any], nemeses: list[str]) -> list[str]:
    """What the file lacks for these nemeses, as sentences (empty: it has everything)."""
    missing = []
    for nemesis in nemeses:
        if nemesis == "partition" and not state.get("network"):
            missing.append("partition needs a \"network\" (the nodes in network namespaces, a NetLab record)")
        for key in NEEDS[nemesis]:
            lacking = [str(n["name"]) for n in state["nodes"] if not n.get(key)]
            if lacking:
                missing.append(f"{nemesis} needs \"{key}\" on {', '.join(lacking)}")
    return missing


class CommandError(NemesisError):
    """A node's command failed, or a restarted node did not serve in time."""


class CommandProcesses:
    """A node's kill, pause, resume and restart are the cluster file's shell commands."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.nodes = {str(n["name"]): n for n in state["nodes"]}

    def _run(self, name: str, what: str) -> None:
        command = self.nodes[name][what]
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
        if done.returncode != 0:
            raise CommandError(f"{what} {name}: `{command}` exited {done.returncode}: {done.stderr.strip()}")

    def kill(self, name: str) -> None:
        self._run(name, "kill")

    def pause(self, name: str) -> None:
        self._run(name, "pause")

    def resume(self, name: str) -> None:
        self._run(name, "resume")

    def restart(self, name: str) -> None:
        self._run(name, "restart")
        wait_amqp(str(self.nodes[name]["amqp"]), RESTART_TIMEOUT_SECONDS)


def wait_amqp(url: str, timeout: float) -> None:
    """Until the URL's host accepts TCP on its AMQP port and answers the protocol header."""
    parts = urllib.parse.urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 5672)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(address, timeout=2) as conn:
                conn.sendall(b"AMQP\x00\x00\x09\x01")
                conn.settimeout(5)
                if conn.recv(1):  # connection.start: the broker is serving
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise CommandError(f"{address[0]}:{address[1]} does not serve AMQP {timeout:.0f} s after its restart")
        time.sleep(0.5)
