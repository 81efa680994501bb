"""Quorum queues' Raft groups on the node's Raft host (the metadata group's host).

Every group of a node shares its host: one store, one disk thread, one fsync per batch
for all of them, heartbeats coalesced per node pair, idle groups quiesced. A queue's
group is created on each member from the metadata alone: the declare's entry names the
members, so every member starts the group with the same voters (Raft's genesis
configuration) and an empty log, and one of them is elected. The members at the declare
are kept with the queue as ids (``QueueState.genesis``): a member added later starts from
them too and replays the log, its configuration changes included.

Membership follows the metadata: ``QueueState.members`` is the target (rabbitmq-queues
add_member, delete_member, grow, shrink change it), and every RECONCILE_SECONDS each group's
leader makes one change towards it, as the metadata group's leader does for the cluster:
a missing member joins as a learner and becomes a voter once it has caught up (a new
empty member never stalls commits); a voter that is no longer a target is removed once no
new member is still catching up, or at once when it is down; a leader that is itself
leaving hands its leadership to a caught-up target first. A replica that is no longer a
target asks the group's leader until its removal has committed, then deletes itself.

The targets mend themselves (``_mend_loop``, on the metadata group's leader only, so one
node decides): a queue below its size (``x-quorum-initial-group-size``, or what an
operator's last change left) grows on alive non-members, members that left the cluster
are replaced, and so are members down longer than ``quorum_replace_down_after_seconds``;
leaders spread unevenly for ``quorum_rebalance_after_seconds`` (a node came back) are
rebalanced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from warren.cluster.definitions import Outcome, SetQueueMembers
from warren.cluster.placement import reconciled_members
from warren.io.cluster import ELECTION_TICKS, HEARTBEAT_TICKS, META_GROUP, ClusterRuntime
from warren.io.raft_host import ProposalFailed
from warren.io.raft_wire import ENVELOPE_BYTES
from warren.node.quorum import QuorumQueues, member_role, settled_leader
from warren.raft.node import RaftNode, Role
from warren.raft.types import ConfChange, ConfChangeKind
from warren.store.raft_group_storage import GroupStorage

log = logging.getLogger("warren.quorum")

CAMPAIGN_DELAY_SECONDS = 0.03
RECONCILE_SECONDS = 0.5


class QuorumGroups:
    """``warren.node.quorum.RaftGroups`` over a :class:`ClusterRuntime`, whose Raft host
    applies every group but the metadata one to ``queues``."""

    def __init__(self, cluster: ClusterRuntime, queues: QuorumQueues) -> None:
        self.cluster = cluster
        self.queues = queues
        queues.raft = self
        cluster.groups.queues = queues
        self._busy: dict[int, asyncio.Task[None]] = {}  # groups with a change under way
        self._mending: set[int] = set()  # groups whose new target members are being committed
        # (the metadata leader mends every queue's targets, also where it hosts no replica)
        cluster.spawn(self._reconcile_loop())
        cluster.spawn(self._mend_loop())

    # ---- RaftGroups --------------------------------------------------------------------

    def host(self, group: int, genesis: list[int], campaign: bool) -> None:
        cluster = self.cluster
        host = cluster.host
        assert host is not None and cluster.store is not None and cluster.rng is not None
        if group in host.groups:
            return
        storage = GroupStorage(cluster.store, group)
        node = RaftNode(cluster.local_id, group, storage, cluster.rng, voters=tuple(sorted(genesis)),
                        election_ticks=ELECTION_TICKS, heartbeat_ticks=HEARTBEAT_TICKS,
                        quiesce_after_ticks=cluster.limits.raft_quiesce_after_ticks, limits=cluster.limits)
        host.add_group(group, node, storage)
        if campaign and node.log.last_index() == 0:
            # a new queue: its preferred leader campaigns once the others (which apply the
            # same declare moments later) host the group, rather than after a timeout
            asyncio.get_running_loop().call_later(CAMPAIGN_DELAY_SECONDS, self._campaign, group)

    def member_ids(self, names: list[str]) -> list[int]:
        ids = []
        for name in names:
            member = self.cluster.fsm.membership.by_name(name)
            if member is None:
                log.warning("quorum queue member %r is not in the cluster", name)
                continue
            ids.append(member.id)
        return ids

    def member_names(self, ids: list[int]) -> list[str]:
        members = self.cluster.fsm.membership.members
        return [members[i].name if i in members else f"#{i}" for i in ids]

    def _campaign(self, group: int) -> None:
        node = self._node(group)
        if node is not None and not node.leader and self.cluster.host is not None:
            self.cluster.host.campaign(group)

    def drop(self, group: int) -> None:
        host = self.cluster.host
        if host is not None:  # (a group not hosted here may still have data in the store)
            task = asyncio.get_running_loop().create_task(host.delete_group(group))
            task.add_done_callback(_log_failure)

    def stored_groups(self) -> set[int]:
        store = self.cluster.store
        assert store is not None
        return {group for group in store.groups() if isinstance(group, int) and group != META_GROUP}

    def propose(self, group: int, payload: bytes, done: Callable[[int | None, Exception | None], None]) -> None:
        host = self.cluster.host
        if host is None:
            done(None, ProposalFailed("the raft host is not running"))
            return
        host.propose_with(group, payload, done)

    def entry(self, group: int, index: int) -> bytes | None:
        host = self.cluster.host
        slot = host.groups.get(group) if host is not None else None
        storage = slot.storage if slot is not None else None
        data = storage.entry_data(index) if isinstance(storage, GroupStorage) else None
        return data[ENVELOPE_BYTES:] if data is not None else None  # as the host applies it

    def leader(self, group: int) -> str | None:
        node = self._node(group)
        if node is None or not node.leader:
            return None
        member = self.cluster.fsm.membership.members.get(node.leader)
        return member.name if member is not None else None

    def is_leader(self, group: int) -> bool:
        node = self._node(group)
        return node is not None and node.role is Role.LEADER

    def term_start(self, group: int) -> int:
        node = self._node(group)
        if node is None or node.role is not Role.LEADER or node.log.applied < node.term_start:
            return 0
        return int(node.term_start)

    def transfer(self, group: int, to: str) -> bool:
        host = self.cluster.host
        ids = self.member_ids([to])
        return host is not None and bool(ids) and host.transfer_leadership(group, ids[0])

    def status(self, group: int) -> dict[str, Any] | None:
        node = self._node(group)
        return node.status() if node is not None else None

    # ---- membership: the Raft configuration follows the metadata's target --------------

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                self._reconcile_all()
            except Exception:  # one bad group must not stop every other's reconciling
                log.exception("reconciling quorum queue members failed")

    def _reconcile_all(self) -> None:
        me = self.cluster.settings.node_name
        for group, replica in list(self.queues.replicas.items()):
            if group in self._busy:
                continue
            node = self._node(group)
            if node is None:
                continue
            if node.role is Role.LEADER:
                change = self._next_change(group, node, replica.queue)
            elif me not in replica.queue.members:
                change = self._leave_when_removed(group, replica.queue)
            else:
                continue
            if change is not None:
                self._busy[group] = asyncio.get_running_loop().create_task(self._run(group, change))

    async def _run(self, group: int, change: Any) -> None:
        try:
            await change
        finally:
            self._busy.pop(group, None)

    def _next_change(self, group: int, node: Any, queue: Any) -> Any:
        """The coroutine of the leader's next configuration change (None: none is due)."""
        host = self.cluster.host
        assert host is not None
        config = node.config()
        target = set(self.member_ids(queue.members))
        if not target:
            return None
        me = self.cluster.local_id
        caught_up = self.cluster.limits.raft_max_append_entries
        if config.learners - target:
            return self._change(group, ConfChange(ConfChangeKind.REMOVE, min(config.learners - target)))
        if target - config.members:
            return self._change(group, ConfChange(ConfChangeKind.ADD_LEARNER, min(target - config.members)))
        catching_up = False
        for learner in sorted(config.learners & target):
            lag = node.lag(learner)
            if lag is not None and lag <= caught_up:
                return self._change(group, ConfChange(ConfChangeKind.ADD_VOTER, learner))
            catching_up = True
        for voter in sorted(config.voters - target - {me}):
            if not catching_up or not self._up(voter):
                return self._change(group, ConfChange(ConfChangeKind.REMOVE, voter))
        if me not in target and not catching_up:
            for voter in sorted(config.voters & target):
                lag = node.lag(voter)
                if lag is not None and lag <= caught_up and self._up(voter) and host.transfer_leadership(group, voter):
                    log.info("handing quorum queue group %d to %s: this node leaves it", group,
                             *self.member_names([voter]))
                    break
        return None

    async def _change(self, group: int, change: ConfChange) -> None:
        host = self.cluster.host
        assert host is not None
        try:
            await host.change_membership(group, change)
            log.info("quorum queue group %d: %s %s", group, change.kind.name.lower(), *self.member_names([change.node]))
        except ProposalFailed as exc:
            log.debug("quorum queue group %d: %s postponed: %s", group, change.kind.name.lower(), exc)

    async def _leave_when_removed(self, group: int, queue: Any) -> None:
        """Delete this replica once the group's leader has committed its removal."""
        loop = asyncio.get_running_loop()
        me = self.cluster.settings.node_name
        timeout = self.cluster.limits.cluster_request_timeout_seconds
        for member in queue.members:
            if not self.cluster.is_up(member):
                continue
            future: asyncio.Future[Any] = loop.create_future()

            def answer(ok: bool, value: Any, text: str, future: asyncio.Future[Any] = future) -> None:
                if not future.done():
                    future.set_result(value if ok else None)
            self.queues.member_status(queue, member, answer, timeout)
            self.queues.node.flush()
            status = await future
            if settled_leader(status):
                if member_role(status, me) == "non_voter":
                    self.queues.drop_replica(group)
                return

    async def _mend_loop(self) -> None:
        limits = self.cluster.limits
        uneven_since: float | None = None
        while True:
            await asyncio.sleep(limits.quorum_membership_check_seconds)
            if not self.cluster.is_leader:
                uneven_since = None
                continue
            try:
                self._mend({m["name"] for m in self.cluster.members() if m["status"] == "alive"})
                moves = self.queues.leader_plan(self._quorum_queues()) if limits.quorum_rebalance_after_seconds else []
            except Exception:
                log.exception("mending quorum queue members failed")
                continue
            now = asyncio.get_running_loop().time()
            if not moves:
                uneven_since = None
            elif uneven_since is None:
                uneven_since = now
            elif now - uneven_since >= limits.quorum_rebalance_after_seconds:
                uneven_since = None
                self.queues.rebalance(moves, self._rebalanced)
                self.queues.node.flush()

    def _mend(self, alive: set[str]) -> None:
        """Submit new targets for the quorum queues that need them (one change each)."""
        limits = self.cluster.limits
        silent = self.cluster.silent_seconds()
        down_after = limits.quorum_replace_down_after_seconds
        replaceable = {name for name, seconds in silent.items() if down_after and seconds > down_after}
        for queue in self._quorum_queues():
            if queue.group in self._mending:
                continue
            size = queue.target_size or queue.arguments.get("x-quorum-initial-group-size")
            if not isinstance(size, int) or isinstance(size, bool):
                size = limits.quorum_default_group_size
            target = reconciled_members(queue.vhost, queue.name, list(queue.members), size, silent, alive, replaceable)
            if target is None:
                continue
            log.info("quorum queue '%s' in vhost '%s': members %s -> %s", queue.name, queue.vhost,
                     ",".join(queue.members), ",".join(target))
            self._mending.add(queue.group)

            def done(outcome: Outcome, group: int = queue.group) -> None:
                self._mending.discard(group)
                if outcome.error is not None:
                    log.info("changing a quorum queue's members postponed: %s", outcome.error.text)
            self.queues.node.commands.submit(SetQueueMembers(queue.vhost, queue.name, target), done)

    def _quorum_queues(self) -> list[Any]:
        return [q for v in self.queues.node.broker.vhosts.values() for q in v.queues.values() if q.members]

    @staticmethod
    def _rebalanced(moves: list[tuple[Any, str, bool]]) -> None:
        started = [(q.name, to) for q, to, ok in moves if ok]
        if started:
            log.info("rebalanced quorum queue leaders: %s", ", ".join(f"{name} -> {to}" for name, to in started))

    def _up(self, member_id: int) -> bool:
        host = self.cluster.host
        return host is not None and member_id not in host.down

    def _node(self, group: int) -> Any:
        host = self.cluster.host
        slot = host.groups.get(group) if host is not None else None
        return slot.node if slot is not None else None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("deleting a quorum queue's group failed: %s", task.exception())
