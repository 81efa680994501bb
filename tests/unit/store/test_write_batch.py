"""Group commit batches: a message consumed before its batch reached the disk is never written."""

from pathlib import Path

from warren.store.broker_store import BrokerStore, WriteBatch, encode_message, message_key


def _record(n: int) -> bytes:
    return encode_message("", "q", b"\x10\x00\x02", b"body %d" % n)


def test_put_then_delete_in_one_batch_writes_nothing(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path, 1 << 24)
    batch = WriteBatch()
    batch.put_message(1, 1, _record(1))
    batch.put_message(1, 2, _record(2))
    batch.delete_message(1, 1)  # acked before the commit
    assert len(batch.msg_ops) == 1
    store.commit(batch)
    assert [seq for seq, _ in store.messages(1)] == [2]


def test_delete_of_a_committed_row_is_written(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path, 1 << 24)
    first = WriteBatch()
    first.put_message(1, 1, _record(1))
    first.put_message(1, 2, _record(2))
    store.commit(first)
    second = WriteBatch()
    second.delete_message(1, 1)
    second.put_message(1, 3, _record(3))
    store.commit(second)
    store.close()
    reopened = BrokerStore(tmp_path, 1 << 24)
    assert [seq for seq, _ in reopened.messages(1)] == [2, 3]


def test_release_pages_keeps_the_store_usable(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path, 1 << 24)
    batch = WriteBatch()
    batch.put_message(7, 1, _record(1))
    store.commit(batch)
    store.release_pages()
    assert store.load_message(7, 1) == _record(1)
    later = WriteBatch()
    later.put_message(7, 2, _record(2))
    store.commit(later)
    assert [seq for seq, _ in store.messages(7)] == [1, 2]


def test_a_failed_batch_followed_by_a_newer_one_keeps_the_later_operations() -> None:
    failed = WriteBatch()
    failed.put_message(1, 1, b"kept")
    failed.put_message(1, 2, b"acked later")
    failed.put_definition("vhost/a", {"v": 1})
    failed.delete_definition("vhost/b")
    failed.sequence_high_water = 2
    newer = WriteBatch()
    newer.delete_message(1, 2)  # the row was in the failed batch, so newer records a delete
    newer.put_message(1, 3, b"new")
    newer.put_definition("vhost/b", {"v": 2})
    newer.delete_definition("vhost/a")
    newer.sequence_high_water = 3
    merged = failed.then(newer)
    assert merged.msg_ops == {message_key(1, 1): b"kept", message_key(1, 2): None, message_key(1, 3): b"new"}
    assert set(merged.defs_put) == {b"vhost/b"} and merged.defs_delete == {b"vhost/a"}
    assert merged.sequence_high_water == 3
