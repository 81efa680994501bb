"""A leader whose disk fills hands its group to a healthy member (found by `warren chaos`:
with the metadata leader's disk full, every declare in the cluster timed out, though two of
three members were healthy). Three real hosts, each store on its own small tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_raft_snapshot_catch_up import GROUP, Member, Net, _commit
from warren.cli.chaos import tmpfs
from warren.io.raft_host import ProposalFailed, RaftHost
from warren.limits import Limits
from warren.raft.node import RaftNode, Role
from warren.raft.types import message_from_wire
from warren.store.raft_group_storage import GroupStorage

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
              pytest.mark.timeout(60)]


META = "meta"


class QuiescingMember(Member):
    """As a node of a cluster runs its groups: two on one host (a busy queue, GROUP, and an
    idle metadata group, META), idle groups go quiet, node-level liveness between hosts (so
    a leader whose process is alive keeps its followers from campaigning)."""

    def __init__(self, node_id: int, path: Path, net: Net, limits: Limits) -> None:
        super().__init__(node_id, path, net, limits, retain=False)
        self.host = RaftHost(node_id, self.store, net.sender(node_id), message_from_wire, self.machine,
                             tick_seconds=0.01, limits=limits, peers=(1, 2, 3))
        self.nodes: dict[str, RaftNode] = {}
        for group in (GROUP, META):
            storage = GroupStorage(self.store, group)
            self.nodes[group] = RaftNode(node_id, group, storage, random.Random(node_id), voters=(1, 2, 3),
                                         election_ticks=10, heartbeat_ticks=1,
                                         quiesce_after_ticks=limits.raft_quiesce_after_ticks, limits=limits)
            self.host.add_group(group, self.nodes[group], storage)
        self.node = self.nodes[GROUP]


async def _leader_of(group: str, members: dict[int, QuiescingMember], among: tuple[int, ...],
                     timeout: float = 10.0) -> QuiescingMember:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        leaders = [members[n] for n in among if members[n].nodes[group].role == Role.LEADER]
        if len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no leader of {group} among {among}")


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[dict[int, Path]]:
    mounts = {n: tmp_path / f"disk{n}" for n in (1, 2, 3)}
    for path in mounts.values():
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)], check=True)
    try:
        yield mounts
    finally:
        for path in mounts.values():
            subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_leader_whose_disk_fills_hands_its_idle_group_to_a_healthy_member(disks: dict[int, Path]) -> None:
    """The metadata leader's disk fills while the group is idle (quiesced): it must not sit
    on the leadership refusing every proposal while two healthy members wait."""
    net = Net()
    members = {n: QuiescingMember(n, disks[n] / "store", net, Limits()) for n in (1, 2, 3)}
    for member in members.values():
        await member.start(net)
    try:
        full = await _leader_of(META, members, (1, 2, 3))
        await asyncio.wait_for(full.host.propose(META, b"declare before"), 5.0)
        queue_leader = await _leader_of(GROUP, members, (1, 2, 3))
        await _commit(queue_leader, 100)
        await asyncio.sleep(1.5)  # idle: META goes quiet
        assert full.nodes[META].quiesced
        tmpfs.fill(disks[full.id])
        for _ in range(50):  # queue traffic takes the full node's last free pages
            with contextlib.suppress(ProposalFailed, TimeoutError):
                await asyncio.wait_for(queue_leader.host.propose(GROUP, os.urandom(64 * 1024)), 2.0)
            if full.host.store_error is not None:
                break
        assert full.host.store_error is not None
        others = tuple(n for n in members if n != full.id)
        healthy = await _leader_of(META, members, others, timeout=5.0)  # the full node handed over
        assert full.nodes[META].role != Role.LEADER
        index = await asyncio.wait_for(healthy.host.propose(META, b"declare during"), 5.0)
        tmpfs.empty(disks[full.id])
        for _ in range(100):  # the full node recovers by itself and catches up
            if full.host.store_error is None and full.nodes[META].committed >= index:
                break
            await asyncio.sleep(0.1)
        assert full.host.store_error is None and full.nodes[META].committed >= index
    finally:
        for member in members.values():
            if member.id in net.hosts:
                await member.stop(net)
