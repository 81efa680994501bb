"""The real Raft core, LMDB store and host across a restart: a proposal is answered only by
its own entry, never by an older one that the restarted host replays."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from warren.io.raft_host import ProposalFailed, RaftHost
from warren.io.raft_wire import envelope
from warren.limits import Limits
from warren.raft.node import RaftNode
from warren.raft.types import message_from_wire
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import GroupWrite, RaftStore

pytestmark = pytest.mark.timeout(30)


class AppliedLog:
    def __init__(self) -> None:
        self.entries: dict[int, bytes] = {}

    def apply(self, group: Any, index: int, data: bytes) -> None:
        self.entries[index] = data


async def _run_host(data_dir: Path, payloads: list[bytes]) -> tuple[list[int], dict[int, bytes]]:
    """Start a one-voter group on a host, wait until it leads, propose ``payloads`` in turn."""
    store = RaftStore(data_dir, 64 * 1024 * 1024)
    machine = AppliedLog()
    host = RaftHost(1, store, lambda peer, wire: None, message_from_wire, machine, tick_seconds=0.005,
                    limits=Limits())
    storage = GroupStorage(store, 0)
    node = RaftNode(1, 0, storage, random.Random(1), voters=(1,), election_ticks=4, heartbeat_ticks=1)
    host.add_group(0, node, storage)
    await host.start()
    try:
        for _ in range(400):
            if node.role.name == "LEADER":
                break
            await asyncio.sleep(0.005)
        # all at once, as soon as it leads: before the entries of the previous run are known
        # committed (the commit index on disk may lag behind the log), so both commit together
        indexes = await asyncio.gather(*(host.propose(0, payload) for payload in payloads))
        return list(indexes), dict(machine.entries)
    finally:
        await host.stop()
        store.close()


def _leave_appended_but_uncommitted(data_dir: Path, payloads: list[bytes]) -> None:
    """What a leader killed -9 leaves when its last proposals were fsynced but not yet known
    committed: the entries (enveloped by this host, sequence numbers from 1) and a hard state
    whose commit index lags. Written with the store the host itself uses."""
    store = RaftStore(data_dir, 64 * 1024 * 1024)
    entries = [(i + 1, 1, 0, envelope(1, i + 1) + payload) for i, payload in enumerate(payloads)]
    store.persist_batch([GroupWrite(0, entries, (1, 1, 0), None)])
    store.close()


async def test_a_proposal_after_a_restart_is_confirmed_with_its_own_entry(tmp_path: Path) -> None:
    before = [f"before-{i}".encode() for i in range(20)]
    after = [f"after-{i}".encode() for i in range(20)]
    _leave_appended_but_uncommitted(tmp_path, before)
    # The restarted leader commits the old entries together with the new proposals.
    indexes, applied = await _run_host(tmp_path, after)
    assert [applied.get(i) for i in indexes] == after  # each answered by its own entry
    assert min(indexes) > len(before)
    assert [applied[i] for i in range(1, len(before) + 1)] == before



@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_a_full_disk_refuses_proposals_and_the_host_recovers_when_space_returns(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        store = RaftStore(disk / "data", 64 * 1024 * 1024)
        machine = AppliedLog()
        host = RaftHost(1, store, lambda peer, wire: None, message_from_wire, machine, tick_seconds=0.005,
                        limits=Limits(), proposal_timeout=2.0)
        storage = GroupStorage(store, 0)
        node = RaftNode(1, 0, storage, random.Random(1), voters=(1,), election_ticks=4, heartbeat_ticks=1)
        host.add_group(0, node, storage)
        await host.start()
        for _ in range(400):
            if node.role.name == "LEADER":
                break
            await asyncio.sleep(0.005)
        confirmed = {await host.propose(0, b"before")}
        filler = disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as out:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        with pytest.raises(ProposalFailed):
            for _ in range(50):  # the store's free pages run out within a few
                confirmed.add(await host.propose(0, os.urandom(256 * 1024)))
        assert host.store_error is not None
        with pytest.raises(ProposalFailed, match="store is failing"):
            await host.propose(0, b"refused")
        filler.unlink()
        for _ in range(100):  # the host retries every STORE_RETRY_SECONDS
            if host.store_error is None:
                break
            await asyncio.sleep(0.1)
        assert host.store_error is None
        after = await host.propose(0, b"after")
        assert machine.entries[after] == b"after"
        confirmed.add(after)
        await host.stop()
        store.close()
        reopened = RaftStore(disk / "data", 64 * 1024 * 1024)
        held = {index for index, _, _, _ in reopened.entries(0, 1, reopened.last_index(0) + 1)}
        reopened.close()
        assert confirmed <= held  # every proposal answered as committed is on disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
