"""A clustered node's commands: every member applies each committed entry to its own model,
only the proposer answers, and a refused command is refused alike everywhere.

The metadata group here is its in-memory twin (a list of entries applied in order to every
member); the real group is exercised by tests/integration/test_cluster_definitions.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from warren.broker.auth import Broker
from warren.cluster import definitions as d
from warren.cluster.definitions import Outcome
from warren.errors import ReplyCode, WarrenError
from warren.io.cluster_commands import ReplicatedCommands
from warren.limits import Limits
from warren.node.node import Node


class LogTwin:
    """Commits every proposal at once (or refuses all, like a group without quorum)."""

    def __init__(self) -> None:
        self.members: list[ReplicatedCommands] = []
        self.entries: list[bytes] = []
        self.available = True

    async def propose(self, entry: bytes) -> int:
        if not self.available:
            raise WarrenError("no leader")
        self.entries.append(entry)
        index = len(self.entries)
        for member in self.members:
            member.apply_definition(index, msgpack.unpackb(entry, raw=False))
        return index

    async def read_barrier(self) -> None:
        if not self.available:
            raise WarrenError("no leader")


def _cluster(n: int = 3) -> tuple[LogTwin, list[ReplicatedCommands]]:
    group = LogTwin()
    for i in range(n):
        node = Node(name=f"n{i}", limits=Limits(), broker=Broker.with_defaults(), persistence=None,
                    monotonic=lambda: 0.0, wall_ms=lambda: 1000, unique_name=lambda prefix: prefix + "x")
        node.definitions_in_log = True
        runner = ReplicatedCommands(node, group)
        node.commands = runner
        group.members.append(runner)
    return group, group.members


async def _run(runner: ReplicatedCommands, command: d.Command) -> Outcome:
    answered: list[Outcome] = []
    runner.submit(command, answered.append)
    for _ in range(10):
        if answered:
            break
        await asyncio.sleep(0)
    assert len(answered) == 1
    return answered[0]


def _model(runner: ReplicatedCommands) -> Any:
    return runner.node.broker.export_state()


def test_members_apply_alike_and_only_the_proposer_answers() -> None:
    async def scenario() -> None:
        group, (a, b, c) = _cluster()
        heard: list[Outcome] = []
        b.submit(d.DeclareQueue("/", "q", durable=True, arguments={"x-max-length": 3}), heard.append)
        outcome = await _run(a, d.DeclareExchange("/", "x", "topic"))
        assert outcome.error is None
        await _run(c, d.BindQueue("/", "q", "x", "a.#"))
        assert heard and heard[0].value == ("q", 0, 0, True)
        assert _model(a) == _model(b) == _model(c)
        assert "q" in a.node.broker.vhosts["/"].queues
        # refused alike everywhere: an inequivalent redeclare changes nothing anywhere
        refused = await _run(c, d.DeclareQueue("/", "q", durable=False))
        assert refused.error is not None and refused.error.code == ReplyCode.PRECONDITION_FAILED
        assert _model(a) == _model(b) == _model(c)
        assert len(group.entries) == 4

    asyncio.run(scenario())


def test_without_quorum_a_change_is_a_541_naming_the_operation() -> None:
    async def scenario() -> None:
        group, (a, _, _) = _cluster()
        group.available = False
        outcome = await _run(a, d.DeclareQueue("/", "orders", durable=True))
        assert outcome.error is not None
        assert outcome.error.code == ReplyCode.INTERNAL_ERROR
        assert "declare queue 'orders' in vhost '/'" in outcome.error.text
        assert "orders" not in a.node.broker.vhosts["/"].queues

    asyncio.run(scenario())


def test_an_entry_proposed_before_a_restart_answers_nobody_after_it() -> None:
    async def scenario() -> None:
        group, (a, b, _) = _cluster()
        stale = msgpack.packb([16, a.origin + 1, 1, d.encode_command(d.PutVhost("v"))])
        heard: list[Outcome] = []
        a._waiting[1] = heard.append  # a submitter of this boot with correlation 1
        group.entries.append(stale)
        a.apply_definition(1, msgpack.unpackb(stale, raw=False))
        assert heard == [] and "v" in a.node.broker.vhosts

    asyncio.run(scenario())


def test_durable_queues_take_their_declares_index_as_store_id_everywhere() -> None:
    class Rows:
        def queue_deleted(self, vhost: Any, queue: Any) -> None: ...

    async def scenario() -> None:
        group, members = _cluster()
        for m in members:
            m.node.persistence = Rows()  # type: ignore[assignment]
        await _run(members[0], d.PutVhost("v"))
        await _run(members[1], d.DeclareQueue("v", "dq", durable=True))
        ids = {m.node.broker.vhosts["v"].queues["dq"].store_id for m in members}
        assert ids == {2}

    asyncio.run(scenario())


def test_a_snapshot_restores_the_same_model_and_keeps_live_queues() -> None:
    async def scenario() -> None:
        group, (a, b, c) = _cluster()
        await _run(a, d.DeclareExchange("/", "tx", "fanout", durable=False))
        await _run(a, d.DeclareQueue("/", "keep", durable=True))
        await _run(a, d.DeclareQueue("/", "gone", durable=False))
        await _run(a, d.BindQueue("/", "keep", "tx", ""))
        await _run(a, d.SetPolicy("/", "p", "^keep$", "queues", 0, {"max-length": 5}))
        snapshot = msgpack.unpackb(msgpack.packb(a.snapshot_definitions()), raw=False)
        await _run(a, d.DeleteQueue("/", "keep"))  # c misses this and what follows
        live = c.node.broker.vhosts["/"].queues["gone"]
        c.restore_definitions(snapshot)
        assert c.node.broker.vhosts["/"].queues["gone"] is live  # same object: messages kept
        assert _model(c) == msgpack.unpackb(msgpack.packb(snapshot), raw=False)
        assert c.node.broker.vhosts["/"].queues["keep"].args.max_length == 5

    asyncio.run(scenario())


@pytest.mark.parametrize("command", [d.DeclareQueue("/", "q", arguments={"x": "\ud800"})])
def test_an_unstorable_command_is_a_406_and_is_never_proposed(command: d.Command) -> None:
    async def scenario() -> None:
        group, (a, _, _) = _cluster()
        outcome = await _run(a, command)
        assert outcome.error is not None and outcome.error.code == ReplyCode.PRECONDITION_FAILED
        assert group.entries == []

    asyncio.run(scenario())
