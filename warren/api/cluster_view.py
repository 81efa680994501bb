"""The cluster as the management API shows it: every member's answer, merged (pure).

A classic queue lives on its home node: only there are its message counts and consumers
real, the other members hold a stub of it (0 messages). Connections and channels are per
node. So for ``/api/nodes``, ``/api/queues``, ``/api/overview``, ``/api/connections`` and
``/api/channels`` the node asked gathers every member's *stats* (``{"op": "stats"}`` on the
cluster port, answered by each member for itself: ``NodeBackend.local_stats``) and merges them
here. A member that does not answer is shown ``running: false`` (with the last node fields
this node heard from it), and its queues keep what this node knows (the stub's counts) with
``state: "down"``, as RabbitMQ shows a queue whose node is down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The queue fields only the home node knows (the rest are definitions: the same everywhere).
QUEUE_STATS_FIELDS = (
    "messages", "messages_ready", "messages_unacknowledged", "message_bytes", "message_bytes_ready",
    "message_bytes_unacknowledged", "consumers", "single_active_consumer_tag", "exclusive_consumer_tag",
    "owner_pid_details", "state",
)

# What /api/nodes shows for a member never heard from (RabbitMQ's clients index these).
DOWN_NODE = {
    "type": "disc", "running": False, "uptime": 0, "mem_used": 0, "mem_limit": 0, "mem_alarm": False,
    "disk_free": 0, "disk_free_limit": 0, "disk_free_alarm": False, "fd_used": 0, "fd_total": 0,
    "sockets_used": 0, "sockets_total": 0, "proc_used": 0, "proc_total": 0, "processors": 0,
    "connections": 0, "partitions": [], "listeners": [], "run_queue": 0, "rates_mode": "basic",
}


def queue_stats(queue: dict[str, Any]) -> list[Any]:
    """One queue's entry in a member's stats: [vhost, name, {field: value}]."""
    return [queue["vhost"], queue["name"], {k: queue[k] for k in QUEUE_STATS_FIELDS if k in queue}]


@dataclass
class ClusterView:
    local: str  # the node asked
    cluster_name: str
    nodes: list[dict[str, Any]]  # every member's node object, this node's included, by name
    down: set[str] = field(default_factory=set)  # members that did not answer
    queues: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # from their homes
    connections: list[dict[str, Any]] = field(default_factory=list)  # the other members'
    channels: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def merge(local: str, cluster_name: str, local_node: dict[str, Any], members: list[str],
              answers: dict[str, dict[str, Any] | None], last_nodes: dict[str, dict[str, Any]]) -> ClusterView:
        """``answers``: each other member's stats, None when it did not answer (or was not
        asked: a dead one). ``last_nodes`` (updated here): the last node object each sent."""
        view = ClusterView(local, cluster_name, [local_node])
        for name in members:
            if name == local:
                continue
            stats = answers.get(name)
            parsed = _parse(name, stats) if stats is not None else None
            if parsed is None:
                view.down.add(name)
                view.nodes.append({**DOWN_NODE, **last_nodes.get(name, {}), "name": name, "running": False,
                                   "uptime": 0, "partitions": []})
                continue
            node, queues, connections, channels = parsed
            last_nodes[name] = node
            view.nodes.append({**node, "name": name, "running": True})
            view.queues.update(queues)
            view.connections += connections
            view.channels += channels
        view.nodes.sort(key=lambda n: str(n["name"]))
        return view

    def queue(self, shown: dict[str, Any]) -> dict[str, Any]:
        """A queue as this node lists it, with the counts of its home node."""
        home = shown.get("node")
        if home == self.local:
            return shown
        fresh = self.queues.get((shown["vhost"], shown["name"]))
        if fresh is not None:
            return {**shown, **fresh}
        if home in self.down:
            return {**shown, "state": "down"}
        return shown

    def listeners(self) -> list[dict[str, Any]]:
        """The other running members' listeners, as /api/overview lists them (with node)."""
        return [{"node": n["name"], **listener} for n in self.nodes
                if n["name"] != self.local and n["running"] for listener in n.get("listeners", [])
                if isinstance(listener, dict)]


def _parse(name: str, stats: dict[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, Any]],
                                                       list[dict[str, Any]], list[dict[str, Any]]] | None:
    """A member's stats, checked (a malformed answer counts as none: never a 500)."""
    try:
        node = stats["node"]
        queues = {(str(v), str(q)): dict(fields) for v, q, fields in stats["queues"]}
        connections = [c for c in stats["connections"] if isinstance(c, dict)]
        channels = [c for c in stats["channels"] if isinstance(c, dict)]
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(node, dict):
        return None
    for item in (*connections, *channels):
        item["node"] = name
    return node, queues, connections, channels
