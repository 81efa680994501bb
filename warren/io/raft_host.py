"""The asyncio driver of a node's Raft groups: ticks, peer messages, group commit, apply.

The core (``warren.raft``) is synchronous and does no I/O; each group's node is driven in
the step/tick/propose -> ready -> advance style. This module does the I/O around it, in the
order Raft's safety depends on, for every ready of every group:

1. persist the ready's snapshot, entries and hard state -- for all groups that have one,
   in ONE store transaction and ONE fsync (:meth:`RaftStore.persist_batch`, run in a disk
   thread so the loop keeps stepping messages meanwhile; whatever arrives during a commit
   is batched into the next one);
2. only then send the ready's messages (votes and append acknowledgements promise that
   the state they vouch for is durable). The exception is a message the core marks
   ``may_send_before_persist`` (a leader's appends: Raft lets the leader write its own log
   in parallel with replicating it, since it counts itself only once its write is done);
   those leave before the fsync starts;
3. apply the ready's committed entries to the state machine, in index order (before
   step 1 when every one of them was already persisted by an earlier batch: they are
   durable locally and on a majority, so waiting for this fsync would only add latency);
4. ``advance`` the node.

A pass sends the messages of all its readies together (``warren.io.raft_wire``): a run of
one-entry appends to a peer leaves as one append, and every heartbeat to a peer, whatever
the group, in one message. Each group's storage hears of what a batch made durable
(:meth:`EntryCache.persisted`) so the core reads recent entries back from memory.

Ticks come from a monotonic clock at a fixed interval; the node's randomness is a seeded
generator handed to the core by whoever builds it. Only groups that need ticks get them
(``needs_ticks``: a quiesced group only waits), so a thousand idle groups cost the ticker
nothing.

Node-level liveness makes quiescence safe: every ``raft_node_heartbeat_ticks`` the host
sends each peer one tiny :data:`NODE_HEARTBEAT` (one per node pair, whatever the number of
groups), and any message from a peer counts as a sign of life. A peer silent for
``raft_node_timeout_ticks`` is down: every group hears ``peer_unreachable`` (a quiesced
follower of a leader there campaigns), and ``peer_reachable`` when it speaks again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from warren.errors import PeerProtocolError, StoreError, WarrenError
from warren.io.raft_reads import ReadWaiters
from warren.io.raft_snapshots import SnapshotPolicy
from warren.io.raft_wire import (
    ENVELOPE_BYTES,
    HEARTBEATS,
    NODE_HEARTBEAT,
    NORMAL_KIND,
    coalesce_appends,
    envelope,
    ready_to_write,
    split_early,
)
from warren.limits import Limits
from warren.raft.types import (
    HEARTBEAT_TYPES,
    ConfChange,
    ConfChangeKind,
    heartbeat_to_wire,
    heartbeats_from_wire,
)
from warren.store.raft_store import GroupId, GroupWrite, RaftStore

log = logging.getLogger("warren.raft")

STORE_RETRY_SECONDS = 1.0  # a failed persist is tried again this often


class CoreNode(Protocol):
    """What the host needs from one group's Raft node."""

    def tick(self) -> None: ...
    def step(self, message: Any) -> None: ...
    @property
    def term(self) -> int: ...
    def propose(self, data: bytes) -> int | None:
        """The new entry's index (appended in ``term``), or None when this node cannot take
        proposals."""
        ...
    @property
    def needs_ticks(self) -> bool: ...
    def peer_unreachable(self, node_id: int) -> None: ...
    def peer_reachable(self, node_id: int) -> None: ...
    def has_ready(self) -> bool: ...
    def ready(self) -> Any: ...
    def advance(self, ready: Any) -> None: ...
    def persist_failed(self, ready: Any, applied: bool) -> None: ...
    def lag(self, node_id: int) -> int | None:
        """On a leader: the entries ``node_id`` lacks; None elsewhere."""
        ...
    def transfer_leadership(self, target: int) -> bool: ...


