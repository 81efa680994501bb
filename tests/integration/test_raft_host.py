"""The Raft driver's I/O order, checked with a scripted stand-in for the core.

The stand-in is a one-node "group" that commits what it persisted: it is enough to see
that the host fsyncs before it sends, applies only committed entries, and batches the
persist work of many groups into one store commit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from warren.errors import PeerProtocolError
from warren.io.raft_host import ProposalFailed, RaftHost
from warren.store.raft_store import RaftStore

pytestmark = pytest.mark.timeout(30)


@dataclass
class Entry:
    term: int
    index: int
    kind: int
    data: bytes


@dataclass
class HardState:
    term: int
    vote: int
    commit: int


@dataclass
class Message:
    group: Any
    to: int
    index: int
    frm: int = 2

    def to_wire(self) -> list[Any]:
        return [self.group, self.index, "scripted"]


@dataclass
class Ready:
    entries: list[Entry]
    hard_state: HardState | None
    snapshot: None
    messages: list[Message]
    committed_entries: list[Entry]
    read_states: list[Any] = field(default_factory=list)


@dataclass
class ScriptedNode:
    """Appends proposals, acks them to peer 2 once persisted, commits them one ready later."""

    group: Any
    term: int = 1
    unstable: list[Entry] = field(default_factory=list)
    persisted_last: int = 0
    applied: int = 0
    log: list[Entry] = field(default_factory=list)
    ticks: int = 0
    stepped: list[Any] = field(default_factory=list)
    refuse: bool = False  # as a follower's core does
    needs_ticks: bool = True

    def peer_unreachable(self, node_id: int) -> None:
        pass

    def peer_reachable(self, node_id: int) -> None:
        pass

    def tick(self) -> None:
        self.ticks += 1

    def step(self, message: Any) -> None:
        self.stepped.append(message)

    def propose(self, data: bytes) -> int | None:
        if self.refuse:
            return None
        entry = Entry(self.term, len(self.log) + 1, 0, data)
        self.log.append(entry)
        self.unstable.append(entry)
        return entry.index

    def has_ready(self) -> bool:
        return bool(self.unstable) or self.applied < self.persisted_last

    def ready(self) -> Ready:
        committed = self.log[self.applied : self.persisted_last]
        acks = [Message(self.group, 2, e.index) for e in self.unstable]
        hs = HardState(self.term, 1, self.persisted_last) if self.unstable else None
        return Ready(list(self.unstable), hs, None, acks, committed)

    def advance(self, ready: Ready) -> None:
        if ready.entries:
            self.persisted_last = ready.entries[-1].index
            del self.unstable[: len(ready.entries)]
        if ready.committed_entries:
            self.applied = ready.committed_entries[-1].index


class Recorder:
    def __init__(self, store: RaftStore) -> None:
        self.store = store
        self.sent: list[tuple[int, Any, int]] = []  # (peer, wire, durable last index at send time)
        self.applied: list[tuple[Any, int, bytes]] = []

    def send(self, peer: int, wire: Any) -> None:
        group, _, _ = wire
        self.sent.append((peer, wire, self.store.last_index(group)))

    def apply(self, group: Any, index: int, data: bytes) -> None:
        # Applied entries are always durable first.
        assert self.store.last_index(group) >= index
        self.applied.append((group, index, data))


def decode(obj: Any) -> Any:
    if not (isinstance(obj, list) and len(obj) == 3):
        raise PeerProtocolError("not a message")
    return Message(obj[0], 1, obj[1])


@pytest.fixture
async def host(tmp_path: Path) -> Any:
    store = RaftStore(tmp_path, 64 * 1024 * 1024)
    recorder = Recorder(store)
    h = RaftHost(1, store, recorder.send, decode, recorder, tick_seconds=0.01)
    h.recorder = recorder  # type: ignore[attr-defined]
    yield h
    await h.stop()
    store.close()


async def test_proposals_are_persisted_before_acks_and_applied_after(host: Any) -> None:
    node = ScriptedNode("g")
    host.add_group("g", node)
    await host.start()
    indexes = await asyncio.gather(*(host.propose("g", f"p{i}".encode()) for i in range(20)))
    assert sorted(indexes) == list(range(1, 21))
    rec = host.recorder
    assert [data for _, _, data in rec.applied] == [f"p{i}".encode() for i in range(20)]
    assert len(rec.sent) == 20
    for _peer, (_group, index, _), durable in rec.sent:
        assert durable >= index, f"ack for {index} sent before it was durable ({durable})"
    assert host.store.entries("g", 1, 21)[0][0] == 1


async def test_many_groups_share_one_commit(host: Any) -> None:
    nodes = {g: ScriptedNode(g) for g in range(50)}
    for g, node in nodes.items():
        host.add_group(g, node)
    await host.start()
    await asyncio.gather(*(host.propose(g, b"x") for g in nodes))
    assert host.batched_groups >= 50
    assert host.batches < 25, f"{host.batches} commits for 50 groups: not batched"


async def test_ticks_reach_every_group(host: Any) -> None:
    nodes = [ScriptedNode(g) for g in range(3)]
    for node in nodes:
        host.add_group(node.group, node)
    await host.start()
    await asyncio.sleep(0.1)
    assert all(node.ticks >= 3 for node in nodes)


async def test_peer_messages_are_stepped_and_garbage_is_refused(host: Any) -> None:
    node = ScriptedNode("g")
    host.add_group("g", node)
    host.on_peer_message(2, ["g", 7, "scripted"])
    assert node.stepped == [Message("g", 1, 7)]
    with pytest.raises(PeerProtocolError):
        host.on_peer_message(2, "garbage")
    host.on_peer_message(2, ["nope", 1, "scripted"])  # a group not (or no longer) hosted: counted, dropped
    assert host.unknown_group_messages == 1
    host.on_peer_message(2, ["g", 8, "scripted"])  # the link and the other groups carry on
    assert node.stepped[-1] == Message("g", 1, 8)


async def test_proposal_to_an_unknown_group_or_a_refusing_node_fails(host: Any) -> None:
    with pytest.raises(ProposalFailed):
        await host.propose("missing", b"x")
    host.add_group("follower", ScriptedNode("follower", refuse=True))
    with pytest.raises(ProposalFailed, match="not the leader"):
        await host.propose("follower", b"x")
