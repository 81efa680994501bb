"""Snapshots in the core: chunked transfer read from storage, pinned to the snapshot it began
with, and the storage twin's chunk reads."""

from __future__ import annotations

from tests.unit.raft.harness import Cluster
from warren.limits import Limits
from warren.raft.storage import MemoryStorage
from warren.raft.types import Config, Message, MsgType, SnapshotMeta

CHUNK = 64


def _compacted_cluster(state: bytes) -> tuple[Cluster, int]:
    """Three nodes, node 3 cut off while the leader commits and snapshots past it."""
    c = Cluster(limits=Limits(raft_snapshot_chunk_bytes=CHUNK))
    leader = c.elect()
    lagging = next(n for n in c.nodes if n != leader)
    c.isolate(lagging)
    for i in range(20):
        c.propose(leader, b"e%d" % i)
    node = c.nodes[leader]
    node.take_snapshot(node.applied, state)
    c.settle()
    assert c.disks[leader].first_index() > c.disks[lagging].last_index() + 1  # it needs one
    return c, lagging


def test_a_transfer_keeps_its_snapshot_when_a_newer_one_is_taken_meanwhile() -> None:
    first_state = bytes(range(256)) * 4  # 16 chunks
    c, lagging = _compacted_cluster(first_state)
    leader = c.leaders()[0]
    node = c.nodes[leader]
    first_index = c.disks[leader].snapshot_meta()[0].index  # type: ignore[index]
    for i in range(5):
        c.propose(leader, b"late%d" % i)
    chunks: list[Message] = []
    newer: list[int] = []

    def watch(m: Message) -> bool:
        if m.type == MsgType.SNAPSHOT and m.to == lagging:
            chunks.append(m)
            if m.offset == 3 * CHUNK and not newer:  # mid-transfer: a newer snapshot lands
                newer.append(node.applied)
                node.take_snapshot(node.applied, b"newer state")
        return False

    c.drop = watch
    c.heal()
    c.tick(10)
    assert newer and c.disks[leader].snapshot_meta()[0].index == newer[0]  # type: ignore[index]
    # The first snapshot went out whole, in order, no chunk twice (no restart from 0); the
    # newer one compacted the entries after it, so a second, short transfer follows.
    first = [m for m in chunks if m.snapshot.index == first_index]  # type: ignore[union-attr]
    assert chunks[: len(first)] == first and first[-1].done
    assert [m.offset for m in first] == list(range(0, len(first_state), CHUNK))
    assert b"".join(m.data for m in first) == first_state
    assert {m.snapshot.index for m in chunks[len(first) :]} <= {newer[0]}  # type: ignore[union-attr]
    assert c.nodes[lagging].committed == node.committed
    assert c.disks[lagging].load_snapshot() == c.disks[leader].load_snapshot()


def test_a_transfer_whose_snapshot_was_dropped_starts_over_with_the_latest() -> None:
    c, lagging = _compacted_cluster(b"s" * 300)
    leader = c.leaders()[0]
    disk = c.disks[leader]
    stale = disk.snapshot_meta()[0]  # type: ignore[index]
    for i in range(3):
        c.propose(leader, b"late%d" % i)
    node = c.nodes[leader]
    node.take_snapshot(node.applied, b"t" * 100)
    c.settle()
    latest = disk.snapshot_meta()[0]  # type: ignore[index]
    assert disk.snapshot_chunk(stale.index, 0, CHUNK) is None  # not kept: nobody was sending it
    # A progress pinned to the dropped one (it began before the newer save reached the disk).
    pr = node.progress[lagging]
    pr.become_snapshot(stale.index, stale, 300)
    node._send_snapshot_chunk(lagging, pr)
    sent = [m for m in node.msgs if m.type == MsgType.SNAPSHOT]
    assert len(sent) == 1 and sent[0].snapshot == latest and sent[0].offset == 0
    assert pr.snapshot_index == latest.index
    c.heal()
    c.tick(5)
    assert c.nodes[lagging].committed == node.committed


