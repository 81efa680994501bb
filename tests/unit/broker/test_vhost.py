from __future__ import annotations

import pytest

from warren.broker.vhost import VirtualHost
from warren.errors import AMQPError, ReplyCode

from .helpers import msg


def error(fn, *args, **kwargs) -> AMQPError:  # type: ignore[no-untyped-def]
    with pytest.raises(AMQPError) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.fixture
def vhost() -> VirtualHost:
    return VirtualHost("/")


def names(queues: list) -> set[str]:  # type: ignore[type-arg]
    return {q.name for q in queues}


# ---- exchanges ----------------------------------------------------------------------


def test_default_exchanges_are_predeclared(vhost: VirtualHost) -> None:
    assert {x["name"]: x["type"] for x in vhost.list_exchanges()} == {
        "": "direct", "amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
        "amq.headers": "headers", "amq.match": "headers",
    }


def test_exchange_declare_rules(vhost: VirtualHost) -> None:
    exchange, created = vhost.declare_exchange("logs", "fanout")
    assert created and exchange.type == "fanout"
    assert vhost.declare_exchange("logs", "fanout") == (exchange, False)
    e = error(vhost.declare_exchange, "logs", "direct")
    assert (e.code, e.text) == (
        ReplyCode.PRECONDITION_FAILED,
        "inequivalent arg 'type' for exchange 'logs' in vhost '/': received 'direct' but current is 'fanout'",
    )
    e = error(vhost.declare_exchange, "logs", "fanout", durable=False)
    assert e.text == "inequivalent arg 'durable' for exchange 'logs' in vhost '/': received 'false' but current is 'true'"
    e = error(vhost.declare_exchange, "amq.mine", "direct")
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "exchange name 'amq.mine' contains reserved prefix 'amq.*'")
    assert vhost.declare_exchange("amq.direct", "direct")[1] is False  # equivalent redeclare is fine
    e = error(vhost.declare_exchange, "x", "x-unknown")
    assert (e.code, e.text) == (ReplyCode.COMMAND_INVALID, "unknown exchange type 'x-unknown'")
    assert e.closes_connection
    e = error(vhost.declare_exchange, "nope", "direct", passive=True)
    assert (e.code, e.text) == (ReplyCode.NOT_FOUND, "no exchange 'nope' in vhost '/'")
    e = error(vhost.declare_exchange, "", "direct")
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange")
    e = error(vhost.declare_exchange, "", "direct", passive=True)  # aiormq's test_channel_closed_reuse
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange")
    assert not e.closes_connection


def test_exchange_delete_rules(vhost: VirtualHost) -> None:
    vhost.declare_exchange("x", "direct")
    vhost.declare_queue("q")
    vhost.bind_queue("q", "x", "k")
    e = error(vhost.delete_exchange, "x", if_unused=True)
    assert (e.code, e.text) == (ReplyCode.PRECONDITION_FAILED, "exchange 'x' in vhost '/' in use")
    e = error(vhost.delete_exchange, "amq.direct")
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "deletion of system exchange 'amq.direct' in vhost '/' not allowed")
    vhost.delete_exchange("x")
    assert "x" not in vhost.exchanges
    vhost.delete_exchange("x")  # absent: still ok
    assert vhost.publish(msg(exchange="amq.direct", routing_key="k"), 0).unroutable


def test_internal_exchange_refuses_publish_but_routes_e2e(vhost: VirtualHost) -> None:
    vhost.declare_exchange("inner", "fanout", internal=True)
    vhost.declare_exchange("outer", "direct")
    vhost.declare_queue("q")
    vhost.bind_queue("q", "inner", "")
    vhost.bind_exchange("inner", "outer", "k")
    e = error(vhost.publish, msg(exchange="inner"), 0)
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "cannot publish to internal exchange 'inner' in vhost '/'")
    assert names(vhost.publish(msg(exchange="outer", routing_key="k"), 0).routed_queues) == {"q"}


def test_publish_to_missing_exchange_is_404(vhost: VirtualHost) -> None:
    e = error(vhost.publish, msg(exchange="missing"), 0)
    assert (e.code, e.text) == (ReplyCode.NOT_FOUND, "no exchange 'missing' in vhost '/'")


def test_e2e_loops_route_each_queue_once(vhost: VirtualHost) -> None:
    for name in ("a", "b", "c"):
        vhost.declare_exchange(name, "fanout")
    vhost.bind_exchange("b", "a", "")
    vhost.bind_exchange("c", "b", "")
    vhost.bind_exchange("a", "c", "")  # a loop
    vhost.declare_queue("q")
    vhost.bind_queue("q", "a", "")
    vhost.bind_queue("q", "c", "")
    outcome = vhost.publish(msg(exchange="b"), 0)
    assert names(outcome.routed_queues) == {"q"}
    assert vhost.queues["q"].messages_ready == 1


