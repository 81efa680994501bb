"""Quorum queue leaders spread over the nodes: rabbitmq-queues rebalance, and the metadata
leader's own rebalancing after a node comes back (a module of its own: rebalancing counts
every quorum queue of the cluster)."""

from __future__ import annotations

import json

import pytest

from tests.integration.cluster_procs import Member, wait_for
from tests.integration.test_quorum_membership import ctl, drain, publish
from tests.integration.test_quorum_queues import channel

pytestmark = pytest.mark.timeout(180)


def test_the_queue_page_shows_members_leader_and_who_is_online(trio: list[Member], browser: object) -> None:
    from playwright.sync_api import expect

    a, b, c = trio
    channel(a).queue_declare("shown", durable=True, arguments={"x-queue-type": "quorum"})
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"http://127.0.0.1:{b.http_port}/")
    page.fill("#login-user", "guest")
    page.fill("#login-pass", "guest")
    page.click("#login-submit")
    page.goto(f"http://127.0.0.1:{b.http_port}/#/queues")
    expect(page.locator("#queues-table tr", has_text="shown")).to_contain_text("quorum")
    expect(page.locator("#queues-table tr", has_text="shown").locator("td").last).to_have_text("a")  # its leader
    page.goto(f"http://127.0.0.1:{b.http_port}/#/queue/%2F/shown")
    expect(page.locator("#queue-leader")).to_have_text("a")
    rows = page.locator("#queue-members tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#queue-members tr[data-node='a']")).to_contain_text("leader")
    for name in ("b", "c"):
        expect(page.locator(f"#queue-members tr[data-node='{name}']")).to_contain_text("followeryes")
    page.close()
    channel(a).queue_delete("shown")  # (the rebalance test counts every quorum queue)


def leaders(member: Member, queues: list[str]) -> dict[str, str]:
    shown = {q["name"]: q for q in member.get("/api/queues")}
    return {name: shown.get(name, {}).get("leader", "") for name in queues}


def spread(member: Member, queues: list[str]) -> list[int]:
    led = list(leaders(member, queues).values())
    return sorted(led.count(n) for n in ("a", "b", "c"))


def test_rebalance_spreads_leaders_and_a_returning_node_gets_its_share(trio: list[Member]) -> None:
    a, b, c = trio
    names = [f"r{i}" for i in range(6)]
    for name in names:  # client-local: a leads them all
        channel(a).queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    wait_for(lambda: set(leaders(b, names).values()) == {"a"}, 10, "a to lead every queue")

    result = ctl(b, "--formatter", "json", "rebalance", "quorum", "--queue-pattern", "^r")
    assert result.exit_code == 0, result.output
    moves = json.loads(result.stdout)
    assert len(moves) == 4 and all(m["from"] == "a" and m["result"] == "ok" for m in moves)
    wait_for(lambda: spread(c, names) == [2, 2, 2], 10, "two leaders per node")
    for name in names:
        publish(c, name, [b"before"])

    b.kill()  # its queues elect leaders on a and c
    wait_for(lambda: "b" not in leaders(a, names).values() and all(leaders(a, names).values()), 15,
             "new leaders for b's queues")
    for name in names:
        publish(a, name, [b"while b was down"])
    b.start()  # the metadata leader rebalances once b is back (10 s later, by default)
    wait_for(lambda: spread(a, names) == [2, 2, 2], 40, "b to lead its share again")
    for name in names:
        publish(b, name, [b"after"])
        assert drain(c, name) == [b"before", b"while b was down", b"after"]

