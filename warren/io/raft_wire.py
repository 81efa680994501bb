"""What the Raft host puts on the wire and on the disk, as pure functions.

Peer traffic between hosts: Raft messages (``Message.to_wire``; a leader's one-entry
appends to a peer merged by :func:`coalesce_appends`), :data:`NODE_HEARTBEAT` and
``[HEARTBEATS, items]`` (every group's heartbeats to one peer in one message). Disk: the
durable part of a ready as a store write (:func:`ready_to_write`) and the envelope every
proposal's entry carries.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from warren.raft.types import MsgType
from warren.store.raft_store import GroupId, GroupWrite, LogRecord

# Every proposal's entry: (proposing node id, its sequence number there) + the payload. The
# envelope is part of the log format (kept for it); proposals are matched by the term and
# index of the entry this node appended, which no other entry can have (Raft's log
# matching), not by the envelope: sequence numbers start again at 1 after a restart.
_ENVELOPE = struct.Struct(">IQ")
ENVELOPE_BYTES = _ENVELOPE.size
envelope = _ENVELOPE.pack


NODE_HEARTBEAT: list[int] = [0]
"""Between hosts, beside Raft messages (lists of ``WIRE_FIELDS`` fields, so they never look
alike): "this node is alive", and ``[HEARTBEATS, items]``, the heartbeats of many groups in
one message (``warren.raft.types.heartbeats_from_wire``)."""
HEARTBEATS = 1


NORMAL_KIND = 0
"""EntryKind.NORMAL's op code (op codes are append-only; checked where the core is built)."""



def ready_to_write(group: GroupId, ready: Any) -> GroupWrite | None:
    """The durable part of a ready, for the store; None when it has nothing to persist."""
    entries: Sequence[LogRecord] = [(e.index, e.term, int(e.kind), e.data) for e in ready.entries]
    hard_state = None
    if ready.hard_state is not None:
        hs = ready.hard_state
        hard_state = (hs.term, hs.vote, hs.commit)
    snapshot = None
    # A snapshot from the leader, or one the application took here (compaction only).
    taken = ready.snapshot if ready.snapshot is not None else getattr(ready, "local_snapshot", None)
    if taken is not None:
        meta, data = taken
        snapshot = (meta.index, meta.term, meta_config_wire(meta), data)
    if not entries and hard_state is None and snapshot is None:
        return None
    # Snapshots this leader is still sending survive the save of a newer one; a snapshot
    # may keep entries it covers for the state machine (retained_from), a leader's comes
    # with them.
    keep = getattr(ready, "sending_snapshots", ())
    keep_from = getattr(taken[0], "retained_from", 0) or None if taken is not None else None
    retained: Sequence[LogRecord] = ()
    if ready.snapshot is not None:
        retained = [(e.index, e.term, int(e.kind), e.data)
                    for e in getattr(ready, "snapshot_entries", ())]
    return GroupWrite(group, entries, hard_state, snapshot, keep_snapshots=keep,
                      keep_from=keep_from, retained_entries=retained)


def meta_config_wire(meta: Any) -> Any:
    config = getattr(meta, "config", None)
    to_wire = getattr(config, "to_wire", None)
    return to_wire() if to_wire is not None else config


def split_early(messages: list[Any]) -> tuple[list[Any], list[Any]]:
    """(messages that may leave before the ready is persisted, those that must wait)."""
    early: list[Any] = []
    later: list[Any] = []
    for m in messages:
        (early if getattr(m, "may_send_before_persist", False) else later).append(m)
    return early, later


# Positions in warren.raft.types.Message.to_wire()'s list.
_W_GROUP, _W_TERM, _W_INDEX, _W_COMMIT, _W_ENTRIES = 1, 4, 6, 7, 11


def coalesce_appends(
    messages: Iterable[Any], max_entries: int, max_bytes: int
) -> list[tuple[int, Any]]:
    """(peer, wire message) for each message, in order, with consecutive appends to the same
    peer merged into one.

    The core answers every proposal with an append per follower carrying that one entry.
    Appends of one term to one peer that continue each other (the second's previous entry
    is the first's last) say together exactly what they say in turn: the follower appends
    the same entries, takes the later commit index and acknowledges once, for the last
    entry (an acknowledgement covers every entry before it, so the leader's progress ends
    where the separate ones would have left it). One message instead of dozens is fewer
    frames to encode, decode, step, fsync-wait for and acknowledge on both sides. Only
    messages to the same peer with nothing to that peer in between are merged, so each
    peer still sees its messages in the order the core produced them; a merge stops at
    ``max_entries`` entries or ``max_bytes`` of entry data.
    """
    out: list[tuple[int, Any]] = []
    open_append: dict[int, tuple[list[Any], int]] = {}  # peer -> (its last wire, data bytes)
    for m in messages:
        to = m.to
        if getattr(m, "type", None) != MsgType.APPEND or not m.entries:
            out.append((to, m.to_wire()))
            open_append.pop(to, None)  # a later append must not overtake this message
            continue
        size = sum(len(e.data) for e in m.entries)
        current = open_append.get(to)
        if current is not None:
            wire, wire_size = current
            entries = wire[_W_ENTRIES]
            if (
                wire[_W_GROUP] == m.group
                and wire[_W_TERM] == m.term
                and m.index == wire[_W_INDEX] + len(entries)
                and len(entries) + len(m.entries) <= max_entries
                and wire_size + size <= max_bytes
            ):
                entries.extend([e.to_wire() for e in m.entries])
                wire[_W_COMMIT] = max(wire[_W_COMMIT], m.commit)
                open_append[to] = (wire, wire_size + size)
                continue
        wire = m.to_wire()
        out.append((to, wire))
        open_append[to] = (wire, size)
    return out
