from __future__ import annotations

from collections import Counter

import pytest

from warren.cluster.placement import home_node, queue_locator
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
