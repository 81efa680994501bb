"""Faults on a cluster, for real: signals to the node processes (``warren cluster up``'s, or
an existing cluster's through its own commands, :mod:`~warren.cli.chaos.external`),
restarts from their own data, packets dropped between namespaces, a filled disk.

- ``kill``: SIGKILL a node, restart it ``fault_seconds`` later;
- ``pause``: SIGSTOP a node, SIGCONT it ``fault_seconds`` later (a node that wakes up late);
- ``leader``: SIGKILL the node leading the most of the run's quorum queues, then restart it;
- ``partition``: cut the network between nodes (:class:`~warren.cli.chaos.netlab.NetLab`),
  taking Jepsen's shapes in turn: ``isolate`` (the busiest leader alone), ``halves``,
  ``bridge`` (two sides that one node sees both of) and ``ring`` (every node sees a
  majority, no two the same one). Clients keep reaching every node;
- ``disk``: fill the metadata leader's data dir (its own tmpfs,
  :mod:`~warren.cli.chaos.tmpfs`) to the last byte, then empty it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from warren.cli.chaos import tmpfs
from warren.cli.chaos.netlab import NetLab
from warren.cli.cluster_cmd import ClusterError, metadata_leader, node_api, restart_node

NEMESES = ("kill", "pause", "leader", "partition", "disk")
RESTART_TIMEOUT_SECONDS = 120.0  # a node recovering its logs on a loaded 2-core machine took 30+ s


@dataclass
class Fault:
    nemesis: str
    node: str
    start: float  # seconds since the run started
    healed: float = 0.0
    unavailable_seconds: float = 0.0  # the longest stretch without a confirm on any queue
    sides: dict[str, str] = field(default_factory=dict)  # node -> "majority" | "minority" | "full disk" | "ok"
    observed: dict[str, dict[str, Any]] = field(default_factory=dict)  # per node, what its clients saw

    def as_dict(self) -> dict[str, Any]:
        fault = {"nemesis": self.nemesis, "node": self.node, "start": round(self.start, 3),
                 "healed": round(self.healed, 3), "unavailable_seconds": round(self.unavailable_seconds, 3)}
        if self.sides:
            fault.update(sides=self.sides, observed=self.observed)
        return fault


def partition_shapes(count: int) -> list[str]:
    """The shapes that differ from each other and from "no partition" for ``count`` nodes."""
    return [shape for shape, least in (("isolate", 2), ("halves", 4), ("bridge", 3), ("ring", 5))
            if count >= least]


def partition_reach(shape: str, order: list[str]) -> dict[str, set[str]]:
    """Which nodes each node still reaches (itself included), symmetric; ``order[0]`` is the
    isolated node, or the bridge."""
    count = len(order)
    if shape == "ring":
        span = (count // 2 + 1) // 2  # neighbours each way: 2 * span + 1 nodes make a majority
        return {node: {order[(i + k) % count] for k in range(-span, span + 1)} for i, node in enumerate(order)}
    if shape == "isolate":
        sides = [{order[0]}, set(order[1:])]
    elif shape == "halves":
        sides = [set(order[:count // 2]), set(order[count // 2:])]
    elif shape == "bridge":
        rest = order[1:]
        sides = [{order[0], *rest[:len(rest) // 2]}, {order[0], *rest[len(rest) // 2:]}]
    else:
        raise ValueError(f"unknown partition shape {shape!r}")
    return {node: set().union(*(side for side in sides if node in side)) for node in order}


def describe_partition(shape: str, reach: dict[str, set[str]]) -> str:
    if shape == "ring":
        return "ring " + " ".join(reach)
    sides = {frozenset(r) for r in reach.values()}
    if shape == "bridge":
        sides = {side for side in sides if len(side) < len(reach)}  # the bridge itself sees everyone
    return f"{shape} " + " | ".join(sorted(" ".join(sorted(side)) for side in sides))


class NemesisError(RuntimeError):
    """A fault could not be made or healed (a node gone on its own, a command that failed)."""


class Processes(Protocol):
    """How the nemesis stops and starts a cluster's nodes."""

    def kill(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...  # a killed node, from its own data; returns once it serves


class LocalProcesses:
    """``warren cluster up``'s node processes: signals to their pids, ``restart_node``."""

    def __init__(self, root: Path, state: dict[str, Any]) -> None:
        self.root = root
        self.state = state

    def _pid(self, name: str) -> int:
        return int(next(n for n in self.state["nodes"] if n["name"] == name)["pid"])

    def _signal(self, name: str, sig: signal.Signals) -> None:
        pid = self._pid(name)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            raise NemesisError(f"{name} is not running (pid {pid} is gone): it stopped on its own, "
                               "see its log") from None

    def kill(self, name: str) -> None:
        self._signal(name, signal.SIGKILL)

    def pause(self, name: str) -> None:
        self._signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)

    def restart(self, name: str) -> None:
        _reap(self._pid(name))
        try:
            restart_node(self.root, self.state, name, timeout=RESTART_TIMEOUT_SECONDS)
        except ClusterError as exc:
            raise NemesisError(f"restarting {name}: {exc}") from None


