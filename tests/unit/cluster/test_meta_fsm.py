"""The metadata state machine: membership entries, definitions handed on, snapshots."""

from __future__ import annotations

from typing import Any

import msgpack

from warren.cluster.membership import Member
from warren.cluster.meta_fsm import (
    Applied,
    MetaStateMachine,
    encode_entry,
    member_add,
    member_remove,
    member_update,
)
from warren.cluster.ops import Op


class Definitions:
    def __init__(self) -> None:
        self.applied: list[tuple[int, list[Any]]] = []

    def apply_definition(self, index: int, entry: list[Any]) -> None:
        self.applied.append((index, entry))

    def snapshot_definitions(self) -> Any:
        return {"applied": [[i, e] for i, e in self.applied]}

    def restore_definitions(self, data: Any) -> None:
        self.applied = [(i, e) for i, e in data["applied"]]


A = Member(1, "a", "ua", "a:5672", "a:15672", "a:25672")
B = Member(2, "b", "ub", "b:5672", "b:15672", "b:25672")


def test_membership_entries_apply_in_order_and_are_watched() -> None:
    fsm = MetaStateMachine()
    seen: list[Applied] = []
    fsm.watch(seen.append)
    fsm.apply(1, member_add(A))
    fsm.apply(2, member_add(B))
    fsm.apply(3, member_update(Member(2, "b", "ub", "b:1", "", "b:2")))
    fsm.apply(4, member_remove(1))
    assert sorted(fsm.membership.members) == [2] and fsm.membership.members[2].amqp == "b:1"
    assert [(a.index, a.op, a.changed) for a in seen] == [
        (1, Op.MEMBER_ADD, True), (2, Op.MEMBER_ADD, True), (3, Op.MEMBER_UPDATE, True),
        (4, Op.MEMBER_REMOVE, True)]
    assert seen[3].removed == 1 and seen[1].member == B
    assert fsm.applied_index == 4


def test_rule_breaking_and_garbage_entries_change_nothing_everywhere() -> None:
    fsm = MetaStateMachine()
    fsm.apply(1, member_add(A))
    fsm.apply(2, member_add(Member(7, "a", "other", "", "", "x:1")))  # a's name, another node
    fsm.apply(3, b"\xc1 not msgpack")
    fsm.apply(4, encode_entry([int(Op.MEMBER_ADD), "short"]))
    fsm.apply(5, encode_entry([int(Op.MEMBER_REMOVE), 99]))
    fsm.apply(6, encode_entry([999, "from a newer version"]))
    assert list(fsm.membership.members) == [1]
    assert fsm.refused == 4 and fsm.unknown_ops == 1 and fsm.applied_index == 6


def test_definition_entries_go_to_the_applier_or_nowhere() -> None:
    entry = [int(Op.DEFINITION), "origin", 7, ["declare", "q"]]
    MetaStateMachine().apply(1, encode_entry(entry))  # no applier: ignored
    definitions = Definitions()
    fsm = MetaStateMachine(definitions)
    fsm.apply(1, member_add(A))
    fsm.apply(2, encode_entry(entry))
    assert definitions.applied == [(2, entry)]


def test_snapshot_holds_members_and_definitions() -> None:
    definitions = Definitions()
    fsm = MetaStateMachine(definitions)
    fsm.apply(1, member_add(A))
    fsm.apply(2, encode_entry([int(Op.DEFINITION), "o", 1, ["x"]]))
    data = fsm.snapshot()
    assert set(msgpack.unpackb(data)) == {"members", "definitions"}
    copy_defs = Definitions()
    copy = MetaStateMachine(copy_defs)
    restored: list[Applied] = []
    copy.watch(restored.append)
    copy.restore(2, data)
    assert copy.membership.members == fsm.membership.members and copy.applied_index == 2
    assert copy_defs.applied == definitions.applied
    assert restored == [Applied(2, 0, True)]
    copy.apply(3, member_add(B))
    assert sorted(copy.membership.members) == [1, 2]
