"""A follower with a long divergent tail is repaired in a few round trips, not one per entry."""

from __future__ import annotations

from tests.unit.raft.harness import Cluster
from warren.raft.node import Role
from warren.raft.types import Message, MsgType


def _diverge(tail: int) -> tuple[Cluster, int, int]:
    """Leader 1 appends ``tail`` entries it cannot commit (isolated); 2 and 3 commit ``tail``
    others at the same indexes in a later term, and hand the leadership over so the leader
    that meets the old one again starts probing at the end of its log (as any leader elected
    after the divergence does). Returns (cluster, old leader, current leader)."""
    cluster = Cluster(election_ticks=10, heartbeat_ticks=1, seed=3)
    old = cluster.elect()
    cluster.propose(old, b"common")
    cluster.isolate(old)
    for i in range(tail):
        assert cluster.nodes[old].propose(f"lost-{i}".encode()) is not None
    cluster.settle()
    others = tuple(n for n in cluster.nodes if n != old)
    new = None
    for _ in range(200):
        cluster.tick(only=others)
        leaders = [n for n in cluster.leaders() if n != old]
        if leaders:
            new = leaders[0]
            break
    assert new is not None
    for i in range(tail):
        cluster.nodes[new].propose(f"kept-{i}".encode())
    cluster.settle()
    third = next(n for n in others if n != new)
    assert cluster.nodes[new].transfer_leadership(third)
    for _ in range(50):
        cluster.tick(only=others)
        if third in cluster.leaders():
            break
    assert third in cluster.leaders()
    return cluster, old, third


def test_a_divergent_tail_of_1000_needs_few_rejected_appends() -> None:
    cluster, old, new = _diverge(1000)
    cluster.sent.clear()
    cluster.heal()
    for _ in range(50):
        for node in cluster.nodes.values():
            node.tick()
        cluster.settle(rounds=5000)  # room for one round trip per entry, to count them
        if cluster.applied[old][-1:] == [b"kept-999"]:
            break
    assert cluster.applied[old] == cluster.applied[new]
    assert b"lost-0" not in cluster.applied[old]
    rejected = [m for m in cluster.sent if m.type == MsgType.APPEND_RESP and m.reject and m.frm == old]
    assert len(rejected) <= 3, f"{len(rejected)} rejected appends to repair a tail of 1000"


def test_a_pre_candidate_refused_by_a_quorum_stops_campaigning_at_once() -> None:
    cluster = Cluster(election_ticks=10, heartbeat_ticks=1, seed=5)
    cluster.down |= {2, 3}
    node = cluster.nodes[1]
    for _ in range(100):
        node.tick()
        if node.role == Role.PRE_CANDIDATE:
            break
    assert node.role == Role.PRE_CANDIDATE
    # what a voter whose log is ahead answers (RaftNode._on_vote): a refusal at its own term,
    # which is the pre-candidate's term, not the term it asked for
    for voter in (2, 3):
        node.step(Message(MsgType.PRE_VOTE_RESP, "g", voter, 1, node.term, reject=True))
    assert node.role == Role.FOLLOWER