def test_alternate_exchange_gets_unroutable_messages(vhost: VirtualHost) -> None:
    vhost.declare_exchange("ae", "fanout")
    vhost.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    vhost.declare_queue("lost")
    vhost.declare_queue("found")
    vhost.bind_queue("lost", "ae", "")
    vhost.bind_queue("found", "main", "k")
    assert names(vhost.publish(msg(exchange="main", routing_key="k"), 0).routed_queues) == {"found"}
    outcome = vhost.publish(msg(exchange="main", routing_key="other"), 0)
    assert names(outcome.routed_queues) == {"lost"} and not outcome.unroutable
    e = error(vhost.declare_exchange, "main", "direct")
    assert e.text == (
        "inequivalent arg 'alternate-exchange' for exchange 'main' in vhost '/': "
        "received none but current is the value 'ae' of type 'longstr'"
    )


def test_default_exchange_routes_by_queue_name_and_cannot_be_bound(vhost: VirtualHost) -> None:
    vhost.declare_queue("jobs")
    assert names(vhost.publish(msg(routing_key="jobs"), 0).routed_queues) == {"jobs"}
    assert vhost.publish(msg(routing_key="nobody"), 0).unroutable
    e = error(vhost.bind_queue, "jobs", "", "jobs")
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange")


def test_cc_and_bcc_headers_add_routing_keys_and_bcc_is_stripped(vhost: VirtualHost) -> None:
    for name in ("a", "b", "c"):
        vhost.declare_queue(name)
    message = msg(routing_key="a", headers={"CC": ["b"], "BCC": ["c"]})
    assert names(vhost.publish(message, 0).routed_queues) == {"a", "b", "c"}
    assert message.props["headers"] == {"CC": ["b"]} and message.properties is None


def test_bindings_need_existing_ends(vhost: VirtualHost) -> None:
    vhost.declare_queue("q")
    e = error(vhost.bind_queue, "q", "nope", "k")
    assert (e.code, e.text) == (ReplyCode.NOT_FOUND, "no exchange 'nope' in vhost '/'")
    e = error(vhost.bind_queue, "nope", "amq.direct", "k")
    assert (e.code, e.text) == (ReplyCode.NOT_FOUND, "no queue 'nope' in vhost '/'")
    vhost.unbind_queue("q", "amq.direct", "never-bound")  # unbinding an absent binding is fine


def test_unbinding_is_idempotent_when_an_end_is_gone(vhost: VirtualHost) -> None:
    # as RabbitMQ 3.10 answers unbind-ok (aio-pika's cleanups unbind after deleting the queue)
    vhost.declare_exchange("auto", "direct", auto_delete=True)
    vhost.declare_queue("q")
    vhost.bind_queue("q", "auto", "k")
    vhost.delete_queue("q", if_unused=False, if_empty=False)
    assert "auto" not in vhost.exchanges  # the auto-delete exchange went with its last binding
    vhost.unbind_queue("q", "auto", "k")
    vhost.declare_queue("q2")
    vhost.unbind_queue("q2", "nope", "k")
    vhost.unbind_queue("nope", "amq.direct", "k")
    vhost.unbind_exchange("nope", "nope-either", "k")
    vhost.unbind_exchange("amq.fanout", "nope", "k")
    e = error(vhost.unbind_queue, "q2", "", "q2")
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange")
    e = error(vhost.unbind_exchange, "", "amq.direct", "k")
    assert e.code == ReplyCode.ACCESS_REFUSED


def test_listing_bindings_includes_default_exchange(vhost: VirtualHost) -> None:
    vhost.declare_queue("q")
    vhost.bind_queue("q", "amq.topic", "a.*", {"k": 1})
    listed = vhost.list_bindings()
    assert {"source": "", "vhost": "/", "destination": "q", "destination_type": "queue",
            "routing_key": "q", "arguments": {}} in listed
    assert {"source": "amq.topic", "vhost": "/", "destination": "q", "destination_type": "queue",
            "routing_key": "a.*", "arguments": {"k": 1}} in listed


def test_auto_delete_exchange_goes_with_its_last_binding(vhost: VirtualHost) -> None:
    vhost.declare_exchange("tmp", "direct", auto_delete=True)
    vhost.declare_queue("q1")
    vhost.declare_queue("q2")
    vhost.bind_queue("q1", "tmp", "a")
    vhost.bind_queue("q2", "tmp", "b")
    vhost.unbind_queue("q1", "tmp", "a")
    assert "tmp" in vhost.exchanges
    vhost.delete_queue("q2")
    assert "tmp" not in vhost.exchanges


# ---- queues -------------------------------------------------------------------------


