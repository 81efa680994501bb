"""A quorum queue's member that was killed catches up by itself when it restarts, from the
others' log and snapshots (groups snapshot every 64 entries here, each one built by a forked
child as a deep queue's is), and then serves every confirmed message when the old leader
dies in turn."""

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
    make = member_factory(tmp_path_factory.mktemp("qrecovery"), started,
                          "raft_snapshot_every_entries = 64\nquorum_snapshot_min_entries = 64\n"
                          "raft_snapshot_fork_records = 1\n")
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


def settle(member: Member, queue: str, count: int) -> None:
    ch = channel(member)
    for _ in range(count):
        method, _, _ = ch.basic_get(queue)
        ch.basic_ack(method.delivery_tag)
    ch.connection.close()


def test_a_restarted_member_catches_up_and_takes_over(members: list[Member]) -> None:
    a, b, c = members
    channel(a).queue_declare("book", durable=True, arguments=QUORUM)
    wait_for(lambda: bool(shown(a, "book")["leader"]), 10, "a leader")
    leader = {m.name: m for m in members}[shown(a, "book")["leader"]]
    follower, other = [m for m in members if m is not leader]
    publish(leader, "book", range(300))
    settle(leader, "book", 100)  # 500 entries for 200 messages: past each replica's snapshot span
    status = "/api/queues/quorum/%2F/book/status"
    wait_for(lambda: all(row["snapshot_index"] > 0 for row in leader.get(status)), 10, "every member's snapshot")
    assert all("a child built the snapshot" in "".join(m.output) for m in members)
    follower.kill()
    publish(other, "book", range(300, 500))
    settle(other, "book", 100)  # settled while the follower is down: it must learn that too
    follower.start()  # from its own data (its snapshot and the log after it), no seeds
    wait_for(lambda: shown(follower, "book").get("messages") == 300, 30, "the restarted member to catch up")
    leader.kill()
    consumer = channel(follower)
    got = []
    while True:
        method, _, body = consumer.basic_get("book", auto_ack=True)
        if method is None:
            break
        got.append(int(body))
    assert got == list(range(200, 500))
