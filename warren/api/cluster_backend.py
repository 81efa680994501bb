"""The management backend's cluster methods, over the node's ``ClusterRuntime``.

Duck-typed on ``runtime.cluster`` (``warren.io.cluster.ClusterRuntime``, or None on a
standalone node): the API layer never imports ``warren.io``.
"""

from __future__ import annotations

from typing import Any

from warren.cluster.membership import MembershipRefused
from warren.errors import ClusterUnavailable, WarrenError

NOT_CLUSTERED = "this node is not clustered: start it with --cluster-secret"


class ClusterNotEnabled(WarrenError):
    """A cluster endpoint on a standalone node."""


class ClusterRefused(WarrenError):
    """The membership rules refuse the change (the text names the fix)."""


class ClusterBackend:
    """The cluster half of ``ManagementBackend``; NodeBackend delegates to it."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

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
        return [{"vhost": v.name, "name": q.name, "node": q.home or node.name, "type": "classic",
                 "durable": q.durable, "exclusive": q.exclusive}
                for v in node.broker.vhosts.values() for q in v.queues.values()]

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