def test_queue_declare_equivalence(vhost: VirtualHost) -> None:
    queue, created = vhost.declare_queue("q", durable=False, arguments={"x-max-length": 10})
    assert created
    assert vhost.declare_queue("q", arguments={"x-max-length": 10, "x-custom": 1}) == (queue, False)
    e = error(vhost.declare_queue, "q", durable=True, arguments={"x-max-length": 10})
    assert e.text == "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
    e = error(vhost.declare_queue, "q", arguments={"x-max-length": 20})
    assert (e.code, e.text) == (
        ReplyCode.PRECONDITION_FAILED,
        "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': "
        "received the value '20' of type 'long' but current is the value '10' of type 'long'",
    )
    e = error(vhost.declare_queue, "q")
    assert e.text == (
        "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': "
        "received none but current is the value '10' of type 'long'"
    )
    assert vhost.declare_queue("q", passive=True) == (queue, False)
    e = error(vhost.declare_queue, "missing", passive=True)
    assert (e.code, e.text) == (ReplyCode.NOT_FOUND, "no queue 'missing' in vhost '/'")


def test_reserved_prefix_and_server_named_queues(vhost: VirtualHost) -> None:
    e = error(vhost.declare_queue, "amq.mine")
    assert (e.code, e.text) == (ReplyCode.ACCESS_REFUSED, "queue name 'amq.mine' contains reserved prefix 'amq.*'")
    queue, created = vhost.declare_queue("amq.gen-abc", exclusive=True, owner="conn", server_named=True)
    assert created and queue.name == "amq.gen-abc"


LOCKED = (
    "cannot obtain exclusive access to locked queue 'q' in vhost '/'. It could be originally "
    "declared on another connection or the exclusive property value does not match that of "
    "the original declaration."
)