class StateMachine(Protocol):
    """What the host applies committed entries to, per group.

    Only ``apply`` is required. A state machine that also has the snapshot methods of
    :class:`SnapshottingStateMachine` gets its groups' logs compacted (see
    :mod:`warren.io.raft_snapshots` for when) and can install a leader's snapshot.
    """

    def apply(self, group: GroupId, index: int, data: bytes) -> None: ...


class SnapshottingStateMachine(StateMachine, Protocol):
    def snapshot(self, group: GroupId) -> bytes:
        """The group's state as of the last index applied to it (the host calls this
        between applies, never while a ready of the group is being applied)."""
        ...

    def restore(self, group: GroupId, index: int, data: bytes) -> None:
        """Replace the group's state with a snapshot's, taken at ``index``: the group's
        latest snapshot when it is added to the host (entries after it are applied next),
        or one installed from the leader."""
        ...

    # Optional: ``keep_from(group) -> int | None``, the first index whose entry the state
    # machine still reads from the store (a queue's oldest live message); automatic
    # snapshots then keep the log from there on (RaftStore.entries(group, L, S + 1)).
    # ``snapshot_size(group) -> int``, its records: a large one is snapshotted by a forked
    # child (``snapshot`` and ``keep_from`` then run there, on the state as of the fork).


class ProposalFailed(WarrenError):
    """A proposal was not committed: no leader here, leadership lost, or it timed out.
    ``never_appended``: refused before it reached the log, so proposing it again elsewhere
    cannot duplicate it."""

    def __init__(self, reason: str, never_appended: bool = False) -> None:
        super().__init__(reason)
        self.never_appended = never_appended


Done = Callable[[int | None, ProposalFailed | None], None]

class EntryCache(Protocol):
    """Told what the host made durable (warren.store.raft_group_storage.GroupStorage)."""

    def persisted(self, entries: Sequence[Any], snapshot: bool = False) -> None: ...


@dataclass(slots=True)
class GroupSlot:
    node: CoreNode
    storage: EntryCache | None = None
    # index of the entry appended for a proposal -> (done, deadline, term it was appended in)
    pending: dict[int, tuple[Done, float, int]] = field(default_factory=dict)


