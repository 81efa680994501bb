"""The quorum queue's replicated state machine, as a client of the queue would notice it.

Each test drives one ``QuorumQueueMachine`` through msgpack entries, as a replica applies
them from the Raft log, and looks at what the apply returns (deliveries, dead letters, the
op's value) and at the queue left behind. The last tests apply random entry sequences to
two machines (Hypothesis; and once in processes with different hash seeds) and require
the same observable state and results everywhere, and restore snapshots taken mid-way:
the restored machine must go on exactly as the original.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from warren.amqp.properties import encode_properties
from warren.cluster.queue_fsm import (
    BATCH_SLOTS_BITS,
    DEDUP_WINDOW,
    DEFAULT_DELIVERY_LIMIT,
    LOGGED_OPS,
    QDelivery,
    QOp,
    QResult,
    QuorumQueueMachine,
    encode,
)

PLAIN = encode_properties({})
C1, C2, C3 = "n1#1#1/1", "n1#1#2/1", "n2#1#1/1"  # two channels on node n1, one on n2


class Replica:
    """One machine and the index of the next entry (a replica applying its log)."""

    def __init__(self, **arguments: Any) -> None:
        self.m = QuorumQueueMachine("q", "/", arguments)
        self.index = 0
        self.ids: list[int] = []  # of the messages published, in order

    def id(self, n: int) -> int:
        """The id of the n-th message published (1-based): its locator, entry index and place."""
        return self.ids[n - 1]

    def __call__(self, op: QOp, *fields: Any, now: int = 0) -> QResult:
        self.index += 1
        return self.m.apply(self.index, encode(op, now, *fields))

    def publish(self, *bodies: bytes, now: int = 0, properties: bytes = PLAIN) -> list[QResult]:
        results = []
        for body in bodies:
            results.append(self(QOp.ENQUEUE, "", "q", properties, body, now=now))
            self.ids.append(self.index << BATCH_SLOTS_BITS)
        return results

    def checkout(self, channel: str, tag: str = "ctag", prefetch: int = 0, priority: int = 0,
                 exclusive: bool = False) -> QResult:
        return self(QOp.CHECKOUT, channel, tag, prefetch, priority, exclusive)

    def ready(self) -> list[tuple[bytes | None, bool]]:
        return [(msg.body, redelivered) for _, msg, redelivered in self.m.queue.ready_messages()]


def seen(deliveries: list[QDelivery]) -> list[tuple[str, bytes | None, bool, int]]:
    return [(d.channel, d.message.body, d.redelivered, d.delivery_count) for d in deliveries]


def bodies(deliveries: list[QDelivery]) -> list[bytes | None]:
    return [d.message.body for d in deliveries]


# ---- delivery ---------------------------------------------------------------------------


def test_messages_are_delivered_in_publish_order() -> None:
    q = Replica()
    assert [r.value for r in q.publish(b"a", b"b", b"c")] == [True, True, True]
    first = q.checkout(C1)
    assert seen(first.deliveries) == [(C1, b"a", False, 0), (C1, b"b", False, 0), (C1, b"c", False, 0)]
    assert [d.tag for d in first.deliveries] == ["ctag"] * 3
    # a publish with a consumer waiting is delivered by the same apply
    (late,) = q.publish(b"d")
    assert bodies(late.deliveries) == [b"d"]
    assert (q.m.queue.messages_ready, q.m.queue.messages_unacknowledged) == (0, 4)


def test_prefetch_is_the_credit_of_a_consumer() -> None:
    q = Replica()
    q.publish(b"a", b"b", b"c", b"d", b"e")
    first = q.checkout(C1, prefetch=2)
    assert bodies(first.deliveries) == [b"a", b"b"]
    assert q.publish(b"f")[0].deliveries == []  # no credit left
    settled = q(QOp.SETTLE, C1, [first.deliveries[0].msg_id])
    assert settled.value == 1 and bodies(settled.deliveries) == [b"c"]  # one ack, one more
    assert q.m.queue.messages_ready == 3


def test_consumers_of_equal_priority_take_turns() -> None:
    q = Replica()
    q.checkout(C1, "one")
    q.checkout(C3, "two")
    got = [d for r in q.publish(b"a", b"b", b"c", b"d") for d in r.deliveries]
    assert [(d.channel, d.tag, d.message.body) for d in got] == [
        (C1, "one", b"a"), (C3, "two", b"b"), (C1, "one", b"c"), (C3, "two", b"d")]


def test_a_higher_priority_consumer_is_served_first() -> None:
    q = Replica()
    q.checkout(C1, "low")
    q.checkout(C3, "high", priority=5)
    got = [d for r in q.publish(b"a", b"b") for d in r.deliveries]
    assert [d.tag for d in got] == ["high", "high"]


# ---- settlement -------------------------------------------------------------------------


def test_only_the_channel_holding_a_message_can_settle_it() -> None:
    q = Replica()
    q.checkout(C1, prefetch=1)
    (delivery,) = q.publish(b"a")[0].deliveries
    assert q(QOp.SETTLE, C3, [delivery.msg_id]).value == 0  # another channel's ack: ignored
    assert q(QOp.DISCARD, C3, [delivery.msg_id]).value == 0
    assert q(QOp.RETURN, "n9#1#1/1", [delivery.msg_id]).value == 0  # a channel never seen
    assert q.m.holders() == [(delivery.msg_id, C1)]
    assert q(QOp.SETTLE, C1, [delivery.msg_id]).value == 1
    assert q(QOp.SETTLE, C1, [delivery.msg_id]).value == 0  # a resent ack changes nothing
    assert q.m.queue.messages == 0


def test_a_stale_ack_cannot_settle_a_message_that_moved_to_another_consumer() -> None:
    q = Replica()
    q.checkout(C1)
    (delivery,) = q.publish(b"a")[0].deliveries
    down = q(QOp.DOWN, C1)  # C1's connection went: its message goes back ...
    q.checkout(C3)  # ... and on to C3
    assert down.value == 1 and q.m.holders() == [(delivery.msg_id, C3)]
    assert q(QOp.SETTLE, C1, [delivery.msg_id]).value == 0  # C1's late ack
    assert q.m.holders() == [(delivery.msg_id, C3)]


def test_duplicate_ids_in_one_entry_count_once() -> None:
    q = Replica(**{"x-delivery-limit": 1})
    q.checkout(C1, prefetch=1)
    (delivery,) = q.publish(b"a")[0].deliveries
    back = q(QOp.RETURN, C1, [delivery.msg_id, delivery.msg_id])
    assert back.value == 1 and back.dead_letters == []  # one return, not two (over the limit)
    assert seen(back.deliveries) == [(C1, b"a", True, 1)]


def test_a_returned_message_comes_back_first_flagged_redelivered_and_counted() -> None:
    q = Replica()
    q.publish(b"a", b"b")
    first = q.checkout(C1, prefetch=1)
    back = q(QOp.RETURN, C1, [first.deliveries[0].msg_id])
    assert back.value == 1
    assert seen(back.deliveries) == [(C1, b"a", True, 1)]  # before b, x-delivery-count 1
    again = q(QOp.RETURN, C1, [back.deliveries[0].msg_id])
    assert seen(again.deliveries) == [(C1, b"a", True, 2)]
    assert q.ready() == [(b"b", False)]


def test_a_discarded_message_is_dead_lettered_as_rejected() -> None:
    q = Replica(**{"x-dead-letter-exchange": "dlx"})
    q.checkout(C1)
    (delivery,) = q.publish(b"a")[0].deliveries
    result = q(QOp.DISCARD, C1, [delivery.msg_id])
    assert result.value == 1
    assert [(d.reason, d.exchange, d.message.body) for d in result.dead_letters] == [("rejected", "dlx", b"a")]
    assert q.m.queue.messages == 0


# ---- x-delivery-limit -------------------------------------------------------------------


def returns_until_gone(q: Replica, times: int) -> tuple[int, QResult]:
    """Return the only message again and again; how many returns it took to lose it."""
    q.checkout(C1)
    (delivery,) = q.publish(b"poison")[0].deliveries
    for n in range(1, times + 1):
        result = q(QOp.RETURN, C1, [delivery.msg_id])
        if not result.deliveries:
            return n, result
        (delivery,) = result.deliveries
        assert delivery.delivery_count == n
    return 0, result


def test_over_the_delivery_limit_a_message_is_dead_lettered() -> None:
    q = Replica(**{"x-delivery-limit": 2, "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "bad"})
    n, result = returns_until_gone(q, 10)
    assert n == 3  # returned a third time: more than 2
    (dead,) = result.dead_letters
    assert (dead.reason, dead.exchange, dead.queue, dead.message.routing_key) == ("delivery_limit", "dlx", "q", "bad")
    assert dead.message.props["headers"]["x-death"][0]["reason"] == "delivery_limit"
    assert q.m.queue.messages == 0


def test_over_the_delivery_limit_without_a_dlx_the_message_is_dropped() -> None:
    q = Replica(**{"x-delivery-limit": 0})
    n, result = returns_until_gone(q, 5)
    assert n == 1 and result.dead_letters == [] and q.m.queue.messages == 0


def test_the_default_delivery_limit_is_twenty() -> None:
    assert DEFAULT_DELIVERY_LIMIT == 20 and Replica().m.delivery_limit == 20
    n, _ = returns_until_gone(Replica(), 50)
    assert n == 21


def test_a_negative_delivery_limit_means_no_limit() -> None:
    q = Replica(**{"x-delivery-limit": -1})
    assert q.m.delivery_limit is None
    n, _ = returns_until_gone(q, 60)
    assert n == 0 and q.m.queue.messages == 1


def test_a_down_return_counts_toward_the_limit() -> None:
    q = Replica(**{"x-delivery-limit": 0})
    q.checkout(C1)
    q.publish(b"a")
    result = q(QOp.DOWN, "n1#")
    assert result.value == 0 and q.m.queue.messages == 0  # returned once: over the limit


# ---- basic.get and purge ---------------------------------------------------------------


def test_get_with_no_ack_takes_the_message_for_good() -> None:
    q = Replica()
    q.publish(b"a", b"b")
    msg_id, count, redelivered, left, message = q(QOp.GET, C1, True).value
    assert (count, redelivered, left, message.body) == (0, False, 1, b"a")
    assert q.m.holders() == [] and q.ready() == [(b"b", False)]
    assert q(QOp.GET, C1, True).value[4].body == b"b"
    assert q(QOp.GET, C1, True).value is None  # empty


def test_a_resent_get_answers_as_the_first_and_takes_nothing_more() -> None:
    """A get whose answer a leader change lost is sent again with the same request: a no-ack
    get must not take a second message (the first would be lost), nor an acked one hold two."""
    for no_ack in (True, False):
        q = Replica()
        q.publish(b"a", b"b")
        first = q(QOp.GET, C1, no_ack, 7).value
        restored = QuorumQueueMachine.restore(q.m.snapshot())  # a new member may apply the resend
        for machine in (q.m, restored):
            again = machine.apply(q.index + 1, encode(QOp.GET, 0, C1, no_ack, 7)).value
            assert again[:4] == first[:4] and again[4].body == b"a"
        assert q.ready() == [(b"b", False)] and len(q.m.holders()) == (0 if no_ack else 1)
        q.index += 1
        assert q(QOp.GET, C1, no_ack, 8).value[4].body == b"b"  # a new request takes the next
        assert q(QOp.GET, C1, no_ack, 9).value is None
        assert q(QOp.GET, C1, no_ack, 9).value is None  # an empty answer is remembered too


def test_get_with_ack_holds_the_message_for_its_channel() -> None:
    q = Replica()
    q.publish(b"a")
    msg_id, count, redelivered, left, _ = q(QOp.GET, C1, False).value
    assert (count, redelivered, left) == (0, False, 0)
    assert q.m.holders() == [(msg_id, C1)]
    assert q.m.checked_out() == []  # a get's message is not re-sent by a new leader
    assert q(QOp.SETTLE, C3, [msg_id]).value == 0
    assert q(QOp.RETURN, C1, [msg_id]).value == 1
    again = q(QOp.GET, C3, False).value
    assert again[:3] == (msg_id, 1, True)
    assert q(QOp.DOWN, "n2#").value == 1  # the channel went: back to the queue
    assert q.ready() == [(b"a", True)]


def test_purge_removes_ready_messages_only() -> None:
    q = Replica()
    q.checkout(C1, prefetch=1)
    q.publish(b"a", b"b", b"c")
    assert q(QOp.PURGE).value == 2
    assert q.ready() == [] and [i for i, _ in q.m.holders()] == [q.id(1)]
    assert q(QOp.PURGE).value == 0


# ---- channels and consumers going away --------------------------------------------------


def test_down_of_a_node_returns_its_messages_to_the_others_redelivered() -> None:
    q = Replica()
    q.checkout(C1, prefetch=1)
    q.checkout(C2, prefetch=1)
    q.publish(b"a", b"b", b"c")
    q.checkout(C3, prefetch=5)
    assert [(i, ch) for i, ch in q.m.holders()] == [(q.id(1), C1), (q.id(2), C2), (q.id(3), C3)]
    down = q(QOp.DOWN, "n1#")
    assert down.value == 2
    assert seen(down.deliveries) == [(C3, b"a", True, 1), (C3, b"b", True, 1)]
    assert [ch for ch, _, _ in q.m.consumers()] == [C3]
    assert q(QOp.SETTLE, C1, [q.id(1)]).value == 0  # the dead channel's late ack
    assert q(QOp.DOWN, "n1#").value == 0  # a resent DOWN finds nothing


def test_down_of_one_connection_leaves_the_others_of_its_node() -> None:
    q = Replica()
    q.checkout(C1)
    q.checkout(C2)
    q.publish(b"a", b"b")
    assert q(QOp.DOWN, "n1#1#1/").value == 1
    assert [ch for ch, _, _ in q.m.consumers()] == [C2]


def test_a_resent_checkout_is_the_same_consumer() -> None:
    q = Replica()
    q.checkout(C1, prefetch=1)
    assert q.checkout(C1, prefetch=1).value is None
    assert q.checkout(C1, prefetch=9).value is None  # the first one's prefetch stays
    assert len(q.m.consumers()) == 1
    q.publish(b"a", b"b")
    assert [ch for _, ch in q.m.holders()] == [C1] and q.m.queue.messages_ready == 1


def test_an_exclusive_consumer_refuses_others_with_the_403_text() -> None:
    q = Replica()
    assert q.checkout(C1, exclusive=True).value is None
    refused = q.checkout(C3, "other")
    assert refused.value == "queue 'q' in vhost '/' in exclusive use"
    assert q.checkout(C1, exclusive=True).value is None  # its own resent checkout is fine
    q2 = Replica()
    q2.checkout(C1)
    assert q2.checkout(C3, exclusive=True).value == "queue 'q' in vhost '/' in exclusive use"
    assert [tag for _, tag, _ in q2.m.consumers()] == ["ctag"]


def test_a_cancelled_consumer_gets_nothing_more_but_its_channel_keeps_what_it_holds() -> None:
    q = Replica()
    q.checkout(C1, "a", prefetch=1)
    (delivery,) = q.publish(b"a")[0].deliveries
    q(QOp.CANCEL, C1, "a")
    assert q.publish(b"b")[0].deliveries == [] and q.m.consumers() == []
    # still held by C1: a new leader sends it again, and C1 may ack it
    assert [(d.channel, d.tag, d.msg_id) for d in q.m.checked_out()] == [(C1, "a", delivery.msg_id)]
    assert q(QOp.SETTLE, C1, [delivery.msg_id]).value == 1


def test_checked_out_lists_each_held_message_with_its_consumer() -> None:
    q = Replica()
    q.checkout(C1, "x", prefetch=1)
    q.checkout(C3, "y tag", prefetch=1)  # a tag with a space in it
    q.publish(b"a", b"b", b"c")
    q(QOp.RETURN, C1, [q.id(1)])  # a goes back to C1, counted once
    out = q.m.checked_out()
    assert [(d.channel, d.tag, d.message.body, d.redelivered, d.delivery_count) for d in out] == [
        (C3, "y tag", b"b", True, 0), (C1, "x", b"a", True, 1)]


# ---- limits and time ---------------------------------------------------------------------


def test_max_length_with_reject_publish_refuses_the_publish() -> None:
    q = Replica(**{"x-max-length": 2, "x-overflow": "reject-publish"})
    assert [r.value for r in q.publish(b"a", b"b", b"c")] == [True, True, False]
    assert q.ready() == [(b"a", False), (b"b", False)]
    q.checkout(C1, prefetch=1)  # an unacked message does not count toward the length
    assert q.publish(b"d")[0].value is True


def test_max_length_with_reject_publish_dlx_dead_letters_the_refused_one() -> None:
    q = Replica(**{"x-max-length": 1, "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "dlx"})
    ok, refused = q.publish(b"a", b"b")
    assert (ok.value, refused.value) == (True, False)
    assert [(d.reason, d.message.body) for d in refused.dead_letters] == [("maxlen", b"b")]


def test_message_ttl_expires_messages_on_a_tick() -> None:
    q = Replica(**{"x-message-ttl": 100, "x-dead-letter-exchange": "dlx"})
    assert not q.m.needs_ticks
    q.publish(b"a", now=0)
    q.publish(b"b", now=50)
    assert q.m.needs_ticks
    assert q(QOp.TICK, now=100).value == 0  # expired only once the TTL has passed
    tick = q(QOp.TICK, now=101)
    assert tick.value == 1 and [(d.reason, d.message.body) for d in tick.dead_letters] == [("expired", b"a")]
    assert q(QOp.TICK, now=151).value == 1 and q.m.queue.messages == 0
    assert not q.m.needs_ticks


def test_a_policy_from_the_log_lowers_max_length_at_once_and_clearing_it_restores_the_queue() -> None:
    q = Replica(**{"x-max-length": 5, "x-dead-letter-exchange": "dlx"})
    q.publish(b"a", b"b", b"c", b"d")
    applied = q(QOp.POLICY, "cap", {"max-length": 2, "dead-letter-exchange": "other"})
    # the lower limit wins and drops the head now; the queue's own DLX wins over the policy's
    assert [(d.reason, d.exchange, d.message.body) for d in applied.dead_letters] == [
        ("maxlen", "dlx", b"a"), ("maxlen", "dlx", b"b")]
    assert q.ready() == [(b"c", False), (b"d", False)] and q.m.policy == ["cap", {"max-length": 2,
                                                                                 "dead-letter-exchange": "other"}]
    assert q.m.queue.policy == "cap"
    q(QOp.POLICY, "", None)
    q.publish(b"e", b"f", b"g")
    assert len(q.ready()) == 5 and q.m.policy is None and q.m.queue.policy is None


def test_a_policy_sets_the_delivery_limit_and_a_message_ttl_for_later_publishes() -> None:
    q = Replica()
    q.publish(b"old", now=0)
    q(QOp.POLICY, "strict", {"delivery-limit": 0, "message-ttl": 50, "dead-letter-exchange": "dlx"}, now=10)
    q.publish(b"new", now=20)  # stamped with the TTL in force when it is enqueued, as RabbitMQ does
    assert q.m.needs_ticks
    assert q(QOp.GET, C1, False, 1).value[4].body == b"old"
    returned = q(QOp.RETURN, C1, [q.id(1)])  # the first return is over a limit of 0
    assert [(d.reason, d.message.body) for d in returned.dead_letters] == [("delivery_limit", b"old")]
    assert [(d.reason, d.message.body) for d in q(QOp.TICK, now=71).dead_letters] == [("expired", b"new")]


def test_a_snapshot_keeps_the_policy_applied() -> None:
    q = Replica()
    q(QOp.POLICY, "cap", {"max-length": 1, "overflow": "reject-publish"})
    restored = QuorumQueueMachine.restore(q.m.snapshot())
    assert restored.policy == ["cap", {"max-length": 1, "overflow": "reject-publish"}]
    assert [restored.apply(i, encode(QOp.ENQUEUE, 0, "", "q", PLAIN, b"x")).value for i in (2, 3)] == [True, False]


def test_per_message_expiration_is_stamped_with_the_entry_time() -> None:
    q = Replica()
    q.publish(b"short", now=1000, properties=encode_properties({"expiration": "10"}))
    assert q(QOp.TICK, now=1010).value == 0 and q(QOp.TICK, now=1011).value == 1
    q.publish(b"late", now=2000, properties=encode_properties({"expiration": "10"}))
    # delivered: the checkout's time (2005) is what counts, not when a replica applies it
    assert bodies(q(QOp.CHECKOUT, C1, "c", 0, 0, False, now=2005).deliveries) == [b"late"]


def test_an_expired_head_is_not_delivered() -> None:
    q = Replica(**{"x-message-ttl": 10})
    q.publish(b"old", now=0)
    q.publish(b"new", now=20)
    assert bodies(q(QOp.CHECKOUT, C1, "c", 0, 0, False, now=20).deliveries) == [b"new"]


# ---- determinism ---------------------------------------------------------------------------

CHANNELS = (C1, C2, C3, "n3#2#1/1")
PREFIXES = ("n1#", "n1#1#2/", "n2#", "n3#2#1/1", "")
PROPERTIES = (
    PLAIN,
    encode_properties({"expiration": "30"}),
    encode_properties({"priority": 3, "delivery_mode": 2}),
    encode_properties({"headers": {"k": "v", "n": 1}, "message_id": "m"}),
)
ARGUMENTS: tuple[dict[str, Any], ...] = (
    {},
    {"x-delivery-limit": 1, "x-dead-letter-exchange": "dlx"},
    {"x-message-ttl": 40, "x-dead-letter-exchange": "dlx"},
    {"x-max-length": 3, "x-overflow": "reject-publish"},
    {"x-max-length": 2},  # drop-head
    {"x-single-active-consumer": True},
    {"x-max-priority": 5, "x-delivery-limit": -1},
)

POLICIES: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("", None),
    ("short", {"max-length": 1}),
    ("ttl", {"message-ttl": 20, "dead-letter-exchange": "dlx"}),
    ("poison", {"delivery-limit": 0, "overflow": "reject-publish", "max-length": 4}),
)


def random_entry(rng: random.Random, now: int, n: int) -> bytes:
    """One entry of a random workload (``n`` numbers the published bodies)."""
    op = rng.choice([QOp.ENQUEUE] * 2 + [QOp.PUBLISH] * 2 + [QOp.SETTLE] * 2 + [QOp.RETURN] * 2 + list(LOGGED_OPS))
    channel = rng.choice(CHANNELS)
    ids = rng.sample(range(1, 16), rng.randint(1, 3))
    fields: tuple[Any, ...]
    if op == QOp.ENQUEUE:
        fields = ("", "q", rng.choice(PROPERTIES), b"m%d" % n)
    elif op == QOp.PUBLISH:  # one channel's publishes of one loop iteration
        messages = [["", "q", rng.choice(PROPERTIES), b"m%d.%d" % (n, k)] for k in range(rng.randint(1, 3))]
        fields = (messages, rng.choice(["", "n1#1#", "n2#1#"]), rng.randint(1, 6))  # some are resends
    elif op == QOp.CHECKOUT:
        fields = (channel, rng.choice("ab"), rng.randint(0, 3), rng.randint(0, 1), rng.random() < 0.1)
    elif op == QOp.CANCEL:
        fields = (channel, rng.choice("ab"))
    elif op in (QOp.SETTLE, QOp.RETURN, QOp.DISCARD):
        fields = (channel, ids)
    elif op == QOp.GET:  # a small request space: some are resends
        fields = (channel, rng.random() < 0.5, rng.randint(0, 3))
    elif op == QOp.DOWN:
        fields = (rng.choice(PREFIXES),)
    elif op == QOp.POLICY:
        fields = rng.choice(POLICIES)
    elif op == QOp.RELOCATE:  # the body is made honest by ``honest`` where it matters
        fields = (rng.randint(1, 15), b"moved")
    else:
        fields = ()
    return encode(op, now, *fields)


def workload(seed: int, length: int) -> tuple[dict[str, Any], list[bytes]]:
    rng = random.Random(seed)
    now, entries = 0, []
    for n in range(length):
        now += rng.randint(0, 15)
        entries.append(random_entry(rng, now, n))
    return rng.choice(ARGUMENTS), entries


def observe_result(result: QResult, m: QuorumQueueMachine | None = None) -> list[Any]:
    """What an apply gives clients (``m``: the machine, to read bodies kept in the log)."""
    value = result.value
    if isinstance(value, tuple):  # a get's answer carries the message
        value = [*value[:4], value[4].body]
    if m is not None:
        m.fill_bodies(result.dead_letters)
    return [
        value,
        [[d.channel, d.tag, d.msg_id, d.body if m is None or d.body is not None else m.body_of(d.message),
          d.redelivered, d.delivery_count] for d in result.deliveries],
        [[d.reason, d.exchange, d.message.routing_key, d.message.body] for d in result.dead_letters],
    ]


def observe(m: QuorumQueueMachine, snapshot: bool = True) -> list[Any]:
    """What clients and a new leader can see: ready messages in order, who holds what,
    the consumers, what a new leader would send again."""
    queue = m.queue
    return [
        [[i, m.body_of(msg), redelivered] for i, msg, redelivered in queue.ready_messages()],
        [list(h) for h in m.holders()],
        [[ch, tag, c.prefetch, c.priority, c.unacked] for ch, tag, c in m.consumers()],
        [[d.channel, d.tag, d.msg_id, d.delivery_count, m.body_of(d.message)] for d in m.checked_out()],
        [queue.messages, queue.message_bytes, m.needs_ticks, m.applied],
        # snapshots are deterministic too
        hashlib.blake2b(m.snapshot(), digest_size=8).hexdigest() if snapshot else "",
    ]


def in_log(entries: list[bytes]) -> Any:
    """A log reader over ``entries`` (index 1 first), as the Raft store serves one."""
    return lambda index: entries[index - 1] if 0 < index <= len(entries) else None


def run(arguments: dict[str, Any], entries: list[bytes], log: bool = False, snapshot: bool = True) -> list[Any]:
    m = QuorumQueueMachine("q", "/", arguments, in_log(entries) if log else None)
    return [[observe_result(m.apply(i, data), m), observe(m, snapshot)] for i, data in enumerate(entries, 1)]


def honest(arguments: dict[str, Any], entries: list[bytes]) -> list[bytes]:
    """The workload with each RELOCATE carrying the body of the message it names, as the
    leader proposes it (one naming no live message is left as it is: a no-op)."""
    m = QuorumQueueMachine("q", "/", arguments)
    out = []
    for i, data in enumerate(entries, 1):
        op, now, *fields = msgpack.unpackb(data)
        if op == QOp.RELOCATE:
            message = m.queue.message_of(fields[0])
            if message is not None:
                data = encode(QOp.RELOCATE, now, fields[0], message.body)
        out.append(data)
        m.apply(i, data)
    return out


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 120))
def test_the_same_entries_give_the_same_queue_on_every_replica(seed: int, length: int) -> None:
    arguments, entries = workload(seed, length)
    assert run(arguments, entries) == run(arguments, entries)
    assert run(arguments, entries, log=True) == run(arguments, entries, log=True)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 120))
def test_bodies_kept_in_the_log_give_clients_what_bodies_in_ram_give(seed: int, length: int) -> None:
    arguments, entries = workload(seed, length)
    entries = honest(arguments, entries)
    assert run(arguments, entries, log=True, snapshot=False) == run(arguments, entries, snapshot=False)


def test_replicas_agree_across_processes_with_different_hash_seeds() -> None:
    """Hash randomisation differs between nodes: no apply may depend on set or dict-of-str
    iteration order. Replays 40 workloads in two fresh interpreters and compares."""
    root = Path(__file__).resolve().parents[3]
    code = (
        "import json, sys; from tests.unit.cluster.test_queue_fsm import workload, run; "
        "print(json.dumps([run(*workload(s, 150)) for s in range(40)], default=repr))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                              text=True, timeout=120, check=True)
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]


# ---- snapshot and restore ------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 120), st.floats(0, 1))
def test_a_restored_snapshot_applies_the_rest_of_the_log_as_the_original(
    seed: int, length: int, where: float
) -> None:
    arguments, entries = workload(seed, length)
    cut = int(where * length)
    for log in (None, in_log(entries)):
        original = QuorumQueueMachine("q", "/", arguments, log)
        for i, data in enumerate(entries[:cut], 1):
            original.apply(i, data)
        data = original.snapshot()
        restored = QuorumQueueMachine.restore(data, log)
        assert restored.snapshot() == data and observe(restored) == observe(original)
        for i, entry in enumerate(entries[cut:], cut + 1):
            assert (observe_result(restored.apply(i, entry), restored)
                    == observe_result(original.apply(i, entry), original))
            assert observe(restored) == observe(original)


def test_a_snapshot_keeps_credit_of_a_cancelled_consumer_apart_from_its_successor() -> None:
    q = Replica(**{"x-message-ttl": 500, "x-delivery-limit": 3, "x-max-priority": 2})
    q.checkout(C1, "a", prefetch=1)
    q.publish(b"m1", b"m2", b"m3", b"m4", now=10)
    q(QOp.CANCEL, C1, "a")
    q.checkout(C1, "a", prefetch=1)  # the same key again: a new consumer with its own credit
    q(QOp.RETURN, C1, [q.id(2)])  # m2 comes back to it, counted
    got = q(QOp.GET, C3, False).value
    assert [(i, ch) for i, ch in q.m.holders()] == [(q.id(1), C1), (q.id(2), C1), (got[0], C3)]
    restored = QuorumQueueMachine.restore(q.m.snapshot())
    assert restored.applied == q.index and restored.needs_ticks
    for machine in (q.m, restored):
        index = q.index
        assert machine.apply(index + 1, encode(QOp.SETTLE, 20, C1, [q.id(1)])).deliveries == []  # m1: old credit
        after = machine.apply(index + 2, encode(QOp.SETTLE, 20, C1, [q.id(2)]))
        assert seen(after.deliveries) == [(C1, b"m4", False, 0)]
        down = machine.apply(index + 3, encode(QOp.DOWN, 21, "n2#"))  # the get's m3 comes back
        assert down.value == 1 and down.deliveries == []  # the consumer holds m4: no credit
        tick = machine.apply(index + 4, encode(QOp.TICK, 511))
        assert tick.value == 1  # m3 kept its deadline (10 + 500) through snapshot and return


def test_restore_keeps_the_order_of_consumers_and_channels() -> None:
    q = Replica()
    for channel, tag, priority in ((C1, "a", 0), (C2, "b", 1), (C3, "c", 0), (C1, "d", 1)):
        q.checkout(channel, tag, prefetch=0, priority=priority)
    q.publish(b"x", b"y", b"z")  # rotates the round robin among b and d
    restored = QuorumQueueMachine.restore(q.m.snapshot())
    assert observe(restored) == observe(q.m)
    index = q.index
    for i, body in enumerate((b"p", b"q", b"r"), index + 1):
        entry = encode(QOp.ENQUEUE, 0, "", "q", PLAIN, body)
        assert observe_result(restored.apply(i, entry)) == observe_result(q.m.apply(i, entry))
    down = encode(QOp.DOWN, 0, "n1#")
    assert observe_result(restored.apply(index + 4, down)) == observe_result(q.m.apply(index + 4, down))
    assert observe(restored) == observe(q.m)


def test_restore_rebuilds_messages_from_their_published_properties() -> None:
    props = encode_properties({"priority": 2, "expiration": "60000", "headers": {"h": "v"}, "delivery_mode": 2})
    q = Replica(**{"x-max-priority": 5, "x-queue-type": "quorum"})
    q.publish(b"low")
    q.publish(b"high", properties=props)
    restored = QuorumQueueMachine.restore(q.m.snapshot())
    (first, second) = [m for _, m, _ in restored.queue.ready_messages()]
    assert (first.body, first.priority, first.expiration_ms, first.persistent) == (b"high", 2, 60000, True)
    assert first.properties == props and first.props["headers"] == {"h": "v"} and second.body == b"low"
    assert restored.queue.arguments == {"x-max-priority": 5, "x-queue-type": "quorum"}
    assert restored.queue.message_bytes == q.m.queue.message_bytes == 7


def test_a_subclass_overrides_one_op_handler() -> None:
    """Ops dispatch by method name, so a test-only subclass (the simulator's planted bugs)
    changes one handler by overriding it."""

    class RefusesAll(QuorumQueueMachine):
        def _enqueue(self, now_ms: int, *fields: Any) -> bool:
            return False

    m = RefusesAll("q", "/", {})
    assert m.apply(1, encode(QOp.ENQUEUE, 0, "", "q", PLAIN, b"a")).value is False
    assert m.queue.messages == 0


# ---- bodies in the log ---------------------------------------------------------------------


class LoggedReplica(Replica):
    """A replica whose bodies live in its log (the entries it applied)."""

    def __init__(self, min_span: int = 4096, **arguments: Any) -> None:
        self.entries: list[bytes] = []
        self.m = QuorumQueueMachine("q", "/", arguments, in_log(self.entries), min_span)
        self.index = 0
        self.ids = []

    def __call__(self, op: QOp, *fields: Any, now: int = 0) -> QResult:
        self.entries.append(encode(op, now, *fields))
        self.index += 1
        return self.m.apply(self.index, self.entries[-1])


def test_a_replica_with_a_log_holds_no_bodies_and_reads_them_back_to_deliver() -> None:
    q = LoggedReplica()
    q.publish(b"one", b"two")
    assert [msg.body for _, msg, _ in q.m.queue.ready_messages()] == [None, None]
    assert q.m.queue.message_bytes == 6  # sizes are kept
    (first,) = q.checkout(C1, prefetch=1).deliveries  # a stored message: read back from the log
    assert first.body is None and q.m.body_of(first.message) == b"one"
    got = q(QOp.GET, C2, True).value  # a get's answer carries its body (kept for a resend)
    assert got is not None and got[4].body == b"two"
    q(QOp.SETTLE, C1, [first.msg_id])
    (fresh,) = q.publish(b"three")[0].deliveries  # delivered by the apply that enqueued it
    assert fresh.body == b"three" and fresh.message.body is None
    assert b"one" not in q.m.snapshot() and b"three" not in q.m.snapshot()


def test_dead_letters_of_a_logged_queue_get_their_bodies() -> None:
    q = LoggedReplica(**{"x-dead-letter-exchange": "dlx", "x-max-length": 1})
    q.publish(b"old", b"new")
    (letter,) = q.publish(b"newer")[0].dead_letters  # drop-head pushes out "new", its body in the log
    q.m.fill_bodies([letter])
    assert letter.message.body == b"new" and letter.reason == "maxlen"


def test_keep_from_follows_the_oldest_live_message_and_relocation_unpins_it() -> None:
    q = LoggedReplica(min_span=10)
    q.checkout(C1, prefetch=1)  # index 1
    q.publish(b"stuck")  # index 2: delivered to C1, never acked
    assert q.m.keep_from() == 2 and q.m.stale(8) == []
    for n in range(30):  # a stream that C2 gets and acks meanwhile
        q.publish(b"m%d" % n)
        got = q(QOp.GET, C2, True).value
        assert got is not None
    assert q.m.keep_from() == 2
    (stale,) = q.m.stale(8)  # 62 entries on, for one message held: relocate it
    msg_id, message = stale
    q(QOp.RELOCATE, msg_id, q.m.body_of(message))
    assert q.m.keep_from() == q.index and q.m.stale(8) == []
    q.entries[1] = b""  # the old entry is gone from the log: the body is read from its new place
    assert q.m.body_of(q.m.checked_out()[0].message) == b"stuck"
    restored = QuorumQueueMachine.restore(q.m.snapshot(), in_log(q.entries))
    assert restored.keep_from() == q.index and restored.body_of(restored.checked_out()[0].message) == b"stuck"


# ---- one entry for a loop iteration's publishes ------------------------------------------


def publish_entry(*bodies: bytes) -> tuple[Any, ...]:
    return (QOp.PUBLISH, [["", "q", PLAIN, body] for body in bodies])


def test_a_publish_entry_enqueues_each_message_and_answers_for_each() -> None:
    q = LoggedReplica(**{"x-max-length": 2, "x-overflow": "reject-publish"})
    assert q(*publish_entry(b"a", b"b", b"c")).value == [True, True, False]  # the third is nacked
    assert q.m.queue.messages == 2
    first, second = q.checkout(C1).deliveries  # their bodies are read from their places in one entry
    assert [q.m.body_of(first.message), q.m.body_of(second.message)] == [b"a", b"b"]
    assert q.m.keep_from() == 1
    q(QOp.SETTLE, C1, [first.msg_id, second.msg_id])
    (fresh,) = q(*publish_entry(b"d")).deliveries  # a consumer waiting: delivered with its body
    assert fresh.body == b"d" and fresh.message.body is None


def test_a_batched_message_is_relocated_and_restored_from_its_place() -> None:
    q = LoggedReplica(min_span=4)
    q.checkout(C1, prefetch=2)
    q(*publish_entry(b"x", b"stuck"))  # both go to C1, never acked
    for n in range(20):  # a stream that C2 gets meanwhile
        q(QOp.GET, C2, True)
        q(*publish_entry(b"m%d" % n))
    (stale,) = [s for s in q.m.stale(8) if q.m.body_of(s[1]) == b"stuck"]
    q(QOp.RELOCATE, stale[0], b"stuck")
    q.entries[1] = b""  # the batch is gone from the log
    restored = QuorumQueueMachine.restore(q.m.snapshot(), in_log(q.entries))
    assert restored.body_of(restored.queue.message_of(stale[0])) == b"stuck"  # type: ignore[arg-type]


def test_a_snapshot_of_format_2_still_restores_bodies_from_the_log() -> None:
    """Format 2 stored each message's entry index (one message per entry): a replica
    upgraded from it reads the same bodies."""
    q = LoggedReplica()
    q.publish(b"one", b"two")
    s = msgpack.unpackb(q.m.snapshot(), raw=False)
    s["format"] = 2
    for record in s["ready"]:
        record[-2] >>= BATCH_SLOTS_BITS  # [..., body, seq, size]
    restored = QuorumQueueMachine.restore(msgpack.packb(s, use_bin_type=True), in_log(q.entries))
    assert [restored.body_of(m) for _, m, _ in restored.queue.ready_messages()] == [b"one", b"two"]
    assert restored.keep_from() == 1


# ---- publisher deduplication ---------------------------------------------------------------


def test_a_resent_publish_is_answered_as_the_first_and_not_enqueued_twice() -> None:
    q = Replica(**{"x-max-length": 2, "x-overflow": "reject-publish"})
    batch = [["", "q", PLAIN, body] for body in (b"a", b"b", b"c")]
    assert q(QOp.PUBLISH, batch, "n1#7#", 1).value == [True, True, False]
    assert q(QOp.PUBLISH, batch, "n1#7#", 1).value == [True, True, False]  # the resend: same answer
    assert q.ready() == [(b"a", False), (b"b", False)]
    assert q(QOp.PUBLISH, batch[2:], "n2#1#", 1).value == [False]  # another enqueuer's seq 1 is its own


def test_a_publish_that_never_reached_the_log_is_applied_when_resent_late() -> None:
    """Seq 2 went to a new leader while seq 1 was lost with the old one: 1's resend is new."""
    q = Replica()
    assert q(QOp.PUBLISH, [["", "q", PLAIN, b"two"]], "n1#1#", 2).value == [True]
    assert q(QOp.PUBLISH, [["", "q", PLAIN, b"one"]], "n1#1#", 1).value == [True]
    assert q(QOp.PUBLISH, [["", "q", PLAIN, b"one"]], "n1#1#", 1).value == [True]
    assert q.ready() == [(b"two", False), (b"one", False)]
    restored = QuorumQueueMachine.restore(q.m.snapshot())  # the memory survives a snapshot
    assert restored.apply(q.index + 1, encode(QOp.PUBLISH, 0, [["", "q", PLAIN, b"two"]], "n1#1#", 2)).value == [True]
    assert restored.queue.messages == 2


def test_a_resend_older_than_the_window_is_refused() -> None:
    q = Replica()
    q(QOp.PUBLISH, [["", "q", PLAIN, b"new"]], "n1#1#", DEDUP_WINDOW + 1)
    assert q(QOp.PUBLISH, [["", "q", PLAIN, b"old"]], "n1#1#", 1).value == [False]  # unknown: a nack
    assert q.ready() == [(b"new", False)]
