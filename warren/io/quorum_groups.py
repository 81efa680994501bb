"""Quorum queues' Raft groups on the node's Raft host (the metadata group's host).

Every group of a node shares its host: one store, one disk thread, one fsync per batch
for all of them, heartbeats coalesced per node pair, idle groups quiesced. A queue's
group is created on each member from the metadata alone: the declare's entry names the
members, so every member starts the group with the same voters (Raft's genesis
configuration) and an empty log, and one of them is elected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from warren.io.cluster import ELECTION_TICKS, HEARTBEAT_TICKS, ClusterRuntime
from warren.io.raft_host import ProposalFailed
from warren.node.quorum import QuorumQueues
from warren.raft.node import RaftNode, Role
from warren.store.raft_group_storage import GroupStorage

log = logging.getLogger("warren.quorum")

CAMPAIGN_DELAY_SECONDS = 0.03


class QuorumGroups:
    """``warren.node.quorum.RaftGroups`` over a :class:`ClusterRuntime`, whose Raft host
    applies every group but the metadata one to ``queues``."""

    def __init__(self, cluster: ClusterRuntime, queues: QuorumQueues) -> None:
        self.cluster = cluster
        queues.raft = self
        cluster.groups.queues = queues

    # ---- RaftGroups --------------------------------------------------------------------

    def host(self, group: int, members: list[str]) -> None:
        cluster = self.cluster
        host = cluster.host
        assert host is not None and cluster.store is not None and cluster.rng is not None
        if group in host.groups:
            return
        ids = []
        for name in members:
            member = cluster.fsm.membership.by_name(name)
            if member is None:
                log.warning("quorum queue group %d: member %r is not in the cluster", group, name)
                continue
            ids.append(member.id)
        storage = GroupStorage(cluster.store, group)
        node = RaftNode(cluster.local_id, group, storage, cluster.rng, voters=tuple(sorted(ids)),
                        election_ticks=ELECTION_TICKS, heartbeat_ticks=HEARTBEAT_TICKS,
                        quiesce_after_ticks=cluster.limits.raft_quiesce_after_ticks, limits=cluster.limits)
        host.add_group(group, node, storage)
        if members and members[0] == cluster.settings.node_name and node.log.last_index() == 0:
            # a new queue: its preferred leader campaigns once the others (which apply the
            # same declare moments later) host the group, rather than after a timeout
            asyncio.get_running_loop().call_later(CAMPAIGN_DELAY_SECONDS, self._campaign, group)

    def _campaign(self, group: int) -> None:
        node = self._node(group)
        if node is not None and not node.leader and self.cluster.host is not None:
            self.cluster.host.campaign(group)

    def drop(self, group: int) -> None:
        host = self.cluster.host
        if host is not None and group in host.groups:
            task = asyncio.get_running_loop().create_task(host.delete_group(group))
            task.add_done_callback(_log_failure)

    def propose(self, group: int, payload: bytes, done: Callable[[int | None, Exception | None], None]) -> None:
        host = self.cluster.host
        if host is None:
            done(None, ProposalFailed("the raft host is not running"))
            return
        host.propose_with(group, payload, done)

    def leader(self, group: int) -> str | None:
        node = self._node(group)
        if node is None or not node.leader:
            return None
        member = self.cluster.fsm.membership.members.get(node.leader)
        return member.name if member is not None else None

    def is_leader(self, group: int) -> bool:
        node = self._node(group)
        return node is not None and node.role is Role.LEADER

    def status(self, group: int) -> dict[str, Any] | None:
        node = self._node(group)
        return node.status() if node is not None else None

    def _node(self, group: int) -> Any:
        host = self.cluster.host
        slot = host.groups.get(group) if host is not None else None
        return slot.node if slot is not None else None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("deleting a quorum queue's group failed: %s", task.exception())