class RaftHost:
    """Runs many groups' nodes of one Raft node id over a transport and a store."""

    def __init__(
        self,
        node_id: int,
        store: RaftStore,
        send: Callable[[int, Any], None],
        decode: Callable[[Any], Any],
        state_machine: StateMachine,
        tick_seconds: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        proposal_timeout: float = 5.0,
        limits: Limits | None = None,
        peers: Iterable[int] = (),
        disk: Executor | None = None,
    ) -> None:
        """``peers``: the other nodes' ids, for node-level liveness (required for groups
        that quiesce: without it nothing would wake their followers when a leader dies).
        ``disk``: where store writes run (default: one thread of its own; the simulator
        passes a deterministic, fault-injecting one)."""
        limits = limits or Limits()
        self.max_append_entries = limits.raft_max_append_entries
        self.max_append_bytes = limits.raft_max_append_bytes
        self.node_id = node_id
        self.store = store
        self._send = send
        self._decode = decode
        self.state_machine = state_machine
        self.tick_seconds = tick_seconds
        self._clock = clock
        self.proposal_timeout = proposal_timeout
        self.groups: dict[GroupId, GroupSlot] = {}
        self._dirty: set[GroupId] = set()
        self._awake: set[GroupId] = set()  # groups whose nodes need ticks
        self._waiting: set[GroupId] = set()  # groups with proposals that may time out
        self.peers = set(peers) - {node_id}
        self.ticks = 0
        self.node_heartbeat_ticks = limits.raft_node_heartbeat_ticks
        self.node_timeout_ticks = limits.raft_node_timeout_ticks
        self._heard: dict[int, int] = dict.fromkeys(self.peers, 0)  # peer -> tick last heard
        self.down: set[int] = set()  # peers node-level liveness considers down
        # told (peer, reachable) when node-level liveness changes its mind about a peer
        self.on_peer_change: Callable[[int, bool], None] | None = None
        self._reads = ReadWaiters()
        self._wake = asyncio.Event()
        self._seq = itertools.count(1)
        self._disk = disk or ThreadPoolExecutor(1, thread_name_prefix="raft-disk")
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.batched_groups = 0
        self.unknown_group_messages = 0
        self.store_error: str | None = None  # the last persist failed; proposals are refused
        self.snapshots = SnapshotPolicy(state_machine, limits, wake=self._mark)

    def add_peer(self, peer: int) -> None:
        """Watch ``peer``'s liveness from now on (a member that joined)."""
        if peer != self.node_id and peer not in self.peers:
            self.peers.add(peer)
            self._heard[peer] = self.ticks

    def remove_peer(self, peer: int) -> None:
        """Stop watching ``peer`` (a member that left)."""
        self.peers.discard(peer)
        self._heard.pop(peer, None)
        self.down.discard(peer)

    def add_group(self, group: GroupId, node: CoreNode, storage: EntryCache | None = None) -> None:
        """Host ``node``; ``storage`` (the node's own) hears of every batch made durable."""
        self.groups[group] = GroupSlot(node, storage)
        self._recover(group)
        for peer in self.down:
            node.peer_unreachable(peer)
        self._awake.add(group)
        self._mark(group)

    def _recover(self, group: GroupId) -> None:
        """Restore the state machine from the group's latest snapshot: the node applies only
        the entries after it (restart costs the snapshot plus the log since, not the log)."""
        restore = getattr(self.state_machine, "restore", None)
        saved = self.store.snapshot(group) if restore is not None else None
        if saved is not None:
            index, _, _, data = saved
            restore(group, index, data)  # type: ignore[misc]

    async def delete_group(self, group: GroupId) -> None:
        """Stop hosting ``group`` and remove its log, state and snapshot from the store.

        Its waiting proposals fail; messages for it that still arrive are dropped (see
        ``on_peer_message``). Returns once the removal is fsynced.
        """
        slot = self.groups.pop(group, None)
        self._dirty.discard(group)
        self._awake.discard(group)
        self._waiting.discard(group)
        self.snapshots.forget(group)
        if slot is not None:
            pending, slot.pending = slot.pending, {}
            for done, _, _ in pending.values():
                done(None, ProposalFailed(f"group {group!r} was deleted"))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._disk, self.store.persist_batch, [GroupWrite(group, delete=True)])

    # --- inputs ------------------------------------------------------------------------

    def on_peer_message(self, peer_id: int, obj: Any) -> None:
        """Transport callback. A message that does not decode costs the peer its connection.

        A well-formed message for a group this node does not host (not created here yet, or
        deleted already: queue declares and deletes race with replication) is counted and
        dropped; it must not cut the link every other group between the two nodes uses.
        """
        heard = self._heard.get(peer_id)
        if heard is not None:
            self._heard[peer_id] = self.ticks
            if peer_id in self.down:
                self._peer_up(peer_id)
        if type(obj) is list and len(obj) <= 2:
            if obj == NODE_HEARTBEAT:
                return
            if len(obj) != 2 or obj[0] != HEARTBEATS:
                raise PeerProtocolError("malformed node message")
            for message in heartbeats_from_wire(peer_id, self.node_id, obj[1]):
                self._step(message)
            return
        self._step(self._decode(obj))  # raises PeerProtocolError on garbage

    def _step(self, message: Any) -> None:
        group = message.group
        slot = self.groups.get(group)
        if slot is None:
            self.unknown_group_messages += 1
            if self.unknown_group_messages & (self.unknown_group_messages - 1) == 0:  # 1, 2, 4, 8...
                log.warning("dropped %d message(s) for groups not hosted here (latest: group %r from node %d)",
                            self.unknown_group_messages, group, message.frm)
            return
        slot.node.step(message)
        self._mark(group)

    def propose_with(self, group: GroupId, payload: bytes, done: Done) -> None:
        """Propose ``payload``; ``done(index, None)`` once it is committed and applied here,
        or ``done(None, ProposalFailed(...))`` (not leader, leadership lost,
        ``proposal_timeout``) -- possibly before this returns. The cheapest way in: no
        future, no loop callback per proposal."""
        slot = self.groups.get(group)
        if slot is None:
            done(None, ProposalFailed(f"no group {group!r} on this node", never_appended=True))
            return
        if self.store_error is not None:
            done(None, ProposalFailed(f"the raft store is failing: {self.store_error}", never_appended=True))
            return
        seq = next(self._seq)
        try:
            index = slot.node.propose(envelope(self.node_id, seq) + payload)
        except WarrenError as exc:
            index, reason = None, str(exc)
        else:
            reason = f"not the leader of group {group!r}"
        if index is None:  # the core refuses: not the leader, or transferring leadership
            done(None, ProposalFailed(reason, never_appended=True))
            return
        self._await_commit(group, slot, index, done)

    def _await_commit(self, group: GroupId, slot: GroupSlot, index: int, done: Done) -> None:
        """``done`` hears of the entry this node appended at ``index`` (see ``_apply``)."""
        slot.pending[index] = (done, self._clock() + self.proposal_timeout, slot.node.term)
        self._waiting.add(group)
        self._mark(group)

    def submit(self, group: GroupId, payload: bytes) -> asyncio.Future[int]:
        """Propose ``payload``; the future gets its log index once committed and applied
        here, or :class:`ProposalFailed` (not leader, leadership lost, ``proposal_timeout``)."""
        future, done = _future_and_done()
        self.propose_with(group, payload, done)
        return future

    async def propose(self, group: GroupId, payload: bytes) -> int:
        return await self.submit(group, payload)

    def transfer_leadership(self, group: GroupId, target: int) -> bool:
        """Ask this node, if it leads ``group``, to hand the leadership to ``target``."""
        slot = self.groups.get(group)
        if slot is None:
            return False
        started = bool(slot.node.transfer_leadership(target))  # type: ignore[attr-defined]
        self._mark(group)
        return started

    def campaign(self, group: GroupId) -> None:
        """Have this node's member of ``group`` stand for election now."""
        slot = self.groups.get(group)
        if slot is not None:
            slot.node.campaign()  # type: ignore[attr-defined]
            self._awake.add(group)
            self._mark(group)

    # --- membership, reads and status: what the cluster and its queues build on --------

    async def change_membership(self, group: GroupId, change: ConfChange) -> int:
        """Propose one configuration change on the leader; its index once committed and
        applied here. Fails (:class:`ProposalFailed`) when this node does not lead, or a
        change is still uncommitted (one at a time), or nothing would change."""
        future, done = _future_and_done()
        slot = self.groups.get(group)
        if slot is None or self.store_error is not None:
            reason = "the raft store is failing" if slot else f"no group {group!r} on this node"
            raise ProposalFailed(reason)
        index = slot.node.propose_conf_change(change)  # type: ignore[attr-defined]
        if index is None:
            raise ProposalFailed(
                f"cannot change group {group!r}: not its leader, a change is in progress, "
                "or the membership already is so"
            )
        self._await_commit(group, slot, index, done)
        return await future

    async def add_member(self, group: GroupId, node_id: int, timeout: float = 30.0) -> None:
        """Add ``node_id`` as a voter the safe way: as a learner first (it votes and counts
        for commits only once it holds the log, so a new empty member never stalls
        commits), promoted once it lags by at most one append's worth of entries."""
        node = self._node(group)
        if node_id not in node.config().members:  # type: ignore[attr-defined]
            await self.change_membership(group, ConfChange(ConfChangeKind.ADD_LEARNER, node_id))
        deadline = self._clock() + timeout
        while True:
            lag = node.lag(node_id)  # type: ignore[attr-defined]
            if lag is None:
                raise ProposalFailed(f"lost the leadership of group {group!r} while adding {node_id}")
            if lag <= self.max_append_entries:
                break
            if self._clock() > deadline:
                raise ProposalFailed(f"node {node_id} did not catch up on group {group!r} in {timeout}s")
            await asyncio.sleep(self.tick_seconds)
        await self.change_membership(group, ConfChange(ConfChangeKind.ADD_VOTER, node_id))

    async def remove_member(self, group: GroupId, node_id: int) -> int:
        """Remove a voter or learner (a leader removing itself steps down once committed)."""
        return await self.change_membership(group, ConfChange(ConfChangeKind.REMOVE, node_id))

    async def read_index(self, group: GroupId) -> int:
        """A linearizable read point (Raft's ReadIndex): returns once this node has applied
        everything committed before the call, after the leader confirmed with a quorum that
        it still leads. Works on followers too (they ask the leader)."""
        node = self._node(group)
        context, future = self._reads.ask()
        node.read_index(context)  # type: ignore[attr-defined]
        self._mark(group)
        try:
            return await asyncio.wait_for(future, self.proposal_timeout)
        except TimeoutError:
            raise ProposalFailed(f"no read point for group {group!r} in time") from None
        finally:
            self._reads.forget(context)

    def status(self, group: GroupId) -> dict[str, Any] | None:
        """Role, term, leader, commit, applied, members and (on a leader) each member's lag."""
        slot = self.groups.get(group)
        if slot is None:
            return None
        status: dict[str, Any] = slot.node.status()  # type: ignore[attr-defined]
        status["pending_proposals"] = len(slot.pending)
        return status

    def _node(self, group: GroupId) -> CoreNode:
        slot = self.groups.get(group)
        if slot is None:
            raise ProposalFailed(f"no group {group!r} on this node")
        return slot.node

    def compact(self, group: GroupId, keep_from: int | None = None) -> None:
        """Snapshot ``group``'s state machine at its applied index and compact the log below
        it, soon (before the group's next ready): for a state machine that decides itself
        when. ``keep_from``: keep entries from this index on in the store (for the state
        machine to read back) although the snapshot covers them."""
        if group in self.groups:
            self.snapshots.request(group, keep_from)
            self._mark(group)

    def _expire_proposals(self) -> None:
        now = self._clock()
        for group in list(self._waiting):
            slot = self.groups[group]
            if not slot.pending:
                self._waiting.discard(group)
                continue
            # Oldest first (dicts keep insertion order, deadlines only grow): stop at the
            # first one still in time.
            expired = []
            for index, (_, deadline, _) in slot.pending.items():
                if deadline >= now:
                    break
                expired.append(index)
            for index in expired:
                done = slot.pending.pop(index)[0]
                done(None, ProposalFailed("not committed in time"))

    def _mark(self, group: GroupId) -> None:
        self._dirty.add(group)
        self._wake.set()

    # --- the loop ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._pump())]
        for task in self._tasks:
            task.add_done_callback(_report_death)

    async def stop(self) -> None:
        """Stop ticking and persisting; whoever waits for a proposal or a read hears it failed
        (outcome unknown: an entry may still commit under another leader)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for slot in self.groups.values():
            pending, slot.pending = slot.pending, {}
            for done, _, _ in pending.values():
                done(None, ProposalFailed("the raft host stopped"))
        self._reads.fail_all(ProposalFailed("the raft host stopped"))
        self.snapshots.close()
        self._disk.shutdown(wait=True)

    async def _ticker(self) -> None:
        next_tick = self._clock()
        while True:
            next_tick += self.tick_seconds
            delay = next_tick - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = self._clock()  # fell behind (paused, overloaded): do not burst
            self.ticks += 1
            for group in list(self._awake):
                node = self.groups[group].node
                node.tick()
                self._dirty.add(group)
                if not node.needs_ticks:
                    self._awake.discard(group)
            self._wake.set()
            if self._waiting:
                self._expire_proposals()
            self._check_peers()

    def _check_peers(self) -> None:
        """Node-level liveness: heartbeat every peer, notice the ones that went silent."""
        if self.ticks % self.node_heartbeat_ticks == 0:
            for peer in self.peers:
                self._send(peer, NODE_HEARTBEAT)
        for peer, heard in self._heard.items():
            if peer not in self.down and self.ticks - heard > self.node_timeout_ticks:
                self._peer_down(peer)

    def _peer_down(self, peer: int) -> None:
        log.info("node %d is unreachable (silent for %d ticks)", peer, self.node_timeout_ticks)
        self.down.add(peer)
        self._tell_groups(lambda node: node.peer_unreachable(peer))
        if self.on_peer_change is not None:
            self.on_peer_change(peer, False)

    def _peer_up(self, peer: int) -> None:
        log.info("node %d is reachable again", peer)
        self.down.discard(peer)
        self._tell_groups(lambda node: node.peer_reachable(peer))
        if self.on_peer_change is not None:
            self.on_peer_change(peer, True)

    def _tell_groups(self, tell: Callable[[CoreNode], None]) -> None:
        """A node-level event reaches every group (rare: a peer went down or came back)."""
        for group, slot in self.groups.items():
            tell(slot.node)
            if slot.node.needs_ticks:
                self._awake.add(group)
                self._mark(group)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            readies = []
            for group in dirty:
                slot = self.groups.get(group)
                if slot is None:
                    continue
                node = slot.node
                if node.needs_ticks:  # stepped or proposed to: woken, if it was quiesced
                    self._awake.add(group)
                self.snapshots.maybe_snapshot(group, node)  # no ready in flight: state == applied
                if node.has_ready():
                    readies.append((group, node.ready()))
            if not readies:
                continue
            later: dict[GroupId, list[Any]] = {}
            early_all: list[Any] = []
            for group, ready in readies:
                early, later[group] = split_early(ready.messages)
                early_all += early
            if early_all:
                self._send_all(early_all)
            applied_early = set()
            for group, ready in readies:
                if self._already_durable(group, ready):
                    self._apply(group, ready)
                    applied_early.add(group)
            writes = [w for w in (ready_to_write(g, r) for g, r in readies) if w is not None]
            if writes:
                try:
                    await loop.run_in_executor(self._disk, self.store.persist_batch, writes)
                except StoreError as exc:
                    await self._persist_failed(readies, applied_early, exc)
                    continue
                self.batches += 1
                self.batched_groups += len(writes)
                if self.store_error is not None:
                    log.warning("raft store writes succeed again: serving proposals")
                    self.store_error = None
            later_all: list[Any] = []
            for group, ready in readies:
                if group not in self.groups:
                    continue  # deleted while its write was on the disk
                storage = self.groups[group].storage
                snapshot = (
                    ready.snapshot is not None or getattr(ready, "local_snapshot", None) is not None
                )
                if storage is not None and (ready.entries or snapshot):
                    storage.persisted(ready.entries, snapshot)
                later_all += later[group]
                if group not in applied_early:
                    self._apply(group, ready)
                self.groups[group].node.advance(ready)
                if ready.read_states or self._reads.waiting(group):
                    self._reads.resolve(
                        group, ready.read_states, self.groups[group].node.applied,  # type: ignore[attr-defined]
                        ProposalFailed(f"group {group!r} has no leader to read from"),
                    )  # fmt: skip
                self._dirty.add(group)  # advance may leave more work (e.g. the next batch)
            if later_all:
                self._send_all(later_all)
            self._wake.set()

    def _is_own_entry(self, entry: Any, proposed_in_term: int) -> bool:
        """Whether the committed ``entry`` at a proposal's index is the one this node
        appended for it: the same term (Raft's log matching: index and term identify an
        entry). Another term there means another leader's entry replaced ours."""
        return bool(entry.term == proposed_in_term)

    async def _persist_failed(self, readies: list[tuple[GroupId, Any]], applied_early: set[GroupId],
                              exc: StoreError) -> None:
        """A batch did not reach the disk: nothing in it may be vouched for or applied.

        The groups keep their unpersisted work and try again after STORE_RETRY_SECONDS;
        meanwhile new proposals are refused (``store_error``), so a failing disk costs
        availability, never a confirm for what is not durable.
        """
        first = self.store_error is None
        if first:
            log.error("raft store write failed, proposals refused until it recovers: %s", exc)
        self.store_error = str(exc)
        handed = self._hand_off_leaderships()
        if first and handed:
            log.warning("handing the leadership of %d group(s) to other members while the store fails", handed)
        for group, ready in readies:
            slot = self.groups.get(group)
            if slot is not None:
                slot.node.persist_failed(ready, applied=group in applied_early)
                self._dirty.add(group)
        await asyncio.sleep(STORE_RETRY_SECONDS)
        self._wake.set()

    def _hand_off_leaderships(self) -> int:
        """A leader that cannot write its log can apply nothing, so its groups would stall
        while a healthy majority waits: each group it leads goes to its most caught-up
        reachable member (leadership transfer; the full node cannot win an election back,
        its vote needs a write). Asked again on every failed retry until it took; the
        number of groups asked."""
        handed = 0
        for group, slot in self.groups.items():
            lags = [(lag, peer) for peer in self.peers - self.down if (lag := slot.node.lag(peer)) is not None]
            if lags and self.transfer_leadership(group, min(lags)[1]):
                handed += 1
        return handed

    def _send_all(self, messages: Iterable[Any]) -> None:
        """Send one pump pass's messages of every group: appends merged per peer, and every
        heartbeat (and answer) to a peer in one message, however many groups it speaks for."""
        heartbeats: dict[int, list[Any]] = {}
        others = []
        for m in messages:
            if getattr(m, "type", None) in HEARTBEAT_TYPES:
                heartbeats.setdefault(m.to, []).append(heartbeat_to_wire(m))
            else:
                others.append(m)
        for to, wire in coalesce_appends(others, self.max_append_entries, self.max_append_bytes):
            self._send(to, wire)
        for to, items in heartbeats.items():
            self._send(to, [HEARTBEATS, items])

    def _already_durable(self, group: GroupId, ready: Any) -> bool:
        """Whether the ready's committed entries were all persisted by earlier batches, so
        they can be applied (and their proposers answered) without waiting for this one."""
        committed = ready.committed_entries
        if not committed or ready.snapshot is not None:
            return False
        last = committed[-1].index
        if ready.entries and ready.entries[0].index <= last:
            return False
        return bool(last <= self.store.last_index(group))

    def _apply(self, group: GroupId, ready: Any) -> None:
        """Apply committed entries; each resolves the proposal waiting at its index by what the
        log says: committed if the entry is the one this node appended (same term), else
        overwritten by another leader's entry. A term change alone decides nothing: an entry
        of an old term may still commit."""
        slot = self.groups[group]
        pending = slot.pending
        if ready.snapshot is not None:  # the leader's snapshot replaces the state first
            restore = getattr(self.state_machine, "restore", None)
            assert restore is not None, "this state machine cannot install a leader's snapshot"
            covered = ready.snapshot[0].index
            restore(group, covered, ready.snapshot[1])
            self.snapshots.installed_snapshot(group)
            for index in [i for i in pending if i <= covered]:  # entries this node will never see
                pending.pop(index)[0](None, ProposalFailed("outcome unknown: replaced by a snapshot"))
        if ready.committed_entries:
            self.snapshots.applied(group, ready.committed_entries)
        for entry in ready.committed_entries:
            waiting = pending.pop(entry.index, None) if pending else None
            if int(entry.kind) == NORMAL_KIND and entry.data:
                self.state_machine.apply(group, entry.index, entry.data[ENVELOPE_BYTES:])
            if waiting is not None:
                if self._is_own_entry(entry, waiting[2]):
                    waiting[0](entry.index, None)
                else:
                    waiting[0](None, ProposalFailed("overwritten by another leader's entry"))


def _report_death(task: asyncio.Task[None]) -> None:
    """The ticker and the pump never end but by ``stop()``: anything else is a bug that
    must not pass silently (the node would stay connected and never persist again)."""
    if not task.cancelled() and task.exception() is not None:
        log.critical("raft host task %s died", task.get_name(), exc_info=task.exception())


def _future_and_done() -> tuple[asyncio.Future[int], Done]:
    """A future and the ``Done`` callback that settles it (once)."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def done(index: int | None, error: ProposalFailed | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(index)  # type: ignore[arg-type]

    return future, done
