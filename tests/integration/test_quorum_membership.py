"""Changing a quorum queue's members on three real nodes, as rabbitmq-queues does:
add_member, delete_member (its leader included), grow and shrink, with every confirmed
message still there and a new member that survives a SIGKILL holding the log."""

from __future__ import annotations

import json
from typing import Any

import pika
import pytest
import requests
from typer.testing import CliRunner

from tests.integration.cluster_procs import Member, wait_for
from tests.integration.test_quorum_queues import (
    channel,
    leader_of,
    listed,
    quorum_status,
    raft_series,
)
from warren.cli.ctl_cmd import EXIT_ERROR
from warren.cli.main import app

pytestmark = pytest.mark.timeout(180)


def ctl(member: Member, *args: str) -> Any:
    return CliRunner().invoke(app, ["ctl", "--node", f"http://127.0.0.1:{member.http_port}", *args])


def members_of(member: Member, queue: str) -> list[str]:
    return list(listed(member, queue)["members"])


def publish(member: Member, queue: str, bodies: list[bytes]) -> None:
    ch = channel(member)
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))


def drain(member: Member, queue: str) -> list[bytes]:
    ch = channel(member)
    got = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append(body)


def voters(member: Member, queue: str) -> list[str]:
    return sorted(n for n, row in quorum_status(member, queue).items() if row.get("membership") == "voter")


def test_add_member_then_delete_the_leader_keeps_every_message(trio: list[Member]) -> None:
    a, b, c = trio
    channel(a).queue_declare("moving", durable=True,
                             arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 2})
    first = members_of(a, "moving")
    assert len(first) == 2 and first[0] == "a"
    newcomer = next(m for m in trio if m.name not in first)
    bodies = [f"m{i}".encode() for i in range(100)]
    publish(b, "moving", bodies)

    result = ctl(a, "add_member", "moving", newcomer.name)
    assert result.exit_code == 0, result.output
    wait_for(lambda: voters(c, "moving") == ["a", "b", "c"], 15, "the new member to become a voter")
    assert members_of(b, "moving") == [*first, newcomer.name]
    # the newcomer replayed the log from the declare: its own replica counts every message
    wait_for(lambda: listed(newcomer, "moving").get("messages") == 100, 10, "the newcomer's replica")

    # a new member holds the log on disk: killed and restarted, it rejoins as a voter
    newcomer.kill()
    newcomer.start()
    wait_for(lambda: voters(a, "moving") == ["a", "b", "c"], 15, "the restarted newcomer")

    leader = {m.name: m for m in trio}[leader_of(a, "moving")]
    result = ctl(b, "delete_member", "moving", leader.name)
    assert result.exit_code == 0, result.output
    rest = [m for m in trio if m is not leader]
    wait_for(lambda: sorted(quorum_status(rest[0], "moving")) == sorted(m.name for m in rest), 15,
             "the deleted member to leave the group")
    assert leader_of(rest[1], "moving") in [m.name for m in rest]
    # the removed node deletes its replica: it reports no Raft series for the queue any more
    wait_for(lambda: not raft_series(leader, "moving"), 10, "the removed member to drop its replica")

    publish(leader, "moving", [b"after"])  # its clients still reach the queue
    assert drain(rest[0], "moving") == [*bodies, b"after"]


def test_grow_and_shrink_change_every_matching_queue(trio: list[Member]) -> None:
    a, b, c = trio
    ch = channel(a)
    one = {"x-queue-type": "quorum", "x-quorum-initial-group-size": 1}
    for name in ("g.one", "g.two", "other"):
        ch.queue_declare(name, durable=True, arguments=one)
    publish(a, "g.one", [b"kept"])

    result = ctl(a, "--formatter", "json", "grow", "b", "all", "--queue-pattern", "^g\\.")
    assert result.exit_code == 0, result.output
    assert sorted((r["name"], r["size"], r["result"]) for r in json.loads(result.stdout)) == [
        ("g.one", 2, "ok"), ("g.two", 2, "ok")]
    assert members_of(c, "other") == ["a"]
    # even: only queues with an even number of members grow (to stay odd)
    result = ctl(a, "--formatter", "json", "grow", "c", "even")
    assert sorted(r["name"] for r in json.loads(result.stdout)) == ["g.one", "g.two"]
    wait_for(lambda: voters(a, "g.one") == ["a", "b", "c"], 15, "g.one on three members")

    result = ctl(b, "--formatter", "json", "shrink", "a")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["other"]["result"] == "error: last member" and members_of(b, "other") == ["a"]
    assert rows["g.one"]["result"] == "ok" and members_of(c, "g.one") == ["b", "c"]
    wait_for(lambda: voters(b, "g.one") == ["b", "c"], 15, "g.one without a")
    assert drain(a, "g.one") == [b"kept"]


def test_bad_member_requests_name_the_problem(trio: list[Member]) -> None:
    a = trio[0]
    ch = channel(a)
    ch.queue_declare("solo", durable=True, arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 1})
    ch.queue_declare("plain", durable=True)
    base = f"http://127.0.0.1:{a.http_port}/api/queues/quorum/%2F"

    def add(queue: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{base}/{queue}/replicas/add", json=body, auth=("guest", "guest"), timeout=10)

    def reason(response: requests.Response) -> str:
        return str(response.json()["reason"])

    answer = add("solo", {"node": "zed"})
    assert answer.status_code == 400 and "zed is not a member of this cluster" in reason(answer)
    answer = add("solo", {"node": "a"})
    assert answer.status_code == 400 and "already a member" in reason(answer)
    answer = add("solo", {})
    assert answer.status_code == 400 and "'node'" in reason(answer)
    answer = add("plain", {"node": "b"})
    assert answer.status_code == 400 and "not a quorum queue" in reason(answer)
    assert add("absent", {"node": "b"}).status_code == 404
    answer = requests.delete(f"{base}/solo/replicas/delete", json={"node": "a"}, auth=("guest", "guest"), timeout=10)
    assert answer.status_code == 400 and "last member" in reason(answer)
    result = ctl(a, "delete_member", "solo", "b")
    assert result.exit_code == EXIT_ERROR and "b is not a member of queue 'solo'" in result.output
    assert members_of(a, "solo") == ["a"]  # nothing changed


def test_membership_grows_on_a_new_node_and_drops_a_forgotten_one(trio: list[Member], make: Any) -> None:
    a, b, c = trio
    channel(a).queue_declare("wide", durable=True, arguments={"x-queue-type": "quorum",
                                                              "x-quorum-initial-group-size": 5})
    assert sorted(members_of(a, "wide")) == ["a", "b", "c"]  # capped at the cluster's size
    publish(b, "wide", [b"one", b"two"])
    d = make("d")
    d.start(seeds=[a])
    wait_for(lambda: "d" in members_of(a, "wide"), 20, "the new node to be made a member")
    wait_for(lambda: voters(b, "wide") == ["a", "b", "c", "d"], 15, "d to become a voter")
    wait_for(lambda: listed(d, "wide").get("messages") == 2, 10, "d's replica to hold the messages")

    d.kill()
    result = ctl(a, "forget_cluster_node", "d")
    assert result.exit_code == 0, result.output
    wait_for(lambda: sorted(members_of(c, "wide")) == ["a", "b", "c"], 20, "the forgotten member to be dropped")
    wait_for(lambda: voters(c, "wide") == ["a", "b", "c"], 15, "the group without d")
    assert drain(c, "wide") == [b"one", b"two"]
