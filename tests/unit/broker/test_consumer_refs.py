"""The queue's delivery decision is a function of data, and its commands carry no live objects.

A consumer is known by a ``ConsumerRef`` (ints); ``take_deliveries`` takes the set of refs
whose channels may receive now instead of calling back into a session. So a ``Consumer`` or
a ``Delivery`` encodes as it is (msgpack, the log-entry and peer-message codec), and the
same inputs give the same deliveries on any replica.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from warren.broker.queue import MANAGEMENT_REF, Consumer, ConsumerRef, QueueState

from .helpers import msg

A, B = ConsumerRef(1, 1), ConsumerRef(2, 7)


def _queue(n: int) -> QueueState:
    queue = QueueState("q")
    for i in range(n):
        queue.enqueue(msg(b"m%d" % i), 0)
    return queue


def _round_trip(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value), use_list=False)


def test_only_eligible_refs_receive_in_order_within_their_prefetch() -> None:
    queue = _queue(5)
    queue.add_consumer(Consumer("a", A, prefetch=2))
    queue.add_consumer(Consumer("b", B))
    assert sorted(queue.candidate_refs()) == [A, B]

    assert queue.take_deliveries(0, set()) == []  # nobody may receive: nothing moves
    assert queue.messages_ready == 5

    got = queue.take_deliveries(0, {A})
    assert [(d.consumer.tag, d.message.body) for d in got] == [("a", b"m0"), ("a", b"m1")]
    assert queue.candidate_refs() == [B]  # A is at its prefetch: the caller need not judge it
    assert queue.take_deliveries(0, {A}) == []  # eligible, but per-consumer prefetch applies

    got = queue.take_deliveries(0, {A, B})
    assert [(d.consumer.tag, d.message.body) for d in got] == [("b", b"m2"), ("b", b"m3"), ("b", b"m4")]
    assert queue.candidate_refs() == []  # nothing ready


def test_the_same_data_gives_the_same_decision() -> None:
    def run() -> list[tuple[str, int, bool]]:
        queue = _queue(6)
        queue.add_consumer(Consumer("a", A, prefetch=1))
        queue.add_consumer(Consumer("b", B, prefetch=3, priority=1))
        first = queue.take_deliveries(0, {A, B}, limit=2)
        queue.requeue([first[0].msg_id])
        rest = queue.take_deliveries(0, frozenset({A, B}))
        return [(d.consumer.tag, d.msg_id, d.redelivered) for d in first + rest]

    assert run() == run() == [("b", 1, False), ("b", 2, False), ("b", 1, True), ("b", 3, False), ("a", 4, False)]


def test_consumers_and_deliveries_are_plain_data() -> None:
    queue = _queue(1)
    consumer = Consumer("a", A, prefetch=5, priority=2)
    queue.add_consumer(consumer)
    (delivery,) = queue.take_deliveries(0, {A})

    fields = dataclasses.astuple(consumer)
    assert _round_trip(fields) == fields == ("a", (1, 1), 5, 2, False, False, 1)
    assert ConsumerRef(*_round_trip(consumer.owner)) == A
    fields = dataclasses.astuple(delivery)  # the old Delivery held its QueueState: msgpack refused it
    assert _round_trip(fields) == fields
    assert fields[0][1] == A and fields[1:3] == (1, ("", "q", b"m0", None, {}, False, None, None, 2, 0))


def test_release_owner_and_get_work_with_refs() -> None:
    queue = _queue(4)
    queue.add_consumer(Consumer("a", A, prefetch=1))
    queue.add_consumer(Consumer("b", B, prefetch=1))
    assert len(queue.take_deliveries(0, {A, B})) == 2
    got = queue.get(0, no_ack=False, owner=A)
    api = queue.get(0, no_ack=False, owner=MANAGEMENT_REF)
    assert got is not None and api is not None and queue.messages_ready == 0
    assert queue.release_owner(A) == 2  # its delivery and its basic.get go back
    assert [c.tag for c in queue.consumers] == ["b"]
    assert queue.release_owner(MANAGEMENT_REF) == 1
    assert queue.messages_ready == 3 and queue.messages_unacknowledged == 1


def _judged(queue: QueueState, eligible: set[ConsumerRef], reach: int) -> set[ConsumerRef]:
    """What the node passes: the candidates' eligible refs, in order, until ``reach`` are held."""
    judged: set[ConsumerRef] = set()
    for ref in queue.candidate_refs():
        if len(judged) >= reach:
            break
        if ref in eligible:
            judged.add(ref)
    return judged


# few ready messages and many channels: where stopping early could change the decision
_consumers = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 2), st.booleans()),
                      min_size=1, max_size=7)


@settings(max_examples=400, deadline=None)
@given(_consumers, st.integers(0, 6), st.integers(0, 6), st.frozensets(st.integers(0, 5)),
       st.booleans(), st.integers(0, 3))
def test_judging_candidates_only_as_far_as_the_ready_messages_reach_decides_the_same(
    consumers: list[tuple[int, int, int, bool]], ready: int, taken_first: int, eligible_ids: frozenset[int],
    single_active: bool, max_priority: int,
) -> None:
    """The node judges ``candidate_refs()`` in order and stops once it holds messages_ready
    eligible refs: the queue must decide exactly as with every eligible ref."""
    refs = [ConsumerRef(s, c) for s in (1, 2) for c in (1, 2, 3)]
    arguments: dict[str, Any] = {"x-max-priority": max_priority} if max_priority else {}
    if single_active:
        arguments["x-single-active-consumer"] = True
    queue = QueueState("q", arguments=arguments)
    for i, (ref, prefetch, priority, no_ack) in enumerate(consumers):
        queue.add_consumer(Consumer(f"c{i}", refs[ref], prefetch, priority, False, no_ack))
    for i in range(taken_first + ready):
        queue.enqueue(msg(b"m%d" % i, priority=i % 3), 0)
    queue.take_deliveries(0, set(refs), limit=taken_first)  # some consumers at their prefetch
    eligible = {refs[i] for i in eligible_ids}
    twin = copy.deepcopy(queue)
    judged = _judged(queue, eligible, queue.messages_ready)
    assert judged <= eligible
    full = [(d.consumer.tag, d.msg_id) for d in queue.take_deliveries(0, eligible)]
    assert [(d.consumer.tag, d.msg_id) for d in twin.take_deliveries(0, judged)] == full
