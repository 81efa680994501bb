"""Quorum queues on three real nodes: declared as RabbitMQ's are, confirmed once committed,
consumed from any node, and still serving after the leader is killed with SIGKILL."""

from __future__ import annotations

import json
import time
from typing import Any

import pika
import pytest
import requests
from pika.exceptions import ChannelClosedByBroker, NackError
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.integration.cluster_procs import Member, wait_for
from warren.cli.ctl_cmd import EXIT_UNAVAILABLE
from warren.cli.main import app

pytestmark = pytest.mark.timeout(180)
QUORUM = {"x-queue-type": "quorum"}


def channel(member: Member) -> Any:
    return pika.BlockingConnection(pika.URLParameters(member.url)).channel()


def listed(member: Member, queue: str) -> dict[str, Any]:
    return {q["name"]: q for q in member.get("/api/queues")}[queue]


def leader_of(member: Member, queue: str) -> str:
    wait_for(lambda: bool(listed(member, queue).get("leader")), 10, f"a leader for {queue}")
    return str(listed(member, queue)["leader"])


def quorum_critical(member: Member) -> tuple[int, list[str]]:
    """``warren ctl check_if_node_is_quorum_critical`` against ``member``: its exit code
    and the queues it names."""
    result = CliRunner().invoke(app, ["ctl", "--node", f"http://127.0.0.1:{member.http_port}",
                                      "--formatter", "json", "check_if_node_is_quorum_critical"])
    if result.exit_code == 0:
        return 0, []
    return result.exit_code, [q["readable_name"] for q in json.loads(result.stdout)["queues"]]


def quorum_status(member: Member, queue: str) -> dict[str, dict[str, Any]]:
    """``warren ctl quorum_status`` against ``member``: each member's row."""
    result = CliRunner().invoke(app, ["ctl", "--node", f"http://127.0.0.1:{member.http_port}",
                                      "--formatter", "json", "quorum_status", queue])
    assert result.exit_code == 0, result.output
    return {row["node"]: row for row in json.loads(result.stdout)}


def raft_series(member: Member, queue: str) -> dict[str, float]:
    """``member``'s rabbitmq_raft_* series for ``queue`` on /metrics/per-object."""
    text = requests.get(f"http://127.0.0.1:{member.http_port}/metrics/per-object", timeout=5).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("rabbitmq_raft_") and s.labels.get("queue") == queue}


def leader_member(trio: list[Member], queue: str) -> Member:
    return {m.name: m for m in trio}[leader_of(trio[0], queue)]


def refusal(ch: Any, declare: Any) -> tuple[int, str]:
    with pytest.raises(ChannelClosedByBroker) as info:
        declare(ch)
    return info.value.reply_code, info.value.reply_text


def test_declare_follows_rabbitmqs_rules(trio: list[Member]) -> None:
    a = trio[0]
    cases = [
        (lambda ch: ch.queue_declare("q1", arguments=QUORUM), "invalid property 'non-durable' for queue 'q1' in vhost '/'"),
        (lambda ch: ch.queue_declare("q1", durable=True, exclusive=True, arguments=QUORUM),
         "invalid property 'exclusive-owner' for queue 'q1' in vhost '/'"),
        (lambda ch: ch.queue_declare("q1", durable=True, auto_delete=True, arguments=QUORUM),
         "invalid property 'auto-delete' for queue 'q1' in vhost '/'"),
        (lambda ch: ch.queue_declare("", durable=True, arguments=QUORUM),
         "Cannot declare a server-named queue for type rabbit_quorum_queue"),
    ]
    for declare, text in cases:
        code, reply = refusal(channel(a), declare)
        assert (code, reply) == (406, f"PRECONDITION_FAILED - {text}")
    ch = channel(a)
    ch.queue_declare("q1", durable=True, arguments=QUORUM)
    code, reply = refusal(ch, lambda ch: ch.queue_declare("q1", durable=True, arguments={**QUORUM, "x-max-length": 5}))
    assert code == 406 and "inequivalent arg 'x-max-length'" in reply
    leader_of(trio[2], "q1")
    shown = listed(trio[2], "q1")
    assert shown["type"] == "quorum" and sorted(shown["members"]) == ["a", "b", "c"]
    assert shown["leader"] in ("a", "b", "c") and sorted(shown["online"]) == ["a", "b", "c"]


