"""The stand-in Raft node (used until warren.raft lands), driven in-process over real stores.

Messages are delivered synchronously in rounds, in the host's order: persist the ready,
then deliver its messages, then advance.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from warren.errors import PeerProtocolError
from warren.io.raft_host import ProposalFailed, ready_to_write
from warren.io.raft_standin import LEADER, VOTE, Message, StandinNode, message_from_wire
from warren.limits import Limits
from warren.store.raft_store import RaftStore

MAP = 64 * 1024 * 1024


class Cluster:
    def __init__(self, tmp: Path, seed: int = 1) -> None:
        self.tmp = tmp
        self.stores = {i: RaftStore(tmp / f"n{i}", MAP) for i in (1, 2, 3)}
        self.rng = random.Random(seed)
        self.nodes = {i: self.build(i) for i in (1, 2, 3)}
        self.down: set[int] = set()
        self.applied: dict[int, list[tuple[int, bytes]]] = {i: [] for i in (1, 2, 3)}

    def build(self, i: int) -> StandinNode:
        return StandinNode(i, 0, [1, 2, 3], self.stores[i], self.rng, Limits())

    def round(self) -> None:
        inbox: list[Message] = []
        for i, node in self.nodes.items():
            if i in self.down:
                continue
            node.tick()
            if node.has_ready():
                ready = node.ready()
                write = ready_to_write(0, ready)
                if write is not None:
                    self.stores[i].persist_batch([write])
                inbox.extend(ready.messages)
                self.applied[i].extend(
                    (e.index, e.data) for e in ready.committed_entries if e.kind == 0
                )
                node.advance(ready)
        for message in inbox:
            if message.to not in self.down:
                self.nodes[message.to].step(message_from_wire(message.to_wire()))

    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            self.round()

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.role == LEADER and i not in self.down]

    def elect(self) -> int:
        for _ in range(500):
            self.round()
            if len(self.leaders()) == 1:
                return self.leaders()[0]
        raise AssertionError("no leader elected")


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    c = Cluster(tmp_path)
    yield c
    for store in c.stores.values():
        store.close()


def test_one_leader_replicates_and_every_node_applies_the_same_entries(cluster: Cluster) -> None:
    leader = cluster.elect()
    for i in range(30):
        cluster.nodes[leader].propose(f"e{i}".encode())
        cluster.round()
    cluster.run(20)
    expected = [f"e{i}".encode() for i in range(30)]
    for i in (1, 2, 3):
        assert [data for _, data in cluster.applied[i]] == expected
    with pytest.raises(ProposalFailed, match="not the leader"):
        follower = next(i for i in (1, 2, 3) if i != leader)
        cluster.nodes[follower].propose(b"x")


def test_new_leader_keeps_committed_entries_and_old_leader_rejoins(cluster: Cluster) -> None:
    leader = cluster.elect()
    for i in range(10):
        cluster.nodes[leader].propose(f"a{i}".encode())
    cluster.run(10)
    cluster.down.add(leader)
    new_leader = cluster.elect()
    assert new_leader != leader and cluster.nodes[new_leader].term > cluster.nodes[leader].term
    cluster.nodes[new_leader].propose(b"b0")
    cluster.run(10)
    # The old leader restarts from its store alone and catches up.
    cluster.nodes[leader] = cluster.build(leader)
    cluster.down.discard(leader)
    cluster.applied[leader] = []
    cluster.run(60)
    expected = [f"a{i}".encode() for i in range(10)] + [b"b0"]
    for i in (1, 2, 3):
        assert [d for _, d in cluster.applied[i]][-11:] == expected
    assert [d for _, d in cluster.applied[leader]] == expected


def test_vote_is_refused_to_a_candidate_with_a_shorter_log(cluster: Cluster) -> None:
    leader = cluster.elect()
    cluster.nodes[leader].propose(b"x")
    cluster.run(5)
    voter = cluster.nodes[leader]
    stale = Message(VOTE, 0, 9, leader, voter.term + 1, [0, 0])
    voter.step(stale)
    reply = voter.ready().messages[-1]
    assert reply.body == [False] and voter.vote == 0


def test_restart_restores_term_vote_and_log(cluster: Cluster, tmp_path: Path) -> None:
    leader = cluster.elect()
    for _ in range(5):
        cluster.nodes[leader].propose(b"p")
    cluster.run(10)
    before = cluster.nodes[leader]
    again = cluster.build(leader)
    assert (again.term, again.vote, again.last_index) == (
        before.term,
        before.vote,
        before.last_index,
    )
    assert again.commit >= 1


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [],
        [1, 0, 1, 2, 3],
        [99, 0, 1, 2, 3, []],
        [3, 0, 1, 2, 3, [0, 0, "x", 0]],
        [1, 0, "a", 2, 3, [1, 1]],
    ],
)
def test_malformed_messages_are_protocol_errors(garbage: Any) -> None:
    with pytest.raises(PeerProtocolError):
        message_from_wire(garbage)
