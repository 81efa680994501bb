"""Any member serves any client: a classic queue lives on its home node, and publishes,
deliveries, gets, acks and purges travel over the peer links (real processes, real TCP)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError

from tests.integration.cluster_procs import Member, wait_for

pytestmark = pytest.mark.timeout(180)


def channel(member: Member) -> Any:
    return pika.BlockingConnection(pika.URLParameters(member.url)).channel()


def home_of(member: Member, queue: str) -> str:
    """The queue's home as ``member`` lists it (a listing: it applies commits within moments)."""
    wait_for(lambda: queue in {q["name"] for q in member.get("/v1/cluster/sharding")}, 5, f"{queue} listed")
    return {q["name"]: q["node"] for q in member.get("/v1/cluster/sharding")}[queue]


def test_publish_on_one_node_consume_on_another_queue_on_a_third(trio: list[Member]) -> None:
    a, b, c = trio
    setup = channel(a)
    setup.queue_declare("jobs", durable=True)  # client-local: it lives on a
    setup.connection.close()
    assert home_of(c, "jobs") == "a"

    received: list[bytes] = []
    done = threading.Event()
    count = 500

    def consume() -> None:
        ch = channel(b)
        ch.basic_qos(prefetch_count=50)

        def on_message(chan: Any, method: Any, properties: Any, body: bytes) -> None:
            received.append(body)
            chan.basic_ack(method.delivery_tag)
            if len(received) == count:
                chan.stop_consuming()

        ch.basic_consume("jobs", on_message)
        ready.set()
        ch.start_consuming()
        ch.connection.close()
        done.set()

    ready = threading.Event()
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    assert ready.wait(10)
    publisher = channel(c)
    publisher.confirm_delivery()
    started = time.monotonic()
    for i in range(count):  # each returns once confirmed: a has it on disk
        publisher.basic_publish("", "jobs", f"job-{i}".encode(), pika.BasicProperties(delivery_mode=2))
    confirmed = time.monotonic() - started
    assert done.wait(30), f"received {len(received)} of {count}"
    print(f"\n{count} confirmed publishes c->a in {confirmed:.2f}s; consumer on b got all")
    assert received == [f"job-{i}".encode() for i in range(count)]
    publisher.connection.close()
    # every message was acked through b: none left on a
    wait_for(lambda: {q["name"]: q["messages"] for q in a.get("/api/queues/%2F")}["jobs"] == 0, 5, "jobs empty")


def test_get_requeue_and_purge_from_another_node(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(a)
    ch.queue_declare("inbox", durable=True)
    for i in range(3):
        ch.basic_publish("", "inbox", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    ch.connection.close()
    remote = channel(b)
    method, _, body = remote.basic_get("inbox")
    assert body == b"m0" and not method.redelivered
    remote.basic_nack(method.delivery_tag, requeue=True)  # back to a's queue, redelivered next
    method, _, body = remote.basic_get("inbox")
    assert body == b"m0" and method.redelivered
    remote.basic_ack(method.delivery_tag)
    assert remote.queue_purge("inbox").method.message_count == 2
    assert remote.basic_get("inbox") == (None, None, None)
    remote.connection.close()


def test_a_closed_remote_channel_gives_its_unacked_messages_back(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(a)
    ch.queue_declare("held", durable=True)
    for i in range(5):
        ch.basic_publish("", "held", f"h{i}".encode(), pika.BasicProperties(delivery_mode=2))
    remote = channel(c)
    got = [remote.basic_get("held")[2] for _ in range(5)]
    assert got == [f"h{i}".encode() for i in range(5)]
    remote.connection.close()  # never acked: a requeues them
    wait_for(lambda: {q["name"]: q["messages_ready"] for q in a.get("/api/queues/%2F")}["held"] == 5, 5,
             "requeued on a")
    method, _, body = ch.basic_get("held", auto_ack=True)
    assert body == b"h0" and method.redelivered
    ch.connection.close()


def test_a_fanout_to_queues_on_three_nodes_is_confirmed_once_all_have_it(trio: list[Member]) -> None:
    a, b, c = trio
    for member, queue in ((a, "fan.a"), (b, "fan.b"), (c, "fan.c")):
        ch = channel(member)  # each queue lives on the member that declared it
        ch.exchange_declare("fan", "fanout", durable=True)
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, "fan")
        ch.connection.close()
    publisher = channel(b)
    publisher.confirm_delivery()
    for i in range(50):
        publisher.basic_publish("fan", "", f"f{i}".encode(), pika.BasicProperties(delivery_mode=2))
    publisher.connection.close()
    for member in trio:  # the confirm promised every copy is there; any node counts at home
        ch = channel(member)
        for queue in ("fan.a", "fan.b", "fan.c"):
            assert ch.queue_declare(queue, passive=True).method.message_count == 50, (member.name, queue)
        assert ch.queue_declare("fan.a", durable=True).method.message_count == 50, member.name
        ch.connection.close()


def test_a_queue_whose_home_is_down_answers_as_rabbitmq(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(c)
    ch.queue_declare("on.c", durable=True)
    ch.connection.close()
    other = channel(a)
    other.confirm_delivery()
    c.kill()
    wait_for(lambda: any(m["name"] == "c" and m["status"] != "alive" for m in a.info()["members"]), 10,
             "c seen down")
    started = time.monotonic()
    with pytest.raises(NackError):
        other.basic_publish("", "on.c", b"lost?", pika.BasicProperties(delivery_mode=2))
    print(f"\npublish to a queue on a dead node nacked in {time.monotonic() - started:.3f}s")
    consumer = channel(a)
    with pytest.raises(ChannelClosedByBroker) as refused:
        consumer.basic_consume("on.c", lambda *args: None)
    assert refused.value.reply_code == 404
    assert "home node 'c' of durable queue 'on.c'" in refused.value.reply_text
    # everything homed elsewhere still works meanwhile
    other.queue_declare("on.a", durable=True)
    other.basic_publish("", "on.a", b"fine", pika.BasicProperties(delivery_mode=2))
    other.connection.close()
    c.start()
    wait_for(lambda: all(m["status"] == "alive" for m in a.info()["members"]), 15, "c back")
