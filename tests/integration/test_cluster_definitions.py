"""Definitions in a cluster of real processes: made on any member, visible on every member,
answered only once committed, refused without a majority, kept across restarts."""

from __future__ import annotations

import time
from typing import Any

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from tests.integration.cluster_procs import Member, wait_for

pytestmark = pytest.mark.timeout(180)


def channel(member: Member) -> Any:
    return pika.BlockingConnection(pika.URLParameters(member.url)).channel()


def test_a_declare_on_one_member_is_seen_at_once_on_the_others(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(c)
    ch.exchange_declare("orders", "topic", durable=True)
    ch.queue_declare("orders.eu", durable=True, arguments={"x-max-length": 100})
    ch.queue_bind("orders.eu", "orders", "eu.#")
    # no waiting: declare-ok came after the commit, a passive declare reads after a barrier
    for member in (a, b):
        other = channel(member)
        assert other.queue_declare("orders.eu", passive=True).method.queue == "orders.eu"
        other.exchange_declare("orders", passive=True)
        other.connection.close()
    bindings = a.get("/api/bindings/%2F")
    assert {(x["source"], x["destination"], x["routing_key"]) for x in bindings} >= {("orders", "orders.eu", "eu.#")}
    shown = {q["name"]: q for q in b.get("/api/queues/%2F")}
    assert shown["orders.eu"]["arguments"] == {"x-max-length": 100}
    # an inequivalent redeclare is refused, on any member, as on RabbitMQ
    other = channel(b)
    with pytest.raises(ChannelClosedByBroker) as refused:
        other.queue_declare("orders.eu", durable=False)
    assert refused.value.reply_code == 406
    ch.queue_delete("orders.eu")
    ch.connection.close()
    other = channel(a)
    with pytest.raises(ChannelClosedByBroker) as gone:
        other.queue_declare("orders.eu", passive=True)
    assert gone.value.reply_code == 404


def test_queues_have_a_home_node_by_their_locator(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(b)
    ch.queue_declare("local.one", durable=True)
    for i in range(12):
        ch.queue_declare(f"spread.{i}", durable=True, arguments={"x-queue-leader-locator": "balanced"})
    with pytest.raises(ChannelClosedByBroker) as refused:
        ch.queue_declare("bad.locator", arguments={"x-queue-leader-locator": "nearest"})
    assert refused.value.reply_code == 406
    ch.connection.close()
    wait_for(lambda: "spread.11" in {q["name"] for q in a.get("/v1/cluster/sharding")}, 5, "a applied them")
    homes = {q["name"]: q["node"] for q in a.get("/v1/cluster/sharding")}
    assert homes["local.one"] == "b"  # client-local: the declaring connection's node
    assert {homes[f"spread.{i}"] for i in range(12)} == {"a", "b", "c"}
    assert {q["name"]: q["node"] for q in c.get("/api/queues/%2F")}["local.one"] == "b"


def test_users_policies_and_definitions_replicate_over_http(trio: list[Member]) -> None:
    a, b, c = trio
    assert a.put("/api/users/ops", {"password": "s3cret", "tags": "monitoring"}).status_code == 201
    assert b.put("/api/policies/%2F/cap", {"pattern": "^capped", "definition": {"max-length": 2},
                                           "apply-to": "queues"}).status_code == 201
    assert c.put("/api/queues/%2F/capped.q", {"durable": True}).status_code == 201
    # listings read this member's model: it applies what committed within moments
    wait_for(lambda: {u["name"] for u in c.get("/api/users")} >= {"guest", "ops"}, 5, "ops on c")
    wait_for(lambda: [q["policy"] for q in a.get("/api/queues/%2F") if q["name"] == "capped.q"] == ["cap"],
             5, "the policy applied on a")
    exported = b.get("/api/definitions")
    assert {"name": "cap", "vhost": "/"}.items() <= next(p for p in exported["policies"]).items()
    # import on one member, export on another: the same definitions
    document = {"vhosts": [{"name": "imported"}], "queues": [
        {"name": "iq", "vhost": "imported", "durable": True, "auto_delete": False, "arguments": {}},
        {"name": "iqq", "vhost": "imported", "durable": True, "auto_delete": False,
         "arguments": {"x-queue-type": "quorum"}}],  # a cluster imports quorum queues as quorum queues
        "permissions": [{"user": "guest", "vhost": "imported", "configure": ".*", "write": ".*", "read": ".*"}]}
    assert a.post("/api/definitions", document).status_code in (200, 201, 204)
    again = c.get("/api/definitions")  # an export reads after a barrier: no waiting
    assert {("imported", "iq"), ("imported", "iqq")} <= {(q["vhost"], q["name"]) for q in again["queues"]}
    quorum = next(q for q in c.get("/api/queues/imported") if q["name"] == "iqq")
    assert quorum["type"] == "quorum" and len(quorum["members"]) == 3


def test_exclusive_queues_belong_to_their_connection_cluster_wide(trio: list[Member]) -> None:
    a, b, _ = trio
    owner = channel(a)
    name = owner.queue_declare("", exclusive=True).method.queue
    stranger = channel(b)
    with pytest.raises(ChannelClosedByBroker) as locked:
        stranger.basic_consume(name, lambda *args: None)
    assert locked.value.reply_code == 405
    owner.connection.close()  # its exclusive queue goes, on every member

    def gone() -> bool:
        return all(name not in {q["name"] for q in m.get("/api/queues/%2F")} for m in trio)

    wait_for(gone, 10, "the exclusive queue deleted everywhere")


def test_without_a_majority_changes_are_refused_and_it_heals_by_itself(trio: list[Member]) -> None:
    a, b, c = trio
    lone = a
    cut_off = [b, c]
    ch = channel(lone)
    for member in cut_off:
        member.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionClosedByBroker) as refused:
            ch.queue_declare("while.partitioned", durable=True)
        took = time.monotonic() - started
        assert refused.value.reply_code == 541
        assert "declare queue 'while.partitioned'" in refused.value.reply_text
        assert "timed out" in refused.value.reply_text and "may still take effect" in refused.value.reply_text
        print(f"\nminority declare refused after {took:.1f}s: {refused.value.reply_text}")
        r = lone.put("/api/queues/%2F/while.partitioned.http", {"durable": True})
        assert r.status_code == 503 and "timed out" in r.json()["reason"]
    finally:
        for member in cut_off:
            member.resume()
    # the partition ends: the member commits again and every member agrees, no manual step
    healed = time.monotonic()

    def declared() -> bool:
        try:
            again = channel(lone)
            again.queue_declare("after.partition", durable=True)
            again.connection.close()
            return True
        except (ConnectionClosedByBroker, ChannelClosedByBroker):
            return False

    wait_for(declared, 30, "a declare commits after the partition")
    wait_for(lambda: all("after.partition" in {q["name"] for q in m.get("/api/queues/%2F")} for m in trio),
             10, "every member sees it")
    # the refused changes were in the minority's log: they may commit now -- but alike on all
    seen = [{q["name"] for q in m.get("/api/queues/%2F") if q["name"].startswith("while.")} for m in trio]
    assert seen[0] == seen[1] == seen[2], seen
    print(f"healed: declares commit again {time.monotonic() - healed:.1f}s after the partition ended")


def test_a_restarted_member_keeps_definitions_and_persistent_messages(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(b)
    ch.queue_declare("kept", durable=True)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", "kept", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    ch.connection.close()
    b.kill()
    b.start()
    wait_for(lambda: b.info()["member_count"] == 3 and b.info()["has_quorum"], 15, "b back in the cluster")
    ch = channel(b)
    assert ch.queue_declare("kept", passive=True).method.message_count == 20
    bodies = []
    for _ in range(20):
        method, _, body = ch.basic_get("kept", auto_ack=True)
        assert method is not None
        bodies.append(body)
    assert bodies == [f"m{i}".encode() for i in range(20)]
    ch.connection.close()


def test_an_unused_queue_expires_everywhere_by_its_home_node(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(a)
    ch.queue_declare("short.lived", arguments={"x-expires": 1500})  # lives on a
    ch.queue_declare("kept.busy", arguments={"x-expires": 1500})
    ch.connection.close()
    busy = channel(c)
    busy.basic_consume("kept.busy", lambda *args: None)  # a consumer on another member keeps it in use

    def listed(member: Member) -> set[str]:
        return {q["name"] for q in member.get("/api/queues/%2F")}

    wait_for(lambda: all("short.lived" not in listed(m) for m in trio), 10, "expired on every member")
    # kept.busy is in use at home (its consumer is remote): no member's copy expired on its own
    assert all("kept.busy" in listed(m) for m in trio)
    busy.connection.close()
