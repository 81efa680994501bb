"""The partition nemesis's shapes (Jepsen's): who still reaches whom."""

from __future__ import annotations

import pytest

from warren.cli.chaos.nemesis import describe_partition, partition_reach, partition_shapes
from warren.io.runtime import parse_loopback_users


def nodes(count: int) -> list[str]:
    return [f"n{i}" for i in range(1, count + 1)]


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6, 7])
def test_every_shape_is_symmetric_and_cuts_something(count: int) -> None:
    order = nodes(count)
    for shape in partition_shapes(count):
        reach = partition_reach(shape, order)
        assert set(reach) == set(order)
        for node, seen in reach.items():
            assert node in seen
            assert all(node in reach[other] for other in seen), (shape, reach)
        assert any(len(seen) < count for seen in reach.values()), shape


def test_isolate_leaves_the_first_node_alone_and_the_rest_together() -> None:
    reach = partition_reach("isolate", nodes(5))
    assert reach["n1"] == {"n1"}
    assert all(reach[n] == {"n2", "n3", "n4", "n5"} for n in nodes(5)[1:])
    assert describe_partition("isolate", reach) == "isolate n1 | n2 n3 n4 n5"


def test_halves_of_five_leave_two_without_a_majority() -> None:
    reach = partition_reach("halves", nodes(5))
    assert sorted(len(seen) for seen in reach.values()) == [2, 2, 3, 3, 3]


def test_the_bridge_sees_both_sides_which_do_not_see_each_other() -> None:
    reach = partition_reach("bridge", nodes(3))
    assert reach == {"n1": {"n1", "n2", "n3"}, "n2": {"n1", "n2"}, "n3": {"n1", "n3"}}
    assert describe_partition("bridge", reach) == "bridge n1 n2 | n1 n3"


@pytest.mark.parametrize("count", [5, 7])
def test_in_a_ring_every_node_sees_a_majority_and_no_two_the_same(count: int) -> None:
    reach = partition_reach("ring", nodes(count))
    assert all(len(seen) > count // 2 for seen in reach.values())
    assert len({frozenset(seen) for seen in reach.values()}) == count


def test_shapes_that_would_repeat_or_cut_nothing_are_left_out() -> None:
    assert partition_shapes(3) == ["isolate", "bridge"]  # halves of 3 is isolate; a ring of 3 is whole
    assert partition_shapes(5) == ["isolate", "halves", "bridge", "ring"]


def test_loopback_users_none_means_nobody() -> None:
    assert parse_loopback_users("guest") == ["guest"]
    assert parse_loopback_users("guest, admin") == ["guest", "admin"]
    assert parse_loopback_users("none") == [] and parse_loopback_users(["none"]) == []
    assert parse_loopback_users("") == []
