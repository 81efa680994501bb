"""Focused behaviour of the Raft core, on a small synchronous cluster of real nodes."""

from __future__ import annotations

import pytest

from tests.sim.planted import (
    AckBeforeFsync,
    CommitOldTerm,
    ReadWithoutQuorum,
    VoteWithoutLogCheck,
)
from tests.unit.raft.harness import Cluster
from warren.errors import PeerProtocolError
from warren.limits import Limits
from warren.raft.node import RaftNode, Role
from warren.raft.types import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    MsgType,
    message_from_wire,
)


def test_a_leader_is_elected_and_a_proposal_is_applied_everywhere() -> None:
    c = Cluster()
    leader = c.elect()
    c.propose(leader, b"x")
    c.tick(2)
    assert all(c.applied[n] == [b"x"] for n in c.nodes)


def test_pre_vote_keeps_an_isolated_follower_from_disrupting_the_leader() -> None:
    for pre_vote in (True, False):
        c = Cluster(pre_vote=pre_vote)
        leader = c.elect()
        term = c.nodes[leader].term
        other = next(n for n in c.nodes if n != leader)
        c.isolate(other)
        c.tick(100)
        c.heal()
        c.tick(3)
        if pre_vote:
            # its pre-votes failed, so its term never moved and the leader kept leading
            assert c.nodes[other].term == term
            assert c.leaders() == [leader] and c.nodes[leader].term == term
        else:  # the contrast: without pre-vote it campaigns and deposes the leader
            assert c.nodes[other].term > term + 1
            assert c.nodes[leader].term > term


def test_check_quorum_steps_an_isolated_leader_down() -> None:
    for check_quorum in (True, False):
        c = Cluster(check_quorum=check_quorum, pre_vote=check_quorum)
        leader = c.elect()
        c.isolate(leader)
        c.tick(25, only=(leader,))  # two election timeouts on the leader's clock
        if check_quorum:
            assert c.nodes[leader].role == Role.FOLLOWER
        else:
            assert c.nodes[leader].role == Role.LEADER


def test_leadership_transfer_hands_over_in_the_next_term() -> None:
    c = Cluster()
    leader = c.elect()
    c.propose(leader, b"a")
    term = c.nodes[leader].term
    target = next(n for n in c.nodes if n != leader)
    assert c.nodes[leader].transfer_leadership(target)
    c.settle()
    assert c.leaders() == [target]
    assert c.nodes[target].term == term + 1
    assert c.nodes[leader].propose(b"b") is None  # no longer leads
    c.propose(target, b"b")
    c.tick(2)
    assert all(c.applied[n] == [b"a", b"b"] for n in c.nodes)


def test_transfer_to_a_non_voter_is_refused() -> None:
    c = Cluster(learners=(4,))
    leader = c.elect()
    assert not c.nodes[leader].transfer_leadership(4)
    assert not c.nodes[leader].transfer_leadership(99)


def test_learner_receives_the_log_but_counts_only_once_promoted() -> None:
    c = Cluster(voters=(1, 2, 3), learners=(4,))
    leader = c.elect()
    assert 4 not in c.leaders()
    c.propose(leader, b"a")
    c.tick(2)
    assert c.applied[4] == [b"a"]
    # The leader plus the learner are not a majority of the voters: nothing commits.
    for n in (1, 2, 3):
        if n != leader:
            c.isolate(n)
    c.cut -= {(leader, 4), (4, leader)}
    before = c.nodes[leader].committed
    c.nodes[leader].propose(b"b")
    c.settle()
    assert c.nodes[leader].committed == before
    c.heal()
    c.tick(2)
    assert c.nodes[leader].role == Role.LEADER
    leader = c.leaders()[0]
    # Promote: the learner becomes a voter and can then lead.
    assert c.nodes[leader].propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, 4))
    c.tick(2)
    assert 4 in c.nodes[4].log.config().voters
    assert 4 in c.nodes[leader].log.config().voters
    assert c.nodes[leader].transfer_leadership(4)
    c.settle()
    assert c.leaders() == [4]


