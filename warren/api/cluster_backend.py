"""The management backend's cluster methods, over the node's ``ClusterRuntime``.

Duck-typed on ``runtime.cluster`` (``warren.io.cluster.ClusterRuntime``, or None on a
standalone node): the API layer never imports ``warren.io``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from warren.api.cluster_view import ClusterView
from warren.cluster.membership import MembershipRefused
from warren.errors import ClusterUnavailable, WarrenError

NOT_CLUSTERED = "this node is not clustered: start it with --cluster-secret"
STATS_REQUEST = {"op": "stats"}

log = logging.getLogger("warren.api")


class ClusterNotEnabled(WarrenError):
    """A cluster endpoint on a standalone node."""


class ClusterRefused(WarrenError):
    """The membership rules refuse the change (the text names the fix)."""


class ClusterBackend:
    """The cluster half of ``ManagementBackend``; NodeBackend delegates to it."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.last_nodes: dict[str, dict[str, Any]] = {}  # each member's node object, last heard

    @property
    def clustered(self) -> bool:
        return getattr(self.runtime, "cluster", None) is not None

    def _cluster(self) -> Any:
        cluster = getattr(self.runtime, "cluster", None)
        if cluster is None:
            raise ClusterNotEnabled(NOT_CLUSTERED)
        return cluster

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self._cluster().info()
        return info

    def members(self) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = self._cluster().members()
        return members

    def sharding(self) -> list[dict[str, Any]]:
        """Where each queue lives: its home node (exclusive ones on their connection's)."""
        self._cluster()
        node = self.runtime.node
        shown = []
        for v in node.broker.vhosts.values():
            for q in v.queues.values():
                queue = {"vhost": v.name, "name": q.name, "node": q.home or node.name, "type": "classic",
                         "durable": q.durable, "exclusive": q.exclusive}
                if q.members and node.quorum is not None:
                    listed = node.quorum.listing(q)
                    queue.update({k: listed[k] for k in ("type", "node", "leader", "members", "online")})
                shown.append(queue)
        return shown

    def cluster_name(self) -> str | None:
        """The first member's name (the node that created the cluster, as RabbitMQ names a
        cluster by default); None on a standalone node."""
        cluster = getattr(self.runtime, "cluster", None)
        members = cluster.members() if cluster is not None else []
        return str(min(members, key=lambda m: m["id"])["name"]) if members else None

    def partitions(self) -> list[str]:
        """The members this node cannot reach (its peer link is down)."""
        cluster = getattr(self.runtime, "cluster", None)
        if cluster is None:
            return []
        return sorted(name for name, up in cluster.links().items() if not up)

    def metrics(self, forwarder: Any) -> dict[str, Any] | None:
        cluster = getattr(self.runtime, "cluster", None)
        if cluster is None:
            return None
        info = cluster.info()
        raft = info["raft"]
        return {
            "members": {m["name"]: m["status"] == "alive" for m in info["members"]},
            "leader": bool(cluster.is_leader),
            "commit": int(raft.get("commit") or 0),
            "applied": int(raft.get("applied") or 0),
            "links": cluster.links(),
            "forwarded": dict(getattr(forwarder, "sent", {})),
            "forward_errors": dict(getattr(forwarder, "errors", {})),
        }

    async def view(self, local: str, local_node: dict[str, Any]) -> ClusterView | None:
        """Every member's stats, asked at once (members this node considers dead are not
        asked), each given ``cluster_stats_timeout_seconds``; None on a standalone node."""
        cluster = getattr(self.runtime, "cluster", None)
        if cluster is None:
            return None
        members = cluster.members()
        timeout = cluster.limits.cluster_stats_timeout_seconds
        asked = [m["name"] for m in members if m["name"] != local and m["status"] != "dead"]

        async def ask(name: str) -> dict[str, Any] | None:
            try:
                reply = await asyncio.wait_for(cluster.request_member(name, STATS_REQUEST, timeout), timeout)
            except Exception as exc:  # unreachable, slow, a wrong secret: shown not running
                log.debug("no stats from member %s: %s", name, exc or type(exc).__name__)
                return None
            stats = reply.get("stats") if isinstance(reply, dict) else None
            return stats if isinstance(stats, dict) else None

        answers = dict(zip(asked, await asyncio.gather(*(ask(n) for n in asked)), strict=True))
        return ClusterView.merge(local, self.cluster_name() or local, local_node,
                                 [str(m["name"]) for m in members], answers, self.last_nodes)

    async def join(self, name: str, addr: str, raft_addr: str) -> dict[str, Any]:
        try:
            member_id = await self._cluster().admit(name, addr, raft_addr)
        except MembershipRefused as exc:
            raise ClusterRefused(str(exc)) from None
        return {"id": member_id, "name": name}

    async def leave(self, member_id: int) -> None:
        try:
            await self._cluster().leave(member_id)
        except MembershipRefused as exc:
            raise ClusterRefused(str(exc)) from None


__all__ = ["ClusterBackend", "ClusterNotEnabled", "ClusterRefused", "ClusterUnavailable", "NOT_CLUSTERED"]
