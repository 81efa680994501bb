"""Deterministic simulation of one quorum queue: real Raft nodes, real queue machines.

Three ``RaftNode``s (built as ``tests/sim/sim.py`` builds them) form one group; each
applies the group's committed entries to its own ``QuorumQueueMachine``. One seed drives
everything: the network (delay, loss, duplication, one-way and symmetric partitions, the
leader cut off), the disks (latency; a crash loses every write not yet fsynced, and maybe
what the node had sent), crashes and restarts (the machine comes back from the node's
snapshot and re-applies the log), leadership transfers, snapshots (every few entries in
most seeds, sent in chunks, keeping the log from the oldest live message's entry: the
machines keep no bodies in RAM and read them from their node's log, and the leader
relocates old messages with ``RELOCATE`` as the node does) and the clients:

- publishers propose ``PUBLISH`` of one to three unique bodies (as a node batches a loop
  iteration's publishes, with its enqueuer name and seq) through whichever node leads (a
  deposed one too, now and then), and propose the same entry again, up to three times, when
  its outcome is unknown (as a node does after a leadership change; the machine must not
  enqueue it twice). A publish counts as *confirmed* only when the proposing node applies
  its own entry at the proposed index while it leads, and the machine accepted that message (``x-max-length`` with ``reject-publish`` refuses some in some seeds);
- consumers open a channel ``"n<home>#<boot>#<consumer>.<session>/1"`` on a node, propose
  ``CHECKOUT`` (resent until applied), receive what the leader's applies deliver (over the
  link from the leader to their node: lost when it is cut or the leader crashes), and ack,
  return or discard each message (``SETTLE``/``RETURN``/``DISCARD``) or take one with
  ``GET``; they cancel and check out again, and their connections drop now and then (a
  ``DOWN`` of the connection's prefix), as do all of a node's when it crashes (a ``DOWN``
  of ``"n<node>#<boot>#"``). A channel ignores a delivery it already has (same message,
  same delivery count): a new leader sends every checked-out message again, and a deposed
  leader that applies late sends what the new one sends too;
- at the end the faults heal, publishers stop, every consumer reconnects once and then
  acks whatever it gets, until the queue drains.

Checkers (Jepsen's total-queue, and replica agreement), each a ``Violation`` naming the seed:
- every replica applies the same entry at each index, and every replica that applied an
  index holds the same queue state there and got the same result (a restored snapshot's
  state too, compared with what the others held at its index);
- nothing is received that was never published or that the queue refused;
- a message received more than once carries ``redelivered`` on every later receipt;
- every confirmed message was received at least once, dead-lettered for its delivery limit
  (every seed sets a DLX, so such messages show), or is still in the queue at the end: no
  confirmed message is lost.

Replay: ``python -m tests.sim.queue_sim --seeds 1 --seed-start SEED --trace``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from tests.sim.planted import PLANTED_QUEUE
from tests.sim.sim import EventLoop, Violation
from warren.amqp.properties import encode_properties
from warren.cluster.queue_fsm import BATCH_SLOTS_BITS, QOp, QResult, QuorumQueueMachine, encode
from warren.limits import Limits
from warren.raft.node import RaftNode, Ready, Role
from warren.raft.storage import MemoryStorage
from warren.raft.types import EntryKind, Message, message_from_wire

TICK = 30  # time units per simulator tick (as in sim.py); entries carry the time as now_ms
NODES = (1, 2, 3)
GROUP = 0
PLAIN = encode_properties({"delivery_mode": 2})
STEPS_PER_TICK = 400  # far above what clean runs use: more is a livelock
MIN_SPAN = 4  # quorum_snapshot_min_entries here: small, so old messages get relocated


@dataclass
class Params:
    """Per-seed fault rates and client behaviour, all drawn from the seed."""

    loss: float
    dup: float
    max_delay: int
    disk_latency: int
    crash_rate: float  # per tick: crash a random node
    leader_crash_rate: float  # per tick: crash the leader
    partition_rate: float
    isolate_rate: float  # per tick: cut the leader off from everyone else
    heal_rate: float
    transfer_rate: float
    drop_on_crash: float  # chance that what a crashed node had sent is lost
    restart_ticks: tuple[int, int]
    snapshot_every: int  # applied entries between snapshots (0: never)
    max_entries: int
    chunk_bytes: int
    election_ticks: int
    heartbeat_ticks: int
    publishers: int
    publish_think: int  # ticks between a publisher's publishes (at most)
    timeout_ticks: int  # a client gives up waiting for its proposal
    consumers: int
    prefetch: int  # 0: unlimited
    consumer_think: int  # ticks before a consumer settles what it received (at most)
    return_rate: float  # share of receipts returned (the rest: acked, some discarded)
    discard_rate: float
    get_rate: float  # per tick and consumer: a basic.get
    close_rate: float  # per tick and consumer: its connection drops
    cancel_rate: float  # per tick and consumer: basic.cancel, then a new consumer
    delivery_limit: int | None  # x-delivery-limit (None: unset, RabbitMQ's 20)
    max_length: int | None  # x-max-length with reject-publish

    @staticmethod
    def draw(rng: random.Random) -> Params:
        election, heartbeat = rng.choice([(10, 1), (30, 5)])
        return Params(
            loss=rng.choice([0.0, 0.01, 0.05]),
            dup=rng.choice([0.0, 0.02, 0.1]),
            max_delay=rng.choice([6, 30, 90]),
            disk_latency=rng.choice([0, 9, 45]),
            crash_rate=rng.choice([0.0, 0.005, 0.02]),
            leader_crash_rate=rng.choice([0.0, 0.01, 0.03]),
            partition_rate=rng.choice([0.0, 0.005, 0.02]),
            isolate_rate=rng.choice([0.0, 0.01, 0.03]),
            heal_rate=rng.choice([0.02, 0.05, 0.15]),
            transfer_rate=rng.choice([0.0, 0.005, 0.02]),
            drop_on_crash=rng.choice([0.0, 0.5, 1.0]),
            restart_ticks=rng.choice([(1, 12), (5, 40)]),
            snapshot_every=rng.choice([0, 3, 8, 20]),
            max_entries=rng.choice([1, 4, 64]),
            chunk_bytes=rng.choice([64, 1 << 20]),
            election_ticks=election,
            heartbeat_ticks=heartbeat,
            publishers=rng.choice([1, 2, 3]),
            publish_think=rng.choice([0, 2, 6]),
            timeout_ticks=rng.choice([15, 40]),
            consumers=rng.choice([1, 2, 3]),
            prefetch=rng.choice([0, 1, 3, 10]),
            consumer_think=rng.choice([0, 2, 8]),
            return_rate=rng.choice([0.0, 0.1, 0.3]),
            discard_rate=rng.choice([0.0, 0.05]),
            get_rate=rng.choice([0.0, 0.03, 0.1]),
            close_rate=rng.choice([0.0, 0.005, 0.02]),
            cancel_rate=rng.choice([0.0, 0.01]),
            delivery_limit=rng.choice([None, -1, 2]),
            max_length=rng.choice([None, None, 12]),
        )


@dataclass
class Replica:
    raft: RaftNode
    disk: MemoryStorage
    machine: QuorumQueueMachine
    writing: Ready | None = None
    announced: int = 0  # the last term in which this node, leading, sent checked_out() again
    span_checked_at: int = 0  # the applied index when, leading, it last looked for old messages


@dataclass
class Proposal:
    pid: int
    kind: str  # publish | checkout | cancel | settle | get | down
    node: int
    index: int
    data: bytes
    client: Any  # the Publisher or Consumer (None: the janitor)
    detail: Any = None  # a body, settled (msg_id, count) pairs, a DOWN prefix


@dataclass
class Publisher:
    k: int
    busy_until: int = 0
    pending: int | None = None  # the proposal id it waits for
    sent: int = 0
    batches: int = 0  # its PUBLISH seq
    resend: tuple[int, list[bytes], int] | None = None  # (seq, bodies, attempts) of one whose outcome is unknown


@dataclass
class Receipt:
    body: bytes
    redelivered: bool
    channel: str
    time: int
    how: str  # deliver | get


@dataclass
class Consumer:
    k: int
    home: int = 0
    session: int = 0
    channel: str | None = None
    tag: str = ""
    tags: int = 0
    consuming: bool = False  # its CHECKOUT was applied
    pending: int | None = None  # a CHECKOUT, CANCEL or GET it waits for
    reopen_at: int = 0
    drained: bool = False  # reconnected once the drain began
    held: dict[int, tuple[int, int]] = field(default_factory=dict)  # msg_id -> (count, decide at)
    settling: set[int] = field(default_factory=set)  # msg_ids with a settlement in flight
    seen: set[tuple[int, int]] = field(default_factory=set)  # (msg_id, delivery count) received


def state_of(m: QuorumQueueMachine) -> bytes:
    """The replica's queue as a digest, read independently of ``snapshot()`` (so a snapshot
    that forgets something shows): ready messages, holders, consumers with their credit in
    registration and in delivery order, what a new leader would resend, delivery counts."""
    q = m.queue
    view = (
        [(i, m.body_of(msg), redelivered) for i, msg, redelivered in q.ready_messages()],
        m.holders(),
        [(ch, tag, c.prefetch, c.unacked) for ch, tag, c in m.consumers()],
        [c.tag for c in q._consumers],
        [(d.channel, d.tag, d.msg_id, d.delivery_count) for d in m.checked_out()],
        sorted(m._counts.items()),
        q._next_msg_id,
        m.applied,
    )
    return hashlib.blake2b(repr(view).encode(), digest_size=12).digest()


def result_of(m: QuorumQueueMachine, result: QResult | None) -> bytes:
    if result is None:
        return b""
    value = result.value
    if isinstance(value, tuple):  # a get's answer carries the message
        value = (*value[:4], value[4].body)
    view = (
        value,
        [(d.channel, d.tag, d.msg_id, d.body if d.body is not None else m.body_of(d.message), d.redelivered,
          d.delivery_count) for d in result.deliveries],
        [(d.reason, d.exchange, d.message.body) for d in result.dead_letters],
    )
    return hashlib.blake2b(repr(view).encode(), digest_size=12).digest()


class QueueSimulation(EventLoop):
    def __init__(
        self,
        seed: int,
        machine_class: type[QuorumQueueMachine] | str = QuorumQueueMachine,
        duration_ticks: int = 400,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.p = Params.draw(self.rng)
        if overrides:
            self.p = dataclasses.replace(self.p, **overrides)
        self.machine_class = PLANTED_QUEUE[machine_class] if isinstance(machine_class, str) else machine_class
        self.arguments: dict[str, Any] = {"x-queue-type": "quorum", "x-dead-letter-exchange": "dlx"}
        if self.p.delivery_limit is not None:
            self.arguments["x-delivery-limit"] = self.p.delivery_limit
        if self.p.max_length is not None:
            self.arguments.update({"x-max-length": self.p.max_length, "x-overflow": "reject-publish"})
        self.duration = duration_ticks * TICK
        self.heal_at = self.duration * 5 // 10
        self.drain_at = self.duration * 6 // 10
        self.step_budget = duration_ticks * STEPS_PER_TICK
        self.now = 0
        self.seq = 0
        self.steps = 0
        self.events: list[tuple[int, int, str, Any]] = []
        self.trace: deque[str] = deque(maxlen=400)
        self.digest = hashlib.blake2b(digest_size=16)
        self.alive = dict.fromkeys(NODES, True)
        self.epoch = dict.fromkeys(NODES, 0)
        self.boot = dict.fromkeys(NODES, 0)
        self.blocked: set[tuple[int, int]] = set()
        self.disks = {n: MemoryStorage() for n in NODES}
        self.replicas: dict[int, Replica] = {}
        self.limits = Limits(
            raft_max_append_entries=self.p.max_entries,
            raft_snapshot_chunk_bytes=self.p.chunk_bytes,
            raft_max_inflight_appends=4,
        )
        self.node_tick = TICK * 10 // self.p.election_ticks
        # What every replica must agree on, by index: the entry, the state after it, the result.
        self.entry_at: dict[int, bytes] = {}
        self.state_at: dict[int, bytes] = {}
        self.result_at: dict[int, bytes] = {}
        self.leaders: dict[int, int] = {}  # term -> node
        # Clients and what the checker needs.
        self.publishers = [Publisher(k) for k in range(self.p.publishers)]
        self.consumers = [Consumer(k) for k in range(self.p.consumers)]
        self.proposals: dict[int, Proposal] = {}
        self.waiting: dict[tuple[int, int], int] = {}  # (node, index) -> proposal id
        self.next_pid = 0
        self.downs: dict[str, int | None] = {}  # DOWN prefixes still to apply -> proposal id
        self.published: set[bytes] = set()  # every body proposed
        self.confirmed: set[bytes] = set()
        self.refused: set[bytes] = set()  # applied, and refused by the queue (max-length)
        self.dead_lettered: set[bytes] = set()
        self.receipts: dict[bytes, list[Receipt]] = {}
        self.stats: Counter[str] = Counter()
        for n in NODES:
            self._start(n)
            self._schedule(self.rng.randint(0, self.node_tick), "tick", n)
        self._schedule(0, "world", None)

    # ------------------------------------------------------------------ plumbing
    def fingerprint(self) -> str:
        h = self.digest.copy()
        h.update(repr((sorted(self.confirmed), sorted(self.stats.items()))).encode())
        return h.hexdigest()

    def _start(self, n: int) -> None:
        self.boot[n] += 1
        disk = self.disks[n]
        raft = RaftNode(
            n, GROUP, disk, self.rng, voters=NODES, election_ticks=self.p.election_ticks,
            heartbeat_ticks=self.p.heartbeat_ticks, limits=self.limits,
        )  # fmt: skip
        saved = disk.load_snapshot()
        if saved is None:
            machine = self.machine_class("q", "/", self.arguments, self._log_of(n), MIN_SPAN)
        else:
            machine = self._restore(n, saved[0].index, saved[1])
            self.stats["restarts from a snapshot"] += 1
        self.replicas[n] = Replica(raft, disk, machine)

    def _log_of(self, n: int) -> Callable[[int], bytes | None]:
        disk = self.disks[n]

        def read(index: int) -> bytes | None:
            found = disk.retained_entries(index, index + 1, 1 << 30)
            return found[0].data if found else None

        return read

    def _restore(self, n: int, index: int, data: bytes) -> QuorumQueueMachine:
        machine = self.machine_class.restore(data, self._log_of(n), MIN_SPAN)
        state = state_of(machine)
        if self.state_at.setdefault(index, state) != state:
            self.fail(f"n{n} restored a snapshot of index {index} that differs from the state "
                      "every replica held there")
        return machine

    # ------------------------------------------------------------------ Raft driver
    def _pump(self, n: int) -> None:
        rep = self.replicas[n]
        raft = rep.raft
        if raft.role == Role.LEADER:
            holder = self.leaders.setdefault(raft.term, n)
            if holder == n and self.stats["elections"] < len(self.leaders):
                self.stats["elections"] = len(self.leaders)
            if holder != n:
                self.fail(f"two leaders in term {raft.term}: n{holder} and n{n}")
        if rep.writing is not None or not raft.has_ready():
            return
        rd = raft.ready()
        rep.writing = rd
        for m in rd.messages:
            if m.may_send_before_persist:
                self._send(m)
        durable = rd.entries or rd.hard_state or rd.snapshot or rd.local_snapshot
        if durable and self.p.disk_latency:
            self._schedule(self.rng.randint(1, self.p.disk_latency), "disk", (n, self.epoch[n]))
        else:
            self._persisted(n)

    def _persisted(self, n: int) -> None:
        rep = self.replicas[n]
        rd = rep.writing
        assert rd is not None
        rep.writing = None
        rd.persist_to(rep.disk)
        for m in rd.messages:
            if not m.may_send_before_persist:
                self._send(m)
        if rd.snapshot is not None:
            self.stats["snapshot installs"] += 1
            rep.machine = self._restore(n, rd.snapshot[0].index, rd.snapshot[1])
        for e in rd.committed_entries:
            self._apply(n, rep, e.index, e.term, e.kind, e.data)
        rep.raft.advance(rd)
        raft = rep.raft
        if raft.role == Role.LEADER and rep.announced != raft.term and raft.applied >= raft.term_start:
            # A new leader with everything of earlier terms applied: the old one may have died
            # before its deliveries left, so it sends every checked-out message again.
            rep.announced = raft.term
            resent = rep.machine.checked_out()
            self.stats["resent deliveries"] += len(resent)
            for d in resent:
                self._deliver_later(n, d.channel, d.msg_id, rep.machine.body_of(d.message), d.redelivered,
                                    d.delivery_count)
        if self.p.snapshot_every and raft.applied - raft.log.base_index >= self.p.snapshot_every:
            raft.take_snapshot(raft.applied, rep.machine.snapshot(), keep_from=rep.machine.keep_from())
        self._pump(n)

    def _send(self, m: Message) -> None:
        if (m.frm, m.to) in self.blocked or self.rng.random() < self.p.loss:
            return
        for _ in range(2 if self.rng.random() < self.p.dup else 1):
            self._schedule(self.rng.randint(1, self.p.max_delay), "msg", (m.to_wire(), m.frm, self.epoch[m.frm]))

    def _step(self, wire: list[Any]) -> None:
        m = message_from_wire(wire)
        if not self.alive[m.to]:
            return
        self.replicas[m.to].raft.step(m)
        self._pump(m.to)

    # ------------------------------------------------------------------ applying
    def _apply(self, n: int, rep: Replica, index: int, term: int, kind: int, data: bytes) -> None:
        entry = bytes([kind]) + term.to_bytes(8, "big") + data
        if self.entry_at.setdefault(index, entry) != entry:
            self.fail(f"n{n} applied a different entry at index {index}")
        result = rep.machine.apply(index, data) if kind == EntryKind.NORMAL else None
        if result is not None:
            rep.machine.fill_bodies(result.dead_letters)
        state, outcome = state_of(rep.machine), result_of(rep.machine, result)
        if self.state_at.setdefault(index, state) != state:
            self.fail(f"n{n}'s queue differs from the other replicas' after index {index}")
        if self.result_at.setdefault(index, outcome) != outcome:
            self.fail(f"n{n} got another result than the other replicas at index {index}")
        leads = rep.raft.role == Role.LEADER
        if result is not None:
            entry = msgpack.unpackb(data)
            if entry[0] == QOp.PUBLISH:  # the messages the queue refused (max-length)
                self.refused.update(fields[3] for fields, ok in zip(entry[2], result.value, strict=True) if not ok)
            self.dead_lettered.update(
                d.message.body for d in result.dead_letters if d.reason == "delivery_limit" and d.message.body
            )
            if result.dead_letters:
                self.stats["dead letters"] += len(result.dead_letters)
            if leads:  # only the leader acts on deliveries
                for d in result.deliveries:
                    body = d.body if d.body is not None else rep.machine.body_of(d.message)
                    self._deliver_later(n, d.channel, d.msg_id, body, d.redelivered, d.delivery_count)
        pid = self.waiting.pop((n, index), None)
        if pid is not None:
            p = self.proposals.pop(pid)
            self._resolved(p, "ok" if data == p.data else "lost", result, leads)

    # ------------------------------------------------------------------ proposals
    def _propose(self, kind: str, data: bytes, client: Any, detail: Any = None) -> int | None:
        """Through a node that believes it leads (a deposed one, now and then)."""
        alive = [n for n in NODES if self.alive[n]]
        if not alive:
            return None
        leaders = [n for n in alive if self.replicas[n].raft.role == Role.LEADER]
        n = self.rng.choice(leaders if leaders and self.rng.random() < 0.9 else alive)
        index = self.replicas[n].raft.propose(data)
        if index is None:
            return None
        earlier = self.waiting.get((n, index))
        if earlier is not None:  # that entry was cut from this node's log: this one replaced it
            self._resolved(self.proposals.pop(earlier), "lost", None, False)
        self.next_pid += 1
        p = Proposal(self.next_pid, kind, n, index, data, client, detail)
        self.proposals[p.pid] = p
        self.waiting[(n, index)] = p.pid
        self._log(f"propose {kind} {detail!r} at n{n} index {index}")
        self._on_proposed(p)
        self._schedule(self.p.timeout_ticks * TICK, "timeout", p.pid)
        self._pump(n)
        return p.pid

    def _on_proposed(self, p: Proposal) -> None:
        """Hook: ``p`` is in the log of the node it went to, nothing more is known."""

    def _timeout(self, pid: int) -> None:
        p = self.proposals.pop(pid, None)
        if p is not None:
            del self.waiting[(p.node, p.index)]
            self._resolved(p, "unknown", None, False)

    def _resolved(self, p: Proposal, outcome: str, result: QResult | None, leads: bool) -> None:
        """``ok``: the proposing node applied this entry at its index (``leads``: while it led);
        ``lost``: another entry took the index; ``unknown``: timed out or the node crashed."""
        if p.kind == "publish":
            publisher: Publisher = p.client
            publisher.pending = None
            tried = publisher.resend[2] if publisher.resend is not None else 0
            publisher.resend = None
            if outcome == "ok" and leads:
                assert result is not None
                for body, accepted in zip(p.detail, result.value, strict=True):
                    if accepted:
                        self.confirmed.add(body)
                    self.stats["confirmed" if accepted else "refused"] += 1
            elif tried < 3:
                publisher.resend = (msgpack.unpackb(p.data)[4], p.detail, tried + 1)
            return
        if p.kind == "down":
            if outcome == "ok":
                self.downs.pop(p.detail, None)
                self.stats["downs"] += 1
            else:
                self.downs[p.detail] = None  # propose it again
            return
        c: Consumer = p.client
        if p.kind == "settle":
            channel, pairs = p.detail
            if channel != c.channel:
                return
            for msg_id, count in pairs:
                c.settling.discard(msg_id)
                if outcome == "ok" and c.held.get(msg_id, (None,))[0] == count:
                    del c.held[msg_id]
            return
        if c.pending != p.pid:
            return  # of a channel closed since
        c.pending = None
        if outcome != "ok":
            return  # the consumer tries again
        assert result is not None
        if p.kind == "checkout":
            c.consuming = result.value is None
        elif p.kind == "cancel":
            self.stats["cancels"] += 1
            c.consuming = False
            c.tags += 1
            c.tag = f"c{c.k}.{c.tags}"
        elif p.kind == "get" and leads and result.value is not None:
            msg_id, count, redelivered, _, message = result.value
            self.stats["gets"] += 1
            self._receive(c, msg_id, message.body, redelivered, count, "get")

    # ------------------------------------------------------------------ deliveries
    def _deliver_later(self, n: int, channel: str, msg_id: int, body: bytes | None, redelivered: bool,
                       count: int) -> None:
        delay = self.rng.randint(1, self.p.max_delay)
        self._schedule(delay, "delivery", (n, self.epoch[n], channel, msg_id, body, redelivered, count))

    def _arrive(self, n: int, epoch: int, channel: str, msg_id: int, body: bytes, redelivered: bool,
                count: int) -> None:
        if epoch != self.epoch[n] and self.rng.random() < self.p.drop_on_crash:
            return  # still in the leader's buffers when it lost power
        for c in self.consumers:
            if c.channel == channel:
                if c.home != n and (n, c.home) in self.blocked:
                    return  # the link to the channel's node is cut
                self._receive(c, msg_id, body, redelivered, count, "deliver")
                return

    def _receive(self, c: Consumer, msg_id: int, body: bytes, redelivered: bool, count: int, how: str) -> None:
        if (msg_id, count) in c.seen:
            self.stats["duplicate sends ignored"] += 1
            return
        assert c.channel is not None
        c.seen.add((msg_id, count))
        c.held[msg_id] = (count, self.now + self.rng.randint(0, self.p.consumer_think) * TICK)
        if not isinstance(body, bytes):  # (a machine that read another entry's last field)
            self.fail(f"received {body!r}, which nobody published")
        self.receipts.setdefault(body, []).append(Receipt(body, redelivered, c.channel, self.now, how))
        self.stats["received"] += 1
        self.stats["received redelivered"] += redelivered
        self._log(f"{c.channel} received {body!r} id {msg_id} count {count} redelivered {redelivered}")

    # ------------------------------------------------------------------ clients
    def _clients(self) -> None:
        draining = self.now >= self.drain_at
        for pub in self.publishers:
            if pub.pending is None and self.now >= pub.busy_until and not draining:
                if pub.resend is not None:
                    seq, bodies, _ = pub.resend
                    self.stats["publishes resent"] += 1
                else:
                    bodies = []
                    for _ in range(self.rng.randint(1, 3)):
                        pub.sent += 1
                        bodies.append(f"p{pub.k}.{pub.sent}".encode())
                    pub.batches += 1
                    seq = pub.batches
                data = encode(QOp.PUBLISH, self.now, [["", "q", PLAIN, body] for body in bodies], f"p{pub.k}#", seq)
                pid = self._propose("publish", data, pub, bodies)
                if pid is not None:
                    self.published.update(bodies)
                    pub.pending = pid
                    pub.busy_until = self.now + self.rng.randint(0, self.p.publish_think) * TICK
        for c in self.consumers:
            self._consumer_step(c, draining)
        for prefix, pid in list(self.downs.items()):
            if pid is None:
                self.downs[prefix] = self._propose("down", encode(QOp.DOWN, self.now, prefix), None, prefix)

    def _consumer_step(self, c: Consumer, draining: bool) -> None:
        if draining and not c.drained and c.channel is not None:
            c.drained = True  # everyone reconnects once: what a lost delivery left stuck returns
            self._close(c, f"n{c.home}#{self.boot[c.home]}#{c.k}.{c.session}/")
        if c.channel is None:
            alive = [n for n in NODES if self.alive[n]]
            if self.now < c.reopen_at or not alive:
                return
            c.home = self.rng.choice(alive)
            c.session += 1
            c.tags += 1
            c.channel = f"n{c.home}#{self.boot[c.home]}#{c.k}.{c.session}/1"
            c.tag = f"c{c.k}.{c.tags}"
            c.consuming, c.pending = False, None
            c.drained = c.drained or draining
            self._log(f"consumer {c.k} opens {c.channel}")
        if not draining and self.rng.random() < self.p.close_rate:
            self._close(c, f"n{c.home}#{self.boot[c.home]}#{c.k}.{c.session}/")
            return
        if c.pending is None:
            if not c.consuming:
                c.pending = self._propose(
                    "checkout", encode(QOp.CHECKOUT, self.now, c.channel, c.tag, self.p.prefetch, 0, False), c,
                    c.channel,
                )  # fmt: skip
            elif not draining and self.rng.random() < self.p.cancel_rate:
                c.pending = self._propose("cancel", encode(QOp.CANCEL, self.now, c.channel, c.tag), c, c.tag)
            elif not draining and self.rng.random() < self.p.get_rate:
                c.pending = self._propose("get", encode(QOp.GET, self.now, c.channel, False), c, c.channel)
        decided: dict[QOp, list[tuple[int, int]]] = {}
        for msg_id, (count, due) in c.held.items():
            if msg_id in c.settling or due > self.now:
                continue
            roll = self.rng.random()
            if draining or roll >= self.p.return_rate + self.p.discard_rate:
                op = QOp.SETTLE
            else:
                op = QOp.RETURN if roll < self.p.return_rate else QOp.DISCARD
            decided.setdefault(op, []).append((msg_id, count))
        for op, pairs in decided.items():
            ids = [msg_id for msg_id, _ in pairs]
            if self._propose("settle", encode(op, self.now, c.channel, ids), c, (c.channel, pairs)) is not None:
                c.settling.update(ids)
                self.stats[op.name.lower()] += len(ids)

    def _close(self, c: Consumer, prefix: str | None) -> None:
        """The consumer's connection is gone (with ``prefix``: its DOWN is to be proposed)."""
        self._log(f"consumer {c.k} loses {c.channel}")
        c.channel, c.consuming, c.pending = None, False, None
        c.held.clear()
        c.settling.clear()
        c.seen.clear()
        c.reopen_at = self.now + self.rng.randint(1, 10) * TICK
        if prefix is not None:
            self.downs.setdefault(prefix, None)

    # ------------------------------------------------------------------ faults
    def _crash(self, n: int) -> None:
        self._log(f"crash n{n}")
        self.stats["crashes"] += 1
        self.alive[n] = False
        self.epoch[n] += 1
        for (node, _), pid in list(self.waiting.items()):
            if node == n:
                self._timeout(pid)
        for c in self.consumers:
            if c.channel is not None and c.home == n:
                self._close(c, None)
        self.downs.setdefault(f"n{n}#{self.boot[n]}#", None)  # every channel of that boot
        self._schedule(self.rng.randint(*self.p.restart_ticks) * TICK, "restart", n)

    def _leader(self) -> int | None:
        best = None
        for n in NODES:
            raft = self.replicas[n].raft
            if self.alive[n] and raft.role == Role.LEADER and (best is None or raft.term > self.replicas[best].raft.term):
                best = n
        return best

    def _isolate(self, side: set[int]) -> None:
        self.blocked = {(a, b) for a in NODES for b in NODES if (a in side) != (b in side)}
        self._log(f"partition {sorted(side)}")
        self.stats["partitions"] += 1

    def _faults(self) -> None:
        p = self.p
        if self.now >= self.heal_at:
            self.blocked.clear()
            return
        if self.rng.random() < p.crash_rate:
            n = self.rng.choice(NODES)
            if self.alive[n]:
                self._crash(n)
        leader = self._leader()
        if leader is not None and self.rng.random() < p.leader_crash_rate:
            self._crash(leader)
            leader = None
        if self.blocked:
            if self.rng.random() < p.heal_rate:
                self.blocked.clear()
                self._log("heal")
        elif leader is not None and self.rng.random() < p.isolate_rate:
            self._isolate({leader})
        elif self.rng.random() < p.partition_rate:
            if self.rng.random() < 0.5:
                a, b = self.rng.sample(NODES, 2)
                self.blocked.add((a, b))
                self._log(f"one-way partition {a}->{b}")
            else:
                self._isolate({self.rng.choice(NODES)})
        if leader is not None and self.rng.random() < p.transfer_rate:
            target = self.rng.choice([n for n in NODES if n != leader])
            if self.replicas[leader].raft.transfer_leadership(target):
                self._log(f"transfer n{leader}->n{target}")
                self.stats["transfers"] += 1
                self._pump(leader)

    def _relocate_old(self, n: int) -> None:
        """As warren.node.quorum's leader does: copy old messages forward in the log."""
        rep = self.replicas[n]
        raft, machine = rep.raft, rep.machine
        if (raft.role != Role.LEADER or raft.applied < raft.term_start
                or machine.applied - rep.span_checked_at < machine.log_span):
            return
        rep.span_checked_at = machine.applied
        for msg_id, message in machine.stale(8):
            if raft.propose(encode(QOp.RELOCATE, self.now, msg_id, machine.body_of(message))) is not None:
                self.stats["relocations"] += 1
                self._log(f"n{n} relocates message {msg_id} from index {message.seq >> BATCH_SLOTS_BITS}")

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        try:
            self._run()
        except Violation:
            raise
        except Exception as exc:  # noqa: BLE001 - reported with the seed that replays it
            raise Violation(f"seed {self.seed}: {type(exc).__name__} at t={self.now}: {exc}") from exc

    def _run(self) -> None:
        while self.events:
            t, _, kind, payload = heapq.heappop(self.events)
            if t > self.duration:
                break
            self.steps += 1
            if self.steps > self.step_budget:
                self.fail(f"livelock: {self.step_budget} events spent by t={t} of {self.duration}")
            self.now = t
            if kind == "world":
                self._schedule(TICK, "world", None)
                self._faults()
                self._clients()
            elif kind == "tick":
                n = payload
                self._schedule(self.node_tick, "tick", n)
                if self.alive[n]:
                    self.replicas[n].raft.tick()
                    self._relocate_old(n)
                    self._pump(n)
            elif kind == "msg":
                wire, frm, epoch = payload
                if epoch != self.epoch[frm] and self.rng.random() < self.p.drop_on_crash:
                    continue
                if (frm, wire[3]) in self.blocked:
                    continue
                self._step(wire)
            elif kind == "disk":
                n, epoch = payload
                if epoch == self.epoch[n] and self.alive[n]:
                    self._persisted(n)
            elif kind == "restart":
                if not self.alive[payload]:
                    self._log(f"restart n{payload}")
                    self.alive[payload] = True
                    self._start(payload)
            elif kind == "delivery":
                self._arrive(*payload)
            elif kind == "timeout":
                self._timeout(payload)
        self._final_checks()

    def final_machine(self) -> QuorumQueueMachine:
        """The replica that applied the most (every other one applied a prefix of its log)."""
        return max((self.replicas[n].machine for n in NODES if self.alive[n]), key=lambda m: m.applied)

    def _final_checks(self) -> None:
        machine = self.final_machine()
        queue = machine.queue
        left = {machine.body_of(m) for m in queue.held_messages()}
        self.stats["left in the queue"] = len(left)
        self.stats["drained"] = not left
        for body, receipts in sorted(self.receipts.items()):
            if body not in self.published:
                self.fail(f"received {body!r}, which nobody published")
            if body in self.refused:
                self.fail(f"received {body!r}, which the queue refused")
            for later in receipts[1:]:
                if not later.redelivered:
                    shown = ", ".join(f"t={r.time} on {r.channel} by {r.how} redelivered={r.redelivered}"
                                      for r in receipts)
                    self.fail(f"{body!r} received again without redelivered: {shown}")
        lost = sorted(self.confirmed - self.receipts.keys() - left - self.dead_lettered)
        if lost:
            self.fail(f"{len(lost)} confirmed messages lost (never received, not in the queue at "
                      f"index {machine.applied}, not dead-lettered): {lost[:8]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim.queue_sim")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--ticks", type=int, default=400)
    ap.add_argument("--planted-bug", choices=sorted(PLANTED_QUEUE), help="run this planted machine")
    ap.add_argument("--trace", action="store_true", help="print the trace tail on violation")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    totals: Counter[str] = Counter()
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        sim = QueueSimulation(seed, args.planted_bug or QuorumQueueMachine, args.ticks)
        try:
            sim.run()
        except Violation as v:
            print(f"VIOLATION {v}")
            print("\n".join(sim.trace) if args.trace else "(--trace shows the last 400 events)")
            bug = f" --planted-bug {args.planted_bug}" if args.planted_bug else ""
            print(f"replay: python -m tests.sim.queue_sim --seeds 1 --seed-start {seed} --ticks {args.ticks}{bug} --trace")
            print(f"params: {sim.p}")
            return 1
        totals.update(sim.stats)
    elapsed = time.perf_counter() - started
    print(f"{args.seeds} seeds clean in {elapsed:.1f}s; totals: {dict(sorted(totals.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
