"""A quorum queue's member that was killed catches up by itself when it restarts, from the
others' log and snapshots (groups snapshot every 64 entries here, each one built by a forked
child as a deep queue's is), and then serves every confirmed message when the old leader
dies in turn. A member that was removed from a queue, or whose queue was deleted, while it
was down deletes that queue's data when it returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import requests

from tests.integration.cluster_procs import Member, member_factory, wait_for
from warren.store.raft_store import RaftStore

PLANT = Path(__file__).resolve().parents[1] / "chaos_plant"

pytestmark = pytest.mark.timeout(180)
QUORUM = {"x-queue-type": "quorum"}


LIMITS = "raft_snapshot_every_entries = 64\nquorum_snapshot_min_entries = 64\nraft_snapshot_fork_records = 1\n"


def three(base: Path, started: list[Member]) -> list[Member]:
    """Three members formed from seeds (a bootstraps, b joins through a, c through b)."""
    make = member_factory(base, started, LIMITS)
    a, b, c = make("a"), make("b"), make("c")
    a.start()
    b.start(seeds=[a])
    c.start(seeds=[b])
    return [a, b, c]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    started: list[Member] = []
    try:
        yield three(tmp_path_factory.mktemp("qrecovery"), started)
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


def stored_groups(member: Member) -> set[int]:
    """The quorum queue groups whose data ``member``'s store holds (read while it is stopped)."""
    store = RaftStore(member.data_dir / "cluster", 1 << 30)
    try:
        return {group for group in store.groups() if isinstance(group, int) and group}
    finally:
        store.close()


def test_a_member_removed_while_down_deletes_the_data_when_it_returns(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    started: list[Member] = []
    try:
        a, b, c = three(tmp_path_factory.mktemp("qremoved"), started)
        ch = channel(a)
        for queue in ("kept", "shrunk", "deleted"):
            ch.queue_declare(queue, durable=True, arguments=QUORUM)
            wait_for(lambda q=queue: bool(shown(a, q)["leader"]), 10, f"a leader for {queue}")
            publish(a, queue, range(10))
        ch.connection.close()
        c.kill()
        # a group is its declare's index in the metadata log: in the order declared
        groups = dict(zip(("kept", "shrunk", "deleted"), sorted(stored_groups(c)), strict=True))
        channel(a).queue_delete("deleted")  # while c is down
        r = requests.delete(f"http://127.0.0.1:{a.http_port}/api/queues/quorum/%2F/shrunk/replicas/delete",
                            json={"node": "c"}, auth=("guest", "guest"), timeout=10)
        assert r.status_code == 204, r.text
        # c learns of both while "shrunk" has no leader to confirm its removal (a is down),
        # and loses the deletion of the deleted queue's data (as by a kill at that moment) ...
        a.kill()
        plain = dict(c.env)
        c.env.update(PYTHONPATH=str(PLANT), WARREN_CHAOS_PLANT="lose-group-delete")
        c.start()
        wait_for(lambda: shown(c, "shrunk")["members"] == ["a", "b"] and "deleted" not in
                 {q["name"] for q in c.get("/api/queues")}, 30, "c to learn of both")
        ch = channel(b)
        for i in range(40):  # past the metadata's snapshot interval: c restarts from a snapshot
            ch.queue_declare(f"churn{i}", durable=True)
            ch.queue_delete(f"churn{i}")
        ch.connection.close()
        c.kill()  # ... and goes down again with both groups' data in its store
        assert stored_groups(c) == set(groups.values())
        c.env = plain
        a.start()
        c.start()
        wait_for(lambda: f"no longer a member of quorum queue group {groups['shrunk']}" in "".join(c.output),
                 20, "c to delete its replica of the shrunk queue")
        assert f"quorum queue group {groups['deleted']} belongs to a deleted queue" in "".join(c.output)
        c.kill()
        assert stored_groups(c) == {groups["kept"]}
    finally:
        for member in started:
            member.kill()
