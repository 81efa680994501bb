from pathlib import Path

import pytest

from warren.errors import StoreError
from warren.store.broker_store import BrokerStore, WriteBatch, decode_message, encode_message


def test_batch_survives_reopen_in_publish_order(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path, map_size=1 << 24)
    batch = WriteBatch(sequence_high_water=12)
    batch.put_definition("queue//q1", {"durable": True, "id": 1})
    for seq in (10, 2, 11):
        batch.put_message(1, seq, encode_message("", "q1", b"\x00\x00", f"m{seq}".encode()))
    batch.put_message(2, 12, encode_message("", "q2", b"", b"other"))
    store.commit(batch)
    second = WriteBatch()
    second.delete_message(1, 10)
    store.commit(second)
    store.close()

    reopened = BrokerStore(tmp_path, map_size=1 << 24)
    assert dict(reopened.definitions()) == {"queue//q1": {"durable": True, "id": 1}}
    rows = [(seq, decode_message(rec)[3]) for seq, rec in reopened.messages(1)]
    assert rows == [(2, b"m2"), (11, b"m11")]
    assert reopened.sequence_high_water() == 12


def test_dropping_a_queue_removes_only_its_rows(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path, map_size=1 << 24)
    batch = WriteBatch()
    for queue_id in (1, 2, 3):
        for seq in range(5):
            batch.put_message(queue_id, seq, encode_message("", "", b"", b"x"))
    store.commit(batch)
    drop = WriteBatch()
    drop.drop_queue(2)
    store.commit(drop)
    assert [len(list(store.messages(q))) for q in (1, 2, 3)] == [5, 0, 5]


def test_full_store_is_a_typed_error(tmp_path: Path) -> None:
    store = BrokerStore(tmp_path, map_size=1 << 20)
    batch = WriteBatch()
    for seq in range(50):
        batch.put_message(1, seq, encode_message("", "", b"", b"x" * 100_000))
    with pytest.raises(StoreError, match="full"):
        store.commit(batch)