def test_read_index_answers_only_after_a_quorum_confirms_leadership() -> None:
    c = Cluster()
    leader = c.elect()
    c.propose(leader, b"a")
    committed = c.nodes[leader].committed
    c.nodes[leader].read_index(b"r1")
    c.settle()
    assert [(r.context, r.index, r.ok) for r in c.reads[leader]] == [(b"r1", committed, True)]
    # A follower's read goes through the leader.
    follower = next(n for n in c.nodes if n != leader)
    c.nodes[follower].read_index(b"r2")
    c.settle()
    assert [(r.context, r.index, r.ok) for r in c.reads[follower]] == [(b"r2", committed, True)]
    # Cut off from both followers, the leader cannot confirm: no answer, then a refusal
    # once check-quorum makes it step down.
    c.isolate(leader)
    c.nodes[leader].read_index(b"r3")
    c.settle()
    assert [r.context for r in c.reads[leader]] == [b"r1"]
    c.tick(25, only=(leader,))
    assert c.nodes[leader].role == Role.FOLLOWER
    assert [(r.context, r.ok) for r in c.reads[leader][1:]] == [(b"r3", False)]


def test_an_idle_group_quiesces_and_wakes_on_a_proposal() -> None:
    c = Cluster(quiesce_after_ticks=5)
    leader = c.elect()
    c.propose(leader, b"a")
    c.tick(10)
    assert c.nodes[leader].quiesced
    term = c.nodes[leader].term
    sent = len(c.sent)
    c.tick(100)  # many election timeouts: nobody heartbeats, nobody campaigns
    assert len(c.sent) == sent
    assert c.leaders() == [leader] and all(node.term == term for node in c.nodes.values())
    c.propose(leader, b"b")
    c.tick(2)
    assert not c.nodes[leader].quiesced
    assert all(c.applied[n] == [b"a", b"b"] for n in c.nodes)


def test_a_quiesced_follower_campaigns_once_told_the_leader_is_unreachable() -> None:
    c = Cluster(quiesce_after_ticks=5)
    leader = c.elect()
    c.tick(10)
    term = c.nodes[leader].term
    c.down.add(leader)
    c.tick(100)
    assert c.leaders() == []  # still quiesced: waiting for the driver's liveness signal
    for n, node in c.nodes.items():
        if n != leader:
            node.peer_unreachable(leader)
    new = c.elect()
    assert new != leader and c.nodes[new].term > term


def test_a_restarted_follower_of_a_quiesced_group_learns_the_leader_and_goes_quiet() -> None:
    c = Cluster(quiesce_after_ticks=5)
    leader = c.elect()
    c.propose(leader, b"a")
    c.tick(10)
    follower = next(n for n in c.nodes if n != leader)
    c.start(follower)  # restarted from its disk, quicker than node-level liveness noticed
    assert not c.nodes[follower].quiesced
    c.tick(60)  # its pre-vote meets the leader's lease; the leader answers "quiet"
    assert c.nodes[follower].quiesced and c.nodes[follower].leader == leader
    assert c.leaders() == [leader] and c.nodes[leader].quiesced
    sent = len(c.sent)
    c.tick(100)
    assert len(c.sent) == sent  # nobody campaigns again


def test_a_quiesced_leader_that_hears_a_peer_is_down_proves_its_quorum_or_steps_down() -> None:
    c = Cluster(quiesce_after_ticks=5)
    leader = c.elect()
    c.tick(10)
    assert c.nodes[leader].quiesced
    c.isolate(leader)
    for n in c.nodes:
        if n != leader:
            c.nodes[leader].peer_unreachable(n)
    assert not c.nodes[leader].quiesced
    c.tick(2 * 10, only=(leader,))  # one election timeout (10 ticks) and a margin
    assert c.nodes[leader].role != Role.LEADER  # check-quorum: no stale leader lingers


