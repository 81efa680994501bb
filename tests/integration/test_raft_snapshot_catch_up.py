"""Done means: a follower 100,000 entries behind catches up by snapshot.

Three real ``RaftHost``s, each with its own LMDB store and the real core, in one process;
messages go through the peer transport's msgpack encoding. Node 3 is stopped, the other
two commit the entries (snapshots compact their logs meanwhile), node 3 restarts from its
store and must install a snapshot (it lacks entries the leader no longer holds), then
hold the same state and commit as the leader. Proposals keep coming during the catch-up,
so the leader also takes newer snapshots while it is sending one.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from warren.io.raft_host import RaftHost
from warren.io.raft_wire import ENVELOPE_BYTES
from warren.limits import Limits
from warren.raft.node import RaftNode, Role
from warren.raft.types import message_from_wire
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import RaftStore

GROUP = "q"
LIVE = 20_000  # the state machine keeps the latest payloads: a snapshot of ~50 chunks


class Queue:
    """A toy queue state: count, sum and the latest LIVE payloads."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.live: list[bytes] = []
        self.restored: list[int] = []

    def apply(self, group: Any, index: int, data: bytes) -> None:
        self.count += 1
        self.total += index
        self.live.append(data)
        if len(self.live) > LIVE:
            del self.live[: len(self.live) - LIVE]

    def snapshot(self, group: Any) -> bytes:
        return msgpack.packb([self.count, self.total, self.live])

    def restore(self, group: Any, index: int, data: bytes) -> None:
        self.count, self.total, self.live = msgpack.unpackb(data)
        self.restored.append(index)

    def state(self) -> tuple[int, int, list[bytes]]:
        return self.count, self.total, self.live


class MessageStore(Queue):
    """A queue that keeps its live bodies in the Raft log, as a quorum queue will: its
    snapshot is small (counts and the live indexes) and retains the entries from the oldest
    live message on (``keep_from``); after installing one, the bodies are read from the
    store, where the leader's snapshot brought them."""

    def __init__(self, store: RaftStore) -> None:
        super().__init__()
        self.store = store
        self.live_index: list[int] = []

    def apply(self, group: Any, index: int, data: bytes) -> None:
        super().apply(group, index, b"")
        self.live = []
        self.live_index.append(index)
        if len(self.live_index) > LIVE:
            del self.live_index[: len(self.live_index) - LIVE]

    def keep_from(self, group: Any) -> int | None:
        return self.live_index[0] if self.live_index else None

    def snapshot(self, group: Any) -> bytes:
        return msgpack.packb([self.count, self.total, self.live_index])

    def restore(self, group: Any, index: int, data: bytes) -> None:
        self.count, self.total, self.live_index = msgpack.unpackb(data)
        self.restored.append(index)

    def state(self) -> tuple[int, int, list[bytes]]:
        return self.count, self.total, self.live_index  # type: ignore[return-value]

    def bodies(self, group: Any) -> list[bytes]:
        held = {r[0]: r[3][ENVELOPE_BYTES:] for r in
                self.store.entries(group, self.live_index[0], self.live_index[-1] + 1)}
        return [held[i] for i in self.live_index]


class Net:
    """In-process links between hosts; a stopped host's messages are dropped."""

    def __init__(self) -> None:
        self.hosts: dict[int, RaftHost] = {}

    def sender(self, frm: int) -> Any:
        def send(to: int, wire: Any) -> None:
            data = msgpack.packb(wire, use_bin_type=True)
            asyncio.get_running_loop().call_soon(self._deliver, frm, to, data)

        return send

    def _deliver(self, frm: int, to: int, data: bytes) -> None:
        host = self.hosts.get(to)
        if host is not None and frm in self.hosts:
            host.on_peer_message(frm, msgpack.unpackb(data, raw=False))


