from __future__ import annotations

from collections import Counter

import pytest

from warren.cluster.placement import home_node, leader_moves, queue_locator, reconciled_members
from warren.errors import AMQPError, ReplyCode

MEMBERS = ["warren@a", "warren@b", "warren@c"]


def test_client_local_and_exclusive_stay_on_the_declaring_node() -> None:
    assert home_node("/", "q", "client-local", "warren@b", MEMBERS) == "warren@b"
    assert {home_node("/", f"q{i}", "balanced", "warren@c", MEMBERS, exclusive=True)
            for i in range(50)} == {"warren@c"}


def test_balanced_spreads_queues_and_every_node_agrees() -> None:
    homes = [home_node("/", f"q{i}", "balanced", "warren@a", MEMBERS) for i in range(3000)]
    assert homes == [home_node("/", f"q{i}", "balanced", "warren@b", list(reversed(MEMBERS)))
                     for i in range(3000)]
    spread = Counter(homes)
    assert set(spread) == set(MEMBERS)
    assert min(spread.values()) > 600  # 1,000 each when even; 150 points per member keep it near


def test_a_new_member_takes_queues_only_for_itself() -> None:
    before = {i: home_node("/", f"q{i}", "balanced", "warren@a", MEMBERS) for i in range(2000)}
    after = {i: home_node("/", f"q{i}", "balanced", "warren@a", [*MEMBERS, "warren@d"]) for i in range(2000)}
    moved = [i for i in before if before[i] != after[i]]
    assert moved and all(after[i] == "warren@d" for i in moved)
    assert len(moved) < 2000 * 0.4


def test_the_locator_comes_from_the_argument_then_the_policy() -> None:
    assert queue_locator({}, None) == "client-local"
    assert queue_locator({}, "balanced") == "balanced"
    assert queue_locator({"x-queue-leader-locator": "client-local"}, "balanced") == "client-local"
    with pytest.raises(AMQPError) as refused:
        queue_locator({"x-queue-leader-locator": "random"}, None)
    assert refused.value.code == ReplyCode.PRECONDITION_FAILED


def test_reconciled_members_grow_to_size_and_replace_the_gone() -> None:
    cluster = ["a", "b", "c", "d"]
    grown = reconciled_members("/", "q", ["a"], 3, cluster, cluster)
    assert grown is not None and grown[0] == "a" and len(set(grown)) == 3
    assert reconciled_members("/", "q", list(grown), 3, cluster, cluster) is None  # already there
    # capped at the cluster's size; only alive nodes are added
    assert reconciled_members("/", "q", ["a"], 5, ["a", "b"], ["a"]) is None
    assert reconciled_members("/", "q", ["a"], 5, ["a", "b"], ["a", "b"]) == ("a", "b")
    # a forgotten member goes even with nothing to replace it
    assert reconciled_members("/", "q", ["a", "x", "b"], 3, ["a", "b"], ["a", "b"]) == ("a", "b")
    # a member down too long gives way to an alive non-member
    replaced = reconciled_members("/", "q", ["a", "b", "c"], 3, cluster, ["a", "c", "d"], replaceable=["b"])
    assert replaced == ("a", "c", "d")
    # ...but stays while there is no one to take its place
    assert reconciled_members("/", "q", ["a", "b", "c"], 3, cluster[:3], ["a", "c"], replaceable=["b"]) is None
    # never empties a queue
    assert reconciled_members("/", "q", ["x"], 3, ["a"], []) is None


def test_leader_moves_balance_leaders_over_the_alive_members() -> None:
    everyone = ["a", "b", "c"]
    queues = [(f"q{i}", "a", everyone) for i in range(6)]
    moves = leader_moves(queues, everyone)
    after = {key: leader for key, leader, _ in queues} | dict(moves)
    assert sorted(list(after.values()).count(n) for n in everyone) == [2, 2, 2]
    assert leader_moves([(k, after[k], everyone) for k, _, _ in queues], everyone) == []  # balanced: stays
    # a down node gets nothing; a queue whose only other member is down stays
    moves = dict(leader_moves(queues + [("solo", "a", ["a", "c"])], ["a", "b"]))
    assert "c" not in moves.values() and "solo" not in moves and len(moves) == 3
