"""Op codes of the metadata Raft group's log entries.

An entry is msgpack ``[op, ...fields]``. Op codes are append-only: a code once used is
never renumbered or reused, because old entries and snapshots on disk still carry it.
Membership ops (1-15) are applied by ``warren.cluster.membership``; definition ops (16-63)
by ``warren.cluster.definitions``.
"""

from __future__ import annotations

from enum import IntEnum


class Op(IntEnum):
    # membership
    MEMBER_ADD = 1
    MEMBER_REMOVE = 2
    MEMBER_UPDATE = 3
    # definitions (vhosts, users, permissions, exchanges, queues, bindings, policies)
    DEFINITION = 16  # [16, origin, correlation, command]: one command of warren.cluster.definitions


MEMBERSHIP_OPS = frozenset({Op.MEMBER_ADD, Op.MEMBER_REMOVE, Op.MEMBER_UPDATE})
DEFINITION_OPS = frozenset({Op.DEFINITION})
