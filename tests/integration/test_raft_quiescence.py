"""Quiesced groups on three real ``warren raft-node`` processes: idle groups go quiet, and
when a node dies the groups it led elect new leaders anyway (node-level liveness wakes their
followers); when it comes back, everything goes quiet again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from warren.cli.raft_cmd import LocalCluster

pytestmark = pytest.mark.timeout(120)

GROUPS = 12
QUIESCE_AFTER_TICKS = 20  # 200 ms at the default 10 ms tick


async def statuses(cluster: LocalCluster, nodes: list[int]) -> dict[int, dict[Any, Any]]:
    out = {}
    for node_id in nodes:
        client = cluster.nodes[node_id].client
        assert client is not None
        out[node_id] = await client.status()
    return out


async def wait_until_all_quiesced(cluster: LocalCluster, nodes: list[int], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        seen = await statuses(cluster, nodes)
        quiet = [all(s[g]["quiesced"] for s in seen.values()) for g in range(GROUPS)]
        if all(quiet):
            return
        if loop.time() > deadline:
            raise AssertionError(f"groups not quiesced after {timeout}s: {quiet}")
        await asyncio.sleep(0.1)


async def test_quiesced_groups_fail_over_and_quiesce_again(tmp_path: Path) -> None:
    cluster = LocalCluster(str(tmp_path), nodes=3, groups=GROUPS,
                           quiesce_after_ticks=QUIESCE_AFTER_TICKS)
    await cluster.start()
    try:
        await cluster.balance_leaders(GROUPS)
        for g in range(GROUPS):
            client = cluster.nodes[await cluster.leader(g)].client
            assert client is not None
            await client.propose(g, b"before")
        await wait_until_all_quiesced(cluster, [1, 2, 3], timeout=10.0)

        victim = await cluster.leader(0)
        led = [g for g, s in (await statuses(cluster, [victim]))[victim].items()
               if s["role"] == "leader"]
        await cluster.nodes[victim].kill()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        # Every group the dead node led commits again under a new leader, although none of
        # them had sent a heartbeat for a long time when it died.
        for g in led:
            while True:
                leader = await cluster.leader(g, timeout=10.0)
                if leader != victim:
                    break
                await asyncio.sleep(0.05)
            client = cluster.nodes[leader].client
            assert client is not None
            await asyncio.wait_for(client.propose(g, b"after"), 5.0)
        failover = loop.time() - killed_at
        assert failover < 5.0, f"groups of a dead leader took {failover:.1f}s to commit again"

        await cluster.restart(victim)
        # The restarted node learns the quiet leaders (a quiesced leader answers its
        # pre-votes with a quiesce heartbeat) and every group goes quiet again.
        await wait_until_all_quiesced(cluster, [1, 2, 3], timeout=15.0)
        seen = await statuses(cluster, [1, 2, 3])
        for g in range(GROUPS):
            assert len({s[g]["commit"] for s in seen.values()}) == 1, g
    finally:
        await cluster.stop()