def test_publish_on_one_node_consume_on_another(trio: list[Member]) -> None:
    a, b, c = trio
    setup = channel(a)
    setup.queue_declare("orders", durable=True, arguments=QUORUM)
    publisher = channel(c)
    publisher.confirm_delivery()
    for i in range(300):
        publisher.basic_publish("", "orders", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    assert channel(b).queue_declare("orders", passive=True).method.message_count == 300
    for member in trio:  # every member reports its replica's Raft state with RabbitMQ's names
        wait_for(lambda member=member: raft_series(member, "orders")["rabbitmq_raft_log_commit_index"] >= 300, 5,
                 f"{member.name}'s replica to commit the 300 publishes")
        series = raft_series(member, "orders")
        assert series["rabbitmq_raft_term_total"] >= 1
        assert series["rabbitmq_raft_log_last_applied_index"] <= series["rabbitmq_raft_log_last_written_index"]
    assert 0 < raft_series(leader_member(trio, "orders"), "orders")["rabbitmq_raft_entry_commit_latency_seconds"] < 1

    consumer = channel(b)
    consumer.basic_qos(prefetch_count=20)
    received: list[int] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        received.append(int(body))
        ch.basic_ack(method.delivery_tag)
        if len(received) == 300:
            ch.stop_consuming()

    consumer.basic_consume("orders", on_message)
    consumer.connection.call_later(20, consumer.stop_consuming)
    consumer.start_consuming()
    assert received == list(range(300))  # every confirmed message, in order
    assert channel(a).basic_get("orders")[0] is None


def test_single_active_consumer_and_consumer_priorities(trio: list[Member]) -> None:
    a, b, c = trio
    setup = channel(a)
    setup.queue_declare("sac", durable=True, arguments={**QUORUM, "x-single-active-consumer": True})
    setup.queue_declare("ranked", durable=True, arguments=QUORUM)
    setup.confirm_delivery()

    def consumer(member: Member, queue: str, got: list[bytes], **arguments: Any) -> Any:
        ch = channel(member)
        ch.basic_qos(prefetch_count=50)

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            got.append(body)
            ch.basic_ack(method.delivery_tag)
        ch.basic_consume(queue, on_message, arguments=arguments or None)
        return ch

    first: list[bytes] = []
    second: list[bytes] = []
    active = consumer(b, "sac", first)
    standby = consumer(c, "sac", second)
    for i in range(10):
        setup.basic_publish("", "sac", b"%d" % i)
    for _ in range(200):
        if len(first) == 10:
            break
        active.connection.process_data_events(time_limit=0.02)
        standby.connection.process_data_events(time_limit=0.02)
    assert len(first) == 10 and second == []  # one consumer at a time, on any node
    active.connection.close()  # the standby takes over
    for i in range(10, 15):
        setup.basic_publish("", "sac", b"%d" % i)
    for _ in range(200):
        if len(second) == 5:
            break
        standby.connection.process_data_events(time_limit=0.02)
    assert second == [b"%d" % i for i in range(10, 15)]

    low: list[bytes] = []
    high: list[bytes] = []
    low_ch = consumer(b, "ranked", low, **{"x-priority": 0})
    high_ch = consumer(c, "ranked", high, **{"x-priority": 10})
    for i in range(30):
        setup.basic_publish("", "ranked", b"%d" % i)
    for _ in range(200):
        if len(high) + len(low) == 30:
            break
        low_ch.connection.process_data_events(time_limit=0.02)
        high_ch.connection.process_data_events(time_limit=0.02)
    assert len(high) == 30 and low == []  # the higher priority takes all while it has credit


def test_a_vhost_whose_default_queue_type_is_quorum(trio: list[Member]) -> None:
    a, b, c = trio
    assert a.put("/api/vhosts/typed", {"default_queue_type": "stream"}).status_code == 400
    assert a.put("/api/vhosts/typed", {"default_queue_type": "quorum"}).status_code == 201
    assert b.get("/api/vhosts/typed")["default_queue_type"] == "quorum"
    ch = pika.BlockingConnection(pika.URLParameters(b.url.replace("%2F", "typed"))).channel()
    ch.queue_declare("orders", durable=True)  # no x-queue-type: the vhost's default
    ch.queue_declare("orders", durable=True)  # a redeclare without it is equivalent
    temporary = ch.queue_declare("", exclusive=True).method.queue  # cannot be quorum: classic
    types = {q["name"]: q.get("type") for q in c.get("/api/queues/typed")}
    assert types == {"orders": "quorum", temporary: "classic"}
    exported = a.get("/api/definitions")
    assert {"name": "typed", "metadata": {"description": "", "tags": [], "default_queue_type": "quorum"}} \
        in exported["vhosts"]


def test_x_expires_deletes_an_unused_quorum_queue_on_every_node(trio: list[Member]) -> None:
    a, b, c = trio
    setup = channel(a)
    setup.queue_declare("short.lived", durable=True, arguments={**QUORUM, "x-expires": 1500})
    consumer = channel(b)  # in use from another node than the leader: it must not expire
    tag = consumer.basic_consume("short.lived", lambda *args: None)
    consumer.connection.sleep(3)
    assert "short.lived" in {q["name"] for q in c.get("/api/queues")}
    consumer.basic_cancel(tag)
    started = time.monotonic()
    wait_for(lambda: all("short.lived" not in {q["name"] for q in m.get("/api/queues")} for m in trio), 10,
             "the unused queue to be deleted on every node")
    assert time.monotonic() - started >= 1.2  # not before its idle period
    with pytest.raises(ChannelClosedByBroker) as gone:
        channel(c).queue_declare("short.lived", passive=True)
    assert gone.value.reply_code == 404


def test_max_length_reject_publish_nacks_and_drop_head_drops(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(b)
    ch.queue_declare("capped", durable=True, arguments={**QUORUM, "x-max-length": 2, "x-overflow": "reject-publish"})
    ch.queue_declare("rolling", durable=True, arguments={**QUORUM, "x-max-length": 2})
    ch.confirm_delivery()
    outcomes = []
    for i in range(3):
        try:
            ch.basic_publish("", "capped", b"%d" % i)
            outcomes.append("confirmed")
        except NackError:
            outcomes.append("nacked")
        ch.basic_publish("", "rolling", b"%d" % i)
    assert outcomes == ["confirmed", "confirmed", "nacked"]
    assert [channel(c).basic_get("rolling", auto_ack=True)[2] for _ in range(2)] == [b"1", b"2"]


def test_a_policy_changes_a_quorum_queue_on_every_member(trio: list[Member]) -> None:
    """As RabbitMQ: a policy set after the declare applies at once (a lower max-length drops
    the head, dead-lettered to the policy's DLX), on every replica; apply-to classic_queues
    leaves quorum queues alone; clearing the policy lifts the limit."""
    a, b, c = trio
    ch = channel(b)
    ch.queue_declare("pol.q", durable=True, arguments=QUORUM)
    ch.queue_declare("pol.dead", durable=True, arguments=QUORUM)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "pol.q", b"%d" % i)
    assert a.put("/api/policies/%2F/classic-cap", {"pattern": "^pol\\.q$", "apply-to": "classic_queues",
                                                     "priority": 9, "definition": {"max-length": 1}}).ok
    assert a.put("/api/policies/%2F/quorum-cap", {
        "pattern": "^pol\\.q$", "apply-to": "quorum_queues",
        "definition": {"max-length": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "pol.dead"}}).ok
    for member in trio:  # each member's listing counts its own replica
        wait_for(lambda member=member: listed(member, "pol.q").get("messages") == 2, 10,
                 f"{member.name}'s replica to apply the policy")
    assert listed(c, "pol.q")["policy"] == "quorum-cap"
    wait_for(lambda: ch.queue_declare("pol.dead", passive=True).method.message_count == 3, 10,
             "the dropped head dead-lettered to the policy's DLX")
    assert [channel(c).basic_get("pol.q", auto_ack=True)[2] for _ in range(2)] == [b"3", b"4"]
    assert requests.delete(f"http://127.0.0.1:{a.http_port}/api/policies/%2F/quorum-cap",
                           auth=("guest", "guest"), timeout=15).status_code == 204
    wait_for(lambda: listed(c, "pol.q").get("policy") in (None, ""), 10, "the policy cleared")
    for i in range(4):
        ch.basic_publish("", "pol.q", b"%d" % i)
    wait_for(lambda: ch.queue_declare("pol.q", passive=True).method.message_count == 4, 10,
             "no max-length once the policy is gone")


def test_requeue_counts_deliveries_and_the_limit_drops_poison(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(b)
    ch.queue_declare("poison", durable=True, arguments={**QUORUM, "x-delivery-limit": 2})
    ch.confirm_delivery()
    ch.basic_publish("", "poison", b"bad")
    seen = []
    for _ in range(3):
        method, properties, body = ch.basic_get("poison")
        assert body == b"bad"
        seen.append((method.redelivered, (properties.headers or {}).get("x-delivery-count")))
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert seen == [(False, None), (True, 1), (True, 2)]
    wait_for(lambda: ch.queue_declare("poison", passive=True).method.message_count == 0, 5,
             "the third return to drop it (delivery limit 2)")
    assert ch.basic_get("poison")[0] is None


def test_a_closed_channel_returns_what_it_held_and_purge(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(c)
    ch.queue_declare("held", durable=True, arguments=QUORUM)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "held", str(i).encode())
    holder = channel(a)
    taken = [holder.basic_get("held")[2] for _ in range(2)]
    assert taken == [b"0", b"1"]
    holder.close()  # unacked: both go back, flagged redelivered (once the leader hears of it)
    wait_for(lambda: ch.queue_declare("held", passive=True).method.message_count == 5, 5,
             "the closed channel's two messages to be ready again")
    method, _, body = ch.basic_get("held", auto_ack=True)
    assert body == b"0" and method.redelivered
    assert ch.queue_purge("held").method.message_count == 4
    assert ch.basic_get("held")[0] is None


def test_dead_letters_flow_from_and_to_quorum_queues(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(b)
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("parked", durable=True)  # classic, on b
    ch.queue_bind("parked", "dlx")
    ch.queue_declare("work", durable=True, arguments={**QUORUM, "x-dead-letter-exchange": "dlx",
                                                     "x-delivery-limit": 0})
    ch.confirm_delivery()
    ch.basic_publish("", "work", b"rejected")
    ch.basic_publish("", "work", b"poison")
    worker = channel(c)
    method, _, _ = worker.basic_get("work")
    worker.basic_reject(method.delivery_tag, requeue=False)
    method, _, _ = worker.basic_get("work")
    worker.basic_nack(method.delivery_tag, requeue=True)  # limit 0: its first return is too many
    wait_for(lambda: ch.queue_declare("parked", passive=True).method.message_count == 2, 10,
             "both dead letters parked")
    reasons = []
    for _ in range(2):
        _, properties, body = ch.basic_get("parked", auto_ack=True)
        reasons.append((body, properties.headers["x-death"][0]["reason"]))
    assert sorted(reasons) == [(b"poison", "delivery_limit"), (b"rejected", "rejected")]

    # and the other way: a classic queue's dead letters into a quorum queue
    ch.exchange_declare("to-quorum", "fanout", durable=True)
    ch.queue_declare("retry", durable=True, arguments=QUORUM)
    ch.queue_bind("retry", "to-quorum")
    ch.queue_declare("inbox", durable=True, arguments={"x-dead-letter-exchange": "to-quorum"})
    ch.basic_publish("", "inbox", b"again")
    getter = channel(a)
    method, _, _ = getter.basic_get("inbox")
    getter.basic_reject(method.delivery_tag, requeue=False)
    wait_for(lambda: channel(c).queue_declare("retry", passive=True).method.message_count == 1, 10,
             "the dead letter in the quorum queue")
    assert channel(c).basic_get("retry", auto_ack=True)[2] == b"again"


def test_leader_killed_confirmed_messages_survive(trio: list[Member]) -> None:
    a, b, c = trio
    channel(a).queue_declare("ledger", durable=True, arguments=QUORUM)
    leader = leader_member(trio, "ledger")
    survivors = [m for m in trio if m is not leader]
    assert quorum_critical(survivors[0]) == (0, [])  # all three up: any one may stop
    status = quorum_status(survivors[0], "ledger")  # every member reports its own replica
    assert sorted(status) == ["a", "b", "c"] and status[leader.name]["raft_state"] == "leader"
    assert sorted(status[m.name]["raft_state"] for m in survivors) == ["follower", "follower"]
    assert len({row["term"] for row in status.values()}) == 1
    publisher = channel(survivors[0])
    publisher.confirm_delivery()
    confirmed, nacked, slowest = [], [], 0.0
    for i in range(600):
        if i == 300:
            leader.kill()
        started = time.monotonic()
        try:
            publisher.basic_publish("", "ledger", str(i).encode(), pika.BasicProperties(delivery_mode=2))
            confirmed.append(i)
        except NackError:
            nacked.append(i)
        slowest = max(slowest, time.monotonic() - started)
    # the publish that met the dead leader is sent again to the new one: confirmed, not nacked
    assert nacked == [] and len(confirmed) == 600
    assert slowest < 5, f"a new leader took {slowest:.2f}s to confirm"
    assert leader_of(survivors[1], "ledger") != leader.name
    # two of three left: stopping either would cost the queue its majority
    code, named = quorum_critical(survivors[0])  # (the fixture's other tests' queues too)
    assert code == EXIT_UNAVAILABLE and "queue 'ledger' in vhost '/'" in named
    after = quorum_status(survivors[1], "ledger")
    assert after[leader.name]["raft_state"] == "unreachable"
    assert after[survivors[1].name]["commit_index"] >= len(confirmed) and after[survivors[1].name]["term"] > status[leader.name]["term"]
    health = requests.get(f"http://127.0.0.1:{survivors[1].http_port}/api/health/checks/node-is-quorum-critical",
                          auth=("guest", "guest"), timeout=5)
    assert health.status_code == 503
    assert {"name": "ledger", "readable_name": "queue 'ledger' in vhost '/'", "virtual_host": "/",
            "type": "quorum"} in health.json()["queues"]
    consumer = channel(survivors[1])
    got = []
    while True:
        method, _, body = consumer.basic_get("ledger", auto_ack=True)
        if method is None:
            break
        got.append(int(body))
    assert sorted(got) == confirmed  # no confirmed message lost, none enqueued twice by a resend


def test_standalone_node_refuses_naming_the_fix(node: Any) -> None:
    ch = pika.BlockingConnection(pika.URLParameters(node.amqp_url)).channel()
    code, reply = refusal(ch, lambda ch: ch.queue_declare("q", durable=True, arguments=QUORUM))
    assert code == 406 and "--cluster-secret" in reply
