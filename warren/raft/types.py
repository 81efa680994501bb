"""Raft value types and the one wire message, with strict decoding.

Messages follow etcd-io/raft's design: one ``Message`` shape for every type, fields unused
by a type stay at their defaults. ``to_wire()`` gives msgpack-able primitives only (lists,
ints, bytes, bools, str); ``message_from_wire`` validates every field and raises
``PeerProtocolError`` on anything else (a peer may be buggy or hostile; never pickle).
Every message carries its group id so one transport multiplexes many groups.

Numbering of ``EntryKind`` and ``MsgType`` is append-only: values are on disk and on the
wire; never renumber, only add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from warren.errors import PeerProtocolError

GroupId = int | str
NONE = 0  # "no node": node ids are positive integers


class EntryKind(IntEnum):
    NORMAL = 0
    NOOP = 1
    CONF_CHANGE = 2


class MsgType(IntEnum):
    VOTE = 1
    VOTE_RESP = 2
    PRE_VOTE = 3
    PRE_VOTE_RESP = 4
    APPEND = 5
    APPEND_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9  # one install-snapshot chunk
    SNAPSHOT_RESP = 10
    TIMEOUT_NOW = 11
    READ_INDEX = 12  # follower -> leader: please confirm a read point
    READ_INDEX_RESP = 13


class ConfChangeKind(IntEnum):
    ADD_VOTER = 0  # also promotes a learner
    ADD_LEARNER = 1
    REMOVE = 2


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind
    data: bytes

    def to_wire(self) -> list[Any]:
        return [self.term, self.index, int(self.kind), self.data]


@dataclass(slots=True)
class HardState:
    """What must be durable before a node answers: term, vote, commit."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    """Membership: voters decide elections and commits; learners only receive the log."""

    voters: frozenset[int]
    learners: frozenset[int] = frozenset()

    def to_wire(self) -> list[Any]:
        return [sorted(self.voters), sorted(self.learners)]

    @staticmethod
    def from_wire(obj: Any) -> Config:
        if not (isinstance(obj, list | tuple) and len(obj) == 2):
            raise PeerProtocolError("malformed raft config")
        voters, learners = obj
        for ids in (voters, learners):
            if not isinstance(ids, list | tuple) or not all(_is_id(i) for i in ids):
                raise PeerProtocolError("raft config ids must be positive integers")
        config = Config(frozenset(voters), frozenset(learners))
        if config.voters & config.learners:
            raise PeerProtocolError("raft config: a node is both voter and learner")
        return config

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1


@dataclass(frozen=True, slots=True)
class ConfChange:
    kind: ConfChangeKind
    node: int

    def encode(self) -> bytes:
        return bytes([int(self.kind)]) + self.node.to_bytes(8, "big")

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        if len(data) != 9 or data[0] not in tuple(ConfChangeKind):
            raise PeerProtocolError("malformed conf change entry")
        return ConfChange(ConfChangeKind(data[0]), int.from_bytes(data[1:], "big"))

    def apply_to(self, config: Config) -> Config:
        voters, learners = set(config.voters), set(config.learners)
        voters.discard(self.node)
        learners.discard(self.node)
        if self.kind == ConfChangeKind.ADD_VOTER:
            voters.add(self.node)
        elif self.kind == ConfChangeKind.ADD_LEARNER:
            learners.add(self.node)
        return Config(frozenset(voters), frozenset(learners))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """``retained_from`` (0: none): the snapshot comes with the log entries
    ``retained_from..index`` it covers, which the state machine still reads (a message
    store's live bodies). They follow the data in a transfer and stay in the storage."""

    index: int
    term: int
    config: Config
    retained_from: int = 0

    def to_wire(self) -> list[Any]:
        wire = [self.index, self.term, self.config.to_wire()]
        if self.retained_from:  # absent otherwise: what peers without retained entries send
            wire.append(self.retained_from)
        return wire

    @staticmethod
    def from_wire(obj: Any) -> SnapshotMeta:
        if not (isinstance(obj, list | tuple) and len(obj) in (3, 4)):
            raise PeerProtocolError("malformed snapshot meta")
        index, term, config = obj[:3]
        retained_from = obj[3] if len(obj) == 4 else 0
        if not (_is_nat(index) and _is_nat(term) and _is_nat(retained_from)):
            raise PeerProtocolError("snapshot index/term must be non-negative integers")
        if retained_from and not 0 < retained_from <= index:
            raise PeerProtocolError("snapshot retained entries must end at its index")
        return SnapshotMeta(index, term, Config.from_wire(config), retained_from)


@dataclass(slots=True)
class Message:
    """One Raft message. Field use per type:

    - VOTE/PRE_VOTE: ``log_term``/``index`` = candidate's last log term/index;
      ``context`` = b"transfer" when forced by a leadership transfer (ignores the lease).
    - *_RESP of votes: ``reject``.
    - APPEND: ``log_term``/``index`` = previous entry, ``entries``, ``commit``.
    - APPEND_RESP: ``index`` = last matching index on success; on ``reject`` ``hint`` = the
      follower's last index at or before the probe whose term is at most the leader's there,
      ``log_term`` = its term (the leader backs off past its own entries of later terms).
    - HEARTBEAT: ``commit`` (capped at the follower's match), ``hint`` = read-index round.
    - HEARTBEAT_RESP: ``hint`` echoes the round.
    - SNAPSHOT: ``snapshot`` meta, ``offset``, ``data`` (one chunk), ``done``. A snapshot
      with retained entries sends them after its data: ``entries`` (``index`` = the one
      before the first), and offsets past the data count entries, not bytes.
    - SNAPSHOT_RESP: ``offset`` = what the follower holds (data bytes + retained entries);
      ``reject`` = start over.
    - READ_INDEX / READ_INDEX_RESP: ``context`` = the request id, RESP ``index`` = read point;
      RESP ``reject`` = no leader could serve it.
    """

    type: MsgType
    group: GroupId
    frm: int
    to: int
    term: int
    log_term: int = 0
    index: int = 0
    commit: int = 0
    reject: bool = False
    hint: int = 0
    context: bytes = b""
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    offset: int = 0
    data: bytes = b""
    done: bool = False

    @property
    def may_send_before_persist(self) -> bool:
        """A leader's outgoing log traffic may leave before its own log is durable (the
        leader counts itself toward commit only once persisted). Everything else, above all
        votes and acks, must wait until the ready that produced it is fsynced."""
        return self.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT)

    def to_wire(self) -> list[Any]:
        return [
            int(self.type),
            self.group,
            self.frm,
            self.to,
            self.term,
            self.log_term,
            self.index,
            self.commit,
            self.reject,
            self.hint,
            self.context,
            [e.to_wire() for e in self.entries],
            None if self.snapshot is None else self.snapshot.to_wire(),
            self.offset,
            self.data,
            self.done,
        ]


