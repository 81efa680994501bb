"""One Raft group's node: pure, synchronous, deterministic (etcd-io/raft's RawNode style).

Inputs: ``tick()`` (the caller's clock), ``step(message)`` (from peers), ``propose``,
``propose_conf_change``, ``transfer_leadership``, ``read_index``, ``take_snapshot``.
Outputs: ``ready()`` -> a ``Ready`` to persist, send and apply, then ``advance(ready)``.
The exact driver order is in ``warren.raft.storage``'s docstring. Randomness (election
timeouts) comes from the caller's seeded ``Rng``; nothing here reads clocks or sockets.

Features: randomized elections, pre-vote, check-quorum with leader leases, a no-op at the
start of every term, pipelined replication with per-follower flow control (probe /
replicate / snapshot), the commit rule (entries of older terms are committed only
indirectly), snapshots taken by the application and sent in chunks, single-server
membership changes (a leader changes membership only after committing an entry of its
own term, and one change at a time), learners, leadership transfer (timeout-now) and
linearizable reads via ReadIndex.

Rules as hooks: each safety rule a planted bug could break is one small method whose
docstring starts with "Hook:" (``_log_ok_for_vote``, ``_on_higher_term``,
``_commit_rule_allows``, ``_self_match``, ``_read_quorum_acks``, ``_may_change_config``,
``_install_snapshot``). Test-only subclasses in ``tests/sim/planted.py`` override them to
prove the simulator's checkers catch each broken rule; production code has no bug flags.

Idle groups: QUIESCENCE. With ``quiesce_after_ticks`` > 0, a leader whose group had no
traffic for that many ticks, with everything committed and every member it can reach caught
up (a quorum of voters among them), sends one last heartbeat marked quiesce and stops
heartbeating; followers that get it stop their election timers, so an idle group costs no
messages and no ticks (the driver stops ticking quiesced nodes). What keeps that safe is the
driver's node-level liveness (one heartbeat per node pair, not per group), reported here:

- ``peer_unreachable(n)``: a quiesced follower whose leader is on ``n`` wakes with its lease
  over and campaigns within one election timeout; a quiesced leader wakes too (it must prove
  it still has a quorum or step down) and stops waiting for ``n`` before it quiesces again;
- ``peer_reachable(n)``: a leader wakes to catch ``n`` up.

Any proposal, read or membership change wakes the leader, and any message except a quiesce
heartbeat wakes a follower. A quiesced leader answers a pre-vote from a member (one that
restarted, or missed the quiesce heartbeat) with a quiesce heartbeat, so the member learns
the leader and goes quiet instead of campaigning against a lease that never ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from warren.limits import Limits
from warren.raft.log import RaftLog
from warren.raft.progress import Progress, ProgressState
from warren.raft.storage import Storage
from warren.raft.types import (
    NONE,
    ConfChange,
    Config,
    Entry,
    EntryKind,
    GroupId,
    HardState,
    Message,
    MsgType,
    SnapshotMeta,
)

TRANSFER = b"transfer"
QUIESCE = b"quiesce"
COMMIT_NOTICES_PER_TICK = 3  # empty appends that only carry a new commit, per follower per tick


class Rng(Protocol):
    def randint(self, a: int, b: int) -> int: ...


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: reads for ``context`` are linearizable once applied >= index.
    ``ok`` is False when the request could not be served (no leader, leadership lost)."""

    index: int
    context: bytes
    ok: bool = True


@dataclass(slots=True)
class Ready:
    entries: list[Entry]
    hard_state: HardState | None
    snapshot: tuple[SnapshotMeta, bytes] | None  # from the leader: persist, restore the SM
    messages: list[Message]
    committed_entries: list[Entry]
    read_states: list[ReadState] = field(default_factory=list)
    local_snapshot: tuple[SnapshotMeta, bytes] | None = None  # persist only (compaction)
    # Indexes of snapshots this leader is sending: saving a newer one must keep them.
    sending_snapshots: frozenset[int] = frozenset()
    # With ``snapshot``: the entries it retains (``meta.retained_from..meta.index``), to
    # persist with it for the state machine to read (never applied: the snapshot covers them).
    snapshot_entries: list[Entry] = field(default_factory=list)
    role: Role = Role.FOLLOWER
    leader: int = NONE
    term: int = 0

    def persist_to(self, storage: Storage) -> None:
        """Write what must be durable before the messages that need it go out (one order)."""
        if self.snapshot is not None:
            storage.save_snapshot(
                *self.snapshot, keep=self.sending_snapshots, retained=self.snapshot_entries
            )
        if self.local_snapshot is not None:
            storage.save_snapshot(*self.local_snapshot, keep=self.sending_snapshots)
        if self.entries:
            storage.append(self.entries)
        if self.hard_state is not None:
            storage.save(self.hard_state)


