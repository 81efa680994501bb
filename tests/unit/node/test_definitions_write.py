"""Definitions change in memory only when their write succeeds (real LMDB store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from warren.broker.auth import Broker
from warren.broker.message import Message
from warren.broker.policy import Policy
from warren.errors import AMQPError, ReplyCode
from warren.limits import Limits
from warren.node.node import Node
from warren.node.persistence import Persistence
from warren.store.broker_store import BrokerStore

LONE_SURROGATE = "\ud800"


def _start(data: Path) -> tuple[Node, BrokerStore]:
    store = BrokerStore(data, 1 << 24)
    broker = Broker.with_defaults()
    persistence = Persistence(store, lambda: None)
    persistence.recover(broker)
    node = Node(name="n", limits=Limits(), broker=broker, persistence=persistence, monotonic=lambda: 0.0,
                wall_ms=lambda: 0, unique_name=lambda prefix: prefix + "x")
    persistence.attach(node)
    return node, store


def _state(node: Node) -> tuple[Any, ...]:
    vhost = node.broker.vhosts["/"]
    return (vhost.export_durable(), vhost.list_exchanges(), vhost.list_bindings(), node.broker.export_users())


def _declare(node: Node, **kwargs: Any) -> None:
    vhost = node.broker.vhosts["/"]
    with node.changing_definitions(vhost):
        vhost.declare_queue(**kwargs)


UNSTORABLE: dict[str, Callable[[Node], None]] = {
    "queue argument": lambda n: _declare(n, name="sq", durable=True, arguments={"x-note": LONE_SURROGATE}),
    "exchange argument": lambda n: _with(n, lambda v: v.declare_exchange("sx", "direct", arguments={"a": LONE_SURROGATE})),
    "binding key": lambda n: _with(n, lambda v: v.bind_queue("base", "amq.direct", "k" + LONE_SURROGATE)),
    "policy definition": lambda n: _with(n, lambda v: v.set_policy(Policy("p", ".*", "queues", 0, {"x": LONE_SURROGATE}))),
    "user tags": lambda n: _users(n, lambda: n.broker.set_user_tags("guest", ["administrator", LONE_SURROGATE])),
}


def _users(node: Node, change: Callable[[], Any]) -> None:
    with node.changing_definitions():
        change()


def _with(node: Node, change: Callable[[Any], Any]) -> None:
    vhost = node.broker.vhosts["/"]
    with node.changing_definitions(vhost):
        change(vhost)


@pytest.mark.parametrize("case", list(UNSTORABLE))
def test_unstorable_value_is_refused_and_changes_nothing(tmp_path: Path, case: str) -> None:
    node, store = _start(tmp_path)
    _declare(node, name="base", durable=True)
    before = _state(node)
    with pytest.raises(AMQPError) as refused:
        UNSTORABLE[case](node)
    assert refused.value.code == ReplyCode.PRECONDITION_FAILED
    assert _state(node) == before
    # the vhost still persists what comes next, and a restart brings back exactly that
    _declare(node, name="after", durable=True)
    expected = _state(node)
    store.close()
    restarted, _ = _start(tmp_path)
    assert _state(restarted) == expected
    assert set(restarted.broker.vhosts["/"].queues) == {"base", "after"}


def test_a_failed_delete_brings_the_queue_back_with_messages_and_bindings(tmp_path: Path) -> None:
    node, _store = _start(tmp_path)
    vhost = node.broker.vhosts["/"]
    with node.changing_definitions(vhost):
        vhost.declare_exchange("x", "topic", auto_delete=True)
        vhost.declare_queue("q", durable=True)
        vhost.bind_queue("q", "x", "a.#")
    vhost.publish(Message.from_publish("x", "a.b", b"kept", None, {}), 0)
    before = _state(node)
    with pytest.raises(RuntimeError), node.changing_definitions(vhost):
        vhost.delete_queue("q")  # also auto-deletes x, its last binding gone
        assert "x" not in vhost.exchanges
        raise RuntimeError("the write did not happen")
    assert _state(node) == before
    queue = vhost.queues["q"]
    assert not queue.deleted and queue.messages_ready == 1
    assert [q.name for q in vhost.route(vhost.exchanges["x"], ["a.c"], None)] == ["q"]


def test_a_vhost_added_by_a_failed_change_is_gone(tmp_path: Path) -> None:
    node, _store = _start(tmp_path)
    with pytest.raises(AMQPError), node.changing_definitions():
        node.broker.add_vhost("v" + LONE_SURROGATE)
    assert set(node.broker.vhosts) == {"/"}


def test_transient_declares_write_nothing(tmp_path: Path) -> None:
    node, store = _start(tmp_path)
    _declare(node, name="durable", durable=True)
    commits: list[int] = []
    commit = store.commit
    store.commit = lambda batch: (commits.append(len(batch)), commit(batch))  # type: ignore[method-assign]
    _declare(node, name="transient", durable=False)
    _declare(node, name="durable", durable=True)  # a redeclare changes nothing durable
    assert commits == []
    _declare(node, name="durable2", durable=True)
    assert len(commits) == 1


def test_a_transient_declare_costs_no_export_in_a_vhost_of_many_durable_queues(tmp_path: Path) -> None:
    node, _store = _start(tmp_path)
    vhost = node.broker.vhosts["/"]
    with node.changing_definitions(vhost):
        for i in range(200):
            vhost.declare_queue(f"d{i}", durable=True)
    exports: list[int] = []
    export = vhost.export_durable
    vhost.export_durable = lambda: (exports.append(1), export())[1]  # type: ignore[method-assign]
    _declare(node, name="reply-to", durable=False, exclusive=True)
    with node.changing_definitions(vhost):
        vhost.bind_queue("reply-to", "amq.direct", "rpc")
    assert exports == []
    _declare(node, name="d-new", durable=True)
    assert exports == [1]
