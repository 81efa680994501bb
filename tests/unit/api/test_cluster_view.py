"""The cluster view's merge: each queue's counts from its home, members that did not answer."""

from __future__ import annotations

from typing import Any

from warren.api.cluster_view import ClusterView, queue_stats


def node(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "running": True, "type": "disc", "mem_used": 100, "partitions": [], **extra,
            "listeners": [{"protocol": "amqp", "port": 5672, "ip_address": "127.0.0.1"}]}


def stub(name: str, home: str, messages: int = 0) -> dict[str, Any]:
    return {"vhost": "/", "name": name, "node": home, "messages": messages, "messages_ready": messages,
            "consumers": 0, "state": "running", "durable": True}


def test_queue_counts_come_from_the_home_and_down_members_keep_what_is_known() -> None:
    last: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, Any] | None] = {
        "a": {"node": node("a"), "queues": [queue_stats(stub("qa", "a", 3))],
              "connections": [{"name": "conn-a"}], "channels": [{"name": "conn-a (1)"}]},
        "c": None,
    }
    view = ClusterView.merge("b", "a", node("b"), ["a", "b", "c"], answers, last)
    assert [n["name"] for n in view.nodes] == ["a", "b", "c"]
    assert [n["running"] for n in view.nodes] == [True, True, False]
    assert view.nodes[2]["mem_alarm"] is False  # a member never heard from has every field
    assert view.queue(stub("qa", "a"))["messages"] == 3
    assert view.queue(stub("qb", "b", 2))["messages"] == 2  # homed here: as listed here
    assert view.queue(stub("qc", "c"))["state"] == "down"
    assert view.connections == [{"name": "conn-a", "node": "a"}]
    assert view.channels[0]["node"] == "a"
    assert [x["node"] for x in view.listeners()] == ["a"]
    # a later view without a: its last node fields, not running
    view = ClusterView.merge("b", "a", node("b"), ["a", "b", "c"], {"a": None, "c": None}, last)
    assert view.nodes[0]["mem_used"] == 100 and view.nodes[0]["running"] is False
    assert view.queue(stub("qa", "a"))["state"] == "down"


def test_a_malformed_answer_counts_as_none() -> None:
    view = ClusterView.merge("b", "b", node("b"), ["a", "b"], {"a": {"node": node("a"), "queues": 7}}, {})
    assert view.down == {"a"} and view.nodes[0]["running"] is False
