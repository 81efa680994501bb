"""Three real ``warren raft-node`` processes under kill -9 and SIGSTOP: no acknowledged write is
lost, duplicated or reordered, and every node ends with the same log."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from pathlib import Path

import pytest

from warren.cli.raft_cmd import LocalCluster, ProposalFailed

pytestmark = pytest.mark.timeout(90)


class Writer:
    """Proposes w0, w1, ... one at a time to whichever node leads; never retries a payload,
    so an acknowledged payload can only be in the log once if the cluster is correct."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.acked: list[tuple[bytes, int]] = []  # (payload, index), in acknowledgement order
        self.attempts = 0
        self.running = True

    async def run(self) -> None:
        leader: int | None = None
        while self.running:
            if leader is None:
                try:
                    leader = await self.cluster.leader(0, timeout=2.0)
                except TimeoutError:
                    continue
            client = self.cluster.nodes[leader].client
            payload = f"w{self.attempts}".encode()
            self.attempts += 1
            try:
                if client is None:
                    raise ConnectionError("node is down")
                index = await asyncio.wait_for(client.propose(0, payload), 2.0)
            except (ProposalFailed, TimeoutError, ConnectionError, OSError):
                leader = None
                continue
            self.acked.append((payload, index))


async def converged_logs(
    cluster: LocalCluster, timeout: float = 15.0
) -> dict[int, list[tuple[int, bytes]]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        logs = {}
        for node_id, node in cluster.nodes.items():
            assert node.client is not None
            logs[node_id] = await node.client.log(0)
        if len({tuple(log) for log in logs.values()}) == 1 or loop.time() > deadline:
            return logs
        await asyncio.sleep(0.2)


CORES = ["standin"]
if importlib.util.find_spec("warren.raft.node") is not None:
    CORES.append("raft")


@pytest.mark.parametrize("core", CORES)
async def test_acknowledged_writes_survive_kill_and_pause(tmp_path: Path, core: str) -> None:
    cluster = LocalCluster(str(tmp_path), nodes=3, groups=1, keep_log=True, core=core)
    await cluster.start()
    try:
        writer = Writer(cluster)
        writing = asyncio.create_task(writer.run())
        await asyncio.sleep(2.0)
        acked_before_kill = len(writer.acked)

        leader = await cluster.leader(0)
        await cluster.nodes[leader].kill()
        await asyncio.sleep(1.5)
        await cluster.restart(leader)
        await asyncio.sleep(1.5)

        new_leader = await cluster.leader(0)
        follower = next(n for n in cluster.nodes if n != new_leader)
        cluster.nodes[follower].signal(signal.SIGSTOP)
        await asyncio.sleep(2.0)
        cluster.nodes[follower].signal(signal.SIGCONT)
        await asyncio.sleep(2.0)

        writer.running = False
        await writing
        assert acked_before_kill > 0 and len(writer.acked) > acked_before_kill + 10, (
            f"the writer made no progress across the faults: {len(writer.acked)} acks"
        )

        print(f"acknowledged {len(writer.acked)} of {writer.attempts} proposals")
        logs = await converged_logs(cluster)
        reference = logs[1]
        for node_id, node_log in logs.items():
            assert node_log == reference, f"node {node_id}'s log differs from node 1's"
        indexes = [index for index, _ in reference]
        assert indexes == sorted(set(indexes))
        position = {}
        for index, payload in reference:
            assert payload not in position, f"{payload!r} applied twice"
            position[payload] = index
        for payload, index in writer.acked:
            assert position.get(payload) == index, (
                f"acknowledged {payload!r} at {index} is not there"
            )
        acked_indexes = [index for _, index in writer.acked]
        assert acked_indexes == sorted(acked_indexes), "acknowledgements out of log order"
    finally:
        await cluster.stop()
