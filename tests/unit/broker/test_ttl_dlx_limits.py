from __future__ import annotations

from datetime import UTC, datetime

import pytest

from warren.broker.message import parse_expiration
from warren.broker.queue import Consumer, QueueState
from warren.broker.vhost import VirtualHost
from warren.errors import AMQPError, ReplyCode

from .helpers import msg


def ready_bodies(queue: QueueState) -> list[bytes | None]:
    return [m.body for _, m, _ in queue.ready_messages()]


# ---- TTL ----------------------------------------------------------------------------


def test_queue_ttl_expires_messages_at_the_head() -> None:
    queue = QueueState("q", arguments={"x-message-ttl": 100})
    queue.enqueue(msg(b"old"), 0)
    queue.enqueue(msg(b"new"), 50)
    assert queue.expire(100) == 0  # expired only after the TTL has fully passed
    assert queue.expire(101) == 1
    assert ready_bodies(queue) == [b"new"]
    assert queue.get(151, no_ack=True) is None


def test_per_message_expiration_and_the_lower_of_both_applies() -> None:
    queue = QueueState("q", arguments={"x-message-ttl": 1000})
    queue.enqueue(msg(b"short", expiration="10"), 0)
    queue.enqueue(msg(b"long", expiration="5000"), 0)
    queue.add_consumer(Consumer("c", "ch"))
    assert [d.message.body for d in queue.take_deliveries(11)] == [b"long"]


def test_expired_message_behind_a_live_one_waits_for_the_head_as_in_rabbitmq() -> None:
    queue = QueueState("q")
    queue.enqueue(msg(b"forever"), 0)
    queue.enqueue(msg(b"brief", expiration="1"), 0)
    assert queue.expire(10) == 0 and queue.messages_ready == 2
    queue.get(10, no_ack=True)
    assert queue.expire(10) == 1 and queue.messages_ready == 0


def test_requeued_message_keeps_its_original_deadline() -> None:
    queue = QueueState("q", arguments={"x-message-ttl": 100})
    queue.enqueue(msg(b"a"), 0)
    got = queue.get(50, no_ack=False)
    assert got is not None
    queue.requeue([got.msg_id])
    assert queue.expire(101) == 1


@pytest.mark.parametrize(
    ("value", "term"),
    [("abc", "no_integer"), ("-5", "{value_negative,-5}"), ("10x", '{leftover_string,"x"}')],
)
def test_invalid_expiration_is_406(value: str, term: str) -> None:
    with pytest.raises(AMQPError) as info:
        msg(expiration=value)
    assert (info.value.code, info.value.text) == (ReplyCode.PRECONDITION_FAILED, f"invalid expiration '{value}': {term}")
    assert parse_expiration("0") == 0


def test_unused_queue_expires_after_x_expires() -> None:
    vhost = VirtualHost("/")
    queue, _ = vhost.declare_queue("q", arguments={"x-expires": 1000}, now_ms=0)
    assert vhost.expire(999) == [] and "q" in vhost.queues
    queue.add_consumer(Consumer("c", "ch"))
    vhost.expire(5000)
    assert "q" in vhost.queues  # a consumer keeps it alive
    queue.cancel_consumer("c")
    vhost.expire(6000)  # idle period starts
    vhost.declare_queue("q", arguments={"x-expires": 1000}, now_ms=6500)  # a redeclare restarts it
    vhost.expire(7000)
    assert "q" in vhost.queues
    assert vhost.expire(7500) == [queue]
    assert queue.deleted and "q" not in vhost.queues and vhost.take_deleted() == [queue]


# ---- dead-lettering -----------------------------------------------------------------


@pytest.fixture
def dlx_vhost() -> VirtualHost:
    vhost = VirtualHost("/")
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("dead")
    vhost.bind_queue("dead", "dlx", "")
    return vhost


def test_rejected_message_is_dead_lettered_with_x_death(dlx_vhost: VirtualHost) -> None:
    vhost = dlx_vhost
    work, _ = vhost.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx"})
    vhost.publish(msg(b"job", routing_key="work", expiration="60000", headers={"h": 1}), 1_700_000_000_123)
    got = work.get(0, no_ack=False)
    assert got is not None
    changed = vhost.reject(work, [got.msg_id], 1_700_000_005_999)
    assert changed == [vhost.queues["dead"]]
    dead = vhost.queues["dead"].get(0, no_ack=True)
    assert dead is not None
    message = dead.message
    assert message.properties is None and "expiration" not in message.props
    assert message.exchange == "dlx" and message.routing_key == "work"
    assert message.props["headers"] == {
        "h": 1,
        "x-death": [{
            "count": 1, "reason": "rejected", "queue": "work",
            "time": datetime.fromtimestamp(1_700_000_005, tz=UTC),
            "exchange": "", "routing-keys": ["work"], "original-expiration": "60000",
        }],
        "x-first-death-reason": "rejected",
        "x-first-death-queue": "work",
        "x-first-death-exchange": "",
    }
    assert work.messages == 0