def test_a_leader_quiesces_without_waiting_for_an_unreachable_follower() -> None:
    c = Cluster(quiesce_after_ticks=5)
    leader = c.elect()
    down = next(n for n in c.nodes if n != leader)
    c.down.add(down)
    c.nodes[leader].peer_unreachable(down)
    c.propose(leader, b"a")  # committed by the other two; the down node lags
    c.tick(10)
    assert c.nodes[leader].quiesced
    c.down.discard(down)
    c.nodes[leader].peer_reachable(down)  # back: the leader wakes and catches it up
    assert not c.nodes[leader].quiesced
    c.tick(10)
    assert c.applied[down] == [b"a"] and c.nodes[leader].quiesced


def figure8(node_class: type[RaftNode] = RaftNode) -> Cluster:
    """The Raft paper's Figure 8 (3 nodes). Index 1 is committed everywhere. Node 1 holds
    index 2 from term 2, node 3 holds index 2 from term 3, node 2 lacks index 2. Node 1
    wins term 4 with node 2's vote and replicates its term-2 entry to node 2, but its own
    term-4 entry does not get through."""
    c = Cluster(limits=Limits(raft_max_append_entries=1), node_class=node_class)
    logs = {1: [(1, 1), (2, 2)], 2: [(1, 1)], 3: [(1, 1), (2, 3)]}
    for n, log in logs.items():
        c.disks[n].append([Entry(t, i, EntryKind.NORMAL, b"%d@%d" % (i, t)) for i, t in log])
        c.disks[n].save(HardState(term=3, vote=0, commit=1))
        c.start(n)
    c.cut |= {(1, 3), (3, 1)}
    # node 2 may refuse the leader's first probe (it lacks index 2), not take index 3
    c.drop = lambda m: (
        m.to == 2 and c.nodes[2].log.last_index() >= 2 and any(e.term == 4 for e in m.entries)
    )
    while c.nodes[1].role != Role.LEADER:
        c.tick(only=(1,))
    assert c.nodes[1].term == 4
    c.settle()
    assert c.nodes[2].log.term(2) == 2  # node 2 took the term-2 entry...
    assert c.nodes[2].log.last_index() == 2  # ...but not the term-4 one
    return c


def test_figure8_an_old_term_entry_is_not_committed_by_counting_replicas() -> None:
    c = figure8()
    assert c.nodes[1].committed == 1  # on a majority, but of an older term: not committed
    # Node 1 goes away; node 3 (last term 3) wins with node 2's vote and overwrites index 2.
    c.down.add(1)
    c.heal()
    while c.leaders() != [3]:
        c.tick(only=(2, 3))
    c.tick(2, only=(2, 3))
    assert c.nodes[2].log.term(2) == 3 and c.nodes[3].committed >= 2
    assert c.applied[2] == c.applied[3] == [b"1@1", b"2@3"]


def test_figure8_with_the_planted_bug_commits_what_is_later_overwritten() -> None:
    c = figure8(CommitOldTerm)
    assert c.nodes[1].committed == 2  # the bug: counted replicas of a term-2 entry
    c.down.add(1)
    c.heal()
    while c.leaders() != [3]:
        c.tick(only=(2, 3))
    assert c.nodes[3].log.term(2) == 3  # the "committed" entry is gone


@pytest.mark.parametrize(
    "wire",
    [
        [],
        [99] + [0] * 15,  # unknown type
        [True, "g", 1, 2, 1, 0, 0, 0, False, 0, b"", [], None, 0, b"", False],  # bool type
        [int(MsgType.APPEND), "g", 0, 2, 1, 0, 0, 0, False, 0, b"", [], None, 0, b"", False],
        [int(MsgType.APPEND), "g", 1, 2, -1, 0, 0, 0, False, 0, b"", [], None, 0, b"", False],
        [int(MsgType.APPEND), "g", 1, 2, 1, 0, 0, 0, 0, 0, b"", [], None, 0, b"", False],
        [int(MsgType.APPEND), "g", 1, 2, 1, 0, 0, 0, False, 0, b"", [[1, 1, 7, b""]], None]
        + [0, b"", False],  # unknown entry kind
        [int(MsgType.APPEND), "g", 1, 2, 1, 0, 0, 0, False, 0, b"", [[1, 2, 0, b""]], None]
        + [0, b"", False],  # entries do not follow the previous index
        [int(MsgType.SNAPSHOT), "g", 1, 2, 1, 0, 0, 0, False, 0, b"", [], None, 0, b"", False],
    ],
)
def test_malformed_peer_messages_are_refused(wire: list[object]) -> None:
    with pytest.raises(PeerProtocolError):
        message_from_wire(wire)


