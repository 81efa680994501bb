"""Deterministic simulator (VOPR-style) for warren.raft: real nodes, simulated everything else.

ONE seed drives everything: the nemesis profile and fault rates of this run (``Params``),
network delay/loss/duplication/reordering, symmetric and one-way partitions (a cut link
also loses what is on its way), disk latency, crashes and restarts (a crash loses every
write whose simulated fsync had not completed, and maybe what the node had sent but the
network had not delivered), crashes aimed at persist boundaries (just before or just after
a ready's fsync), whole-cluster power losses, process pauses, client operations, snapshots
(every 2-20 applied entries in most seeds, sent in chunks as small as 8 bytes),
membership changes (spare nodes outside the configuration are added, promoted, demoted
and removed under every profile) and leadership transfers, and the Raft tick settings
(the simulator's 10/1 or the production 30/5 of ``warren raft-node``).

Checkers (a violation raises ``Violation`` with a message):
- election safety: at most one leader per (group, term);
- log safety: committed entries never differ between nodes, and a node that becomes leader
  holds every entry committed in an earlier term (a committed entry is never lost);
- log matching, on every node's durable log: an entry (index, term) always follows the
  same term, and terms never decrease along a log;
- terms: a node that steps a request or response of a higher term ends at that term or
  higher (only vote requests, which a leader lease may ignore, and pre-votes are exempt);
- state machine safety: every node applies the same entry at each index;
- one membership change at a time: no log holds two configuration entries above the
  highest index known committed;
- linearizability of a per-group KV store (puts through the log, gets through ReadIndex);
- liveness: after faults heal, every group commits a fresh put within a bounded time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgpack

from tests.sim.linearizability import INF, Op, check_register
from tests.sim.planted import PLANTED
from warren.limits import Limits
from warren.raft.node import RaftNode, Ready, Role
from warren.raft.storage import MemoryStorage
from warren.raft.types import (
    ConfChange,
    ConfChangeKind,
    Config,
    EntryKind,
    Message,
    MsgType,
    message_from_wire,
)

# Time: TICK time units make one simulator tick, a tenth of an election timeout. Faults,
# clients and every "ticks" knob in Params count in simulator ticks. The Raft nodes tick
# at their own rate: TICK * 10 // election_ticks, so with the production settings of
# ``warren raft-node`` (30/5) a node ticks three times per simulator tick, and the run
# covers the same number of election timeouts as with the simulator's 10/1.
TICK = 30
TICK_SETTINGS = ((10, 1), (30, 5))  # (election_ticks, heartbeat_ticks)
# Clean runs spend at most about 12 events per node (spares included), group and
# simulator tick (12.2 measured over seeds 0-1199 on 3 nodes, 10.3 over 0-249 on 5, both
# tick settings); the step budget allows ten times that.
STEPS_PER_NODE_GROUP_TICK = 10 * 12
KEYS = ("a", "b", "c")
KEEPS_TERM = (MsgType.VOTE, MsgType.PRE_VOTE)  # may be ignored inside a leader lease


class Violation(AssertionError):
    pass


def explain(ops: list[Op]) -> str:
    """The end of the shortest prefix (by call time) of ``ops`` that no order explains."""
    ops = sorted(ops, key=lambda o: o.call)
    lo, hi = 1, len(ops)  # find the smallest failing prefix length (binary search)
    while lo < hi:
        mid = (lo + hi) // 2
        if check_register(ops[:mid]):
            lo = mid + 1
        else:
            hi = mid
    shown = ops[max(0, lo - 8) : lo]
    lines = "\n  ".join(
        f"{'write' if o.is_write else 'read '} {o.value!r} by client {o.client} at n{o.node}: "
        f"called t={o.call}, returned t={o.ret}"
        for o in shown
    )
    return f"{len(ops)} operations; the first {lo} are not linearizable, ending with:\n  {lines}"


PROFILES = ("chaos", "leader-hunt", "pause", "power")


@dataclass
class Params:
    """Per-seed fault rates and knobs, all drawn from the seed.

    The nemesis profile shapes the faults. ``chaos`` draws every fault rate independently
    (anything may happen at once). ``leader-hunt`` is the Raft paper's Figure 8 made
    likely: every new leader is cut off from the others within a few ticks, the partition
    follows the leader and hardly heals, and the log is shipped in small batches, so
    leaders of different terms leave different uncommitted tails and a later leader
    catches followers up on entries of older terms while it is being cut off. ``pause``
    freezes leaders (a GC pause, SIGSTOP) long enough for the others to elect a new one;
    the frozen node wakes up still believing it leads and may answer a client before it
    has read what arrived meanwhile. ``power`` cuts the power of the whole cluster again
    and again while the disks are slow: everything not yet fsynced is lost everywhere.
    """

    profile: str
    loss: float
    dup: float
    max_delay: int
    disk_latency: int
    crash_rate: float
    partition_rate: float
    max_entries: int
    snapshot_every: int
    chunk_bytes: int
    quiesce: int
    reconfig_rate: float  # per tick and group: propose a membership change
    conf_burst: float  # chance that a change is followed at once by another (to be refused)
    transfer_rate: float  # per tick and group: transfer leadership
    all_voters: bool  # with more than 3 nodes: all start as voters (else 3 voters + learners)
    spares: int  # nodes outside the initial configuration, there to be added (and removed)
    # Nemesis profile: how crashes and partitions pick their victims.
    power_loss: float  # share of crashes that take every node down at once
    restart_ticks: tuple[int, int]  # a crashed node comes back after this many ticks
    drop_on_crash: float  # chance that a message still in flight from a crashed node is lost
    leader_crash_rate: float  # per tick: crash the node leading some group
    isolate_rate: float  # per tick: cut the leader of some group off from everyone else
    heal_rate: float  # per tick while partitioned: heal
    kill_new_leader: float  # chance that a node is crashed within 4 ticks of winning
    isolate_new_leader: float  # chance that a node is cut off within 10 ticks of winning
    pause_rate: float  # per tick: freeze the leader of some group (a GC pause, SIGSTOP)
    # Crashes at persist boundaries: when a ready's simulated fsync is due, the node may
    # crash just before it (the write is lost, what left early is out) or just after
    # (durable, but nothing that waited for it is sent). Chance per ready, by what it holds.
    crash_at_vote: float  # a new term or vote
    crash_at_snapshot: float  # a snapshot (installed from the leader, or taken locally)
    crash_at_write: float  # entries or a commit index only
    # Clients: how many per group, how many keys, think time and patience.
    clients: int
    keys: int
    think_ticks: int
    timeout_ticks: int
    # Raft timing of every node: the simulator's 10/1 or the production 30/5.
    election_ticks: int
    heartbeat_ticks: int

    @staticmethod
    def draw(rng: random.Random, profile: str | None = None) -> Params:
        drawn = rng.choice(("chaos",) * 3 + ("leader-hunt",) * 3 + ("pause", "power") * 2)
        profile = profile or drawn
        assert profile in PROFILES, profile
        p = Params(
            profile=profile,
            loss=rng.choice([0.0, 0.01, 0.05, 0.15]),
            dup=rng.choice([0.0, 0.02, 0.1]),
            max_delay=rng.choice([6, 30, 90]),
            disk_latency=rng.choice([0, 9, 45]),
            crash_rate=rng.choice([0.0, 0.002, 0.01]),
            partition_rate=rng.choice([0.0, 0.003, 0.01]),
            max_entries=rng.choice([1, 2, 8, 512]),
            snapshot_every=rng.choice([0, 2, 4, 8, 20]),
            chunk_bytes=rng.choice([8, 64, 1 << 20]),
            quiesce=rng.choice([0, 0, 15]),
            reconfig_rate=rng.choice([0.01, 0.03, 0.06]),
            conf_burst=rng.choice([0.0, 0.2, 0.5]),
            transfer_rate=rng.choice([0.0, 0.005, 0.02]),
            all_voters=rng.random() < 0.5,
            spares=rng.choice([1, 1, 2]),
            power_loss=rng.choice([0.0, 0.3]),
            restart_ticks=rng.choice([(5, 60), (1, 12), (1, 3)]),
            drop_on_crash=rng.choice([0.0, 0.5, 1.0]),
            leader_crash_rate=rng.choice([0.0, 0.0, 0.01, 0.03]),
            isolate_rate=rng.choice([0.0, 0.0, 0.005, 0.02]),
            heal_rate=rng.choice([0.003, 0.01, 0.05]),
            kill_new_leader=rng.choice([0.0, 0.0, 0.2, 0.5]),
            isolate_new_leader=rng.choice([0.0, 0.0, 0.3, 0.7]),
            pause_rate=rng.choice([0.0, 0.0, 0.005, 0.02]),
            crash_at_vote=rng.choice([0.0, 0.1, 0.3]),
            crash_at_snapshot=rng.choice([0.0, 0.1, 0.3]),
            crash_at_write=rng.choice([0.0, 0.002, 0.01]),
            clients=rng.choice([2, 3, 4]),
            keys=rng.choice([1, 2, 3]),
            think_ticks=rng.choice([0, 0, 5, 30]),
            timeout_ticks=rng.choice([15, 40]),
            election_ticks=0,
            heartbeat_ticks=0,
        )
        p.election_ticks, p.heartbeat_ticks = rng.choice(TICK_SETTINGS)
        quiet = dict(
            crash_rate=0.0, partition_rate=0.0, leader_crash_rate=0.0, isolate_rate=0.0,
            kill_new_leader=0.0, isolate_new_leader=0.0, pause_rate=0.0, think_ticks=0,
        )  # fmt: skip  (membership changes and transfers go on under every profile)
        if profile == "leader-hunt":
            return dataclasses.replace(
                p, **{**quiet, "isolate_new_leader": 1.0}, heal_rate=0.003, loss=0.0,
                max_entries=1, max_delay=90,
            )  # fmt: skip
        if profile == "pause":
            return dataclasses.replace(p, **{**quiet, "pause_rate": rng.choice([0.01, 0.03])})
        if profile == "power":
            return dataclasses.replace(
                p, **{**quiet, "crash_rate": rng.choice([0.01, 0.03])}, power_loss=1.0,
                disk_latency=45, restart_ticks=(1, 12),
            )  # fmt: skip
        return p


@dataclass
class Replica:
    """One group on one node: the Raft node, its durable storage and its state machine."""

    raft: RaftNode
    disk: MemoryStorage
    kv: dict[str, Any] = field(default_factory=dict)
    writing: Ready | None = None
    checked_commit: int = 0  # committed entries up to here were compared with the record


@dataclass
class Client:
    busy_until: float = 0.0
    op: tuple[Any, ...] | None = None  # (kind, node, group, key, value/ctx, call_time, index)


class EventLoop:
    """What every simulator shares: a heap of timed events, a trace, and its digest (a
    subclass's ``__init__`` sets ``seed``, ``now``, ``seq``, ``events``, ``trace``, ``digest``)."""

    seed: int
    now: int
    seq: int
    events: list[tuple[int, int, str, Any]]
    trace: Any
    digest: Any

    def _schedule(self, delay: int, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (self.now + delay, self.seq, kind, payload))

    def _log(self, text: str) -> None:
        line = f"t={self.now} {text}"
        self.trace.append(line)
        self.digest.update(line.encode())

    def fail(self, text: str) -> None:
        raise Violation(f"seed {self.seed}: {text}")


class Simulation(EventLoop):
    def __init__(
        self,
        seed: int,
        nodes: int = 3,
        groups: int = 2,
        node_class: type[RaftNode] | str = RaftNode,
        duration_ticks: int = 600,
        overrides: dict[str, Any] | None = None,
        profile: str | None = None,
        step_budget: int | None = None,
    ) -> None:
        self.seed = seed
        self.steps = 0
        self.rng = random.Random(seed)
        self.p = Params.draw(self.rng, profile)
        if overrides:
            self.p = dataclasses.replace(self.p, **overrides)
        # ``nodes`` start as members (voters, or 3 voters and learners); spares (at most one
        # beside 5 nodes) start outside the configuration, for membership changes to add.
        self.members = nodes
        spares = self.p.spares if nodes <= 3 else self.p.spares - 1
        self.node_ids = list(range(1, nodes + spares + 1))
        # Events a run may take before it counts as a livelock (a failure with its replay
        # line, not a hang): far above what clean runs use (see STEPS_PER_NODE_GROUP_TICK).
        self.step_budget = step_budget or (
            duration_ticks * len(self.node_ids) * groups * STEPS_PER_NODE_GROUP_TICK
        )
        self.groups = list(range(groups))
        # The core under test: RaftNode, or a planted bug's subclass (by class or name).
        self.node_class = PLANTED[node_class] if isinstance(node_class, str) else node_class
        self.duration = duration_ticks * TICK
        self.heal_at = self.duration * 6 // 10
        self.now = 0
        self.seq = 0
        self.events: list[tuple[int, int, str, Any]] = []
        self.trace: deque[str] = deque(maxlen=300)
        self.digest = hashlib.blake2b(digest_size=16)  # of every trace line: replay identity
        self.alive = {n: True for n in self.node_ids}
        self.epoch = {n: 0 for n in self.node_ids}
        self.blocked: set[tuple[int, int]] = set()
        # A paused node neither ticks nor handles anything; what arrives waits for it.
        self.paused: dict[int, int] = {}  # node -> resume time
        self.held: dict[int, list[tuple[str, Any]]] = {}
        self.disks = {(n, g): MemoryStorage() for n in self.node_ids for g in self.groups}
        self.replicas: dict[tuple[int, int], Replica] = {}
        self.limits = Limits(
            raft_max_append_entries=self.p.max_entries,
            raft_snapshot_chunk_bytes=self.p.chunk_bytes,
            raft_max_inflight_appends=4,
        )
        self.leaders: dict[tuple[int, int], int] = {}
        self.committed: dict[int, dict[int, int]] = {g: {} for g in self.groups}
        self.top_commit = {g: 0 for g in self.groups}  # the highest index known committed
        # (index, term) -> the term before it, as first persisted anywhere: log matching.
        self.links: dict[int, dict[tuple[int, int], int]] = {g: {} for g in self.groups}
        # The lowest term of a node seen holding each committed index: the entry was
        # committed in that term or earlier, so every leader of a later term must hold it.
        self.commit_term: dict[int, dict[int, int]] = {g: {} for g in self.groups}
        self.applied_at: dict[int, dict[int, bytes]] = {g: {} for g in self.groups}
        self.history: dict[tuple[int, str], list[Op]] = {}
        self.keys = KEYS[: self.p.keys]
        self.clients = {(g, c): Client() for g in self.groups for c in range(self.p.clients)}
        self.op_seq = 0
        self.waiting_puts: dict[tuple[int, int, int], tuple[Any, ...]] = {}
        self.waiting_reads: dict[bytes, tuple[Any, ...]] = {}
        self.progress_after_heal: set[int] = set()
        # What this run exercised (elections, conf changes, transfers, snapshot installs,
        # crash points): tests assert the seeds cover each of them, not only that they pass.
        self.stats: Counter[str] = Counter()
        # A node's Raft clock: its ticks come this often (in time units).
        self.node_tick = TICK * 10 // self.p.election_ticks
        for n in self.node_ids:
            self._start(n)
            self._schedule(self.rng.randint(0, self.node_tick), "tick", n)
        self._schedule(0, "world", None)

    # ------------------------------------------------------------------ plumbing
    def fingerprint(self) -> str:
        """Identifies this run: same seed and settings, same fingerprint."""
        h = self.digest.copy()
        h.update(repr(sorted(self.committed.items())).encode())
        h.update(repr(sorted(self.history.items())).encode())
        return h.hexdigest()

    def _start(self, n: int) -> None:
        nv = self.members if self.p.all_voters else min(3, self.members)
        voters, learners = tuple(self.node_ids[:nv]), tuple(self.node_ids[nv : self.members])
        for g in self.groups:
            disk = self.disks[(n, g)]
            raft = self.node_class(
                n, g, disk, self.rng, voters=voters, learners=learners,
                election_ticks=self.p.election_ticks, heartbeat_ticks=self.p.heartbeat_ticks,
                quiesce_after_ticks=self.p.quiesce * self.p.election_ticks // 10,
                limits=self.limits,
            )  # fmt: skip
            rep = Replica(raft, disk)
            saved = disk.load_snapshot()
            if saved is not None:
                rep.kv = dict(msgpack.unpackb(saved[1]))
            self.replicas[(n, g)] = rep

    # ------------------------------------------------------------------ driver
    def _pump(self, n: int, g: int) -> None:
        rep = self.replicas[(n, g)]
        raft = rep.raft
        self._check_node(n, g, raft)
        if rep.writing is not None or not raft.has_ready():
            return
        rd = raft.ready()
        rep.writing = rd
        for m in rd.messages:
            if m.may_send_before_persist:
                self._send(m)
        durable = rd.entries or rd.hard_state or rd.snapshot or rd.local_snapshot
        if durable and self.p.disk_latency:
            self._schedule(self.rng.randint(1, self.p.disk_latency), "disk", (n, g, self.epoch[n]))
        else:
            self._persisted(n, g)

    def _persisted(self, n: int, g: int) -> None:
        rep = self.replicas[(n, g)]
        rd = rep.writing
        assert rd is not None
        rep.writing = None
        disk = rep.disk
        self._persist(n, g, rd, disk)
        for m in rd.messages:
            if not m.may_send_before_persist:
                self._send(m)
        if rd.snapshot is not None:
            self.stats["snapshot installs"] += 1
            rep.kv = dict(msgpack.unpackb(rd.snapshot[1]))
        for e in rd.committed_entries:
            self._apply(n, g, rep, e.index, e.term, e.kind, e.data)
        rep.raft.advance(rd)
        for rs in rd.read_states:
            self._read_state(n, g, rs.context, rs.index, rs.ok)
        if (
            self.p.snapshot_every
            and rep.raft.applied - rep.raft.log.base_index >= self.p.snapshot_every
        ):
            rep.raft.take_snapshot(rep.raft.applied, msgpack.packb(rep.kv))
        self._complete_reads(n, g)
        self._pump(n, g)

    def _persist(self, n: int, g: int, rd: Ready, disk: MemoryStorage) -> None:
        """Write ``rd`` to the durable disk and check log matching there: wherever an entry
        (index, term) is held it follows the same term (its term's leader created one entry
        at each index, after the one it held), and terms never decrease along a log."""
        rd.persist_to(disk)
        if rd.entries:
            prev = disk.term(rd.entries[0].index - 1)
            for e in rd.entries:
                self._check_link(n, g, e.index, e.term, prev)
                prev = e.term
        elif rd.snapshot is not None:
            index = rd.snapshot[0].index + 1
            term = disk.term(index)
            if term is not None:
                self._check_link(n, g, index, term, disk.term(index - 1))

    def _check_link(self, n: int, g: int, index: int, term: int, prev: int | None) -> None:
        if prev is None:
            return
        if term < prev:
            self.fail(f"node {n} group {g}: durable log has term {term} at {index} after {prev}")
        held = self.links[g].setdefault((index, term), prev)
        if held != prev:
            self.fail(
                f"log matching: node {n} group {g} holds entry {index} of term {term} after "
                f"term {prev}; elsewhere it follows term {held}"
            )

    def _fsync_due(self, n: int, g: int) -> None:
        """The simulated fsync of the ready in flight completes, or the node crashes at this
        persist boundary (see ``Params.crash_at_vote``)."""
        rep = self.replicas[(n, g)]
        rd = rep.writing
        assert rd is not None
        if self.now < self.heal_at:
            if rd.snapshot is not None or rd.local_snapshot is not None:
                rate = self.p.crash_at_snapshot
            elif rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) != (
                rep.disk.hard_state.term, rep.disk.hard_state.vote,
            ):  # fmt: skip
                rate = self.p.crash_at_vote
            else:
                rate = self.p.crash_at_write
            if rate and self.rng.random() < rate:
                synced = self.rng.random() < 0.5
                if synced:
                    self._persist(n, g, rd, rep.disk)
                self._log(f"n{n} crashes {'after' if synced else 'before'} an fsync of group {g}")
                self.stats["crash points"] += 1
                self._crash_and_restart(n)
                return
        self._persisted(n, g)

    def _send(self, m: Message) -> None:
        if (m.frm, m.to) in self.blocked or self.rng.random() < self.p.loss:
            return
        copies = 2 if self.rng.random() < self.p.dup else 1
        for _ in range(copies):
            self._schedule(
                self.rng.randint(1, self.p.max_delay),
                "msg",
                (m.to_wire(), m.frm, self.epoch[m.frm]),
            )

    def _check_node(self, n: int, g: int, raft: RaftNode) -> None:
        if raft.role == Role.LEADER:
            holder = self.leaders.setdefault((g, raft.term), n)
            if holder != n:
                self.fail(f"two leaders in group {g} term {raft.term}: {holder} and {n}")
            if not getattr(raft, "_sim_checked_term", 0) == raft.term:
                raft._sim_checked_term = raft.term  # type: ignore[attr-defined]
                self._log(f"n{n} leads group {g} in term {raft.term}")
                self.stats["elections"] += 1
                # (A leader of an older term may still win late, with votes that were
                # delayed: it need not hold what later terms committed.)
                seen_in = self.commit_term[g]
                for index, term in self.committed[g].items():
                    if (
                        seen_in[index] < raft.term
                        and index >= raft.log.first_index()
                        and raft.log.term(index) != term
                    ):
                        self.fail(
                            f"leader {n} of group {g} term {raft.term} lacks committed entry "
                            f"{index} (term {term}), has {raft.log.term(index)}"
                        )
                if self.now < self.heal_at and self.rng.random() < self.p.kill_new_leader:
                    self._schedule(self.rng.randint(0, 4 * TICK), "kill", (n, self.epoch[n]))
                if self.now < self.heal_at and self.rng.random() < self.p.isolate_new_leader:
                    self._schedule(self.rng.randint(0, 10 * TICK), "isolate", (n, self.epoch[n]))
        log = raft.log
        rep = self.replicas[(n, g)]
        if log.committed > rep.checked_commit:
            record, seen_in = self.committed[g], self.commit_term[g]
            for index in range(max(log.first_index(), rep.checked_commit + 1), log.committed + 1):
                term = log.term(index)
                if term is None:
                    continue
                if record.setdefault(index, term) != term:
                    self.fail(
                        f"node {n} committed group {g} index {index} with term {term}, "
                        f"committed elsewhere with term {record[index]}"
                    )
                if seen_in.get(index, raft.term) >= raft.term:
                    seen_in[index] = raft.term
            rep.checked_commit = log.committed
            self.top_commit[g] = max(self.top_commit[g], log.committed)
        if len(log.configs) > 1 and log.configs[-2][0] > self.top_commit[g]:
            # One membership change at a time: a leader proposes the next only once the
            # previous one committed, so no log ever holds two above the commit point.
            self.fail(
                f"node {n} group {g} holds two uncommitted configuration entries, at "
                f"{log.configs[-2][0]} and {log.configs[-1][0]} (commit {self.top_commit[g]})"
            )

    def _apply(
        self, n: int, g: int, rep: Replica, index: int, term: int, kind: int, data: bytes
    ) -> None:
        seen = self.applied_at[g].setdefault(index, bytes([kind]) + term.to_bytes(8, "big") + data)
        if seen != bytes([kind]) + term.to_bytes(8, "big") + data:
            self.fail(f"node {n} applied a different entry at group {g} index {index}")
        known = self.committed[g].get(index)
        if known is not None and known != term:
            self.fail(f"node {n} applied term {term} at {g}/{index}, committed term was {known}")
        self.committed[g][index] = term
        self.top_commit[g] = max(self.top_commit[g], index)
        if self.commit_term[g].get(index, rep.raft.term) >= rep.raft.term:
            self.commit_term[g][index] = rep.raft.term
        if kind == EntryKind.NORMAL:
            op_id, key, value = msgpack.unpackb(data)
            rep.kv[key] = value
        put = self.waiting_puts.pop((n, g, index), None)
        if put is not None:
            self._finish_put(put, msgpack.unpackb(data)[0] if kind == EntryKind.NORMAL else None)

    # ------------------------------------------------------------------ clients
    def _client_step(self, g: int, c: int) -> None:
        client = self.clients[(g, c)]
        if client.op is not None or self.now < client.busy_until:
            return
        alive = [n for n in self.node_ids if self.alive[n] and n not in self.paused]
        if not alive:
            return
        # Clients go to a node that believes it leads (a deposed one too) most of the time.
        leaders = [n for n in alive if self.replicas[(n, g)].raft.role == Role.LEADER]
        n = self.rng.choice(leaders if leaders and self.rng.random() < 0.8 else alive)
        raft = self.replicas[(n, g)].raft
        key = self.rng.choice(self.keys)
        self.op_seq += 1
        if self.rng.random() < 0.5:
            value = self.op_seq
            index = raft.propose(msgpack.packb([self.op_seq, key, value]))
            if index is None:
                client.busy_until = self.now + TICK
                return
            client.op = ("put", n, g, key, value, self.now, index, c, self.op_seq)
            self.waiting_puts[(n, g, index)] = client.op
            self._log(f"client {g}/{c} put {key}={value} at n{n} index {index}")
        else:
            ctx = f"{g}/{c}/{self.op_seq}".encode()
            client.op = ("get", n, g, key, ctx, self.now, 0, c, self.op_seq)
            self.waiting_reads[ctx] = client.op
            raft.read_index(ctx)
        self._pump(n, g)
        self._schedule(self.p.timeout_ticks * TICK, "timeout", (g, c, self.op_seq))

    def _finish_put(self, op: tuple[Any, ...], applied_op_id: int | None) -> None:
        _, n, g, key, value, call, index, c, op_id = op
        client = self.clients[(g, c)]
        if client.op is not op:
            return
        self._done(client)
        if applied_op_id == op_id:
            self.history.setdefault((g, key), []).append(Op(call, self.now, True, value, c, n))
            if self.now >= self.heal_at and call >= self.heal_at:
                self.progress_after_heal.add(g)
        # else: another entry took the index: ours was truncated, so it never happened.

    def _read_state(self, n: int, g: int, ctx: bytes, index: int, ok: bool) -> None:
        op = self.waiting_reads.get(ctx)
        if op is None:
            return
        if not ok:
            del self.waiting_reads[ctx]
            self._done(self.clients[(g, op[7])])
            return
        self.waiting_reads[ctx] = op[:6] + (max(index, 1),) + op[7:]

    def _complete_reads(self, n: int, g: int) -> None:
        rep = self.replicas[(n, g)]
        for ctx, op in list(self.waiting_reads.items()):
            _, on, og, key, _, call, index, c, _ = op
            if on == n and og == g and index and rep.raft.applied >= index:
                del self.waiting_reads[ctx]
                self._done(self.clients[(g, c)])
                self.history.setdefault((g, key), []).append(
                    Op(call, self.now, False, rep.kv.get(key), c, n)
                )

    def _done(self, client: Client) -> None:
        client.op = None
        if self.p.think_ticks:
            client.busy_until = self.now + self.rng.randint(0, self.p.think_ticks) * TICK

    def _timeout(self, g: int, c: int, op_id: int) -> None:
        client = self.clients[(g, c)]
        op = client.op
        if op is None or op[8] != op_id:
            return
        self._done(client)
        if op[0] == "put":
            self.waiting_puts.pop((op[1], g, op[6]), None)
            self.history.setdefault((g, op[3]), []).append(Op(op[5], INF, True, op[4], c, op[1]))
        else:
            self.waiting_reads.pop(op[4], None)

    # ------------------------------------------------------------------ faults
    def _crash(self, n: int) -> None:
        self._log(f"crash n{n}")
        self.alive[n] = False
        self.epoch[n] += 1
        self.paused.pop(n, None)
        self.held.pop(n, None)
        for g in self.groups:
            for key in [k for k in self.waiting_puts if k[0] == n and k[1] == g]:
                op = self.waiting_puts[key]
                self._timeout(g, op[7], op[8])
            for op in list(self.waiting_reads.values()):
                if op[1] == n and op[2] == g:
                    self._timeout(g, op[7], op[8])

    def _restart(self, n: int) -> None:
        self._log(f"restart n{n}")
        self.alive[n] = True
        self._start(n)

    def _crash_and_restart(self, n: int) -> None:
        if self.alive[n]:
            self._crash(n)
            self._schedule(self.rng.randint(*self.p.restart_ticks) * TICK, "restart", n)

    def _leader_of(self, g: int) -> int | None:
        """The live node that leads ``g`` in the highest term (a deposed one may linger)."""
        best = None
        for n in self.node_ids:
            raft = self.replicas[(n, g)].raft
            if self.alive[n] and n not in self.paused and raft.role == Role.LEADER:
                if best is None or raft.term > self.replicas[(best, g)].raft.term:
                    best = n
        return best

    def _pause(self, n: int, ticks: int) -> None:
        self._log(f"pause n{n} for {ticks} ticks")
        self.paused[n] = self.now + ticks * TICK
        self.held[n] = []

    def _resume_due(self) -> None:
        for n, until in list(self.paused.items()):
            if until <= self.now:
                self._log(f"resume n{n}")
                del self.paused[n]
                # What waited in its socket buffers and disk queue is handled soon, but the
                # node runs (and may answer a client) before it has read all of it.
                for kind, payload in self.held.pop(n):
                    self._schedule(self.rng.randint(1, self.p.max_delay), kind, payload)

    def _isolate(self, side: set[int]) -> None:
        self.blocked = {
            (a, b) for a in self.node_ids for b in self.node_ids if (a in side) != (b in side)
        }
        self._log(f"partition {sorted(side)}")

    def _faults(self) -> None:
        if self.now >= self.heal_at:
            return
        if self.rng.random() < self.p.crash_rate:
            # Sometimes a whole-cluster power loss: every unfsynced write everywhere is gone.
            everyone = self.rng.random() < self.p.power_loss
            for n in self.node_ids if everyone else [self.rng.choice(self.node_ids)]:
                self._crash_and_restart(n)
        if self.p.leader_crash_rate and self.rng.random() < self.p.leader_crash_rate:
            leader = self._leader_of(self.rng.choice(self.groups))
            if leader is not None:
                self._crash_and_restart(leader)
        if self.blocked:
            if self.rng.random() < self.p.heal_rate:
                self.blocked.clear()
                self._log("heal partition")
        elif self.p.isolate_rate and self.rng.random() < self.p.isolate_rate:
            leader = self._leader_of(self.rng.choice(self.groups))
            if leader is not None:
                self._isolate({leader})
        elif self.rng.random() < self.p.partition_rate:
            if self.rng.random() < 0.5:
                a, b = self.rng.sample(self.node_ids, 2)
                self.blocked.add((a, b))
                self._log(f"one-way partition {a}->{b}")
            else:
                k = self.rng.randint(1, len(self.node_ids) // 2)
                self._isolate(set(self.rng.sample(self.node_ids, k)))
        if self.p.pause_rate and self.rng.random() < self.p.pause_rate:
            leader = self._leader_of(self.rng.choice(self.groups))
            if leader is not None:
                self._pause(leader, self.rng.randint(5, 60))
        for g in self.groups:
            leaders = [
                n
                for n in self.node_ids
                if self.alive[n]
                and n not in self.paused
                and self.replicas[(n, g)].raft.role == Role.LEADER
            ]
            if not leaders:
                continue
            raft = self.replicas[(leaders[0], g)].raft
            if self.rng.random() < self.p.transfer_rate:
                target = self.rng.choice(self.node_ids)
                if raft.transfer_leadership(target):
                    self._log(f"transfer {g} {raft.id}->{target}")
                    self.stats["transfers"] += 1
            if self.rng.random() < self.p.reconfig_rate:
                self._reconfigure(raft)
            self._pump(leaders[0], g)

    def _reconfigure(self, raft: RaftNode) -> None:
        """Propose one single-server change: add a learner (or, rarely, a voter straight
        away), promote or remove a learner, remove or demote a voter (keeping 3 voters);
        sometimes at once another one, which the core must refuse until the first commits."""
        config: Config = raft.log.config()
        candidates = [n for n in self.node_ids if n not in config.voters or len(config.voters) > 3]
        if not candidates:
            return
        n = self.rng.choice(candidates)
        if n in config.learners:
            kind = ConfChangeKind.ADD_VOTER if self.rng.random() < 0.7 else ConfChangeKind.REMOVE
        elif n in config.voters:
            kind = self.rng.choice([ConfChangeKind.REMOVE, ConfChangeKind.ADD_LEARNER])
        else:
            kind = ConfChangeKind.ADD_LEARNER if self.rng.random() < 0.8 else ConfChangeKind.ADD_VOTER
        change = ConfChange(kind, n)
        if raft.propose_conf_change(change) is not None:
            self._log(f"conf change {raft.group}: {change}")
            self.stats["conf changes"] += 1
            if self.rng.random() < self.p.conf_burst:
                self._reconfigure(raft)

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        """Run to the end; any failure (a checker, an assertion inside the core, a livelock)
        is a Violation that names the seed, so it always comes with its replay line."""
        try:
            self._run()
        except Violation:
            raise
        except Exception as exc:  # noqa: BLE001 - reported with the seed that replays it
            raise Violation(f"seed {self.seed}: {type(exc).__name__} at t={self.now}: {exc}") from exc

    def _run(self) -> None:
        for client in self.clients.values():
            client.busy_until = self.rng.randint(0, 20) * TICK
        while self.events:
            t, _, kind, payload = heapq.heappop(self.events)
            if t > self.duration:
                break
            self.steps += 1
            if self.steps > self.step_budget:
                self.fail(f"livelock: {self.step_budget} events spent by t={t} of {self.duration}")
            self.now = t
            if self.now >= self.heal_at and self.blocked:
                self.blocked.clear()
            if kind == "world":  # the nemesis and the clients act once per simulator tick
                self._schedule(TICK, "world", None)
                self._resume_due()
                self._faults()
                for g, c in self.clients:
                    self._client_step(g, c)
            elif kind == "tick":
                n = payload
                self._schedule(self.node_tick, "tick", n)
                if not self.alive[n] or n in self.paused:
                    continue
                for g in self.groups:
                    raft = self.replicas[(n, g)].raft
                    if raft.quiesced and raft.leader != n:
                        lead = raft.leader
                        if (
                            not self.alive.get(lead, False)
                            or lead in self.paused
                            or (lead, n) in self.blocked
                            or (n, lead) in self.blocked
                        ):
                            raft.peer_unreachable(lead)
                    raft.tick()
                    self._pump(n, g)
            elif kind == "msg":
                wire, frm, epoch = payload
                if epoch != self.epoch[frm] and self.rng.random() < self.p.drop_on_crash:
                    continue  # still in the sender's buffers when it lost power
                if (frm, wire[3]) in self.blocked:
                    continue  # the link was cut while it was on its way
                self._deliver(wire)
            elif kind == "held":
                self._deliver(payload)
            elif kind == "disk":
                n, g, epoch = payload
                if epoch == self.epoch[n] and self.alive[n]:
                    if n in self.paused:
                        self.held[n].append(("disk", payload))
                    else:
                        self._fsync_due(n, g)
            elif kind == "kill":
                n, epoch = payload
                if epoch == self.epoch[n] and self.now < self.heal_at:
                    self._crash_and_restart(n)
            elif kind == "isolate":
                n, epoch = payload
                if epoch == self.epoch[n] and self.now < self.heal_at:
                    self._isolate({n})
            elif kind == "restart":
                if not self.alive[payload]:
                    self._restart(payload)
            elif kind == "timeout":
                self._timeout(*payload)
        self._final_checks()

    def _deliver(self, wire: list[Any]) -> None:
        m = message_from_wire(wire)
        if not self.alive[m.to]:
            return
        if m.to in self.paused:
            self.held[m.to].append(("held", wire))
            return
        raft = self.replicas[(m.to, m.group)].raft
        before = raft.term
        raft.step(m)
        if m.term > before and raft.term < m.term and m.type not in KEEPS_TERM:
            if m.type != MsgType.PRE_VOTE_RESP or m.reject:
                # Figure 2: any request or response of a higher term makes a server adopt
                # it and become a follower (only vote requests inside a leader lease and
                # pre-vote traffic are exempt).
                self.fail(
                    f"node {m.to} group {m.group} stepped {m.type.name} of term {m.term} from "
                    f"n{m.frm} and stayed at term {raft.term} as {raft.role.value}"
                )
        self._pump(m.to, m.group)

    def _final_checks(self) -> None:
        # A put still waiting when the run ends may have committed (and been read): its
        # outcome is unknown, as for a timed-out one.
        for client in self.clients.values():
            op = client.op
            if op is not None and op[0] == "put":
                _, n, g, key, value, call, _, c, _ = op
                self.history.setdefault((g, key), []).append(Op(call, INF, True, value, c, n))
        for (g, key), ops in self.history.items():
            # An unacknowledged write nobody read is unobservable: it may as well never have
            # happened, so leave it out (it only widens the search).
            read = {o.value for o in ops if not o.is_write}
            ops = [o for o in ops if o.ret != INF or o.value in read]
            if not check_register(ops):
                self.fail(f"group {g} key {key!r}: history is not linearizable; {explain(ops)}")
        missing = set(self.groups) - self.progress_after_heal
        if missing:
            self.fail(f"no progress after faults healed in groups {sorted(missing)}")
