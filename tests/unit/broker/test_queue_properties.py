"""Property tests: random command sequences against QueueState.

Invariants checked after every command: each accepted message is in exactly one place
(ready, unacknowledged, or gone, with exactly one exit in the journal); counts and byte
totals match the contents; no consumer exceeds its prefetch; a message is never handed
out twice while unacknowledged; only consumers whose ref is eligible receive, and only
refs ``candidate_refs()`` named (the node judges no others); the same commands give the
same outcome.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from warren.broker.queue import Consumer, ConsumerRef, QueueState

from .helpers import msg

queue_arguments = st.fixed_dictionaries(
    {},
    optional={
        "x-max-length": st.integers(0, 6),
        "x-max-length-bytes": st.integers(0, 30),
        "x-overflow": st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx"]),
        "x-message-ttl": st.integers(0, 50),
        "x-max-priority": st.integers(0, 4),
        "x-single-active-consumer": st.booleans(),
        "x-dead-letter-exchange": st.just("dlx"),
    },
)

commands = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(0, 9), st.one_of(st.none(), st.integers(0, 6)),
                  st.one_of(st.none(), st.integers(0, 40))),
        st.tuples(st.just("consume"), st.integers(0, 3), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 5)),
        st.tuples(st.just("take"), st.integers(0, 3), st.one_of(st.none(), st.frozensets(st.integers(0, 2)))),
        st.tuples(st.just("ack"), st.integers(0, 7)),
        st.tuples(st.just("requeue"), st.integers(0, 7)),
        st.tuples(st.just("reject"), st.integers(0, 7)),
        st.tuples(st.just("get"), st.booleans()),
        st.tuples(st.just("tick"), st.integers(0, 30)),
        st.tuples(st.just("release"), st.integers(0, 2)),
        st.just(("purge",)),
    ),
    max_size=60,
)


def run(arguments: dict[str, Any], script: list[tuple[Any, ...]]) -> list[Any]:
    """Apply the script, checking invariants after each step; returns a trace of outcomes."""
    queue = QueueState("q", arguments=arguments)
    queue.journal = []
    now = 0
    trace: list[Any] = []
    outstanding: dict[int, Consumer | None] = {}  # msg_id -> consumer (None: basic.get)
    owners = [ConsumerRef(1, 1), ConsumerRef(1, 2), ConsumerRef(2, 1)]
    next_tag = 0
    accepted = 0
    for step in script:
        kind = step[0]
        if kind == "enqueue":
            _, size, priority, expiration = step
            props: dict[str, Any] = {}
            if priority is not None:
                props["priority"] = priority
            if expiration is not None:
                props["expiration"] = str(expiration)
            outcome = queue.enqueue(msg(b"b" * size, **props), now)
            accepted += outcome.accepted
            trace.append((kind, outcome.accepted, outcome.dropped))
        elif kind == "consume":
            _, prefetch, priority, no_ack = step
            consumer = Consumer(f"c{next_tag}", owners[next_tag % 3], prefetch, priority, False, no_ack)
            next_tag += 1
            queue.add_consumer(consumer)
        elif kind == "cancel":
            registered = queue.consumers
            if registered:
                queue.cancel_consumer(registered[step[1] % len(registered)].tag)
        elif kind == "take":
            limit = step[1] or None
            eligible = None if step[2] is None else {owners[i] for i in step[2]}
            candidates = queue.candidate_refs()
            # what the node passes: the candidates' eligible refs, no more than messages_ready
            judged: set[ConsumerRef] = set()
            for ref in candidates:
                if len(judged) >= queue.messages_ready:
                    break
                if eligible is None or ref in eligible:
                    judged.add(ref)
            twin = copy.deepcopy(queue)
            deliveries = queue.take_deliveries(now, eligible, limit=limit)
            assert limit is None or len(deliveries) <= limit
            for delivery in deliveries:
                assert delivery.consumer.owner in candidates
                assert eligible is None or delivery.consumer.owner in eligible
            same = twin.take_deliveries(now, judged, limit=limit)
            assert [(d.consumer.tag, d.msg_id) for d in same] == [(d.consumer.tag, d.msg_id) for d in deliveries]
            for delivery in deliveries:
                assert delivery.msg_id not in outstanding, "delivered twice while unacked"
                if not delivery.consumer.no_ack:
                    outstanding[delivery.msg_id] = delivery.consumer
            trace.append((kind, [(d.consumer.tag, d.msg_id, d.redelivered) for d in deliveries]))
        elif kind in ("ack", "requeue", "reject"):
            ids = sorted(outstanding)[: step[1]]
            for msg_id in ids:
                del outstanding[msg_id]
            if kind == "ack":
                done = queue.ack(ids)
            elif kind == "requeue":
                done = queue.requeue(ids)
            else:
                done = queue.reject(ids, now)
            assert done == len(ids)
            trace.append((kind, ids))
        elif kind == "get":
            result = queue.get(now, no_ack=step[1])
            if result is not None:
                assert result.msg_id not in outstanding
                assert result.message_count == queue.messages_ready
                if not step[1]:
                    outstanding[result.msg_id] = None
            trace.append((kind, None if result is None else result.msg_id))
        elif kind == "tick":
            now += step[1]
            trace.append((kind, queue.expire(now)))
        elif kind == "release":
            owner = owners[step[1]]
            for msg_id in [m for m, c in outstanding.items() if c is not None and c.owner == owner]:
                del outstanding[msg_id]
            trace.append((kind, queue.release_owner(owner)))
        elif kind == "purge":
            trace.append((kind, queue.purge()))
        check_invariants(queue, outstanding, accepted)
        trace.append((queue.messages_ready, queue.messages_unacknowledged, queue.message_bytes))
    letters = queue.take_dead_letters()
    assert all(letter.reason in ("rejected", "expired", "maxlen") for letter in letters)
    assert all(letter.message.props["headers"]["x-death"][0]["count"] == 1 for letter in letters)
    trace.append([(letter.reason, letter.message.body) for letter in letters])
    return trace


def check_invariants(queue: QueueState, outstanding: dict[int, Consumer | None], accepted: int) -> None:
    ready = queue.ready_messages()
    unacked = queue.unacked_ids()
    assert queue.messages_ready == len(ready)
    assert sorted(unacked) == sorted(outstanding)
    assert queue.messages_unacknowledged == len(unacked)
    ready_ids = [msg_id for msg_id, _, _ in ready]
    assert len(set(ready_ids)) == len(ready_ids) and not set(ready_ids) & set(unacked)
    # ready messages leave in priority order, FIFO (by id) within a priority
    assert queue.message_bytes_ready == sum(m.size for _, m, _ in ready)
    journal = queue.journal
    assert journal is not None
    entered = Counter(id(m) for added, m in journal if added)
    exited = Counter(id(m) for added, m in journal if not added)
    assert sum(entered.values()) == accepted
    assert all(count == 1 for count in entered.values()) and all(count == 1 for count in exited.values())
    assert set(exited) <= set(entered)
    live = len(entered) - len(exited)
    assert live == queue.messages_ready + queue.messages_unacknowledged, "a message was lost or duplicated"
    for consumer in queue.consumers:
        if consumer.prefetch and not consumer.no_ack:
            assert consumer.unacked <= consumer.prefetch
        assert consumer.unacked == sum(1 for c in outstanding.values() if c is consumer)


@settings(max_examples=300, deadline=None)
@given(queue_arguments, commands)
def test_random_command_sequences_keep_invariants_and_are_deterministic(
    arguments: dict[str, Any], script: list[tuple[Any, ...]]
) -> None:
    assert run(arguments, script) == run(arguments, script)
