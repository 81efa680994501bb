"""Publisher confirms and the group commit: on disk, or consumed before it had to be written."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from warren.broker.message import Message
from warren.node.persistence import Persistence
from warren.store.broker_store import BrokerStore


class Session:
    def __init__(self) -> None:
        self.confirmed: list[int] = []

    def store_committed(self, channel: int, seq: int) -> None:
        self.confirmed.append(seq)


def _queue(store_id: int) -> Any:
    return SimpleNamespace(name=f"q{store_id}", store_id=store_id, journal=[])


def _message() -> Message:
    return Message("", "q", b"x" * 100, b"\x10\x00\x02", {"delivery_mode": 2}, persistent=True, size=100)


def _publish(persistence: Persistence, session: Session, seq: int, message: Message, *queues: Any) -> None:
    for queue in queues:
        queue.journal.append((True, message))
        persistence.drain(queue)
    persistence.after_commit(session, 1, seq)


def _leave(persistence: Persistence, message: Message, queue: Any) -> None:
    queue.journal.append((False, message))
    persistence.drain(queue)


def _setup(tmp_path: Path) -> tuple[BrokerStore, Persistence, Session]:
    store = BrokerStore(tmp_path, 1 << 24)
    return store, Persistence(store, lambda: None), Session()


def test_acked_before_the_commit_is_confirmed_at_once_and_never_written(tmp_path: Path) -> None:
    store, persistence, session = _setup(tmp_path)
    queue, kept, consumed = _queue(1), _message(), _message()
    _publish(persistence, session, 1, kept, queue)
    _publish(persistence, session, 2, consumed, queue)
    _leave(persistence, consumed, queue)  # delivered and acked while the batch is still open
    assert session.confirmed == [2]
    batch = persistence.take_batch()
    assert batch is not None
    store.commit(batch.writes)
    persistence.committed(batch)
    assert session.confirmed == [2, 1]  # each publish confirmed once
    assert [seq for seq, _ in store.messages(1)] == [kept.seq]


def test_a_message_in_two_queues_waits_until_both_are_done(tmp_path: Path) -> None:
    _store, persistence, session = _setup(tmp_path)
    first, second, message = _queue(1), _queue(2), _message()
    _publish(persistence, session, 1, message, first, second)
    _leave(persistence, message, first)
    assert session.confirmed == []  # still in the second queue: it must reach the disk
    _leave(persistence, message, second)
    assert session.confirmed == [1]


def test_acked_after_its_batch_left_for_the_disk_waits_for_the_commit(tmp_path: Path) -> None:
    store, persistence, session = _setup(tmp_path)
    queue, message = _queue(1), _message()
    _publish(persistence, session, 1, message, queue)
    batch = persistence.take_batch()  # the committer took it: the row is being written
    assert batch is not None
    _leave(persistence, message, queue)
    assert session.confirmed == []
    store.commit(batch.writes)
    persistence.committed(batch)
    assert session.confirmed == [1]
