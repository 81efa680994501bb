"""Names and keys a delivery carries as AMQP short strings are at most 255 bytes, whichever way
they arrive (the HTTP API and policies could pass longer ones; the delivery then failed to
encode and its connection was closed with 541)."""

from __future__ import annotations

import pytest

from warren.broker.policy import Policy
from warren.broker.vhost import VirtualHost
from warren.errors import AMQPError, ReplyCode

LONGEST = "é" * 127 + "x"  # 255 bytes
TOO_LONG = "é" * 128  # 256 bytes


def _refused(call, *args, **kwargs) -> AMQPError:  # type: ignore[no-untyped-def]
    with pytest.raises(AMQPError) as refused:
        call(*args, **kwargs)
    assert refused.value.code == ReplyCode.PRECONDITION_FAILED
    return refused.value


def test_queue_and_exchange_names_up_to_255_bytes() -> None:
    vhost = VirtualHost("/")
    vhost.declare_queue(LONGEST)
    vhost.declare_exchange(LONGEST, "fanout")
    assert "longer than 255 bytes" in _refused(vhost.declare_queue, TOO_LONG).text
    _refused(vhost.declare_exchange, TOO_LONG, "fanout")
    assert TOO_LONG not in vhost.queues and TOO_LONG not in vhost.exchanges


def test_dead_letter_exchange_and_routing_key_up_to_255_bytes() -> None:
    vhost = VirtualHost("/")
    vhost.declare_queue("ok", arguments={"x-dead-letter-exchange": LONGEST, "x-dead-letter-routing-key": LONGEST})
    for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
        arguments = {"x-dead-letter-exchange": "dlx", key: TOO_LONG}
        assert "{too_long,255}" in _refused(vhost.declare_queue, "q-" + key, arguments=arguments).text


def test_policy_keys_up_to_255_bytes() -> None:
    Policy("p", ".*", "queues", 0, {"dead-letter-routing-key": LONGEST})
    _refused(Policy, "p", ".*", "queues", 0, {"dead-letter-routing-key": TOO_LONG})
    _refused(Policy, "p", ".*", "all", 0, {"alternate-exchange": TOO_LONG})
