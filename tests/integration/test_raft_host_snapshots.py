"""The real core, LMDB store and host: snapshots driven by the state machine compact the log
(keeping what the state machine retains), and a restart replays only what follows them."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from warren.io.raft_host import RaftHost
from warren.limits import Limits
from warren.raft.node import RaftNode
from warren.raft.types import message_from_wire
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import RaftStore

pytestmark = pytest.mark.timeout(60)


class Counter:
    """Sums applied payloads; remembers how many entries it applied and restored from."""

    def __init__(self) -> None:
        self.total: dict[Any, int] = {}
        self.last: dict[Any, int] = {}
        self.applied_entries = 0
        self.restored: list[tuple[Any, int]] = []
        self.oldest_live: int | None = None

    def apply(self, group: Any, index: int, data: bytes) -> None:
        self.total[group] = self.total.get(group, 0) + int(data)
        self.last[group] = index
        self.applied_entries += 1

    def snapshot(self, group: Any) -> bytes:
        return msgpack.packb([self.total.get(group, 0), self.last.get(group, 0)])

    def restore(self, group: Any, index: int, data: bytes) -> None:
        self.total[group], last = msgpack.unpackb(data)
        assert last == index
        self.last[group] = index
        self.restored.append((group, index))

    def keep_from(self, group: Any) -> int | None:
        return self.oldest_live


async def _host(path: Path, machine: Counter, limits: Limits) -> tuple[RaftHost, RaftNode, RaftStore]:
    store = RaftStore(path, 256 * 1024 * 1024, sync=False)
    host = RaftHost(1, store, lambda peer, wire: None, message_from_wire, machine,
                    tick_seconds=0.005, limits=limits)
    storage = GroupStorage(store, "q")
    node = RaftNode(1, "q", storage, random.Random(1), voters=(1,), election_ticks=4,
                    heartbeat_ticks=1, limits=limits)
    host.add_group("q", node, storage)
    await host.start()
    for _ in range(400):
        if node.role.name == "LEADER":
            break
        await asyncio.sleep(0.005)
    return host, node, store


async def _propose(host: RaftHost, n: int) -> None:
    for lo in range(0, n, 100):
        await asyncio.gather(*(host.propose("q", b"1") for _ in range(min(100, n - lo))))


async def _settled(node: RaftNode, host: RaftHost, taken: int = 0) -> None:
    """Until ``host`` took more than ``taken`` snapshots and none is being written."""
    for _ in range(400):
        await asyncio.sleep(0.005)
        if host.snapshots.taken > taken and node.local_snapshot is None and not node.has_ready():
            return
    raise AssertionError("no snapshot written")


async def test_snapshots_compact_the_log_and_keep_from_retains_entries(tmp_path: Path) -> None:
    limits = Limits(raft_snapshot_every_entries=100)
    machine = Counter()
    host, node, store = await _host(tmp_path, machine, limits)
    await _propose(host, 450)
    await _settled(node, host)
    assert host.snapshots.taken >= 4
    index, _, _, data = store.snapshot("q")  # type: ignore[misc]
    assert msgpack.unpackb(data) == [index - 1, index]  # 1 per entry, the leader's no-op aside
    assert store.first_index("q") == index + 1 == store.retained_from("q")
    assert store.last_index("q") - index < 100
    # The state machine decides: snapshot now, keep entries it covers from `keep` on.
    await _propose(host, 10)
    keep = index + 5
    host.compact("q", keep_from=keep)
    await _settled(node, host, host.snapshots.taken)
    applied = node.applied
    assert store.snapshot("q")[0] == applied  # type: ignore[index]
    assert store.retained_from("q") == keep and store.first_index("q") == applied + 1
    assert [e[0] for e in store.entries("q", keep, applied + 1)] == list(range(keep, applied + 1))
    # Automatic snapshots ask the state machine's keep_from.
    machine.oldest_live = applied - 10
    taken = host.snapshots.taken
    await _propose(host, 100)
    await _settled(node, host, taken)
    assert store.retained_from("q") == applied - 10
    await host.stop()
    store.close()


async def test_a_restart_restores_the_snapshot_and_applies_only_the_entries_after_it(tmp_path: Path) -> None:
    limits = Limits(raft_snapshot_every_entries=200)
    first = Counter()
    host, node, store = await _host(tmp_path, first, limits)
    await _propose(host, 1000)
    await _settled(node, host)
    total, applied = first.total["q"], node.applied
    snap_index = store.snapshot("q")[0]  # type: ignore[index]
    await host.stop()
    store.close()

    second = Counter()
    host, node, store = await _host(tmp_path, second, limits)
    for _ in range(200):
        if node.applied >= applied + 1:  # its own no-op of the new term
            break
        await asyncio.sleep(0.005)
    assert second.restored == [("q", snap_index)]
    assert second.total["q"] == total
    assert second.applied_entries == applied - snap_index  # replayed only the tail
    await host.stop()
    store.close()


class SlowCounter(Counter):
    """A Counter whose snapshot costs ``cost`` seconds of CPU, as a deep queue's does, and
    which reports ``records`` records (so the host forks for it). ``fail_in_child``: its
    snapshot raises in a forked child (the parent's still works)."""

    def __init__(self, cost: float, records: int, fail_in_child: bool = False) -> None:
        super().__init__()
        self.cost, self.records = cost, records
        self.fail_in_child = fail_in_child
        self.parent = os.getpid()

    def snapshot_size(self, group: Any) -> int:
        return self.records

    def snapshot(self, group: Any) -> bytes:
        if self.fail_in_child and os.getpid() != self.parent:
            raise RuntimeError("planted: the child cannot build it")
        until = time.process_time() + self.cost
        while time.process_time() < until:
            pass
        return super().snapshot(group)


async def _longest_stall(host: RaftHost, node: RaftNode, taken: int, seconds: float) -> float:
    """Propose steadily until ``host`` took a snapshot after ``taken`` and ``seconds`` passed;
    the longest the event loop went without running this task meanwhile."""
    loop = asyncio.get_running_loop()
    longest, last, started = 0.0, loop.time(), loop.time()
    while host.snapshots.taken <= taken or loop.time() - started < seconds:
        assert loop.time() - started < 20, "no snapshot taken"
        await host.propose("q", b"1")
        await asyncio.sleep(0.002)
        now = loop.time()
        longest, last = max(longest, now - last), now
    await _settled(node, host, taken)
    return longest


async def test_a_large_snapshot_is_built_by_a_child_while_the_loop_goes_on(tmp_path: Path) -> None:
    limits = Limits(raft_snapshot_every_entries=50, raft_snapshot_fork_records=1000)
    machine = SlowCounter(cost=1.0, records=1000)
    host, node, store = await _host(tmp_path, machine, limits)
    longest = await _longest_stall(host, node, 0, 1.5)
    assert host.snapshots.forked >= 1
    assert longest < 0.3, f"the loop stopped for {longest:.2f} s"
    index, _, _, data = store.snapshot("q")  # type: ignore[misc]
    # The state as of the index it was forked at, although entries were applied meanwhile.
    assert msgpack.unpackb(data) == [index - 1, index]
    assert node.applied > index
    total = machine.total["q"]
    await host.stop()
    store.close()

    again = Counter()
    host, node, store = await _host(tmp_path, again, limits)
    for _ in range(400):
        if again.total.get("q") == total:
            break
        await asyncio.sleep(0.005)
    assert again.restored == [("q", index)] and again.total["q"] == total
    await host.stop()
    store.close()


async def test_without_a_child_the_same_snapshot_stops_the_loop(tmp_path: Path) -> None:
    """What the child saves: the snapshot above taken on the loop (the probe sees it)."""
    limits = Limits(raft_snapshot_every_entries=50, raft_snapshot_fork_records=0)
    host, node, store = await _host(tmp_path, SlowCounter(cost=1.0, records=1000), limits)
    longest = await _longest_stall(host, node, 0, 0)
    assert host.snapshots.forked == 0 and longest > 0.9
    await host.stop()
    store.close()


async def test_a_failed_child_leaves_the_snapshot_to_the_loop(tmp_path: Path) -> None:
    limits = Limits(raft_snapshot_every_entries=50, raft_snapshot_fork_records=1000)
    machine = SlowCounter(cost=0.0, records=1000, fail_in_child=True)
    host, node, store = await _host(tmp_path, machine, limits)
    await _longest_stall(host, node, 0, 0)
    assert host.snapshots.forked == 0 and host.snapshots.taken == 1
    index, _, _, data = store.snapshot("q")  # type: ignore[misc]
    assert msgpack.unpackb(data) == [index - 1, index]
    await host.stop()
    store.close()