WIRE_FIELDS = 16
_MSG_TYPES = {int(t): t for t in MsgType}
_ENTRY_KINDS = {int(k): k for k in EntryKind}


def _is_nat(x: Any) -> bool:
    return type(x) is int and x >= 0


def _is_id(x: Any) -> bool:
    return type(x) is int and x > 0


def entry_from_wire(obj: Any) -> Entry:
    if not (isinstance(obj, list | tuple) and len(obj) == 4):
        raise PeerProtocolError("malformed raft entry")
    term, index, kind, data = obj
    if not (_is_nat(term) and _is_id(index)):
        raise PeerProtocolError("raft entry term/index must be integers")
    if type(kind) is not int or kind not in _ENTRY_KINDS:
        raise PeerProtocolError(f"unknown raft entry kind {kind!r}")
    if not isinstance(data, bytes):
        raise PeerProtocolError("raft entry data must be bytes")
    return Entry(term, index, _ENTRY_KINDS[kind], data)


def message_from_wire(obj: Any) -> Message:
    """Decode and validate a peer's message; ``PeerProtocolError`` on anything malformed."""
    if not (isinstance(obj, list | tuple) and len(obj) == WIRE_FIELDS):
        raise PeerProtocolError("malformed raft message")
    (kind, group, frm, to, term, log_term, index, commit, reject, hint, context,
     entries, snapshot, offset, data, done) = obj  # fmt: skip
    if type(kind) is not int or kind not in _MSG_TYPES:
        raise PeerProtocolError(f"unknown raft message type {kind!r}")
    if not (isinstance(group, str) or type(group) is int):
        raise PeerProtocolError("raft group id must be str or int")
    if not (_is_id(frm) and _is_id(to)):
        raise PeerProtocolError("raft node ids must be positive integers")
    for x in (term, log_term, index, commit, hint, offset):
        if type(x) is not int or x < 0:
            raise PeerProtocolError("raft message numbers must be non-negative integers")
    if not (isinstance(reject, bool) and isinstance(done, bool)):
        raise PeerProtocolError("raft message flags must be booleans")
    if not (isinstance(context, bytes) and isinstance(data, bytes)):
        raise PeerProtocolError("raft message context/data must be bytes")
    if not isinstance(entries, list | tuple):
        raise PeerProtocolError("raft message entries must be a list")
    decoded = [entry_from_wire(e) for e in entries]
    for a, b in zip(decoded, decoded[1:], strict=False):
        if b.index != a.index + 1 or b.term < a.term:
            raise PeerProtocolError("raft entries must be contiguous with non-decreasing terms")
    if decoded and (decoded[0].index != index + 1 or decoded[0].term < log_term):
        raise PeerProtocolError("raft entries do not follow the previous entry")
    meta = None if snapshot is None else SnapshotMeta.from_wire(snapshot)
    if kind == MsgType.SNAPSHOT and meta is None:
        raise PeerProtocolError("snapshot chunk without metadata")
    return Message(
        _MSG_TYPES[kind], group, frm, to, term, log_term, index, commit, reject, hint, context,
        decoded, meta, offset, data, done,
    )  # fmt: skip


# Heartbeats of many groups between the same two nodes travel together, as one message of
# compact items (see warren.io.raft_host): [type, group, term, commit, hint, context].
HEARTBEAT_TYPES = frozenset({MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP})


def heartbeat_to_wire(m: Message) -> list[Any]:
    return [int(m.type), m.group, m.term, m.commit, m.hint, m.context]


def heartbeats_from_wire(frm: int, to: int, items: Any) -> list[Message]:
    """Decode a batch of heartbeats from ``frm``; ``PeerProtocolError`` on anything malformed."""
    if not isinstance(items, list | tuple):
        raise PeerProtocolError("heartbeat batch must be a list")
    out = []
    for item in items:
        if not (isinstance(item, list | tuple) and len(item) == 6):
            raise PeerProtocolError("malformed heartbeat")
        kind, group, term, commit, hint, context = item
        if kind not in (MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP) or type(kind) is not int:
            raise PeerProtocolError(f"not a heartbeat type: {kind!r}")
        if not (isinstance(group, str) or type(group) is int):
            raise PeerProtocolError("raft group id must be str or int")
        if not (_is_nat(term) and _is_nat(commit) and _is_nat(hint)):
            raise PeerProtocolError("heartbeat numbers must be non-negative integers")
        if not isinstance(context, bytes):
            raise PeerProtocolError("heartbeat context must be bytes")
        out.append(Message(_MSG_TYPES[kind], group, frm, to, term, commit=commit, hint=hint, context=context))
    return out
