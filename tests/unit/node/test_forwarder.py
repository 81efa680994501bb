"""The access side of forwarding: what waits on another node fails rather than hangs."""

from __future__ import annotations

from typing import Any

from warren.broker.auth import Broker
from warren.broker.message import Message
from warren.cluster.forwarding import Fwd
from warren.errors import ReplyCode
from warren.limits import Limits
from warren.node.node import Node
from warren.node.remote import Forwarder


def _forwarder(up: set[str]) -> tuple[Forwarder, list[tuple[str, dict[str, Any]]], list[float]]:
    clock = [0.0]
    node = Node(name="b", limits=Limits(), broker=Broker.with_defaults(), persistence=None,
                monotonic=lambda: clock[0], wall_ms=lambda: 0, unique_name=lambda p: p + "x")
    sent: list[tuple[str, dict[str, Any]]] = []
    forwarder = Forwarder(node, lambda peer, m: sent.append((peer, m)), lambda name: name in up, 8, 30.0)
    node.forwarder = forwarder
    return forwarder, sent, clock


def _message() -> Message:
    return Message.from_publish("", "q", b"body", None, {"delivery_mode": 2})


def test_an_unanswered_forwarded_publish_is_nacked_after_the_timeout() -> None:
    forwarder, sent, clock = _forwarder({"a"})
    heard: list[bool] = []
    assert forwarder.publish("a", "/", ["q"], _message(), heard.append)
    assert sent[0][0] == "a" and sent[0][1]["f"] == Fwd.PUBLISH
    clock[0] = 29.0
    forwarder.tick(clock[0])
    assert heard == []
    clock[0] = 31.0
    forwarder.tick(clock[0])
    assert heard == [False]


def test_a_publish_to_a_down_node_is_not_sent_and_a_link_going_down_nacks_what_waited() -> None:
    forwarder, sent, _ = _forwarder({"a"})
    assert not forwarder.publish("c", "/", ["q"], _message(), lambda ok: None)
    heard: list[bool] = []
    forwarder.publish("a", "/", ["q"], _message(), heard.append)
    answers: list[tuple[int, str, Any]] = []
    queue = forwarder.node.broker.vhosts["/"].declare_queue("q")[0]
    queue.home = "a"
    forwarder.call(queue, {"f": Fwd.GET, "s": 1, "c": 1, "na": True}, lambda *a: answers.append(a))
    forwarder.peer_down("a")
    assert heard == [False]
    assert answers and answers[0][0] == ReplyCode.NOT_FOUND
    assert [m["f"] for _, m in sent] == [Fwd.PUBLISH, Fwd.GET]


def test_a_delivery_for_a_consumer_cancelled_meanwhile_goes_back_to_its_queue() -> None:
    forwarder, sent, _ = _forwarder({"a"})

    class Transport:
        def write(self, data: bytes) -> None: ...
        def close(self) -> None: ...
        def set_reading(self, enabled: bool) -> None: ...

    session = forwarder.node.open_session(Transport(), "127.0.0.1", 1, "127.0.0.1", 5672, False)
    assert session is not None  # the connection is still there; its consumer is not
    forwarder.on_message("a", {"f": Fwd.DELIVER, "s": session.id, "c": 1, "tag": "gone", "id": 7, "r": False,
                               "x": "", "k": "q", "p": b"", "b": b"x", "v": "/", "q": "q"})
    assert sent == [("a", {"f": Fwd.SETTLE, "v": "/", "q": "q", "how": "requeue", "ids": [7]})]
