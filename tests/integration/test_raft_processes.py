"""Three real ``warren raft-node`` processes under kill -9 and SIGSTOP: no acknowledged write is
lost, duplicated or reordered, and every node ends with the same log."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from warren.cli.raft_cmd import LocalCluster, ProposalFailed

pytestmark = pytest.mark.timeout(90)


class Writer:
    """Proposes <name>0, <name>1, ... one at a time to whichever node leads; never retries a
    payload, so an acknowledged payload can only be in the log once if the cluster is correct."""

    def __init__(self, cluster: LocalCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
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
            payload = f"{self.name}{self.attempts}".encode()
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


WRITERS = 4


async def test_acknowledged_writes_survive_kill_and_pause(tmp_path: Path) -> None:
    cluster = LocalCluster(str(tmp_path), nodes=3, groups=1, keep_log=True)
    await cluster.start()
    try:
        writers = [Writer(cluster, f"w{n}-") for n in range(WRITERS)]
        writing = [asyncio.create_task(w.run()) for w in writers]
        await asyncio.sleep(2.0)
        acked_before_kill = sum(len(w.acked) for w in writers)

        leader = await cluster.leader(0)
        await cluster.nodes[leader].kill()
        await asyncio.sleep(1.5)
        acked_while_down = sum(len(w.acked) for w in writers) - acked_before_kill
        await cluster.restart(leader)
        await asyncio.sleep(1.5)

        new_leader = await cluster.leader(0)
        follower = next(n for n in cluster.nodes if n != new_leader)
        cluster.nodes[follower].signal(signal.SIGSTOP)
        acked_before_pause = sum(len(w.acked) for w in writers)
        await asyncio.sleep(2.0)
        acked_while_paused = sum(len(w.acked) for w in writers) - acked_before_pause
        cluster.nodes[follower].signal(signal.SIGCONT)
        await asyncio.sleep(2.0)

        for w in writers:
            w.running = False
        await asyncio.gather(*writing)
        acked = sum(len(w.acked) for w in writers)
        # The two survivors, then the leader and the running follower, are a majority.
        assert acked_before_kill > 0 and acked_while_down > 0 and acked_while_paused > 0, (
            f"no progress: {acked_before_kill} acks before the kill, {acked_while_down} with "
            f"the old leader dead, {acked_while_paused} with a follower paused"
        )

        print(
            f"acknowledged {acked} of {sum(w.attempts for w in writers)} proposals "
            f"({acked_while_down} with the leader dead, {acked_while_paused} with a follower paused)"
        )
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
        for w in writers:
            for payload, index in w.acked:
                assert position.get(payload) == index, (
                    f"acknowledged {payload!r} at {index} is not there"
                )
            acked_indexes = [index for _, index in w.acked]
            assert acked_indexes == sorted(acked_indexes), "acknowledgements out of log order"
    finally:
        await cluster.stop()
