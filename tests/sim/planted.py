"""Planted bugs: ``RaftNode`` subclasses that each break one rule through one hook.

The simulator must catch every one of them within a bounded range of seeds (see
``tests/sim/test_sim.py``), so we know its checkers can fail. Each subclass overrides one
small documented hook of ``warren.raft.node.RaftNode`` (or ``_send``, to let a message
leave before its ready is fsynced); production code carries no trace of them.

``PLANTED`` maps the name used by ``python -m tests.sim --planted-bug NAME`` to the class.
"""

from __future__ import annotations

from dataclasses import fields

from warren.raft.node import RaftNode
from warren.raft.types import Config, Message, MsgType


class _EarlyMessage(Message):
    """A message the driver sends before the ready that produced it is persisted."""

    __slots__ = ()

    @property
    def may_send_before_persist(self) -> bool:
        return True


def _early(m: Message) -> Message:
    return _EarlyMessage(*(getattr(m, f.name) for f in fields(Message)))


class CommitOldTerm(RaftNode):
    """Commits an entry of an older term by counting replicas (the paper's Figure 8)."""

    def _commit_rule_allows(self, index: int) -> bool:
        return True


class VoteWithoutLogCheck(RaftNode):
    """Grants votes without the election restriction (a stale log may win)."""

    def _log_ok_for_vote(self, m: Message) -> bool:
        return True


class AckBeforeFsync(RaftNode):
    """Acknowledges appends before they are durable; the leader counts its own unsynced
    tail toward commit."""

    def _self_match(self) -> int:
        return self.log.last_index()

    def _send(self, kind: MsgType, to: int, term: int | None = None, **kw: object) -> None:
        super()._send(kind, to, term, **kw)
        if kind == MsgType.APPEND_RESP and not kw.get("reject"):
            self.msgs[-1] = _early(self.msgs[-1])


class ReadWithoutQuorum(RaftNode):
    """Serves ReadIndex from its own commit point without confirming it still leads."""

    def _read_quorum_acks(self, config: Config, at_round: int) -> int:
        return len(config.voters)


class VoteBeforeFsync(RaftNode):
    """Sends a vote grant before the vote (and its term) is durable: a crash in that window
    forgets the vote, and the node may vote again in the same term."""

    def _send(self, kind: MsgType, to: int, term: int | None = None, **kw: object) -> None:
        super()._send(kind, to, term, **kw)
        if kind == MsgType.VOTE_RESP and not kw.get("reject"):
            self.msgs[-1] = _early(self.msgs[-1])


class ConcurrentConfChange(RaftNode):
    """Accepts a membership change while the previous one is uncommitted (it still waits
    for the no-op of its term): two single-server steps at once may leave two disjoint
    majorities."""

    def _may_change_config(self) -> bool:
        return self.log.committed >= self.term_start


PLANTED: dict[str, type[RaftNode]] = {
    "commit-old-term": CommitOldTerm,
    "vote-without-log-check": VoteWithoutLogCheck,
    "ack-before-fsync": AckBeforeFsync,
    "read-without-quorum": ReadWithoutQuorum,
    "vote-before-fsync": VoteBeforeFsync,
    "concurrent-conf-change": ConcurrentConfChange,
}