def test_reject_without_dlx_drops(dlx_vhost: VirtualHost) -> None:
    work, _ = dlx_vhost.declare_queue("plain")
    dlx_vhost.publish(msg(routing_key="plain"), 0)
    got = work.get(0, no_ack=False)
    assert got is not None
    assert dlx_vhost.reject(work, [got.msg_id], 0) == [] and work.messages == 0


def test_expired_messages_dead_letter_with_routing_key_override(dlx_vhost: VirtualHost) -> None:
    vhost = dlx_vhost
    vhost.declare_queue("other")
    vhost.bind_queue("other", "amq.direct", "later")
    vhost.declare_queue("ttl", arguments={
        "x-message-ttl": 10, "x-dead-letter-exchange": "amq.direct", "x-dead-letter-routing-key": "later",
    })
    vhost.publish(msg(b"a", routing_key="ttl", headers={"CC": ["x"]}), 0)
    assert vhost.expire(11) == [vhost.queues["ttl"], vhost.queues["other"]]
    dead = vhost.queues["other"].get(11, no_ack=True)
    assert dead is not None and dead.message.routing_key == "later"
    headers = dead.message.props["headers"]
    assert headers["x-death"][0]["reason"] == "expired"
    assert headers["x-death"][0]["routing-keys"] == ["ttl", "x"]
    assert "CC" not in headers


def test_dead_letter_cycle_is_dropped_unless_rejected(dlx_vhost: VirtualHost) -> None:
    vhost = dlx_vhost
    # a queue that dead-letters to itself via the default exchange: expiry cycles are cut
    queue, _ = vhost.declare_queue("loop", arguments={"x-message-ttl": 5, "x-dead-letter-exchange": ""})
    vhost.publish(msg(b"a", routing_key="loop"), 0)
    vhost.expire(10)
    assert queue.messages == 0
    # a rejection in the cycle lets the message through again, with the count increased
    vhost.publish(msg(b"b", routing_key="loop"), 100)
    got = queue.get(100, no_ack=False)
    assert got is not None
    vhost.reject(queue, [got.msg_id], 100)
    again = queue.get(100, no_ack=False)
    assert again is not None
    vhost.reject(queue, [again.msg_id], 100)
    third = queue.get(100, no_ack=True)
    assert third is not None
    deaths = third.message.props["headers"]["x-death"]
    assert [(d["reason"], d["count"]) for d in deaths] == [("rejected", 2)]


def test_missing_dlx_drops_the_message() -> None:
    vhost = VirtualHost("/")
    queue, _ = vhost.declare_queue("q", arguments={"x-message-ttl": 1, "x-dead-letter-exchange": "gone"})
    vhost.publish(msg(routing_key="q"), 0)
    vhost.expire(5)
    assert queue.messages == 0


# ---- length limits ------------------------------------------------------------------


def test_drop_head_dead_letters_oldest_with_reason_maxlen(dlx_vhost: VirtualHost) -> None:
    vhost = dlx_vhost
    queue, _ = vhost.declare_queue("q", arguments={"x-max-length": 2, "x-dead-letter-exchange": "dlx"})
    for i in range(3):
        outcome = vhost.publish(msg(b"m%d" % i, routing_key="q"), 0)
    assert outcome.routed_queues == [queue] and outcome.dead_letter_queues == [vhost.queues["dead"]]
    assert ready_bodies(queue) == [b"m1", b"m2"]
    dead = vhost.queues["dead"].get(0, no_ack=True)
    assert dead is not None and dead.message.body == b"m0"
    assert dead.message.props["headers"]["x-death"][0]["reason"] == "maxlen"


def test_max_length_counts_ready_messages_only() -> None:
    queue = QueueState("q", arguments={"x-max-length": 1})
    queue.enqueue(msg(b"a"), 0)
    assert queue.get(0, no_ack=False) is not None
    queue.enqueue(msg(b"b"), 0)
    assert (queue.messages_ready, queue.messages_unacknowledged) == (1, 1)