@dataclass(slots=True)
class _PendingRead:
    index: int
    context: bytes
    requester: int
    round: int


class RaftNode:
    def __init__(
        self,
        node_id: int,
        group: GroupId,
        storage: Storage,
        rng: Rng,
        *,
        voters: tuple[int, ...] = (),
        learners: tuple[int, ...] = (),
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        quiesce_after_ticks: int = 0,
        limits: Limits | None = None,
    ) -> None:
        assert node_id > 0 and heartbeat_ticks < election_ticks
        self.id = node_id
        self.group = group
        self.rng = rng
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.quiesce_after_ticks = quiesce_after_ticks
        limits = limits or Limits()
        self.max_entries = limits.raft_max_append_entries
        self.max_bytes = limits.raft_max_append_bytes
        self.max_apply_bytes = limits.raft_max_apply_bytes
        self.max_inflight = limits.raft_max_inflight_appends
        self.chunk_bytes = limits.raft_snapshot_chunk_bytes
        self.log = RaftLog(storage, Config(frozenset(voters), frozenset(learners)))
        hs = storage.load()
        self.term, self.vote = hs.term, hs.vote
        self.persisted_hs = HardState(hs.term, hs.vote, self.log.committed)
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.msgs: list[Message] = []
        self.append_pending = False
        self.read_states: list[ReadState] = []
        self.local_snapshot: tuple[SnapshotMeta, bytes] | None = None
        self.in_flight = False
        # A snapshot being received: its data so far, then its retained entries.
        self.snapshot_in: tuple[SnapshotMeta, bytearray, list[Entry]] | None = None
        self._reset(self.term)

    # ------------------------------------------------------------------ state changes
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term, self.vote = term, NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.timeout = self.election_ticks + self.rng.randint(0, self.election_ticks - 1)
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self._noticed_this_tick: dict[int, int] = {}  # follower -> empty commit appends this tick
        self._notice_due: set[int] = set()  # ... and those owed one at the next tick
        self.transfer_target = NONE
        self.quiesced = False
        self.idle_ticks = 0
        self.pending_reads: list[_PendingRead] = []
        self.reads_before_commit: list[tuple[bytes, int]] = []
        self.read_round = 0
        self.read_acks: dict[int, int] = {}
        self.term_start = 0
        self.pending_conf_index = 0

    def _fail_local_reads(self) -> None:
        for r in self.pending_reads:
            if r.requester == self.id:
                self.read_states.append(ReadState(0, r.context, ok=False))
        for ctx, requester in self.reads_before_commit:
            if requester == self.id:
                self.read_states.append(ReadState(0, ctx, ok=False))

    def _become_follower(self, term: int, leader: int) -> None:
        self._fail_local_reads()
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self._sync_progress()
        self._append(EntryKind.NOOP, b"")
        self.term_start = self.log.last_index()
        self.pending_conf_index = self.term_start  # no membership change before the no-op commits
        self._broadcast_append()

    def _sync_progress(self) -> None:
        config = self.log.config()
        for peer in config.members - {self.id}:
            if peer not in self.progress:
                self.progress[peer] = Progress(match=0, next=self.log.last_index() + 1)
        for peer in list(self.progress):
            if peer not in config.members:
                del self.progress[peer]

    def _promotable(self) -> bool:
        return self.id in self.log.config().voters

    # ------------------------------------------------------------------ inputs
    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_leader()
            return
        if self.quiesced:
            return
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.timeout:
            self.election_elapsed = 0
            self._campaign(pre=self.pre_vote, transfer=False)

    def _tick_leader(self) -> None:
        self.election_elapsed += 1
        self.heartbeat_elapsed += 1
        self._noticed_this_tick.clear()
        due, self._notice_due = self._notice_due, set()
        for peer in sorted(due):
            if peer in self.progress and self._send_append(peer):
                self._noticed_this_tick[peer] = 1
        if self.election_elapsed >= self.election_ticks:
            self.election_elapsed = 0
            self.transfer_target = NONE
            if self.check_quorum and not self.quiesced:
                voters = self.log.config().voters
                active = sum(1 for v in voters if v == self.id or self.progress[v].recent_active)
                if active < len(voters) // 2 + 1:
                    self._become_follower(self.term, NONE)
                    return
                for pr in self.progress.values():
                    pr.recent_active = False
        if self.quiesced:
            return
        if self.quiesce_after_ticks:
            self.idle_ticks += 1
            if self.idle_ticks >= self.quiesce_after_ticks and self._caught_up():
                self.quiesced = True
                self._broadcast_heartbeat(QUIESCE)
                return
        if self.heartbeat_elapsed >= self.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _caught_up(self) -> bool:
        """Nothing left to do: everything committed, every reachable member holds all of it
        (a quorum of voters among them), no read or transfer waiting."""
        last = self.log.last_index()
        if (
            self.log.committed != last
            or self.pending_reads
            or self.reads_before_commit
            or self.transfer_target != NONE
        ):
            return False
        caught_up_voters = 1
        for peer, pr in self.progress.items():
            if pr.unreachable:
                continue
            if pr.match != last:
                return False
            if peer in self.log.config().voters:
                caught_up_voters += 1
        return caught_up_voters >= self.log.config().quorum()

    def _wake(self) -> None:
        self.idle_ticks = 0
        if self.quiesced:
            self.quiesced = False
            self.election_elapsed = 0
            for pr in self.progress.values():
                pr.recent_active = False  # check-quorum counts only answers since waking

    @property
    def needs_ticks(self) -> bool:
        """Whether ticking this node can change anything (a quiesced one only waits)."""
        return not self.quiesced

    def peer_unreachable(self, node_id: int) -> None:
        """Node-level liveness says ``node_id`` is down (see the module docstring)."""
        if self.role == Role.LEADER:
            pr = self.progress.get(node_id)
            if pr is not None and not pr.unreachable:
                pr.unreachable = True
                self._wake()
        elif self.quiesced and self.leader == node_id:
            self.quiesced = False
            self.election_elapsed = self.election_ticks  # the leader's lease is over

    def peer_reachable(self, node_id: int) -> None:
        """Node-level liveness says ``node_id`` is back: a leader catches it up."""
        if self.role == Role.LEADER:
            pr = self.progress.get(node_id)
            if pr is not None and pr.unreachable:
                pr.unreachable = False
                self._wake()

    def propose(self, data: bytes) -> int | None:
        """Append ``data`` if this node leads; its index, or None (not leader / transferring)."""
        if self.role != Role.LEADER or self.transfer_target != NONE:
            return None
        self._wake()
        index = self._append(EntryKind.NORMAL, data)
        # Appends go out when the driver next asks for a ready: many proposals, one message.
        self.append_pending = True
        return index

    def propose_conf_change(self, change: ConfChange) -> int | None:
        """One membership change at a time, and only once an entry of this term committed."""
        if (
            self.role != Role.LEADER
            or self.transfer_target != NONE
            or not self._may_change_config()
        ):
            return None
        config = self.log.config()
        new = change.apply_to(config)
        if new == config or not new.voters:
            return None
        self._wake()
        index = self._append(EntryKind.CONF_CHANGE, change.encode())
        self.pending_conf_index = index
        self._sync_progress()
        self._broadcast_append()
        self._maybe_commit()
        return index

    def _may_change_config(self) -> bool:
        """Hook: a leader accepts a membership change only once the previous one (and the
        no-op that opened its term) committed: single-server changes, one at a time."""
        return self.pending_conf_index <= self.log.committed

    def transfer_leadership(self, target: int) -> bool:
        if self.role != Role.LEADER or target == self.id:
            return False
        if target not in self.log.config().voters:
            return False
        self._wake()
        self.transfer_target = target
        self.election_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(MsgType.TIMEOUT_NOW, target)
        else:
            self._send_append(target)
        return True

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; the answer arrives as a ``ReadState``."""
        if self.role == Role.LEADER:
            self._wake()
            self._leader_read(context, self.id)
        elif self.leader != NONE:
            self._send(MsgType.READ_INDEX, self.leader, context=context)
        else:
            self.read_states.append(ReadState(0, context, ok=False))

    def take_snapshot(self, index: int, data: bytes, keep_from: int | None = None) -> bool:
        """The state machine's state up to ``index`` (applied); the log before it may go.

        ``keep_from``: the storage keeps entries from this index on although the snapshot
        covers them (the state machine reads them back; the core does not), and a follower
        sent this snapshot gets them with it (``SnapshotMeta.retained_from``); it cannot go
        below what the storage still holds. False when refused: not newer than the log's
        base, or a snapshot is being written already."""
        assert index <= self.log.applied, "snapshot of unapplied state"
        if index <= self.log.base_index or self.log.pending_snapshot or self.local_snapshot:
            return False
        term = self.log.term(index)
        assert term is not None
        retained_from = 0
        if keep_from is not None and keep_from <= index:
            base = self.log.base_index
            held = self.log.storage.snapshot_meta()
            floor = base + 1  # entries up to the base are gone unless its snapshot kept them
            if held is not None and held[0].index == base and held[0].retained_from:
                floor = held[0].retained_from
            retained_from = max(keep_from, floor, 1)
        meta = SnapshotMeta(index, term, self.log.config_at(index), retained_from)
        self.local_snapshot = (meta, data)
        return True

    # ------------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        if m.group != self.group or m.to != self.id:
            return
        if m.term > self.term:
            if not self._on_higher_term(m):
                return
        elif m.term < self.term:
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT) and (
                self.check_quorum or self.pre_vote
            ):
                self._send(MsgType.APPEND_RESP, m.frm)  # our term makes a stale leader step down
            elif m.type == MsgType.PRE_VOTE:
                self._send(MsgType.PRE_VOTE_RESP, m.frm, reject=True)
            return
        handler = _HANDLERS.get(m.type)
        if handler is not None:
            handler(self, m)

    def _on_higher_term(self, m: Message) -> bool:
        """Hook: ``m`` carries a term above ours. Every request and response makes us a
        follower of its term, except pre-vote traffic (it never changes terms) and a vote
        request inside a leader lease (ignored: False, ``m`` is dropped)."""
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            in_lease = (
                self.check_quorum
                and self.leader != NONE
                and (self.quiesced or self.election_elapsed < self.election_ticks)
            )
            if in_lease and m.context != TRANSFER:
                if self.quiesced and self.role == Role.LEADER and m.frm in self.progress:
                    self._send_heartbeat(m.frm, QUIESCE)  # "I lead, and all is quiet"
                return False
        if m.type == MsgType.PRE_VOTE or (m.type == MsgType.PRE_VOTE_RESP and not m.reject):
            pass  # pre-votes never change terms
        elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
            self._become_follower(m.term, m.frm)
        else:
            self._become_follower(m.term, NONE)
        return True

    def _on_vote(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE
        resp = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (pre and m.term > self.term)
        )
        if can_vote and self._log_ok_for_vote(m):
            self._send(resp, m.frm, term=m.term)
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(resp, m.frm, reject=True)

    def _log_ok_for_vote(self, m: Message) -> bool:
        """Hook: the election restriction: grant only a candidate whose log is at least as
        up to date as ours (so a leader holds every committed entry)."""
        return self.log.is_up_to_date(m.index, m.log_term)

    def _on_vote_resp(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE_RESP
        if self.role != (Role.PRE_CANDIDATE if pre else Role.CANDIDATE):
            return
        # A pre-vote is granted at the term it asks for, refused at the voter's own term (a
        # pre-candidate keeps its term), so a refusal at our term counts too.
        if pre:
            current = m.term == self.term + 1 or (m.reject and m.term == self.term)
        else:
            current = m.term == self.term
        if not current:
            return
        self.votes[m.frm] = not m.reject
        self._count_votes()

    def _count_votes(self) -> None:
        config = self.log.config()
        granted = sum(1 for v in config.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in config.voters if self.votes.get(v) is False)
        if granted >= config.quorum():
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
        elif rejected >= config.quorum():
            self._become_follower(self.term, NONE)

    def campaign(self) -> None:
        """Start an election now, without waiting out an election timeout (a new group's
        preferred leader); a voter that is not leading and not already campaigning only."""
        if self.role is Role.FOLLOWER and self.id in self.log.config().voters:
            self._campaign(self.pre_vote, False)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._fail_local_reads()
            self._reset(self.term)
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
        else:
            self._fail_local_reads()
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            term = self.term
        self.votes = {self.id: True}
        kind = MsgType.PRE_VOTE if pre else MsgType.VOTE
        for v in sorted(self.log.config().voters - {self.id}):
            self._send(
                kind, v, term=term, index=self.log.last_index(), log_term=self.log.last_term(),
                context=TRANSFER if transfer else b"",
            )  # fmt: skip
        self._count_votes()

    def _on_append(self, m: Message) -> None:
        self._follow(m)
        if m.index < self.log.committed:
            self._send(MsgType.APPEND_RESP, m.frm, index=self.log.committed)
            return
        if self.log.term(m.index) == m.log_term:
            self.log.append(m.entries)
            last_new = m.index + len(m.entries)
            self._commit_to(min(m.commit, last_new))
            self._send(MsgType.APPEND_RESP, m.frm, index=last_new)
        else:
            # The hint skips every entry of a term the leader cannot share at these indexes:
            # the last index at or before the probe whose term is at most the leader's there.
            hint, hint_term = self._last_with_term_at_most(min(m.index, self.log.last_index()), m.log_term)
            self._send(MsgType.APPEND_RESP, m.frm, index=m.index, reject=True, hint=hint, log_term=hint_term)

    def _last_with_term_at_most(self, index: int, term: int) -> tuple[int, int]:
        """(i, term at i) for the largest i <= index whose term is at most ``term`` (etcd's
        findConflictByTerm); the log's base when none is held. A walk over this node's own
        log, which is cheap next to a round trip per entry."""
        base = self.log.base_index
        while index > base:
            held = self.log.term(index)
            if held is None or held <= term:
                return index, held or 0
            index -= 1
        return base, self.log.term(base) or 0

    def _follow(self, m: Message) -> None:
        if self.role != Role.FOLLOWER:
            self._become_follower(m.term, m.frm)
        self.leader = m.frm
        self.election_elapsed = 0
        self.quiesced = False

    def _on_heartbeat(self, m: Message) -> None:
        self._follow(m)
        self._commit_to(min(m.commit, self.log.last_index()))
        self.quiesced = m.context == QUIESCE
        self._send(MsgType.HEARTBEAT_RESP, m.frm, hint=m.hint)

    def _on_snapshot(self, m: Message) -> None:
        self._follow(m)
        meta = m.snapshot
        assert meta is not None
        if meta.index <= self.log.committed:
            self.snapshot_in = None
            self._send(MsgType.APPEND_RESP, m.frm, index=self.log.committed)
            return
        if m.offset == 0:
            self.snapshot_in = (meta, bytearray(), [])
        held = self.snapshot_in
        if held is None or held[0] != meta:
            self._send(MsgType.SNAPSHOT_RESP, m.frm, index=meta.index, reject=True)
            return
        # Held in memory until done: one snapshot per group at a time, its data plus the
        # entries it retains (what the leader's state machine chose to keep).
        buf, retained = held[1], held[2]
        if m.offset == len(buf) + len(retained):
            if m.entries:
                first = meta.retained_from + len(retained)
                if m.entries[0].index != first or m.entries[-1].index > meta.index:
                    return  # a leader bug or a forged chunk: ignore it, the leader retries
                retained.extend(m.entries)
            else:
                buf.extend(m.data)
            if m.done:
                self.snapshot_in = None
                self._install_snapshot(meta, bytes(buf), retained)
                self._send(MsgType.APPEND_RESP, m.frm, index=meta.index)
                return
        self._send(MsgType.SNAPSHOT_RESP, m.frm, index=meta.index, offset=len(buf) + len(retained))

    def _install_snapshot(self, meta: SnapshotMeta, data: bytes, retained: list[Entry] | None = None) -> None:
        """Hook: a whole snapshot from the leader arrived (with the entries it retains). If
        we hold its last entry, our log up to there matches (log matching): fast-forward the
        commit only. Otherwise the whole log goes, entries after the snapshot index too: they
        follow an entry that was never committed, so they are not the leader's."""
        if self.log.term(meta.index) == meta.term:
            self._commit_to(meta.index)
        else:
            self.log.restore(meta, data, retained or [])

    def _on_timeout_now(self, m: Message) -> None:
        if self._promotable():
            self._campaign(pre=False, transfer=True)

    def _on_read_index(self, m: Message) -> None:
        if self.role == Role.LEADER:
            self._wake()
            self._leader_read(m.context, m.frm)
        else:
            self._send(MsgType.READ_INDEX_RESP, m.frm, context=m.context, reject=True)

    def _on_read_index_resp(self, m: Message) -> None:
        self.read_states.append(ReadState(m.index, m.context, ok=not m.reject))

    # ------------------------------------------------------------------ leader side
    def _on_append_resp(self, m: Message) -> None:
        if self.role != Role.LEADER or m.frm not in self.progress:
            return
        pr = self.progress[m.frm]
        pr.recent_active = True
        pr.unreachable = False
        if m.reject:
            if pr.state == ProgressState.REPLICATE:
                if m.index <= pr.match:
                    return  # stale
                pr.become_probe()
            elif pr.state == ProgressState.PROBE:
                if m.index != pr.next - 1:
                    return  # stale
                probe = m.hint
                if m.log_term:  # the follower's term at its hint: skip our entries of later terms
                    probe = self._last_with_term_at_most(m.hint, m.log_term)[0]
                pr.next = max(min(m.index, probe + 1), pr.match + 1, 1)
                pr.probe_sent = False
            else:
                return
            self._send_append(m.frm)
            return
        if pr.acked(m.index):
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.snapshot_index:
                pr.become_probe()
                pr.become_replicate()
            self._maybe_commit()
            if self.role != Role.LEADER:
                return
            if self.transfer_target == m.frm and pr.match == self.log.last_index():
                self._send(MsgType.TIMEOUT_NOW, m.frm)
        while self._send_append(m.frm, allow_empty=False):
            pass

    def _on_heartbeat_resp(self, m: Message) -> None:
        if self.role != Role.LEADER or m.frm not in self.progress:
            return
        pr = self.progress[m.frm]
        pr.recent_active = True
        pr.unreachable = False
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= self.max_inflight:
            pr.inflight.popleft()
        if pr.state == ProgressState.SNAPSHOT:
            pr.snapshot_stalled_ticks += 1
            if pr.snapshot_stalled_ticks >= 3:
                self._send_snapshot_chunk(m.frm, pr)
        elif pr.match < self.log.last_index():
            self._send_append(m.frm)
        if m.hint:
            self.read_acks[m.frm] = max(self.read_acks.get(m.frm, 0), m.hint)
            self._release_reads()

    def _on_snapshot_resp(self, m: Message) -> None:
        if self.role != Role.LEADER or m.frm not in self.progress:
            return
        pr = self.progress[m.frm]
        pr.recent_active = True
        pr.unreachable = False
        if pr.state != ProgressState.SNAPSHOT or m.index != pr.snapshot_index:
            return
        if m.reject:
            pr.snapshot_offset = 0
        elif m.offset > pr.snapshot_offset:
            pr.snapshot_offset = m.offset
        else:
            return
        self._send_snapshot_chunk(m.frm, pr)

    def _self_match(self) -> int:
        """Hook: how far the leader counts itself toward commit: only what it persisted."""
        return self.log.persisted_index()

    def _commit_rule_allows(self, index: int) -> bool:
        """Hook: the commit rule: a leader commits by counting replicas only an entry of its
        own term (older ones commit with it, indirectly: the paper's Figure 8)."""
        return self.log.term(index) == self.term

    def _maybe_commit(self) -> None:
        if self.role != Role.LEADER:
            return
        config = self.log.config()
        matches = sorted(
            (self._self_match() if v == self.id else self.progress[v].match for v in config.voters),
            reverse=True,
        )
        if not matches:
            return
        q = matches[config.quorum() - 1]
        if q <= self.log.committed:
            return
        if not self._commit_rule_allows(q):
            return
        self._commit_to(q)
        if self.log.term(self.log.committed) == self.term and self.reads_before_commit:
            waiting, self.reads_before_commit = self.reads_before_commit, []
            for ctx, requester in waiting:
                self._leader_read(ctx, requester)
        if self.id not in config.voters and self.log.committed >= self.log.last_config_index():
            self._become_follower(self.term, NONE)  # removed: hand over by stepping down
            return
        # Followers learn the new commit soon, not at the next heartbeat (a proposal
        # forwarded from a follower waits for its own apply there): entries still to send
        # carry it; a follower that has them all gets an empty append -- at once, unless
        # it had COMMIT_NOTICES_PER_TICK this tick already, then at the next tick (a busy
        # group sends a few per follower per tick, not one per commit and its answer).
        for peer in sorted(self.progress):
            if self._send_append(peer, allow_empty=False):
                while self._send_append(peer, allow_empty=False):
                    pass
            elif self._noticed_this_tick.get(peer, 0) >= COMMIT_NOTICES_PER_TICK:
                self._notice_due.add(peer)
            elif self._send_append(peer):
                self._noticed_this_tick[peer] = self._noticed_this_tick.get(peer, 0) + 1

    def _commit_to(self, index: int) -> None:
        if index > self.log.committed:
            self.log.committed = index

    def _leader_read(self, context: bytes, requester: int) -> None:
        if self.log.term(self.log.committed) != self.term:
            self.reads_before_commit.append((context, requester))
            return
        self.read_round += 1
        self.pending_reads.append(
            _PendingRead(self.log.committed, context, requester, self.read_round)
        )
        self._broadcast_heartbeat()
        self._release_reads()

    def _release_reads(self) -> None:
        config = self.log.config()
        while self.pending_reads:
            r = self.pending_reads[0]
            if self._read_quorum_acks(config, r.round) < config.quorum():
                return
            self.pending_reads.pop(0)
            if r.requester == self.id:
                self.read_states.append(ReadState(r.index, r.context))
            else:
                self._send(MsgType.READ_INDEX_RESP, r.requester, index=r.index, context=r.context)

    def _read_quorum_acks(self, config: Config, at_round: int) -> int:
        """Hook: voters (this leader included) that answered read round ``at_round`` or a later
        one: a quorum of them proves nobody else led a later term when the read started."""
        return sum(1 for v in config.voters if v == self.id or self.read_acks.get(v, 0) >= at_round)

    def _append(self, kind: EntryKind, data: bytes) -> int:
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, kind, data)])
        self._sync_progress()
        return index

    def _broadcast_append(self) -> None:
        for peer in sorted(self.progress):
            while self._send_append(peer, allow_empty=False):
                pass

    def _broadcast_heartbeat(self, context: bytes = b"") -> None:
        for peer in sorted(self.progress):
            self._send_heartbeat(peer, context)

    def _send_heartbeat(self, peer: int, context: bytes = b"") -> None:
        pr = self.progress[peer]
        self._send(
            MsgType.HEARTBEAT, peer, commit=min(pr.match, self.log.committed),
            hint=self.read_round, context=context,
        )  # fmt: skip

    def _send_append(self, to: int, allow_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.paused(self.max_inflight):
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None or pr.next < self.log.first_index():
            return self._start_snapshot(to, pr)
        last = self.log.last_index()
        entries: list[Entry] = []
        if pr.next <= last:
            hi = min(last + 1, pr.next + self.max_entries)
            entries = self.log.entries(pr.next, hi, self.max_bytes)
        if not entries and not allow_empty:
            return False
        self._send(
            MsgType.APPEND, to, index=prev, log_term=prev_term, entries=entries,
            commit=self.log.committed,
        )  # fmt: skip
        if pr.state == ProgressState.REPLICATE and entries:
            pr.next = entries[-1].index + 1
            pr.inflight.append(entries[-1].index)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _start_snapshot(self, to: int, pr: Progress) -> bool:
        held = self.log.storage.snapshot_meta()
        if held is None:
            return False
        pr.become_snapshot(held[0].index, *held)
        self._send_snapshot_chunk(to, pr)
        return False

    def _send_snapshot_chunk(self, to: int, pr: Progress) -> None:
        """The next chunk of the snapshot this transfer started with (pinned by index: a
        newer snapshot taken meanwhile waits for the next transfer, so frequent snapshots
        cannot keep a slow follower from ever finishing). One chunk is read from storage:
        data bytes, then (offsets past the data count entries) its retained entries."""
        meta, size = pr.snapshot_meta, pr.snapshot_size
        assert meta is not None
        pr.snapshot_stalled_ticks = 0
        off = pr.snapshot_offset
        storage = self.log.storage
        entries: list[Entry] | None = []
        chunk: bytes | None = b""
        if off < size or not meta.retained_from:
            chunk = storage.snapshot_chunk(meta.index, off, self.chunk_bytes)
            done = chunk is not None and off + len(chunk) >= size and not meta.retained_from
        else:
            lo = meta.retained_from + off - size
            entries = storage.retained_entries(lo, meta.index + 1, self.chunk_bytes)
            done = bool(entries) and entries[-1].index == meta.index  # type: ignore[index]
        if chunk is None or entries is None:
            # Dropped before the store heard it was being sent (a newer one was saved by a
            # ready cut before this transfer began): start over with the latest.
            held = storage.snapshot_meta()
            if held is None or held[0].index == meta.index:
                return
            pr.become_snapshot(held[0].index, *held)
            self._send_snapshot_chunk(to, pr)
            return
        self._send(
            MsgType.SNAPSHOT, to, snapshot=meta, offset=off, data=chunk, done=done,
            entries=entries, index=entries[0].index - 1 if entries else 0,
        )  # fmt: skip

    def _send(self, kind: MsgType, to: int, term: int | None = None, **fields: object) -> None:
        """Queue a message for the next ready (whether it may leave before that ready is
        persisted is ``Message.may_send_before_persist``)."""
        self.msgs.append(
            Message(kind, self.group, self.id, to, self.term if term is None else term, **fields)  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ ready / advance
    def has_ready(self) -> bool:
        if self.in_flight:
            return False
        return bool(
            self.msgs
            or self.append_pending
            or self.log.unstable
            or self.log.pending_snapshot
            or self.read_states
            or self.local_snapshot
            or self._hard_state_changed()
            or min(self.log.committed, self.log.persisted_index()) > self.log.applied
        )

    def _hard_state_changed(self) -> bool:
        hs = self.persisted_hs
        return self.term != hs.term or self.vote != hs.vote or self.log.committed != hs.commit

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def ready(self) -> Ready:
        assert not self.in_flight, "advance() the previous ready first"
        if self.append_pending:
            self.append_pending = False
            if self.role == Role.LEADER:
                self._broadcast_append()
        self.in_flight = True
        hs = self._hard_state()
        hi = min(self.log.committed, self.log.persisted_index())
        # bounded, so a restart with a long unapplied log does not hand it over in one piece
        committed = (self.log.entries(self.log.applied + 1, hi + 1, self.max_apply_bytes)
                     if hi > self.log.applied else [])
        rd = Ready(
            entries=list(self.log.unstable),
            hard_state=hs if hs != self.persisted_hs else None,
            snapshot=self.log.pending_snapshot,
            messages=self.msgs,
            committed_entries=committed,
            read_states=self.read_states,
            local_snapshot=self.local_snapshot,
            snapshot_entries=self.log.pending_retained,
            sending_snapshots=frozenset(
                pr.snapshot_index for pr in self.progress.values()
                if pr.state == ProgressState.SNAPSHOT
            ),
            role=self.role,
            leader=self.leader,
            term=self.term,
        )
        self.msgs, self.read_states = [], []
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted (fsynced) ``rd``, sent its messages and applied its entries."""
        self.in_flight = False
        if rd.snapshot is not None:
            self.log.snapshot_persisted(rd.snapshot[0])
        if rd.entries:
            self.log.stable_to(rd.entries[-1].index, rd.entries[-1].term)
        if rd.hard_state is not None:
            self.persisted_hs = rd.hard_state
        if rd.committed_entries:
            self.log.applied = max(self.log.applied, rd.committed_entries[-1].index)
        if rd.local_snapshot is not None:
            self.log.compacted(rd.local_snapshot[0].index)
            if self.local_snapshot is rd.local_snapshot:
                self.local_snapshot = None
        if self.role == Role.LEADER:
            self._maybe_commit()

    def persist_failed(self, rd: Ready, applied: bool) -> None:
        """The driver could not persist ``rd`` (a store error): nothing of it is durable.

        Its entries, hard state and snapshots stay pending and come again in a later ready;
        its messages that had not left are dropped (Raft tolerates lost messages). With
        ``applied``, the driver already applied its committed entries (they were durable
        from earlier readies): they are not handed out again.
        """
        assert self.in_flight, "persist_failed() of a ready that was not handed out"
        self.in_flight = False
        if applied and rd.committed_entries:
            self.log.applied = max(self.log.applied, rd.committed_entries[-1].index)

    # ------------------------------------------------------------------ introspection
    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def status(self) -> dict[str, object]:
        return {
            "id": self.id,
            "group": self.group,
            "role": self.role.value,
            "term": self.term,
            "leader": self.leader,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last_index": self.log.last_index(),
            "snapshot_index": self.log.base_index,  # the log holds entries after it
            "quiesced": self.quiesced,
            "config_index": self.log.last_config_index(),  # the entry of the config in effect
            "voters": sorted(self.log.config().voters),
            "learners": sorted(self.log.config().learners),
            # on a leader: how many entries each member lacks (its replication lag)
            "lag": {peer: self.log.last_index() - pr.match for peer, pr in sorted(self.progress.items())},
        }

    def lag(self, node_id: int) -> int | None:
        """On a leader: entries ``node_id`` lacks; None elsewhere or for a non-member."""
        pr = self.progress.get(node_id) if self.role == Role.LEADER else None
        return None if pr is None else self.log.last_index() - pr.match

    def config(self) -> Config:
        """The membership in effect (the latest configuration entry in the log)."""
        return self.log.config()


_HANDLERS = {
    MsgType.VOTE: RaftNode._on_vote,
    MsgType.PRE_VOTE: RaftNode._on_vote,
    MsgType.VOTE_RESP: RaftNode._on_vote_resp,
    MsgType.PRE_VOTE_RESP: RaftNode._on_vote_resp,
    MsgType.APPEND: RaftNode._on_append,
    MsgType.HEARTBEAT: RaftNode._on_heartbeat,
    MsgType.SNAPSHOT: RaftNode._on_snapshot,
    MsgType.APPEND_RESP: RaftNode._on_append_resp,
    MsgType.HEARTBEAT_RESP: RaftNode._on_heartbeat_resp,
    MsgType.SNAPSHOT_RESP: RaftNode._on_snapshot_resp,
    MsgType.TIMEOUT_NOW: RaftNode._on_timeout_now,
    MsgType.READ_INDEX: RaftNode._on_read_index,
    MsgType.READ_INDEX_RESP: RaftNode._on_read_index_resp,
}
