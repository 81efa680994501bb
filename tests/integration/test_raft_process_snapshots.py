"""Snapshots between three real ``warren raft-node`` processes over TCP: a follower killed -9
while the leader compacts its log past it comes back and catches up by snapshot, ending with
the same log (its state machine restored from the snapshot, then the entries after it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.test_raft_processes import converged_logs
from warren.cli.raft_cmd import LocalCluster

pytestmark = pytest.mark.timeout(90)

SNAPSHOT_EVERY = 50


async def propose(cluster: LocalCluster, count: int, tag: str) -> None:
    client = cluster.nodes[await cluster.leader(0)].client
    assert client is not None
    for start in range(0, count, 50):
        await asyncio.gather(*(client.propose(0, f"{tag}{i}".encode())
                               for i in range(start, min(count, start + 50))))


async def test_a_follower_behind_the_compacted_log_catches_up_by_snapshot(tmp_path: Path) -> None:
    cluster = LocalCluster(str(tmp_path), nodes=3, groups=1, snapshot_every=SNAPSHOT_EVERY)
    await cluster.start()
    try:
        await propose(cluster, 120, "a")
        leader = await cluster.leader(0)
        follower = next(n for n in cluster.nodes if n != leader)
        client = cluster.nodes[follower].client
        assert client is not None
        held_when_killed = (await client.status())[0]["last_index"]
        await cluster.nodes[follower].kill()

        await propose(cluster, 400, "b")
        leader_client = cluster.nodes[await cluster.leader(0)].client
        assert leader_client is not None
        leader_status = (await leader_client.status())[0]
        # The leader no longer holds what the follower lacks: only a snapshot can help it.
        assert leader_status["snapshot_index"] > held_when_killed

        await cluster.restart(follower)
        logs = await converged_logs(cluster, timeout=30.0)
        assert len({tuple(log) for log in logs.values()}) == 1, "logs differ after catch-up"
        payloads = [data for _, data in logs[follower]]
        assert payloads == [f"a{i}".encode() for i in range(120)] + [f"b{i}".encode() for i in range(400)]
        status = (await cluster.nodes[follower].client.status())[0]  # type: ignore[union-attr]
        assert status["snapshot_index"] > held_when_killed  # it installed one
    finally:
        await cluster.stop()