def test_wire_round_trip_keeps_every_field() -> None:
    c = Cluster()
    leader = c.elect()
    c.propose(leader, b"payload")
    assert c.sent
    for m in c.sent:
        assert message_from_wire(m.to_wire()) == m


def deposed_leader_reads(node_class: type[RaftNode] = RaftNode) -> list[tuple[int, bool]]:
    """A leader freezes (a long GC pause: no ticks, nothing received); the others elect a
    new leader and commit a write; the old one wakes up still believing it leads and is
    asked for a read before it has heard anything."""
    c = Cluster(node_class=node_class)
    old = c.elect()
    c.propose(old, b"a")
    c.down.add(old)
    new = c.elect()
    c.propose(new, b"b")
    stale_commit = c.nodes[old].committed
    assert c.nodes[new].committed > stale_commit
    c.down.discard(old)  # same process, same memory: not a restart
    assert c.nodes[old].role == Role.LEADER
    c.nodes[old].read_index(b"r")
    c.settle()
    return [(r.index, r.ok) for r in c.reads[old]]


def test_a_deposed_leader_does_not_answer_a_read_from_its_stale_state() -> None:
    assert deposed_leader_reads() == [(0, False)]  # it learned the new term and refused


def test_with_the_planted_bug_the_deposed_leader_answers_from_stale_state() -> None:
    [(index, ok)] = deposed_leader_reads(ReadWithoutQuorum)
    assert ok and index == 2  # its own stale commit point (no-op + "a"), missing "b"


def stale_node_campaigns(node_class: type[RaftNode] = RaftNode) -> Cluster:
    """Node 3 misses committed entries while down; then the leader goes away and node 3
    times out first and asks node 2 for its vote (no leader lease: node 2's clock is not
    running, so with check-quorum it would ignore node 3 as long as it heard no news)."""
    c = Cluster(node_class=node_class, check_quorum=False)
    leader = 1
    while c.leaders() != [leader]:
        c.tick(only=(leader,))
    c.down.add(3)
    c.propose(leader, b"a")
    c.propose(leader, b"b")
    assert c.nodes[1].committed == 3 and c.nodes[3].log.last_index() == 1
    c.down = {1}
    c.start(3)
    for _ in range(60):  # only node 3's clock runs: node 2 never campaigns itself
        c.tick(only=(3,))
    return c


def test_a_node_missing_committed_entries_cannot_win_an_election() -> None:
    c = stale_node_campaigns()
    assert c.leaders() == []
    assert c.nodes[2].log.term(3) == 1  # node 2 still holds what was committed


def test_with_the_planted_bug_a_stale_node_wins_and_committed_entries_are_lost() -> None:
    c = stale_node_campaigns(VoteWithoutLogCheck)
    assert c.leaders() == [3]
    c.tick(2, only=(3,))
    # both consider index 2 committed, with different entries there
    assert c.nodes[2].committed >= 2 and c.nodes[3].committed >= 2
    assert c.nodes[2].log.term(2) == 1 != c.nodes[3].log.term(2)


def early_messages(node_class: type[RaftNode] = RaftNode) -> set[MsgType]:
    c = Cluster(node_class=node_class)
    c.propose(c.elect(), b"a")
    c.tick(2)
    return {m.type for m in c.sent if m.may_send_before_persist}


def test_only_a_leaders_outgoing_log_traffic_may_leave_before_the_fsync() -> None:
    # votes and acknowledgements promise durable state: they wait for the fsync
    assert early_messages() == {MsgType.APPEND, MsgType.HEARTBEAT}
    assert MsgType.APPEND_RESP in early_messages(AckBeforeFsync)
