"""Deterministic simulation of the REAL Raft host and LMDB store over a faulty disk twin.

``tests/sim/sim.py`` drives bare ``RaftNode``s; this drives what production runs: the asyncio
``RaftHost`` (group commit, early sends, proposal matching, liveness, quiescence) over real
``RaftStore``/``GroupStorage`` on LMDB, with production tick settings. Determinism comes from
running every host in one event loop on a virtual clock (:class:`VirtualLoop`: time jumps to
the next timer instead of sleeping) and from running store writes on :class:`FaultyDisk`, an
executor twin that completes each batch after a seeded virtual delay and may:

- fail it before anything is written (an fsync error, a full disk for a while),
- write it and still report failure (the fsync error after the data landed),
- lose it: a crash while a batch is "on the disk" discards it (nothing of it was durable).

The state machine is a hash chain over what it applied; it snapshots (every few entries in
many seeds, small chunks) and keeps some entries below each snapshot, which it reads back
from its own store after installing one, as a quorum queue reads its message bodies.
The network (seeded delay, loss, duplication, partitions) carries msgpack bytes. Clients
propose unique payloads and take ReadIndex reads. Checkers: one leader per (group, term);
every node applies the same payload at each index and reaches the same state there
(snapshots included); an acknowledged proposal's own payload
sits at its index (the false-confirm bug); a read point covers every write acknowledged
before the read began; after faults heal, every group commits again. Every failure is a
``Violation`` naming its seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import selectors
import tempfile
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from warren.errors import StoreError
from warren.io.raft_host import ProposalFailed, RaftHost
from warren.io.raft_wire import ENVELOPE_BYTES, NORMAL_KIND
from warren.limits import Limits
from warren.raft.node import RaftNode
from warren.raft.types import message_from_wire
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import RaftStore

TICK = 0.01  # production: 10 ms, election 30 ticks, heartbeats every 5
ELECTION_TICKS = 30
HEARTBEAT_TICKS = 5


class Violation(AssertionError):
    pass


class _NoIOSelector(selectors.BaseSelector):
    """Nothing is ever ready; waiting for ``timeout`` moves the virtual clock instead."""

    def __init__(self, loop: VirtualLoop) -> None:
        self.loop = loop
        self.keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj if isinstance(fileobj, int) else fileobj.fileno(),
                                    events, data)
        self.keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self.keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise Violation("simulation deadlock: nothing scheduled")
        self.loop.now += max(0.0, timeout)
        return []

    def get_map(self) -> Any:
        return self.keys


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: runs as fast as the code allows, identically per seed."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_NoIOSelector(self))

    def time(self) -> float:
        return self.now

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        assert isinstance(executor, FaultyDisk), "everything runs on the simulated disk"
        return executor.run(func, args)


@dataclass
class Faults:
    """Per-seed rates, all drawn from the seed."""

    loss: float
    dup: float
    max_delay: float
    disk_latency: float
    fsync_error: float  # per batch: fails before anything is written
    lost_ack: float  # per batch: written, yet reported failed
    crash_rate: float  # per 100 ms
    partition_rate: float
    disk_full_rate: float
    quiesce_after_ticks: int
    snapshot_every: int  # entries (0: never)
    keep_back: int  # the state machine keeps this many entries below a snapshot
    chunk_bytes: int

    @staticmethod
    def draw(rng: random.Random) -> Faults:
        return Faults(
            loss=rng.choice([0.0, 0.01, 0.05]),
            dup=rng.choice([0.0, 0.02]),
            max_delay=rng.choice([0.002, 0.02]),
            disk_latency=rng.choice([0.0005, 0.005, 0.03]),
            fsync_error=rng.choice([0.0, 0.01, 0.05]),
            lost_ack=rng.choice([0.0, 0.01, 0.05]),
            crash_rate=rng.choice([0.02, 0.05, 0.1]),
            partition_rate=rng.choice([0.0, 0.03, 0.08]),
            disk_full_rate=rng.choice([0.0, 0.02]),
            quiesce_after_ticks=rng.choice([0, 20, 100]),
            snapshot_every=rng.choice([0, 10, 40]),
            keep_back=rng.choice([0, 0, 5]),
            chunk_bytes=rng.choice([16, 256, 1 << 20]),
        )


class FaultyDisk(Executor):
    """The store's executor twin: seeded latency, failures and loss on crash."""

    def __init__(self, sim: HostSimulation, node_id: int) -> None:
        self.sim = sim
        self.node_id = node_id
        self.full_until = 0.0
        self.in_flight: list[asyncio.Handle] = []

    def run(self, func: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = self.sim.loop
        future: asyncio.Future[Any] = loop.create_future()
        delay = self.sim.rng.uniform(0, self.sim.faults.disk_latency)
        self.in_flight.append(loop.call_later(delay, self._complete, future, func, args))
        return future

    def _complete(self, future: asyncio.Future[Any], func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.in_flight = [h for h in self.in_flight if not h.cancelled() and h.when() > self.sim.loop.now]
        if future.done():
            return
        f, roll = self.sim.faults, self.sim.rng.random()
        if self.sim.loop.now >= self.sim.heal_at:
            roll = 1.0  # the disk is healthy again
        if self.sim.loop.now < self.full_until or roll < f.fsync_error:
            self.sim.stats["failed_batches"] += 1
            future.set_exception(StoreError("simulated fsync error: nothing written"))
            return
        try:
            result = func(*args)
        except StoreError as exc:
            future.set_exception(exc)
            return
        if roll < f.fsync_error + f.lost_ack:
            self.sim.stats["failed_batches"] += 1
            future.set_exception(StoreError("simulated fsync error after the data landed"))
            return
        future.set_result(result)

    def crash(self) -> None:
        """Power loss: every batch still on its way to the disk is gone."""
        for handle in self.in_flight:
            if not handle.cancelled() and handle.when() > self.sim.loop.now:
                self.sim.stats["lost_batches"] += 1
            handle.cancel()
        self.in_flight = []

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class Applied:
    """The state machine: a hash chain over everything applied, checked against every other
    node at each index, so a wrong snapshot (or a wrong install) shows as diverged state.
    It snapshots (the chain) and asks the store to keep the last ``keep_back`` entries,
    which it reads back and checks after restoring a snapshot -- as a quorum queue will
    read its message bodies."""

    def __init__(self, sim: HostSimulation, node: SimNode) -> None:
        self.sim = sim
        self.node = node
        self.last: dict[int, int] = {}
        self.chain: dict[int, bytes] = {}

    def apply(self, group: Any, index: int, data: bytes) -> None:
        seen = self.sim.applied_at.setdefault((group, index), data)
        if seen != data:
            self.sim.fail(f"n{self.node.id} applied {data!r} at {group}/{index}, another node {seen!r}")
        chain = hashlib.blake2b(self.chain.get(group, b"") + index.to_bytes(8, "big") + data,
                                digest_size=8).digest()
        if self.sim.chain_at.setdefault((group, index), chain) != chain:
            self.sim.fail(f"n{self.node.id}'s state diverged at {group}/{index} (after a snapshot?)")
        self.chain[group], self.last[group] = chain, index

    def snapshot(self, group: Any) -> bytes:
        return msgpack.packb([self.last.get(group, 0), self.chain.get(group, b"")])

    def restore(self, group: Any, index: int, data: bytes) -> None:
        last, chain = msgpack.unpackb(data)
        if last and self.sim.chain_at.get((group, last), chain) != chain:
            self.sim.fail(f"n{self.node.id} restored a snapshot of {group}/{index} with a wrong state")
        self.chain[group], self.last[group] = chain, last
        self.sim.stats["restores"] += 1
        store = self.node.store
        lo = store.retained_from(group)
        if lo <= index:  # the entries the snapshot kept: their payloads must be the committed ones
            for i, _, kind, payload in store.entries(group, lo, index + 1):
                if kind == NORMAL_KIND and payload:
                    data = payload[ENVELOPE_BYTES:]
                    if self.sim.applied_at.setdefault((group, i), data) != data:
                        self.sim.fail(f"n{self.node.id} holds a wrong retained entry {group}/{i}")
                    self.sim.stats["retained_checked"] += 1

    def keep_from(self, group: Any) -> int | None:
        keep = self.sim.faults.keep_back
        return max(1, self.last.get(group, 0) - keep) if keep else None


class SimNode:
    def __init__(self, sim: HostSimulation, node_id: int, host_class: type[RaftHost]) -> None:
        self.sim = sim
        self.id = node_id
        self.dir = sim.base / f"n{node_id}"
        self.host_class = host_class
        self.alive = False
        self.epoch = 0

    async def start(self) -> None:
        sim = self.sim
        self.store = RaftStore(self.dir, 256 * 1024 * 1024, sync=False)  # durability is simulated
        self.disk = FaultyDisk(sim, self.id)
        self.machine = Applied(sim, self)
        self.host = self.host_class(
            self.id, self.store, self.send, message_from_wire, self.machine, tick_seconds=TICK,
            clock=sim.loop.time, proposal_timeout=2.0, limits=sim.limits, peers=sim.ids,
            disk=self.disk,
        )  # fmt: skip
        for g in sim.groups:
            storage = GroupStorage(self.store, g)
            node = RaftNode(
                self.id, g, storage, random.Random(sim.rng.random()), voters=tuple(sim.ids),
                election_ticks=ELECTION_TICKS, heartbeat_ticks=HEARTBEAT_TICKS,
                quiesce_after_ticks=sim.faults.quiesce_after_ticks, limits=sim.limits,
            )  # fmt: skip
            self.host.add_group(g, node, storage)
        await self.host.start()
        self.alive = True

    async def crash(self) -> None:
        self.alive = False
        self.epoch += 1
        self.disk.crash()
        await self.host.stop()
        self.store.close()

    def send(self, to: int, wire: Any) -> None:
        sim = self.sim
        if not self.alive or (self.id, to) in sim.blocked or sim.rng.random() < sim.faults.loss:
            return
        data = msgpack.packb(wire, use_bin_type=True)
        for _ in range(2 if sim.rng.random() < sim.faults.dup else 1):
            sim.loop.call_later(sim.rng.uniform(0, sim.faults.max_delay), sim.deliver, self.id, to, data)


class HostSimulation:
    def __init__(self, seed: int, nodes: int = 3, groups: int = 2, seconds: float = 8.0,
                 host_class: type[RaftHost] = RaftHost) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = Faults.draw(self.rng)
        self.ids = list(range(1, nodes + 1))
        self.groups = list(range(groups))
        self.seconds = seconds
        self.heal_at = seconds * 0.6
        self.host_class = host_class
        self.limits = Limits(
            raft_max_append_entries=self.rng.choice([4, 64]),
            raft_snapshot_every_entries=self.faults.snapshot_every,
            raft_snapshot_every_bytes=0,
            raft_snapshot_chunk_bytes=self.faults.chunk_bytes,
        )
        self.chain_at: dict[tuple[int, int], bytes] = {}
        self.blocked: set[tuple[int, int]] = set()
        self.applied_at: dict[tuple[int, int], bytes] = {}
        self.leaders: dict[tuple[int, int], int] = {}
        self.acked: list[tuple[int, int, bytes, float]] = []  # (group, index, payload, time)
        self.acked_after_heal: set[int] = set()
        self.reads = 0
        self.stats = dict.fromkeys(
            ("crashes", "lost_batches", "failed_batches", "partitions", "restores", "retained_checked"), 0)
        self.violation: Violation | None = None

    def fail(self, text: str) -> None:
        violation = Violation(f"seed {self.seed}: {text}")
        if self.violation is None:
            self.violation = violation
        raise violation

    def deliver(self, frm: int, to: int, data: bytes) -> None:
        node = self.nodes[to]
        if not node.alive or (frm, to) in self.blocked:
            return
        node.host.on_peer_message(frm, msgpack.unpackb(data, raw=False, strict_map_key=False))

    def run(self) -> None:
        logging.getLogger("warren.raft").setLevel(logging.CRITICAL)  # faults are expected here
        with tempfile.TemporaryDirectory(prefix="warren-host-sim-") as base:
            self.base = Path(base)
            self.loop = VirtualLoop()
            try:
                self.loop.run_until_complete(self._main())
            except Violation:
                raise
            except Exception as exc:  # noqa: BLE001 - reported with the seed that replays it
                raise Violation(f"seed {self.seed}: {type(exc).__name__} at t={self.loop.now:.3f}: {exc}") from exc
            finally:
                self.loop.close()
        if self.violation is not None:
            raise self.violation

    async def _main(self) -> None:
        self.nodes = {n: SimNode(self, n, self.host_class) for n in self.ids}
        for node in self.nodes.values():
            await node.start()
        tasks = [asyncio.ensure_future(self._writer(g, c)) for g in self.groups for c in range(2)]
        tasks += [asyncio.ensure_future(self._reader(g)) for g in self.groups]
        tasks.append(asyncio.ensure_future(self._nemesis()))
        tasks.append(asyncio.ensure_future(self._check_leaders()))
        try:
            await asyncio.sleep(self.seconds)
            self.final = {n.id: {g: _brief(n.host.status(g)) for g in self.groups} if n.alive else "down"
                          for n in self.nodes.values()}
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for node in self.nodes.values():
                if node.alive:
                    await node.crash()
        for result in results:
            if isinstance(result, Violation):
                raise result
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        missing = set(self.groups) - self.acked_after_heal
        if missing:
            self.fail(f"no commit after the faults healed in groups {sorted(missing)}; at the end: "
                      f"{self.final}")

    def _pick(self, group: int) -> SimNode | None:
        alive = [n for n in self.nodes.values() if n.alive]
        if not alive:
            return None
        leaders = [n for n in alive if (n.host.status(group) or {}).get("role") == "leader"]
        return self.rng.choice(leaders if leaders and self.rng.random() < 0.9 else alive)

    async def _writer(self, group: int, client: int) -> None:
        k = 0
        while True:
            await asyncio.sleep(self.rng.uniform(0, 0.02))
            node = self._pick(group)
            if node is None:
                continue
            k += 1
            payload = f"g{group}c{client}w{k}".encode()
            try:
                index = await node.host.propose(group, payload)
            except ProposalFailed:
                continue
            if self.applied_at.get((group, index)) != payload:
                self.fail(f"n{node.id} confirmed {payload!r} at {group}/{index}, which holds "
                          f"{self.applied_at.get((group, index))!r}")
            self.acked.append((group, index, payload, self.loop.now))
            if self.loop.now >= self.heal_at:
                self.acked_after_heal.add(group)

    async def _reader(self, group: int) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(0, 0.05))
            node = self._pick(group)
            if node is None:
                continue
            began = self.loop.now
            before = [i for g, i, _, t in self.acked if g == group and t < began]
            try:
                point = await node.host.read_index(group)
            except ProposalFailed:
                continue
            self.reads += 1
            if before and point < max(before):
                self.fail(f"n{node.id} read {group} at {point}, below {max(before)} acknowledged "
                          "before the read began")

    async def _check_leaders(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for node in self.nodes.values():
                if not node.alive:
                    continue
                for g in self.groups:
                    status = node.host.status(g) or {}
                    if status.get("role") == "leader":
                        holder = self.leaders.setdefault((g, status["term"]), node.id)
                        if holder != node.id:
                            self.fail(f"two leaders of group {g} in term {status['term']}: "
                                      f"n{holder} and n{node.id}")

    async def _nemesis(self) -> None:
        f = self.faults
        while self.loop.now < self.heal_at:
            await asyncio.sleep(0.1)
            if self.rng.random() < f.crash_rate:
                victim = self.nodes[self.rng.choice(self.ids)]
                if victim.alive:
                    self.stats["crashes"] += 1
                    await victim.crash()
                    asyncio.ensure_future(self._restart_later(victim, self.rng.uniform(0.05, 1.5)))
            if self.blocked and self.rng.random() < 0.2:
                self.blocked.clear()
            elif self.rng.random() < f.partition_rate:
                self.stats["partitions"] += 1
                a = self.rng.choice(self.ids)
                if self.rng.random() < 0.5:
                    self.blocked = {(a, b) for b in self.ids if b != a} | {(b, a) for b in self.ids if b != a}
                else:
                    self.blocked.add((a, self.rng.choice([b for b in self.ids if b != a])))
            if self.rng.random() < f.disk_full_rate:
                node = self.nodes[self.rng.choice(self.ids)]
                if node.alive:
                    node.disk.full_until = self.loop.now + self.rng.uniform(0.1, 1.0)
        self.blocked.clear()
        for node in self.nodes.values():
            if node.alive:
                node.disk.full_until = 0.0

    async def _restart_later(self, node: SimNode, delay: float) -> None:
        await asyncio.sleep(min(delay, max(0.0, self.heal_at - self.loop.now)))
        if not node.alive:
            await node.start()


def _brief(status: dict[str, Any] | None) -> str:
    if status is None:
        return "-"
    return f"{status['role']} t{status['term']} c{status['commit']} a{status['applied']} l{status['last_index']}"
