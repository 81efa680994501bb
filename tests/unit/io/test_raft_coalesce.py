"""The host merges a ready's consecutive appends to one peer: checked with real core nodes."""

from __future__ import annotations

import random
from typing import Any

from warren.io.raft_wire import coalesce_appends
from warren.raft.node import RaftNode
from warren.raft.storage import MemoryStorage
from warren.raft.types import Config, Entry, EntryKind, Message, MsgType, message_from_wire

VOTERS = (1, 2, 3)
BIG = 1 << 30


class Group:
    """Three core nodes on in-memory storage, their messages passed as wire lists through
    ``coalesce_appends`` (or sent one by one), in the host's persist-then-send order."""

    def __init__(self, coalesce: bool) -> None:
        self.coalesce = coalesce
        self.storage = {i: MemoryStorage(Config(frozenset(VOTERS))) for i in VOTERS}
        self.nodes = {
            i: RaftNode(i, "g", self.storage[i], random.Random(i), voters=VOTERS) for i in VOTERS
        }
        self.sent: list[Any] = []  # every wire message, in order

    def settle(self) -> None:
        """Run readies and deliver messages until nothing moves."""
        moved = True
        while moved:
            moved = False
            for i, node in self.nodes.items():
                if not node.has_ready():
                    continue
                moved = True
                rd = node.ready()
                if rd.entries:
                    self.storage[i].append(rd.entries)
                if rd.hard_state is not None:
                    self.storage[i].save(rd.hard_state)
                if self.coalesce:
                    out = coalesce_appends(rd.messages, BIG, BIG)
                else:
                    out = [(m.to, m.to_wire()) for m in rd.messages]
                node.advance(rd)
                for to, wire in out:
                    self.sent.append(wire)
                    self.nodes[to].step(message_from_wire(wire))

    def elect(self) -> RaftNode:
        while True:
            for node in self.nodes.values():
                node.tick()
            self.settle()
            leaders = [n for n in self.nodes.values() if n.status()["role"] == "leader"]
            if leaders:
                return leaders[0]


def appends(wires: list[Any]) -> list[Any]:
    return [w for w in wires if w[0] == MsgType.APPEND and w[11]]


def test_a_burst_of_proposals_leaves_as_one_append_per_follower_and_commits_the_same() -> None:
    results = {}
    for coalesce in (False, True):
        group = Group(coalesce)
        leader = group.elect()
        group.sent.clear()
        for n in range(50):
            assert leader.propose(b"p%d" % n) is not None
        group.settle()  # the commit reaches the followers at once, in an empty append
        last = leader.log.last_index()
        for node in group.nodes.values():
            assert node.committed == last
        logs = {i: s.entries(1, s.last_index() + 1) for i, s in group.storage.items()}
        assert logs[1] == logs[2] == logs[3]
        acks = [w for w in group.sent if w[0] == MsgType.APPEND_RESP]
        notices = [w for w in group.sent if w[0] == MsgType.APPEND and not w[11]]
        results[coalesce] = (len(appends(group.sent)), len(notices), len(acks), logs[1])
    separate, merged = results[False], results[True]
    # the core sends one append per follower for all proposals made between two readies,
    # and the host's merging keeps it so; then one empty append per follower carries the
    # commit; each append is answered
    assert separate[:3] == (2, 2, 4)
    assert merged[:3] == (2, 2, 4)
    assert merged[3] == separate[3]


def msg(kind: MsgType, to: int, index: int, n: int, term: int = 1, commit: int = 0) -> Message:
    entries = [Entry(term, i, EntryKind.NORMAL, b"x" * 10) for i in range(index + 1, index + 1 + n)]
    return Message(kind, "g", 1, to, term, log_term=term, index=index, commit=commit, entries=entries)


def test_only_continuing_appends_of_one_term_to_one_peer_merge_and_order_is_kept() -> None:
    out = coalesce_appends(
        [
            msg(MsgType.APPEND, 2, 0, 1, commit=0),
            msg(MsgType.APPEND, 3, 0, 1),
            msg(MsgType.APPEND, 2, 1, 2, commit=1),  # continues peer 2's: merged
            msg(MsgType.HEARTBEAT, 3, 0, 0),  # peer 3's next append must stay after this
            msg(MsgType.APPEND, 3, 1, 1),
            msg(MsgType.APPEND, 2, 5, 1),  # a gap: not merged
            msg(MsgType.APPEND, 2, 6, 1, term=2),  # another term: not merged
        ],
        BIG,
        BIG,
    )
    summary = [(to, w[0], w[6], [e[1] for e in w[11]], w[7]) for to, w in out]
    assert summary == [
        (2, MsgType.APPEND, 0, [1, 2, 3], 1),
        (3, MsgType.APPEND, 0, [1], 0),
        (3, MsgType.HEARTBEAT, 0, [], 0),
        (3, MsgType.APPEND, 1, [2], 0),
        (2, MsgType.APPEND, 5, [6], 0),
        (2, MsgType.APPEND, 6, [7], 0),
    ]
    for _, wire in out:
        message_from_wire(wire)  # still valid messages


def test_merges_stop_at_the_entry_and_byte_caps() -> None:
    burst = [msg(MsgType.APPEND, 2, i, 1) for i in range(10)]  # 10 bytes of data each
    assert [len(w[11]) for _, w in coalesce_appends(burst, 4, BIG)] == [4, 4, 2]
    assert [len(w[11]) for _, w in coalesce_appends(burst, BIG, 35)] == [3, 3, 3, 1]