def test_memory_storage_reads_chunks_and_keeps_only_snapshots_named_in_keep() -> None:
    disk = MemoryStorage()
    config = Config(frozenset({1}))
    a, b, c = (SnapshotMeta(i, 1, config) for i in (5, 9, 12))
    disk.save_snapshot(a, b"abcdefgh")
    assert disk.snapshot_meta() == (a, 8)
    assert disk.snapshot_chunk(5, 3, 4) == b"defg" and disk.snapshot_chunk(5, 8, 4) == b""
    disk.save_snapshot(b, b"B", keep={5})
    assert disk.snapshot_meta() == (b, 1) and disk.snapshot_chunk(5, 0, 3) == b"abc"
    disk.save_snapshot(c, b"C")
    assert disk.snapshot_chunk(5, 0, 3) is None and disk.snapshot_chunk(9, 0, 3) is None
    assert disk.snapshot_chunk(12, 0, 3) == b"C"


def test_a_snapshot_sends_the_entries_it_retains_after_its_data() -> None:
    c = Cluster(limits=Limits(raft_snapshot_chunk_bytes=CHUNK))
    leader = c.elect()
    lagging = next(n for n in c.nodes if n != leader)
    c.isolate(lagging)
    for i in range(30):
        c.propose(leader, b"body-%02d" % i)
    node = c.nodes[leader]
    applied = node.applied
    assert node.take_snapshot(applied, b"x" * 100, keep_from=10)
    c.settle()
    disk = c.disks[leader]
    meta = disk.snapshot_meta()[0]  # type: ignore[index]
    assert meta.retained_from == 10 and disk.first_index() == applied + 1
    kept = disk.retained_entries(10, applied + 1, 1 << 20)
    assert kept is not None and [e.index for e in kept] == list(range(10, applied + 1))
    chunks: list[Message] = []
    c.drop = lambda m: m.type == MsgType.SNAPSHOT and bool(chunks.append(m))
    c.heal()
    c.tick(5)
    # Two data chunks (100 bytes), then the entries, a few per chunk, offsets counting them.
    assert [m.offset for m in chunks[:2]] == [0, CHUNK] and not any(m.entries for m in chunks[:2])
    sent = [e for m in chunks[2:] for e in m.entries]
    assert sent == kept and len(chunks) > 3 and chunks[-1].done
    assert [m.offset for m in chunks[2:]] == [100 + m.entries[0].index - 10 for m in chunks[2:]]
    follower = c.disks[lagging]
    assert follower.load_snapshot() == (meta, b"x" * 100)
    assert follower.retained_entries(10, applied + 1, 1 << 20) == kept
    assert c.nodes[lagging].committed == node.committed


def test_keep_from_cannot_reach_below_what_storage_still_holds() -> None:
    c = Cluster()
    leader = c.elect()
    node = c.nodes[leader]
    for i in range(20):
        c.propose(leader, b"e%d" % i)
    assert node.take_snapshot(10, b"s", keep_from=5)
    c.settle()
    for i in range(5):
        c.propose(leader, b"f%d" % i)
    assert node.take_snapshot(15, b"t", keep_from=2)  # 2..4 are gone: from 5 on
    c.settle()
    assert c.disks[leader].snapshot_meta()[0].retained_from == 5  # type: ignore[index]
    assert node.take_snapshot(node.applied, b"u", keep_from=node.applied + 1)  # retains none
    c.settle()
    assert c.disks[leader].snapshot_meta()[0].retained_from == 0  # type: ignore[index]
    assert c.disks[leader].retained_entries(5, 6, 100) is None


def test_snapshot_meta_on_the_wire_names_retained_entries_only_when_there_are_some() -> None:
    import pytest

    from warren.errors import PeerProtocolError

    config = Config(frozenset({1, 2}))
    plain, retaining = SnapshotMeta(9, 2, config), SnapshotMeta(9, 2, config, 4)
    assert plain.to_wire() == [9, 2, [[1, 2], []]]  # as before retained entries existed
    assert SnapshotMeta.from_wire(plain.to_wire()) == plain
    assert SnapshotMeta.from_wire(retaining.to_wire()) == retaining
    for bad in ([9, 2, [[1], []], 10], [9, 2, [[1], []], -1], [9, 2, [[1], []], 1, 2]):
        with pytest.raises(PeerProtocolError):
            SnapshotMeta.from_wire(bad)