class Nemesis:
    def __init__(self, state: dict[str, Any], processes: Processes, queues: list[str], rng: random.Random) -> None:
        self.state = state
        self.processes = processes
        self.queues = queues
        self.rng = rng
        self.down: dict[str, str] = {}  # node -> how it is down ("kill" | "pause")
        self.network = NetLab.from_dict(state["network"]) if state.get("network") else None
        self.partitions = 0
        self.reach: dict[str, set[str]] = {}  # the partition being made or in place

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.state["nodes"])

    def target(self, nemesis: str) -> str:
        """The node a fault hits, or for a partition its description (its plan is kept)."""
        if nemesis == "partition":
            return self._plan_partition()
        if nemesis == "disk":  # the metadata leader; a broker without one (RabbitMQ): the busiest queue leader
            leader = self._metadata_leader() or self._busiest_leader()
            if leader is not None:
                return leader
        if nemesis == "leader":
            leader = self._busiest_leader()
            if leader is not None:
                return leader
        return str(self.rng.choice(self.nodes())["name"])

    def start(self, nemesis: str, name: str) -> None:
        if nemesis == "partition":
            assert self.network is not None, "partitions need the cluster started with netns=True"
            self.network.partition(self.reach)
            self.down[name] = "partition"
            return
        if nemesis == "disk":
            tmpfs.fill(Path(self._node(name)["data_dir"]))
            self.down[name] = "disk"
        elif nemesis == "pause":
            self.processes.pause(name)
            self.down[name] = "pause"
        else:
            self.processes.kill(name)
            self.down[name] = "kill"

    def heal(self, name: str) -> None:
        how = self.down.pop(name, None)
        if how == "partition":
            assert self.network is not None
            self.network.heal()
            return
        if how == "disk":
            tmpfs.empty(Path(self._node(name)["data_dir"]))
        elif how == "pause":
            self.processes.resume(name)
        elif how == "kill":
            self.processes.restart(name)

    def heal_all(self) -> list[str]:
        """Heal every fault in place; what failed (a restart command, say) does not stop the rest."""
        errors = []
        for name in list(self.down):
            try:
                self.heal(name)
            except (OSError, NemesisError, subprocess.SubprocessError) as exc:
                errors.append(str(exc))
        return errors

    def sides(self, nemesis: str, target: str) -> dict[str, str]:
        """Per node, where the fault in place leaves it: for a partition, whether it reaches
        a majority of the members; for a full disk, whether it is the full one."""
        if nemesis == "disk":
            return {str(n["name"]): "full disk" if n["name"] == target else "ok" for n in self.nodes()}
        return {node: "majority" if len(reach) > len(self.reach) // 2 else "minority"
                for node, reach in self.reach.items()}

    def _plan_partition(self) -> str:
        names = [str(n["name"]) for n in self.nodes()]
        shapes = partition_shapes(len(names))
        if not shapes:
            raise ValueError("a partition needs at least 2 nodes")
        shape = shapes[self.partitions % len(shapes)]
        self.partitions += 1
        order = self.rng.sample(names, len(names))
        leader = self._busiest_leader() if shape == "isolate" else None
        if leader in order:
            order.remove(leader)
            order.insert(0, leader)
        self.reach = partition_reach(shape, order)
        return describe_partition(shape, self.reach)

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

    def _metadata_leader(self) -> str | None:
        for node in self.nodes():
            if node["name"] not in self.down:
                try:
                    return metadata_leader(node_api(node, "/v1/cluster/info", timeout=3))
                except (OSError, ValueError, KeyError):
                    continue
        return None


def listed_queues(node: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A node's ``/api/queues`` (as guest, the local cluster's user); None if it does not answer."""
    try:
        listed: list[dict[str, Any]] = node_api(node, "/api/queues", timeout=3)
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