def test_max_length_bytes_drop_head() -> None:
    queue = QueueState("q", arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        queue.enqueue(msg(body), 0)
    assert ready_bodies(queue) == [b"bbbb", b"cccc"]


def test_reject_publish_refuses_when_full(dlx_vhost: VirtualHost) -> None:
    vhost = dlx_vhost
    queue, _ = vhost.declare_queue("q", arguments={"x-max-length": 1, "x-overflow": "reject-publish",
                                                    "x-dead-letter-exchange": "dlx"})
    assert vhost.publish(msg(b"a", routing_key="q"), 0).routed_queues == [queue]
    outcome = vhost.publish(msg(b"b", routing_key="q"), 0)
    assert outcome.rejected_queues == [queue] and not outcome.routed_queues and not outcome.unroutable
    assert ready_bodies(queue) == [b"a"] and vhost.queues["dead"].messages == 0


def test_reject_publish_counts_the_new_message_against_max_length_bytes(dlx_vhost: VirtualHost) -> None:
    # RabbitMQ's will_overflow: 10 bytes queued + 5 would exceed 12, so the 5 are refused; 2 fit
    vhost = dlx_vhost
    queue, _ = vhost.declare_queue("q", arguments={"x-max-length-bytes": 12, "x-overflow": "reject-publish"})
    assert vhost.publish(msg(b"0123456789", routing_key="q"), 0).routed_queues == [queue]
    assert vhost.publish(msg(b"abcde", routing_key="q"), 0).rejected_queues == [queue]
    assert vhost.publish(msg(b"xy", routing_key="q"), 0).routed_queues == [queue]
    assert queue.message_bytes == 12


def test_reject_publish_dlx_dead_letters_the_refused_message(dlx_vhost: VirtualHost) -> None:
    vhost = dlx_vhost
    vhost.declare_queue("q", arguments={"x-max-length": 0, "x-overflow": "reject-publish-dlx",
                                        "x-dead-letter-exchange": "dlx"})
    outcome = vhost.publish(msg(b"a", routing_key="q"), 0)
    assert outcome.rejected_queues and vhost.queues["dead"].messages == 1


# ---- priorities and single active consumer ----------------------------------------------


def test_priority_queue_serves_higher_priority_first_fifo_within() -> None:
    queue = QueueState("q", arguments={"x-max-priority": 5})
    for body, priority in ((b"p0", None), (b"p9", 9), (b"p3a", 3), (b"p3b", 3), (b"p5", 5)):
        queue.enqueue(msg(body, priority=priority), 0)
    queue.add_consumer(Consumer("c", "ch"))
    # priorities above the maximum count as the maximum
    assert [d.message.body for d in queue.take_deliveries(0)] == [b"p9", b"p5", b"p3a", b"p3b", b"p0"]


def test_priorities_are_ignored_without_x_max_priority() -> None:
    queue = QueueState("q")
    queue.enqueue(msg(b"low", priority=1), 0)
    queue.enqueue(msg(b"high", priority=9), 0)
    assert ready_bodies(queue) == [b"low", b"high"]


def test_single_active_consumer_gets_everything_until_cancelled() -> None:
    queue = QueueState("q", arguments={"x-single-active-consumer": True})
    for i in range(3):
        queue.enqueue(msg(b"m%d" % i), 0)
    queue.add_consumer(Consumer("first", "ch1"))
    queue.add_consumer(Consumer("second", "ch2", priority=10))
    assert queue.active_consumer is not None and queue.active_consumer.tag == "first"
    assert {d.consumer.tag for d in queue.take_deliveries(0)} == {"first"}
    queue.release_owner("ch1")
    assert queue.active_consumer is not None and queue.active_consumer.tag == "second"
    assert [d.consumer.tag for d in queue.take_deliveries(0)] == ["second"] * 3


def test_x_death_history_across_two_queues_most_recent_first() -> None:
    vhost = VirtualHost("/")
    vhost.declare_exchange("dlx1", "fanout")
    vhost.declare_exchange("dlx2", "fanout")
    first, _ = vhost.declare_queue("first", arguments={"x-message-ttl": 1, "x-dead-letter-exchange": "dlx1"})
    second, _ = vhost.declare_queue("second", arguments={"x-message-ttl": 1, "x-dead-letter-exchange": "dlx2"})
    final, _ = vhost.declare_queue("final")
    vhost.bind_queue("second", "dlx1", "")
    vhost.bind_queue("final", "dlx2", "")
    vhost.publish(msg(b"a", routing_key="first"), 0)
    vhost.expire(5)
    vhost.expire(10)
    got = final.get(10, no_ack=True)
    assert got is not None
    headers = got.message.props["headers"]
    deaths = headers["x-death"]
    assert [(d["queue"], d["exchange"], d["reason"]) for d in deaths] == [
        ("second", "dlx1", "expired"), ("first", "", "expired"),
    ]
    assert list(deaths[0]) == sorted(deaths[0])
    assert (headers["x-first-death-queue"], headers["x-first-death-exchange"]) == ("first", "")
