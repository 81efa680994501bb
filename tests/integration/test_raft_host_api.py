"""The Raft host's API for the cluster: membership changes (a new member joins as a learner
and is promoted once caught up), ReadIndex reads, status and leadership transfer -- with the
real core, real LMDB stores and four hosts in one process (messages go through msgpack)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from warren.io.raft_host import ProposalFailed, RaftHost
from warren.limits import Limits
from warren.raft.node import RaftNode
from warren.raft.types import message_from_wire
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import RaftStore

pytestmark = pytest.mark.timeout(60)

GROUP = "q1"
VOTERS = (1, 2, 3)
LIMITS = Limits(raft_max_append_entries=16)


class AppliedLog:
    def __init__(self) -> None:
        self.entries: dict[int, bytes] = {}

    def apply(self, group: Any, index: int, data: bytes) -> None:
        self.entries[index] = data


class Hosts:
    """Four hosts; node 4 hosts the group from the start but is not a member of it."""

    def __init__(self, base: Path) -> None:
        self.hosts: dict[int, RaftHost] = {}
        self.machines: dict[int, AppliedLog] = {}
        self.stores: list[RaftStore] = []
        for n in (1, 2, 3, 4):
            store = RaftStore(base / f"n{n}", 64 * 1024 * 1024)
            self.stores.append(store)
            machine = self.machines[n] = AppliedLog()
            host = RaftHost(n, store, self._sender(n), message_from_wire, machine,
                            tick_seconds=0.005, limits=LIMITS, peers=(1, 2, 3, 4))
            storage = GroupStorage(store, GROUP)
            node = RaftNode(n, GROUP, storage, random.Random(n), voters=VOTERS,
                            election_ticks=10, heartbeat_ticks=2, limits=LIMITS)
            host.add_group(GROUP, node, storage)
            self.hosts[n] = host

    def _sender(self, frm: int) -> Any:
        def send(to: int, wire: Any) -> None:
            obj = msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False)
            asyncio.get_running_loop().call_soon(self.hosts[to].on_peer_message, frm, obj)
        return send

    async def leader(self) -> int:
        for _ in range(2000):
            for n, host in self.hosts.items():
                status = host.status(GROUP)
                if status is not None and status["role"] == "leader":
                    return n
            await asyncio.sleep(0.005)
        raise AssertionError("no leader")

    async def start(self) -> None:
        for host in self.hosts.values():
            await host.start()

    async def stop(self) -> None:
        for host in self.hosts.values():
            await host.stop()
        for store in self.stores:
            store.close()


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Hosts]:
    started = Hosts(tmp_path)
    await started.start()
    yield started
    await started.stop()


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_a_new_member_joins_as_a_learner_and_is_promoted_once_caught_up(hosts: Hosts) -> None:
    leader = await hosts.leader()
    lead = hosts.hosts[leader]
    indexes = await asyncio.gather(*(lead.propose(GROUP, f"e{i}".encode()) for i in range(300)))
    assert hosts.machines[4].entries == {}  # not a member: it gets nothing

    # What the learner lacked when each change was proposed.
    proposed: list[tuple[str, int | None]] = []
    original = lead.change_membership

    async def recording(group: Any, change: Any) -> int:
        proposed.append((change.kind.name, lead.groups[group].node.lag(4)))  # type: ignore[attr-defined]
        return await original(group, change)

    lead.change_membership = recording  # type: ignore[method-assign]
    await lead.add_member(GROUP, 4)
    lead.change_membership = original  # type: ignore[method-assign]
    status = lead.status(GROUP)
    assert status is not None
    assert status["voters"] == [1, 2, 3, 4] and status["learners"] == []
    assert [kind for kind, _ in proposed] == ["ADD_LEARNER", "ADD_VOTER"]
    assert proposed[0][1] is None  # not a member yet
    assert proposed[1][1] is not None and proposed[1][1] <= LIMITS.raft_max_append_entries
    await wait_for(lambda: len(hosts.machines[4].entries) >= len(indexes))
    assert [hosts.machines[4].entries[i] for i in indexes] == [f"e{i}".encode() for i in range(300)]

    # One change at a time: a second one while the first is uncommitted is refused.
    first = asyncio.ensure_future(lead.remove_member(GROUP, 4))
    await asyncio.sleep(0)
    with pytest.raises(ProposalFailed, match="in progress"):
        await lead.remove_member(GROUP, 3)
    await first
    status = lead.status(GROUP)
    assert status is not None and status["voters"] == [1, 2, 3]
    # A follower cannot change membership.
    follower = next(n for n in VOTERS if n != leader)
    with pytest.raises(ProposalFailed, match="not its leader"):
        await hosts.hosts[follower].add_member(GROUP, 4)


async def test_read_index_on_any_member_sees_every_earlier_commit(hosts: Hosts) -> None:
    leader = await hosts.leader()
    lead = hosts.hosts[leader]
    for round_ in range(5):
        last = max(await asyncio.gather(
            *(lead.propose(GROUP, f"r{round_}-{i}".encode()) for i in range(20))))
        for n in VOTERS:  # the leader and both followers
            point = await hosts.hosts[n].read_index(GROUP)
            assert point >= last
            assert max(hosts.machines[n].entries) >= last  # applied before it returned
    assert hosts.hosts[4].status(GROUP)["role"] == "follower"  # type: ignore[index]
    with pytest.raises(ProposalFailed):
        await hosts.hosts[4].read_index("no-such-group")


async def test_leadership_transfer_and_status(hosts: Hosts) -> None:
    leader = await hosts.leader()
    await hosts.hosts[leader].propose(GROUP, b"x")
    target = next(n for n in VOTERS if n != leader)
    assert not hosts.hosts[target].transfer_leadership(GROUP, leader)  # only a leader can
    # A transfer gives up after an election timeout (50 ms here) if the target does not
    # take over, so on a loaded machine it may take a few attempts.
    for _ in range(20):
        assert hosts.hosts[leader].transfer_leadership(GROUP, target)
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: hosts.hosts[target].status(GROUP)["role"] == "leader", 0.5)  # type: ignore[index]
            break
    assert hosts.hosts[target].status(GROUP)["role"] == "leader"  # type: ignore[index]
    y = await hosts.hosts[target].propose(GROUP, b"y")
    # (the core hears that y was applied when its batch's fsync returns)
    await wait_for(lambda: hosts.hosts[target].status(GROUP)["applied"] >= y)  # type: ignore[index]
    status = hosts.hosts[target].status(GROUP)
    assert status is not None
    assert status["leader"] == target and status["term"] >= 2
    assert status["commit"] >= y and status["applied"] >= y
    assert set(status["lag"]) == {n for n in VOTERS if n != target}
    assert status["pending_proposals"] == 0