class Member:
    def __init__(self, node_id: int, path: Path, net: Net, limits: Limits, retain: bool) -> None:
        self.id = node_id
        self.store = RaftStore(path, 1 << 30, sync=False, snapshot_chunk_bytes=limits.raft_snapshot_chunk_bytes)
        self.machine = MessageStore(self.store) if retain else Queue()
        self.host = RaftHost(node_id, self.store, net.sender(node_id), message_from_wire,
                             self.machine, tick_seconds=0.01, limits=limits)
        storage = GroupStorage(self.store, GROUP)
        # A 0.5 s election timeout: three hosts share one loop, and a stall of a loaded
        # machine must not move leadership in the middle of a batch of proposals.
        self.node = RaftNode(node_id, GROUP, storage, random.Random(node_id), voters=(1, 2, 3),
                             election_ticks=50, heartbeat_ticks=1, limits=limits)
        self.host.add_group(GROUP, self.node, storage)

    async def start(self, net: Net) -> None:
        await self.host.start()
        net.hosts[self.id] = self.host

    async def stop(self, net: Net) -> None:
        net.hosts.pop(self.id, None)
        await self.host.stop()
        self.store.close()


async def _leader(members: dict[int, Member], among: tuple[int, ...], timeout: float = 10.0) -> Member:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [members[n] for n in among if members[n].node.role == Role.LEADER]
        if len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no leader")


async def _commit(leader: Member, count: int, batch: int = 2000) -> None:
    for lo in range(0, count, batch):
        n = min(batch, count - lo)
        await asyncio.gather(*(leader.host.propose(GROUP, b"m%d" % (lo + i)) for i in range(n)))


async def _catch_up(tmp_path: Path, behind: int, every: int, retain: bool = False) -> tuple[float, float]:
    limits = Limits(raft_snapshot_every_entries=every, raft_snapshot_chunk_bytes=4096)
    net = Net()
    members = {n: Member(n, tmp_path / f"n{n}", net, limits, retain) for n in (1, 2, 3)}
    for m in members.values():
        await m.start(net)
    try:
        leader = await _leader(members, (1, 2, 3))
        await _commit(leader, 100)
        lagging = members[next(n for n in (3, 2, 1) if n != leader.id)]
        await lagging.stop(net)
        others = tuple(n for n in members if n != lagging.id)
        leader = await _leader(members, others)
        await _commit(leader, behind)
        assert leader.host.snapshots.taken >= behind // (2 * every)  # regularly (timing varies)
        assert leader.store.first_index(GROUP) > lagging.node.applied + 1  # compacted past it
        # Back, from its own store, while proposals go on (newer snapshots mid-transfer).
        started = time.monotonic()
        back = members[lagging.id] = Member(lagging.id, tmp_path / f"n{lagging.id}", net, limits, retain)
        await back.start(net)
        installed: list[float] = []

        async def watch() -> None:
            while not back.host.snapshots.installed:
                await asyncio.sleep(0.005)
            installed.append(time.monotonic() - started)

        watcher = asyncio.get_running_loop().create_task(watch())
        await _commit(leader, 5 * every, batch=500)
        deadline = started + 30
        while back.machine.state() != leader.machine.state() or back.node.committed != leader.node.committed:
            assert time.monotonic() < deadline, (back.node.status(), leader.node.status())
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        await asyncio.wait_for(watcher, 1)
        assert back.host.snapshots.installed >= 1
        assert back.machine.restored and max(back.machine.restored) > 100 + behind // 2
        assert back.machine.count == leader.machine.count == 100 + behind + 5 * every
        if retain:  # the live bodies came with the snapshot: the follower reads them locally
            bodies = back.machine.bodies(GROUP)  # type: ignore[attr-defined]
            assert bodies == leader.machine.bodies(GROUP) and len(bodies) == LIVE  # type: ignore[attr-defined]
            assert back.store.retained_from(GROUP) <= back.machine.live_index[0]  # type: ignore[attr-defined]
        return installed[0], took
    finally:
        for m in members.values():
            if m.id in net.hosts:
                await m.stop(net)


@pytest.mark.timeout(60)
async def test_a_follower_100000_entries_behind_catches_up_by_snapshot(tmp_path: Path) -> None:
    installed_after, equal_after = await _catch_up(tmp_path, 100_000, 10_000)
    print(f"100,000 behind: snapshot installed after {installed_after:.2f} s, "
          f"same state and commit after {equal_after:.2f} s (50,000 more committed meanwhile)")


@pytest.mark.timeout(60)
async def test_a_message_store_follower_gets_the_live_bodies_with_the_snapshot(tmp_path: Path) -> None:
    installed_after, equal_after = await _catch_up(tmp_path, 30_000, 5_000, retain=True)
    print(f"30,000 behind, 20,000 live bodies retained: snapshot installed after "
          f"{installed_after:.2f} s, same state after {equal_after:.2f} s")
