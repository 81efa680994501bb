"""A minimal stand-in Raft node, used until ``warren.raft`` (the real core) exists.

TEMPORARY. The real core is another helper's work (``warren/raft``); when this was written
that package was still empty, so ``warren raft-node``, the real-process test and
``warren bench raft`` had nothing to drive. This stand-in has just enough Raft to exercise
the transport, the store and the host for real: leader election (randomized timeouts, the
up-to-date vote check, votes persisted before they are sent), log replication with
batching and bounded in-flight appends, the commit rule (only entries of the leader's term
are committed by counting; a no-op opens each term), and restart from the durable state.
No pre-vote, snapshots, membership changes or read index: those are the core's.

It is synchronous and does no I/O, in the shape the host drives (:class:`CoreNode`): the
host calls ``tick``/``step``/``propose``, then ``ready()``, persists its ``entries`` and
``hard_state``, sends its ``messages``, applies its ``committed_entries``, ``advance``s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warren.errors import PeerProtocolError
from warren.io.raft_host import ProposalFailed
from warren.limits import Limits
from warren.store.raft_store import GroupId, RaftStore

NORMAL, NOOP = 0, 1
VOTE, VOTE_RESP, APPEND, APPEND_RESP = 1, 2, 3, 4
FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"
DATA_CACHE_ENTRIES = 50_000


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    kind: int
    data: bytes


@dataclass(slots=True)
class HardState:
    term: int
    vote: int
    commit: int


@dataclass(slots=True)
class Message:
    kind: int
    group: GroupId
    frm: int
    to: int
    term: int
    body: list[Any]

    @property
    def may_send_before_persist(self) -> bool:
        # A leader's appends: it counts its own log toward the commit only once persisted.
        return self.kind == APPEND

    def to_wire(self) -> list[Any]:
        return [self.kind, self.group, self.frm, self.to, self.term, self.body]


def message_from_wire(obj: Any) -> Message:
    if not (isinstance(obj, list) and len(obj) == 6 and isinstance(obj[5], list)):
        raise PeerProtocolError("malformed raft message")
    kind, group, frm, to, term, body = obj
    if kind not in (VOTE, VOTE_RESP, APPEND, APPEND_RESP) or not isinstance(group, int | str):
        raise PeerProtocolError(f"unknown raft message kind {kind!r}")
    if not all(isinstance(x, int) for x in (frm, to, term)):
        raise PeerProtocolError("raft message ids and term must be integers")
    shapes = {VOTE: 2, VOTE_RESP: 1, APPEND: 4, APPEND_RESP: 2}
    if len(body) != shapes[kind]:
        raise PeerProtocolError("raft message body has the wrong shape")
    if kind == APPEND and not (
        isinstance(body[2], list)
        and all(isinstance(e, list) and len(e) == 3 and isinstance(e[2], bytes) for e in body[2])
    ):
        raise PeerProtocolError("malformed entries")
    return Message(kind, group, frm, to, term, body)


@dataclass(slots=True)
class Ready:
    entries: list[Entry]
    hard_state: HardState | None
    snapshot: None
    messages: list[Message]
    committed_entries: list[Entry]


@dataclass(slots=True)
class Progress:
    next_index: int
    match: int = 0
    inflight: int = 0
    quiet_heartbeats: int = 0


class StandinNode:
    """One group's Raft state on one node (see the module docstring)."""

    def __init__(
        self,
        node_id: int,
        group: GroupId,
        voters: list[int],
        store: RaftStore,
        rng: Any,
        limits: Limits,
        heartbeat_ticks: int = 5,
        election_ticks: tuple[int, int] = (30, 60),
    ) -> None:
        self.id = node_id
        self.group = group
        self.voters = voters
        self.store = store
        self.rng = rng
        self.limits = limits
        self.heartbeat_ticks = heartbeat_ticks
        self.election_ticks = election_ticks
        term, vote, commit = store.hard_state(group)
        self.term, self.vote, self.commit = term, vote, commit
        last = store.last_index(group)
        self.terms: list[int] = [r[1] for r in store.entries(group, 1, last + 1)] if last else []
        self.data: dict[int, tuple[int, bytes]] = {}  # index -> (kind, data), recent entries
        self.unstable_from = last + 1
        self.persisted = last
        self.applied = 0
        self.role = FOLLOWER
        self.leader = 0
        self.elapsed = 0
        self.timeout = self._random_timeout()
        self.votes: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.outbox: list[Message] = []
        self._saved_state = (term, vote, commit)

    # --- helpers ----------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return len(self.terms)

    def term_at(self, index: int) -> int:
        return self.terms[index - 1] if index > 0 else 0

    def _random_timeout(self) -> int:
        lo, hi = self.election_ticks
        return int(self.rng.randint(lo, hi))

    def _send(self, kind: int, to: int, body: list[Any]) -> None:
        self.outbox.append(Message(kind, self.group, self.id, to, self.term, body))

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def _append_local(self, term: int, kind: int, data: bytes) -> None:
        self.terms.append(term)
        self.data[self.last_index] = (kind, data)

    def _truncate(self, from_index: int) -> None:
        del self.terms[from_index - 1 :]
        self.unstable_from = min(self.unstable_from, from_index)
        self.persisted = min(self.persisted, from_index - 1)
        for index in [i for i in self.data if i >= from_index]:
            del self.data[index]

    def _entry(self, index: int) -> Entry:
        cached = self.data.get(index)
        if cached is None:
            _, term, kind, data = self.store.entries(self.group, index, index + 1)[0]
            return Entry(term, index, kind, data)
        return Entry(self.terms[index - 1], index, cached[0], cached[1])

    def _become_follower(self, term: int, leader: int) -> None:
        if term > self.term:
            self.term, self.vote = term, 0
        self.role, self.leader = FOLLOWER, leader
        self.elapsed, self.timeout = 0, self._random_timeout()

    # --- inputs -----------------------------------------------------------------------

    def tick(self) -> None:
        self.elapsed += 1
        if self.role == LEADER:
            if self.elapsed >= self.heartbeat_ticks:
                self.elapsed = 0
                for peer, progress in self.progress.items():
                    progress.quiet_heartbeats += 1
                    if progress.quiet_heartbeats > 3:  # responses lost: resend from the match
                        progress.next_index, progress.inflight = progress.match + 1, 0
                    self._send_append(peer, heartbeat=True)
        elif self.elapsed >= self.timeout:
            self._campaign()

    def _campaign(self) -> None:
        self.role, self.term, self.vote, self.leader = CANDIDATE, self.term + 1, self.id, 0
        self.votes = {self.id}
        self.elapsed, self.timeout = 0, self._random_timeout()
        if len(self.votes) >= self._quorum():
            self._become_leader()
            return
        for peer in self.voters:
            if peer != self.id:
                self._send(VOTE, peer, [self.last_index, self.term_at(self.last_index)])

    def _become_leader(self) -> None:
        self.role, self.leader = LEADER, self.id
        self.progress = {p: Progress(self.last_index + 1) for p in self.voters if p != self.id}
        self._append_local(self.term, NOOP, b"")

    def propose(self, data: bytes) -> int:
        if self.role != LEADER:
            raise ProposalFailed(f"not the leader of group {self.group!r} (leader: {self.leader})")
        self._append_local(self.term, NORMAL, data)
        return self.last_index

    def step(self, m: Message) -> None:
        if m.term > self.term:
            self._become_follower(m.term, m.frm if m.kind == APPEND else 0)
        if m.kind == VOTE:
            self._on_vote(m)
        elif m.kind == VOTE_RESP:
            if self.role == CANDIDATE and m.term == self.term and m.body[0]:
                self.votes.add(m.frm)
                if len(self.votes) >= self._quorum():
                    self._become_leader()
        elif m.kind == APPEND:
            self._on_append(m)
        elif m.kind == APPEND_RESP and self.role == LEADER and m.term == self.term:
            self._on_append_response(m)

    def _on_vote(self, m: Message) -> None:
        last_index, last_term = m.body
        my_last_term = self.term_at(self.last_index)
        up_to_date = (last_term, last_index) >= (my_last_term, self.last_index)
        grant = m.term == self.term and self.vote in (0, m.frm) and up_to_date
        if grant:
            self.vote, self.elapsed = m.frm, 0
        self._send(VOTE_RESP, m.frm, [grant])

    def _on_append(self, m: Message) -> None:
        if m.term < self.term:
            self._send(APPEND_RESP, m.frm, [False, self.last_index])
            return
        if self.role != FOLLOWER or self.leader != m.frm:
            self._become_follower(m.term, m.frm)
        self.elapsed = 0
        prev_index, prev_term, entries, leader_commit = m.body
        if prev_index > self.last_index or self.term_at(prev_index) != prev_term:
            self._send(APPEND_RESP, m.frm, [False, min(self.last_index, prev_index - 1)])
            return
        index = prev_index
        for term, kind, data in entries:
            index += 1
            if index <= self.last_index:
                if self.term_at(index) == term:
                    continue
                self._truncate(index)
            self._append_local(term, kind, data)
        self.commit = max(self.commit, min(leader_commit, index))
        self._send(APPEND_RESP, m.frm, [True, index])

    def _on_append_response(self, m: Message) -> None:
        progress = self.progress.get(m.frm)
        if progress is None:
            return
        progress.quiet_heartbeats = 0
        success, index = m.body
        if success:
            progress.match = max(progress.match, index)
            progress.inflight = max(0, progress.inflight - 1)
            self._advance_commit()
        else:
            progress.next_index = max(1, min(progress.next_index - 1, index + 1))
            progress.match = min(progress.match, index)
            progress.inflight = 0
            self._send_append(m.frm)

    def _advance_commit(self) -> None:
        matches = sorted([self.persisted] + [p.match for p in self.progress.values()], reverse=True)
        candidate = matches[self._quorum() - 1]
        if candidate > self.commit and self.term_at(candidate) == self.term:
            self.commit = candidate

    def _send_append(self, peer: int, heartbeat: bool = False) -> None:
        progress = self.progress[peer]
        lo = progress.next_index
        hi = min(self.last_index, lo + self.limits.raft_max_append_entries - 1)
        if lo > hi and not heartbeat:
            return
        if (
            lo <= hi
            and progress.inflight >= self.limits.raft_max_inflight_appends
            and not heartbeat
        ):
            return
        entries: list[list[Any]] = []
        size = 0
        for index in range(lo, hi + 1):
            e = self._entry(index)
            entries.append([e.term, e.kind, e.data])
            size += len(e.data)
            if size >= self.limits.raft_max_append_bytes:
                break
        self._send(APPEND, peer, [lo - 1, self.term_at(lo - 1), entries, self.commit])
        if entries:
            progress.next_index = lo + len(entries)
            progress.inflight += 1

    # --- output -----------------------------------------------------------------------

    def has_ready(self) -> bool:
        limit = self.limits.raft_max_inflight_appends
        if self.role == LEADER and any(
            p.next_index <= self.last_index and p.inflight < limit for p in self.progress.values()
        ):
            return True
        return bool(
            self.outbox
            or self.unstable_from <= self.last_index
            or (self.term, self.vote, self.commit) != self._saved_state
            or self.applied < min(self.commit, self.persisted)
        )

    def ready(self) -> Ready:
        if self.role == LEADER:
            for peer in self.progress:
                while self.progress[peer].next_index <= self.last_index:
                    before = self.progress[peer].next_index
                    self._send_append(peer)
                    if self.progress[peer].next_index == before:
                        break  # flow control: too many appends in flight
        entries = [self._entry(i) for i in range(self.unstable_from, self.last_index + 1)]
        state = (self.term, self.vote, self.commit)
        hard_state = HardState(*state) if state != self._saved_state else None
        upto = min(self.commit, self.persisted)
        committed = [self._entry(i) for i in range(self.applied + 1, upto + 1)]
        messages, self.outbox = self.outbox, []
        self.unstable_from = self.last_index + 1
        self._saved_state = state
        return Ready(entries, hard_state, None, messages, committed)

    def advance(self, ready: Ready) -> None:
        if ready.entries:
            # A truncation while the ready was being written lowered unstable_from: what
            # lies below it is exactly what was written.
            self.persisted = max(
                self.persisted, min(ready.entries[-1].index, self.unstable_from - 1)
            )
        if ready.committed_entries:
            self.applied = ready.committed_entries[-1].index
        if self.role == LEADER:
            self._advance_commit()
        if len(self.data) > 2 * DATA_CACHE_ENTRIES:
            # Older entries are re-read from the store (only persisted ones are dropped).
            floor = min(self.persisted + 1, self.last_index - DATA_CACHE_ENTRIES)
            for index in [i for i in self.data if i < floor]:
                del self.data[index]

    def status(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "leader": self.leader,
            "term": self.term,
            "commit": self.commit,
            "applied": self.applied,
            "last_index": self.last_index,
        }
