"""Per-channel bookkeeping: delivery tags, unacked messages, confirms, transactions, prefetch."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Unacked:
    """A message delivered on this channel and not yet settled."""

    queue: Any  # warren.broker QueueState
    msg_id: int
    consumer_tag: str | None  # None for basic.get


@dataclass(slots=True)
class TxPublish:
    method: Any
    properties: bytes
    body: bytes


@dataclass
class ChannelState:
    """State of one open channel of a client connection."""

    number: int
    closing: bool = False  # we sent channel.close and wait for close-ok
    confirm_mode: bool = False
    tx_mode: bool = False
    flow_active: bool = True
    next_publish_seq: int = 1  # publisher-confirm sequence
    next_delivery_tag: int = 1
    prefetch_per_consumer: int = 0  # basic.qos global=false: applies to consumers created after it
    prefetch_channel: int = 0  # basic.qos global=true: shared by all consumers of the channel
    unacked: dict[int, Unacked] = field(default_factory=dict)
    consumers: dict[str, Any] = field(default_factory=dict)  # tag -> QueueState
    # publisher confirms that wait for the store: seq numbers in publish order
    unconfirmed: dict[int, bool | None] = field(default_factory=dict)  # seq -> None while the store works, then ack/nack
    confirm_parts: dict[int, int] = field(default_factory=dict)  # seq -> places still to answer, when > 1
    tx_publishes: list[TxPublish] = field(default_factory=list)
    tx_settlements: list[tuple[str, int, bool, bool]] = field(default_factory=list)  # (kind, tag, multiple, requeue)
    write_permission_cache: set[str] = field(default_factory=set)
    # a definition command of this channel is in progress: the methods that follow it wait
    # here, in order, until its outcome is known (then they run as if just received)
    waiting: bool = False
    held: deque[tuple[Any, ...]] = field(default_factory=deque)
    retrying: bool = False  # running a method again after a barrier (see retry_after_barrier)

    def new_delivery(self, queue: Any, msg_id: int, consumer_tag: str | None) -> int:
        tag = self.next_delivery_tag
        self.next_delivery_tag += 1
        self.unacked[tag] = Unacked(queue, msg_id, consumer_tag)
        return tag

    def take_unacked(self, delivery_tag: int, multiple: bool) -> list[Unacked] | None:
        """Remove and return the settled deliveries; None when the tag is unknown (a 406).

        As RabbitMQ: ``multiple`` with tag 0 settles everything; otherwise the tag itself must
        be outstanding, and ``multiple`` also settles every smaller tag.
        """
        if multiple and delivery_tag == 0:
            taken = list(self.unacked.values())
            self.unacked.clear()
            return taken
        if delivery_tag not in self.unacked:
            return None
        if not multiple:
            return [self.unacked.pop(delivery_tag)]
        tags = [tag for tag in self.unacked if tag <= delivery_tag]
        return [self.unacked.pop(tag) for tag in tags]

    def unacked_for_consumer(self, consumer_tag: str) -> int:
        return sum(1 for entry in self.unacked.values() if entry.consumer_tag == consumer_tag)

    def has_channel_credit(self) -> bool:
        return self.prefetch_channel == 0 or len(self.unacked) < self.prefetch_channel

    def record_confirm(self, seq: int, ack: bool) -> None:
        self.unconfirmed[seq] = ack

    def part_outcome(self, seq: int, ack: bool) -> None:
        """One of the places publish ``seq`` went to has it (or failed to): it is acked once
        all have (``confirm_parts`` counts them when more than one), nacked when any fails."""
        if self.unconfirmed.get(seq, True) is not None:
            return  # decided already (a nack came first)
        left = self.confirm_parts.pop(seq, 1) - 1
        if not ack:
            self.unconfirmed[seq] = False
        elif left > 0:
            self.confirm_parts[seq] = left
        else:
            self.unconfirmed[seq] = True

    def ready_confirms(self) -> Iterator[tuple[int, bool, bool]]:
        """Yield (tag, multiple, ack) frames for confirms that can go out, coalescing runs.

        Confirms leave in publish order; a run of acks becomes one ``multiple`` ack.
        """
        pending = self.unconfirmed
        run_end = 0
        while pending:  # from the front only: no copy of a long tail still waiting for the disk
            seq = next(iter(pending))
            outcome = pending[seq]
            if outcome is None:
                break
            del pending[seq]
            if outcome:
                run_end = seq
                continue
            if run_end:
                yield run_end, True, True
                run_end = 0
            yield seq, False, False
        if run_end:
            yield run_end, True, True