def test_exclusive_queue_belongs_to_its_connection(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", exclusive=True, owner="c1")
    vhost.declare_queue("q", exclusive=True, owner="c1")
    for call in (
        lambda: vhost.declare_queue("q", exclusive=True, owner="c2"),
        lambda: vhost.declare_queue("q", passive=True, owner="c2"),
        lambda: vhost.queue_for("q", owner="c2"),
        lambda: vhost.purge_queue("q", owner="c2"),
        lambda: vhost.delete_queue("q", owner="c2"),
        lambda: vhost.bind_queue("q", "amq.direct", "k", owner="c2"),
    ):
        e = error(call)
        assert (e.code, e.text) == (ReplyCode.RESOURCE_LOCKED, LOCKED)
    gone = vhost.owner_closed("c1")
    assert names(gone) == {"q"} and gone[0].deleted and "q" not in vhost.queues


def test_declaring_existing_shared_queue_as_exclusive_is_locked(vhost: VirtualHost) -> None:
    vhost.declare_queue("q")
    e = error(vhost.declare_queue, "q", exclusive=True, owner="c1")
    assert e.code == ReplyCode.RESOURCE_LOCKED
    assert vhost.queue_for("q", owner="c1").name == "q"


def test_queue_delete_rules(vhost: VirtualHost) -> None:
    from warren.broker.queue import Consumer

    queue, _ = vhost.declare_queue("q")
    vhost.publish(msg(routing_key="q"), 0)
    e = error(vhost.delete_queue, "q", if_empty=True)
    assert (e.code, e.text) == (ReplyCode.PRECONDITION_FAILED, "queue 'q' in vhost '/' is not empty")
    queue.add_consumer(Consumer("c", "o"))
    e = error(vhost.delete_queue, "q", if_unused=True)
    assert (e.code, e.text) == (ReplyCode.PRECONDITION_FAILED, "queue 'q' in vhost '/' in use")
    assert vhost.delete_queue("q") == 1
    assert queue.deleted and vhost.delete_queue("q") == 0
    assert vhost.publish(msg(routing_key="q"), 0).unroutable


def test_purge_counts_ready_messages(vhost: VirtualHost) -> None:
    vhost.declare_queue("q")
    for _ in range(3):
        vhost.publish(msg(routing_key="q"), 0)
    assert vhost.purge_queue("q") == 3
    assert vhost.queues["q"].messages_ready == 0


def test_invalid_queue_arguments_are_406(vhost: VirtualHost) -> None:
    cases = {
        "x-max-length": (-1, "{value_negative,-1}"),
        "x-message-ttl": ("10", '"expected integer, got longstr"'),
        "x-expires": (2**32, "{value_too_big,4294967296}"),
        "x-max-length-bytes": (True, '"expected integer, got bool"'),
        "x-max-priority": (256, "{max_value_exceeded,256}"),
        "x-overflow": ("explode", "invalid_overflow"),
        "x-queue-type": ("fancy", "\"unsupported queue type 'fancy'\""),
        "x-dead-letter-exchange": (5, "{unacceptable_type,long}"),
        "x-single-active-consumer": (1, "{unacceptable_type,long}"),
    }
    for key, (value, term) in cases.items():
        e = error(vhost.declare_queue, "q", arguments={key: value})
        assert (e.code, e.text) == (ReplyCode.PRECONDITION_FAILED, f"invalid arg '{key}' for queue 'q' in vhost '/': {term}")
    e = error(vhost.declare_queue, "q", arguments={"x-expires": 0})
    assert e.text == "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"
    quorum = {"x-queue-type": "quorum"}
    e = error(vhost.declare_queue, "q", arguments=quorum)
    assert (e.code, e.text) == (ReplyCode.PRECONDITION_FAILED, "invalid property 'non-durable' for queue 'q' in vhost '/'")
    e = error(vhost.declare_queue, "q", durable=True, exclusive=True, arguments=quorum)
    assert e.text == "invalid property 'exclusive-owner' for queue 'q' in vhost '/'"
    e = error(vhost.declare_queue, "q", durable=True, auto_delete=True, arguments=quorum)
    assert e.text == "invalid property 'auto-delete' for queue 'q' in vhost '/'"
    e = error(vhost.declare_queue, "q", durable=True, arguments={**quorum, "x-quorum-initial-group-size": 0})
    assert e.text == "invalid arg 'x-quorum-initial-group-size' for queue 'q' in vhost '/': {value_zero,0}"
    e = error(vhost.declare_queue, "q", arguments={"x-dead-letter-routing-key": "k"})
    assert "routing_key_but_no_dlx_defined" in e.text
    assert not vhost.queues


def test_export_and_restore_durable_definitions(vhost: VirtualHost) -> None:
    vhost.declare_exchange("x", "topic")
    vhost.declare_exchange("t", "fanout", durable=False)
    queue, _ = vhost.declare_queue("dq", durable=True, arguments={"x-max-length": 5})
    queue.store_id = 7
    vhost.declare_queue("tq")
    vhost.bind_queue("dq", "x", "a.#")
    vhost.bind_queue("tq", "x", "a.#")
    restored = VirtualHost.from_definition("/", vhost.export_durable())
    assert set(restored.queues) == {"dq"} and restored.queues["dq"].store_id == 7
    assert restored.queues["dq"].args.max_length == 5
    assert "t" not in restored.exchanges
    assert names(restored.publish(msg(exchange="x", routing_key="a.b"), 0).routed_queues) == {"dq"}


def test_administrative_caller_may_delete_an_exclusive_queue(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", exclusive=True, auto_delete=True, owner="c1")
    assert vhost.delete_queue("q") == 0 and "q" not in vhost.queues


def test_auto_delete_queue_goes_with_its_last_consumer(vhost: VirtualHost) -> None:
    from warren.broker.queue import Consumer

    queue, _ = vhost.declare_queue("q", auto_delete=True)
    assert not vhost.cancel_consumer(queue, "never")  # never consumed: stays
    queue.add_consumer(Consumer("a", "ch"))
    queue.add_consumer(Consumer("b", "ch"))
    assert not vhost.cancel_consumer(queue, "a")
    assert vhost.cancel_consumer(queue, "b") and queue.deleted and "q" not in vhost.queues


def test_topic_route_cache_follows_binding_changes(vhost: VirtualHost) -> None:
    vhost.declare_queue("q")
    vhost.declare_exchange("t", "topic")
    assert vhost.publish(msg(exchange="t", routing_key="a.b"), 0).unroutable
    vhost.bind_queue("q", "t", "a.*")
    assert names(vhost.publish(msg(exchange="t", routing_key="a.b"), 0).routed_queues) == {"q"}
    vhost.unbind_queue("q", "t", "a.*")
    assert vhost.publish(msg(exchange="t", routing_key="a.b"), 0).unroutable


def test_alternate_exchange_from_policy_and_argument_wins(vhost: VirtualHost) -> None:
    from warren.broker.policy import Policy

    for name in ("ae1", "ae2"):
        vhost.declare_exchange(name, "fanout")
        vhost.declare_queue(name + "-q")
        vhost.bind_queue(name + "-q", name, "")
    vhost.declare_exchange("plain", "direct")
    vhost.declare_exchange("own", "direct", arguments={"alternate-exchange": "ae2"})
    vhost.set_policy(Policy("ae", "^(plain|own)$", "exchanges", 0, {"alternate-exchange": "ae1"}))
    assert names(vhost.publish(msg(exchange="plain", routing_key="x"), 0).routed_queues) == {"ae1-q"}
    assert names(vhost.publish(msg(exchange="own", routing_key="x"), 0).routed_queues) == {"ae2-q"}
    assert {x["name"]: x["policy"] for x in vhost.list_exchanges()}["plain"] == "ae"
