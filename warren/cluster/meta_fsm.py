"""The metadata Raft group's (group 0) state machine: membership and definitions.

Pure and deterministic: every replica applies the same committed entries in the same order
and ends in the same state. An entry is msgpack ``[op, ...fields]`` with ``op`` from
:mod:`warren.cluster.ops`:

- ``[MEMBER_ADD, id, name, uid, amqp, http, cluster]``: a node joins (or claims an
  operator-admitted record); refused -- changing nothing -- where it breaks a rule of
  :class:`warren.cluster.membership.Membership`
- ``[MEMBER_UPDATE, id, name, uid, amqp, http, cluster]``: a member's new addresses
- ``[MEMBER_REMOVE, id]``: a member leaves or is forgotten
- ``[DEFINITION, ...]`` (any op in ``DEFINITION_OPS``): handed to the
  :class:`DefinitionsApplier` (vhosts, users, exchanges, queues...; ignored without one)

Snapshots are msgpack ``{"members": ..., "definitions": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from warren.cluster.membership import Member, Membership, MembershipRefused
from warren.cluster.ops import DEFINITION_OPS, MEMBERSHIP_OPS, Op


class DefinitionsApplier(Protocol):
    def apply_definition(self, index: int, entry: list[Any]) -> None: ...  # entry[0] in DEFINITION_OPS
    def snapshot_definitions(self) -> Any: ...  # msgpack-able
    def restore_definitions(self, data: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Applied:
    """What one applied entry did, for whoever watches the state machine (the I/O side
    connects to new members, forgets removed ones). ``changed`` is False for an entry that
    was refused or changed nothing."""

    index: int
    op: int
    changed: bool
    member: Member | None = None  # the record added or updated
    removed: int | None = None  # the member id removed


def encode_entry(entry: list[Any]) -> bytes:
    return msgpack.packb(entry, use_bin_type=True)


def member_add(member: Member) -> bytes:
    return encode_entry([int(Op.MEMBER_ADD), *member.to_wire()])


def member_update(member: Member) -> bytes:
    return encode_entry([int(Op.MEMBER_UPDATE), *member.to_wire()])


def member_remove(member_id: int) -> bytes:
    return encode_entry([int(Op.MEMBER_REMOVE), member_id])


class MetaStateMachine:
    def __init__(self, definitions: DefinitionsApplier | None = None) -> None:
        self.definitions = definitions
        self.membership = Membership()
        self.applied_index = 0
        self.refused = 0  # entries that broke a rule or did not decode (changed nothing)
        self.unknown_ops = 0  # entries of an op this version does not know
        self.watchers: list[Callable[[Applied], None]] = []

    def watch(self, watcher: Callable[[Applied], None]) -> None:
        """``watcher`` hears of every applied entry, and of a restore (op 0)."""
        self.watchers.append(watcher)

    # --- applying ------------------------------------------------------------------------
    def apply(self, index: int, data: bytes) -> Applied:
        try:
            entry = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            entry = None
        return self.apply_entry(index, entry)

    def apply_entry(self, index: int, entry: Any) -> Applied:
        assert index > self.applied_index, f"entry {index} applied after {self.applied_index}"
        self.applied_index = index
        if not (isinstance(entry, list) and entry and isinstance(entry[0], int)):
            self.refused += 1
            return self._tell(Applied(index, 0, False))
        op = entry[0]
        if op in DEFINITION_OPS:
            if self.definitions is not None:
                self.definitions.apply_definition(index, entry)
            return self._tell(Applied(index, op, True))
        if op in MEMBERSHIP_OPS:
            return self._tell(self._apply_membership(index, op, entry))
        self.unknown_ops += 1
        return self._tell(Applied(index, op, False))

    def _apply_membership(self, index: int, op: int, entry: list[Any]) -> Applied:
        m = self.membership
        try:
            if op == Op.MEMBER_REMOVE:
                if len(entry) != 2 or not isinstance(entry[1], int):
                    raise MembershipRefused("malformed MEMBER_REMOVE")
                changed = m.apply_remove(entry[1])
                return self._counted(Applied(index, op, changed, removed=entry[1] if changed else None))
            member = Member.from_wire(entry[1:])
        except MembershipRefused:
            self.refused += 1
            return Applied(index, op, False)
        changed = m.apply_add(member) if op == Op.MEMBER_ADD else m.apply_update(member)
        return self._counted(Applied(index, op, changed, member if changed else None))

    def _counted(self, applied: Applied) -> Applied:
        if not applied.changed:
            self.refused += 1
        return applied

    def _tell(self, applied: Applied) -> Applied:
        for watcher in self.watchers:
            watcher(applied)
        return applied

    # --- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        definitions = self.definitions.snapshot_definitions() if self.definitions else None
        return msgpack.packb(
            {"members": self.membership.snapshot(), "definitions": definitions},
            use_bin_type=True,
        )

    def restore(self, index: int, data: bytes) -> None:
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self.membership = Membership(self.membership.max_members)
        self.membership.restore(state["members"])
        if self.definitions is not None and state.get("definitions") is not None:
            self.definitions.restore_definitions(state["definitions"])
        self.applied_index = index
        self._tell(Applied(index, 0, True))
