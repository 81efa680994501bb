"""Planted bugs: ``RaftNode`` subclasses that each break one rule through one hook.

The simulator must catch every one of them within a bounded range of seeds (see
``tests/sim/test_sim.py``), so we know its checkers can fail. Each subclass overrides one
small documented hook of ``warren.raft.node.RaftNode`` (or ``_send``, to let a message
leave before its ready is fsynced); production code carries no trace of them.

``PLANTED`` maps the name used by ``python -m tests.sim --planted-bug NAME`` to the class.

``PLANTED_QUEUE`` does the same for quorum queue machines (``QuorumQueueMachine``
subclasses overriding one method each), which ``tests/sim/queue_sim.py`` must catch:
``python -m tests.sim.queue_sim --planted-bug NAME``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from warren.cluster.queue_fsm import BATCH_SLOTS_BITS, QResult, QuorumQueueMachine
from warren.raft.node import RaftNode, Role
from warren.raft.types import Config, Entry, Message, MsgType, SnapshotMeta


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


class SnapshotKeepsStaleTail(RaftNode):
    """Installs a snapshot whose last entry it does not hold but keeps its own entries
    after the snapshot index, though they follow an entry that was never committed."""

    def _install_snapshot(self, meta: SnapshotMeta, data: bytes, retained: list[Entry] | None = None) -> None:
        last = self.log.last_index()
        keep = (
            self.log.term(meta.index) not in (None, meta.term)
            and last > meta.index
            and self.log.first_index() <= meta.index + 1
        )
        tail = self.log.entries(meta.index + 1, last + 1) if keep else []
        super()._install_snapshot(meta, data, retained)
        if tail:
            self.log.append(tail)


class LeaderIgnoresHigherTerm(RaftNode):
    """A leader takes no notice of a higher term in a response (it handles the response
    as if it were of its own term) and goes on leading."""

    RESPONSES = frozenset(
        {MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP, MsgType.APPEND_RESP,
         MsgType.HEARTBEAT_RESP, MsgType.SNAPSHOT_RESP, MsgType.READ_INDEX_RESP}
    )  # fmt: skip

    def _on_higher_term(self, m: Message) -> bool:
        if self.role == Role.LEADER and m.type in self.RESPONSES:
            return True
        return super()._on_higher_term(m)


PLANTED: dict[str, type[RaftNode]] = {
    "commit-old-term": CommitOldTerm,
    "vote-without-log-check": VoteWithoutLogCheck,
    "ack-before-fsync": AckBeforeFsync,
    "read-without-quorum": ReadWithoutQuorum,
    "vote-before-fsync": VoteBeforeFsync,
    "concurrent-conf-change": ConcurrentConfChange,
    "snapshot-keeps-stale-tail": SnapshotKeepsStaleTail,
    "leader-ignores-higher-term": LeaderIgnoresHigherTerm,
}


# ---- planted quorum queue machines (``tests/sim/queue_sim.py`` must catch each) ----------


class SettleAcksNext(QuorumQueueMachine):
    """An ack also takes the next ready message with it: a confirmed message that nobody
    received disappears (the total-queue checker's "lost")."""

    def _settle(self, now_ms: int, channel: str, ids: list[int]) -> int:
        settled = super()._settle(now_ms, channel, ids)
        if settled:
            self.queue.get(now_ms, no_ack=True)
        return settled


class ForgetsRedelivered(QuorumQueueMachine):
    """Hands out returned messages as if new: a consumer sees a message twice without the
    redelivered flag."""

    def _hand_out(self, now_ms: int, result: QResult) -> None:
        super()._hand_out(now_ms, result)
        for delivery in result.deliveries:
            delivery.redelivered = False


class SnapshotForgetsCounts(QuorumQueueMachine):
    """Leaves the delivery counts out of its snapshots: a replica restored from one holds
    another queue than those that applied the log (x-delivery-count and the delivery
    limit differ)."""

    def snapshot(self) -> bytes:
        counts, self._counts = self._counts, {}
        try:
            return super().snapshot()
        finally:
            self._counts = counts


class RefusesButKeeps(QuorumQueueMachine):
    """Answers a publish over x-max-length with a refusal (the publisher gets a nack) but
    keeps the message: consumers receive what its publisher was told was rejected."""

    def _enqueue(self, now_ms: int, exchange: str, routing_key: str, properties: bytes, body: bytes,
                 place: int = 0) -> bool:
        accepted = super()._enqueue(now_ms, exchange, routing_key, properties, body, place)
        if not accepted:
            seq = self.applied << BATCH_SLOTS_BITS | place
            self.queue._append(self._message(exchange, routing_key, properties, body, seq), now_ms)
        return accepted


class RelocatesOneOff(QuorumQueueMachine):
    """Records a relocated message's body at the entry before its RELOCATE: it reads
    another entry's last field back (a body nobody published, or one delivered twice)."""

    def _relocate(self, now_ms: int, msg_id: int, body: bytes) -> None:
        super()._relocate(now_ms, msg_id, body)
        message = self.queue.message_of(msg_id)
        if message is not None and message.seq == self.applied << BATCH_SLOTS_BITS:
            message.seq -= 1 << BATCH_SLOTS_BITS


class ForgetsPublishes(QuorumQueueMachine):
    """Ignores a PUBLISH's (enqueuer, seq): a publish resent after its outcome was unknown
    is enqueued a second time when the first made it into the log."""

    def _publish(self, now_ms: int, messages: list[list[Any]], enqueuer: str = "", seq: int = 0) -> list[bool]:
        return super()._publish(now_ms, messages)


PLANTED_QUEUE: dict[str, type[QuorumQueueMachine]] = {
    "forgets-publishes": ForgetsPublishes,
    "relocates-one-off": RelocatesOneOff,
    "settle-acks-next": SettleAcksNext,
    "forgets-redelivered": ForgetsRedelivered,
    "snapshot-forgets-counts": SnapshotForgetsCounts,
    "refuses-but-keeps": RefusesButKeeps,
}
