from __future__ import annotations

from warren.broker.queue import Consumer, ConsumerRef, QueueState

from .helpers import msg


def bodies(deliveries) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [d.message.body for d in deliveries]


def filled(n: int, **arguments: object) -> QueueState:
    queue = QueueState("q", arguments=dict(arguments))
    for i in range(n):
        queue.enqueue(msg(b"m%d" % i), 0)
    return queue


def test_fifo_delivery_ack_and_counts() -> None:
    queue = filled(3)
    assert (queue.messages_ready, queue.message_bytes) == (3, 6)
    consumer = Consumer("c", "ch1")
    queue.add_consumer(consumer)
    deliveries = queue.take_deliveries(0)
    assert bodies(deliveries) == [b"m0", b"m1", b"m2"]
    assert [d.redelivered for d in deliveries] == [False] * 3
    assert (queue.messages_ready, queue.messages_unacknowledged, consumer.unacked) == (0, 3, 3)
    assert queue.ack([deliveries[0].msg_id, deliveries[1].msg_id]) == 2
    assert (queue.messages_unacknowledged, queue.message_bytes) == (1, 2)


def test_prefetch_limits_unacked_per_consumer() -> None:
    queue = filled(5)
    consumer = Consumer("c", "ch1", prefetch=2)
    queue.add_consumer(consumer)
    first = queue.take_deliveries(0)
    assert bodies(first) == [b"m0", b"m1"]
    assert queue.take_deliveries(0) == []
    queue.ack([first[0].msg_id])
    assert bodies(queue.take_deliveries(0)) == [b"m2"]


def test_round_robin_among_equal_priority_and_higher_priority_first() -> None:
    queue = filled(4)
    a, b = Consumer("a", "ch"), Consumer("b", "ch")
    queue.add_consumer(a)
    queue.add_consumer(b)
    assert [d.consumer.tag for d in queue.take_deliveries(0)] == ["a", "b", "a", "b"]
    queue = filled(4)
    low, high = Consumer("low", "ch", priority=0), Consumer("high", "ch", prefetch=3, priority=5)
    queue.add_consumer(low)
    queue.add_consumer(high)
    assert [d.consumer.tag for d in queue.take_deliveries(0)] == ["high", "high", "high", "low"]


def test_a_consumer_whose_ref_is_not_eligible_is_skipped() -> None:
    queue = filled(2)
    blocked, open_ = ConsumerRef(1, 1), ConsumerRef(1, 2)
    queue.add_consumer(Consumer("a", blocked))
    queue.add_consumer(Consumer("b", open_))
    deliveries = queue.take_deliveries(0, {open_})
    assert [d.consumer.tag for d in deliveries] == ["b", "b"]


def test_requeue_restores_original_order_flagged_redelivered() -> None:
    queue = filled(4)
    queue.add_consumer(Consumer("c", "ch", prefetch=3))
    d = queue.take_deliveries(0)
    queue.requeue([d[2].msg_id, d[0].msg_id])
    assert [(m.body, r) for _, m, r in queue.ready_messages()] == [(b"m0", True), (b"m2", True), (b"m3", False)]
    # m1 still unacked; requeue it later: it goes back between m0 and m2
    queue.cancel_consumer("c")
    queue.requeue([d[1].msg_id])
    assert [m.body for _, m, _ in queue.ready_messages()] == [b"m0", b"m1", b"m2", b"m3"]


def test_no_ack_consumer_settles_on_delivery() -> None:
    queue = filled(2)
    queue.journal = []
    queue.add_consumer(Consumer("c", "ch", no_ack=True, prefetch=1))
    assert len(queue.take_deliveries(0)) == 2  # prefetch does not apply without acks
    assert queue.messages == 0 and [added for added, _ in queue.journal] == [False, False]


def test_basic_get_with_and_without_ack() -> None:
    queue = filled(2)
    first = queue.get(0, no_ack=False)
    assert first is not None and first.message.body == b"m0" and first.message_count == 1
    assert queue.messages_unacknowledged == 1
    second = queue.get(0, no_ack=True)
    assert second is not None and second.message_count == 0 and queue.messages_unacknowledged == 1
    assert queue.get(0, no_ack=True) is None
    queue.requeue([first.msg_id])
    again = queue.get(0, no_ack=True)
    assert again is not None and again.redelivered


def test_release_owner_cancels_its_consumers_and_requeues_its_messages() -> None:
    queue = filled(3)
    queue.add_consumer(Consumer("a", "ch1", prefetch=1))
    queue.add_consumer(Consumer("b", "ch2", prefetch=1))
    queue.take_deliveries(0)
    got = queue.get(0, no_ack=False, owner="ch1")
    assert got is not None
    assert queue.release_owner("ch1") == 2
    assert [c.tag for c in queue.consumers] == ["b"]
    assert (queue.messages_ready, queue.messages_unacknowledged) == (2, 1)


def test_exclusive_consumer() -> None:
    import pytest

    from warren.errors import AMQPError, ReplyCode

    queue = filled(0)
    queue.add_consumer(Consumer("a", "ch", exclusive=True))
    with pytest.raises(AMQPError) as info:
        queue.add_consumer(Consumer("b", "ch"))
    assert (info.value.code, info.value.text) == (ReplyCode.ACCESS_REFUSED, "queue 'q' in vhost '/' in exclusive use")
    queue.cancel_consumer("a")
    queue.add_consumer(Consumer("b", "ch"))
    with pytest.raises(AMQPError):
        queue.add_consumer(Consumer("c", "ch", exclusive=True))


def test_journal_records_entries_and_exits() -> None:
    queue = QueueState("q")
    queue.journal = []
    m = msg(b"a")
    queue.enqueue(m, 0)
    queue.add_consumer(Consumer("c", "ch"))
    (d,) = queue.take_deliveries(0)
    queue.requeue([d.msg_id])
    assert queue.journal == [(True, m)]
    (d,) = queue.take_deliveries(0)
    queue.ack([d.msg_id])
    assert queue.journal == [(True, m), (False, m)]


def test_restore_message_is_redelivered_and_keeps_seq() -> None:
    queue = QueueState("q", arguments={"x-max-priority": 5})
    queue.restore_message("ex", "rk", b"\x00\x00", b"low", 11)
    queue.restore_message("ex", "rk", None, b"high", 12, props={"priority": 4})
    got = queue.get(0, no_ack=True)
    assert got is not None and got.message.body == b"high" and got.message.seq == 12 and got.redelivered
