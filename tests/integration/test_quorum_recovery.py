"""A quorum queue's member that was killed catches up by itself when it restarts, from the
others' log and snapshots (groups snapshot every 64 entries here), and then serves every
confirmed message when the old leader dies in turn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest

from tests.integration.cluster_procs import Member, member_factory, wait_for

pytestmark = pytest.mark.timeout(180)
QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    started: list[Member] = []
    make = member_factory(tmp_path_factory.mktemp("qrecovery"), started, "raft_snapshot_every_entries = 64\n")
    try:
        a, b, c = make("a"), make("b"), make("c")
        a.start()
        b.start(seeds=[a])
        c.start(seeds=[b])
        yield [a, b, c]
    finally:
        for member in started:
            member.kill()


def channel(member: Member) -> Any:
    return pika.BlockingConnection(pika.URLParameters(member.url)).channel()


def shown(member: Member, queue: str) -> dict[str, Any]:
    return {q["name"]: q for q in member.get("/api/queues")}[queue]


def publish(member: Member, queue: str, bodies: range) -> None:
    ch = channel(member)
    ch.confirm_delivery()
    for i in bodies:
        ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))
    ch.connection.close()


def test_a_restarted_member_catches_up_and_takes_over(members: list[Member]) -> None:
    a, b, c = members
    channel(a).queue_declare("book", durable=True, arguments=QUORUM)
    wait_for(lambda: bool(shown(a, "book")["leader"]), 10, "a leader")
    leader = {m.name: m for m in members}[shown(a, "book")["leader"]]
    follower, other = [m for m in members if m is not leader]
    publish(leader, "book", range(300))
    follower.kill()
    publish(other, "book", range(300, 500))
    ch = channel(other)
    for _ in range(100):  # settled while the follower is down: it must learn that too
        method, _, _ = ch.basic_get("book")
        ch.basic_ack(method.delivery_tag)
    ch.connection.close()
    follower.start()  # from its own data, no seeds
    wait_for(lambda: shown(follower, "book").get("messages") == 400, 30, "the restarted member to catch up")
    leader.kill()
    consumer = channel(follower)
    got = []
    while True:
        method, _, body = consumer.basic_get("book", auto_ack=True)
        if method is None:
            break
        got.append(int(body))
    assert got == list(range(100, 500))
