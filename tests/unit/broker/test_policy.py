from __future__ import annotations

import pytest

from warren.broker.policy import Policy, effective_queue_args, matching_policy
from warren.broker.queue_args import QueueArgs
from warren.broker.vhost import VirtualHost
from warren.errors import AMQPError, ReplyCode

from .helpers import msg


def test_highest_priority_matching_policy_applies() -> None:
    policies = [
        Policy("all", ".*", "queues", 0, {"max-length": 100}),
        Policy("jobs", "^jobs\\.", "queues", 5, {"max-length": 10}),
        Policy("ex", ".*", "exchanges", 9, {"alternate-exchange": "ae"}),
    ]
    assert matching_policy(policies, "queue", "jobs.a").name == "jobs"  # type: ignore[union-attr]
    assert matching_policy(policies, "queue", "other").name == "all"  # type: ignore[union-attr]
    assert matching_policy(policies, "exchange", "jobs.a").name == "ex"  # type: ignore[union-attr]


def test_apply_to_classic_or_quorum_queues_picks_the_queue_type() -> None:
    """RabbitMQ 3.12's apply-to values: "queues" covers both types."""
    policies = [Policy("classic", ".*", "classic_queues", 2, {"max-length": 1}),
                Policy("quorum", ".*", "quorum_queues", 1, {"max-length": 2}),
                Policy("any", ".*", "queues", 0, {"max-length": 3})]
    assert matching_policy(policies, "queue", "q").name == "classic"  # type: ignore[union-attr]
    assert matching_policy(policies, "quorum_queue", "q").name == "quorum"  # type: ignore[union-attr]
    assert matching_policy(policies[2:], "quorum_queue", "q").name == "any"  # type: ignore[union-attr]
    assert matching_policy(policies[:1], "quorum_queue", "q") is None


def test_lower_limit_wins_and_queue_argument_wins_for_dlx_and_overflow() -> None:
    declared = QueueArgs(max_length=50, message_ttl=None, dead_letter_exchange="mine")
    policy = Policy("p", ".*", "all", 0, {
        "max-length": 100, "message-ttl": 5000, "dead-letter-exchange": "theirs",
        "overflow": "reject-publish", "delivery-limit": 3,
    })
    args = effective_queue_args(declared, policy)
    assert args.max_length == 50 and args.message_ttl == 5000
    assert args.dead_letter_exchange == "mine" and args.overflow == "reject-publish"
    assert args.delivery_limit == 3
    assert effective_queue_args(QueueArgs(max_length=200), policy).max_length == 100


@pytest.mark.parametrize(
    "definition",
    [{}, {"max-length": -1}, {"message-ttl": "10"}, {"overflow": "explode"}, {"dead-letter-exchange": 5}],
)
def test_invalid_definitions_are_refused(definition: dict) -> None:
    with pytest.raises(AMQPError) as info:
        Policy("p", ".*", "queues", 0, definition)
    assert info.value.code == ReplyCode.PRECONDITION_FAILED


def test_bad_pattern_and_apply_to_are_refused() -> None:
    with pytest.raises(AMQPError):
        Policy("p", "(", "queues", 0, {"max-length": 1})
    with pytest.raises(AMQPError):
        Policy("p", ".*", "streams", 0, {"max-length": 1})


def test_vhost_applies_policies_to_existing_and_new_queues() -> None:
    vhost = VirtualHost("/")
    queue, _ = vhost.declare_queue("jobs.a")
    for i in range(5):
        vhost.publish(msg(b"m%d" % i, routing_key="jobs.a"), 0)
    vhost.set_policy(Policy("cap", "^jobs\\.", "queues", 0, {"max-length": 2}))
    assert queue.policy == "cap" and queue.messages_ready == 2  # a lower limit applies at once
    later, _ = vhost.declare_queue("jobs.b")
    assert later.args.max_length == 2 and later.policy == "cap"
    assert vhost.list_queues()[0]["policy"] == "cap"
    vhost.clear_policy("cap")
    assert queue.args.max_length is None and queue.policy is None
    with pytest.raises(AMQPError) as info:
        vhost.clear_policy("cap")
    assert info.value.code == ReplyCode.NOT_FOUND


def test_policy_dead_letter_exchange_routes_expired_messages() -> None:
    vhost = VirtualHost("/")
    vhost.declare_queue("dead")
    vhost.declare_exchange("dlx", "fanout")
    vhost.bind_queue("dead", "dlx", "")
    vhost.set_policy(Policy("ttl", "^work$", "queues", 0, {"message-ttl": 10, "dead-letter-exchange": "dlx"}))
    vhost.declare_queue("work")
    vhost.publish(msg(routing_key="work"), 0)
    vhost.expire(11)
    assert vhost.queues["dead"].messages_ready == 1


def test_policies_survive_export() -> None:
    vhost = VirtualHost("/")
    vhost.set_policy(Policy("cap", "^q$", "queues", 1, {"max-length": 3}))
    vhost.declare_queue("q", durable=True)
    restored = VirtualHost.from_definition("/", vhost.export_durable())
    assert restored.queues["q"].args.max_length == 3 and restored.list_policies() == vhost.list_policies()
