"""Faults on a local cluster (``warren cluster up``'s processes), for real: signals to the
node processes, restarts from their own data.

- ``kill``: SIGKILL a node, restart it ``fault_seconds`` later;
- ``pause``: SIGSTOP a node, SIGCONT it ``fault_seconds`` later (a node that wakes up late);
- ``leader``: SIGKILL the node leading the most of the run's quorum queues, then restart it.

Network partitions are not here yet (the README's limitations say so).
"""

from __future__ import annotations

import json
import os
import random
import signal
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren.cli.cluster_cmd import restart_node

NEMESES = ("kill", "pause", "leader")


@dataclass
class Fault:
    nemesis: str
    node: str
    start: float  # seconds since the run started
    healed: float = 0.0
    unavailable_seconds: float = 0.0  # the longest stretch without a confirm on any queue

    def as_dict(self) -> dict[str, Any]:
        return {"nemesis": self.nemesis, "node": self.node, "start": round(self.start, 3),
                "healed": round(self.healed, 3), "unavailable_seconds": round(self.unavailable_seconds, 3)}


class LocalNemesis:
    def __init__(self, root: Path, state: dict[str, Any], queues: list[str], rng: random.Random) -> None:
        self.root = root
        self.state = state
        self.queues = queues
        self.rng = rng
        self.down: dict[str, str] = {}  # node -> how it is down ("kill" | "pause")

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.state["nodes"])

    def target(self, nemesis: str) -> str:
        if nemesis == "leader":
            leader = self._busiest_leader()
            if leader is not None:
                return leader
        return str(self.rng.choice(self.nodes())["name"])

    def start(self, nemesis: str, name: str) -> None:
        node = self._node(name)
        if nemesis == "pause":
            os.kill(int(node["pid"]), signal.SIGSTOP)
            self.down[name] = "pause"
        else:
            os.kill(int(node["pid"]), signal.SIGKILL)
            self.down[name] = "kill"

    def heal(self, name: str) -> None:
        how = self.down.pop(name, None)
        node = self._node(name)
        if how == "pause":
            os.kill(int(node["pid"]), signal.SIGCONT)
        elif how == "kill":
            _reap(int(node["pid"]))
            restart_node(self.root, self.state, name)

    def heal_all(self) -> None:
        for name in list(self.down):
            self.heal(name)

    def _node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.state["nodes"] if n["name"] == name)

    def _busiest_leader(self) -> str | None:
        for node in self.nodes():
            listed = None if node["name"] in self.down else listed_queues(node)
            if listed is None:
                continue
            leaders = Counter(q.get("leader") for q in listed if q["name"] in self.queues and q.get("leader"))
            if leaders:
                return str(leaders.most_common(1)[0][0])
        return None


def listed_queues(node: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A node's ``/api/queues`` (as guest, the local cluster's user); None if it does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{node['http_port']}/api/queues")
    request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
    try:
        with urllib.request.urlopen(request, timeout=3) as answer:
            listed: list[dict[str, Any]] = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return listed


def _reap(pid: int) -> None:
    """Collect a killed child so its pid does not linger as a zombie (the restart needs
    its ports free; a zombie holds none, but ``_alive`` checks would see it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def unavailable_seconds(confirms: dict[str, list[float]], start: float, end: float) -> float:
    """The longest stretch in [start, end] during which some queue had no confirm."""
    worst = 0.0
    for times in confirms.values():
        inside = sorted(t for t in times if start <= t <= end)
        points = [start, *inside, end]
        worst = max(worst, *(b - a for a, b in zip(points, points[1:], strict=False)))
    return worst
