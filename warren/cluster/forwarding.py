"""Any node serves any client: what peer links carry for a queue that lives on another node.

A classic queue has one home node (``QueueState.home``). A client's node (the *access*
node) routes a publish itself and forwards the message to each target queue's home; a
consumer, ``basic.get``, ack, nack, reject, cancel and purge on a remote queue travel to
the home node, and deliveries travel back. Messages are msgpack maps ``{"f": kind, ...}``
(Raft's traffic on the same links is lists, so the two never look alike); kinds are
append-only.

Flow: a remote channel has ``forward_consumer_credit`` deliveries in flight at most; the access
node grants more as it hands deliveries to its client (a slow client slows its home-node
queue, memory stays bounded on both sides). A forwarded publish is confirmed to the client
only when every home node that holds it has answered ``PUBLISHED`` (after its fsync, for a
persistent message in a durable queue).

Failure: when a peer link goes down the access node server-cancels the consumers it had
there (``basic.cancel``, as RabbitMQ does when a queue's node goes away), nacks publishes
still waiting for that node and fails waiting calls; the home node requeues whatever that
peer's consumers held unacknowledged. A home node that is down makes its queues answer as
RabbitMQ's unavailable classic queues do (:func:`unavailable_text`).
"""

from __future__ import annotations

from enum import IntEnum


class Fwd(IntEnum):
    PUBLISH = 1  # access -> home: t (token, 0 = no answer wanted), v, q (queue names), x, k, p, b
    PUBLISHED = 2  # home -> access: t, ok
    CONSUME = 3  # access -> home: v, q, s (session), c (channel), tag, pf, pr, ex, na, call
    DELIVER = 5  # home -> access: s, c, tag, id (msg id), r (redelivered), x, k, p, b, v, q
    SETTLE = 6  # access -> home: v, q, how ("ack" | "requeue" | "reject"), ids
    CANCEL = 7  # access -> home: v, q, s, c, tag
    CREDIT = 8  # access -> home: s, c, n (deliveries the channel may take again)
    GET = 9  # access -> home: v, q, s, c, na, call
    PURGE = 10  # access -> home: v, q, call
    ANSWER = 11  # home -> access: call, e (reply code, 0 = ok), et (text), value
    STAT = 12  # access -> home: v, q, call; value [ready messages, consumers] (a declare-ok's counts)
    # quorum queues (warren.node.quorum): g is the queue's Raft group
    QCOMMAND = 13  # access -> leader: t (token, 0 = no answer wanted), g, o (QOp), a (its fields)
    QANSWER = 14  # leader -> access: t, ok, v (value) or e (error text), l (the leader, if known)
    QDELIVER = 15  # leader -> access: g, ch (channel), tag, id, r, n (delivery count), x, k, p, b
    QLEADER = 16  # leader -> every member: g, l: this node leads the group now
    RELEASED = 17  # any -> a peer it saw come back: while you were unreachable I let go of
    #                your consumers (of my classic queues, of the quorum queues I lead)


QUORUM_KINDS = frozenset({Fwd.QCOMMAND, Fwd.QANSWER, Fwd.QDELIVER, Fwd.QLEADER})


def unavailable_text(queue: str, vhost: str, home: str) -> str:
    """RabbitMQ's words for a classic queue whose node is down (a 404 on consume/get)."""
    return (f"home node '{home}' of durable queue '{queue}' in vhost '{vhost}' is down or "
            "inaccessible")
